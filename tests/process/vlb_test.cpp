// The variational bound (Ho et al. 2020, eq. 5; Improved DDPM's calc_bpd_loop) and the hybrid loss:
// each term against the Gaussian formulas in long double, the whole bound with the exact denoiser for
// discretised Gaussian data against that distribution's analytic negative log-likelihood, the learned
// range, and the hybrid loss's gradient against central differences.

#include "../samplers/analytic.hpp"
#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/process/hybrid_loss.hpp>
#include <diffuse/process/vlb.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// KL(N(m1, v1) || N(m2, v2)) in nats.
LD kl(LD m1, LD v1, LD m2, LD v2) { return (std::log(v2 / v1) + v1 / v2 + (m1 - m2) * (m1 - m2) / v2 - 1) / 2; }

// P(bin of x) under N(mean, s^2), 8-bit bins of half-width 1/255, the outer bins reaching to infinity.
LD bin_probability(LD x, LD mean, LD s) {
    const LD lo = x < -0.999L ? -INFINITY : (x - 1 / LD(255) - mean) / s;
    const LD hi = x > 0.999L ? INFINITY : (x + 1 / LD(255) - mean) / s;
    return ref::normal_cdf(hi) - ref::normal_cdf(lo);
}

// x0 on the 8-bit grid drawn from N(mu, s^2) discretised: pixel k = clamp(round((x + 1) 127.5), 0, 255).
diffuse::Tensor4<double> discretised_gaussian_data(std::uint64_t seed, const diffuse::Shape4& shape, double mu, double s) {
    diffuse::Tensor4<double> x = diffuse::Generator(seed).randn<double, 4>(shape);
    for (Index i = 0; i < x.size(); ++i) {
        const double k = std::clamp(std::nearbyint((mu + s * x.data()[i] + 1.0) * 127.5), 0.0, 255.0);
        x.data()[i] = k / 127.5 - 1.0;
    }
    return x;
}

}  // namespace

