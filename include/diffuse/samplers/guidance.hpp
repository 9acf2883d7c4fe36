#pragma once
// Classifier-free guidance (Ho & Salimans 2022): a model trained with labels dropped to a "no class"
// index predicts both eps_cond = eps(x_t, c) and eps_uncond = eps(x_t, no class), and sampling uses
//   eps = eps_uncond + s (eps_cond - eps_uncond),
// s = 1 being the conditional model alone and s > 1 trading diversity for fidelity. The wrapper makes
// ONE model call on the doubled batch [x_t; x_t] with labels [c; no class], and its output is a model
// like any other: guidance is affine with weights summing to 1, so it applies alike to eps, x0 and v
// outputs. The "no class" index is num_classes, the U-Net's extra embedding row.

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/options.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

/// A model callback that applies classifier-free guidance with scale `scale` to a class-conditional
/// model with num_classes classes. The returned callback needs one label in [0, num_classes) per sample.
template <class T>
ModelFn<T> classifier_free_guidance(ModelFn<T> model, int num_classes, double scale) {
    constexpr const char* where = "diffuse::classifier_free_guidance";
    if (num_classes < 1) {
        detail::throw_invalid(where, "num_classes", num_classes,
                              "a class-conditional model (num_classes >= 1); guidance needs one");
    }
    if (!std::isfinite(scale)) detail::throw_invalid(where, "scale", scale, "a finite guidance scale");
    if (!model) detail::throw_invalid(where, "model", "an empty callback", "a model");
    return [model = std::move(model), num_classes, scale](const Tensor4<T>& x_t, const Timesteps& t,
                                                          const std::vector<int>& labels) {
        constexpr const char* call = "diffuse::classifier_free_guidance (the guided model)";
        const Index batch = x_t.dimension(0);
        if (static_cast<Index>(labels.size()) != batch) {
            detail::throw_invalid(call, "labels.size()", labels.size(),
                                  "one class per sample, " + std::to_string(batch) +
                                      " (set the sampler's options.labels; guidance needs a class)");
        }
        for (std::size_t n = 0; n < labels.size(); ++n) {
            if (labels[n] < 0 || labels[n] >= num_classes) {
                detail::throw_invalid(call, "labels[" + std::to_string(n) + "]", labels[n],
                                      "a class in [0, " + std::to_string(num_classes) + ")");
            }
        }
        // [x_t; x_t], t twice, labels [c; no class]
        Tensor4<T> doubled(2 * batch, x_t.dimension(1), x_t.dimension(2), x_t.dimension(3));  // [2N, C, H, W]
        std::copy_n(x_t.data(), x_t.size(), doubled.data());
        std::copy_n(x_t.data(), x_t.size(), doubled.data() + x_t.size());
        Timesteps t2 = t;
        t2.insert(t2.end(), t.begin(), t.end());
        std::vector<int> labels2 = labels;
        labels2.insert(labels2.end(), static_cast<std::size_t>(batch), num_classes);
        const Tensor4<T> both = model(doubled, t2, labels2);  // [2N, C', H, W]
        if (both.dimension(0) != 2 * batch || both.size() % 2 != 0) {
            detail::throw_invalid(call, "the model's output shape", shape_string(both.dimensions()),
                                  std::to_string(2 * batch) + " samples, the doubled batch");
        }
        const Shape4 half = {batch, both.dimension(1), both.dimension(2), both.dimension(3)};  // [N, C', H, W]
        const Eigen::TensorMap<const Tensor4<T>> cond(both.data(), half), uncond(both.data() + cond.size(), half);
        const T s = static_cast<T>(scale);
        return elementwise([s](T c, T u) { return u + s * (c - u); }, cond, uncond);
    };
}

}  // namespace diffuse
