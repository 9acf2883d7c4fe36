#pragma once
// The Euler samplers of Karras et al. 2022 (k-diffusion's sample_euler and sample_euler_ancestral), in
// sigma space. A state x_t of the variance-preserving process is x = x_t / sqrt(alphabar_t) there, at
// noise level sigma = sqrt((1 - alphabar_t) / alphabar_t), and the probability-flow ODE reads
//   dx / dsigma = (x - D(x; sigma)) / sigma,      D: the model's x0 prediction (thresholded as asked).
// From level sigma to the next, sigma' (the selected timesteps, as DDIM's; karras_timesteps for
// Karras et al.'s spacing; sigma' = 0 after the last):
//   Euler:            x' = x + d (sigma' - sigma),   d = (x - D) / sigma
//   Euler ancestral:  sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
//                     sigma_down = sqrt(sigma'^2 - sigma_up^2),
//                     x' = x + d (sigma_down - sigma) + sigma_up z,   z ~ N(0, I) from stream k + 1
// The loop's state is x_t itself, sqrt(alphabar) x, as every sampler's, so the starting noise x_T
// (stream 0) and the kept intermediates are those of DDIM. Euler is DDIM (eta = 0) written in sigma:
// the same update. One model call per step; the last step lands on D at the smallest selected level.

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/karras.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace diffuse {

template <class T>
struct SigmaSamplerOptions : SamplerOptions<T> {
    StepSelection steps = {};  // which timesteps the steps visit; karras_timesteps(schedule, n) for Karras spacing
    double eta = 1.0;          // Euler ancestral: the share of sigma_up drawn anew (1: k-diffusion's default)
};

namespace detail {

/// The noise levels of a respaced schedule's steps: sigma_i and sqrt(alphabar_i) of selected step i,
/// and sigma = 0, sqrt(alphabar) = 1 below step 0 (i = -1), in double.
struct SigmaLevels {
    std::vector<double> alphabar;
    double sigma(int i) const { return i < 0 ? 0.0 : std::sqrt((1.0 - alphabar[static_cast<std::size_t>(i)]) / alphabar[static_cast<std::size_t>(i)]); }
    double scale(int i) const { return i < 0 ? 1.0 : std::sqrt(alphabar[static_cast<std::size_t>(i)]); }
};

inline void check_eta_ancestral(const char* where, double eta) {
    if (!(eta >= 0.0 && eta <= 1.0)) throw_invalid(where, "eta", eta, "a value in [0, 1] (0: Euler, 1: fully ancestral)");
}

/// The Euler (or Euler ancestral) sampler's loop from x_T; `eta` 0 is plain Euler.
template <class T>
Samples<T> euler_loop(const char* where, const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                      const Tensor4<T>& x_T, const SigmaSamplerOptions<T>& options, double eta) {
    check_batch(where, "x_T", x_T);
    check_sampler_options(where, options, x_T);
    check_eta_ancestral(where, eta);
    const NoiseSchedule<T> sampling = sampling_schedule(where, schedule, num_steps, options.steps);
    const SigmaLevels level{sampling.alphas_cumprod_double()};
    const Shape4 shape = x_T.dimensions();
    return sampling_loop(where, "step at", x_T, num_steps, options, [&](int k, const Tensor4<T>& x) {
        const int i = num_steps - 1 - k;  // from selected step i to i - 1
        Denoised<T> d = denoise(where, sampling, model, x, i, options);
        const double s = level.sigma(i), s_next = level.sigma(i - 1);
        const double up = std::min(s_next, eta * std::sqrt(s_next * s_next * (s * s - s_next * s_next) / (s * s)));
        const double down = std::sqrt(s_next * s_next - up * up);
        // x' = a' ((down / s) x / a + (1 - down / s) D + up z), with a = sqrt(alphabar) of each level
        const double a = level.scale(i), a_next = level.scale(i - 1);
        const T c_x = static_cast<T>(a_next * down / (s * a)), c_d = static_cast<T>(a_next * (1.0 - down / s)),
                c_z = static_cast<T>(a_next * up);
        Move<T> move{{}, {}, sampling.timestep_map()[static_cast<std::size_t>(i)]};
        if (up > 0.0) {
            move.x = elementwise([=](T xv, T dv, T z) { return c_x * xv + c_d * dv + c_z * z; }, x, d.x0, move_noise<T>(options.seed, k, shape));
        } else {
            move.x = elementwise([=](T xv, T dv) { return c_x * xv + c_d * dv; }, x, d.x0);
        }
        move.pred_x0 = std::move(d.x0);
        return move;
    });
}

}  // namespace detail

/// Euler with num_steps model calls over the training schedule `schedule`, from x_T [N, C, H, W] at the
/// noisiest selected timestep. Deterministic.
template <class T>
Samples<T> euler_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                             const Tensor4<T>& x_T, const SigmaSamplerOptions<T>& options = {}) {
    return detail::euler_loop("diffuse::euler_sample", schedule, model, num_steps, x_T, options, 0.0);
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, stream 0 of options.seed.
template <class T>
Samples<T> euler_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps, const Shape4& shape,
                        const SigmaSamplerOptions<T>& options = {}) {
    detail::check_shape4("diffuse::euler_sample", shape);
    return euler_sample_from(schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options);
}

/// Euler ancestral (options.eta of each step's noise drawn anew) with num_steps model calls, from x_T.
template <class T>
Samples<T> euler_ancestral_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                                       const Tensor4<T>& x_T, const SigmaSamplerOptions<T>& options = {}) {
    return detail::euler_loop("diffuse::euler_ancestral_sample", schedule, model, num_steps, x_T, options, options.eta);
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, stream 0 of options.seed.
template <class T>
Samples<T> euler_ancestral_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                                  const Shape4& shape, const SigmaSamplerOptions<T>& options = {}) {
    detail::check_shape4("diffuse::euler_ancestral_sample", shape);
    return euler_ancestral_sample_from(schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options);
}

}  // namespace diffuse
