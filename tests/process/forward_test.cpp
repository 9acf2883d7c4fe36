// The forward process q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I) (Ho et al. 2020, eq. 4):
// q_sample against the formula, its draws against the distribution's moments, and the closed form
// against t single noising steps applied one after another.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;
using ref::mean_variance;

// Unit roundoff of T.
template <class T>
LD unit_roundoff() {
    return LD(std::numeric_limits<T>::epsilon()) / 2;
}

// Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|.
LD ks_two_sample(std::vector<double> a, std::vector<double> b) {
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::size_t i = 0, j = 0;
    LD d = 0;
    while (i < a.size() && j < b.size()) {
        const double x = std::min(a[i], b[j]);
        while (i < a.size() && a[i] <= x) ++i;
        while (j < b.size() && b[j] <= x) ++j;
        d = std::max(d, std::fabs(LD(i) / a.size() - LD(j) / b.size()));
    }
    return d;
}

}  // namespace

TEMPLATE_TEST_CASE("q_sample with given noise is sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise",
                   "[process][forward]", float, double) {
    using T = TestType;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(betas));
    const diffuse::NoiseSchedule<T> schedule(betas);
    diffuse::Generator generator(7);
    const auto x0 = generator.randn<T, 4>({4, 2, 3, 5});
    const auto noise = generator.randn<T, 4>({4, 2, 3, 5});
    const diffuse::Timesteps t = {0, 17, 500, 999};
    const diffuse::Tensor4<T> x_t = diffuse::q_sample(schedule, x0, t, noise);
    REQUIRE(x_t.dimensions() == x0.dimensions());
    // a x + b y with a, b rounded once to T (plus the double tables' 2e-12) and two more roundings:
    // |error| <= (3 u + 2e-12) (|a x| + |b y|); 4 u + 2e-12 stated.
    const LD tolerance = 4 * unit_roundoff<T>() + 2e-12L;
    const Index per_sample = x0.size() / 4;
    for (Index n = 0; n < 4; ++n) {
        const LD a = std::sqrt(alphabar[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])]);
        const LD b = std::sqrt(1 - alphabar[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])]);
        for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
            const LD x = x0.data()[i], y = noise.data()[i];
            const LD want = a * x + b * y;
            INFO("sample " << n << ", element " << i);
            REQUIRE(std::fabs(x_t.data()[i] - want) <= tolerance * (std::fabs(a * x) + std::fabs(b * y)));
        }
    }
}

TEMPLATE_TEST_CASE("q_sample draws have mean sqrt(alphabar_t) x0 and variance 1 - alphabar_t",
                   "[process][forward]", float, double) {
    using T = TestType;
    const diffuse::Betas betas = diffuse::cosine_betas(1000);
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(betas));
    const diffuse::NoiseSchedule<T> schedule(betas);
    // Four samples of D iid coordinates, each with its own x0 value and timestep.
    const Index D = 40000;
    const diffuse::Timesteps t = {0, 100, 600, 999};
    const T x0_values[4] = {T(0.7), T(-1), T(0.3), T(1)};
    diffuse::Tensor2<T> x0(4, D);
    for (Index n = 0; n < 4; ++n) {
        for (Index i = 0; i < D; ++i) x0(n, i) = x0_values[n];
    }
    diffuse::Generator generator(2024);
    diffuse::Tensor2<T> noise;
    const diffuse::Tensor2<T> x_t = diffuse::q_sample(schedule, x0, t, generator, noise);
    for (Index n = 0; n < 4; ++n) {
        const LD ab = alphabar[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])];
        const LD want_mean = std::sqrt(ab) * x0_values[n], want_var = 1 - ab;
        const auto [mean, var] = mean_variance(x_t.data() + n * D, D);
        INFO("t = " << t[static_cast<std::size_t>(n)] << ": mean " << double(mean) << " (expected "
                    << double(want_mean) << "), variance " << double(var) << " (expected " << double(want_var)
                    << ")");
        // 5 standard errors: sd(mean) = sqrt(var / D), sd(sample variance) = var sqrt(2 / (D - 1)) for
        // a Gaussian. A false alarm has probability ~6e-7 per check; the seed is fixed anyway.
        CHECK(std::fabs(mean - want_mean) <= 5 * std::sqrt(want_var / D));
        CHECK(std::fabs(var - want_var) <= 5 * want_var * std::sqrt(LD(2) / (D - 1)));
    }
}

