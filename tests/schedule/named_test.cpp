// Schedules by name: each name gives its paper's formula, and every named schedule is a valid
// diffusion (betas in (0, 1), alphabar strictly decreasing).

#include "../support/reference.hpp"

#include <diffuse/schedule/named.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

using ref::LD;
constexpr LD double_eps = std::numeric_limits<double>::epsilon();

}  // namespace

TEST_CASE("schedule_names lists linear, cosine, scaled_linear and sigmoid", "[schedule][named]") {
    CHECK(diffuse::schedule_names() ==
          std::vector<std::string>{"linear", "cosine", "scaled_linear", "sigmoid"});
}

TEST_CASE("make_betas gives each named schedule's formula with its default options", "[schedule][named]") {
    // Long-double formulas from the papers (tolerances as in betas_test.cpp).
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    CHECK_TABLE("linear", diffuse::make_betas("linear", T), ref::linear_betas(T), 4 * double_eps, LD(0));
    // cosine: absolute, below the last step's amplification (see betas_test.cpp): 1e-12.
    CHECK_TABLE("cosine", diffuse::make_betas("cosine", T), ref::cosine_betas(T), 1e-12L, LD(1));
    std::vector<LD> scaled = ref::linspace(std::sqrt(0.00085L), std::sqrt(0.012L), T);
    for (LD& b : scaled) b *= b;
    CHECK_TABLE("scaled_linear", diffuse::make_betas("scaled_linear", T), scaled, 8 * double_eps, LD(0));
    std::vector<LD> sigmoid = ref::linspace(-6, 6, T);
    for (LD& x : sigmoid) x = 1 / (1 + std::exp(-x)) * (0.02L - 1e-4L) + 1e-4L;
    CHECK_TABLE("sigmoid", diffuse::make_betas("sigmoid", T), sigmoid, 16 * double_eps, LD(0));
}

TEST_CASE("Every named schedule has betas in (0, 1) and a strictly decreasing alphabar",
          "[schedule][named]") {
    const int T = GENERATE(2, 10, 1000, 4000);
    for (const std::string& name : diffuse::schedule_names()) {
        INFO(name << ", T = " << T);
        const diffuse::Betas betas = diffuse::make_betas(name, T);
        REQUIRE(static_cast<int>(betas.size()) == T);
        CHECK(*std::min_element(betas.begin(), betas.end()) > 0.0);
        CHECK(*std::max_element(betas.begin(), betas.end()) < 1.0);
        const diffuse::NoiseSchedule<double> schedule(betas);
        const diffuse::NoiseSchedule<float> schedule_f(betas);
        CHECK(schedule.alphas_cumprod()[0] < 1.0);
        CHECK(schedule_f.alphas_cumprod()[0] < 1.0f);
        int not_decreasing = 0, not_decreasing_f = 0;
        for (int t = 1; t < T; ++t) {
            not_decreasing += !(schedule.alphas_cumprod()[t] < schedule.alphas_cumprod()[t - 1]);
            not_decreasing_f += !(schedule_f.alphas_cumprod()[t] < schedule_f.alphas_cumprod()[t - 1]);
        }
        CHECK(not_decreasing == 0);
        CHECK(not_decreasing_f == 0);
        CHECK(schedule.alphas_cumprod()[T - 1] > 0.0);
    }
}

TEST_CASE("make_betas rejects an unknown name, naming it and the known ones", "[schedule][named][errors]") {
    using Catch::Contains;
    REQUIRE_THROWS_AS(diffuse::make_betas("cosin", 1000), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::make_betas("cosin", 1000),
                        Contains("name = \"cosin\"") && Contains("linear, cosine, scaled_linear, sigmoid"));
    REQUIRE_THROWS_WITH(diffuse::make_betas("", 1000), Contains("name = \"\""));
    REQUIRE_THROWS_WITH(diffuse::make_betas("Linear", 1000), Contains("name = \"Linear\""));
}

TEST_CASE("make_betas rejects a non-positive number of timesteps", "[schedule][named][errors]") {
    REQUIRE_THROWS_AS(diffuse::make_betas("cosine", 0), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::make_betas("linear", 0), Catch::Contains("num_timesteps = 0"));
    REQUIRE_THROWS_WITH(diffuse::make_betas("sigmoid", -1), Catch::Contains("num_timesteps = -1"));
}
