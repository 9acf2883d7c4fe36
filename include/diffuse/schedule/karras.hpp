#pragma once
// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models", eq. 5): n
// noise levels from sigma_max down to sigma_min, the closer together near sigma_min the larger rho:
//   sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0 .. n-1
// A discrete-time model knows only its training timesteps, whose noise levels are
//   sigma_t = sqrt((1 - alphabar_t) / alphabar_t),
// so timesteps_for_sigmas snaps each level to the timestep of the nearest log sigma and keeps them
// distinct: every model call of a sampler is then at a level the model was trained at (k-diffusion
// instead tells the model a fractional timestep between two). karras_timesteps does both, from the
// schedule's own sigma_min (t = 0) and sigma_max (t = T - 1); pass it as StepSelection::timesteps.

#include "diffuse/core/error.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

/// The noise level sigma_t = sqrt((1 - alphabar_t) / alphabar_t) of every timestep, ascending in t.
template <class T>
std::vector<double> timestep_sigmas(const NoiseSchedule<T>& schedule) {
    std::vector<double> out;
    for (const double ab : schedule.alphas_cumprod_double()) out.push_back(std::sqrt((1.0 - ab) / ab));
    return out;
}

/// n noise levels from sigma_max down to sigma_min, spaced as Karras et al. (eq. 5) with exponent rho (7 in the paper).
inline std::vector<double> karras_sigmas(int n, double sigma_min, double sigma_max, double rho = 7.0) {
    constexpr const char* where = "diffuse::karras_sigmas";
    if (n < 1) detail::throw_invalid(where, "n", n, "at least 1");
    if (!(rho > 0.0) || !std::isfinite(rho)) detail::throw_invalid(where, "rho", rho, "a finite value > 0 (7 in the paper)");
    if (!(sigma_min > 0.0) || !std::isfinite(sigma_min)) detail::throw_invalid(where, "sigma_min", sigma_min, "a finite value > 0");
    if (!(sigma_max > sigma_min) || !std::isfinite(sigma_max)) {
        detail::throw_invalid(where, "sigma_max", sigma_max, "finite and above sigma_min = " + std::to_string(sigma_min));
    }
    if (n == 1) return {sigma_max};
    const double lo = std::pow(sigma_min, 1.0 / rho), hi = std::pow(sigma_max, 1.0 / rho);
    std::vector<double> out;
    for (int i = 0; i < n; ++i) {
        const double w = static_cast<double>(i) / (n - 1);  // (1 - w) hi + w lo: both ends exact
        out.push_back(std::pow((1.0 - w) * hi + w * lo, rho));
    }
    return out;
}

/// The timesteps, ascending, whose noise levels are nearest (in log sigma) to `sigmas`, which must be
/// positive and strictly decreasing; where two levels fall on one timestep the later ones move to the
/// next free timesteps, so that there are as many timesteps as levels.
template <class T>
std::vector<int> timesteps_for_sigmas(const NoiseSchedule<T>& schedule, const std::vector<double>& sigmas) {
    constexpr const char* where = "diffuse::timesteps_for_sigmas";
    const int n = static_cast<int>(sigmas.size()), steps = schedule.num_timesteps();
    if (n < 1 || n > steps) {
        detail::throw_invalid(where, "sigmas.size()", n, "from 1 to the schedule's " + std::to_string(steps) + " timesteps");
    }
    for (int i = 0; i < n; ++i) {
        const double s = sigmas[static_cast<std::size_t>(i)];
        if (!(s > 0.0) || !std::isfinite(s)) detail::throw_invalid(where, "sigmas[" + std::to_string(i) + "]", s, "a finite value > 0");
        if (i > 0 && !(s < sigmas[static_cast<std::size_t>(i) - 1])) {
            detail::throw_invalid(where, "sigmas[" + std::to_string(i) + "]", s,
                                  "below sigmas[" + std::to_string(i - 1) + "] = " + std::to_string(sigmas[static_cast<std::size_t>(i) - 1]) +
                                      ": the levels must decrease strictly");
        }
    }
    const std::vector<double> table = timestep_sigmas(schedule);  // ascending in t
    std::vector<int> out;
    for (int i = n - 1; i >= 0; --i) {  // ascending levels, ascending timesteps
        const double log_s = std::log(sigmas[static_cast<std::size_t>(i)]);
        const auto above = std::lower_bound(table.begin(), table.end(), sigmas[static_cast<std::size_t>(i)]);
        int t = static_cast<int>(above - table.begin());
        if (t == steps || (t > 0 && log_s - std::log(table[static_cast<std::size_t>(t) - 1]) < std::log(table[static_cast<std::size_t>(t)]) - log_s)) --t;
        out.push_back(t);
    }
    for (int j = 1; j < n; ++j) out[static_cast<std::size_t>(j)] = std::max(out[static_cast<std::size_t>(j)], out[static_cast<std::size_t>(j) - 1] + 1);
    out[static_cast<std::size_t>(n) - 1] = std::min(out[static_cast<std::size_t>(n) - 1], steps - 1);
    for (int j = n - 2; j >= 0; --j) out[static_cast<std::size_t>(j)] = std::min(out[static_cast<std::size_t>(j)], out[static_cast<std::size_t>(j) + 1] - 1);
    return out;
}

/// num_steps timesteps, ascending, at Karras et al.'s levels between the schedule's own sigma at t = 0
/// and at t = T - 1.
template <class T>
std::vector<int> karras_timesteps(const NoiseSchedule<T>& schedule, int num_steps, double rho = 7.0) {
    const std::vector<double> table = timestep_sigmas(schedule);
    return timesteps_for_sigmas(schedule, karras_sigmas(num_steps, table.front(), table.back(), rho));
}

}  // namespace diffuse
