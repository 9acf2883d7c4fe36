#pragma once
// NoiseSchedule: every per-timestep table that the forward process, the posterior, the samplers and
// the losses need, named as in the DDPM and Improved DDPM code. Computed in double, cast once to T.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/schedule/betas.hpp"

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace diffuse {

template <class T = float>
class NoiseSchedule {
  public:
    using Scalar = T;

    /// A schedule over betas.size() steps. Each beta must lie in (0, 1); the last may be exactly 1
    /// (a zero-terminal-SNR schedule). `timestep_map[i]` is the timestep of the original schedule that
    /// step i stands for (respacing sets it; by default step i is timestep i): the model is told it.
    explicit NoiseSchedule(Betas betas, std::vector<int> timestep_map = {})
        : betas_double_(std::move(betas)), timestep_map_(std::move(timestep_map)) {
        constexpr const char* where = "diffuse::NoiseSchedule";
        const std::size_t n = betas_double_.size();
        if (n == 0) detail::throw_invalid(where, "betas.size()", 0, "at least one timestep");
        for (std::size_t i = 0; i < n; ++i) {
            const double b = betas_double_[i];
            const bool last_may_be_one = i + 1 == n && n > 1 && b == 1.0;
            if (!(b > 0.0 && b < 1.0) && !last_may_be_one) {
                detail::throw_invalid(where, "betas[" + std::to_string(i) + "]", b,
                                      "a value in (0, 1) (only the last of several may be 1)");
            }
        }
        if (timestep_map_.empty()) {
            timestep_map_.resize(n);
            std::iota(timestep_map_.begin(), timestep_map_.end(), 0);
        } else if (timestep_map_.size() != n) {
            detail::throw_invalid(where, "timestep_map.size()", timestep_map_.size(),
                                  "one entry per beta, " + std::to_string(n));
        }
        compute_tables();
    }

    int num_timesteps() const { return static_cast<int>(betas_double_.size()); }
    /// The original timestep that each step stands for, [T].
    const std::vector<int>& timestep_map() const { return timestep_map_; }
    /// The betas in double, as given, [T].
    const Betas& betas_double() const { return betas_double_; }
    /// alphabar_t in double, [T] (what respacing starts from).
    const std::vector<double>& alphas_cumprod_double() const { return alphas_cumprod_double_; }

    // Every table below is [T], indexed by step t = 0 .. T-1.
    const Table<T>& betas() const { return betas_; }
    const Table<T>& alphas() const { return alphas_; }
    const Table<T>& alphas_cumprod() const { return alphas_cumprod_; }
    const Table<T>& alphas_cumprod_prev() const { return alphas_cumprod_prev_; }
    const Table<T>& alphas_cumprod_next() const { return alphas_cumprod_next_; }
    /// 1 - alphabar_t, computed without cancellation (the variance of q(x_t | x_0)).
    const Table<T>& one_minus_alphas_cumprod() const { return one_minus_alphas_cumprod_; }
    const Table<T>& sqrt_alphas_cumprod() const { return sqrt_alphas_cumprod_; }
    const Table<T>& sqrt_one_minus_alphas_cumprod() const { return sqrt_one_minus_alphas_cumprod_; }
    const Table<T>& log_one_minus_alphas_cumprod() const { return log_one_minus_alphas_cumprod_; }
    const Table<T>& sqrt_recip_alphas_cumprod() const { return sqrt_recip_alphas_cumprod_; }
    const Table<T>& sqrt_recipm1_alphas_cumprod() const { return sqrt_recipm1_alphas_cumprod_; }
    const Table<T>& posterior_variance() const { return posterior_variance_; }
    const Table<T>& posterior_log_variance_clipped() const { return posterior_log_variance_clipped_; }
    const Table<T>& posterior_mean_coef1() const { return posterior_mean_coef1_; }
    const Table<T>& posterior_mean_coef2() const { return posterior_mean_coef2_; }
    const Table<T>& snr() const { return snr_; }

  private:
    void compute_tables() {
        const int n = num_timesteps();
        // alphabar_t = prod_{s<=t} (1 - beta_s), summed in log space so that 1 - alphabar_t keeps its
        // relative precision where alphabar_t is close to 1 (1 - alphabar_0 = beta_0 exactly).
        std::vector<double> ab(static_cast<std::size_t>(n)), one_minus_ab(ab.size());
        double log_ab = 0.0;
        for (int t = 0; t < n; ++t) {
            log_ab += std::log1p(-betas_double_[t]);  // -inf where beta = 1
            ab[t] = std::exp(log_ab);
            one_minus_ab[t] = -std::expm1(log_ab);
        }
        alphas_cumprod_double_ = ab;

        // Each table is formula(t) in double, cast once.
        const auto table = [n](auto formula) {
            Table<T> out(n);
            for (int t = 0; t < n; ++t) out[t] = static_cast<T>(formula(t));
            return out;
        };
        const auto beta = [this](int t) { return betas_double_[t]; };
        const auto abar = [&ab](int t) { return ab[t]; };
        const auto one_minus_abar = [&one_minus_ab](int t) { return one_minus_ab[t]; };
        const auto abar_prev = [&ab](int t) { return t == 0 ? 1.0 : ab[t - 1]; };
        const auto one_minus_abar_prev = [&one_minus_ab](int t) { return t == 0 ? 0.0 : one_minus_ab[t - 1]; };
        const auto abar_next = [&ab, n](int t) { return t + 1 == n ? 0.0 : ab[t + 1]; };
        // beta_tilde_t = beta_t (1 - alphabar_{t-1}) / (1 - alphabar_t)
        const auto beta_tilde = [&](int t) { return beta(t) * one_minus_abar_prev(t) / one_minus_abar(t); };

        betas_ = table(beta);
        alphas_ = table([&](int t) { return 1.0 - beta(t); });
        alphas_cumprod_ = table(abar);
        alphas_cumprod_prev_ = table(abar_prev);
        alphas_cumprod_next_ = table(abar_next);
        one_minus_alphas_cumprod_ = table(one_minus_abar);
        sqrt_alphas_cumprod_ = table([&](int t) { return std::sqrt(abar(t)); });
        sqrt_one_minus_alphas_cumprod_ = table([&](int t) { return std::sqrt(one_minus_abar(t)); });
        log_one_minus_alphas_cumprod_ = table([&](int t) { return std::log(one_minus_abar(t)); });
        sqrt_recip_alphas_cumprod_ = table([&](int t) { return 1.0 / std::sqrt(abar(t)); });
        sqrt_recipm1_alphas_cumprod_ = table([&](int t) { return std::sqrt(one_minus_abar(t) / abar(t)); });
        posterior_variance_ = table(beta_tilde);
        // log(beta_tilde) with entry 0 (where beta_tilde_0 = 0) replaced by entry 1; with a single
        // step there is no entry 1, and log(beta_0) stands in.
        posterior_log_variance_clipped_ =
            table([&](int t) { return std::log(t > 0 ? beta_tilde(t) : n > 1 ? beta_tilde(1) : beta(0)); });
        // mu_tilde = coef1 x_0 + coef2 x_t
        posterior_mean_coef1_ =
            table([&](int t) { return beta(t) * std::sqrt(abar_prev(t)) / one_minus_abar(t); });
        posterior_mean_coef2_ = table(
            [&](int t) { return one_minus_abar_prev(t) * std::sqrt(1.0 - beta(t)) / one_minus_abar(t); });
        // SNR(t) = alphabar_t / (1 - alphabar_t)
        snr_ = table([&](int t) { return abar(t) / one_minus_abar(t); });
    }

    Betas betas_double_;
    std::vector<int> timestep_map_;
    std::vector<double> alphas_cumprod_double_;
    Table<T> betas_, alphas_, alphas_cumprod_, alphas_cumprod_prev_, alphas_cumprod_next_, one_minus_alphas_cumprod_;
    Table<T> sqrt_alphas_cumprod_, sqrt_one_minus_alphas_cumprod_, log_one_minus_alphas_cumprod_;
    Table<T> sqrt_recip_alphas_cumprod_, sqrt_recipm1_alphas_cumprod_;
    Table<T> posterior_variance_, posterior_log_variance_clipped_;
    Table<T> posterior_mean_coef1_, posterior_mean_coef2_, snr_;
};

}  // namespace diffuse
