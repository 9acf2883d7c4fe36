#pragma once
// Improved DDPM's objectives (section 3.1) with their gradients with respect to the model's output:
// the hybrid loss L_simple + lambda L_vlb for a model with a learned-range variance, the mean's
// gradient stopped inside L_vlb, and L_vlb alone, which trains the mean and a learned variance.

#include "diffuse/core/channels.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/process/losses.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/process/reverse.hpp"
#include "diffuse/process/vlb.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <array>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

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

// d/d(mean) of the same log P: a and b move by -1/s as the mean moves by 1, so
// dP/dmean = (phi(a) - phi(b)) / s, an edge at infinity contributing nothing.
inline double discretized_gaussian_dlogp_dmean(double x, double mean, double log_scale) {
    const double log_p = discretized_gaussian_log_likelihood(x, mean, log_scale);
    const double inv_stdv = std::exp(-log_scale);
    const double a = inv_stdv * (x - mean - 1.0 / 255.0), b = inv_stdv * (x - mean + 1.0 / 255.0);
    const double log_sqrt_2pi = 0.5 * std::log(2.0 * std::acos(-1.0));
    const auto phi_over_p = [&](double z) { return std::exp(-0.5 * z * z - log_sqrt_2pi - log_p); };
    double d = 0.0;
    if (!(x < -0.999)) d += phi_over_p(a);
    if (!(x > 0.999)) d -= phi_over_p(b);
    return d * inv_stdv;
}

// d x0_hat / d(mean part of the model's output) at step t, x0_hat unclipped (training never clips):
// eps: x0 = sqrt(1 / ab) x_t - sqrt(1 / ab - 1) eps;  x0: itself;  v: x0 = sqrt(ab) x_t - sqrt(1 - ab) v.
template <class T>
double dx0_doutput(const NoiseSchedule<T>& schedule, Prediction prediction, int t) {
    switch (prediction) {
        case Prediction::epsilon: return -static_cast<double>(schedule.sqrt_recipm1_alphas_cumprod()[t]);
        case Prediction::x0: return 1.0;
        case Prediction::v: return -static_cast<double>(schedule.sqrt_one_minus_alphas_cumprod()[t]);
    }
    return 0.0;
}

}  // namespace detail

/// The variational bound's terms of a batch with the gradient of a weighted sum of them.
template <class T>
struct VlbTermsGradient {
    std::vector<double> bpd;  // [N], each sample's term at its own t, bits per dimension (as vb_terms_bpd)
    Tensor4<T> grad;          // [N, C or 2C, H, W], d(sum_n scale[n] bpd[n]) / d model_output
};

