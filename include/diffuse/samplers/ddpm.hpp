#pragma once
// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2; Improved DDPM's p_sample):
//   x0_hat = x0 from the model's output (clipped or dynamically thresholded if asked)
//   x_{t-1} = mu_tilde(x0_hat, x_t) + sigma_t z,   z ~ N(0, I), no noise at t = 0,
// mu_tilde = posterior_mean_coef1 x0_hat + posterior_mean_coef2 x_t, and sigma_t^2 fixed small
// (beta_tilde_t), fixed large (beta_t, entry 0 replaced by beta_tilde_1) or learned in range.
// The loop runs every step of the schedule it is given, from pure noise; pass a respaced schedule
// (respace()) for Improved DDPM's fewer-step sampling.

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/reverse.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <cmath>
#include <string>
#include <utility>

namespace diffuse {

/// DDPM takes every sampler's options; their `variance` is its step's: fixed small, fixed large or the
/// model's learned range.
template <class T>
struct DDPMOptions : SamplerOptions<T> {};

namespace detail {

/// The reverse step's options from a sampler's.
template <class T>
ReverseOptions reverse_options(const DDPMOptions<T>& options) {
    return {options.prediction, options.variance, options.thresholding, options.dynamic_percentile, options.clip_range};
}

/// The ancestral step of ddpm_step, its arguments already checked:
///   x_{t-1} = mu_theta(x_t) + sigma_t z,   no noise at i = 0.
template <class T>
StepResult<T> ddpm_update(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& x_t, int i,
                          const Tensor4<T>& noise, const DDPMOptions<T>& options) {
    constexpr const char* where = "diffuse::ddpm_step";
    const Tensor4<T> output = call_model(where, model, schedule, x_t, i, options.conditioning,
                                         model_output_channels(x_t.dimension(1), options.variance));
    const Timesteps steps(static_cast<std::size_t>(x_t.dimension(0)), i);
    ReverseStep<T> p = p_mean_variance(schedule, output, x_t, steps, reverse_options(options));
    StepResult<T> out;
    if (i == 0) {
        out.x = std::move(p.mean);
    } else if (options.variance == ModelVariance::learned_range) {
        out.x = elementwise([](T mean, T log_variance, T z) { return mean + std::exp(T(0.5) * log_variance) * z; },
                            p.mean, p.log_variance, noise);
    } else {
        // sigma = exp(log sigma^2 / 2) in double, one value for the step
        const T sigma = static_cast<T>(std::exp(0.5 * fixed_log_variance(schedule, options.variance, i)));
        out.x = elementwise([sigma](T mean, T z) { return mean + sigma * z; }, p.mean, noise);
    }
    out.pred_x0 = std::move(p.pred_x0);
    return out;
}

}  // namespace detail

/// One ancestral step from x_t [N, C, H, W] at step i of `schedule` to step i - 1, with the given
/// standard normal noise [N, C, H, W] (unused at i = 0, where the step returns the mean).
template <class T>
StepResult<T> ddpm_step(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& x_t, int i,
                        const Tensor4<T>& noise, const DDPMOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::ddpm_step";
    check_batch(where, "x_t", x_t);
    check_same_shape(where, "x_t", x_t, "noise", noise);
    if (i < 0 || i >= schedule.num_timesteps()) {
        detail::throw_invalid(where, "i", i, "a step in [0, " + std::to_string(schedule.num_timesteps()) + ")");
    }
    detail::check_sampler_options(where, options, x_t);
    StepResult<T> out = detail::ddpm_update(schedule, model, x_t, i, noise, options);
    detail::check_finite(where, "x after the step at t = " + std::to_string(schedule.timestep_map()[i]), out.x);
    return out;
}

/// The full ancestral loop from x_T [N, C, H, W] through every step of `schedule`; the noise of the
/// k-th step is stream k + 1 of options.seed.
template <class T>
Samples<T> ddpm_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& x_T,
                            const DDPMOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::ddpm_sample";
    check_batch(where, "x_T", x_T);
    detail::check_sampler_options(where, options, x_T);
    const Shape4 shape = x_T.dimensions();
    const int n = schedule.num_timesteps();
    return detail::sampling_loop(where, "step at", x_T, n, options, [&](int k, const Tensor4<T>& x) {
        const int i = n - 1 - k;
        const Tensor4<T> noise = i > 0 ? detail::move_noise<T>(options.seed, k, shape) : Tensor4<T>(shape).setZero();
        StepResult<T> step = detail::ddpm_update(schedule, model, x, i, noise, options);
        return detail::Move<T>{std::move(step.x), std::move(step.pred_x0), schedule.timestep_map()[static_cast<std::size_t>(i)]};
    });
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, drawn from stream 0 of options.seed.
template <class T>
Samples<T> ddpm_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Shape4& shape,
                       const DDPMOptions<T>& options = {}) {
    detail::check_shape4("diffuse::ddpm_sample", shape);
    return ddpm_sample_from(schedule, model, detail::stream_noise<T>(options.seed, 0, shape), options);
}

}  // namespace diffuse
