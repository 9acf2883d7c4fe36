// Gaussian terms of the variational bound against numeric integration in long double: the KL divergence
// between Gaussians, the discretised Gaussian likelihood of 8-bit data (Ho et al. 2020, eq. 13), and
// the conversion of nats to bits per dimension.

#include "../support/reference.hpp"

#include <diffuse/core/tensor.hpp>
#include <diffuse/process/gaussian.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// log N(x; mean, exp(logvar)), in long double.
LD log_normal_density(LD x, LD mean, LD logvar) {
    return -(std::log(2 * ref::pi()) + logvar + (x - mean) * (x - mean) / std::exp(logvar)) / 2;
}

// KL(p || q) = integral of p log(p / q) by Simpson's rule over mean1 +- 40 sd1, where p has mass
// beyond 1e-300; 40000 panels put the Simpson error (h^4 times the integrand's 4th derivative,
// h = 0.002 sd1) far below 1e-12 of the result.
LD kl_by_integration(LD mean1, LD logvar1, LD mean2, LD logvar2) {
    const LD sd1 = std::exp(logvar1 / 2);
    return ref::simpson(
        [&](LD x) {
            const LD log_p = log_normal_density(x, mean1, logvar1);
            return std::exp(log_p) * (log_p - log_normal_density(x, mean2, logvar2));
        },
        mean1 - 40 * sd1, mean1 + 40 * sd1, 40000);
}

// Pixel k of 8-bit data scaled to [-1, 1].
double pixel(int k) { return 2.0 * k / 255.0 - 1.0; }

}  // namespace

TEMPLATE_TEST_CASE("normal_kl of a Gaussian with itself is zero", "[process][gaussian]", float, double) {
    using T = TestType;
    // -1 + logvar - logvar + exp(0) + 0 in T: a few roundings of terms of size |logvar| + 1.
    const T eps = std::numeric_limits<T>::epsilon();
    for (const T mean : {T(0), T(-2.5), T(13)}) {
        for (const T logvar : {T(0), T(-7.3), T(0.3), T(4)}) {
            INFO("mean " << mean << ", logvar " << logvar);
            CHECK(std::fabs(diffuse::normal_kl(mean, logvar, mean, logvar)) <=
                  4 * eps * (std::fabs(logvar) + 1));
        }
    }
}

TEST_CASE("normal_kl matches numeric integration of p log(p / q)", "[process][gaussian]") {
    // Parameter sets (mean1, logvar1, mean2, logvar2): equal variances, wider and narrower q, far means.
    const LD sets[][4] = {{0, 0, 0.5L, 0},
                          {0.3L, std::log(0.01L), -0.2L, std::log(0.04L)},
                          {-1, 1.5L, 2, -0.5L},
                          {5, -8, 5.001L, -7.5L},
                          {0, 0, 3, 2}};
    for (const auto& s : sets) {
        const LD want = kl_by_integration(s[0], s[1], s[2], s[3]);
        INFO("N(" << double(s[0]) << ", e^" << double(s[1]) << ") || N(" << double(s[2]) << ", e^"
                  << double(s[3]) << "): integral " << double(want));
        REQUIRE(want > 0);
        // The library evaluates the closed form in double; its terms are O(|logvar| + 1), so its
        // absolute error is a few eps of that: 1e-13 absolute plus 1e-12 relative.
        const double got = diffuse::normal_kl<double>(double(s[0]), double(s[1]), double(s[2]), double(s[3]));
        CHECK(std::fabs(got - want) <= 1e-12L * want + 1e-13L);
        // float, against the integral for the float-rounded parameters: five terms of size up to
        // |logvar1| + |logvar2| + 1 + KL, each rounded at 2^-24: 2e-6 of that sum.
        const float f[4] = {float(s[0]), float(s[1]), float(s[2]), float(s[3])};
        const LD want_f = kl_by_integration(f[0], f[1], f[2], f[3]);
        const float got_f = diffuse::normal_kl<float>(f[0], f[1], f[2], f[3]);
        CHECK(std::fabs(got_f - want_f) <= 2e-6L * (1 + std::fabs(f[1]) + std::fabs(f[3]) + want_f));
    }
}

