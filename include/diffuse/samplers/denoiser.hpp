#pragma once
// The denoiser: all a sampler knows of a model. A model is a callback
//     output [N, C', H, W] = model(x_t [N, C, H, W], t [N], conditioning)
// (conditioning: class labels, a context, a concatenated image, each optional; core/conditioning.hpp)
// that predicts eps, x0 or v (Prediction), so a sampler runs the same with the U-Net, with any model
// a user brings, and with an analytic denoiser in the tests. The model is told the timesteps it was
// trained on: a sampler on a respaced schedule passes timestep_map()[i], not the step index i.

#include "diffuse/core/channels.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/thresholding.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace diffuse {

/// A model as a callback: x_t [N, C, H, W], the model's timesteps t [N], its conditioning (labels [N]
/// or none, a context, a concatenated image) -> its output, [N, C, H, W] (or [N, 2C, H, W] with a
/// learned variance). A callback of a labels-only model, (x_t, t, const std::vector<int>& labels),
/// converts to it: a Conditioning passes as its labels.
template <class T>
using ModelFn = std::function<Tensor4<T>(const Tensor4<T>& x_t, const Timesteps& t, const Conditioning<T>& conditioning)>;

namespace detail {
template <class U>
struct non_deduced {
    using type = U;
};
}  // namespace detail

/// ModelFn<T> as a parameter whose T is deduced from the other arguments, so a lambda converts to it.
template <class T>
using ModelArg = typename detail::non_deduced<ModelFn<T>>::type;

namespace detail {
template <class Model, class = void>
struct has_set_training : std::false_type {};
template <class Model>
struct has_set_training<Model, std::void_t<decltype(std::declval<Model&>().set_training(false))>> : std::true_type {};

template <class Model, class = void>
struct has_training_getter : std::false_type {};
template <class Model>
struct has_training_getter<Model, std::void_t<decltype(bool(std::declval<const Model&>().training()))>>
    : std::true_type {};
}  // namespace detail

/// Anything with forward(x, t, conditioning) (the U-Net) as a ModelFn. The model is held by reference and
/// must outlive the callback. A model with a training mode (set_training(bool) and training()) is
/// called in evaluation mode, no dropout, whatever mode it is in, and given its mode back after the
/// call, even if the call throws.
template <class T, class Model>
ModelFn<T> model_fn(Model& model) {
    static_assert(detail::has_training_getter<Model>::value || !detail::has_set_training<Model>::value,
                  "diffuse::model_fn: the model has set_training(bool) but no bool training() const, so the "
                  "callback could not call it in evaluation mode and give it its mode back; add training()");
    return [&model](const Tensor4<T>& x_t, const Timesteps& t, const Conditioning<T>& conditioning) {
        if constexpr (detail::has_training_getter<Model>::value && detail::has_set_training<Model>::value) {
            if (model.training()) {
                struct Restore {  // training mode back, even if forward throws
                    Model& model;
                    ~Restore() { model.set_training(true); }
                } restore{model};
                model.set_training(false);
                return Tensor4<T>(model.forward(x_t, t, conditioning));
            }
        }
        return Tensor4<T>(model.forward(x_t, t, conditioning));
    };
}

/// The model's prediction at one step, as both parameterisations a sampler needs.
template <class T>
struct Denoised {
    Tensor4<T> x0;   // [N, C, H, W], after thresholding
    Tensor4<T> eps;  // [N, C, H, W], the model's eps (not re-derived from a thresholded x0)
};

/// A learned-variance model ([N, 2C, H, W] outputs, [mean part, v]) as a model of its mean part alone,
/// [N, C, H, W]: to sample it with a fixed variance. The output must have twice x_t's channels.
template <class T>
ModelFn<T> without_variance(ModelFn<T> model) {
    if (!model) detail::throw_invalid("diffuse::without_variance", "model", "an empty callback", "a model");
    return [model = std::move(model)](const Tensor4<T>& x_t, const Timesteps& t, const Conditioning<T>& conditioning) {
        Tensor4<T> out = model(x_t, t, conditioning);  // [N, 2C, H, W]
        const Index c = x_t.dimension(1);
        if (out.dimension(1) != 2 * c) {
            detail::throw_invalid("diffuse::without_variance (the model)", "the output's channels", out.dimension(1),
                                  std::to_string(2 * c) + ", a learned variance's [mean part, v] for x_t's " +
                                      std::to_string(c));
        }
        return channel_slice(out, 0, c);  // [N, C, H, W]
    };
}

namespace detail {

/// Throws numerical_error naming the first non-finite entry of x, if any.
template <class T>
void check_finite(const char* where, const std::string& what, const Tensor4<T>& x) {
    for (Index i = 0; i < x.size(); ++i) {
        if (!std::isfinite(x.data()[i])) {
            throw numerical_error(std::string(where) + ": " + what + " holds a non-finite value (" +
                                  std::to_string(x.data()[i]) + " at flat index " + std::to_string(i) + " of " +
                                  shape_string(x.dimensions()) + ")");
        }
    }
}

/// Calls the model on x (every sample at step i of `schedule`), checks that it returned
/// [N, channels, H, W] of finite values, and returns that output.
template <class T>
Tensor4<T> call_model(const char* where, const ModelArg<T>& model, const NoiseSchedule<T>& schedule,
                      const Tensor4<T>& x, int i, const Conditioning<T>& conditioning, Index channels) {
    const Timesteps t(static_cast<std::size_t>(x.dimension(0)), schedule.timestep_map()[static_cast<std::size_t>(i)]);
    Tensor4<T> out = model(x, t, conditioning);  // [N, channels, H, W]
    const Shape4 want = {x.dimension(0), channels, x.dimension(2), x.dimension(3)};
    const Shape4 got = {out.dimension(0), out.dimension(1), out.dimension(2), out.dimension(3)};
    if (got != want) {
        throw_invalid(where, "the model's output shape", shape_string(got),
                      shape_string(want) + " for x_t of shape " + shape_string(x.dimensions()) + " at t = " +
                          std::to_string(t.front()));
    }
    check_finite(where, "the model's output at t = " + std::to_string(t.front()), out);
    return out;
}

}  // namespace detail

/// Calls the model at step i of `schedule` and converts its output to (x0, eps); x0 is thresholded
/// as the options say. x: [N, C, H, W]. A learned-range model's variance channels are not used.
template <class T>
Denoised<T> denoise(const char* where, const NoiseSchedule<T>& schedule, const ModelArg<T>& model,
                    const Tensor4<T>& x, int i, const SamplerOptions<T>& options) {
    const Index c = x.dimension(1);
    const bool learned = options.variance == ModelVariance::learned_range;
    Tensor4<T> output = detail::call_model(where, model, schedule, x, i, options.conditioning,
                                           model_output_channels(c, options.variance));  // [N, C or 2C, H, W]
    if (learned) output = channel_slice(output, 0, c);                                    // [N, C, H, W], the mean part
    const Timesteps steps(static_cast<std::size_t>(x.dimension(0)), i);
    Denoised<T> d;
    d.eps = predict_eps(schedule, x, steps, output, options.prediction);
    d.x0 = threshold_x0(predict_x0(schedule, x, steps, output, options.prediction), options.thresholding,
                        options.dynamic_percentile, options.clip_range);
    return d;
}

}  // namespace diffuse
