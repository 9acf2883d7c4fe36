#pragma once
// Classifier-free guidance (Ho & Salimans 2022): a model trained with its condition c dropped now and
// then to a null condition predicts both eps_cond = eps(x_t, c) and eps_uncond = eps(x_t, null), and
// sampling uses
//   eps = eps_uncond + s (eps_cond - eps_uncond),
// s = 1 being the conditional model alone and s > 1 trading diversity for fidelity. The wrapper makes
// ONE model call on the doubled batch [x_t; x_t] with conditioning [c; null(c)], and its output is a
// model like any other: guidance is affine with weights summing to 1, so it applies alike to eps, x0
// and v outputs. What is null is the model's: for class labels the "no class" index num_classes (the
// U-Net's extra embedding row); for a prompt, the empty prompt (null_prompt, for a model that embeds
// its prompts) or its embedding (null_context, for a U-Net given contexts). A concatenated image is
// a spatial input, not a condition to drop: both halves keep it. A model with a learned variance,
// 2C output channels [mean part, v], has its mean part guided and the conditional half's v kept.
//
// Guidance in a limited interval (Kynkaanniemi et al. 2024): guided only at the timesteps of a
// GuidanceInterval, the conditional model alone (s = 1, one call on the batch) elsewhere. Guiding at
// the highest noise levels pulls every sample of a condition towards the same few modes; guiding at
// the lowest changes little. guidance_interval() takes the interval as the paper gives it, in EDM's
// noise level sigma_t = sqrt((1 - alphabar_t) / alphabar_t).

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

/// The unconditional counterpart of a batch's conditioning, one sample for each of its samples.
template <class T>
using NullConditioningFn = std::function<Conditioning<T>(const Conditioning<T>& conditioning)>;

namespace detail {
/// Every label a class in [0, num_classes): the guided model is told "no class" only in its null half.
inline void check_guided_labels(const std::vector<int>& labels, int num_classes) {
    for (std::size_t n = 0; n < labels.size(); ++n) {
        if (labels[n] < 0 || labels[n] >= num_classes) {
            throw_invalid("diffuse::classifier_free_guidance (the guided model)", "labels[" + std::to_string(n) + "]",
                          labels[n], "a class in [0, " + std::to_string(num_classes) + ")");
        }
    }
}
}  // namespace detail

/// Class labels replaced by the "no class" index num_classes; the rest kept. Every label must be a
/// class in [0, num_classes).
template <class T>
NullConditioningFn<T> null_labels(int num_classes) {
    constexpr const char* where = "diffuse::null_labels";
    if (num_classes < 1) {
        detail::throw_invalid(where, "num_classes", num_classes,
                              "a class-conditional model (num_classes >= 1); guidance needs one");
    }
    return [num_classes](const Conditioning<T>& c) {
        detail::check_guided_labels(c.labels, num_classes);
        Conditioning<T> null = c;
        std::fill(null.labels.begin(), null.labels.end(), num_classes);
        return null;
    };
}

/// The context replaced by `embedding` [1, L0, D] (the text encoder's output for the empty prompt)
/// for every sample, with its mask [L0] (or empty); the rest kept.
template <class T>
NullConditioningFn<T> null_context(Tensor3<T> embedding, KeyMask mask = {}) {
    constexpr const char* where = "diffuse::null_context";
    if (embedding.dimension(0) != 1 || embedding.size() == 0) {
        detail::throw_invalid(where, "embedding.shape", shape_string(embedding.dimensions()), "[1, L, D], one null prompt");
    }
    check_key_mask(where, "mask", mask, 1, embedding.dimension(1));
    return [embedding = std::move(embedding), mask = std::move(mask)](const Conditioning<T>& c) {
        const Index n = c.has_context() ? c.context.dimension(0) : 0;
        if (n == 0) {
            detail::throw_invalid("diffuse::classifier_free_guidance (the guided model)", "conditioning.context", "none",
                                  "a context per sample: the model is guided by its prompt");
        }
        const Index l = embedding.dimension(1), d = embedding.dimension(2);
        Conditioning<T> null = c;
        null.context = Tensor3<T>(n, l, d);
        null.context_mask.clear();
        for (Index s = 0; s < n; ++s) {
            std::copy_n(embedding.data(), l * d, null.context.data() + s * l * d);
            null.context_mask.insert(null.context_mask.end(), mask.begin(), mask.end());
        }
        return null;
    };
}