TEMPLATE_TEST_CASE("normal_kl over tensors is the scalar KL elementwise", "[process][gaussian]", float,
                   double) {
    using T = TestType;
    diffuse::Tensor2<T> m1(2, 2), lv1(2, 2), m2(2, 2), lv2(2, 2);
    m1.setValues({{0, 0.3f}, {-1, 5}});
    lv1.setValues({{0, -4.6f}, {1.5f, -8}});
    m2.setValues({{0.5f, -0.2f}, {2, 5.001f}});
    lv2.setValues({{0, -3.2f}, {-0.5f, -7.5f}});
    const auto kl = diffuse::normal_kl(m1, lv1, m2, lv2);
    for (Index i = 0; i < 2; ++i) {
        for (Index j = 0; j < 2; ++j) {
            const LD want = kl_by_integration(m1(i, j), lv1(i, j), m2(i, j), lv2(i, j));
            INFO("element (" << i << ", " << j << ")");
            // Evaluated in double and rounded once to T.
            CHECK(std::fabs(kl(i, j) - want) <= LD(std::numeric_limits<T>::epsilon()) * want + 1e-12L);
        }
    }
    diffuse::Tensor2<T> wide(2, 3);
    wide.setZero();
    REQUIRE_THROWS_AS(diffuse::normal_kl(m1, lv1, wide, lv2), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::normal_kl(m1, lv1, wide, lv2), Catch::Contains("mean2.shape = [2, 3]"));
}

TEST_CASE("The 256 bin probabilities of the discretised Gaussian sum to 1", "[process][gaussian]") {
    // The bins tile the real line, so their masses sum to 1 whatever the mean and scale. Each mass is a
    // difference of erfc values to ~1e-16 relative; 256 of them: 1e-12.
    const double params[][2] = {{0, std::log(0.1)},    {0.5, std::log(0.01)}, {-0.9, 0},
                                {0.99, std::log(0.3)}, {0, std::log(3.0)},    {-1, std::log(0.001)},
                                {2.5, std::log(0.5)}};
    for (const auto& p : params) {
        INFO("mean " << p[0] << ", log scale " << p[1]);
        LD total = 0;
        for (int k = 0; k < 256; ++k) {
            const double log_p = diffuse::discretized_gaussian_log_likelihood(pixel(k), p[0], p[1]);
            REQUIRE(log_p <= 0.0);
            total += std::exp(static_cast<LD>(log_p));
        }
        CHECK(std::fabs(total - 1) <= 1e-12L);
    }
}

TEST_CASE("Each interior bin's probability is the Gaussian density integrated over the bin",
          "[process][gaussian]") {
    // P(x) = integral over [x - 1/255, x + 1/255] of N(mean, sd^2), by Simpson's rule in long double.
    // Compared where the bin lies within 34 sd of the mean (mass above ~1e-250; the library returns
    // log 0 = -inf below double's range), at relative 1e-9: far below any formula mistake (a bin edge
    // off by a pixel is a factor-of-two error). Simpson's relative error on a density decaying like
    // exp(-z y / sd) is about (z h / sd)^4 / 180; the panel count keeps z h / sd <= 0.01, so 6e-11.
    const double params[][2] = {
        {0, std::log(0.1)}, {0.5, std::log(0.01)}, {-0.3, std::log(1.0)}, {0.8, std::log(0.003)}};
    for (const auto& p : params) {
        const LD mean = p[0], sd = std::exp(LD(p[1]));
        const LD width = 2 / LD(255);
        int compared = 0;
        for (int k = 1; k < 255; ++k) {
            const LD x = pixel(k);
            const LD z_near = std::max(LD(0), std::fabs(x - mean) - width / 2) / sd;
            const LD z_far = (std::fabs(x - mean) + width / 2) / sd;
            if (z_near > 34) continue;
            const int panels = 200 + 2 * static_cast<int>(std::ceil(50 * z_far * width / sd));
            const LD want = ref::simpson([&](LD y) { return ref::normal_pdf((y - mean) / sd) / sd; },
                                         x - width / 2, x + width / 2, panels);
            ++compared;
            const double got = diffuse::discretized_gaussian_log_likelihood(pixel(k), p[0], p[1]);
            INFO("mean " << p[0] << ", sd " << double(sd) << ", pixel " << k << ": log P " << got
                         << ", expected " << double(std::log(want)));
            REQUIRE(std::fabs(std::exp(static_cast<LD>(got)) - want) <= 1e-9L * want);
        }
        CHECK(compared >= 20);
    }
}

