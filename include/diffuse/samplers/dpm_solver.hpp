#pragma once
// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order multistep solver of
// the diffusion ODE in the data-prediction form, over the log-SNR lambda = log(alpha / sigma),
// alpha = sqrt(alphabar), sigma = sqrt(1 - alphabar), on a respaced subset of the training timesteps.
// Going from step s (x_s, prediction x0_s) to the next, less noisy step t, with h = lambda_t - lambda_s:
//   first order (DDIM):  x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s
//   second order:        the same with D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev in place of x0_s,
//                        r = h_prev / h, x0_prev the prediction of the step before.
// One model call per step. The first step has no previous prediction and is first order; the step
// into the last selected timestep is first order too (diffusers' lower_order_final, here whatever the
// step count): with t = 0 selected, lambda jumps there by several times the previous h, r is far
// below 1 and the second-order extrapolation overshoots (for Gaussian data with 50 leading steps of
// a linear schedule, +15% in variance against -0.3% first order). The last model call's x0 prediction
// at the smallest selected timestep is the sample (the jump to sigma = 0, where e^{-h} = 0).

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <cmath>
#include <string>
#include <utility>

namespace diffuse {

template <class T>
struct DPMSolverOptions : SamplerOptions<T> {
    StepSelection steps = {};  // which timesteps the num_steps model calls visit
};

/// DPM-Solver++(2M) with num_steps model calls over the training schedule `schedule`, from x_T
/// [N, C, H, W] at the noisiest selected timestep. Deterministic: the seed only draws x_T in the
/// shape overload.
template <class T>
Samples<T> dpm_solver_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                                  const Tensor4<T>& x_T, const DPMSolverOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::dpm_solver_sample";
    check_batch(where, "x_T", x_T);
    detail::check_sampler_options(where, options, x_T);
    const NoiseSchedule<T> sampling = detail::sampling_schedule(where, schedule, num_steps, options.steps);
    const auto& ab = sampling.alphas_cumprod_double();
    // alpha_i, sigma_i and lambda_i = log(alpha_i / sigma_i) of selected step i, in double
    const auto alpha = [&](int i) { return std::sqrt(ab[static_cast<std::size_t>(i)]); };
    const auto sigma = [&](int i) { return std::sqrt(1.0 - ab[static_cast<std::size_t>(i)]); };
    const auto lambda = [&](int i) { return std::log(alpha(i)) - std::log(sigma(i)); };

    Tensor4<T> x0_prev;  // [N, C, H, W], the previous step's x0 prediction
    double h_prev = 0.0;
    return detail::sampling_loop(where, "step at", x_T, num_steps, options, [&](int k, const Tensor4<T>& x) {
        const int i = num_steps - 1 - k;  // from selected step i to i - 1
        Denoised<T> d = denoise(where, sampling, model, x, i, options);
        detail::Move<T> move{{}, {}, sampling.timestep_map()[static_cast<std::size_t>(i)]};
        if (i == 0) {
            move.x = d.x0;  // sigma = 0 after the last step
        } else {
            const double h = lambda(i - 1) - lambda(i);
            const double decay = sigma(i - 1) / sigma(i), gain = alpha(i - 1) * -std::expm1(-h);  // alpha_t (1 - e^{-h})
            // second order: D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev, r = h_prev / h; first order: D = x0_s
            const bool second_order = k > 0 && i - 1 > 0;
            const double r = h_prev / h;
            const T a = static_cast<T>(decay), b = static_cast<T>(gain * (second_order ? 1.0 + 1.0 / (2.0 * r) : 1.0)),
                    c = static_cast<T>(gain * (second_order ? -1.0 / (2.0 * r) : 0.0));
            move.x = elementwise(
                [a, b, c, second_order](T xs, T x0, T x0p) { return a * xs + b * x0 + (second_order ? c * x0p : T(0)); },
                x, d.x0, second_order ? x0_prev : d.x0);
            h_prev = h;
        }
        x0_prev = d.x0;
        move.pred_x0 = std::move(d.x0);
        return move;
    });
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, stream 0 of options.seed.
template <class T>
Samples<T> dpm_solver_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                             const Shape4& shape, const DPMSolverOptions<T>& options = {}) {
    detail::check_shape4("diffuse::dpm_solver_sample", shape);
    return dpm_solver_sample_from(schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options);
}

}  // namespace diffuse
