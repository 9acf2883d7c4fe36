// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): one step against the formula in long double,
// the full loop against Gaussian and two-Gaussian data with the exact denoiser, seeds, progress and
// intermediates, and bad input.

#include "../support/reference.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/ddpm.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// A model that returns a fixed array whatever it is given, and records the timesteps it was told.
template <class T>
diffuse::ModelFn<T> fixed_model(const diffuse::Tensor4<T>& output, std::vector<int>* told) {
    return [output, told](const diffuse::Tensor4<T>&, const diffuse::Timesteps& t, const std::vector<int>&) {
        if (told) *told = t;
        return output;
    };
}

// The mean and variance of DDPM's output for N(mu, s^2) data and the exact denoiser, by the recursion
// x_{t-1} = (c1 A_t + c2) x_t + c1 B_t + sigma_t z, x_T ~ N(0, 1) (every step is affine, see analytic.hpp).
std::pair<LD, LD> ddpm_exact_moments(const ref::Schedule& s, LD mu, LD sd, bool large) {
    LD m = 0, v = 1;
    const std::size_t n = s.betas.size();
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = n - 1 - k;
        const analytic::Affine f = analytic::gaussian_x0_affine(s.alphas_cumprod[i], mu, sd);
        const LD a = s.posterior_mean_coef1[i] * f.A + s.posterior_mean_coef2[i];
        m = a * m + s.posterior_mean_coef1[i] * f.B;
        const LD var = i == 0 ? 0 : large ? s.betas[i] : s.posterior_variance[i];
        v = a * a * v + var;
    }
    return {m, v};
}

}  // namespace

TEMPLATE_TEST_CASE("One DDPM step is the posterior mean at the predicted x0 plus sigma times the noise",
                   "[samplers][ddpm]", float, double) {
    using T = TestType;
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const ref::Schedule s = ref::schedule_from_betas(ref::to_ld(betas));
    const diffuse::NoiseSchedule<T> schedule(betas);
    diffuse::Generator generator(11);
    const auto x_t = generator.randn<T, 4>({2, 3, 4, 5});
    const auto output = generator.randn<T, 4>({2, 3, 4, 5});
    const auto noise = generator.randn<T, 4>({2, 3, 4, 5});

    const auto prediction = GENERATE(diffuse::Prediction::epsilon, diffuse::Prediction::x0, diffuse::Prediction::v);
    const auto variance = GENERATE(diffuse::ModelVariance::fixed_small, diffuse::ModelVariance::fixed_large);
    const bool clip = GENERATE(false, true);
    const int i = GENERATE(0, 1, 500, 999);
    INFO("prediction " << diffuse::to_string(prediction) << ", variance " << diffuse::to_string(variance)
                       << ", clip " << clip << ", step " << i);
    diffuse::DDPMOptions<T> options;
    options.prediction = prediction;
    options.variance = variance;
    options.thresholding = clip ? diffuse::Thresholding::clip : diffuse::Thresholding::none;
    std::vector<int> told;
    const auto step = diffuse::ddpm_step(schedule, fixed_model(output, &told), x_t, i, noise, options);
    CHECK(told == std::vector<int>(2, i));

    const std::size_t t = static_cast<std::size_t>(i);
    const LD ab = s.alphas_cumprod[t], c1 = s.posterior_mean_coef1[t], c2 = s.posterior_mean_coef2[t];
    // Ho et al. eq. 15 and its x0 / v forms; sigma^2 = beta_tilde_t or beta_t (beta_tilde_1 at t = 0),
    // and no noise at t = 0.
    const LD var = variance == diffuse::ModelVariance::fixed_small ? s.posterior_variance[t]
                   : i > 0                                          ? s.betas[t]
                                                                    : s.posterior_variance[1];
    const LD sigma = i > 0 ? std::sqrt(var) : 0;
    LD worst = 0, worst_x0 = 0;
    for (Index k = 0; k < x_t.size(); ++k) {
        const LD x = x_t.data()[k], o = output.data()[k], z = noise.data()[k];
        LD x0 = 0, x0_scale = 0;  // x0 and the sum of its terms' magnitudes
        switch (prediction) {
            case diffuse::Prediction::epsilon:
                x0 = (x - std::sqrt(1 - ab) * o) / std::sqrt(ab);
                x0_scale = (std::fabs(x) + std::sqrt(1 - ab) * std::fabs(o)) / std::sqrt(ab);
                break;
            case diffuse::Prediction::x0: x0 = o, x0_scale = std::fabs(o); break;
            case diffuse::Prediction::v:
                x0 = std::sqrt(ab) * x - std::sqrt(1 - ab) * o;
                x0_scale = std::sqrt(ab) * std::fabs(x) + std::sqrt(1 - ab) * std::fabs(o);
                break;
        }
        if (clip) x0 = std::min(LD(1), std::max(LD(-1), x0));
        const LD want = c1 * x0 + c2 * x + sigma * z;
        // Each term is a product of a few values rounded to T: error <= 8 u (plus the double tables'
        // 1e-12) times the sum of the terms' magnitudes.
        const LD scale = c1 * x0_scale + c2 * std::fabs(x) + sigma * std::fabs(z);
        worst = std::max(worst, std::fabs(step.x.data()[k] - want) / scale);
        worst_x0 = std::max(worst_x0, std::fabs(step.pred_x0.data()[k] - x0) / std::max(x0_scale, LD(1e-30)));
    }
    CHECK(worst <= 8 * u + 1e-12L);
    CHECK(worst_x0 <= 4 * u + 1e-12L);
}