TEST_CASE("The edge bins of the discretised Gaussian reach to -inf and +inf", "[process][gaussian]") {
    // Pixel 0 (x = -1) has mass P(X <= -1 + 1/255); pixel 255 (x = 1) has P(X >= 1 - 1/255). By Simpson
    // from / to 12 sd beyond the mean or the edge, whichever is farther out (the mass left out is below
    // 1e-30 of the bin's), with h <= 3e-4 sd: relative 1e-9.
    const double params[][2] = {
        {-1, std::log(0.01)}, {0, std::log(0.5)}, {0.9, std::log(0.2)}, {-0.95, std::log(0.05)}};
    for (const auto& p : params) {
        const LD mean = p[0], sd = std::exp(LD(p[1]));
        const auto density = [&](LD y) { return ref::normal_pdf((y - mean) / sd) / sd; };
        const LD low_edge = -1 + 1 / LD(255), high_edge = 1 - 1 / LD(255);
        const LD want_low = ref::simpson(density, std::min(mean, low_edge) - 12 * sd, low_edge, 40000);
        const LD want_high = ref::simpson(density, high_edge, std::max(mean, high_edge) + 12 * sd, 40000);
        INFO("mean " << p[0] << ", sd " << double(sd) << ": expected P(pixel 0) " << double(want_low)
                     << ", P(pixel 255) " << double(want_high));
        const double got_low = diffuse::discretized_gaussian_log_likelihood(-1.0, p[0], p[1]);
        const double got_high = diffuse::discretized_gaussian_log_likelihood(1.0, p[0], p[1]);
        if (want_low > 1e-250L)
            CHECK(std::fabs(std::exp(static_cast<LD>(got_low)) - want_low) <= 1e-9L * want_low);
        if (want_high > 1e-250L)
            CHECK(std::fabs(std::exp(static_cast<LD>(got_high)) - want_high) <= 1e-9L * want_high);
        // Closed form as a second opinion: Phi((edge - mean) / sd), relative 1e-12.
        const LD cdf_low = ref::normal_cdf((low_edge - mean) / sd),
                 cdf_high = ref::normal_cdf((mean - high_edge) / sd);
        if (cdf_low > 1e-250L)
            CHECK(std::fabs(std::exp(static_cast<LD>(got_low)) - cdf_low) <= 1e-12L * cdf_low);
        if (cdf_high > 1e-250L)
            CHECK(std::fabs(std::exp(static_cast<LD>(got_high)) - cdf_high) <= 1e-12L * cdf_high);
    }
    // A mean far beyond the upper edge puts almost all mass in pixel 255: log P -> 0.
    CHECK(diffuse::discretized_gaussian_log_likelihood(1.0, 3.0, std::log(0.1)) == Approx(0.0).margin(1e-15));
}

TEST_CASE("The discretised Gaussian keeps its precision in both tails", "[process][gaussian]") {
    // Bins 10 and 20 sd from the mean, on either side: log P against log of Phi differences in long
    // double (erfc, no cancellation), relative 1e-12 of log P.
    const double mean = 0.0, log_scale = std::log(0.05);
    for (const int k : {0 + 64, 255 - 64, 1, 254}) {
        const LD x = pixel(k), sd = std::exp(LD(log_scale));
        const LD lo = (x - 1 / LD(255) - mean) / sd, hi = (x + 1 / LD(255) - mean) / sd;
        const LD r = 1 / std::sqrt(LD(2));
        const LD mass = lo > 0 ? (std::erfc(lo * r) - std::erfc(hi * r)) / 2
                               : (std::erfc(-hi * r) - std::erfc(-lo * r)) / 2;
        const double got = diffuse::discretized_gaussian_log_likelihood(pixel(k), mean, log_scale);
        INFO("pixel " << k << ": log P " << got << ", expected " << double(std::log(mass)));
        CHECK(std::fabs(got - std::log(mass)) <= 1e-12L * std::fabs(std::log(mass)));
    }
}

