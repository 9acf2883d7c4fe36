// NoiseSchedule: every table against its definition (Ho et al. 2020; Nichol & Dhariwal 2021) evaluated
// in long double from the same input betas.
//
// The betas given to NoiseSchedule are its input, so the reference starts from those very doubles
// (promoted to long double); whether linear_betas() and cosine_betas() follow their formulas is
// betas_test.cpp's business. This keeps the cosine schedule's own rounding (1 - f(t+1)/f(t) in double)
// out of these tolerances.
//
// Tolerances. double: 2e-12 relative. alphabar is a sum of T = 1000 logs with |sum| <= 10.2, so the
// rounding of the partial sums bounds the relative error of alphabar (and of everything derived from
// it) by about 1000 * 10.2 * 2^-53 ~ 1.1e-12, and as a random walk by ~1e-14; 2e-12 covers the worst
// case. The log tables are compared in absolute terms where |value| < 1 (floor 1): a log's absolute
// error is its argument's relative error. float: each table is rounded once from double to float, at
// most 2^-24 relative; 2^-23 allows that plus the double error.

#include "../support/reference.hpp"

#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

using ref::LD;

template <class T>
LD table_tolerance() {
    return std::is_same<T, float>::value ? LD(0x1p-23) : LD(2e-12);
}

// Checks every table of `schedule` against the long-double definitions from its own input betas.
template <class T>
void check_all_tables(const diffuse::NoiseSchedule<T>& schedule, const diffuse::Betas& betas) {
    const ref::Schedule want = ref::schedule_from_betas(ref::to_ld(betas));
    const LD tol = table_tolerance<T>();
    const LD no_floor = 0, log_floor = 1;  // relative error; absolute below |value| = 1
    CHECK_TABLE("betas", schedule.betas(), want.betas, tol, no_floor);
    CHECK_TABLE("alphas", schedule.alphas(), want.alphas, tol, no_floor);
    CHECK_TABLE("alphas_cumprod", schedule.alphas_cumprod(), want.alphas_cumprod, tol, no_floor);
    CHECK_TABLE("alphas_cumprod_prev", schedule.alphas_cumprod_prev(), want.alphas_cumprod_prev, tol,
                no_floor);
    CHECK_TABLE("alphas_cumprod_next", schedule.alphas_cumprod_next(), want.alphas_cumprod_next, tol,
                no_floor);
    CHECK_TABLE("sqrt_alphas_cumprod", schedule.sqrt_alphas_cumprod(), want.sqrt_alphas_cumprod, tol,
                no_floor);
    CHECK_TABLE("sqrt_one_minus_alphas_cumprod", schedule.sqrt_one_minus_alphas_cumprod(),
                want.sqrt_one_minus_alphas_cumprod, tol, no_floor);
    CHECK_TABLE("log_one_minus_alphas_cumprod", schedule.log_one_minus_alphas_cumprod(),
                want.log_one_minus_alphas_cumprod, tol, log_floor);
    CHECK_TABLE("sqrt_recip_alphas_cumprod", schedule.sqrt_recip_alphas_cumprod(),
                want.sqrt_recip_alphas_cumprod, tol, no_floor);
    CHECK_TABLE("sqrt_recipm1_alphas_cumprod", schedule.sqrt_recipm1_alphas_cumprod(),
                want.sqrt_recipm1_alphas_cumprod, tol, no_floor);
    CHECK_TABLE("posterior_variance", schedule.posterior_variance(), want.posterior_variance, tol, no_floor);
    CHECK_TABLE("posterior_log_variance_clipped", schedule.posterior_log_variance_clipped(),
                want.posterior_log_variance_clipped, tol, log_floor);
    CHECK_TABLE("posterior_mean_coef1", schedule.posterior_mean_coef1(), want.posterior_mean_coef1, tol,
                no_floor);
    CHECK_TABLE("posterior_mean_coef2", schedule.posterior_mean_coef2(), want.posterior_mean_coef2, tol,
                no_floor);
    CHECK_TABLE("snr", schedule.snr(), want.snr, tol, no_floor);

    // The boundary entries are exact by definition, whatever the precision.
    const int n = schedule.num_timesteps();
    CHECK(schedule.alphas_cumprod_prev()[0] == T(1));
    CHECK(schedule.alphas_cumprod_next()[n - 1] == T(0));
    CHECK(schedule.posterior_variance()[0] == T(0));
    CHECK(schedule.posterior_mean_coef2()[0] == T(0));
    if (n > 1) {
        CHECK(schedule.posterior_log_variance_clipped()[0] == schedule.posterior_log_variance_clipped()[1]);
    }
}

}  // namespace

TEMPLATE_TEST_CASE("Every NoiseSchedule table of the linear schedule matches its definition in long double",
                   "[schedule][noise_schedule]", float, double) {
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    const diffuse::Betas betas = diffuse::linear_betas(T);
    check_all_tables(diffuse::NoiseSchedule<TestType>(betas), betas);
}

TEMPLATE_TEST_CASE("Every NoiseSchedule table of the cosine schedule matches its definition in long double",
                   "[schedule][noise_schedule]", float, double) {
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    const diffuse::Betas betas = diffuse::cosine_betas(T);
    check_all_tables(diffuse::NoiseSchedule<TestType>(betas), betas);
}