TEST_CASE("q_sample's closed form has the distribution of t single noising steps", "[process][forward]") {
    // Ho et al.: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I); composing the steps s = 0 .. t
    // gives q(x_t | x_0). Simulate the chain step by step with the library's normal draws and compare
    // both samples: mean and variance within 5 standard errors of their difference, and a two-sample
    // Kolmogorov-Smirnov statistic below its 0.1% critical value 1.95 sqrt(2 / n).
    struct Case {
        const char* name;
        diffuse::Betas betas;
        int t;
    };
    const Case cases[] = {{"linear T = 1000, t = 99", diffuse::linear_betas(1000), 99},
                          {"cosine T = 10, t = 9", diffuse::cosine_betas(10), 9},
                          {"cosine T = 1000, t = 0", diffuse::cosine_betas(1000), 0}};
    const Index n = 20000;
    const double x0_value = 0.8;
    for (const Case& c : cases) {
        INFO(c.name);
        const diffuse::NoiseSchedule<double> schedule(c.betas);
        diffuse::Generator chain_generator(11);
        std::vector<double> chain(static_cast<std::size_t>(n), x0_value), z(static_cast<std::size_t>(n));
        for (int s = 0; s <= c.t; ++s) {
            const double beta = c.betas[static_cast<std::size_t>(s)];
            chain_generator.normal(z.data(), n);
            for (Index i = 0; i < n; ++i) {
                chain[static_cast<std::size_t>(i)] =
                    std::sqrt(1 - beta) * chain[static_cast<std::size_t>(i)] +
                    std::sqrt(beta) * z[static_cast<std::size_t>(i)];
            }
        }
        diffuse::Tensor2<double> x0(n, 1);
        x0.setConstant(x0_value);
        diffuse::Generator closed_generator(12);
        diffuse::Tensor2<double> noise;
        const diffuse::Tensor2<double> closed = diffuse::q_sample(
            schedule, x0, diffuse::Timesteps(static_cast<std::size_t>(n), c.t), closed_generator, noise);
        const std::vector<double> closed_values(closed.data(), closed.data() + n);

        const auto [mean_a, var_a] = mean_variance(chain.data(), n);
        const auto [mean_b, var_b] = mean_variance(closed_values.data(), n);
        CHECK(std::fabs(mean_a - mean_b) <= 5 * std::sqrt((var_a + var_b) / n));
        CHECK(std::fabs(var_a - var_b) <= 5 * std::sqrt(2 * (var_a * var_a + var_b * var_b) / (n - 1)));
        CHECK(ks_two_sample(chain, closed_values) <= 1.95L * std::sqrt(LD(2) / n));
    }
}

TEMPLATE_TEST_CASE("q_sample with a Generator returns the noise it used, drawn from the generator",
                   "[process][forward]", float, double) {
    using T = TestType;
    const diffuse::NoiseSchedule<T> schedule(diffuse::linear_betas(100));
    diffuse::Generator generator(5, 3);
    const auto x0 = diffuse::Generator(99).randn<T, 2>({3, 10});
    diffuse::Tensor2<T> noise;
    const diffuse::Tensor2<T> x_t = diffuse::q_sample(schedule, x0, {1, 50, 99}, generator, noise);
    REQUIRE(noise.dimensions() == x0.dimensions());
    // The same stream position gives the same noise, bit for bit.
    const auto expected_noise = diffuse::Generator(5, 3).randn<T, 2>({3, 10});
    for (Index i = 0; i < noise.size(); ++i) REQUIRE(noise.data()[i] == expected_noise.data()[i]);
    CHECK(generator.offset() > 3);
    // And x_t is built from it.
    const diffuse::Tensor2<T> again = diffuse::q_sample(schedule, x0, {1, 50, 99}, noise);
    for (Index i = 0; i < x_t.size(); ++i) REQUIRE(x_t.data()[i] == again.data()[i]);
}

TEST_CASE("q_sample gives the same result bit for bit with 1, 2 and 3 threads",
          "[process][forward][threads]") {
    test_support::ThreadCountGuard guard;
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(1000));
    // One coordinate per sample: the batch is split across threads.
    const Index N = 100000;
    diffuse::Timesteps t(static_cast<std::size_t>(N));
    for (Index n = 0; n < N; ++n) t[static_cast<std::size_t>(n)] = static_cast<int>((n * 7919) % 1000);
    std::vector<std::vector<float>> results;
    for (const int threads : {1, 2, 3}) {
        diffuse::set_num_threads(threads);
        diffuse::Generator generator(42);
        const auto x0 = generator.randn<float, 2>({N, 1});
        diffuse::Tensor2<float> noise;
        const auto x_t = diffuse::q_sample(schedule, x0, t, generator, noise);
        results.emplace_back(x_t.data(), x_t.data() + x_t.size());
    }
    CHECK(std::memcmp(results[0].data(), results[1].data(), sizeof(float) * results[0].size()) == 0);
    CHECK(std::memcmp(results[0].data(), results[2].data(), sizeof(float) * results[0].size()) == 0);
}

