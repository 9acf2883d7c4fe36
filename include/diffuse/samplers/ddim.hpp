#pragma once
// DDIM (Song, Meng & Ermon 2021, eq. 12) over a respaced subset of the training timesteps:
//   x_{t-1} = sqrt(alphabar_prev) x0_hat + sqrt(1 - alphabar_prev - sigma^2) eps_hat + sigma z,
//   sigma = eta sqrt((1 - alphabar_prev) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_prev),
// with alphabar_prev = 1 after the last step. eta = 0 is deterministic; eta = 1 gives sigma^2 =
// beta_tilde of the respaced schedule, DDPM's fixed-small variance, and then the step is DDPM's.
//
// Which eps when x0 is clipped or thresholded: by default the step uses eps re-derived from the
// thresholded x0, eps_hat = (x_t - sqrt(alphabar_t) x0_hat) / sqrt(1 - alphabar_t), as Improved DDPM
// and GLIDE do. Then (x0_hat, eps_hat) still decompose x_t exactly, x_t = sqrt(alphabar_t) x0_hat +
// sqrt(1 - alphabar_t) eps_hat, so the step is a point of the forward process between x0_hat and the
// direction that leads to x_t, and with eta = 1 it equals the DDPM step with the same clipping, term
// for term. Using the model's raw eps with a clipped x0 (diffusers' default, use_clipped_model_output
// = False) breaks that identity: set eps_from_thresholded_x0 = false to get it.
//
// Inversion (image -> noise, eta = 0) runs the same steps backwards: from x at step i - 1 (the image
// before step 0, alphabar = 1) to step i with the model's eps at the target step i,
//   x_i = sqrt(alphabar_i) x0_hat + sqrt(1 - alphabar_i) eps_hat,  x0_hat = (x - sqrt(1 - alphabar_{i-1}) eps_hat) / sqrt(alphabar_{i-1}),
// which is the sampler's step solved for x_i with eps evaluated at x_{i-1} instead of x_i (the
// approximation diffusers' DDIMInverseScheduler makes). fixed_point_iterations > 0 re-evaluates eps at
// the new x_i that many times, which converges to the exact inverse of the sampler's step.

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace diffuse {

template <class T>
struct DDIMOptions : SamplerOptions<T> {
    double eta = 0.0;                     // in [0, 1]
    StepSelection steps = {};             // which timesteps the num_steps steps visit
    bool eps_from_thresholded_x0 = true;  // see the header comment
    int fixed_point_iterations = 0;       // inversion only
};

namespace detail {

inline void check_eta(const char* where, double eta) {
    if (!(eta >= 0.0 && eta <= 1.0)) {
        throw_invalid(where, "eta", eta, "a value in [0, 1] (0: deterministic DDIM, 1: DDPM's variance)");
    }
}

/// The DDIM step of ddim_step, its arguments already checked:
///   x_{t-1} = sqrt(alphabar_prev) x0_hat + sqrt(1 - alphabar_prev - sigma^2) eps_hat + sigma z.
template <class T>
StepResult<T> ddim_update(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& x_t, int i,
                          const Tensor4<T>& noise, const DDIMOptions<T>& options) {
    Denoised<T> d = denoise("diffuse::ddim_step", schedule, model, x_t, i, options);
    const auto& ab = schedule.alphas_cumprod_double();
    const double ab_t = ab[static_cast<std::size_t>(i)], ab_prev = i > 0 ? ab[static_cast<std::size_t>(i) - 1] : 1.0;
    if (options.eps_from_thresholded_x0 && options.thresholding != Thresholding::none) {
        // eps_hat = (x_t - sqrt(alphabar_t) x0_hat) / sqrt(1 - alphabar_t)
        const T a = static_cast<T>(1.0 / std::sqrt(1.0 - ab_t)), b = static_cast<T>(-std::sqrt(ab_t / (1.0 - ab_t)));
        d.eps = elementwise([a, b](T x, T x0) { return a * x + b * x0; }, x_t, d.x0);
    }
    // sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)
    const double sigma = options.eta * std::sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * std::sqrt(1.0 - ab_t / ab_prev);
    // the direction pointing to x_t: sqrt(1 - ab_prev - sigma^2), never negative for eta <= 1
    const double dir = std::sqrt(std::max(0.0, 1.0 - ab_prev - sigma * sigma));
    const T a = static_cast<T>(std::sqrt(ab_prev)), b = static_cast<T>(dir), c = static_cast<T>(sigma);
    StepResult<T> out;
    out.x = elementwise([a, b, c](T x0, T eps, T z) { return a * x0 + b * eps + c * z; }, d.x0, d.eps, noise);
    out.pred_x0 = std::move(d.x0);
    return out;
}

}  // namespace detail

/// One DDIM step from x_t [N, C, H, W] at step i of the sampling schedule `schedule` (already respaced)
/// to step i - 1, with standard normal noise [N, C, H, W] (used only when eta > 0 and i > 0).
template <class T>
StepResult<T> ddim_step(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& x_t, int i,
                        const Tensor4<T>& noise, const DDIMOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::ddim_step";
    check_batch(where, "x_t", x_t);
    check_same_shape(where, "x_t", x_t, "noise", noise);
    if (i < 0 || i >= schedule.num_timesteps()) {
        detail::throw_invalid(where, "i", i, "a step in [0, " + std::to_string(schedule.num_timesteps()) + ")");
    }
    detail::check_eta(where, options.eta);
    detail::check_sampler_options(where, options, x_t);
    StepResult<T> out = detail::ddim_update(schedule, model, x_t, i, noise, options);
    detail::check_finite(where, "x after the step at t = " + std::to_string(schedule.timestep_map()[i]), out.x);
    return out;
}

/// DDIM sampling with num_steps steps over the training schedule `schedule`, from x_T [N, C, H, W]
/// at the noisiest selected timestep. The noise of step k (eta > 0) is stream k + 1 of options.seed.
template <class T>
Samples<T> ddim_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                            const Tensor4<T>& x_T, const DDIMOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::ddim_sample";
    check_batch(where, "x_T", x_T);
    detail::check_eta(where, options.eta);
    detail::check_sampler_options(where, options, x_T);
    const NoiseSchedule<T> sampling = detail::sampling_schedule(where, schedule, num_steps, options.steps);
    const Shape4 shape = x_T.dimensions();
    const Tensor4<T> zeros = Tensor4<T>(shape).setZero();
    return detail::sampling_loop(where, "step at", x_T, num_steps, options, [&](int k, const Tensor4<T>& x) {
        const int i = num_steps - 1 - k;
        const bool noisy = options.eta > 0.0 && i > 0;
        StepResult<T> step =
            detail::ddim_update(sampling, model, x, i, noisy ? detail::move_noise<T>(options.seed, k, shape) : zeros, options);
        return detail::Move<T>{std::move(step.x), std::move(step.pred_x0), sampling.timestep_map()[static_cast<std::size_t>(i)]};
    });
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, stream 0 of options.seed.
template <class T>
Samples<T> ddim_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps, const Shape4& shape,
                       const DDIMOptions<T>& options = {}) {
    detail::check_shape4("diffuse::ddim_sample", shape);
    return ddim_sample_from(schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options);
}