TEMPLATE_TEST_CASE("discretized_gaussian_log_likelihood over tensors gives each element's log P",
                   "[process][gaussian]", float, double) {
    // Reference: log(Phi(hi) - Phi(lo)) in long double for the element's bin, the edge bins open.
    // Evaluated in double and rounded once to T: |log P| (u_T + 1e-12) + 1e-15.
    using T = TestType;
    diffuse::Tensor2<T> x(1, 4), means(1, 4), log_scales(1, 4);
    x.setValues({{-1, T(pixel(100)), T(pixel(200)), 1}});
    means.setValues({{T(-0.9), T(-0.2), T(0.5), T(0.7)}});
    log_scales.setValues({{T(-2), T(-1.5), T(-3), T(-1)}});
    const auto out = diffuse::discretized_gaussian_log_likelihood(x, means, log_scales);
    REQUIRE(out.dimensions() == x.dimensions());
    const LD u = LD(std::numeric_limits<T>::epsilon()) / 2;
    for (Index i = 0; i < 4; ++i) {
        const LD xi = x(0, i), sd = std::exp(LD(log_scales(0, i))), mean = means(0, i);
        const LD lo = (xi - 1 / LD(255) - mean) / sd, hi = (xi + 1 / LD(255) - mean) / sd;
        const LD mass = i == 0   ? ref::normal_cdf(hi)
                        : i == 3 ? ref::normal_cdf(-lo)
                                 : ref::normal_cdf(hi) - ref::normal_cdf(lo);
        const LD want = std::log(mass);
        INFO("element " << i << ": " << double(out(0, i)) << ", expected " << double(want));
        CHECK(std::fabs(out(0, i) - want) <= std::fabs(want) * (u + 1e-12L) + 1e-15L);
    }
}

TEST_CASE("discretized_gaussian_log_likelihood rejects data outside -1 .. 1 and mismatched shapes",
          "[process][gaussian][errors]") {
    using Catch::Contains;
    diffuse::Tensor2<double> x(1, 3), means(1, 3), wide(1, 4);
    x.setValues({{0.0, 1.5, 0.0}});
    means.setZero();
    wide.setZero();
    REQUIRE_THROWS_AS(diffuse::discretized_gaussian_log_likelihood(x, means, means),
                      diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::discretized_gaussian_log_likelihood(x, means, means),
                        Contains("x[1] = 1.5"));
    REQUIRE_THROWS_WITH(diffuse::discretized_gaussian_log_likelihood(x, wide, means),
                        Contains("means.shape = [1, 4]"));
    REQUIRE_THROWS_WITH(diffuse::discretized_gaussian_log_likelihood(x, means, wide),
                        Contains("log_scales.shape = [1, 4]"));
}

TEST_CASE("nats_to_bits_per_dim divides by the number of dimensions and ln 2", "[process][gaussian]") {
    // 8 bits per dimension of a 32x32x3 image is 3072 * ln(256) nats.
    CHECK(diffuse::nats_to_bits_per_dim(3072 * std::log(256.0), 3072) == Approx(8.0).epsilon(1e-15));
    CHECK(diffuse::nats_to_bits_per_dim(1.0, 1.0) == Approx(1 / std::log(2.0)).epsilon(1e-15));
    CHECK(diffuse::nats_to_bits_per_dim(0.0, 10.0) == 0.0);
    REQUIRE_THROWS_AS(diffuse::nats_to_bits_per_dim(1.0, 0.0), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::nats_to_bits_per_dim(1.0, -2.0), Catch::Contains("dims = -2"));
}

TEMPLATE_TEST_CASE("mean_flat averages every dimension but the batch", "[process][gaussian]", float, double) {
    using T = TestType;
    diffuse::Tensor<T, 3> x(2, 2, 3);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(i * i);
    const auto m = diffuse::mean_flat(x);
    REQUIRE(m.size() == 2);
    // sum of i^2 for i = 0..5 is 55; for i = 6..11 it is 506 - 55 = 451.
    CHECK(m(0) == Approx(55.0 / 6));
    CHECK(m(1) == Approx(451.0 / 6));
    diffuse::Tensor<T, 3> empty(0, 2, 3);
    REQUIRE_THROWS_WITH(diffuse::mean_flat(empty), Catch::Contains("x.shape = [0, 2, 3]"));
}