TEST_CASE("DDPM with T steps and the exact denoiser reproduces the mean and variance of Gaussian data",
          "[samplers][ddpm][statistical]") {
    // x0 ~ N(0.3, 0.5^2), T = 1000 linear steps, 8192 draws in float. Every step is affine for Gaussian
    // data, so the sampler's output is exactly Gaussian with moments from ddpm_exact_moments:
    // (1) the draws match those moments within 5 standard errors, which tests the implementation;
    // (2) those moments match the data's, which tests the algorithm, within its discretisation error
    //     at T = 1000: the reverse variance beta_tilde (or beta) is not the true reverse variance
    //     beta_tilde + coef1^2 Var(x0 | x_t). Measured: fixed small gives a variance 1.55% low, fixed
    //     large 0.30% high, and the mean within 3e-6; bounds: 1e-4 for the mean and 2% for the variance.
    const LD mu = 0.3L, sd = 0.5L;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const ref::Schedule s = ref::schedule_from_betas(ref::to_ld(betas));
    const diffuse::NoiseSchedule<float> schedule(betas);
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), mu, sd);
    const bool large = GENERATE(false, true);
    INFO((large ? "fixed large" : "fixed small") << " variance");
    diffuse::DDPMOptions<float> options;
    options.seed = 5;
    options.variance = large ? diffuse::ModelVariance::fixed_large : diffuse::ModelVariance::fixed_small;
    const auto samples = diffuse::ddpm_sample(schedule, model, {32, 1, 16, 16}, options);
    const auto [m, v] = analytic::mean_variance(samples.x.data(), samples.x.size());
    const auto [want_m, want_v] = ddpm_exact_moments(s, mu, sd, large);
    CHECK_MOMENTS_5SE(m, v, want_m, want_v, LD(samples.x.size()));
    INFO("exact sampler moments " << double(want_m) << ", " << double(want_v));
    CHECK(std::fabs(want_m - mu) <= 1e-4L);
    CHECK(std::fabs(want_v / (sd * sd) - 1) <= 0.02L);
}

