#pragma once
// The model's reverse step p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) and the variational bound built
// from it (Ho et al. 2020, eq. 5; Improved DDPM, section 3 and its calc_bpd_loop):
//   L = KL(q(x_T | x_0) || N(0, I))                                     the prior term
//     + sum_{t>0} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))         one term per t
//     - log p(x_0 | x_1)                                                the discretised decoder, at t = 0
// in bits per dimension. The mean is the posterior mean at the model's x0 prediction,
// mu_theta = mu_tilde(x0_hat, x_t); the variance is fixed (small: beta_tilde_t, large: beta_t) or
// learned in Improved DDPM's range, log sigma^2 = f log beta_t + (1 - f) log beta_tilde_t, f = (v + 1) / 2,
// with the model's output channels [mean part, v] stacked on C.
// Also the hybrid loss L_simple + lambda L_vlb (Improved DDPM, section 3.1) with its gradient.

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/forward.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/process/losses.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

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

/// Channels [begin, begin + count) of x. x: [N, C, H, W] -> [N, count, H, W].
template <class T>
Tensor4<T> channel_slice(const Tensor4<T>& x, Index begin, Index count) {
    constexpr const char* where = "diffuse::channel_slice";
    const Index channels = x.dimension(1);
    if (begin < 0 || begin > channels) {
        detail::throw_invalid(where, "begin", begin,
                              "a channel in [0, " + std::to_string(channels) + "] of x " + shape_string(x.dimensions()));
    }
    if (count < 0 || count > channels - begin) {
        detail::throw_invalid(where, "count", count,
                              "a count in [0, " + std::to_string(channels - begin) + "]: x " +
                                  shape_string(x.dimensions()) + " has " + std::to_string(channels) +
                                  " channels, from begin = " + std::to_string(begin));
    }
    Tensor4<T> out(x.dimension(0), count, x.dimension(2), x.dimension(3));
    const Index plane = x.dimension(2) * x.dimension(3);
    for (Index n = 0; n < x.dimension(0); ++n) {
        std::copy_n(x.data() + (n * x.dimension(1) + begin) * plane, count * plane, out.data() + n * count * plane);
    }
    return out;
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
    bool clip_x0 = false;  // clamp the x0 prediction to [-1, 1] before taking the mean
};

/// The reverse step of each sample at its step t[n] (Improved DDPM's p_mean_variance).
/// model_output: [N, C, H, W], or [N, 2C, H, W] for learned_range; x_t: [N, C, H, W]; t: [N].
template <class T>
ReverseStep<T> p_mean_variance(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output,
                               const Tensor4<T>& x_t, const Timesteps& t, const ReverseOptions& options) {
    constexpr const char* where = "diffuse::p_mean_variance";
    check_batch(where, "x_t", x_t);
    check_timesteps(where, t, x_t.dimension(0), schedule.num_timesteps());
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
    step.pred_x0 = predict_x0(schedule, x_t, t, mean_part, options.prediction);
    if (options.clip_x0) {
        for (Index i = 0; i < step.pred_x0.size(); ++i) step.pred_x0.data()[i] = std::clamp(step.pred_x0.data()[i], T(-1), T(1));
    }
    step.mean = q_posterior_mean(schedule, step.pred_x0, x_t, t);
    step.log_variance = model_log_variance(schedule, options.variance, t, v, x_t);
    return step;
}

/// The bound's term of each sample at its own step t[n], in bits per dimension, [N]: for t > 0,
/// KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 0 the decoder's -log p(x_0 | x_1), x_0 being
/// 8-bit data scaled to [-1, 1]. model_output: as p_mean_variance; x0, x_t: [N, C, H, W].
template <class T>
std::vector<double> vb_terms_bpd(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output,
                                 const Tensor4<T>& x0, const Tensor4<T>& x_t, const Timesteps& t,
                                 const ReverseOptions& options) {
    check_same_shape("diffuse::vb_terms_bpd", "x_t", x_t, "x0", x0);
    const ReverseStep<T> p = p_mean_variance(schedule, model_output, x_t, t, options);
    const DiagonalGaussian<T, 4> q = q_posterior_mean_variance(schedule, x0, x_t, t);
    const Index batch = x0.dimension(0), per_sample = x0.size() / batch;
    std::vector<double> out(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) {
        double nats = 0.0;
        for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
            const double mean = p.mean.data()[i], log_var = p.log_variance.data()[i];
            if (t[static_cast<std::size_t>(n)] == 0) {
                const double x = x0.data()[i];
                if (!(x >= -1.0 && x <= 1.0)) {
                    detail::throw_invalid("diffuse::vb_terms_bpd", "x0[" + std::to_string(i) + "]", x,
                                          "data scaled to [-1, 1]");
                }
                nats -= discretized_gaussian_log_likelihood(x, mean, 0.5 * log_var);
            } else {
                nats += normal_kl<double>(q.mean.data()[i], q.log_variance.data()[i], mean, log_var);
            }
        }
        out[static_cast<std::size_t>(n)] = nats_to_bits_per_dim(nats, static_cast<double>(per_sample));
    }
    return out;
}