/// vb_terms_bpd (x0 predictions not clipped, as in training) and the gradient of sum_n scale[n] bpd[n]
/// with respect to the model's output. through_mean = false stops the gradient at the mean (the hybrid
/// loss: the mean channels get zero), true lets it reach the mean part through
/// mu = coef1 x0_hat(output) + coef2 x_t (L_vlb alone). The variance channels, with learned_range, get
/// the gradient through log sigma^2 = f log beta + (1 - f) log beta_tilde, f = (v + 1) / 2.
/// model_output: [N, C, H, W] or [N, 2C, H, W] (learned_range); x0, x_t: [N, C, H, W]; scale: [N].
template <class T>
VlbTermsGradient<T> vb_terms_gradient(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output,
                                      const Tensor4<T>& x0, const Tensor4<T>& x_t, const Timesteps& t,
                                      Prediction prediction, ModelVariance variance,
                                      const std::vector<double>& scale, bool through_mean) {
    constexpr const char* where = "diffuse::vb_terms_gradient";
    check_batch(where, "x0", x0);
    const Index batch = x0.dimension(0), c = x0.dimension(1), plane = x0.dimension(2) * x0.dimension(3);
    if (static_cast<Index>(scale.size()) != batch) {
        detail::throw_invalid(where, "scale.size()", scale.size(), "one factor per sample, " + std::to_string(batch));
    }
    const ReverseOptions reverse{prediction, variance, Thresholding::none};
    const bool learned = variance == ModelVariance::learned_range;
    VlbTermsGradient<T> out;
    out.bpd = vb_terms_bpd(schedule, model_output, x0, x_t, t, reverse);  // checks the shapes
    const ReverseStep<T> p = p_mean_variance(schedule, model_output, x_t, t, reverse);
    const DiagonalGaussian<T, 4> q = q_posterior_mean_variance(schedule, x0, x_t, t);
    const Index out_c = model_output.dimension(1);
    const double per_value = 1.0 / (static_cast<double>(c * plane) * std::log(2.0));  // nats of a value -> bpd
    out.grad = Tensor4<T>(model_output.dimensions());
    out.grad.setZero();
    for (Index n = 0; n < batch; ++n) {
        const int tn = t[static_cast<std::size_t>(n)];
        const double s = scale[static_cast<std::size_t>(n)] * per_value;
        // dL/dv = (log beta - log beta_tilde) / 2;  d mu / d output = coef1 dx0/doutput
        const double dl_dv = learned ? 0.5 * (std::log(schedule.betas_double()[static_cast<std::size_t>(tn)]) -
                                              fixed_log_variance(schedule, ModelVariance::fixed_small, tn))
                                     : 0.0;
        const double dmu_dout = through_mean ? static_cast<double>(schedule.posterior_mean_coef1()[tn]) *
                                                   detail::dx0_doutput(schedule, prediction, tn)
                                             : 0.0;
        for (Index ch = 0; ch < c; ++ch) {
            const Index in_off = (n * c + ch) * plane;            // into [N, C, H, W]
            const Index mean_off = (n * out_c + ch) * plane;      // the mean channels of the output
            const Index var_off = (n * out_c + c + ch) * plane;   // the variance channels (learned_range)
            for (Index k = 0; k < plane; ++k) {
                const Index i = in_off + k;
                const double mp = p.mean.data()[i], lp = p.log_variance.data()[i];
                double dterm_dmean, dterm_dl;
                if (tn == 0) {
                    // term = -log P(x0 | mean, log_scale = L / 2)
                    const double x = x0.data()[i];
                    dterm_dmean = -detail::discretized_gaussian_dlogp_dmean(x, mp, 0.5 * lp);
                    dterm_dl = -0.5 * detail::discretized_gaussian_dlogp_dlogscale(x, mp, 0.5 * lp);
                } else {
                    // term = 0.5 (-1 + L - Lq + exp(Lq - L) + (mq - mp)^2 exp(-L))
                    const double d = q.mean.data()[i] - mp, lq = q.log_variance.data()[i];
                    dterm_dmean = -d * std::exp(-lp);
                    dterm_dl = 0.5 * (1.0 - std::exp(lq - lp) - d * d * std::exp(-lp));
                }
                if (through_mean) out.grad.data()[mean_off + k] = static_cast<T>(s * dterm_dmean * dmu_dout);
                if (learned) out.grad.data()[var_off + k] = static_cast<T>(s * dterm_dl * dl_dv);
            }
        }
    }
    return out;
}

/// A training objective's value and its gradient with respect to the model's output.
template <class T>
struct HybridLoss {
    double loss;                     // (1 / N) sum_n w_n loss_n, the objective the gradient is of
    double mse;                      // L_simple: the batch mean of the mean part's squared error against its target
    double vb;                       // the batch mean of the VLB term at each sample's t, bits per dimension
    std::vector<double> per_sample;  // [N] loss_n, unweighted by w (what a loss-aware timestep sampler records)
    Tensor4<T> grad;                 // [N, C or 2C, H, W], d loss / d model_output
};