TEST_CASE("The VLB terms are the Gaussian KL for t > 0, the discretised decoder at t = 0 and the prior KL, in bits per dimension",
          "[process][vlb]") {
    const diffuse::Betas betas = diffuse::cosine_betas(100);
    const ref::Schedule s = ref::schedule_from_betas(ref::to_ld(betas));
    const diffuse::NoiseSchedule<double> schedule(betas);
    const diffuse::Shape4 shape = {3, 2, 3, 4};
    const auto x0 = discretised_gaussian_data(1, shape, 0.0, 0.5);
    diffuse::Generator generator(2);
    const auto x_t = generator.randn<double, 4>(shape);
    const auto output = generator.randn<double, 4>({3, 4, 3, 4});  // [eps, v] for the learned range
    auto v_raw = generator.randn<double, 4>(shape);
    const auto variance = GENERATE(diffuse::ModelVariance::fixed_small, diffuse::ModelVariance::fixed_large,
                                   diffuse::ModelVariance::learned_range);
    const bool learned = variance == diffuse::ModelVariance::learned_range;
    INFO("variance " << diffuse::to_string(variance));
    diffuse::Tensor4<double> model_output = learned ? output : diffuse::channel_slice(output, 0, 2);
    for (Index i = 0; learned && i < model_output.size(); ++i) {
        // v channels squashed into [-1, 1] as a model's would be
        const Index plane = 12, n = i / (4 * plane), ch = (i / plane) % 4;
        if (ch >= 2) model_output.data()[i] = std::tanh(v_raw.data()[(n * 2 + ch - 2) * plane + i % plane]);
    }
    const diffuse::Timesteps t = {0, 1, 77};
    const diffuse::ReverseOptions options{diffuse::Prediction::epsilon, variance, diffuse::Thresholding::none};
    const std::vector<double> terms = diffuse::vb_terms_bpd(schedule, model_output, x0, x_t, t, options);
    const Index D = 24;
    for (Index n = 0; n < 3; ++n) {
        const std::size_t tn = static_cast<std::size_t>(t[static_cast<std::size_t>(n)]);
        const LD ab = s.alphas_cumprod[tn];
        LD nats = 0;
        for (Index c = 0; c < 2; ++c) {
            for (Index i = 0; i < 12; ++i) {
                const LD x = x_t(n, c, i / 4, i % 4), eps = model_output(n, c, i / 4, i % 4), y = x0(n, c, i / 4, i % 4);
                const LD x0_hat = (x - std::sqrt(1 - ab) * eps) / std::sqrt(ab);
                const LD mean = s.posterior_mean_coef1[tn] * x0_hat + s.posterior_mean_coef2[tn] * x;
                // Improved DDPM: small = beta_tilde (beta_tilde_1 at t = 0), large = beta (beta_tilde_1 at
                // t = 0), learned = exp(f log beta + (1 - f) log beta_tilde_clipped), f = (v + 1) / 2
                const LD small = s.posterior_variance[tn > 0 ? tn : 1];
                LD var = small;
                if (variance == diffuse::ModelVariance::fixed_large) var = tn > 0 ? s.betas[tn] : small;
                if (learned) {
                    const LD f = (LD(model_output(n, c + 2, i / 4, i % 4)) + 1) / 2;
                    var = std::exp(f * std::log(s.betas[tn]) + (1 - f) * std::log(small));
                }
                if (tn == 0) {
                    nats -= std::log(bin_probability(y, mean, std::sqrt(var)));
                } else {
                    const LD true_mean = s.posterior_mean_coef1[tn] * y + s.posterior_mean_coef2[tn] * x;
                    nats += kl(true_mean, s.posterior_variance[tn], mean, var);
                }
            }
        }
        const LD want = nats / (D * std::log(LD(2)));
        INFO("t = " << tn);
        CHECK(std::fabs(terms[static_cast<std::size_t>(n)] - want) <= 1e-9L * std::max(LD(1), std::fabs(want)));
    }
    // prior: KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per coordinate, averaged, in bits
    const std::vector<double> prior = diffuse::prior_bpd(schedule, x0);
    for (Index n = 0; n < 3; ++n) {
        LD nats = 0;
        const LD ab = s.alphas_cumprod.back();
        for (Index i = 0; i < D; ++i) nats += kl(std::sqrt(ab) * x0.data()[n * D + i], 1 - ab, 0, 1);
        CHECK(std::fabs(prior[static_cast<std::size_t>(n)] - nats / (D * std::log(LD(2)))) <= 1e-12L);
    }
}

