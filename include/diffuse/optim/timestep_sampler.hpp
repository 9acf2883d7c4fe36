#pragma once
// Which timestep each training sample gets. Uniform (Ho et al. 2020): t ~ U{0, T-1}, every weight 1.
// Loss-aware (Improved DDPM, section 3.3, the LossSecondMomentResampler of its code): once each t has
// a history of its last 10 losses,
//   p_t ∝ sqrt(E[L_t^2]),  then  p_t <- (1 - u) p_t + u / T,  u = 0.001 (their code's uniform_prob),
// and each sample's loss is weighted by 1 / (T p_t), so the weighted mean stays an unbiased estimate
// of the uniform mean (of L_vlb / T) while the noisy terms near t = 0 are drawn more often. Until every
// history is full, t is drawn uniformly with weight 1.

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse::optim {

enum class TimestepSampling {
    uniform,     // t ~ U{0, T-1}
    loss_aware,  // p_t ∝ sqrt(E[L_t^2]) over each t's last 10 losses (Improved DDPM)
};

inline const char* to_string(TimestepSampling s) { return s == TimestepSampling::uniform ? "uniform" : "loss-aware"; }

/// "uniform" or "loss-aware".
inline TimestepSampling timestep_sampling_from_string(const std::string& name) {
    if (name == "uniform") return TimestepSampling::uniform;
    if (name == "loss-aware" || name == "loss_aware") return TimestepSampling::loss_aware;
    detail::throw_invalid("diffuse::optim::timestep_sampling_from_string", "name", "\"" + name + "\"",
                          "uniform or loss-aware");
}

/// Timesteps drawn for a batch and the factor each sample's loss is weighted by.
struct TimestepDraw {
    Timesteps t;                  // [N]
    std::vector<double> weights;  // [N], 1 / (T p_t)
};

/// Improved DDPM's loss-aware sampler: a history of each timestep's last `history_per_term` losses.
class LossAwareSampler {
  public:
    static constexpr int history_per_term = 10;

    /// uniform_prob: the share of the uniform distribution mixed in, 0.001 as improved-diffusion's
    /// LossSecondMomentResampler (it bounds each weight 1 / (T p_t) by 1 / uniform_prob).
    explicit LossAwareSampler(int num_timesteps, double uniform_prob = 0.001)
        : num_timesteps_(num_timesteps),
          uniform_prob_(uniform_prob),
          history_(static_cast<std::size_t>(std::max(num_timesteps, 0)) * history_per_term, 0.0),
          counts_(static_cast<std::size_t>(std::max(num_timesteps, 0)), 0) {
        if (num_timesteps < 1) {
            detail::throw_invalid("diffuse::optim::LossAwareSampler", "num_timesteps", num_timesteps, ">= 1");
        }
        if (!(uniform_prob > 0.0 && uniform_prob <= 1.0)) {
            detail::throw_invalid("diffuse::optim::LossAwareSampler", "uniform_prob", uniform_prob, "a share in (0, 1]");
        }
    }

    double uniform_prob() const { return uniform_prob_; }

    int num_timesteps() const { return num_timesteps_; }

    /// Whether every timestep has its full history: until then, draws are uniform.
    bool warmed_up() const {
        return std::all_of(counts_.begin(), counts_.end(), [](std::int64_t c) { return c == history_per_term; });
    }

    /// p_t, [T]: uniform before warm-up, else sqrt(mean of the squared history) normalised and mixed
    /// with uniform_prob of the uniform distribution.
    std::vector<double> probabilities() const {
        const std::size_t n = static_cast<std::size_t>(num_timesteps_);
        std::vector<double> p(n, 1.0 / static_cast<double>(n));
        if (!warmed_up()) return p;
        double sum = 0.0;
        for (std::size_t t = 0; t < n; ++t) {
            double second_moment = 0.0;
            for (int k = 0; k < history_per_term; ++k) {
                const double l = history_[t * history_per_term + static_cast<std::size_t>(k)];
                second_moment += l * l;
            }
            p[t] = std::sqrt(second_moment / history_per_term);
            sum += p[t];
        }
        if (!(sum > 0.0 && std::isfinite(sum))) {
            throw numerical_error("diffuse::optim::LossAwareSampler: the losses' root mean squares sum to " +
                                  std::to_string(sum) + ", which gives no distribution over t");
        }
        for (double& v : p) v = v / sum * (1.0 - uniform_prob_) + uniform_prob_ / static_cast<double>(n);
        return p;
    }

    /// t for `batch` samples from p_t (inverse CDF of the generator's uniform draws), with their weights
    /// 1 / (T p_t); exactly 1 before warm-up.
    TimestepDraw draw(Generator& generator, Index batch) const {
        const std::vector<double> p = probabilities();
        std::vector<double> cdf(p.size());
        double acc = 0.0;
        for (std::size_t t = 0; t < p.size(); ++t) cdf[t] = acc += p[t];
        std::vector<double> u(static_cast<std::size_t>(batch));
        generator.uniform(u.data(), batch);
        const bool uniform = !warmed_up();
        TimestepDraw d;
        d.t.resize(u.size());
        d.weights.resize(u.size());
        for (std::size_t n = 0; n < u.size(); ++n) {
            const auto it = std::upper_bound(cdf.begin(), cdf.end(), u[n] * acc);
            const std::size_t t = std::min(static_cast<std::size_t>(it - cdf.begin()), p.size() - 1);
            d.t[n] = static_cast<int>(t);
            d.weights[n] = uniform ? 1.0 : 1.0 / (static_cast<double>(num_timesteps_) * p[t]);
        }
        return d;
    }

    /// Appends each sample's loss to its timestep's history, the oldest dropped once it holds 10.
    /// Throws before changing anything if a t is out of range or a loss is not finite.
    void update(const Timesteps& t, const std::vector<double>& losses) {
        constexpr const char* where = "diffuse::optim::LossAwareSampler::update";
        if (losses.size() != t.size()) {
            detail::throw_invalid(where, "losses.size()", losses.size(), "one per timestep, " + std::to_string(t.size()));
        }
        for (std::size_t n = 0; n < t.size(); ++n) {
            if (t[n] < 0 || t[n] >= num_timesteps_) {
                detail::throw_invalid(where, "t[" + std::to_string(n) + "]", t[n],
                                      "a step in [0, " + std::to_string(num_timesteps_) + ")");
            }
            if (!std::isfinite(losses[n])) {
                detail::throw_invalid(where, "losses[" + std::to_string(n) + "]", losses[n], "a finite loss");
            }
        }
        for (std::size_t n = 0; n < t.size(); ++n) {
            const std::size_t s = static_cast<std::size_t>(t[n]);
            double* h = history_.data() + s * history_per_term;
            std::int64_t& count = counts_[s];
            if (count == history_per_term) {
                std::copy(h + 1, h + history_per_term, h);
                h[history_per_term - 1] = losses[n];
            } else {
                h[count++] = losses[n];
            }
        }
    }

    /// The state a checkpoint stores: the histories [T, 10] (row t holds counts[t] losses, oldest first)
    /// and the counts [T].
    const std::vector<double>& history() const { return history_; }
    const std::vector<std::int64_t>& counts() const { return counts_; }

    /// Restores a stored state; throws, changing nothing, if the sizes do not match T, a count is not in
    /// [0, 10] or a recorded loss is not finite.
    void set_state(const std::vector<double>& history, const std::vector<std::int64_t>& counts) {
        constexpr const char* where = "diffuse::optim::LossAwareSampler::set_state";
        if (history.size() != history_.size()) {
            detail::throw_invalid(where, "history.size()", history.size(),
                                  std::to_string(history_.size()) + " (T = " + std::to_string(num_timesteps_) + " by " +
                                      std::to_string(history_per_term) + ")");
        }
        if (counts.size() != counts_.size()) {
            detail::throw_invalid(where, "counts.size()", counts.size(), std::to_string(counts_.size()) + " (T)");
        }
        for (std::size_t t = 0; t < counts.size(); ++t) {
            if (counts[t] < 0 || counts[t] > history_per_term) {
                detail::throw_invalid(where, "counts[" + std::to_string(t) + "]", counts[t], "a count in [0, 10]");
            }
            for (std::int64_t k = 0; k < counts[t]; ++k) {
                const double l = history[t * history_per_term + static_cast<std::size_t>(k)];
                if (!std::isfinite(l)) {
                    detail::throw_invalid(where, "history[" + std::to_string(t) + "][" + std::to_string(k) + "]", l,
                                          "a finite loss");
                }
            }
        }
        history_ = history;
        counts_ = counts;
    }

  private:
    int num_timesteps_;
    double uniform_prob_;
    std::vector<double> history_;       // [T, 10]
    std::vector<std::int64_t> counts_;  // [T]
};

}  // namespace diffuse::optim
