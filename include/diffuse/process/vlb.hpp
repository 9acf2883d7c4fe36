#pragma once
// The variational bound (Ho et al. 2020, eq. 5; Improved DDPM, section 3 and its calc_bpd_loop):
//   L = KL(q(x_T | x_0) || N(0, I))                                     the prior term
//     + sum_{t>0} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))         one term per t
//     - log p(x_0 | x_1)                                                the discretised decoder, at t = 0
// in bits per dimension, p being the model's reverse step (process/reverse.hpp).

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/forward.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/process/reverse.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

/// The bound's term of each sample at its own step t[n], in bits per dimension, [N]: for t > 0,
/// KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 0 the decoder's -log p(x_0 | x_1), x_0 being
/// 8-bit data scaled to [-1, 1]. model_output: as p_mean_variance; x0, x_t: [N, C, H, W].
template <class T>
std::vector<double> vb_terms_bpd(const NoiseSchedule<T>& schedule, const Tensor4<T>& model_output,
                                 const Tensor4<T>& x0, const Tensor4<T>& x_t, const Timesteps& t,
                                 const ReverseOptions& options, NormalCdf decoder_cdf = NormalCdf::exact) {
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
                nats -= decoder_cdf == NormalCdf::exact ? discretized_gaussian_log_likelihood(x, mean, 0.5 * log_var)
                                                        : discretized_gaussian_log_likelihood_tanh(x, mean, 0.5 * log_var);
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
    ReverseOptions reverse = {};  // the model's prediction kind and variance; Thresholding::clip as calc_bpd_loop's clip_denoised
    int stride = 1;               // 1: every t. s > 1: t = T-1, T-1-s, ... and t = 0, each KL term counted min(s, t) times
    // With a stride: each sample evaluates, in place of the KL term at t_k, the one at a step drawn
    // uniformly from the block t_k - w_k + 1 .. t_k that term stands for. The sum over t is then
    // estimated without bias (a stratified sample), where the fixed t_k would favour the block's
    // noisiest step; the KL terms change by orders of magnitude inside the blocks near t = 0.
    bool stratified = false;
    std::uint64_t seed = 0;       // the noise that makes x_t at step t is stream t of this seed
    NormalCdf decoder_cdf = NormalCdf::exact;  // tanh_approximation: Improved DDPM's code, to reproduce its numbers
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
        vb.terms_bpd.push_back(vb_terms_bpd(schedule, output, x0, x_t, steps, options.reverse, options.decoder_cdf));
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

}  // namespace diffuse
