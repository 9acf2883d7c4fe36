// schedule/karras.hpp: Karras et al.'s noise levels against eq. 5 in long double, their timesteps on
// a discrete schedule (nearest in log sigma, distinct, both ends kept), and bad input.

#include "../support/reference.hpp"
#include "../support/rejection.hpp"

#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/karras.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <vector>

using Catch::Matchers::Contains;
using diffuse::testing_support::rejection;
using ref::LD;

TEST_CASE("Karras sigmas follow eq. 5 from sigma_max down to sigma_min", "[schedule][karras]") {
    const double lo = 0.002, hi = 80.0;
    const double rho = GENERATE(7.0, 1.0, 3.0);
    const std::vector<double> s = diffuse::karras_sigmas(10, lo, hi, rho);
    REQUIRE(s.size() == 10);
    for (int i = 0; i < 10; ++i) {
        const LD want = std::pow(std::pow(LD(hi), 1 / LD(rho)) + LD(i) / 9 * (std::pow(LD(lo), 1 / LD(rho)) - std::pow(LD(hi), 1 / LD(rho))), LD(rho));
        CHECK(s[static_cast<std::size_t>(i)] == Approx(double(want)).epsilon(1e-12));
    }
    CHECK(s.front() == Approx(hi).epsilon(1e-14));
    CHECK(s.back() == Approx(lo).epsilon(1e-12));
    if (rho == 1.0) CHECK(s[1] - s[2] == Approx(s[7] - s[8]).epsilon(1e-12));  // rho = 1: evenly spaced
    CHECK(diffuse::karras_sigmas(1, lo, hi) == std::vector<double>{hi});
}

TEST_CASE("Karras timesteps are the distinct timesteps nearest in log sigma, both ends kept", "[schedule][karras]") {
    const diffuse::NoiseSchedule<double> schedule(GENERATE(true, false) ? diffuse::cosine_betas(1000) : diffuse::linear_betas(1000));
    const std::vector<double> table = diffuse::timestep_sigmas(schedule);
    for (std::size_t t = 1; t < table.size(); ++t) REQUIRE(table[t] > table[t - 1]);
    for (const int n : {5, 20, 50, 200}) {
        INFO(n << " steps");
        const std::vector<int> ts = diffuse::karras_timesteps(schedule, n);
        REQUIRE(ts.size() == static_cast<std::size_t>(n));
        CHECK(ts.front() == 0);
        CHECK(ts.back() == 999);
        for (std::size_t j = 1; j < ts.size(); ++j) CHECK(ts[j] > ts[j - 1]);
    }
}

TEST_CASE("Karras timesteps on the linear schedule are each the nearest in log sigma", "[schedule][karras]") {
    // linear T = 1000: sigma from 0.010 to 157 and no two of 8 levels on one timestep. (The cosine
    // schedule's last beta, clipped to 0.999, puts sigma_999 at 20291 against 642 at t = 998: there
    // several of the top levels fall on t = 999 and move down to the next free timesteps.)
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    const std::vector<double> table = diffuse::timestep_sigmas(schedule);
    const std::vector<double> sigmas = diffuse::karras_sigmas(8, table.front(), table.back());
    const std::vector<int> ts = diffuse::timesteps_for_sigmas(schedule, sigmas);
    for (int j = 0; j < 8; ++j) {
        const double s = sigmas[static_cast<std::size_t>(7 - j)];
        const int t = ts[static_cast<std::size_t>(j)];
        for (int u = 0; u < 1000; ++u) {
            CHECK(std::fabs(std::log(table[static_cast<std::size_t>(t)] / s)) <= std::fabs(std::log(table[static_cast<std::size_t>(u)] / s)));
        }
    }
}

TEST_CASE("Karras spacing rejects rho <= 0, bad bounds and levels that do not decrease", "[schedule][karras][errors]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    CHECK_THAT(rejection([] { diffuse::karras_sigmas(10, 0.01, 10.0, 0.0); }), Contains("rho = 0"));
    CHECK_THAT(rejection([] { diffuse::karras_sigmas(10, 0.01, 10.0, -7.0); }), Contains("rho = -7"));
    CHECK_THAT(rejection([] { diffuse::karras_sigmas(0, 0.01, 10.0); }), Contains("n = 0"));
    CHECK_THAT(rejection([] { diffuse::karras_sigmas(10, 0.0, 10.0); }), Contains("sigma_min = 0"));
    CHECK_THAT(rejection([] { diffuse::karras_sigmas(10, 1.0, 0.5); }), Contains("sigma_max = 0.5"));
    CHECK_THAT(rejection([&] { diffuse::timesteps_for_sigmas(schedule, {5.0, 1.0, 1.0}); }),
               Contains("sigmas[2] = 1") && Contains("must decrease strictly"));
    CHECK_THAT(rejection([&] { diffuse::timesteps_for_sigmas(schedule, {1.0, 2.0}); }), Contains("sigmas[1] = 2"));
    CHECK_THAT(rejection([&] { diffuse::timesteps_for_sigmas(schedule, {1.0, -1.0}); }), Contains("sigmas[1] = -1"));
    CHECK_THAT(rejection([&] { diffuse::karras_timesteps(schedule, 101); }), Contains("sigmas.size() = 101"));
}