TEST_CASE("With the exact denoiser the VLB of discretised Gaussian data approaches its analytic negative log-likelihood as T grows",
          "[process][vlb][statistical]") {
    // Data: N(0.1, 0.3^2) discretised to 8 bits (the outer bins to infinity), 2048 values. Its entropy
    // H = -sum_k P_k log2 P_k = 7.2970 bits/dim is the analytic NLL. The model is the exact eps-predictor
    // of the continuous N(0.1, 0.3^2), fixed-small variance, cosine schedule. Every reverse step is
    // affine-Gaussian, so the model's own marginal p(x0) is a discretised Gaussian whose NLL on the batch
    // is computed here in long double. Checked: (1) the bound: VLB >= model NLL (per sample, exactly, as
    // Jensen's inequality gives, here on the batch mean); (2) the model NLL is the data's within 0.01
    // bits (its marginal is N(0.1, 0.3^2) up to the schedule's discretisation); (3) the VLB's gap to H
    // shrinks as T grows: measured 1.205 bits at T = 100 and 0.743 at T = 1000 on this batch (on a
    // batch of 4096: 1.127, 0.685, and 0.510 at T = 4000, not run here for time); bounds 1.3 and 0.8. The gap that remains is that of a continuous model's
    // bound on 8-bit data (the decoder and the smallest-t KL terms), which closes only slowly with T.
    const double mu = 0.1, sd = 0.3;
    LD entropy = 0;
    for (int k = 0; k < 256; ++k) {
        const LD p = bin_probability(k / LD(127.5) - 1, mu, sd);
        if (p > 0) entropy -= p * std::log2(p);
    }
    const auto x0 = discretised_gaussian_data(3, {8, 1, 16, 16}, mu, sd);
    double previous_gap = INFINITY;
    for (const auto& [T, bound] : {std::pair{100, 1.3L}, std::pair{1000, 0.8L}}) {
        const diffuse::Betas betas = diffuse::cosine_betas(T);
        const ref::Schedule s = ref::schedule_from_betas(ref::to_ld(betas));
        const diffuse::NoiseSchedule<double> schedule(betas);
        const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), mu, sd);
        const diffuse::VariationalBound vb = diffuse::variational_bound(schedule, model, x0);
        REQUIRE(vb.timesteps.size() == static_cast<std::size_t>(T));
        // x at step 0 ~ N(m, v) by the DDPM recursion (see ddpm_test.cpp), then the decoder's mean is
        // affine in it and its variance beta_tilde_1: y ~ discretised N(a0 m + b0, a0^2 v + beta_tilde_1).
        LD m = 0, v = 1;
        for (int i = T - 1; i >= 1; --i) {
            const auto f = analytic::gaussian_x0_affine(s.alphas_cumprod[i], mu, sd);
            const LD a = s.posterior_mean_coef1[i] * f.A + s.posterior_mean_coef2[i];
            m = a * m + s.posterior_mean_coef1[i] * f.B;
            v = a * a * v + s.posterior_variance[i];
        }
        const auto f0 = analytic::gaussian_x0_affine(s.alphas_cumprod[0], mu, sd);
        const LD a0 = s.posterior_mean_coef1[0] * f0.A + s.posterior_mean_coef2[0];
        const LD decoder_mean = a0 * m + s.posterior_mean_coef1[0] * f0.B;
        const LD decoder_sd = std::sqrt(a0 * a0 * v + s.posterior_variance[1]);
        LD model_nll = 0;
        for (Index i = 0; i < x0.size(); ++i) model_nll -= std::log2(bin_probability(x0.data()[i], decoder_mean, decoder_sd));
        model_nll /= x0.size();
        const LD gap = vb.mean_total_bpd() - entropy;
        INFO("T = " << T << ": VLB " << vb.mean_total_bpd() << " bits/dim, entropy " << double(entropy) << ", model NLL "
                    << double(model_nll));
        CHECK(vb.mean_total_bpd() >= model_nll);
        CHECK(std::fabs(model_nll - entropy) <= 0.01L);
        CHECK(gap <= bound);
        CHECK(gap < previous_gap);
        previous_gap = static_cast<double>(gap);
    }
}

TEST_CASE("A VLB stride evaluates every stride-th step and counts each KL term for the steps it stands for", "[process][vlb]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    const auto x0 = discretised_gaussian_data(4, {2, 1, 4, 4}, 0.0, 0.5);
    diffuse::VlbOptions options;
    options.stride = 30;
    const auto vb = diffuse::variational_bound(schedule, model, x0, {}, options);
    CHECK(vb.timesteps == std::vector<int>{99, 69, 39, 9, 0});
    CHECK(vb.weights == std::vector<double>{30, 30, 30, 9, 1});
    for (std::size_t n = 0; n < 2; ++n) {
        double total = vb.prior_bpd[n];
        for (std::size_t k = 0; k < 5; ++k) total += vb.weights[k] * vb.terms_bpd[k][n];
        CHECK(vb.total_bpd[n] == Approx(total).epsilon(1e-14));
    }
    options.stride = 0;
    REQUIRE_THROWS_WITH(diffuse::variational_bound(schedule, model, x0, {}, options),
                        Catch::Contains("options.stride = 0, expected from 1 to the schedule's 100 timesteps"));
    options.stride = 1;
    options.reverse.variance = diffuse::ModelVariance::learned_range;
    REQUIRE_THROWS_WITH(diffuse::variational_bound(schedule, model, x0, {}, options),
                        Catch::Contains("the model's output shape = [2, 1, 4, 4], expected 2 channels for variance learned_range"));
}

