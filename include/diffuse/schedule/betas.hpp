#pragma once
// Variance schedules beta_t, t = 0 .. T-1, computed in double. Pass them to NoiseSchedule<T>, which
// derives every other table and casts once.

#include "diffuse/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

using Betas = std::vector<double>;  // [T]

namespace detail {

inline void check_num_timesteps(const char* where, int num_timesteps) {
    if (num_timesteps <= 0) throw_invalid(where, "num_timesteps", num_timesteps, "T > 0");
}

inline void check_beta_range(const char* where, const char* name, double beta) {
    if (!(beta > 0.0 && beta < 1.0)) throw_invalid(where, name, beta, "a value in (0, 1)");
}

// np.linspace(start, end, n): start + i * (end - start) / (n - 1), the end point exact.
inline std::vector<double> linspace(double start, double end, int n) {
    std::vector<double> out(static_cast<std::size_t>(n));
    if (n == 1) {
        out[0] = start;
        return out;
    }
    const double step = (end - start) / (n - 1);
    for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = start + i * step;
    out.back() = end;
    return out;
}

}  // namespace detail

struct LinearOptions {
    double beta_start = 1e-4;  // beta_0, DDPM
    double beta_end = 0.02;    // beta_{T-1}, DDPM
    /// Improved DDPM multiplies both ends by 1000 / T so that a schedule with T != 1000 covers the same
    /// noise range. Off by default: the DDPM schedule as written, whatever T is.
    bool scale_to_timesteps = false;
};

/// DDPM (Ho et al. 2020): beta_t linear from beta_start to beta_end.
inline Betas linear_betas(int num_timesteps, const LinearOptions& options = {}) {
    constexpr const char* where = "diffuse::linear_betas";
    detail::check_num_timesteps(where, num_timesteps);
    const double scale = options.scale_to_timesteps ? 1000.0 / num_timesteps : 1.0;
    const double start = scale * options.beta_start, end = scale * options.beta_end;
    detail::check_beta_range(where, "beta_start (after scaling)", start);
    detail::check_beta_range(where, "beta_end (after scaling)", end);
    return detail::linspace(start, end, num_timesteps);
}

struct CosineOptions {
    double s = 0.008;        // offset that keeps beta_0 from being vanishingly small
    double max_beta = 0.999; // cap that keeps the last steps from being singular
};

/// Improved DDPM (Nichol & Dhariwal 2021): alphabar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2),
/// beta_t = min(1 - alphabar(t+1) / alphabar(t), max_beta).
inline Betas cosine_betas(int num_timesteps, const CosineOptions& options = {}) {
    constexpr const char* where = "diffuse::cosine_betas";
    detail::check_num_timesteps(where, num_timesteps);
    if (!(options.s >= 0.0)) detail::throw_invalid(where, "s", options.s, "s >= 0");
    detail::check_beta_range(where, "max_beta", options.max_beta);
    const double pi = std::acos(-1.0);
    const auto f = [&](double t) {
        const double c = std::cos((t / num_timesteps + options.s) / (1.0 + options.s) * pi / 2.0);
        return c * c;
    };
    Betas betas(static_cast<std::size_t>(num_timesteps));
    for (int i = 0; i < num_timesteps; ++i) {
        betas[static_cast<std::size_t>(i)] = std::min(1.0 - f(i + 1.0) / f(i), options.max_beta);
    }
    return betas;
}

struct ScaledLinearOptions {
    double beta_start = 0.00085;  // Stable Diffusion's defaults
    double beta_end = 0.012;
};

/// Latent diffusion (Rombach et al. 2022): sqrt(beta_t) linear from sqrt(beta_start) to sqrt(beta_end).
inline Betas scaled_linear_betas(int num_timesteps, const ScaledLinearOptions& options = {}) {
    constexpr const char* where = "diffuse::scaled_linear_betas";
    detail::check_num_timesteps(where, num_timesteps);
    detail::check_beta_range(where, "beta_start", options.beta_start);
    detail::check_beta_range(where, "beta_end", options.beta_end);
    Betas betas =
        detail::linspace(std::sqrt(options.beta_start), std::sqrt(options.beta_end), num_timesteps);
    for (double& b : betas) b *= b;
    return betas;
}

struct SigmoidOptions {
    double beta_start = 1e-4;
    double beta_end = 0.02;
    double low = -6.0;  // the sigmoid is sampled at linspace(low, high, T)
    double high = 6.0;
};

/// GeoDiff (Xu et al. 2022), as diffusers' "sigmoid": beta_t = sigmoid(linspace(-6, 6, T)) * (end - start) + start.
inline Betas sigmoid_betas(int num_timesteps, const SigmoidOptions& options = {}) {
    constexpr const char* where = "diffuse::sigmoid_betas";
    detail::check_num_timesteps(where, num_timesteps);
    detail::check_beta_range(where, "beta_start", options.beta_start);
    detail::check_beta_range(where, "beta_end", options.beta_end);
    if (!(options.low < options.high)) {
        detail::throw_invalid(where, "low", options.low, "low < high = " + std::to_string(options.high));
    }
    Betas betas = detail::linspace(options.low, options.high, num_timesteps);
    for (double& b : betas) {
        b = 1.0 / (1.0 + std::exp(-b)) * (options.beta_end - options.beta_start) + options.beta_start;
    }
    return betas;
}

/// Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
/// Algorithm 1): shift sqrt(alphabar) so its last entry is 0 and scale it so its first is unchanged.
/// The last beta becomes exactly 1: x_{T-1} is pure noise, and x_0 can no longer be recovered from an
/// epsilon prediction at that step (use v prediction, as the paper does).
inline Betas rescale_zero_terminal_snr(const Betas& betas) {
    constexpr const char* where = "diffuse::rescale_zero_terminal_snr";
    if (betas.size() < 2) {
        detail::throw_invalid(where, "betas.size()", betas.size(), "at least 2 timesteps");
    }
    for (std::size_t i = 0; i < betas.size(); ++i) {
        detail::check_beta_range(where, ("betas[" + std::to_string(i) + "]").c_str(), betas[i]);
    }
    std::vector<double> sqrt_ab(betas.size());
    double alphabar = 1.0;
    for (std::size_t i = 0; i < betas.size(); ++i) {
        alphabar *= 1.0 - betas[i];
        sqrt_ab[i] = std::sqrt(alphabar);
    }
    const double first = sqrt_ab.front(), last = sqrt_ab.back();
    for (double& s : sqrt_ab) s = (s - last) * first / (first - last);
    Betas out(betas.size());
    double previous = 1.0;  // alphabar before step 0
    for (std::size_t i = 0; i < betas.size(); ++i) {
        const double ab = sqrt_ab[i] * sqrt_ab[i];
        out[i] = 1.0 - ab / previous;
        previous = ab;
    }
    out.back() = 1.0;  // exactly: alphabar_{T-1} = 0
    return out;
}

}  // namespace diffuse