TEMPLATE_TEST_CASE("NoiseSchedule tables match their definitions for betas written out by hand",
                   "[schedule][noise_schedule]", float, double) {
    // Not produced by any schedule function: a short, irregular, non-monotonic sequence.
    const diffuse::Betas betas = {0.3, 0.05, 0.5, 0.125, 0.9, 0.01};
    check_all_tables(diffuse::NoiseSchedule<TestType>(betas), betas);
}

TEST_CASE("The DDPM linear schedule with T = 1000 ends at alphabar = 4.0358e-5",
          "[schedule][noise_schedule]") {
    // DDPM section 4 chooses T = 1000 and beta from 1e-4 to 0.02 so that x_T is close to pure noise:
    // alphabar_{T-1} = prod (1 - beta_t) = 4.0358e-5 to the five digits given (4.03583e-5 exactly).
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    CHECK(std::fabs(schedule.alphas_cumprod()[999] - 4.0358e-5) <= 0.00005e-5);
    const diffuse::NoiseSchedule<float> schedule_f(diffuse::linear_betas(1000));
    CHECK(std::fabs(schedule_f.alphas_cumprod()[999] - 4.0358e-5f) <= 0.00005e-5f);
}

TEMPLATE_TEST_CASE("A single-step NoiseSchedule uses log(beta_0) as its clipped posterior log-variance",
                   "[schedule][noise_schedule]", float, double) {
    // With T = 1 there is no entry 1 to stand in for log(beta_tilde_0) = log 0.
    const diffuse::NoiseSchedule<TestType> schedule(diffuse::Betas{0.25});
    REQUIRE(schedule.num_timesteps() == 1);
    CHECK(schedule.alphas_cumprod()[0] == TestType(0.75));
    CHECK(schedule.alphas_cumprod_prev()[0] == TestType(1));
    CHECK(schedule.alphas_cumprod_next()[0] == TestType(0));
    CHECK(schedule.posterior_variance()[0] == TestType(0));
    CHECK(schedule.posterior_log_variance_clipped()[0] == Approx(std::log(0.25)).epsilon(1e-7));
}

TEST_CASE("NoiseSchedule keeps its input betas and numbers its steps 0 .. T-1 by default",
          "[schedule][noise_schedule]") {
    const diffuse::Betas betas = {0.1, 0.2, 0.3};
    const diffuse::NoiseSchedule<double> schedule(betas);
    CHECK(schedule.num_timesteps() == 3);
    CHECK(schedule.betas_double() == betas);
    CHECK(schedule.timestep_map() == std::vector<int>{0, 1, 2});
    // alphabar in double: 0.9, 0.72, 0.504
    REQUIRE(schedule.alphas_cumprod_double().size() == 3);
    CHECK(schedule.alphas_cumprod_double()[2] == Approx(0.9 * 0.8 * 0.7).epsilon(1e-15));

    const diffuse::NoiseSchedule<double> mapped(betas, {5, 17, 40});
    CHECK(mapped.timestep_map() == std::vector<int>{5, 17, 40});
}

TEST_CASE("NoiseSchedule accepts a last beta of exactly 1 and gives it zero terminal SNR",
          "[schedule][noise_schedule]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::Betas{0.1, 0.5, 1.0});
    CHECK(schedule.alphas_cumprod()[2] == 0.0);
    CHECK(schedule.snr()[2] == 0.0);
    CHECK(schedule.sqrt_one_minus_alphas_cumprod()[2] == 1.0);
    CHECK(schedule.alphas_cumprod()[1] == Approx(0.45).epsilon(1e-15));
}

TEST_CASE("NoiseSchedule rejects betas outside (0, 1), naming the beta and its value",
          "[schedule][noise_schedule][errors]") {
    using Catch::Contains;
    using diffuse::Betas;
    using diffuse::NoiseSchedule;
    REQUIRE_THROWS_AS(NoiseSchedule<double>(Betas{0.1, 0.0, 0.2}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{0.1, 0.0, 0.2}), Contains("betas[1] = 0"));
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{0.1, 0.2, -0.5}), Contains("betas[2] = -0.5"));
    REQUIRE_THROWS_WITH(NoiseSchedule<float>(Betas{1.5}), Contains("betas[0] = 1.5"));
    // Only the last of several betas may be exactly 1.
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{1.0, 0.5}), Contains("betas[0] = 1"));
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{1.0}), Contains("betas[0] = 1"));
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{0.1, std::numeric_limits<double>::quiet_NaN()}),
                        Contains("betas[1] = nan"));
    REQUIRE_THROWS_AS(NoiseSchedule<double>(Betas{}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(NoiseSchedule<double>(Betas{}), Contains("betas.size() = 0"));
}

TEST_CASE("NoiseSchedule rejects a timestep_map whose length differs from the betas'",
          "[schedule][noise_schedule][errors]") {
    REQUIRE_THROWS_AS(diffuse::NoiseSchedule<double>(diffuse::Betas{0.1, 0.2}, {0}),
                      diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::NoiseSchedule<double>(diffuse::Betas{0.1, 0.2}, {0}),
                        Catch::Contains("timestep_map.size() = 1"));
}
