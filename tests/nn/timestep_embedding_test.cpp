// The sinusoidal timestep embedding of DDPM (Ho et al. 2020, get_timestep_embedding): with half = dim / 2
// and omega_i = exp(-ln(10000) i / (half - 1)), emb = [sin(t omega_i) ..., cos(t omega_i) ...], one zero
// column appended when dim is odd. Reference in long double.

#include "../support/reference.hpp"

#include <diffuse/nn/timestep_embedding.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// The embedding of one t by the formula, laid out as [first half, second half, zero pad].
std::vector<LD> embedding(LD t, Index dim, bool cos_first, LD max_period = 10000, LD freq_shift = 1) {
    const Index half = dim / 2;
    std::vector<LD> out(static_cast<std::size_t>(dim), 0);
    for (Index i = 0; i < half; ++i) {
        const LD omega = std::exp(-std::log(max_period) * i / (half - freq_shift));
        const LD s = std::sin(t * omega), c = std::cos(t * omega);
        out[static_cast<std::size_t>(i)] = cos_first ? c : s;
        out[static_cast<std::size_t>(half + i)] = cos_first ? s : c;
    }
    return out;
}

// Tolerance, absolute (every entry is in [-1, 1]): the library forms the angle t omega in double,
// with a relative error of a few eps, i.e. an absolute error of a few eps * t * omega <= 1e3 eps for
// t < 1000; sin and cos pass that on. Then one rounding to T: u_T. So 1e3 * 2^-52 + u_T.
template <class T>
LD tolerance() {
    return LD(1e3) * LD(0x1p-52) + LD(std::numeric_limits<T>::epsilon()) / 2;
}

template <class T, class Time>
void check_embedding(const diffuse::Tensor2<T>& got, const std::vector<Time>& t, Index dim, bool cos_first,
                     LD max_period = 10000, LD freq_shift = 1) {
    REQUIRE(got.dimension(0) == static_cast<Index>(t.size()));
    REQUIRE(got.dimension(1) == dim);
    for (std::size_t n = 0; n < t.size(); ++n) {
        const std::vector<LD> want = embedding(static_cast<LD>(t[n]), dim, cos_first, max_period, freq_shift);
        for (Index j = 0; j < dim; ++j) {
            INFO("t = " << t[n] << ", column " << j << " of " << dim << ": got "
                        << got(static_cast<Index>(n), j) << ", expected "
                        << double(want[static_cast<std::size_t>(j)]));
            REQUIRE(std::fabs(got(static_cast<Index>(n), j) - want[static_cast<std::size_t>(j)]) <=
                    tolerance<T>());
        }
    }
}

}  // namespace

TEMPLATE_TEST_CASE("timestep_embedding is sin then cos of t exp(-ln(10000) i / (half - 1))",
                   "[nn][embedding]", float, double) {
    const std::vector<int> t = {0, 1, 37, 500, 999};
    for (const Index dim : {Index{128}, Index{4}, Index{6}, Index{320}}) {
        INFO("dim " << dim);
        check_embedding(diffuse::nn::timestep_embedding<TestType>(t, dim), t, dim, false);
    }
    // Spot values that need no formula: t = 0 gives sin 0 = 0 and cos 0 = 1; the first frequency is 1,
    // so column 0 is sin(t); with freq_shift 1 the last frequency is exactly 1 / 10000.
    const auto emb = diffuse::nn::timestep_embedding<TestType>(std::vector<int>{0, 37}, 8);
    CHECK(emb(0, 0) == TestType(0));
    CHECK(emb(0, 4) == TestType(1));
    CHECK(emb(1, 0) == Approx(std::sin(37.0)).margin(1e-7));
    CHECK(emb(1, 7) == Approx(std::cos(37.0 / 10000)).margin(1e-7));
}

TEMPLATE_TEST_CASE("timestep_embedding with cos_first puts the cosine half first", "[nn][embedding]", float,
                   double) {
    diffuse::nn::TimestepEmbeddingOptions options;
    options.cos_first = true;
    const std::vector<int> t = {0, 3, 250, 999};
    for (const Index dim : {Index{64}, Index{7}}) {
        INFO("dim " << dim);
        check_embedding(diffuse::nn::timestep_embedding<TestType>(t, dim, options), t, dim, true);
    }
}

TEMPLATE_TEST_CASE("timestep_embedding with an odd dim appends one zero column", "[nn][embedding]", float,
                   double) {
    const std::vector<int> t = {1, 10, 999};
    for (const Index dim : {Index{5}, Index{129}}) {
        INFO("dim " << dim);
        const auto emb = diffuse::nn::timestep_embedding<TestType>(t, dim);
        check_embedding(emb, t, dim, false);
        for (Index n = 0; n < 3; ++n) CHECK(emb(n, dim - 1) == TestType(0));
    }
}

TEMPLATE_TEST_CASE("timestep_embedding embeds fractional timesteps by the same formula", "[nn][embedding]",
                   float, double) {
    const std::vector<double> t = {0.5, 12.25, 998.999, 1e-3};
    check_embedding(diffuse::nn::timestep_embedding<TestType>(t, 32), t, 32, false);
    const std::vector<float> t_float = {0.5f, 7.75f};
    check_embedding(diffuse::nn::timestep_embedding<TestType>(t_float, 10), t_float, 10, false);
}

TEST_CASE(
    "timestep_embedding with freq_shift 0 uses the Transformer's frequencies exp(-ln(max_period) i / half)",
    "[nn][embedding]") {
    diffuse::nn::TimestepEmbeddingOptions options;
    options.freq_shift = 0;
    options.max_period = 1000;
    const std::vector<int> t = {0, 5, 999};
    check_embedding(diffuse::nn::timestep_embedding<double>(t, 16, options), t, 16, false, 1000, 0);
    // dim 2 is allowed here: half = 1 > freq_shift = 0, a single frequency 1.
    const auto emb = diffuse::nn::timestep_embedding<double>(t, 2, options);
    CHECK(emb(1, 0) == Approx(std::sin(5.0)).margin(1e-15));
    CHECK(emb(1, 1) == Approx(std::cos(5.0)).margin(1e-15));
}

TEST_CASE("timestep_embedding of an empty batch has no rows", "[nn][embedding]") {
    const auto emb = diffuse::nn::timestep_embedding<float>(std::vector<int>{}, 8);
    CHECK(emb.dimension(0) == 0);
    CHECK(emb.dimension(1) == 8);
}

TEST_CASE("timestep_embedding rejects a dim too small for its frequencies", "[nn][embedding][errors]") {
    using Catch::Contains;
    // DDPM's spacing ln(10000) / (half - 1) needs half >= 2, so dim >= 4.
    for (const Index dim : {Index{0}, Index{1}, Index{2}, Index{3}}) {
        INFO("dim " << dim);
        REQUIRE_THROWS_AS(diffuse::nn::timestep_embedding<float>(std::vector<int>{1}, dim),
                          diffuse::invalid_argument);
        REQUIRE_THROWS_WITH(diffuse::nn::timestep_embedding<float>(std::vector<int>{1}, dim),
                            Contains("dim = " + std::to_string(dim)));
    }
    diffuse::nn::TimestepEmbeddingOptions options;
    options.max_period = 0;
    REQUIRE_THROWS_WITH(diffuse::nn::timestep_embedding<float>(std::vector<int>{1}, 8, options),
                        Contains("max_period = 0"));
}