/// DDIM inversion (eta = 0): the noise x_T [N, C, H, W] from which ddim_sample with the same schedule,
/// num_steps and options returns (approximately; see the header comment) the image x0 [N, C, H, W].
/// Thresholding is not applied: it is not invertible. options.progress sees the steps in inversion order.
template <class T>
Samples<T> ddim_invert(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps, const Tensor4<T>& x0,
                       const DDIMOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::ddim_invert";
    check_batch(where, "x0", x0);
    if (options.eta != 0.0) {
        detail::throw_invalid(where, "eta", options.eta, "0: only the deterministic sampler can be inverted");
    }
    if (options.fixed_point_iterations < 0) {
        detail::throw_invalid(where, "fixed_point_iterations", options.fixed_point_iterations, ">= 0");
    }
    detail::check_sampler_options(where, options, x0);
    const NoiseSchedule<T> sampling = detail::sampling_schedule(where, schedule, num_steps, options.steps);
    SamplerOptions<T> plain = options;
    plain.thresholding = Thresholding::none;
    const auto& ab = sampling.alphas_cumprod_double();
    return detail::sampling_loop(where, "inversion step to", x0, num_steps, options, [&](int i, const Tensor4<T>& x_from) {
        // from x_from [N, C, H, W] at step i - 1 to step i
        const double ab_from = i > 0 ? ab[static_cast<std::size_t>(i) - 1] : 1.0, ab_to = ab[static_cast<std::size_t>(i)];
        const T to_x0_x = static_cast<T>(1.0 / std::sqrt(ab_from)), to_x0_eps = static_cast<T>(-std::sqrt((1.0 - ab_from) / ab_from));
        const T to_x_x0 = static_cast<T>(std::sqrt(ab_to)), to_x_eps = static_cast<T>(std::sqrt(1.0 - ab_to));
        detail::Move<T> move{x_from, {}, sampling.timestep_map()[static_cast<std::size_t>(i)]};  // x: the guess of x at step i the model is evaluated at
        for (int iteration = 0; iteration <= options.fixed_point_iterations; ++iteration) {
            const Denoised<T> d = denoise(where, sampling, model, move.x, i, plain);
            // x0_hat from x_from with this eps, then forward to step i along the same eps
            move.pred_x0 = elementwise([=](T x, T eps) { return to_x0_x * x + to_x0_eps * eps; }, x_from, d.eps);
            move.x = elementwise([=](T x0_hat, T eps) { return to_x_x0 * x0_hat + to_x_eps * eps; }, move.pred_x0, d.eps);
        }
        return move;
    });
}

}  // namespace diffuse
