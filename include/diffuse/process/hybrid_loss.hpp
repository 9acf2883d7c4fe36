#pragma once
// Improved DDPM's hybrid loss L_simple + lambda L_vlb (section 3.1) for a model with a learned-range
// variance, with its gradient with respect to the model's output.

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
    const ReverseOptions reverse{prediction, ModelVariance::learned_range, Thresholding::none};
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