TEST_CASE("DDPM with the exact denoiser of a two-Gaussian mixture reproduces both modes in their proportions",
          "[samplers][ddpm][statistical]") {
    // x0 ~ 0.3 N(-0.5, 0.15^2) + 0.7 N(0.5, 0.15^2), cosine schedule with T = 100, 8192 draws. The modes
    // are 6.7 standard deviations apart, so the sign of a draw says its mode (a draw lands on the wrong
    // side with probability Phi(-3.33) = 4e-4). Bounds: the fraction of positive draws within 5 standard
    // errors of 0.7 (binomial, 0.025); each mode's mean within 5 standard errors plus 0.01 of
    // discretisation bias, and its standard deviation within 10% of 0.15 (fixed-small variance under-
    // disperses at finite T, as in the Gaussian test).
    const std::vector<analytic::Component> mixture = {{0.3L, -0.5L, 0.15L}, {0.7L, 0.5L, 0.15L}};
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(100));
    const auto model = analytic::eps_model<double>(schedule.alphas_cumprod_double(), mixture);
    diffuse::DDPMOptions<double> options;
    options.seed = 17;
    const auto samples = diffuse::ddpm_sample(schedule, model, {32, 1, 16, 16}, options);
    std::vector<double> negative, positive;
    for (Index k = 0; k < samples.x.size(); ++k) (samples.x.data()[k] > 0 ? positive : negative).push_back(samples.x.data()[k]);
    const LD n = LD(samples.x.size());
    const LD fraction = positive.size() / n;
    INFO("fraction of positive draws " << double(fraction));
    CHECK(std::fabs(fraction - 0.7L) <= 5 * std::sqrt(0.7L * 0.3L / n));
    for (const auto& [draws, component] : {std::pair{negative, mixture[0]}, std::pair{positive, mixture[1]}}) {
        const auto [m, v] = analytic::mean_variance(draws.data(), Index(draws.size()));
        INFO("mode at " << double(component.mean) << ": mean " << double(m) << ", standard deviation " << double(std::sqrt(v)));
        CHECK(std::fabs(m - component.mean) <= 5 * component.stddev / std::sqrt(LD(draws.size())) + 0.01L);
        CHECK(std::fabs(std::sqrt(v) / component.stddev - 1) <= 0.1L);
    }
}

TEST_CASE("DDPM sampling gives the same bits for a seed whatever the thread count, and other bits for another seed",
          "[samplers][ddpm]") {
    test_support::ThreadCountGuard guard;
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(50));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.1L, 0.4L);
    diffuse::DDPMOptions<float> options;
    options.seed = 99;
    diffuse::set_num_threads(1);
    const auto one = diffuse::ddpm_sample(schedule, model, {64, 2, 8, 8}, options);
    diffuse::set_num_threads(2);
    const auto two = diffuse::ddpm_sample(schedule, model, {64, 2, 8, 8}, options);
    diffuse::set_num_threads(3);
    const auto three = diffuse::ddpm_sample(schedule, model, {64, 2, 8, 8}, options);
    const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(one.x.size());
    CHECK(std::memcmp(one.x.data(), two.x.data(), bytes) == 0);
    CHECK(std::memcmp(one.x.data(), three.x.data(), bytes) == 0);
    options.seed = 100;
    const auto other = diffuse::ddpm_sample(schedule, model, {64, 2, 8, 8}, options);
    CHECK(std::memcmp(one.x.data(), other.x.data(), bytes) != 0);
}

