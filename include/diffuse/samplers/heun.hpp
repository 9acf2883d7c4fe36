#pragma once
// Heun's second-order sampler of Karras et al. 2022 (Algorithm 1 with S_churn = 0; k-diffusion's
// sample_heun), in sigma space as samplers/euler.hpp explains. From level sigma to sigma' > 0:
//   d  = (x - D(x; sigma)) / sigma,          x~ = x + d (sigma' - sigma)          (an Euler step)
//   d' = (x~ - D(x~; sigma')) / sigma',      x' = x + (d + d') / 2 (sigma' - sigma)  (the trapezoid)
// and to sigma' = 0 after the last level, the Euler step alone (x' = D). The first step, from the
// noisiest level, is an Euler step too (first order, as DPM-Solver++'s first step): there the
// trapezoid's correction is h / 2 (D - D') / sigma' in sigma space, the difference of two x0
// predictions weighted by about sigma / (2 sigma'), which from the cosine schedule's t = T - 1
// (sigma = 20291 against 642 at T - 2, its last beta clipped to 0.999) is in the hundreds and ruins
// the sample; for sigma, sigma' far above the data's scale the Euler step is exact anyway. So
// 2 num_steps - 2 model calls for num_steps >= 2. The second call of a step is at the next selected
// timestep, so every call is at a level the model was trained at. Heun wants levels close in sigma:
// Karras et al.'s spacing on the cosine schedule crowds its top levels onto t = 994 .. 999 and leaves
// jumps of a ratio over 100 below them, where Heun overshoots (docs/sampling.md).

#include "diffuse/core/elementwise.hpp"
#include "diffuse/samplers/euler.hpp"

#include <string>
#include <utility>

namespace diffuse {

/// Heun with num_steps noise levels (2 num_steps - 2 model calls, 1 for one level) over the training schedule
/// `schedule`, from x_T [N, C, H, W] at the noisiest selected timestep. Deterministic.
template <class T>
Samples<T> heun_sample_from(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                            const Tensor4<T>& x_T, const SigmaSamplerOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::heun_sample";
    check_batch(where, "x_T", x_T);
    detail::check_sampler_options(where, options, x_T);
    const NoiseSchedule<T> sampling = detail::sampling_schedule(where, schedule, num_steps, options.steps);
    const detail::SigmaLevels level{sampling.alphas_cumprod_double()};
    return detail::sampling_loop(where, "step at", x_T, num_steps, options, [&](int k, const Tensor4<T>& x) {
        const int i = num_steps - 1 - k;  // from selected step i to i - 1
        Denoised<T> d = denoise(where, sampling, model, x, i, options);
        detail::Move<T> move{{}, {}, sampling.timestep_map()[static_cast<std::size_t>(i)]};
        const double s = level.sigma(i), s_next = level.sigma(i - 1), a = level.scale(i), a_next = level.scale(i - 1);
        // the Euler step, as x_t at step i - 1: x~_t = a' ((s' / s) x / a + (1 - s' / s) D); D at sigma' = 0
        const T e_x = static_cast<T>(a_next * s_next / (s * a)), e_d = static_cast<T>(a_next * (1.0 - s_next / s));
        Tensor4<T> x_euler = elementwise([=](T xv, T dv) { return e_x * xv + e_d * dv; }, x, d.x0);
        if (i == 0 || k == 0) {
            move.x = std::move(x_euler);  // the last step, and the first
        } else {
            const double h = s_next - s;
            const Denoised<T> d2 = denoise(where, sampling, model, x_euler, i - 1, options);
            // x' = a' (x / a + h / 2 ((x / a - D) / s + (x~_t / a' - D') / s'))
            const T c_x = static_cast<T>(a_next * (1.0 + h / (2.0 * s)) / a), c_d = static_cast<T>(-a_next * h / (2.0 * s)),
                    c_e = static_cast<T>(h / (2.0 * s_next)), c_d2 = static_cast<T>(-a_next * h / (2.0 * s_next));
            move.x = elementwise([=](T xv, T dv, T ev, T d2v) { return c_x * xv + c_d * dv + c_e * ev + c_d2 * d2v; },
                                 x, d.x0, x_euler, d2.x0);
        }
        move.pred_x0 = std::move(d.x0);
        return move;
    });
}

/// The same from pure noise x_T ~ N(0, I) of the given shape, stream 0 of options.seed.
template <class T>
Samples<T> heun_sample(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps, const Shape4& shape,
                       const SigmaSamplerOptions<T>& options = {}) {
    detail::check_shape4("diffuse::heun_sample", shape);
    return heun_sample_from(schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options);
}

}  // namespace diffuse
