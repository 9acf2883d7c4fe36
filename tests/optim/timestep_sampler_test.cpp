// Improved DDPM's loss-aware timestep sampler (its LossSecondMomentResampler): the probabilities
// against their formula in long double, the histories, the draws' frequencies and weights, and bad
// input.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/optim/timestep_sampler.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using diffuse::optim::LossAwareSampler;
using ref::LD;

// Fills every history: step t sees losses (t + 1) (1 + k / 10), k = 0 .. 11 (the first two dropped).
LossAwareSampler filled(int steps, double uniform_prob = 0.001) {
    LossAwareSampler sampler(steps, uniform_prob);
    for (int k = 0; k < 12; ++k) {
        diffuse::Timesteps t;
        std::vector<double> losses;
        for (int s = 0; s < steps; ++s) {
            t.push_back(s);
            losses.push_back((s + 1) * (1 + k / 10.0));
        }
        sampler.update(t, losses);
    }
    return sampler;
}

}  // namespace

TEST_CASE("The loss-aware sampler is uniform with weight 1 until every timestep has 10 losses", "[optim][timestep_sampler]") {
    LossAwareSampler sampler(4);
    diffuse::Generator generator(1);
    for (int round = 0; round < 10; ++round) {
        CHECK_FALSE(sampler.warmed_up());
        for (const double p : sampler.probabilities()) CHECK(p == 0.25);
        const auto draw = sampler.draw(generator, 8);
        for (const double w : draw.weights) CHECK(w == 1.0);
        sampler.update({0, 1, 2}, {1.0, 2.0, 3.0});
        if (round < 9) CHECK_FALSE(sampler.warmed_up());
    }
    CHECK_FALSE(sampler.warmed_up());  // t = 3 has none yet
    for (int k = 0; k < 10; ++k) sampler.update({3}, {4.0});
    CHECK(sampler.warmed_up());
}

TEST_CASE("The loss-aware sampler's probabilities are sqrt(E[L^2]) normalised and mixed with 0.001 uniform",
          "[optim][timestep_sampler]") {
    // improved-diffusion's LossSecondMomentResampler mixes in uniform_prob = 0.001; another share if asked
    const int steps = 5;
    const LD u = GENERATE(LD(1e-3), LD(1e-4), LD(0.5));
    INFO("uniform_prob " << double(u));
    const LossAwareSampler sampler = u == LD(1e-3) ? filled(steps) : filled(steps, static_cast<double>(u));
    REQUIRE(sampler.warmed_up());
    // the history keeps the last 10 losses, oldest first: k = 2 .. 11
    for (int s = 0; s < steps; ++s) {
        for (int k = 0; k < 10; ++k) {
            CHECK(sampler.history()[static_cast<std::size_t>(s * 10 + k)] == (s + 1) * (1 + (k + 2) / 10.0));
        }
        CHECK(sampler.counts()[static_cast<std::size_t>(s)] == 10);
    }
    std::vector<LD> rms(steps);
    LD sum = 0;
    for (int s = 0; s < steps; ++s) {
        LD m2 = 0;
        for (int k = 2; k < 12; ++k) {
            const LD l = (s + 1) * (1 + k / LD(10));
            m2 += l * l / 10;
        }
        rms[static_cast<std::size_t>(s)] = std::sqrt(m2);
        sum += std::sqrt(m2);
    }
    const std::vector<double> p = sampler.probabilities();
    LD total = 0;
    for (int s = 0; s < steps; ++s) {
        const LD want = rms[static_cast<std::size_t>(s)] / sum * (1 - u) + u / steps;
        CHECK(std::fabs(p[static_cast<std::size_t>(s)] - want) <= 1e-15L);
        total += p[static_cast<std::size_t>(s)];
    }
    CHECK(std::fabs(total - 1) <= 1e-15L);
}

