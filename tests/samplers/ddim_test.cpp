// DDIM (Song et al. 2021, eq. 12) over respaced timesteps: one step against the formula in long double,
// eta = 1 against DDPM's step, few-step sampling of Gaussian and two-Gaussian data with the exact
// denoiser, inversion followed by sampling, and bad input.

#include "../support/reference.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/ddim.hpp>
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

template <class T>
diffuse::ModelFn<T> fixed_model(const diffuse::Tensor4<T>& output) {
    return [output](const diffuse::Tensor4<T>&, const diffuse::Timesteps&, const std::vector<int>&) { return output; };
}

// DDIM's output for N(mu, s^2) data and the exact denoiser is affine in x_T plus independent noise:
// each step maps x to a x + b + sigma z. Returns (mean, variance) for x_T ~ N(0, 1).
std::pair<LD, LD> ddim_exact_moments(const std::vector<LD>& ab, LD eta, LD mu, LD sd) {
    LD m = 0, v = 1;
    for (std::size_t k = 0; k < ab.size(); ++k) {
        const std::size_t i = ab.size() - 1 - k;
        const LD a_t = ab[i], a_p = i > 0 ? ab[i - 1] : 1;
        const LD sigma = eta * std::sqrt((1 - a_p) / (1 - a_t)) * std::sqrt(1 - a_t / a_p);
        const LD dir = std::sqrt(1 - a_p - sigma * sigma);
        const analytic::Affine f = analytic::gaussian_x0_affine(a_t, mu, sd);
        // eps_hat = (x - sqrt(a_t) x0_hat) / sqrt(1 - a_t)
        const LD a = std::sqrt(a_p) * f.A + dir * (1 - std::sqrt(a_t) * f.A) / std::sqrt(1 - a_t);
        const LD b = std::sqrt(a_p) * f.B - dir * std::sqrt(a_t) * f.B / std::sqrt(1 - a_t);
        m = a * m + b;
        v = a * a * v + sigma * sigma;
    }
    return {m, v};
}

}  // namespace

TEMPLATE_TEST_CASE("One DDIM step is sqrt(alphabar_prev) x0 plus the direction to x_t plus sigma_eta times the noise",
                   "[samplers][ddim]", float, double) {
    using T = TestType;
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const std::vector<int> kept = diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::leading);
    const std::vector<LD> ab = analytic::kept_alphabar(betas, kept);
    const auto schedule = diffuse::respace(diffuse::NoiseSchedule<T>(betas), kept);
    diffuse::Generator generator(21);
    const auto x_t = generator.randn<T, 4>({2, 3, 4, 5});
    auto output = generator.randn<T, 4>({2, 3, 4, 5});
    output = output * T(2);  // so that clipping x0 = output matters
    const auto noise = generator.randn<T, 4>({2, 3, 4, 5});

    const double eta = GENERATE(0.0, 0.5, 1.0);
    const int i = GENERATE(0, 3, 9);
    const auto prediction = GENERATE(diffuse::Prediction::epsilon, diffuse::Prediction::x0);
    const bool clip = GENERATE(false, true);
    const bool rederive = GENERATE(true, false);
    INFO("eta " << eta << ", step " << i << ", prediction " << diffuse::to_string(prediction) << ", clip " << clip
                << ", eps from the clipped x0 " << rederive);
    diffuse::DDIMOptions<T> options;
    options.eta = eta;
    options.prediction = prediction;
    options.thresholding = clip ? diffuse::Thresholding::clip : diffuse::Thresholding::none;
    options.eps_from_thresholded_x0 = rederive;
    const auto step = diffuse::ddim_step(schedule, fixed_model(output), x_t, i, noise, options);

    const std::size_t s = static_cast<std::size_t>(i);
    const LD a_t = ab[s], a_p = i > 0 ? ab[s - 1] : 1;
    const LD sigma = eta * std::sqrt((1 - a_p) / (1 - a_t)) * std::sqrt(1 - a_t / a_p);
    const LD dir = std::sqrt(1 - a_p - sigma * sigma);
    LD worst = 0;
    for (Index k = 0; k < x_t.size(); ++k) {
        const LD x = x_t.data()[k], o = output.data()[k], z = noise.data()[k];
        LD x0 = prediction == diffuse::Prediction::x0 ? o : (x - std::sqrt(1 - a_t) * o) / std::sqrt(a_t);
        LD eps = prediction == diffuse::Prediction::x0 ? (x - std::sqrt(a_t) * o) / std::sqrt(1 - a_t) : o;
        if (clip) {
            x0 = std::min(LD(1), std::max(LD(-1), x0));
            if (rederive) eps = (x - std::sqrt(a_t) * x0) / std::sqrt(1 - a_t);
        }
        const LD want = std::sqrt(a_p) * x0 + dir * eps + sigma * z;
        // Products of values rounded to T, the x0 and eps conversions amplifying x_t and the output by
        // up to 1 / sqrt(alphabar) and 1 / sqrt(1 - alphabar): error <= 16 u times the terms' magnitude.
        const LD scale = std::sqrt(a_p) * (std::fabs(x) + std::fabs(o)) / std::sqrt(a_t) +
                         dir * (std::fabs(x) + std::fabs(o)) / std::sqrt(1 - a_t) + sigma * std::fabs(z);
        worst = std::max(worst, std::fabs(step.x.data()[k] - want) / scale);
    }
    CHECK(worst <= 16 * u + 1e-12L);
}