/// KL(q(x_T | x_0) || N(0, I)) of each sample in bits per dimension, [N]; x_T is the last step.
template <class T>
std::vector<double> prior_bpd(const NoiseSchedule<T>& schedule, const Tensor4<T>& x0) {
    check_batch("diffuse::prior_bpd", "x0", x0);
    const int last = schedule.num_timesteps() - 1;
    const double sqrt_ab = std::sqrt(schedule.alphas_cumprod_double()[static_cast<std::size_t>(last)]);
    const double log_var = std::log1p(-schedule.alphas_cumprod_double()[static_cast<std::size_t>(last)]);
    const Index batch = x0.dimension(0), per_sample = x0.size() / batch;
    std::vector<double> out(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) {
        double nats = 0.0;
        for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
            nats += normal_kl<double>(sqrt_ab * x0.data()[i], log_var, 0.0, 0.0);
        }
        out[static_cast<std::size_t>(n)] = nats_to_bits_per_dim(nats, static_cast<double>(per_sample));
    }
    return out;
}

struct VlbOptions {
    ReverseOptions reverse = {};  // the model's prediction kind and variance; clip_x0 as calc_bpd_loop's clip_denoised
    int stride = 1;               // 1: every t. s > 1: t = T-1, T-1-s, ... and t = 0, each KL term counted min(s, t) times
    // With a stride: each sample evaluates, in place of the KL term at t_k, the one at a step drawn
    // uniformly from the block t_k - w_k + 1 .. t_k that term stands for. The sum over t is then
    // estimated without bias (a stratified sample), where the fixed t_k would favour the block's
    // noisiest step; the KL terms change by orders of magnitude inside the blocks near t = 0.
    bool stratified = false;
    std::uint64_t seed = 0;       // the noise that makes x_t at step t is stream t of this seed
};

/// The bound on a batch, per sample and per term, in bits per dimension.
struct VariationalBound {
    std::vector<int> timesteps;                  // [K] the steps evaluated (stratified: each block's top), descending, ending with 0
    std::vector<double> weights;                 // [K] how many terms each stands for (all 1 with stride 1)
    std::vector<std::vector<int>> sample_timesteps;  // [K][N] the step each sample evaluated for timesteps[k]
                                                     // (timesteps[k] itself unless stratified)
    std::vector<std::vector<double>> terms_bpd;  // [K][N]: KL terms for t > 0, the decoder NLL for t = 0
    std::vector<double> prior_bpd;               // [N]
    std::vector<double> total_bpd;               // [N] prior + sum_k weights[k] terms_bpd[k]

    /// The batch mean of the total, bits per dimension.
    double mean_total_bpd() const {
        double sum = 0.0;
        for (const double v : total_bpd) sum += v;
        return sum / static_cast<double>(total_bpd.size());
    }
};

