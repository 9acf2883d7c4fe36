#pragma once
// Reference formulas for the tests, written from the papers and evaluated in long double, plus a few
// helpers for comparing against them. Nothing in the "ref" namespace calls diffuse: a test compares
// the library's result with what is computed here.

#include <diffuse/core/threading.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace ref {

using LD = long double;

inline LD pi() { return std::acos(LD(-1)); }

/// Mean and unbiased variance of n values, accumulated in long double.
template <class T, class Index>
std::pair<LD, LD> mean_variance(const T* x, Index n) {
    LD sum = 0;
    for (Index i = 0; i < n; ++i) sum += x[i];
    const LD mean = sum / n;
    LD ss = 0;
    for (Index i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
    return {mean, ss / (n - 1)};
}

/// np.linspace(start, end, n): start + i (end - start) / (n - 1); [start] when n is 1.
inline std::vector<LD> linspace(LD start, LD end, int n) {
    std::vector<LD> out(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        out[static_cast<std::size_t>(i)] = n == 1 ? start : start + (end - start) * i / (n - 1);
    }
    return out;
}

/// DDPM (Ho et al. 2020, section 4): beta_t = linspace(beta_start, beta_end, T).
inline std::vector<LD> linear_betas(int T, LD beta_start = 1e-4L, LD beta_end = 0.02L) {
    return linspace(beta_start, beta_end, T);
}

/// Improved DDPM (Nichol & Dhariwal 2021, eq. 17): f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2).
inline LD cosine_f(LD t, int T, LD s = 0.008L) {
    const LD c = std::cos((t / T + s) / (1 + s) * pi() / 2);
    return c * c;
}

/// Improved DDPM: alphabar(t) = f(t) / f(0) and beta_t = min(1 - alphabar(t + 1) / alphabar(t), max_beta).
inline std::vector<LD> cosine_betas(int T, LD s = 0.008L, LD max_beta = 0.999L) {
    std::vector<LD> out(static_cast<std::size_t>(T));
    for (int t = 0; t < T; ++t) {
        const LD abar_t = cosine_f(t, T, s) / cosine_f(0, T, s);
        const LD abar_t1 = cosine_f(t + 1, T, s) / cosine_f(0, T, s);
        out[static_cast<std::size_t>(t)] = std::min(1 - abar_t1 / abar_t, max_beta);
    }
    return out;
}

/// Every per-timestep quantity of DDPM / Improved DDPM from the betas, by the papers' definitions:
/// alpha_t = 1 - beta_t, alphabar_t = prod_{s <= t} alpha_s (a plain product, not a log-sum),
/// alphabar_{-1} = 1, alphabar_T = 0 (the "next" table), beta_tilde_t = beta_t (1 - alphabar_{t-1}) /
/// (1 - alphabar_t), mu_tilde = coef1 x_0 + coef2 x_t (Ho et al. eq. 7), SNR = alphabar / (1 - alphabar).
struct Schedule {
    std::vector<LD> betas, alphas, alphas_cumprod, alphas_cumprod_prev, alphas_cumprod_next;
    std::vector<LD> sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, log_one_minus_alphas_cumprod;
    std::vector<LD> sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod;
    std::vector<LD> posterior_variance, posterior_log_variance_clipped;
    std::vector<LD> posterior_mean_coef1, posterior_mean_coef2, snr;
};

inline Schedule schedule_from_betas(const std::vector<LD>& betas) {
    Schedule s;
    const std::size_t T = betas.size();
    s.betas = betas;
    LD product = 1;
    for (std::size_t t = 0; t < T; ++t) {
        s.alphas.push_back(1 - betas[t]);
        product *= 1 - betas[t];
        s.alphas_cumprod.push_back(product);
    }
    for (std::size_t t = 0; t < T; ++t) {
        const LD ab = s.alphas_cumprod[t];
        const LD ab_prev = t == 0 ? LD(1) : s.alphas_cumprod[t - 1];
        const LD ab_next = t + 1 == T ? LD(0) : s.alphas_cumprod[t + 1];
        const LD beta = betas[t];
        s.alphas_cumprod_prev.push_back(ab_prev);
        s.alphas_cumprod_next.push_back(ab_next);
        s.sqrt_alphas_cumprod.push_back(std::sqrt(ab));
        s.sqrt_one_minus_alphas_cumprod.push_back(std::sqrt(1 - ab));
        s.log_one_minus_alphas_cumprod.push_back(std::log(1 - ab));
        s.sqrt_recip_alphas_cumprod.push_back(1 / std::sqrt(ab));
        s.sqrt_recipm1_alphas_cumprod.push_back(std::sqrt(1 / ab - 1));
        s.posterior_variance.push_back(beta * (1 - ab_prev) / (1 - ab));
        s.posterior_mean_coef1.push_back(beta * std::sqrt(ab_prev) / (1 - ab));
        s.posterior_mean_coef2.push_back((1 - ab_prev) * std::sqrt(1 - beta) / (1 - ab));
        s.snr.push_back(ab / (1 - ab));
    }
    // Improved DDPM: log(beta_tilde) with entry 0 (log 0) replaced by entry 1.
    for (std::size_t t = 0; t < T; ++t) {
        const std::size_t from = t == 0 && T > 1 ? 1 : t;
        s.posterior_log_variance_clipped.push_back(T == 1 ? std::log(betas[0])
                                                          : std::log(s.posterior_variance[from]));
    }
    return s;
}

/// The values of any indexable container, as long double.
template <class Container>
std::vector<LD> to_ld(const Container& values) {
    std::vector<LD> out;
    for (Eigen::Index i = 0; i < static_cast<Eigen::Index>(values.size()); ++i) {
        out.push_back(static_cast<LD>(values[static_cast<std::size_t>(i)]));
    }
    return out;
}

/// alphabar_t = prod_{s <= t} (1 - beta_s), in long double.
inline std::vector<LD> alphas_cumprod(const std::vector<LD>& betas) {
    std::vector<LD> out;
    LD product = 1;
    for (const LD b : betas) out.push_back(product *= 1 - b);
    return out;
}

/// Standard normal density and CDF.
inline LD normal_pdf(LD z) { return std::exp(-z * z / 2) / std::sqrt(2 * pi()); }
inline LD normal_cdf(LD z) { return std::erfc(-z / std::sqrt(LD(2))) / 2; }

/// Composite Simpson's rule for f over [a, b] with `panels` (even) sub-intervals.
template <class F>
LD simpson(F f, LD a, LD b, int panels) {
    const LD h = (b - a) / panels;
    LD sum = f(a) + f(b);
    for (int i = 1; i < panels; ++i) sum += (i % 2 ? 4 : 2) * f(a + h * i);
    return sum * h / 3;
}

/// The largest error of `got` against `want`, each entry's error |got - want| / max(|want|, floor):
/// relative where |want| >= floor, absolute (scaled by floor) below it.
struct Worst {
    LD error = 0;
    std::size_t index = 0;
    LD got = 0, want = 0;
};

template <class Got>
Worst worst_error(const Got& got, const std::vector<LD>& want, LD floor = 0) {
    Worst worst;
    for (std::size_t i = 0; i < want.size(); ++i) {
        const LD g = static_cast<LD>(got[static_cast<Eigen::Index>(i)]);
        const LD scale = std::max(std::fabs(want[i]), floor);
        const LD e = scale == 0 ? std::fabs(g - want[i]) : std::fabs(g - want[i]) / scale;
        if (!(e <= worst.error)) worst = {e, i, g, want[i]};  // a NaN error is always the worst
    }
    return worst;
}

}  // namespace ref

/// Checks a table against its reference with the given error measure, naming the table and the
/// worst entry on failure.
#define CHECK_TABLE(table_name, got_table, want_table, tolerance, floor)                                     \
    do {                                                                                                     \
        REQUIRE(static_cast<std::size_t>((got_table).size()) == (want_table).size());                        \
        const ::ref::Worst worst_ = ::ref::worst_error((got_table), (want_table), (floor));                  \
        INFO(table_name << ": worst entry " << worst_.index << " is " << double(worst_.got) << ", expected " \
                        << double(worst_.want) << ", error " << double(worst_.error));                       \
        CHECK(worst_.error <= (tolerance));                                                                  \
    } while (false)

namespace test_support {

/// Restores the thread count when a test that changes it ends, even by a failed REQUIRE.
class ThreadCountGuard {
  public:
    ThreadCountGuard() : saved_(diffuse::num_threads()) {}
    ~ThreadCountGuard() { diffuse::set_num_threads(saved_); }
    ThreadCountGuard(const ThreadCountGuard&) = delete;
    ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

  private:
    int saved_;
};

}  // namespace test_support