TEST_CASE("DDPM on a respaced schedule tells the model the original timesteps and reports every step",
          "[samplers][ddpm]") {
    const diffuse::NoiseSchedule<double> base(diffuse::linear_betas(1000));
    const auto schedule = diffuse::respace(base, diffuse::space_timesteps(1000, "25"));
    const auto exact = analytic::gaussian_eps_model<double>(base.alphas_cumprod_double(), 0.0L, 0.5L);
    std::vector<int> told;
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                               const std::vector<int>& labels) {
        told.push_back(t.front());
        return exact(x, t, labels);
    };
    std::vector<int> steps, reported_t;
    diffuse::DDPMOptions<double> options;
    options.keep_intermediates = true;
    options.progress = [&](int step, int t, const diffuse::Tensor4<double>& x0_pred) {
        steps.push_back(step);
        reported_t.push_back(t);
        CHECK(x0_pred.dimensions() == diffuse::Shape4{3, 1, 2, 2});
    };
    const auto samples = diffuse::ddpm_sample(schedule, model, {3, 1, 2, 2}, options);
    std::vector<int> want_t(schedule.timestep_map().rbegin(), schedule.timestep_map().rend());
    CHECK(told == want_t);
    CHECK(reported_t == want_t);
    REQUIRE(steps.size() == 25);
    for (int k = 0; k < 25; ++k) CHECK(steps[static_cast<std::size_t>(k)] == k);
    REQUIRE(samples.intermediates.size() == 26);
    REQUIRE(samples.predicted_x0.size() == 25);
    const std::size_t bytes = sizeof(double) * static_cast<std::size_t>(samples.x.size());
    CHECK(std::memcmp(samples.intermediates.back().data(), samples.x.data(), bytes) == 0);
    // the first intermediate is the starting noise: stream 0 of the seed
    const auto x_T = diffuse::Generator(diffuse::derive_seed(0, 0)).randn<double, 4>({3, 1, 2, 2});
    CHECK(std::memcmp(samples.intermediates.front().data(), x_T.data(), bytes) == 0);
}

TEST_CASE("DDPM rejects a model output of the wrong shape, non-finite values, and bad options with clear messages",
          "[samplers][ddpm][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(20));
    const diffuse::ModelFn<double> wrong_shape = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                                    const std::vector<int>&) {
        diffuse::Tensor4<double> out(x.dimension(0), x.dimension(1) + 2, x.dimension(2), x.dimension(3));
        return out.setZero();
    };
    REQUIRE_THROWS_AS(diffuse::ddpm_sample(schedule, wrong_shape, {2, 1, 4, 4}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::ddpm_sample(schedule, wrong_shape, {2, 1, 4, 4}),
                        Contains("diffuse::ddpm_step: the model's output shape = [2, 3, 4, 4], expected [2, 1, 4, 4]"));

    // NaN appears at t = 7, in the middle of the loop
    const diffuse::ModelFn<double> goes_nan = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                                 const std::vector<int>&) {
        diffuse::Tensor4<double> out = x * 0.1;
        if (t.front() == 7) out(1, 0, 2, 3) = std::numeric_limits<double>::quiet_NaN();
        return out;
    };
    REQUIRE_THROWS_AS(diffuse::ddpm_sample(schedule, goes_nan, {2, 1, 4, 4}), diffuse::numerical_error);
    REQUIRE_THROWS_WITH(diffuse::ddpm_sample(schedule, goes_nan, {2, 1, 4, 4}),
                        Contains("the model's output at t = 7 holds a non-finite value"));

    const diffuse::ModelFn<double> fine = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                             const std::vector<int>&) { return diffuse::Tensor4<double>(x * 0.1); };
    diffuse::DDPMOptions<double> options;
    options.conditioning.labels = {1, 2, 3};
    REQUIRE_THROWS_WITH(diffuse::ddpm_sample(schedule, fine, {2, 1, 4, 4}, options),
                        Contains("labels.size() = 3, expected one label per sample, 2"));
    REQUIRE_THROWS_WITH(diffuse::ddpm_sample(schedule, fine, {2, 0, 4, 4}),
                        Contains("shape = [2, 0, 4, 4], expected [N, C, H, W], every dimension >= 1"));
    const auto x = diffuse::Generator(1).randn<double, 4>({2, 1, 4, 4});
    REQUIRE_THROWS_WITH(diffuse::ddpm_step(schedule, fine, x, 20, x), Contains("i = 20, expected a step in [0, 20)"));
    options.conditioning.labels = {};
    options.thresholding = diffuse::Thresholding::dynamic;
    options.dynamic_percentile = 1.5;
    REQUIRE_THROWS_WITH(diffuse::ddpm_sample(schedule, fine, {2, 1, 4, 4}, options),
                        Contains("percentile = 1.5, expected a fraction in (0, 1]"));
}

