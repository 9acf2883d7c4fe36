#pragma once
// The model's reverse step p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) (Ho et al. 2020, eq. 1;
// Improved DDPM's p_mean_variance). The mean is the posterior mean at the model's x0 prediction,
// mu_theta = mu_tilde(x0_hat, x_t), x0_hat clipped or thresholded as asked; the variance is fixed
// (small: beta_tilde_t, large: beta_t) or learned in Improved DDPM's range,
//   log sigma^2 = f log beta_t + (1 - f) log beta_tilde_t,  f = (v + 1) / 2,
// with the model's output channels [mean part, v] stacked on C. The DDPM sampler and the variational
// bound both take their step from here.

#include "diffuse/core/channels.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/process/thresholding.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

namespace diffuse {

/// The variance of the model's reverse step.
enum class ModelVariance {
    fixed_small,    // beta_tilde_t, the posterior variance (log clipped at t = 0 as Improved DDPM does)
    fixed_large,    // beta_t, with entry 0 replaced by beta_tilde_1 (Improved DDPM)
    learned_range,  // exp(f log beta_t + (1 - f) log beta_tilde_t), f = (v + 1) / 2 from the model
};

inline const char* to_string(ModelVariance v) {
    switch (v) {
        case ModelVariance::fixed_small: return "fixed_small";
        case ModelVariance::fixed_large: return "fixed_large";
        case ModelVariance::learned_range: return "learned_range";
    }
    return "?";
}

/// "fixed_small", "fixed_large" or "learned_range" (also "learned").
inline ModelVariance model_variance_from_string(const std::string& name) {
    if (name == "fixed_small") return ModelVariance::fixed_small;
    if (name == "fixed_large") return ModelVariance::fixed_large;
    if (name == "learned_range" || name == "learned") return ModelVariance::learned_range;
    detail::throw_invalid("diffuse::model_variance_from_string", "name", "\"" + name + "\"",
                          "one of fixed_small, fixed_large, learned_range");
}

/// log sigma_t^2 of a fixed variance, in double. fixed_large at t = 0 is log beta_tilde_1 (log beta_0
/// when T = 1). learned_range has no fixed value and throws.
template <class T>
double fixed_log_variance(const NoiseSchedule<T>& schedule, ModelVariance kind, int t) {
    const auto& betas = schedule.betas_double();
    const int n = schedule.num_timesteps();
    const auto& ab = schedule.alphas_cumprod_double();
    // beta_tilde_s = beta_s (1 - alphabar_{s-1}) / (1 - alphabar_s), in double
    const auto beta_tilde = [&](int s) { return betas[s] * (1.0 - (s > 0 ? ab[s - 1] : 1.0)) / (1.0 - ab[s]); };
    switch (kind) {
        case ModelVariance::fixed_small: return std::log(t > 0 ? beta_tilde(t) : n > 1 ? beta_tilde(1) : betas[0]);
        case ModelVariance::fixed_large: return std::log(t > 0 ? betas[t] : n > 1 ? beta_tilde(1) : betas[0]);
        case ModelVariance::learned_range: break;
    }
    detail::throw_invalid("diffuse::fixed_log_variance", "kind", to_string(kind), "fixed_small or fixed_large");
}

/// How many output channels a model with `channels` data channels has: C, or 2C with a learned variance.
inline Index model_output_channels(Index channels, ModelVariance kind) {
    return kind == ModelVariance::learned_range ? 2 * channels : channels;
}

/// log sigma^2 of the reverse step for each sample at its step t[n]. v: [N, C, H, W], the model's
/// variance channels (learned_range only; ignored otherwise). Returns [N, C, H, W] shaped like `like`.
template <class T>
Tensor4<T> model_log_variance(const NoiseSchedule<T>& schedule, ModelVariance kind, const Timesteps& t,
                              const Tensor4<T>& v, const Tensor4<T>& like) {
    Tensor4<T> out(like.dimensions());
    const Index batch = like.dimension(0), per_sample = like.size() / batch;
    for (Index n = 0; n < batch; ++n) {
        const int tn = t[static_cast<std::size_t>(n)];
        T* o = out.data() + n * per_sample;
        if (kind != ModelVariance::learned_range) {
            std::fill(o, o + per_sample, static_cast<T>(fixed_log_variance(schedule, kind, tn)));
            continue;
        }
        const double max_log = std::log(schedule.betas_double()[static_cast<std::size_t>(tn)]);
        const double min_log = fixed_log_variance(schedule, ModelVariance::fixed_small, tn);
        const T* vn = v.data() + n * per_sample;
        for (Index i = 0; i < per_sample; ++i) {
            const double f = (static_cast<double>(vn[i]) + 1.0) / 2.0;  // v in [-1, 1] -> f in [0, 1]
            o[i] = static_cast<T>(f * max_log + (1.0 - f) * min_log);
        }
    }
    return out;
}

/// p(x_{t-1} | x_t) from a model output, and the x0 prediction it rests on.
template <class T>
struct ReverseStep {
    Tensor4<T> mean;          // [N, C, H, W], mu_tilde(x0_hat, x_t)
    Tensor4<T> log_variance;  // [N, C, H, W]
    Tensor4<T> pred_x0;       // [N, C, H, W]
};

struct ReverseOptions {
    Prediction prediction = Prediction::epsilon;
    ModelVariance variance = ModelVariance::fixed_small;
    Thresholding thresholding = Thresholding::none;  // what is done to the x0 prediction before taking the mean
    double dynamic_percentile = 0.995;               // Imagen's p, for Thresholding::dynamic
    double clip_range = 1.0;                         // Thresholding::clip's bound: x0 in [-r, r]
};

/// The reverse step of each sample at its step t[n] (Improved DDPM's p_mean_variance).
/// model_output: [N, C, H, W], or [N, 2C, H, W] for learned_range; x_t: [N, C, H, W]; t: [N].
template <class T>
ReverseStep<T> p_mean_variance(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output,
                               const Tensor4<T>& x_t, const Timesteps& t, const ReverseOptions& options) {
    constexpr const char* where = "diffuse::p_mean_variance";
    check_batch(where, "x_t", x_t);
    check_timesteps(where, t, x_t.dimension(0), schedule.num_timesteps());
    if (options.thresholding == Thresholding::dynamic) detail::check_percentile(where, options.dynamic_percentile);
    if (options.thresholding == Thresholding::clip) detail::check_clip_range(where, options.clip_range);
    const Index c = x_t.dimension(1);
    const std::array<Index, 4> want = {x_t.dimension(0), model_output_channels(c, options.variance), x_t.dimension(2),
                                       x_t.dimension(3)};
    if (model_output.dimensions() != want) {
        detail::throw_invalid(where, "model_output.shape", shape_string(model_output.dimensions()),
                              shape_string(want) + std::string(" (variance ") + to_string(options.variance) + ")");
    }
    const bool learned = options.variance == ModelVariance::learned_range;
    const Tensor4<T> mean_part = learned ? channel_slice(model_output, 0, c) : model_output;  // [N, C, H, W]
    const Tensor4<T> v = learned ? channel_slice(model_output, c, c) : Tensor4<T>();         // [N, C, H, W]
    ReverseStep<T> step;
    step.pred_x0 = threshold_x0(predict_x0(schedule, x_t, t, mean_part, options.prediction), options.thresholding,
                                options.dynamic_percentile, options.clip_range);
    step.mean = q_posterior_mean(schedule, step.pred_x0, x_t, t);
    step.log_variance = model_log_variance(schedule, options.variance, t, v, x_t);
    return step;
}

}  // namespace diffuse
