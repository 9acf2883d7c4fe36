#pragma once
// The forward process q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I) (Ho et al. 2020, eq. 4),
// on batches whose first dimension is the sample, one timestep per sample.

#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/detail/per_sample.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

namespace diffuse {

/// x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps, in closed form.
/// x0, noise: [N, ...]; t: [N]. Returns x_t, [N, ...].
template <class T, int Rank>
Tensor<T, Rank> q_sample(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x0,
                         const Timesteps& t, const Tensor<T, Rank>& noise) {
    return detail::per_sample_combine("diffuse::q_sample", schedule.sqrt_alphas_cumprod(), "x0", x0,
                                      schedule.sqrt_one_minus_alphas_cumprod(), "noise", noise, t);
}

/// The same with the noise drawn from `generator`; the noise is written to `noise_out` (the training
/// target), which takes x0's shape.
template <class T, int Rank>
Tensor<T, Rank> q_sample(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x0,
                         const Timesteps& t, Generator& generator, Tensor<T, Rank>& noise_out) {
    noise_out.resize(x0.dimensions());
    generator.normal(noise_out);
    return q_sample(schedule, x0, t, noise_out);
}

/// q(x_t | x_0): mean sqrt(alphabar_t) x_0, variance 1 - alphabar_t, log-variance log(1 - alphabar_t).
/// x0: [N, ...]; t: [N]. Each returned tensor is [N, ...].
template <class T, int Rank>
DiagonalGaussian<T, Rank> q_mean_variance(const NoiseSchedule<T>& schedule,
                                          const Tensor<T, Rank>& x0, const Timesteps& t) {
    Tensor<T, Rank> mean =
        detail::per_sample_scale("diffuse::q_mean_variance", schedule.sqrt_alphas_cumprod(), "x0", x0, t);
    return {std::move(mean),
            detail::per_sample_broadcast(schedule.one_minus_alphas_cumprod(), x0, t),
            detail::per_sample_broadcast(schedule.log_one_minus_alphas_cumprod(), x0, t)};
}

}  // namespace diffuse
