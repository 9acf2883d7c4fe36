#pragma once
// Denoisers known in closed form, for testing samplers without a trained network.
//
// Gaussian data x0 ~ N(mu, s^2), coordinates independent: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is
// Gaussian jointly with eps, so the optimal eps-predictor is the regression of eps on x_t,
//     E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
// A mixture sum_k pi_k N(mu_k, s_k^2): E[eps | x_t] = sum_k w_k(x_t) E_k[eps | x_t], with w_k the
// posterior weight of component k, proportional to pi_k N(x_t; sqrt(ab) mu_k, ab s_k^2 + 1 - ab).
// Coefficients are evaluated in long double and applied in double, per coordinate; t is the training timestep the sampler passes.

#include "../support/reference.hpp"

#include <diffuse/core/tensor.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <cassert>
#include <cmath>
#include <vector>

namespace analytic {

using ref::mean_variance;

using diffuse::Index;
using ref::LD;

struct Component {
    LD weight, mean, stddev;
};

/// E[eps | x_t] at alphabar ab for a scalar mixture, evaluated in S.
template <class S>
S mixture_eps(S x, S ab, const std::vector<Component>& mixture) {
    assert(!mixture.empty() && mixture.size() <= 8);
    // log-weights first, so the posterior weights never overflow
    S log_w[8];
    S max_log = -INFINITY;
    for (std::size_t k = 0; k < mixture.size(); ++k) {
        const Component& c = mixture[k];
        const S var = ab * S(c.stddev * c.stddev) + 1 - ab, d = x - std::sqrt(ab) * S(c.mean);
        log_w[k] = std::log(S(c.weight)) - d * d / (2 * var) - std::log(var) / 2;
        max_log = std::max(max_log, log_w[k]);
    }
    S sum_w = 0, sum = 0;
    for (std::size_t k = 0; k < mixture.size(); ++k) {
        const Component& c = mixture[k];
        const S w = std::exp(log_w[k] - max_log);
        const S var = ab * S(c.stddev * c.stddev) + 1 - ab;
        sum_w += w;
        sum += w * std::sqrt(1 - ab) * (x - std::sqrt(ab) * S(c.mean)) / var;
    }
    return sum / sum_w;
}

/// The exact eps-predictor for the mixture as a model callback; alphabar comes from `alphas_cumprod`,
/// the training schedule's table indexed by the timestep the sampler tells the model.
template <class T>
diffuse::ModelFn<T> eps_model(std::vector<double> alphas_cumprod, std::vector<Component> mixture) {
    return [ab = std::move(alphas_cumprod), mixture = std::move(mixture)](
               const diffuse::Tensor4<T>& x, const diffuse::Timesteps& t, const std::vector<int>&) {
        diffuse::Tensor4<T> out(x.dimensions());
        const Index batch = x.dimension(0), per_sample = x.size() / batch;
        for (Index n = 0; n < batch; ++n) {
            const LD abar = ab[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])];
            if (mixture.size() == 1) {
                // affine: k (x - sqrt(ab) mu), coefficients in long double, applied in double (fast)
                const Component& c = mixture.front();
                const double k = static_cast<double>(std::sqrt(1 - abar) / (abar * c.stddev * c.stddev + 1 - abar));
                const double shift = static_cast<double>(std::sqrt(abar) * c.mean);
                for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
                    out.data()[i] = static_cast<T>(k * (static_cast<double>(x.data()[i]) - shift));
                }
                continue;
            }
            // in double: the mixture's weights need exp and log per value, too slow in long double
            for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
                out.data()[i] = static_cast<T>(mixture_eps<double>(x.data()[i], static_cast<double>(abar), mixture));
            }
        }
        return out;
    };
}

/// The Gaussian data model of the issue: N(mu, s^2).
template <class T>
diffuse::ModelFn<T> gaussian_eps_model(std::vector<double> alphas_cumprod, LD mu, LD s) {
    return eps_model<T>(std::move(alphas_cumprod), {{1, mu, s}});
}

/// For Gaussian data the exact denoiser is affine in x_t: eps_hat = k (x_t - sqrt(ab) mu) and
/// x0_hat = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab) = A x_t + B.
struct Affine {
    LD A, B;
};

inline Affine gaussian_x0_affine(LD ab, LD mu, LD s) {
    const LD k = std::sqrt(1 - ab) / (ab * s * s + 1 - ab);
    return {(1 - std::sqrt(1 - ab) * k) / std::sqrt(ab), std::sqrt(1 - ab) * k * mu};
}

/// Checks that n i.i.d. draws with sample mean and variance (m, v) come from a distribution whose
/// mean and variance are (want_m, want_v), within 5 standard errors: sqrt(want_v / n) for the mean and
/// want_v sqrt(2 / (n - 1)) for the variance (the Gaussian formula; the draws are Gaussian or nearly).
#define CHECK_MOMENTS_5SE(m, v, want_m, want_v, n)                                                         \
    do {                                                                                                   \
        const ::ref::LD se_m_ = std::sqrt((want_v) / (n)), se_v_ = (want_v)*std::sqrt(2.0L / ((n)-1));    \
        INFO("sample mean " << double(m) << " vs " << double(want_m) << " (SE " << double(se_m_)          \
                            << "); sample variance " << double(v) << " vs " << double(want_v) << " (SE "   \
                            << double(se_v_) << ")");                                                      \
        CHECK(std::fabs((m) - (want_m)) <= 5 * se_m_);                                                     \
        CHECK(std::fabs((v) - (want_v)) <= 5 * se_v_);                                                     \
    } while (false)

/// Checks draws of a two-mode mixture {negative mode, positive mode} split at 0: the share of positive
/// draws within 5 binomial standard errors of the positive mode's weight, each mode's mean within 5
/// standard errors plus `mean_slack`, its standard deviation within `sd_tolerance` (relative).
template <class T>
void check_two_modes(const diffuse::Tensor4<T>& x, const std::vector<Component>& mixture, LD mean_slack, LD sd_tolerance) {
    std::vector<double> negative, positive;
    for (Index k = 0; k < x.size(); ++k) (x.data()[k] > 0 ? positive : negative).push_back(static_cast<double>(x.data()[k]));
    const LD n = LD(x.size()), w = mixture[1].weight;
    INFO("fraction of positive draws " << double(positive.size() / n));
    CHECK(std::fabs(positive.size() / n - w) <= 5 * std::sqrt(w * (1 - w) / n));
    for (const auto& [draws, component] : {std::pair{negative, mixture[0]}, std::pair{positive, mixture[1]}}) {
        const auto [m, v] = mean_variance(draws.data(), Index(draws.size()));
        INFO("mode at " << double(component.mean) << ": mean " << double(m) << ", standard deviation " << double(std::sqrt(v)));
        CHECK(std::fabs(m - component.mean) <= 5 * component.stddev / std::sqrt(LD(draws.size())) + mean_slack);
        CHECK(std::fabs(std::sqrt(v) / component.stddev - 1) <= sd_tolerance);
    }
}

// alphabar at the kept timesteps, ascending, in long double from the betas.
inline std::vector<LD> kept_alphabar(const diffuse::Betas& betas, const std::vector<int>& kept) {
    const std::vector<LD> ab = ref::alphas_cumprod(ref::to_ld(betas));
    std::vector<LD> out;
    for (const int t : kept) out.push_back(ab[static_cast<std::size_t>(t)]);
    return out;
}

}  // namespace analytic
