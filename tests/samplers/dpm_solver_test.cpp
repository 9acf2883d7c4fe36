// DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): its first- and second-order updates against the
// formulas in long double, few-step sampling of Gaussian and two-Gaussian data with the exact
// denoiser (against DDIM at the same step count), and bad input.

#include "../support/reference.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/dpm_solver.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// For N(mu, s^2) data and the exact denoiser every x and x0 prediction is affine in x_T, x = p x_T + q:
// the solver run on (p, q) in long double gives the output's mean q and variance p^2.
std::pair<LD, LD> dpm_exact_moments(const std::vector<LD>& ab, LD mu, LD sd) {
    LD p = 1, q = 0, p0_prev = 0, q0_prev = 0, h_prev = 0;
    const std::size_t n = ab.size();
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = n - 1 - k;
        const analytic::Affine f = analytic::gaussian_x0_affine(ab[i], mu, sd);
        const LD p0 = f.A * p, q0 = f.A * q + f.B;
        if (i == 0) return {q0, p0 * p0};
        const LD h = std::log(std::sqrt(ab[i - 1] / (1 - ab[i - 1]))) - std::log(std::sqrt(ab[i] / (1 - ab[i])));
        LD dp = p0, dq = q0;
        if (k > 0 && i - 1 > 0) {
            const LD r = h_prev / h;
            dp = (1 + 1 / (2 * r)) * p0 - p0_prev / (2 * r);
            dq = (1 + 1 / (2 * r)) * q0 - q0_prev / (2 * r);
        }
        const LD decay = std::sqrt((1 - ab[i - 1]) / (1 - ab[i])), gain = std::sqrt(ab[i - 1]) * (1 - std::exp(-h));
        p = decay * p + gain * dp;
        q = decay * q + gain * dq;
        p0_prev = p0, q0_prev = q0, h_prev = h;
    }
    return {q, p * p};
}

// The same for DDIM with eta = 0 (first order everywhere), for the comparison.
LD ddim_exact_variance(const std::vector<LD>& ab, LD mu, LD sd) {
    LD p = 1;
    for (std::size_t k = 0; k < ab.size(); ++k) {
        const std::size_t i = ab.size() - 1 - k;
        const LD a_t = ab[i], a_p = i > 0 ? ab[i - 1] : 1;
        const analytic::Affine f = analytic::gaussian_x0_affine(a_t, mu, sd);
        p *= std::sqrt(a_p) * f.A + std::sqrt(1 - a_p) * (1 - std::sqrt(a_t) * f.A) / std::sqrt(1 - a_t);
    }
    return p * p;
}

}  // namespace

TEMPLATE_TEST_CASE("DPM-Solver++(2M) steps are the first- and second-order updates in the log-SNR",
                   "[samplers][dpm_solver]", float, double) {
    // Four steps over timesteps {0, 250, 500, 750} with an x0-model whose output depends on t: step 0
    // is first order (no history), step 1 second order, step 2 (into the last timestep) first order,
    // step 3 returns the prediction. Checked against the formulas in long double.
    using T = TestType;
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const std::vector<int> kept = {0, 250, 500, 750};
    const std::vector<LD> ab = analytic::kept_alphabar(betas, kept);
    const diffuse::NoiseSchedule<T> schedule(betas);
    diffuse::Generator generator(5);
    const auto x_T = generator.randn<T, 4>({2, 2, 3, 3});
    const auto base = generator.randn<T, 4>({2, 2, 3, 3});
    // x0 prediction at timestep t: base * (1 + t / 1000), whatever x is
    const auto prediction_at = [&](int t) { return diffuse::Tensor4<T>(base * static_cast<T>(1 + t / 1000.0)); };
    const diffuse::ModelFn<T> model = [&](const diffuse::Tensor4<T>&, const diffuse::Timesteps& t, const std::vector<int>&) {
        return prediction_at(t.front());
    };
    diffuse::DPMSolverOptions<T> options;
    options.prediction = diffuse::Prediction::x0;
    options.keep_intermediates = true;
    options.steps.timesteps = kept;
    const auto samples = diffuse::dpm_solver_sample_from(schedule, model, 4, x_T, options);
    REQUIRE(samples.intermediates.size() == 5);

    const auto lambda = [&](std::size_t i) { return std::log(std::sqrt(ab[i] / (1 - ab[i]))); };
    LD worst = 0;
    for (Index e = 0; e < x_T.size(); ++e) {
        LD x = x_T.data()[e];
        const auto x0 = [&](int t) { return LD(base.data()[e]) * (1 + t / LD(1000)); };
        // step 0: 750 -> 500, first order
        LD h = lambda(2) - lambda(3);
        x = std::sqrt((1 - ab[2]) / (1 - ab[3])) * x + std::sqrt(ab[2]) * (1 - std::exp(-h)) * x0(750);
        worst = std::max(worst, std::fabs(samples.intermediates[1].data()[e] - x) / (std::fabs(x) + 1));
        // step 1: 500 -> 250, second order with r = h_prev / h
        const LD h_prev = h;
        h = lambda(1) - lambda(2);
        const LD r = h_prev / h;
        const LD d = (1 + 1 / (2 * r)) * x0(500) - x0(750) / (2 * r);
        x = std::sqrt((1 - ab[1]) / (1 - ab[2])) * x + std::sqrt(ab[1]) * (1 - std::exp(-h)) * d;
        worst = std::max(worst, std::fabs(samples.intermediates[2].data()[e] - x) / (std::fabs(x) + 1));
        // step 2: 250 -> 0, first order (the last selected timestep)
        h = lambda(0) - lambda(1);
        x = std::sqrt((1 - ab[0]) / (1 - ab[1])) * x + std::sqrt(ab[0]) * (1 - std::exp(-h)) * x0(250);
        worst = std::max(worst, std::fabs(samples.intermediates[3].data()[e] - x) / (std::fabs(x) + 1));
        // step 3: the prediction at t = 0
        worst = std::max(worst, std::fabs(samples.x.data()[e] - x0(0)) / (std::fabs(x0(0)) + 1));
    }
    // A few roundings per step of values of order 1, accumulated over 3 steps: 32 u + 1e-12.
    CHECK(worst <= 32 * u + 1e-12L);
}

