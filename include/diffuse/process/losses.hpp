#pragma once
// The training loss: the "simple" objective of Ho et al. 2020 (eq. 14), a mean squared error between
// the network's output and its target, which is the noise eps, the clean data x0, or v, optionally
// weighted per sample by min-SNR-gamma (Hang et al. 2023).

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

/// The training objective: Ho et al.'s simple MSE, or Improved DDPM's hybrid L_simple + lambda L_vlb
/// (a learned variance) or L_vlb alone (process/hybrid_loss.hpp).
enum class Loss { simple, hybrid, vlb };

inline const char* to_string(Loss loss) {
    switch (loss) {
        case Loss::simple: return "simple";
        case Loss::hybrid: return "hybrid";
        case Loss::vlb: return "vlb";
    }
    return "?";
}

/// "simple", "hybrid" or "vlb".
inline Loss loss_from_string(const std::string& name) {
    if (name == "simple") return Loss::simple;
    if (name == "hybrid") return Loss::hybrid;
    if (name == "vlb") return Loss::vlb;
    detail::throw_invalid("diffuse::loss_from_string", "name", "\"" + name + "\"", "one of simple, hybrid, vlb");
}

/// What the network should output for x_t made from x0 and eps: eps, x0, or v = sqrt(ab) eps - sqrt(1 - ab) x0.
template <class T, int Rank>
Tensor<T, Rank> training_target(const NoiseSchedule<T>& schedule, Prediction kind, const Tensor<T, Rank>& x0,
                                const Tensor<T, Rank>& eps, const Timesteps& t) {
    switch (kind) {
        case Prediction::epsilon: return eps;
        case Prediction::x0: return x0;
        case Prediction::v: return v_from_x0_eps(schedule, x0, t, eps);
    }
    return eps;
}

/// Per-sample loss weights of min-SNR-gamma, expressed for the chosen target so that every choice
/// weights the x0 error by min(SNR, gamma):  eps: min(SNR, g) / SNR;  x0: min(SNR, g);
/// v: min(SNR, g) / (SNR + 1). gamma <= 0 means no weighting (all ones). [N]; each t in [0, T).
template <class T>
std::vector<double> min_snr_weights(const NoiseSchedule<T>& schedule, Prediction kind, const Timesteps& t,
                                    double gamma) {
    check_timesteps("diffuse::min_snr_weights", t, static_cast<Index>(t.size()), schedule.num_timesteps());
    std::vector<double> w(t.size(), 1.0);
    if (gamma <= 0.0) return w;
    for (std::size_t n = 0; n < t.size(); ++n) {
        const double snr = static_cast<double>(schedule.snr()[t[n]]);
        const double clipped = std::min(snr, gamma);
        switch (kind) {
            case Prediction::epsilon: w[n] = clipped / snr; break;
            case Prediction::x0: w[n] = clipped; break;
            case Prediction::v: w[n] = clipped / (snr + 1.0); break;
        }
    }
    return w;
}

/// L = (1 / (N D)) sum_n w_n ||output_n - target_n||^2 over a batch [N, ...] with D values per sample;
/// writes dL/d(output) into `grad` (output's shape). Weights: [N], or empty for all ones.
/// Throws diffuse::numerical_error when the loss is not finite.
template <class T, int Rank>
double mse_loss(const Tensor<T, Rank>& output, const Tensor<T, Rank>& target, const std::vector<double>& weights,
                Tensor<T, Rank>& grad) {
    constexpr const char* where = "diffuse::mse_loss";
    check_batch(where, "output", output);
    check_same_shape(where, "target", target, "output", output);
    const Index batch = output.dimension(0), per_sample = output.size() / batch;
    if (!weights.empty() && static_cast<Index>(weights.size()) != batch) {
        detail::throw_invalid(where, "weights.size()", weights.size(), "one weight per sample, " + std::to_string(batch));
    }
    grad.resize(output.dimensions());
    const double scale = 1.0 / static_cast<double>(output.size());
    double loss = 0.0;
    for (Index n = 0; n < batch; ++n) {
        const double w = weights.empty() ? 1.0 : weights[static_cast<std::size_t>(n)];
        const Eigen::Map<const Table<T>> o(output.data() + n * per_sample, per_sample);
        const Eigen::Map<const Table<T>> y(target.data() + n * per_sample, per_sample);
        Eigen::Map<Table<T>> g(grad.data() + n * per_sample, per_sample);
        g = o - y;
        loss += w * g.template cast<double>().square().sum();
        g *= static_cast<T>(2.0 * w * scale);  // d/d(output) of w (o - y)^2 / (N D)
    }
    loss *= scale;
    if (!std::isfinite(loss)) {
        throw numerical_error("diffuse::mse_loss: the loss is " + std::to_string(loss) +
                              " (not finite): the model's output or the data hold NaN or Inf");
    }
    return loss;
}

}  // namespace diffuse