/// The variational bound of a model on a batch x0 [N, C, H, W] of 8-bit data scaled to [-1, 1],
/// calling model(x_t, t, labels) once per evaluated step with the model's timesteps (timestep_map).
/// labels: [N], or empty for an unconditional model.
template <class T, class Model>
VariationalBound variational_bound(const NoiseSchedule<T>& schedule, Model&& model, const Tensor4<T>& x0,
                                   const std::vector<int>& labels = {}, const VlbOptions& options = {}) {
    constexpr const char* where = "diffuse::variational_bound";
    check_batch(where, "x0", x0);
    const int n_steps = schedule.num_timesteps();
    if (options.stride < 1 || options.stride > n_steps) {
        detail::throw_invalid(where, "options.stride", options.stride,
                              "from 1 to the schedule's " + std::to_string(n_steps) + " timesteps");
    }
    const Index batch = x0.dimension(0);
    if (!labels.empty() && static_cast<Index>(labels.size()) != batch) {
        detail::throw_invalid(where, "labels.size()", labels.size(), "one per sample, " + std::to_string(batch) + ", or none");
    }
    VariationalBound vb;
    for (int t = n_steps - 1; t >= 1; t -= options.stride) {
        vb.timesteps.push_back(t);
        vb.weights.push_back(std::min(options.stride, t));
    }
    vb.timesteps.push_back(0);
    vb.weights.push_back(1.0);
    vb.prior_bpd = prior_bpd(schedule, x0);
    vb.total_bpd = vb.prior_bpd;
    const Index out_channels = model_output_channels(x0.dimension(1), options.reverse.variance);
    for (std::size_t k = 0; k < vb.timesteps.size(); ++k) {
        const int t = vb.timesteps[k];
        Timesteps steps(static_cast<std::size_t>(batch), t);
        Generator generator(derive_seed(options.seed, static_cast<std::uint64_t>(t)));
        if (options.stratified && vb.weights[k] > 1.0) {  // t - u, u uniform in [0, w_k)
            const std::vector<int> u = generator.randint(batch, static_cast<int>(vb.weights[k]));
            for (Index n = 0; n < batch; ++n) steps[static_cast<std::size_t>(n)] -= u[static_cast<std::size_t>(n)];
        }
        vb.sample_timesteps.push_back(steps);
        Tensor4<T> noise;  // [N, C, H, W]
        const Tensor4<T> x_t = q_sample(schedule, x0, steps, generator, noise);
        Timesteps model_t(steps.size());
        for (std::size_t n = 0; n < steps.size(); ++n) model_t[n] = schedule.timestep_map()[static_cast<std::size_t>(steps[n])];
        const Tensor4<T> output = model(x_t, model_t, labels);  // [N, C or 2C, H, W]
        if (output.dimension(1) != out_channels) {
            detail::throw_invalid(where, "the model's output shape", shape_string(output.dimensions()),
                                  std::to_string(out_channels) + " channels for variance " +
                                      to_string(options.reverse.variance));
        }
        vb.terms_bpd.push_back(vb_terms_bpd(schedule, output, x0, x_t, steps, options.reverse));
        for (Index n = 0; n < batch; ++n) {
            const double term = vb.terms_bpd.back()[static_cast<std::size_t>(n)];
            if (!std::isfinite(term)) {
                throw numerical_error(std::string(where) + ": the term at t = " + std::to_string(t) + " of sample " +
                                      std::to_string(n) + " is " + std::to_string(term) + " (not finite)");
            }
            vb.total_bpd[static_cast<std::size_t>(n)] += vb.weights[k] * term;
        }
    }
    return vb;
}

namespace detail {

// d/d(log_scale) of log P(x), the discretised Gaussian likelihood of discretized_gaussian_log_likelihood
// (same bins): P = Phi(b) - Phi(a) with a, b the bin's edges standardised by exp(log_scale), so
// dP/dlog_scale = a phi(a) - b phi(b), an edge at infinity contributing nothing. Ratios phi / P are
// taken in log space, where P may underflow.
inline double discretized_gaussian_dlogp_dlogscale(double x, double mean, double log_scale) {
    const double log_p = discretized_gaussian_log_likelihood(x, mean, log_scale);
    const double inv_stdv = std::exp(-log_scale);
    const double a = inv_stdv * (x - mean - 1.0 / 255.0), b = inv_stdv * (x - mean + 1.0 / 255.0);
    const double log_sqrt_2pi = 0.5 * std::log(2.0 * std::acos(-1.0));
    const auto z_phi_over_p = [&](double z) { return z * std::exp(-0.5 * z * z - log_sqrt_2pi - log_p); };
    double d = 0.0;
    if (!(x < -0.999)) d += z_phi_over_p(a);  // the lower edge is finite
    if (!(x > 0.999)) d -= z_phi_over_p(b);   // the upper edge is finite
    return d;
}

}  // namespace detail

/// The hybrid objective and its gradient with respect to the model's output.
template <class T>
struct HybridLoss {
    double loss;      // mse + lambda * T * vb
    double mse;       // L_simple, the mean squared error of the mean part against its target
    double vb;        // the batch mean of the VLB term at each sample's t, bits per dimension
    Tensor4<T> grad;  // [N, 2C, H, W], d loss / d model_output
};