/// Every prompt replaced by the empty prompt, <start> alone (Tokenizer::encode("")), for a model that
/// embeds its prompts itself (PromptUNet); the rest kept.
template <class T>
NullConditioningFn<T> null_prompt() {
    return [](const Conditioning<T>& c) {
        if (!c.has_prompt()) {
            detail::throw_invalid("diffuse::classifier_free_guidance (the guided model)", "conditioning.prompt", "none",
                                  "a prompt per sample: the model is guided by its prompt");
        }
        Conditioning<T> null = c;
        null.prompt.length = 1;
        null.prompt.ids.assign(static_cast<std::size_t>(c.prompt.batch), 0);   // <start>
        null.prompt.mask.assign(static_cast<std::size_t>(c.prompt.batch), 1);
        return null;
    };
}

/// The model's timesteps t in [first, last] where guidance applies; the default, every timestep.
struct GuidanceInterval {
    int first = 0;
    int last = std::numeric_limits<int>::max();

    bool contains(int t) const { return first <= t && t <= last; }
};

/// The timesteps of `schedule` whose noise level sigma_t = sqrt((1 - alphabar_t) / alphabar_t) lies in
/// (sigma_low, sigma_high], as the model is told them (a respaced schedule's timestep_map()); sigma_high
/// may be infinite. sigma_t grows with t, so they are one run of timesteps.
template <class T>
GuidanceInterval guidance_interval(const NoiseSchedule<T>& schedule, double sigma_low, double sigma_high) {
    constexpr const char* where = "diffuse::guidance_interval";
    if (!(sigma_low >= 0.0) || !std::isfinite(sigma_low)) {
        detail::throw_invalid(where, "sigma_low", sigma_low, "a finite noise level >= 0");
    }
    if (!(sigma_high > sigma_low)) {
        std::ostringstream expected;
        expected << "a noise level above sigma_low, " << sigma_low;
        detail::throw_invalid(where, "sigma_high", sigma_high, expected.str());
    }
    const std::vector<double>& alphas_cumprod = schedule.alphas_cumprod_double();
    const auto sigma_at = [&alphas_cumprod](std::size_t i) {  // sigma_t = sqrt((1 - alphabar_t) / alphabar_t)
        return std::sqrt((1.0 - alphas_cumprod[i]) / alphas_cumprod[i]);
    };
    GuidanceInterval interval{std::numeric_limits<int>::max(), std::numeric_limits<int>::min()};
    for (std::size_t i = 0; i < alphas_cumprod.size(); ++i) {
        const double sigma = sigma_at(i);
        if (sigma > sigma_low && sigma <= sigma_high) {
            const int t = schedule.timestep_map()[i];
            interval.first = std::min(interval.first, t);
            interval.last = std::max(interval.last, t);
        }
    }
    if (interval.first > interval.last) {
        std::ostringstream given, expected;
        given << "(" << sigma_low << ", " << sigma_high << "]";
        expected << "an interval holding a timestep of the schedule, whose sigma_t runs from " << sigma_at(0) << " to "
                 << sigma_at(alphas_cumprod.size() - 1);
        detail::throw_invalid(where, "(sigma_low, sigma_high]", given.str(), expected.str());
    }
    return interval;
}

