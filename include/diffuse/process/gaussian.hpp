#pragma once
// Gaussian terms of the variational bound (Ho et al. 2020, eq. 5; Improved DDPM's losses.py):
// the KL divergence between diagonal Gaussians, the discretised Gaussian log-likelihood of 8-bit data
// scaled to [-1, 1], and nats -> bits per dimension. Elementwise terms are evaluated in double.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

namespace diffuse {

/// A diagonal Gaussian over a batch: mean, variance and log-variance, each shaped like the data.
template <class T, int Rank>
struct DiagonalGaussian {
    Tensor<T, Rank> mean;          // [N, ...]
    Tensor<T, Rank> variance;      // [N, ...]
    Tensor<T, Rank> log_variance;  // [N, ...]
};

/// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) for one coordinate, in nats:
///   0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))
template <class S, std::enable_if_t<std::is_floating_point<S>::value, int> = 0>
S normal_kl(S mean1, S logvar1, S mean2, S logvar2) {
    const S d = mean1 - mean2;
    return S(0.5) * (S(-1) + logvar2 - logvar1 + std::exp(logvar1 - logvar2) + d * d * std::exp(-logvar2));
}

/// The same elementwise over tensors of one shape, [N, ...] -> [N, ...].
template <class T, int Rank>
Tensor<T, Rank> normal_kl(const Tensor<T, Rank>& mean1, const Tensor<T, Rank>& logvar1,
                          const Tensor<T, Rank>& mean2, const Tensor<T, Rank>& logvar2) {
    constexpr const char* where = "diffuse::normal_kl";
    check_same_shape(where, "mean1", mean1, "logvar1", logvar1);
    check_same_shape(where, "mean1", mean1, "mean2", mean2);
    check_same_shape(where, "mean1", mean1, "logvar2", logvar2);
    Tensor<T, Rank> out(mean1.dimensions());
    for (Index i = 0; i < out.size(); ++i) {
        out.data()[i] = static_cast<T>(normal_kl<double>(mean1.data()[i], logvar1.data()[i],
                                                         mean2.data()[i], logvar2.data()[i]));
    }
    return out;
}

/// Phi(z), the standard normal CDF.
inline double standard_normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

/// log Phi(z), accurate far into the lower tail where Phi(z) itself underflows (z < -37.5): there
/// log Phi(z) = -z^2/2 - log(-z) - log(2 pi)/2 + log(1 - 1/z^2 + 3/z^4 - 15/z^6 + 105/z^8), the
/// asymptotic series of the Mills ratio, whose next term is below 1e-11 for z < -20.
inline double log_standard_normal_cdf(double z) {
    if (z > -20.0) return std::log(standard_normal_cdf(z));
    const double r = 1.0 / (z * z);
    return -0.5 * z * z - std::log(-z) - 0.5 * std::log(2.0 * std::acos(-1.0)) +
           std::log1p(r * (-1.0 + r * (3.0 + r * (-15.0 + r * 105.0))));
}

/// Which standard normal CDF the discretised decoder term uses: the exact one (diffuse's default) or
/// Improved DDPM's approximation 0.5 (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))) with each bin's mass
/// clamped at 1e-12, to reproduce its papers' numbers (they differ by about 5e-4 bits per dimension).
enum class NormalCdf { exact, tanh_approximation };

/// log P(x) as Improved DDPM's code computes it: the tanh approximation of Phi, masses clamped at 1e-12.
inline double discretized_gaussian_log_likelihood_tanh(double x, double mean, double log_scale) {
    const auto cdf = [](double z) {
        return 0.5 * (1.0 + std::tanh(std::sqrt(2.0 / std::acos(-1.0)) * (z + 0.044715 * z * z * z)));
    };
    const double inv_stdv = std::exp(-log_scale);
    const double cdf_plus = cdf(inv_stdv * (x - mean + 1.0 / 255.0));
    const double cdf_min = cdf(inv_stdv * (x - mean - 1.0 / 255.0));
    if (x < -0.999) return std::log(std::max(cdf_plus, 1e-12));
    if (x > 0.999) return std::log(std::max(1.0 - cdf_min, 1e-12));
    return std::log(std::max(cdf_plus - cdf_min, 1e-12));
}

/// log P(x) for one coordinate of 8-bit data scaled to [-1, 1] (pixel k -> 2k/255 - 1) under
/// N(mean, exp(log_scale)^2) discretised into the 256 bins [x - 1/255, x + 1/255], the outer bins
/// reaching to -inf and +inf (Ho et al. 2020, eq. 13). Uses the exact CDF, with each bin's mass taken
/// from the tail it lies in so that no digits are lost, and in log space where the mass underflows;
/// Improved DDPM's code uses a tanh approximation of Phi and clamps the mass at 1e-12 instead.
inline double discretized_gaussian_log_likelihood(double x, double mean, double log_scale) {
    const double inv_stdv = std::exp(-log_scale);
    const double centered = x - mean;
    const double plus_in = inv_stdv * (centered + 1.0 / 255.0);  // upper edge of x's bin, standardised
    const double min_in = inv_stdv * (centered - 1.0 / 255.0);   // lower edge
    if (x < -0.999) return log_standard_normal_cdf(plus_in);     // bin (-inf, x + 1/255]
    if (x > 0.999) return log_standard_normal_cdf(-min_in);      // bin [x - 1/255, +inf)
    // Phi(b) - Phi(a) for a < b, mirrored into the lower tail when the bin lies above the mean
    const double a = min_in > 0.0 ? -plus_in : min_in, b = min_in > 0.0 ? -min_in : plus_in;
    const double r = 1.0 / std::sqrt(2.0);
    const double mass = 0.5 * (std::erfc(-b * r) - std::erfc(-a * r));
    if (mass > 1e-250) return std::log(mass);
    // log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b)))
    const double log_b = log_standard_normal_cdf(b);
    return log_b + std::log(-std::expm1(log_standard_normal_cdf(a) - log_b));
}

/// The same elementwise over tensors of one shape, [N, ...] -> [N, ...]. Throws if x leaves [-1, 1].
template <class T, int Rank>
Tensor<T, Rank> discretized_gaussian_log_likelihood(const Tensor<T, Rank>& x,
                                                    const Tensor<T, Rank>& means,
                                                    const Tensor<T, Rank>& log_scales) {
    constexpr const char* where = "diffuse::discretized_gaussian_log_likelihood";
    check_same_shape(where, "x", x, "means", means);
    check_same_shape(where, "x", x, "log_scales", log_scales);
    Tensor<T, Rank> out(x.dimensions());
    for (Index i = 0; i < out.size(); ++i) {
        const double xi = x.data()[i];
        if (!(xi >= -1.0 && xi <= 1.0)) {
            detail::throw_invalid(where, "x[" + std::to_string(i) + "]", xi,
                                  "data scaled to [-1, 1]");
        }
        out.data()[i] = static_cast<T>(
            discretized_gaussian_log_likelihood(xi, means.data()[i], log_scales.data()[i]));
    }
    return out;
}

/// The mean over every dimension but the batch: [N, ...] -> [N] (Improved DDPM's mean_flat).
template <class T, int Rank>
Tensor1<T> mean_flat(const Tensor<T, Rank>& x) {
    check_batch("diffuse::mean_flat", "x", x);
    const Index batch = x.dimension(0), per_sample = x.size() / batch;
    Tensor1<T> out(batch);
    for (Index n = 0; n < batch; ++n) {
        double sum = 0.0;
        for (Index i = 0; i < per_sample; ++i) sum += x.data()[n * per_sample + i];
        out(n) = static_cast<T>(sum / static_cast<double>(per_sample));
    }
    return out;
}

/// A negative log-likelihood in nats over `dims` dimensions, as bits per dimension: nats / (dims ln 2).
inline double nats_to_bits_per_dim(double nats, double dims) {
    if (!(dims > 0.0)) detail::throw_invalid("diffuse::nats_to_bits_per_dim", "dims", dims, "dims > 0");
    return nats / (dims * std::log(2.0));
}

}  // namespace diffuse