TEST_CASE("A stratified VLB stride draws each sample's step inside the block it stands for and estimates the full bound without bias",
          "[process][vlb][statistical]") {
    // One 4x4 image repeated 2000 times, each copy with its own noise: every copy's total is an
    // unbiased estimate of the image's expected bound, stratified or not, so the two means must agree
    // within 5 standard errors of their difference; the systematic stride (each block's noisiest
    // step, counted for the whole block) must not.
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.4L);
    const auto image = discretised_gaussian_data(5, {1, 1, 4, 4}, 0.0, 0.5);
    const Index copies = 2000;
    diffuse::Tensor4<double> x0(copies, 1, 4, 4);
    for (Index i = 0; i < x0.size(); ++i) x0.data()[i] = image.data()[i % 16];
    diffuse::VlbOptions options;
    options.seed = 7;
    const auto full = diffuse::variational_bound(schedule, model, x0, {}, options).total_bpd;
    options.stride = 10;
    const double systematic = diffuse::variational_bound(schedule, model, x0, {}, options).mean_total_bpd();
    options.stratified = true;
    const auto vb = diffuse::variational_bound(schedule, model, x0, {}, options);
    REQUIRE(vb.timesteps == std::vector<int>{99, 89, 79, 69, 59, 49, 39, 29, 19, 9, 0});
    for (std::size_t k = 0; k < vb.timesteps.size(); ++k) {
        const int top = vb.timesteps[k], width = static_cast<int>(vb.weights[k]);
        std::vector<int> seen(static_cast<std::size_t>(width), 0);
        for (const int t : vb.sample_timesteps[k]) {
            REQUIRE(t <= top);
            REQUIRE(t > top - width);
            ++seen[static_cast<std::size_t>(top - t)];
        }
        for (const int count : seen) CHECK(count > 0);  // every step of the block is drawn
    }
    const auto [full_mean, full_variance] = ref::mean_variance(full.data(), full.size());
    const auto [mean, variance] = ref::mean_variance(vb.total_bpd.data(), vb.total_bpd.size());
    const double standard_error = std::sqrt(static_cast<double>(variance + full_variance) / static_cast<double>(copies));
    INFO("full " << double(full_mean) << ", stratified " << double(mean) << " (standard error of the difference "
                 << standard_error << "), systematic " << systematic);
    CHECK(std::fabs(static_cast<double>(mean - full_mean)) < 5 * standard_error);
    CHECK(std::fabs(systematic - static_cast<double>(full_mean)) > 5 * standard_error);
}

