// The forward-process posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7) against Bayes' rule:
// for scalar Gaussians, prior q(x_{t-1} | x_0) = N(sqrt(alphabar_{t-1}) x_0, 1 - alphabar_{t-1}) times
// likelihood q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t), multiplied out in long double.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/process/posterior.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

struct Posterior {
    LD mean, variance;
    LD prior_term, likelihood_term;  // mean = prior_term + likelihood_term
};

// The posterior of x in N(x; m, v) N(y; c x, w) (x's prior times the likelihood of y given x): a
// product of Gaussians in x, with precision 1/v + c^2/w and mean (m/v + c y/w) / precision.
Posterior bayes_posterior(LD m, LD v, LD c, LD w, LD y) {
    const LD variance = 1 / (1 / v + c * c / w);
    const LD prior_term = variance * m / v, likelihood_term = variance * c * y / w;
    return {prior_term + likelihood_term, variance, prior_term, likelihood_term};
}

}  // namespace

TEMPLATE_TEST_CASE("q_posterior_mean_variance is the Bayes-rule posterior of x_{t-1} given x_t and x_0",
                   "[process][posterior]", float, double) {
    using T = TestType;
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    const bool cosine = GENERATE(false, true);
    const int num_timesteps = GENERATE(1000, 10);
    INFO((cosine ? "cosine" : "linear") << ", T = " << num_timesteps);
    const diffuse::Betas betas =
        cosine ? diffuse::cosine_betas(num_timesteps) : diffuse::linear_betas(num_timesteps);
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(betas));
    const diffuse::NoiseSchedule<T> schedule(betas);

    // One sample per timestep t = 1 .. T-1 (t = 0 has its own test), three coordinates each.
    const Index N = num_timesteps - 1;
    diffuse::Timesteps t(static_cast<std::size_t>(N));
    for (Index n = 0; n < N; ++n) t[static_cast<std::size_t>(n)] = static_cast<int>(n + 1);
    diffuse::Generator generator(31);
    const auto x0 = generator.randn<T, 2>({N, 3});
    const auto x_t = generator.randn<T, 2>({N, 3});
    const auto posterior = diffuse::q_posterior_mean_variance(schedule, x0, x_t, t);
    const auto mean_only = diffuse::q_posterior_mean(schedule, x0, x_t, t);

    for (Index n = 0; n < N; ++n) {
        const std::size_t step = static_cast<std::size_t>(t[static_cast<std::size_t>(n)]);
        const LD beta = betas[step], ab_prev = alphabar[step - 1];
        for (Index i = 0; i < 3; ++i) {
            INFO("t = " << step << ", coordinate " << i);
            const LD x0_value = x0(n, i), xt_value = x_t(n, i);
            const Posterior want = bayes_posterior(std::sqrt(ab_prev) * x0_value, 1 - ab_prev,
                                                   std::sqrt(1 - beta), beta, xt_value);
            // The library's mean is coef1 x0 + coef2 x_t with the coefficients rounded to T, so its
            // error is relative to the sum of the two terms' magnitudes (Bayes' prior and likelihood
            // terms), not to the mean, which may cancel.
            const LD scale = std::fabs(want.prior_term) + std::fabs(want.likelihood_term);
            // Tolerances: 4 u + 2e-12 (see forward_test.cpp) for the mean, relative to that scale;
            // 2 u + 2e-12 relative for the variance, a rounded table entry; the log-variance absolutely
            // where |log| < 1.
            CHECK(std::fabs(posterior.mean(n, i) - want.mean) <= (4 * u + 2e-12L) * scale);
            CHECK(mean_only(n, i) == posterior.mean(n, i));
            CHECK(std::fabs(posterior.variance(n, i) - want.variance) <= (2 * u + 2e-12L) * want.variance);
            const LD log_var = std::log(want.variance);
            CHECK(std::fabs(posterior.log_variance(n, i) - log_var) <=
                  (2 * u + 2e-12L) * std::max(std::fabs(log_var), LD(1)));
        }
    }
}

TEMPLATE_TEST_CASE("At t = 0 the posterior is a point mass at x0 with the log-variance of t = 1",
                   "[process][posterior]", float, double) {
    // alphabar_{-1} = 1: x_{-1} = x_0 exactly, so the posterior mean is x_0 and its variance 0; the
    // log-variance is clipped to log(beta_tilde_1) = log(beta_1 (1 - alphabar_0) / (1 - alphabar_1)).
    using T = TestType;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const diffuse::NoiseSchedule<T> schedule(betas);
    const auto x0 = diffuse::Generator(1).randn<T, 2>({2, 4});
    const auto x_t = diffuse::Generator(2).randn<T, 2>({2, 4});
    const auto posterior = diffuse::q_posterior_mean_variance(schedule, x0, x_t, {0, 0});
    const LD b0 = betas[0], b1 = betas[1];
    const LD ab0 = 1 - b0, ab1 = (1 - b0) * (1 - b1);
    const LD want_log_var = std::log(b1 * (1 - ab0) / (1 - ab1));
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    for (Index n = 0; n < 2; ++n) {
        for (Index i = 0; i < 4; ++i) {
            // coef1 = beta_0 / (1 - alphabar_0) = 1 up to the rounding of 1 - alphabar_0.
            CHECK(std::fabs(posterior.mean(n, i) - x0(n, i)) <= (2 * u + 1e-12L) * std::fabs(x0(n, i)));
            CHECK(posterior.variance(n, i) == T(0));
            CHECK(std::fabs(posterior.log_variance(n, i) - want_log_var) <=
                  (2 * u + 2e-12L) * std::fabs(want_log_var));
        }
    }
}

TEST_CASE("q_posterior_mean_variance rejects mismatched shapes and a wrong number of timesteps",
          "[process][posterior][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(10));
    diffuse::Tensor2<double> x0(2, 3), x_t(2, 3), wide(2, 5);
    x0.setZero();
    x_t.setZero();
    wide.setZero();
    REQUIRE_THROWS_AS(diffuse::q_posterior_mean_variance(schedule, x0, wide, {1, 2}),
                      diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::q_posterior_mean_variance(schedule, x0, wide, {1, 2}),
                        Contains("x_t.shape = [2, 5]"));
    REQUIRE_THROWS_WITH(diffuse::q_posterior_mean(schedule, x0, x_t, {1}), Contains("t.size() = 1"));
    REQUIRE_THROWS_WITH(diffuse::q_posterior_mean(schedule, x0, x_t, {1, 10}), Contains("t[1] = 10"));
}