namespace detail {

inline void check_sample_weights(const char* where, const char* name, const std::vector<double>& w, Index batch) {
    if (!w.empty() && static_cast<Index>(w.size()) != batch) {
        throw_invalid(where, std::string(name) + ".size()", w.size(), "one per sample, " + std::to_string(batch) + ", or none");
    }
    for (std::size_t n = 0; n < w.size(); ++n) {
        if (!(std::isfinite(w[n]) && w[n] >= 0.0)) {
            throw_invalid(where, std::string(name) + "[" + std::to_string(n) + "]", w[n], "a finite weight >= 0");
        }
    }
}

/// The output's shape for data x0 [N, C, H, W] and the variance kind, checked.
template <class T>
void check_model_output(const char* where, const Tensor4<T>& model_output, const Tensor4<T>& x0, ModelVariance variance) {
    const std::array<Index, 4> want = {x0.dimension(0), model_output_channels(x0.dimension(1), variance),
                                       x0.dimension(2), x0.dimension(3)};
    if (model_output.dimensions() != want) {
        throw_invalid(where, "model_output.shape", shape_string(model_output.dimensions()),
                      shape_string(want) + (variance == ModelVariance::learned_range
                                                ? std::string(", channels [mean part, variance v]")
                                                : std::string(" (variance ") + to_string(variance) + ")"));
    }
}

/// The squared error of each sample's mean part against its target, [N], and its gradient
/// d/d(mean part) of (1 / N) sum_n w_n mse_n written into the first C channels of grad [N, C', H, W].
template <class T>
std::vector<double> mean_part_mse(const Tensor4<T>& model_output, const Tensor4<T>& target,
                                  const std::vector<double>& w, Tensor4<T>& grad) {
    const Index batch = target.dimension(0), per_sample = target.size() / batch;
    const Index out_per_sample = model_output.size() / batch;
    std::vector<double> mse(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) {
        const T* o = model_output.data() + n * out_per_sample;  // the mean part comes first
        const T* y = target.data() + n * per_sample;
        T* g = grad.data() + n * out_per_sample;
        const double scale = 2.0 * w[static_cast<std::size_t>(n)] / static_cast<double>(batch * per_sample);
        double sum = 0.0;
        for (Index i = 0; i < per_sample; ++i) {
            const double d = static_cast<double>(o[i]) - static_cast<double>(y[i]);
            sum += d * d;
            g[i] = static_cast<T>(scale * d);  // d/d o of w_n (o - y)^2 / (N D)
        }
        mse[static_cast<std::size_t>(n)] = sum / static_cast<double>(per_sample);
    }
    return mse;
}

}  // namespace detail

/// Improved DDPM's hybrid loss L_simple + lambda L_vlb for a model with a learned-range variance.
/// model_output: [N, 2C, H, W], channels [mean part (eps, x0 or v), v]; x0, noise, x_t: [N, C, H, W]
/// with x_t = q_sample(x0, t, noise); t: [N], one step per sample. L_vlb = sum over the T steps is
/// estimated by T times each sample's term, so loss_n = mse_n + lambda T vb_n, vb in bits per
/// dimension (Improved DDPM's code: vb * num_timesteps / 1000 for lambda = 0.001). As in the paper, the
/// VLB term sees the mean as a constant (stop-gradient): it trains the variance channels only, and the
/// mean channels get the gradient of the MSE only.
/// mse_weights: [N] or empty, min-SNR-gamma's factors of each mse_n; weights: [N] or empty, factors of
/// each whole loss_n (a timestep sampler's importance weights); loss = (1 / N) sum_n weights_n loss_n.
template <class T>
HybridLoss<T> hybrid_loss(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output, const Tensor4<T>& x0,
                          const Tensor4<T>& noise, const Tensor4<T>& x_t, const Timesteps& t,
                          Prediction prediction = Prediction::epsilon, double lambda = 0.001,
                          const std::vector<double>& weights = {}, const std::vector<double>& mse_weights = {}) {
    constexpr const char* where = "diffuse::hybrid_loss";
    check_batch(where, "x0", x0);
    check_same_shape(where, "x0", x0, "noise", noise);
    check_same_shape(where, "x0", x0, "x_t", x_t);
    check_timesteps(where, t, x0.dimension(0), schedule.num_timesteps());
    if (!(lambda >= 0.0 && std::isfinite(lambda))) {
        detail::throw_invalid(where, "lambda", lambda, "a finite value >= 0 (Improved DDPM uses 0.001)");
    }
    const Index batch = x0.dimension(0);
    detail::check_sample_weights(where, "weights", weights, batch);
    detail::check_sample_weights(where, "mse_weights", mse_weights, batch);
    detail::check_model_output(where, model_output, x0, ModelVariance::learned_range);
    const std::vector<double> w = weights.empty() ? std::vector<double>(static_cast<std::size_t>(batch), 1.0) : weights;
    const std::vector<double> snr = mse_weights.empty() ? std::vector<double>(static_cast<std::size_t>(batch), 1.0) : mse_weights;
    const double lambda_t = lambda * schedule.num_timesteps();

    // the VLB part, d/d v of (1 / N) sum_n w_n lambda T vb_n, the mean's gradient stopped
    std::vector<double> vb_scale(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) vb_scale[static_cast<std::size_t>(n)] = w[static_cast<std::size_t>(n)] * lambda_t / static_cast<double>(batch);
    VlbTermsGradient<T> vb = vb_terms_gradient(schedule, model_output, x0, x_t, t, prediction,
                                               ModelVariance::learned_range, vb_scale, false);
    // the MSE part into the mean channels, d/d(mean part) of (1 / N) sum_n w_n snr_n mse_n
    std::vector<double> mse_w(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) mse_w[static_cast<std::size_t>(n)] = w[static_cast<std::size_t>(n)] * snr[static_cast<std::size_t>(n)];
    const std::vector<double> mse = detail::mean_part_mse(model_output, training_target(schedule, prediction, x0, noise, t),
                                                          mse_w, vb.grad);

    HybridLoss<T> out;
    out.loss = out.mse = out.vb = 0.0;
    out.per_sample.resize(static_cast<std::size_t>(batch));
    for (std::size_t n = 0; n < out.per_sample.size(); ++n) {
        out.per_sample[n] = snr[n] * mse[n] + lambda_t * vb.bpd[n];
        out.loss += w[n] * out.per_sample[n] / static_cast<double>(batch);
        out.mse += mse[n] / static_cast<double>(batch);
        out.vb += vb.bpd[n] / static_cast<double>(batch);
    }
    if (!std::isfinite(out.loss)) {
        throw numerical_error(std::string(where) + ": the loss is " + std::to_string(out.loss) + " (not finite)");
    }
    out.grad = std::move(vb.grad);
    return out;
}