/// A model callback that applies classifier-free guidance with scale `scale`, the unconditional half
/// of each call conditioned on null(conditioning), at the timesteps of `interval`; a sample whose t is
/// outside it gets the conditional model's output, and a batch with none inside is one plain call.
template <class T>
ModelFn<T> classifier_free_guidance(ModelFn<T> model, NullConditioningFn<T> null, double scale,
                                    GuidanceInterval interval = {}) {
    constexpr const char* where = "diffuse::classifier_free_guidance";
    if (!std::isfinite(scale)) detail::throw_invalid(where, "scale", scale, "a finite guidance scale");
    if (!model) detail::throw_invalid(where, "model", "an empty callback", "a model");
    if (!null) detail::throw_invalid(where, "null", "an empty callback", "the null conditioning");
    if (interval.first > interval.last) {
        detail::throw_invalid(where, "interval", "[" + std::to_string(interval.first) + ", " + std::to_string(interval.last) + "]",
                              "first <= last");
    }
    return [model = std::move(model), null = std::move(null), scale, interval](const Tensor4<T>& x_t, const Timesteps& t,
                                                                                const Conditioning<T>& conditioning) {
        constexpr const char* call = "diffuse::classifier_free_guidance (the guided model)";
        const Index batch = x_t.dimension(0);
        check_conditioning(call, conditioning, batch, x_t.dimension(2), x_t.dimension(3));
        if (static_cast<Index>(t.size()) != batch) {
            detail::throw_invalid(call, "t.size()", t.size(), "one timestep per sample, " + std::to_string(batch));
        }
        std::vector<bool> guided_at(t.size());  // [N], whether sample n's t is in the interval
        std::transform(t.begin(), t.end(), guided_at.begin(), [&interval](int tn) { return interval.contains(tn); });
        if (std::none_of(guided_at.begin(), guided_at.end(), [](bool g) { return g; })) return model(x_t, t, conditioning);

        // [x_t; x_t], t twice, conditioning [c; null(c)]
        Tensor4<T> doubled(2 * batch, x_t.dimension(1), x_t.dimension(2), x_t.dimension(3));  // [2N, C, H, W]
        batch_assign(doubled, 0, x_t);
        batch_assign(doubled, batch, x_t);
        Timesteps t2 = t;
        t2.insert(t2.end(), t.begin(), t.end());
        const Tensor4<T> both = model(doubled, t2, concat_conditioning(conditioning, null(conditioning)));  // [2N, C', H, W]
        if (both.dimension(0) != 2 * batch || both.size() % 2 != 0) {
            detail::throw_invalid(call, "the model's output shape", shape_string(both.dimensions()),
                                  std::to_string(2 * batch) + " samples, the doubled batch");
        }
        const Shape4 half = {batch, both.dimension(1), both.dimension(2), both.dimension(3)};  // [N, C', H, W]
        const Eigen::TensorMap<const Tensor4<T>> cond(both.data(), half), uncond(both.data() + cond.size(), half);
        const T s = static_cast<T>(scale);
        Tensor4<T> guided = elementwise([s](T c, T u) { return u + s * (c - u); }, cond, uncond);
        const Index per_sample = both.dimension(1) * both.dimension(2) * both.dimension(3);
        for (Index n = 0; n < batch; ++n) {  // outside the interval: the conditional model alone
            if (!guided_at[static_cast<std::size_t>(n)]) std::copy_n(cond.data() + n * per_sample, per_sample, guided.data() + n * per_sample);
        }
        if (both.dimension(1) == 2 * x_t.dimension(1)) {
            // a learned variance's channels [mean part, v]: v is the conditional model's (GLIDE's choice),
            // not extrapolated past the range it was trained in
            const Index c = x_t.dimension(1), plane = x_t.dimension(2) * x_t.dimension(3);
            for (Index n = 0; n < batch; ++n) {
                const Index v = (n * 2 * c + c) * plane;
                std::copy_n(cond.data() + v, c * plane, guided.data() + v);
            }
        }
        return guided;
    };
}

/// Guidance of a class-conditional model with num_classes classes: the returned callback needs one
/// label in [0, num_classes) per sample; guided at the timesteps of `interval`.
template <class T>
ModelFn<T> classifier_free_guidance(ModelFn<T> model, int num_classes, double scale, GuidanceInterval interval = {}) {
    constexpr const char* where = "diffuse::classifier_free_guidance";
    if (num_classes < 1) {
        detail::throw_invalid(where, "num_classes", num_classes,
                              "a class-conditional model (num_classes >= 1); guidance needs one");
    }
    ModelFn<T> guided = classifier_free_guidance<T>(std::move(model), null_labels<T>(num_classes), scale, interval);
    return [guided = std::move(guided), num_classes](const Tensor4<T>& x_t, const Timesteps& t, const Conditioning<T>& conditioning) {
        const Index batch = x_t.dimension(0);
        if (static_cast<Index>(conditioning.labels.size()) != batch) {
            detail::throw_invalid("diffuse::classifier_free_guidance (the guided model)", "labels.size()",
                                  conditioning.labels.size(),
                                  "one class per sample, " + std::to_string(batch) +
                                      " (set the sampler's options.conditioning.labels; guidance needs a class)");
        }
        detail::check_guided_labels(conditioning.labels, num_classes);  // also at the steps outside its interval
        return guided(x_t, t, conditioning);
    };
}

}  // namespace diffuse