TEST_CASE("The hybrid loss is MSE plus lambda T times the VLB term, with the VLB gradient reaching only the variance channels",
          "[process][vlb]") {
    // Gradient against central differences in double (step 1e-6, error relative to the gradient's norm
    // <= 1e-6), with t = 0 (the decoder term) and t > 0 (KL) in the batch. The VLB term sees the mean as
    // a constant, so the finite difference of the loss in a mean channel is the MSE's gradient plus the
    // VLB's dependence on the mean, which the analytic gradient leaves out by design: the mean channels
    // are checked against the MSE alone.
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(50));
    const diffuse::Shape4 shape = {3, 2, 2, 3};
    const auto x0 = discretised_gaussian_data(5, shape, 0.0, 0.5);
    diffuse::Generator generator(6);
    const auto noise = generator.randn<double, 4>(shape);
    const diffuse::Timesteps t = {0, 10, 49};
    const auto x_t = diffuse::q_sample(schedule, x0, t, noise);
    diffuse::Tensor4<double> output = generator.randn<double, 4>({3, 4, 2, 3});
    for (Index i = 0; i < output.size(); ++i) output.data()[i] = std::tanh(output.data()[i]);
    const auto loss = diffuse::hybrid_loss(schedule, output, x0, noise, x_t, t);
    const double lambda_T = 0.001 * 50;
    CHECK(loss.loss == Approx(loss.mse + lambda_T * loss.vb).epsilon(1e-14));
    // the vb is the mean of vb_terms_bpd with a learned range
    const auto terms = diffuse::vb_terms_bpd(schedule, output, x0, x_t, t,
                                             {diffuse::Prediction::epsilon, diffuse::ModelVariance::learned_range, diffuse::Thresholding::none});
    CHECK(loss.vb == Approx((terms[0] + terms[1] + terms[2]) / 3).epsilon(1e-14));

    const auto loss_at = [&](const diffuse::Tensor4<double>& o, bool vb_only) {
        const auto l = diffuse::hybrid_loss(schedule, o, x0, noise, x_t, t);
        return vb_only ? lambda_T * l.vb : l.mse;
    };
    LD error2 = 0, norm2 = 0;
    for (Index i = 0; i < output.size(); ++i) {
        const bool variance_channel = (i / 6) % 4 >= 2;
        diffuse::Tensor4<double> plus = output, minus = output;
        plus.data()[i] += 1e-6;
        minus.data()[i] -= 1e-6;
        const LD fd = (loss_at(plus, variance_channel) - loss_at(minus, variance_channel)) / 2e-6L;
        error2 += (fd - loss.grad.data()[i]) * (fd - loss.grad.data()[i]);
        norm2 += fd * fd;
    }
    INFO("normwise error " << double(std::sqrt(error2 / norm2)));
    CHECK(std::sqrt(error2 / norm2) <= 1e-6L);

    REQUIRE_THROWS_WITH(diffuse::hybrid_loss(schedule, x0, x0, noise, x_t, t),
                        Catch::Contains("model_output.shape = [3, 2, 2, 3], expected [3, 4, 2, 3]"));
}

namespace {

// Normwise error of an analytic gradient against central differences of f at `output` (step 1e-6).
template <class F>
double normwise_gradient_error(diffuse::Tensor4<double> output, const diffuse::Tensor4<double>& grad, F&& f) {
    LD error2 = 0, norm2 = 0;
    for (Index i = 0; i < output.size(); ++i) {
        const double keep = output.data()[i];
        output.data()[i] = keep + 1e-6;
        const LD plus = f(output);
        output.data()[i] = keep - 1e-6;
        const LD minus = f(output);
        output.data()[i] = keep;
        const LD fd = (plus - minus) / 2e-6L;
        error2 += (fd - grad.data()[i]) * (fd - grad.data()[i]);
        norm2 += fd * fd;
    }
    return static_cast<double>(std::sqrt(error2 / norm2));
}

}  // namespace