TEST_CASE("DPM-Solver++(2M) with 20 steps and the exact denoiser reproduces the mean and variance of Gaussian data",
          "[samplers][dpm_solver][statistical]") {
    // x0 ~ N(-0.2, 0.4^2), 8192 draws in float, leading spacing. The output is affine in x_T, with the
    // moments of dpm_exact_moments: the draws match them within 5 standard errors, and they match the
    // data's within the solver's discretisation error. Measured relative variance errors: -1.0% (cosine,
    // 20 steps) and -0.3% (linear, 50 steps), against DDIM's -15.9% and -12.7% at the same steps.
    // Bounds: 3% on the variance, 0.01 on the mean, and at most a fifth of DDIM's variance error.
    const LD mu = -0.2L, sd = 0.4L;
    const bool cosine = GENERATE(true, false);
    const int steps = cosine ? 20 : 50;
    INFO((cosine ? "cosine" : "linear") << ", " << steps << " steps");
    const diffuse::Betas betas = cosine ? diffuse::cosine_betas(1000) : diffuse::linear_betas(1000);
    const diffuse::NoiseSchedule<float> schedule(betas);
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), mu, sd);
    diffuse::DPMSolverOptions<float> options;
    options.seed = 2;
    const auto samples = diffuse::dpm_solver_sample(schedule, model, steps, {32, 1, 16, 16}, options);
    const auto [m, v] = analytic::mean_variance(samples.x.data(), samples.x.size());
    const std::vector<LD> ab = analytic::kept_alphabar(betas, diffuse::spaced_timesteps(1000, steps, diffuse::Spacing::leading));
    const auto [want_m, want_v] = dpm_exact_moments(ab, mu, sd);
    CHECK_MOMENTS_5SE(m, v, want_m, want_v, LD(samples.x.size()));
    const LD error = want_v / (sd * sd) - 1, ddim_error = ddim_exact_variance(ab, mu, sd) / (sd * sd) - 1;
    INFO("exact solver moments " << double(want_m) << ", " << double(want_v) << "; relative variance error "
                                 << double(error) << ", DDIM's " << double(ddim_error));
    CHECK(std::fabs(want_m - mu) <= 0.01L);
    CHECK(std::fabs(error) <= 0.03L);
    CHECK(std::fabs(error) <= std::fabs(ddim_error) / 5);
}

TEST_CASE("DPM-Solver++(2M) with 50 steps and the exact denoiser of a two-Gaussian mixture reproduces both modes",
          "[samplers][dpm_solver][statistical]") {
    // 0.3 N(-0.5, 0.15^2) + 0.7 N(0.5, 0.15^2), cosine T = 1000, 50 leading steps, 8192 draws. Bounds:
    // the fraction of positive draws within 5 binomial standard errors (0.025) of 0.7; each mode's mean
    // within 5 standard errors plus 0.01, its standard deviation within 5% of 0.15. The narrow modes
    // make the low-noise end stiff: measured standard deviations 0.130 with 20 steps, 0.140 with 30,
    // 0.147 with 50.
    const std::vector<analytic::Component> mixture = {{0.3L, -0.5L, 0.15L}, {0.7L, 0.5L, 0.15L}};
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(1000));
    const auto model = analytic::eps_model<double>(schedule.alphas_cumprod_double(), mixture);
    diffuse::DPMSolverOptions<double> options;
    options.seed = 6;
    const auto samples = diffuse::dpm_solver_sample(schedule, model, 50, {32, 1, 16, 16}, options);
    analytic::check_two_modes(samples.x, mixture, 0.01L, 0.05L);
}

TEST_CASE("DPM-Solver++(2M) rejects zero steps, more steps than T and a non-finite model output", "[samplers][dpm_solver][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    REQUIRE_THROWS_WITH(diffuse::dpm_solver_sample(schedule, model, 0, {1, 1, 2, 2}),
                        Contains("diffuse::dpm_solver_sample: num_steps = 0, expected from 1 to the schedule's 100 timesteps"));
    REQUIRE_THROWS_WITH(diffuse::dpm_solver_sample(schedule, model, 101, {1, 1, 2, 2}), Contains("num_steps = 101"));
    const diffuse::ModelFn<double> inf_model = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                                  const std::vector<int>&) {
        diffuse::Tensor4<double> out = x * 0.0;
        if (t.front() < 50) out(0, 0, 1, 1) = std::numeric_limits<double>::infinity();
        return out;
    };
    REQUIRE_THROWS_AS(diffuse::dpm_solver_sample(schedule, inf_model, 10, {1, 1, 2, 2}), diffuse::numerical_error);
}