TEST_CASE("DDIM with eta 1 is the DDPM step on the respaced schedule, with x0 clipped too, when eps is re-derived",
          "[samplers][ddim]") {
    // With eta = 1, sigma^2 = beta_tilde of the respaced schedule and sqrt(alphabar_prev) x0 +
    // sqrt(1 - alphabar_prev - sigma^2) eps_hat is the posterior mean mu_tilde(x0, x_t) exactly when
    // x_t = sqrt(alphabar) x0 + sqrt(1 - alphabar) eps_hat, which re-deriving eps from the clipped x0
    // keeps. With the model's raw eps instead, the two differ wherever clipping changed x0.
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const auto schedule = diffuse::respace(diffuse::NoiseSchedule<double>(betas), diffuse::space_timesteps(1000, "ddim20"));
    diffuse::Generator generator(3);
    const auto x_t = generator.randn<double, 4>({4, 2, 3, 3});
    const diffuse::Tensor4<double> output = generator.randn<double, 4>({4, 2, 3, 3}) * 2.0;
    const auto noise = generator.randn<double, 4>({4, 2, 3, 3});
    diffuse::DDIMOptions<double> ddim;
    ddim.eta = 1.0;
    ddim.thresholding = diffuse::Thresholding::clip;
    diffuse::DDPMOptions<double> ddpm;
    ddpm.thresholding = diffuse::Thresholding::clip;
    for (const int i : {1, 7, 19}) {
        INFO("step " << i);
        const auto a = diffuse::ddim_step(schedule, fixed_model(output), x_t, i, noise, ddim);
        const auto b = diffuse::ddpm_step(schedule, fixed_model(output), x_t, i, noise, ddpm);
        LD worst = 0;
        for (Index k = 0; k < x_t.size(); ++k) worst = std::max<LD>(worst, std::fabs(a.x.data()[k] - b.x.data()[k]));
        CHECK(worst <= 1e-13L);  // |x| of order 1: a few double roundings of differently ordered formulas
        ddim.eps_from_thresholded_x0 = false;
        const auto raw = diffuse::ddim_step(schedule, fixed_model(output), x_t, i, noise, ddim);
        ddim.eps_from_thresholded_x0 = true;
        LD largest = 0;
        for (Index k = 0; k < x_t.size(); ++k) largest = std::max<LD>(largest, std::fabs(raw.x.data()[k] - b.x.data()[k]));
        CHECK(largest > 1e-3L);
    }
}