TEMPLATE_TEST_CASE("q_mean_variance is sqrt(alphabar_t) x0, 1 - alphabar_t and log(1 - alphabar_t)",
                   "[process][forward]", float, double) {
    using T = TestType;
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(betas));
    const diffuse::NoiseSchedule<T> schedule(betas);
    const auto x0 = diffuse::Generator(3).randn<T, 3>({3, 4, 5});
    const diffuse::Timesteps t = {0, 333, 999};
    const auto q = diffuse::q_mean_variance(schedule, x0, t);
    REQUIRE(q.mean.dimensions() == x0.dimensions());
    REQUIRE(q.variance.dimensions() == x0.dimensions());
    REQUIRE(q.log_variance.dimensions() == x0.dimensions());
    const LD u = unit_roundoff<T>();
    const Index per_sample = x0.size() / 3;
    for (Index n = 0; n < 3; ++n) {
        const LD ab = alphabar[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])];
        const LD log_var = std::log(1 - ab);
        for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
            INFO("sample " << n << ", element " << i);
            const LD want_mean = std::sqrt(ab) * x0.data()[i];
            // One rounded coefficient, one product: 3 u (+ the double tables' 2e-12).
            REQUIRE(std::fabs(q.mean.data()[i] - want_mean) <= (3 * u + 2e-12L) * std::fabs(want_mean));
            // The variance is exp of the rounded log-variance: the log's rounding, u |log(1 - alphabar)|,
            // becomes a relative error of the variance (5.5e-7 for float at t = 0, where the log is -9.2),
            // plus the exp's own: (|log| + 4) u.
            REQUIRE(std::fabs(q.variance.data()[i] - (1 - ab)) <=
                    ((std::fabs(log_var) + 4) * u + 2e-12L) * (1 - ab));
            REQUIRE(std::fabs(q.log_variance.data()[i] - log_var) <=
                    (2 * u + 2e-12L) * std::max(std::fabs(log_var), LD(1)));
        }
    }
}

TEST_CASE("q_sample rejects timesteps outside 0 .. T-1, naming the timestep and its value",
          "[process][forward][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    diffuse::Tensor2<float> x0(2, 3), noise(2, 3);
    x0.setZero();
    noise.setZero();
    REQUIRE_THROWS_AS(diffuse::q_sample(schedule, x0, {0, 1000}, noise), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {0, 1000}, noise),
                        Contains("q_sample") && Contains("t[1] = 1000") && Contains("[0, 1000)"));
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {-1, 0}, noise), Contains("t[0] = -1"));
    diffuse::Generator generator(0);
    diffuse::Tensor2<float> noise_out;
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {5, 1001}, generator, noise_out),
                        Contains("t[1] = 1001"));
    REQUIRE_THROWS_WITH(diffuse::q_mean_variance(schedule, x0, {1000, 0}), Contains("t[0] = 1000"));
}

TEST_CASE("q_sample rejects a number of timesteps other than one per sample", "[process][forward][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(10));
    diffuse::Tensor2<double> x0(2, 3), noise(2, 3);
    x0.setZero();
    noise.setZero();
    REQUIRE_THROWS_AS(diffuse::q_sample(schedule, x0, {0}, noise), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {0}, noise),
                        Contains("t.size() = 1") && Contains("2"));
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {0, 1, 2}, noise), Contains("t.size() = 3"));
    REQUIRE_THROWS_WITH(diffuse::q_mean_variance(schedule, x0, {}), Contains("t.size() = 0"));
}

TEST_CASE("q_sample rejects noise whose shape differs from x0's and an empty batch",
          "[process][forward][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(10));
    diffuse::Tensor2<double> x0(2, 3), wide(2, 4), empty(0, 3);
    x0.setZero();
    wide.setZero();
    REQUIRE_THROWS_AS(diffuse::q_sample(schedule, x0, {0, 1}, wide), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, x0, {0, 1}, wide),
                        Contains("noise.shape = [2, 4]") && Contains("[2, 3]"));
    REQUIRE_THROWS_WITH(diffuse::q_sample(schedule, empty, {}, empty), Contains("x0.shape = [0, 3]"));
}
