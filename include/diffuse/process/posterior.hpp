#pragma once
// The forward-process posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) (Ho et al. 2020, eq. 6-7):
//   mu_tilde = posterior_mean_coef1 x_0 + posterior_mean_coef2 x_t,
//   beta_tilde = beta_t (1 - alphabar_{t-1}) / (1 - alphabar_t).

#include "diffuse/core/tensor.hpp"
#include "diffuse/detail/per_sample.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

namespace diffuse {

/// mu_tilde(x_t, x_0) alone. x0, x_t: [N, ...]; t: [N]. Returns [N, ...].
template <class T, int Rank>
Tensor<T, Rank> q_posterior_mean(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x0,
                                 const Tensor<T, Rank>& x_t, const Timesteps& t) {
    return detail::per_sample_combine("diffuse::q_posterior_mean", schedule.posterior_mean_coef1(), "x0",
                                      x0, schedule.posterior_mean_coef2(), "x_t", x_t, t);
}

/// Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0), each [N, ...]. The log-variance
/// at t = 0 (where beta_tilde_0 = 0) is that of t = 1, as in Improved DDPM.
template <class T, int Rank>
DiagonalGaussian<T, Rank> q_posterior_mean_variance(const NoiseSchedule<T>& schedule,
                                                    const Tensor<T, Rank>& x0,
                                                    const Tensor<T, Rank>& x_t, const Timesteps& t) {
    Tensor<T, Rank> mean = q_posterior_mean(schedule, x0, x_t, t);
    return {std::move(mean), detail::per_sample_broadcast(schedule.posterior_variance(), x0, t),
            detail::per_sample_broadcast(schedule.posterior_log_variance_clipped(), x0, t)};
}

}  // namespace diffuse
