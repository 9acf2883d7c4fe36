#pragma once
// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2; Improved DDPM's p_sample):
//   x0_hat = x0 from the model's output (clipped or dynamically thresholded if asked)
//   x_{t-1} = mu_tilde(x0_hat, x_t) + sigma_t z,   z ~ N(0, I), no noise at t = 0,
// mu_tilde = posterior_mean_coef1 x0_hat + posterior_mean_coef2 x_t, and sigma_t^2 fixed small
// (beta_tilde_t), fixed large (beta_t, entry 0 replaced by beta_tilde_1) or learned in range.
// The loop runs every step of the schedule it is given, from pure noise; pass a respaced schedule
// (respace()) for Improved DDPM's fewer-step sampling.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/process/vlb.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <cmath>
#include <string>

namespace diffuse {

template <class T>
struct DDPMOptions : SamplerOptions<T> {
    ModelVariance variance = ModelVariance::fixed_small;  // learned_range: the model outputs [N, 2C, H, W]
};

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
    detail::check_sampler_options(where, options, x_t.dimension(0));
    const Index c = x_t.dimension(1);
    const Tensor4<T> output = detail::call_model(where, model, schedule, x_t, i, options.labels,
                                                 model_output_channels(c, options.variance));
    const bool learned = options.variance == ModelVariance::learned_range;
    const Timesteps steps(static_cast<std::size_t>(x_t.dimension(0)), i);
    StepResult<T> out;
    out.pred_x0 = threshold_x0(predict_x0(schedule, x_t, steps, learned ? channel_slice(output, 0, c) : output,
                                          options.prediction),
                               options.thresholding, options.dynamic_percentile);
    out.x = q_posterior_mean(schedule, out.pred_x0, x_t, steps);  // [N, C, H, W], the mean
    if (i > 0 && learned) {
        const Tensor4<T> log_variance = model_log_variance(schedule, options.variance, steps, channel_slice(output, c, c), x_t);
        for (Index k = 0; k < out.x.size(); ++k) {
            out.x.data()[k] += std::exp(T(0.5) * log_variance.data()[k]) * noise.data()[k];  // sigma z
        }
    } else if (i > 0) {
        // sigma = exp(log sigma^2 / 2), one value for the step
        const T sigma = static_cast<T>(std::exp(0.5 * fixed_log_variance(schedule, options.variance, i)));
        for (Index k = 0; k < out.x.size(); ++k) out.x.data()[k] += sigma * noise.data()[k];
    }
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
    detail::check_sampler_options(where, options, x_T.dimension(0));
    const Shape4 shape = x_T.dimensions();
    Samples<T> out;
    out.x = x_T;  // [N, C, H, W]
    if (options.keep_intermediates) out.intermediates.push_back(out.x);
    const int n = schedule.num_timesteps();
    for (int k = 0; k < n; ++k) {
        const int i = n - 1 - k;
        const Tensor4<T> noise = i > 0 ? detail::stream_noise<T>(options.seed, static_cast<std::uint64_t>(k) + 1, shape)
                                       : Tensor4<T>(shape).setZero();
        StepResult<T> step = ddpm_step(schedule, model, out.x, i, noise, options);
        out.x = std::move(step.x);
        if (options.progress) options.progress(k, schedule.timestep_map()[static_cast<std::size_t>(i)], step.pred_x0);
        if (options.keep_intermediates) {
            out.intermediates.push_back(out.x);
            out.predicted_x0.push_back(std::move(step.pred_x0));
        }
    }
    return out;
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, drawn from stream 0 of options.seed.
template <class T>
Samples<T> ddpm_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Shape4& shape,
                       const DDPMOptions<T>& options = {}) {
    detail::check_shape4("diffuse::ddpm_sample", shape);
    return ddpm_sample_from(schedule, model, detail::stream_noise<T>(options.seed, 0, shape), options);
}

}  // namespace diffuse