/// Improved DDPM's hybrid loss L_simple + lambda L_vlb for a model with a learned-range variance.
/// model_output: [N, 2C, H, W], channels [mean part (eps, x0 or v), v]; x0, noise, x_t: [N, C, H, W]
/// with x_t = q_sample(x0, t, noise); t: [N], one step per sample. L_vlb = sum over the T steps is
/// estimated by T times each sample's term, so the loss is mse + lambda T mean_n(vb_n), vb in bits per
/// dimension (Improved DDPM's code: vb * num_timesteps / 1000 for lambda = 0.001). As in the paper, the
/// VLB term sees the mean as a constant (stop-gradient): it trains the variance channels only, and the
/// mean channels get the gradient of the MSE only.
template <class T>
HybridLoss<T> hybrid_loss(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output, const Tensor4<T>& x0,
                          const Tensor4<T>& noise, const Tensor4<T>& x_t, const Timesteps& t,
                          Prediction prediction = Prediction::epsilon, double lambda = 0.001) {
    constexpr const char* where = "diffuse::hybrid_loss";
    check_batch(where, "x0", x0);
    check_same_shape(where, "x0", x0, "noise", noise);
    check_same_shape(where, "x0", x0, "x_t", x_t);
    check_timesteps(where, t, x0.dimension(0), schedule.num_timesteps());
    if (!(lambda >= 0.0)) detail::throw_invalid(where, "lambda", lambda, ">= 0 (Improved DDPM uses 0.001)");
    const Index batch = x0.dimension(0), c = x0.dimension(1), plane = x0.dimension(2) * x0.dimension(3);
    const std::array<Index, 4> want = {batch, 2 * c, x0.dimension(2), x0.dimension(3)};
    if (model_output.dimensions() != want) {
        detail::throw_invalid(where, "model_output.shape", shape_string(model_output.dimensions()),
                              shape_string(want) + ", channels [mean part, variance v]");
    }
    const ReverseOptions reverse{prediction, ModelVariance::learned_range, false};
    const Tensor4<T> mean_part = channel_slice(model_output, 0, c);  // [N, C, H, W]
    const Tensor4<T> v = channel_slice(model_output, c, c);          // [N, C, H, W]

    HybridLoss<T> out;
    Tensor4<T> mse_grad;  // [N, C, H, W]
    out.mse = mse_loss(mean_part, training_target(schedule, prediction, x0, noise, t), {}, mse_grad);

    const std::vector<double> terms = vb_terms_bpd(schedule, model_output, x0, x_t, t, reverse);
    out.vb = 0.0;
    for (const double term : terms) out.vb += term / static_cast<double>(batch);
    const double scale = lambda * schedule.num_timesteps();
    out.loss = out.mse + scale * out.vb;
    if (!std::isfinite(out.loss)) {
        throw numerical_error(std::string(where) + ": the loss is " + std::to_string(out.loss) + " (not finite)");
    }

    // d(scale vb) / dv: vb = (1 / N) sum_n (1 / (D ln 2)) sum_i term_ni; term_ni depends on v only through
    // L = log sigma^2 = f log beta + (1 - f) log beta_tilde, f = (v + 1) / 2, so dL/dv = (log beta - log beta_tilde) / 2.
    const ReverseStep<T> p = p_mean_variance(schedule, model_output, x_t, t, reverse);
    const DiagonalGaussian<T, 4> q = q_posterior_mean_variance(schedule, x0, x_t, t);
    const Index per_sample = x0.size() / batch;
    const double per_term = scale / (static_cast<double>(batch) * static_cast<double>(per_sample) * std::log(2.0));
    out.grad = Tensor4<T>(want);
    for (Index n = 0; n < batch; ++n) {
        const int tn = t[static_cast<std::size_t>(n)];
        const double dl_dv = 0.5 * (std::log(schedule.betas_double()[static_cast<std::size_t>(tn)]) -
                                    fixed_log_variance(schedule, ModelVariance::fixed_small, tn));
        for (Index ch = 0; ch < c; ++ch) {
            const Index in_off = (n * c + ch) * plane;      // into [N, C, H, W]
            const Index mean_off = (n * 2 * c + ch) * plane;  // into [N, 2C, H, W], mean channels
            const Index var_off = (n * 2 * c + c + ch) * plane;  // variance channels
            for (Index k = 0; k < plane; ++k) {
                const Index i = in_off + k;
                out.grad.data()[mean_off + k] = mse_grad.data()[i];
                const double mp = p.mean.data()[i], lp = p.log_variance.data()[i];
                double dterm_dl;
                if (tn == 0) {
                    // term = -log P(x0 | mean, log_scale = L / 2)
                    dterm_dl = -0.5 * detail::discretized_gaussian_dlogp_dlogscale(x0.data()[i], mp, 0.5 * lp);
                } else {
                    // d/dL of 0.5 (-1 + L - Lq + exp(Lq - L) + (mq - mp)^2 exp(-L))
                    const double d = q.mean.data()[i] - mp, lq = q.log_variance.data()[i];
                    dterm_dl = 0.5 * (1.0 - std::exp(lq - lp) - d * d * std::exp(-lp));
                }
                out.grad.data()[var_off + k] = static_cast<T>(per_term * dterm_dl * dl_dv);
            }
        }
    }
    return out;
}

}  // namespace diffuse