/// L_vlb alone (Improved DDPM's L_vlb objective, section 3.3): loss_n = T vb_n, the bound's sum over the
/// T steps estimated from each sample's term, in bits per dimension (the prior term, which no parameter
/// changes, left out). The gradient reaches the mean part through the posterior mean, and the variance
/// channels with learned_range; a fixed variance trains the mean alone by the bound.
/// model_output: [N, C, H, W], or [N, 2C, H, W] with learned_range; noise only gives the mse reported
/// (the mean part against its target), which the gradient does not contain. weights: [N] or empty,
/// factors of each loss_n (importance weights); loss = (1 / N) sum_n weights_n loss_n.
template <class T>
HybridLoss<T> vlb_loss(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output, const Tensor4<T>& x0,
                       const Tensor4<T>& noise, const Tensor4<T>& x_t, const Timesteps& t,
                       Prediction prediction = Prediction::epsilon,
                       ModelVariance variance = ModelVariance::learned_range, const std::vector<double>& weights = {}) {
    constexpr const char* where = "diffuse::vlb_loss";
    check_batch(where, "x0", x0);
    check_same_shape(where, "x0", x0, "noise", noise);
    check_same_shape(where, "x0", x0, "x_t", x_t);
    check_timesteps(where, t, x0.dimension(0), schedule.num_timesteps());
    const Index batch = x0.dimension(0);
    detail::check_sample_weights(where, "weights", weights, batch);
    detail::check_model_output(where, model_output, x0, variance);
    const std::vector<double> w = weights.empty() ? std::vector<double>(static_cast<std::size_t>(batch), 1.0) : weights;
    const double steps = schedule.num_timesteps();
    std::vector<double> vb_scale(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) vb_scale[static_cast<std::size_t>(n)] = w[static_cast<std::size_t>(n)] * steps / static_cast<double>(batch);
    VlbTermsGradient<T> vb = vb_terms_gradient(schedule, model_output, x0, x_t, t, prediction, variance, vb_scale, true);

    Tensor4<T> unused(model_output.dimensions());  // the mse's gradient, which L_vlb does not contain
    const std::vector<double> mse = detail::mean_part_mse(model_output, training_target(schedule, prediction, x0, noise, t),
                                                          std::vector<double>(static_cast<std::size_t>(batch), 1.0), unused);
    HybridLoss<T> out;
    out.loss = out.mse = out.vb = 0.0;
    out.per_sample.resize(static_cast<std::size_t>(batch));
    for (std::size_t n = 0; n < out.per_sample.size(); ++n) {
        out.per_sample[n] = steps * vb.bpd[n];
        out.loss += w[n] * out.per_sample[n] / static_cast<double>(batch);
        out.mse += mse[n] / static_cast<double>(batch);
        out.vb += vb.bpd[n] / static_cast<double>(batch);
    }
    if (!std::isfinite(out.loss)) {
        throw numerical_error(std::string(where) + ": the loss is " + std::to_string(out.loss) + " (not finite)");
    }
    out.grad = std::move(vb.grad);
    return out;
}

}  // namespace diffuse