TEST_CASE("The loss-aware sampler draws each t in proportion to p_t and weights it 1 / (T p_t)", "[optim][timestep_sampler]") {
    // 200,000 draws: each count within 5 binomial standard errors of n p_t; the weights' mean is 1
    // (E[1 / (T p_t)] under p is 1), within 5 standard errors
    const int steps = 5;
    const LossAwareSampler sampler = filled(steps);
    const std::vector<double> p = sampler.probabilities();
    diffuse::Generator generator(3);
    const Index n = 200000;
    const auto draw = sampler.draw(generator, n);
    std::vector<LD> counts(steps, 0);
    LD weight_sum = 0, weight_sq = 0;
    for (Index i = 0; i < n; ++i) {
        const int t = draw.t[static_cast<std::size_t>(i)];
        REQUIRE(t >= 0);
        REQUIRE(t < steps);
        counts[static_cast<std::size_t>(t)] += 1;
        const double w = draw.weights[static_cast<std::size_t>(i)];
        CHECK(w == 1.0 / (steps * p[static_cast<std::size_t>(t)]));
        weight_sum += w;
        weight_sq += LD(w) * w;
    }
    for (int s = 0; s < steps; ++s) {
        const LD ps = p[static_cast<std::size_t>(s)];
        INFO("t " << s << ": " << double(counts[static_cast<std::size_t>(s)]) << " draws, expected " << double(n * ps));
        CHECK(std::fabs(counts[static_cast<std::size_t>(s)] - n * ps) <= 5 * std::sqrt(n * ps * (1 - ps)));
    }
    const LD mean = weight_sum / n, variance = weight_sq / n - mean * mean;
    CHECK(std::fabs(mean - 1) <= 5 * std::sqrt(variance / n));
    // the same generator state gives the same draws
    diffuse::Generator again(3);
    CHECK(sampler.draw(again, n).t == draw.t);
}

TEST_CASE("The loss-aware sampler refuses a bad update or state and changes nothing", "[optim][timestep_sampler][errors]") {
    LossAwareSampler sampler(3);
    sampler.update({0}, {1.0});
    REQUIRE_THROWS_WITH(sampler.update({1, 3}, {1.0, 2.0}), Catch::Contains("t[1] = 3, expected a step in [0, 3)"));
    REQUIRE_THROWS_WITH(sampler.update({1, 2}, {1.0, std::nan("")}), Catch::Contains("losses[1] = nan, expected a finite loss"));
    REQUIRE_THROWS_WITH(sampler.update({1}, {1.0, 2.0}), Catch::Contains("losses.size() = 2"));
    CHECK(sampler.counts() == std::vector<std::int64_t>{1, 0, 0});
    REQUIRE_THROWS_WITH(sampler.set_state({}, {0, 0, 0}), Catch::Contains("history.size() = 0, expected 30"));
    std::vector<double> history(30, 1.0);
    history[12] = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_WITH(sampler.set_state(history, {10, 10, 10}), Catch::Contains("history[1][2] = inf, expected a finite loss"));
    REQUIRE_THROWS_WITH(sampler.set_state(std::vector<double>(30, 1.0), {10, 11, 0}), Catch::Contains("counts[1] = 11"));
    CHECK(sampler.counts() == std::vector<std::int64_t>{1, 0, 0});
    // a full history of zeros gives no distribution
    LossAwareSampler zeros(2);
    zeros.set_state(std::vector<double>(20, 0.0), {10, 10});
    REQUIRE_THROWS_AS(zeros.probabilities(), diffuse::numerical_error);
    REQUIRE_THROWS_WITH(LossAwareSampler(0), Catch::Contains("num_timesteps = 0"));
    REQUIRE_THROWS_WITH(LossAwareSampler(5, 0.0), Catch::Contains("uniform_prob = 0, expected a share in (0, 1]"));
    REQUIRE_THROWS_WITH(diffuse::optim::timestep_sampling_from_string("importance"), Catch::Contains("uniform or loss-aware"));
}