TEST_CASE("DDIM with few steps and the exact denoiser reproduces the mean and variance of Gaussian data",
          "[samplers][ddim][statistical]") {
    // x0 ~ N(-0.2, 0.4^2), cosine T = 1000, leading spacing, 8192 draws in float. As for DDPM the output
    // is Gaussian with moments from ddim_exact_moments: (1) the draws match them within 5 standard
    // errors; (2) they match the data's within the discretisation error of the step count. DDIM is a
    // first-order solver and the error sits at low noise, where sigma/alpha passes the data's 0.4 in few
    // steps: measured relative variance errors are -28.5% (eta 0, 10 steps), -6.8% (50), -1.4% (250)
    // and -14.5% (eta 1, 50 steps); the mean is off by 0.0104 with 10 steps. Bounds: 0.35, 0.08, 0.02,
    // 0.17 on the variance and 0.02 on the mean. DPM-Solver++(2M) gets within 1% with 20 steps.
    const LD mu = -0.2L, sd = 0.4L;
    const diffuse::Betas betas = diffuse::cosine_betas(1000);
    const diffuse::NoiseSchedule<float> schedule(betas);
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), mu, sd);
    const auto [steps, eta, bound] = GENERATE(std::tuple{10, 0.0, 0.35L}, std::tuple{50, 0.0, 0.08L},
                                              std::tuple{250, 0.0, 0.02L}, std::tuple{50, 1.0, 0.17L});
    INFO(steps << " steps, eta " << eta);
    diffuse::DDIMOptions<float> options;
    options.seed = 8;
    options.eta = eta;
    const auto samples = diffuse::ddim_sample(schedule, model, steps, {32, 1, 16, 16}, options);
    const auto [m, v] = analytic::mean_variance(samples.x.data(), samples.x.size());
    const auto [want_m, want_v] =
        ddim_exact_moments(analytic::kept_alphabar(betas, diffuse::spaced_timesteps(1000, steps, diffuse::Spacing::leading)), eta, mu, sd);
    CHECK_MOMENTS_5SE(m, v, want_m, want_v, LD(samples.x.size()));
    INFO("exact sampler moments " << double(want_m) << ", " << double(want_v));
    CHECK(std::fabs(want_m - mu) <= 0.02L);
    CHECK(std::fabs(want_v / (sd * sd) - 1) <= bound);
}

TEST_CASE("DDIM with 20 steps and the exact denoiser of a two-Gaussian mixture reproduces both modes in their proportions",
          "[samplers][ddim][statistical]") {
    // 0.4 N(-0.5, 0.2^2) + 0.6 N(0.5, 0.2^2), cosine T = 1000, 20 trailing steps, eta = 0, 8192 draws.
    // Bounds: the fraction of positive draws within 5 binomial standard errors (0.027) of 0.6 (a draw
    // crosses 0 from its mode with probability Phi(-2.5) = 0.6%, which shifts the fraction by 0.001);
    // each mode's mean within 5 standard errors plus 0.02 and standard deviation within 10%.
    const std::vector<analytic::Component> mixture = {{0.4L, -0.5L, 0.2L}, {0.6L, 0.5L, 0.2L}};
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(1000));
    const auto model = analytic::eps_model<double>(schedule.alphas_cumprod_double(), mixture);
    diffuse::DDIMOptions<double> options;
    options.seed = 4;
    options.steps.spacing = diffuse::Spacing::trailing;
    const auto samples = diffuse::ddim_sample(schedule, model, 20, {32, 1, 16, 16}, options);
    analytic::check_two_modes(samples.x, mixture, 0.02L, 0.1L);
}

