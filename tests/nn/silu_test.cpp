// SiLU: x sigmoid(x) against its definition, and its derivative by finite differences.

#include "../support/layers.hpp"

#include <diffuse/nn/silu.hpp>

#include <catch2/catch.hpp>

#include <cmath>

TEST_CASE("SiLU computes x sigmoid(x)", "[nn][silu]") {
    diffuse::Generator gen(31);
    const auto x = gen.randn<double, 4>({2, 3, 50, 50});  // more than one parallel piece
    diffuse::nn::SiLU<double> silu;
    const auto y = silu.forward(x);
    for (diffuse::Index i = 0; i < x.size(); ++i) {
        const long double v = x.data()[i];
        REQUIRE(y.data()[i] == Approx(static_cast<double>(v / (1 + std::exp(-v)))).epsilon(1e-14).margin(1e-300));
    }
}

TEST_CASE("SiLU's backward pass matches finite differences", "[nn][silu][gradient]") {
    diffuse::Generator gen(32);
    diffuse::nn::SiLU<double> silu;
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(silu, gen.randn<double, 4>({2, 3, 4, 4})));
}