TEST_CASE("A DDPM step with a learned-range variance draws with sigma^2 = exp(f log beta + (1 - f) log beta_tilde), f = (v + 1) / 2",
          "[samplers][ddpm]") {
    // Improved DDPM, eq. 15: the model's output [N, 2C, H, W] is [eps, v]; the mean is the posterior mean
    // at the x0 predicted from eps, the variance interpolates log beta_t and log beta_tilde_t (clipped at
    // t = 0 to beta_tilde_1). In long double, per element, v in [-1, 1] and beyond.
    const diffuse::Betas betas = diffuse::cosine_betas(1000);
    const diffuse::NoiseSchedule<double> schedule(betas);
    const ref::Schedule s = ref::schedule_from_betas(ref::to_ld(betas));
    diffuse::Generator generator(21);
    const auto x_t = generator.randn<double, 4>({2, 2, 3, 3});
    diffuse::Tensor4<double> output = generator.randn<double, 4>({2, 4, 3, 3});  // [eps, v]
    const auto noise = generator.randn<double, 4>({2, 2, 3, 3});
    for (const int i : {1, 2, 500, 999}) {
        INFO("step " << i);
        diffuse::DDPMOptions<double> options;
        options.variance = diffuse::ModelVariance::learned_range;
        const auto step = diffuse::ddpm_step(schedule, fixed_model(output, nullptr), x_t, i, noise, options);
        const std::size_t t = static_cast<std::size_t>(i);
        const LD ab = s.alphas_cumprod[t];
        const LD log_small = std::log(t > 0 ? s.posterior_variance[t] : s.posterior_variance[1]);
        const LD log_large = std::log(s.betas[t]);
        LD worst = 0;
        for (Index n = 0; n < 2; ++n) {
            for (Index k = 0; k < 18; ++k) {
                const LD x = x_t.data()[n * 18 + k], z = noise.data()[n * 18 + k];
                const LD eps = output.data()[n * 36 + k], v = output.data()[n * 36 + 18 + k];
                const LD x0 = (x - std::sqrt(1 - ab) * eps) / std::sqrt(ab);
                const LD f = (v + 1) / 2;
                const LD sigma = std::exp((f * log_large + (1 - f) * log_small) / 2);
                const LD want = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * x + sigma * z;
                worst = std::max(worst, std::fabs(step.x.data()[n * 18 + k] - want) / (1 + std::fabs(want)));
            }
        }
        CHECK(worst <= 1e-11L);
    }
    // the last step returns the mean: no noise at t = 0
    diffuse::DDPMOptions<double> options;
    options.variance = diffuse::ModelVariance::learned_range;
    const auto last = diffuse::ddpm_step(schedule, fixed_model(output, nullptr), x_t, 0, noise, options);
    CHECK(last.x.dimensions() == diffuse::Shape4{2, 2, 3, 3});
    const auto zero = diffuse::ddpm_step(schedule, fixed_model(output, nullptr), x_t, 0, diffuse::Tensor4<double>(noise.constant(0.0)), options);
    for (Index k = 0; k < last.x.size(); ++k) CHECK(last.x.data()[k] == zero.x.data()[k]);
    // a C-channel output for a learned variance, or 2C for a fixed one: refused
    REQUIRE_THROWS_WITH(diffuse::ddpm_step(schedule, fixed_model(x_t, nullptr), x_t, 5, noise, options),
                        Catch::Contains("[2, 4, 3, 3]"));
    options.variance = diffuse::ModelVariance::fixed_small;
    REQUIRE_THROWS_WITH(diffuse::ddpm_step(schedule, fixed_model(output, nullptr), x_t, 5, noise, options),
                        Catch::Contains("[2, 2, 3, 3]"));
}