TEST_CASE("DDIM inversion followed by DDIM sampling returns the starting image", "[samplers][ddim]") {
    // Images in [-1, 1], the exact denoiser of N(0, 0.5^2) data, 100 leading steps of linear T = 1000,
    // double. Evaluating eps at x_{i-1} instead of x_i costs an O(step) error per step that the sampler
    // does not undo: measured worst error 0.027 without fixed-point iterations (bound 0.05); with 10
    // the inversion solves the sampler's step: measured 5.4e-15, bound 1e-10.
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    diffuse::Tensor4<double> image(2, 3, 8, 8);
    diffuse::Generator(12).uniform(image.data(), image.size());
    image = image * 2.0 - 1.0;
    const auto [iterations, bound] = GENERATE(std::pair{0, 0.05L}, std::pair{10, 1e-10L});
    INFO(iterations << " fixed-point iterations");
    diffuse::DDIMOptions<double> options;
    options.fixed_point_iterations = iterations;
    const auto noise = diffuse::ddim_invert(schedule, model, 100, image, options);
    // the inverted noise is not the image: x_T = sqrt(alphabar) x0 + ... with alphabar_900 = 1.6e-4
    LD largest_change = 0;
    for (Index k = 0; k < image.size(); ++k) largest_change = std::max<LD>(largest_change, std::fabs(noise.x.data()[k] - image.data()[k]));
    CHECK(largest_change > 0.5L);
    const auto back = diffuse::ddim_sample_from(schedule, model, 100, noise.x, options);
    LD worst = 0;
    for (Index k = 0; k < image.size(); ++k) worst = std::max<LD>(worst, std::fabs(back.x.data()[k] - image.data()[k]));
    INFO("worst round-trip error " << double(worst));
    CHECK(worst <= bound);
}

TEST_CASE("DDIM sampling gives the same bits for a seed whatever the thread count", "[samplers][ddim]") {
    test_support::ThreadCountGuard guard;
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.1L, 0.4L);
    diffuse::DDIMOptions<float> options;
    options.seed = 7;
    options.eta = 0.7;
    diffuse::set_num_threads(1);
    const auto one = diffuse::ddim_sample(schedule, model, 10, {64, 2, 8, 8}, options);
    diffuse::set_num_threads(2);
    const auto two = diffuse::ddim_sample(schedule, model, 10, {64, 2, 8, 8}, options);
    CHECK(std::memcmp(one.x.data(), two.x.data(), sizeof(float) * static_cast<std::size_t>(one.x.size())) == 0);
}

TEST_CASE("DDIM rejects zero steps, more steps than T, a negative eta and inversion with noise", "[samplers][ddim][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    REQUIRE_THROWS_AS(diffuse::ddim_sample(schedule, model, 0, {1, 1, 2, 2}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::ddim_sample(schedule, model, 0, {1, 1, 2, 2}),
                        Contains("diffuse::ddim_sample: num_steps = 0, expected from 1 to the schedule's 100 timesteps"));
    REQUIRE_THROWS_WITH(diffuse::ddim_sample(schedule, model, 101, {1, 1, 2, 2}), Contains("num_steps = 101"));
    diffuse::DDIMOptions<double> options;
    options.eta = -0.1;
    REQUIRE_THROWS_WITH(diffuse::ddim_sample(schedule, model, 10, {1, 1, 2, 2}, options),
                        Contains("eta = -0.10000000000000001, expected a value in [0, 1]"));
    options.eta = 0.5;
    const auto x = diffuse::Generator(1).randn<double, 4>({1, 1, 2, 2});
    REQUIRE_THROWS_WITH(diffuse::ddim_invert(schedule, model, 10, x, options),
                        Contains("diffuse::ddim_invert: eta = 0.5, expected 0"));
    options.eta = 0.0;
    options.steps.timesteps = {0, 50, 99};
    REQUIRE_THROWS_WITH(diffuse::ddim_sample(schedule, model, 10, {1, 1, 2, 2}, options),
                        Contains("timesteps.size() = 3, expected num_steps, 10"));
}