TEST_CASE("L_vlb alone is T times the bound's term, and its gradient reaches the mean and a learned variance", "[process][vlb]") {
    // every prediction kind, learned and fixed variances, t = 0 (the decoder) and t > 0 (KL) in one
    // batch, importance weights on the samples: against central differences in double
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(50));
    const diffuse::Shape4 shape = {3, 2, 2, 3};
    auto x0 = discretised_gaussian_data(7, shape, 0.0, 0.5);
    x0.data()[0] = 1.0;   // sample 0 (t = 0) has a value in each outer bin, which reaches to infinity
    x0.data()[1] = -1.0;
    diffuse::Generator generator(8);
    const auto noise = generator.randn<double, 4>(shape);
    const diffuse::Timesteps t = {0, 10, 49};
    const auto x_t = diffuse::q_sample(schedule, x0, t, noise);
    const std::vector<double> weights = {0.5, 2.0, 1.25};
    for (const auto prediction : {diffuse::Prediction::epsilon, diffuse::Prediction::x0, diffuse::Prediction::v}) {
        for (const auto variance : {diffuse::ModelVariance::learned_range, diffuse::ModelVariance::fixed_small,
                                    diffuse::ModelVariance::fixed_large}) {
            const Index out_c = diffuse::model_output_channels(2, variance);
            diffuse::Tensor4<double> output = generator.randn<double, 4>({3, out_c, 2, 3});
            for (Index i = 0; i < output.size(); ++i) output.data()[i] = 0.3 * std::tanh(output.data()[i]);
            if (prediction == diffuse::Prediction::x0) {  // near the data, so that the decoder term is moderate
                for (Index n = 0; n < 3; ++n)
                    for (Index i = 0; i < 12; ++i) output.data()[n * out_c * 6 + i] += x0.data()[n * 12 + i];
            }
            INFO("prediction " << diffuse::to_string(prediction) << ", variance " << diffuse::to_string(variance));
            const auto loss = diffuse::vlb_loss(schedule, output, x0, noise, x_t, t, prediction, variance, weights);
            const auto terms = diffuse::vb_terms_bpd(schedule, output, x0, x_t, t, {prediction, variance, diffuse::Thresholding::none});
            double expected = 0.0;
            for (std::size_t n = 0; n < 3; ++n) {
                CHECK(loss.per_sample[n] == Approx(50 * terms[n]).epsilon(1e-14));
                expected += weights[n] * 50 * terms[n] / 3;
            }
            CHECK(loss.loss == Approx(expected).epsilon(1e-14));
            const double error = normwise_gradient_error(output, loss.grad, [&](const diffuse::Tensor4<double>& o) {
                return diffuse::vlb_loss(schedule, o, x0, noise, x_t, t, prediction, variance, weights).loss;
            });
            INFO("normwise error " << error);
            CHECK(error <= 1e-6);
        }
    }
}

