// Philox4x32-10 against Random123's known-answer vectors, the Generator's stream layout and
// reproducibility, and the statistics of its normal, uniform and integer draws.
//
// Statistical checks use a fixed seed, so they are deterministic; their bounds are stated as the
// critical values they are (5 standard errors, or a test's 0.01% / 0.1% point), so that a correct
// generator passes them and a wrong distribution (a missing factor, a biased transform) cannot.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;
using Words = std::array<std::uint32_t, 4>;

// Kolmogorov-Smirnov statistic sup |F_n(x) - F(x)| of a sample against a CDF.
template <class T, class Cdf>
LD ks_statistic(std::vector<T> x, Cdf cdf) {
    std::sort(x.begin(), x.end());
    const LD n = static_cast<LD>(x.size());
    LD d = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const LD f = cdf(static_cast<LD>(x[i]));
        d = std::max({d, (i + 1) / n - f, f - i / n});
    }
    return d;
}

// Pearson's chi-square of observed counts against expected counts.
LD chi_square(const std::vector<long>& observed, const std::vector<LD>& expected) {
    LD chi2 = 0;
    for (std::size_t i = 0; i < observed.size(); ++i) {
        chi2 += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
    }
    return chi2;
}

}  // namespace

TEST_CASE("philox4x32_10 reproduces Random123's known-answer vectors", "[core][random]") {
    // Random123 kat_vectors, "philox4x32 10": counter words, key words -> output words.
    CHECK(diffuse::philox4x32_10({0, 0, 0, 0}, {0, 0}) ==
          Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    CHECK(
        diffuse::philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        Words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    CHECK(
        diffuse::philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        Words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("derive_seed applies SplitMix64's step twice, matching its published outputs", "[core][random]") {
    // derive_seed(seed, stream) = m(m(seed) ^ stream), m(x) the output of a SplitMix64 generator in
    // state x (add the golden gamma, then mix). SplitMix64 seeded with 0 (Steele, Lea & Flood 2014;
    // prng.di.unimi.it/splitmix64.c) outputs m(0) = 0xE220A8397B1DCDAF, then m(gamma) = 0x6E789E6AA1B965F4,
    // gamma = 0x9E3779B97F4A7C15. A stream equal to m(seed) cancels the inner step: m(0); a stream of
    // m(seed) ^ gamma gives m(gamma).
    const std::uint64_t m0 = 0xE220A8397B1DCDAFULL, m_gamma = 0x6E789E6AA1B965F4ULL;
    const std::uint64_t gamma = 0x9E3779B97F4A7C15ULL;
    CHECK(diffuse::derive_seed(0, m0) == m0);
    CHECK(diffuse::derive_seed(0, m0 ^ gamma) == m_gamma);
    // Distinct streams of one seed, and one stream of distinct seeds, give distinct seeds.
    std::vector<std::uint64_t> seeds;
    for (std::uint64_t stream = 0; stream < 100; ++stream) seeds.push_back(diffuse::derive_seed(42, stream));
    for (std::uint64_t seed = 1000; seed < 1100; ++seed) seeds.push_back(diffuse::derive_seed(seed, 7));
    std::sort(seeds.begin(), seeds.end());
    CHECK(std::adjacent_find(seeds.begin(), seeds.end()) == seeds.end());
}

TEST_CASE("Generator block i is Philox of counter (i, 0) under the seed as key", "[core][random]") {
    // The documented layout, so that a stream can be reproduced elsewhere from (seed, offset): counter
    // words (low 32 bits of i, high 32 bits of i, 0, 0), key words (low, high 32 bits of the seed).
    const std::uint64_t seed = 0x0123456789abcdefULL;
    const diffuse::Generator generator(seed);
    for (const std::uint64_t i : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{0xfedcba9876543210ULL}}) {
        CHECK(generator.block(i) == diffuse::philox4x32_10({static_cast<std::uint32_t>(i),
                                                            static_cast<std::uint32_t>(i >> 32), 0, 0},
                                                           {0x89abcdef, 0x01234567}));
    }
    // Seed 0, block 0 is the all-zero known-answer vector.
    CHECK(diffuse::Generator(0).block(0) == Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
}

TEMPLATE_TEST_CASE("Normal draws are Box-Muller on the Philox words, as documented", "[core][random]", float,
                   double) {
    // float: four draws per block, u = ((w >> 8) + 1) 2^-24 from each word, pairs (w0, w1), (w2, w3);
    // double: two draws per block, u = (((w0 << 32 | w1) >> 11) + 1) 2^-53 and likewise (w2, w3).
    // z0 = sqrt(-2 ln u1) cos(2 pi u2), z1 = sqrt(-2 ln u1) sin(2 pi u2), in long double here.
    // Tolerance: the library works in T; the angle 2 pi u2 is off by a few u_T absolute and the radius
    // by a few u_T relative, so 16 eps_T (1 + r) absolute.
    using T = TestType;
    constexpr bool is_float = sizeof(T) == 4;
    const std::uint64_t seed = 77, offset = 5;
    diffuse::Generator generator(seed, offset);
    const Index n = 22;  // not a multiple of the draws per block: the last block is used in part
    std::vector<T> z(static_cast<std::size_t>(n));
    generator.normal(z.data(), n);
    const diffuse::Generator layout(seed);
    const LD eps = std::numeric_limits<T>::epsilon();
    for (Index k = 0; k < n; ++k) {
        const Index per_block = is_float ? 4 : 2;
        const Words w = layout.block(offset + static_cast<std::uint64_t>(k / per_block));
        const Index pair = (k % per_block) / 2;  // which (u1, u2) pair of the block
        LD u1, u2;
        if (is_float) {
            u1 = LD((w[2 * pair] >> 8) + 1) * LD(0x1p-24);
            u2 = LD((w[2 * pair + 1] >> 8) + 1) * LD(0x1p-24);
        } else {
            u1 = LD(((std::uint64_t{w[0]} << 32 | w[1]) >> 11) + 1) * LD(0x1p-53);
            u2 = LD(((std::uint64_t{w[2]} << 32 | w[3]) >> 11) + 1) * LD(0x1p-53);
        }
        const LD r = std::sqrt(-2 * std::log(u1)), theta = 2 * ref::pi() * u2;
        const LD want = k % 2 == 0 ? r * std::cos(theta) : r * std::sin(theta);
        INFO("draw " << k << ": " << z[static_cast<std::size_t>(k)] << ", expected " << double(want));
        CHECK(std::fabs(z[static_cast<std::size_t>(k)] - want) <= 16 * eps * (1 + r));
    }
}

TEST_CASE("randint of a power of two takes the top bits of the first word of each pair", "[core][random]") {
    // floor(bits * 2^k / 2^64) is the top k bits of the 64-bit number (w0 << 32 | w1), i.e. of w0 for
    // k <= 32. Two integers per block, from (w0, w1) and (w2, w3).
    const diffuse::Generator layout(9);
    for (const int k : {1, 8, 30}) {
        diffuse::Generator generator(9);
        const std::vector<int> v = generator.randint(10, 1 << k);
        for (int j = 0; j < 10; ++j) {
            const Words w = layout.block(static_cast<std::uint64_t>(j / 2));
            INFO("k = " << k << ", draw " << j);
            CHECK(v[static_cast<std::size_t>(j)] ==
                  static_cast<int>(w[static_cast<std::size_t>(2 * (j % 2))] >> (32 - k)));
        }
    }
}

TEST_CASE("The same seed gives the same numbers bit for bit with 1, 2 and 3 threads",
          "[core][random][threads]") {
    test_support::ThreadCountGuard guard;
    // Large enough to be split: 100003 floats are 25001 blocks, far above the 2048-block grain; the odd
    // size leaves the last block used in part.
    const Index n = 100003;
    struct Draws {
        std::vector<float> normal_f, uniform_f;
        std::vector<double> normal_d, uniform_d;
        std::vector<int> ints;
        std::uint64_t offset;
    };
    std::vector<Draws> runs;
    for (const int threads : {1, 2, 3}) {
        diffuse::set_num_threads(threads);
        REQUIRE(diffuse::num_threads() == threads);
        diffuse::Generator generator(123456789, 1000);
        Draws d;
        d.normal_f.resize(static_cast<std::size_t>(n));
        d.uniform_f.resize(static_cast<std::size_t>(n));
        d.normal_d.resize(static_cast<std::size_t>(n));
        d.uniform_d.resize(static_cast<std::size_t>(n));
        generator.normal(d.normal_f.data(), n);
        generator.normal(d.normal_d.data(), n);
        generator.uniform(d.uniform_f.data(), n);
        generator.uniform(d.uniform_d.data(), n);
        d.ints = generator.randint(n, 1000);
        d.offset = generator.offset();
        runs.push_back(std::move(d));
    }
    for (std::size_t r = 1; r < runs.size(); ++r) {
        INFO("run with " << r + 1 << " threads against 1 thread");
        const std::size_t count = static_cast<std::size_t>(n);
        CHECK(std::memcmp(runs[0].normal_f.data(), runs[r].normal_f.data(), count * sizeof(float)) == 0);
        CHECK(std::memcmp(runs[0].normal_d.data(), runs[r].normal_d.data(), count * sizeof(double)) == 0);
        CHECK(std::memcmp(runs[0].uniform_f.data(), runs[r].uniform_f.data(), count * sizeof(float)) == 0);
        CHECK(std::memcmp(runs[0].uniform_d.data(), runs[r].uniform_d.data(), count * sizeof(double)) == 0);
        CHECK(runs[0].ints == runs[r].ints);
        CHECK(runs[0].offset == runs[r].offset);
    }
}

TEST_CASE("Different seeds give different streams", "[core][random]") {
    // Seeds that differ in the low word, and in the high word only (the key's second word).
    const std::uint64_t seeds[] = {0, 1, std::uint64_t{1} << 32, 0xffffffffffffffffULL};
    std::vector<std::vector<double>> draws;
    for (const std::uint64_t seed : seeds) {
        diffuse::Generator generator(seed);
        std::vector<double> z(64);
        generator.normal(z.data(), 64);
        draws.push_back(z);
    }
    for (std::size_t a = 0; a < draws.size(); ++a) {
        for (std::size_t b = a + 1; b < draws.size(); ++b) {
            INFO("seeds " << seeds[a] << " and " << seeds[b]);
            int equal = 0;
            for (std::size_t i = 0; i < 64; ++i) equal += draws[a][i] == draws[b][i];
            CHECK(equal == 0);
        }
    }
}

TEST_CASE("The offset counts blocks used, and a generator rebuilt from (seed, offset) continues the stream",
          "[core][random]") {
    diffuse::Generator generator(31337);
    CHECK(generator.seed() == 31337);
    CHECK(generator.offset() == 0);
    std::vector<float> f(10);
    generator.normal(f.data(), 10);  // 4 floats per block: 3 blocks, the last used in part
    CHECK(generator.offset() == 3);
    std::vector<double> d(5);
    generator.normal(d.data(), 5);  // 2 doubles per block: 3 blocks
    CHECK(generator.offset() == 6);
    generator.uniform(f.data(), 4);  // 1 block
    CHECK(generator.offset() == 7);
    (void)generator.randint(3, 10);  // 2 per block: 2 blocks
    CHECK(generator.offset() == 9);
    generator.normal(f.data(), 0);
    CHECK(generator.offset() == 9);

    // 12 draws then 8 draws are the 20 draws of one fill (whole blocks), and a generator rebuilt from
    // the (seed, offset) after the first 12 draws the same 8.
    diffuse::Generator whole(5), split(5);
    std::vector<float> all(20), first(12), rest(8), rebuilt(8);
    whole.normal(all.data(), 20);
    split.normal(first.data(), 12);
    diffuse::Generator resumed(split.seed(), split.offset());
    split.normal(rest.data(), 8);
    resumed.normal(rebuilt.data(), 8);
    CHECK(std::equal(first.begin(), first.end(), all.begin()));
    CHECK(std::equal(rest.begin(), rest.end(), all.begin() + 12));
    CHECK(rebuilt == rest);
    // After a fill that used its last block in part, the next fill starts at a fresh block.
    diffuse::Generator partial(5);
    std::vector<float> ten(10), four(4);
    partial.normal(ten.data(), 10);
    partial.normal(four.data(), 4);
    CHECK(std::equal(four.begin(), four.end(), all.begin() + 12));
}

TEMPLATE_TEST_CASE("Normal draws have mean 0, variance 1 and Gaussian tails", "[core][random]", float,
                   double) {
    using T = TestType;
    const Index n = 200000;
    diffuse::Generator generator(2718);
    std::vector<T> z(static_cast<std::size_t>(n));
    generator.normal(z.data(), n);
    LD m1 = 0, m2 = 0, m3 = 0, m4 = 0, lag1 = 0;
    for (std::size_t i = 0; i < z.size(); ++i) {
        const LD x = z[i];
        m1 += x;
        m2 += x * x;
        m3 += x * x * x;
        m4 += x * x * x * x;
        if (i > 0) lag1 += x * z[i - 1];
    }
    m1 /= n;
    m2 /= n;
    m3 /= n;
    m4 /= n;
    lag1 /= n - 1;
    const LD variance = m2 - m1 * m1;
    // 5 standard errors of each moment estimate under N(0, 1): sd(mean) = 1/sqrt(n), sd(m2) = sqrt(2/n),
    // sd(m3) = sqrt(15/n), sd(m4) = sqrt(96/n), sd(lag-1 product mean) = 1/sqrt(n).
    const LD sqrt_n = std::sqrt(LD(n));
    CHECK(std::fabs(m1) <= 5 / sqrt_n);
    CHECK(std::fabs(variance - 1) <= 5 * std::sqrt(LD(2)) / sqrt_n);
    CHECK(std::fabs(m3) <= 5 * std::sqrt(LD(15)) / sqrt_n);
    CHECK(std::fabs(m4 - 3) <= 5 * std::sqrt(LD(96)) / sqrt_n);
    CHECK(std::fabs(lag1) <= 5 / sqrt_n);

    // Kolmogorov-Smirnov against Phi: the 0.1% critical value is 1.9495 / sqrt(n).
    CHECK(ks_statistic(z, ref::normal_cdf) <= 1.9495L / sqrt_n);

    // Chi-square over bins of width 1 centred on the integers from -3 to 3, with open tails beyond
    // +-3.5 (expected ~47 draws each): 9 bins, 8 degrees of freedom, 0.01% critical value 31.83.
    const LD edges[] = {-3.5L, -2.5L, -1.5L, -0.5L, 0.5L, 1.5L, 2.5L, 3.5L};
    std::vector<long> observed(9, 0);
    for (const T x : z)
        observed[static_cast<std::size_t>(std::upper_bound(std::begin(edges), std::end(edges), LD(x)) -
                                          std::begin(edges))]++;
    std::vector<LD> expected;
    for (int b = 0; b < 9; ++b) {
        const LD lo = b == 0 ? LD(0) : ref::normal_cdf(edges[b - 1]);
        const LD hi = b == 8 ? LD(1) : ref::normal_cdf(edges[b]);
        expected.push_back(n * (hi - lo));
    }
    INFO("tail counts " << observed.front() << " and " << observed.back() << ", expected "
                        << double(expected.front()));
    CHECK(chi_square(observed, expected) <= 31.83L);
}

TEMPLATE_TEST_CASE("Uniform draws lie between 0 and 1, never 1, and are uniform", "[core][random]", float,
                   double) {
    using T = TestType;
    const Index n = 100001;
    diffuse::Generator generator(14142);
    std::vector<T> u(static_cast<std::size_t>(n));
    generator.uniform(u.data(), n);
    CHECK(*std::min_element(u.begin(), u.end()) >= T(0));
    CHECK(*std::max_element(u.begin(), u.end()) < T(1));
    LD sum = 0;
    for (const T x : u) sum += x;
    // sd of the mean of U(0, 1): sqrt(1/12 / n); 5 of them.
    CHECK(std::fabs(sum / n - 0.5L) <= 5 * std::sqrt(LD(1) / 12 / n));
    CHECK(ks_statistic(u, [](LD x) { return x; }) <= 1.9495L / std::sqrt(LD(n)));
}

TEST_CASE("randint draws lie from 0 to high - 1 and are uniform", "[core][random]") {
    // Chi-square over the high values with high - 1 degrees of freedom; 0.01% critical values:
    // 27.86 (6 degrees), 33.72 (9 degrees).
    const Index n = 100000;
    const std::pair<int, LD> cases[] = {{7, 27.86L}, {10, 33.72L}};
    for (const auto& [high, critical] : cases) {
        INFO("high = " << high);
        diffuse::Generator generator(static_cast<std::uint64_t>(high) * 1000 + 1);
        const std::vector<int> v = generator.randint(n, high);
        REQUIRE(static_cast<Index>(v.size()) == n);
        REQUIRE(*std::min_element(v.begin(), v.end()) >= 0);
        REQUIRE(*std::max_element(v.begin(), v.end()) < high);
        std::vector<long> observed(static_cast<std::size_t>(high), 0);
        for (const int x : v) observed[static_cast<std::size_t>(x)]++;
        CHECK(chi_square(observed, std::vector<LD>(static_cast<std::size_t>(high), LD(n) / high)) <=
              critical);
    }
    // high = 1 has one value; a huge high still stays in range.
    diffuse::Generator generator(1);
    CHECK(generator.randint(1000, 1) == std::vector<int>(1000, 0));
    const std::vector<int> big = generator.randint(1000, std::numeric_limits<int>::max());
    CHECK(*std::min_element(big.begin(), big.end()) >= 0);
    CHECK(*std::max_element(big.begin(), big.end()) > std::numeric_limits<int>::max() / 2);
    CHECK(generator.randint(0, 5).empty());
}

TEST_CASE("randint rejects a negative count and an empty range", "[core][random][errors]") {
    using Catch::Contains;
    diffuse::Generator generator(0);
    REQUIRE_THROWS_AS(generator.randint(-1, 5), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(generator.randint(-1, 5), Contains("n = -1"));
    REQUIRE_THROWS_WITH(generator.randint(3, 0), Contains("high = 0"));
    REQUIRE_THROWS_WITH(generator.randint(3, -7), Contains("high = -7"));
}