TEST_CASE("The hybrid loss weights each sample's whole loss by its importance weight and its MSE by min-SNR", "[process][vlb]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(40));
    const diffuse::Shape4 shape = {2, 1, 3, 3};
    const auto x0 = discretised_gaussian_data(9, shape, 0.1, 0.4);
    diffuse::Generator generator(10);
    const auto noise = generator.randn<double, 4>(shape);
    const diffuse::Timesteps t = {3, 0};
    const auto x_t = diffuse::q_sample(schedule, x0, t, noise);
    diffuse::Tensor4<double> output = generator.randn<double, 4>({2, 2, 3, 3});
    for (Index i = 0; i < output.size(); ++i) output.data()[i] = std::tanh(output.data()[i]);
    const std::vector<double> w = {0.25, 3.0}, snr = {2.0, 0.5};
    const auto plain = diffuse::hybrid_loss(schedule, output, x0, noise, x_t, t);
    const auto weighted = diffuse::hybrid_loss(schedule, output, x0, noise, x_t, t, diffuse::Prediction::epsilon, 0.001, w, snr);
    // loss_n = snr_n mse_n + lambda T vb_n, from the unweighted parts
    const auto terms = diffuse::vb_terms_bpd(schedule, output, x0, x_t, t,
                                             {diffuse::Prediction::epsilon, diffuse::ModelVariance::learned_range, diffuse::Thresholding::none});
    double expected = 0.0;
    for (std::size_t n = 0; n < 2; ++n) {
        double mse = 0.0;
        for (Index i = 0; i < 9; ++i) {
            const double d = output.data()[static_cast<Index>(n) * 18 + i] - noise.data()[static_cast<Index>(n) * 9 + i];
            mse += d * d / 9;
        }
        CHECK(weighted.per_sample[n] == Approx(snr[n] * mse + 0.001 * 40 * terms[n]).epsilon(1e-13));
        expected += w[n] * weighted.per_sample[n] / 2;
    }
    CHECK(weighted.loss == Approx(expected).epsilon(1e-13));
    CHECK(weighted.mse == Approx(plain.mse).epsilon(1e-14));  // the reported parts are unweighted
    CHECK(weighted.vb == Approx(plain.vb).epsilon(1e-14));
    // the variance channels' gradient scales by w_n, the mean channels' by w_n snr_n
    for (Index n = 0; n < 2; ++n) {
        for (Index i = 0; i < 9; ++i) {
            const Index mean = n * 18 + i, var = n * 18 + 9 + i;
            CHECK(weighted.grad.data()[mean] == Approx(w[static_cast<std::size_t>(n)] * snr[static_cast<std::size_t>(n)] * plain.grad.data()[mean]).epsilon(1e-12));
            CHECK(weighted.grad.data()[var] == Approx(w[static_cast<std::size_t>(n)] * plain.grad.data()[var]).epsilon(1e-12));
        }
    }
    REQUIRE_THROWS_WITH(diffuse::hybrid_loss(schedule, output, x0, noise, x_t, t, diffuse::Prediction::epsilon, -0.1),
                        Catch::Contains("lambda = -0.1"));
    REQUIRE_THROWS_WITH(diffuse::hybrid_loss(schedule, output, x0, noise, x_t, t, diffuse::Prediction::epsilon, 0.001, {1.0}),
                        Catch::Contains("weights.size() = 1"));
    REQUIRE_THROWS_WITH(diffuse::vlb_loss(schedule, output, x0, noise, x_t, t, diffuse::Prediction::epsilon,
                                          diffuse::ModelVariance::fixed_small),
                        Catch::Contains("model_output.shape = [2, 2, 3, 3], expected [2, 1, 3, 3]"));
}

TEST_CASE("The decoder term with Improved DDPM's tanh CDF is its formula, within 1e-3 of the exact one", "[process][vlb]") {
    // 0.5 (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))), masses clamped at 1e-12, in long double
    const auto cdf = [](LD z) { return (1 + std::tanh(std::sqrt(2 / ref::pi()) * (z + LD(0.044715) * z * z * z))) / 2; };
    for (const double x : {-1.0, -0.5 + 1.0 / 255, 0.0 + 1.0 / 255, 1.0}) {
        for (const double mean : {-0.8, 0.0, 0.3}) {
            for (const double log_scale : {-4.0, -2.0, 0.0}) {
                const LD s = std::exp(LD(log_scale));
                const LD plus = cdf((x - mean + 1 / LD(255)) / s), minus = cdf((x - mean - 1 / LD(255)) / s);
                const LD mass = x < -0.999 ? plus : x > 0.999 ? 1 - minus : plus - minus;
                const LD expected = std::log(std::max(mass, LD(1e-12)));
                INFO("x " << x << ", mean " << mean << ", log_scale " << log_scale);
                // the mass is a difference of CDF values near 0 or 1, each good to ~1e-16 in double: its
                // log is good to ~1e-16 / mass
                const double got = diffuse::discretized_gaussian_log_likelihood_tanh(x, mean, log_scale);
                if (mass < LD(1e-13)) {
                    CHECK(got == std::log(1e-12));  // clamped
                } else {
                    const LD tolerance = 1e-12L + 4e-16L / std::max(mass, LD(1e-12));
                    CHECK(std::fabs(got - expected) <= tolerance);
                }
            }
        }
    }
    // where the mass is not tiny the approximation is close to the exact log-likelihood
    CHECK(diffuse::discretized_gaussian_log_likelihood_tanh(0.1, 0.12, -3.0) ==
          Approx(diffuse::discretized_gaussian_log_likelihood(0.1, 0.12, -3.0)).epsilon(1e-3));
}
