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

TEST_CASE("SiLU's backward pass rejects a gradient shaped unlike the forward input", "[nn][silu][errors]") {
    diffuse::nn::SiLU<float> silu;
    diffuse::Tensor4<float> x(2, 3, 4, 4);
    x.setZero();
    silu.forward(x);
    REQUIRE_THROWS_AS(silu.backward(diffuse::Tensor4<float>(2, 3, 4, 5)), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(silu.backward(diffuse::Tensor4<float>(2, 3, 4, 5)),
                        Catch::Contains("dy.shape = [2, 3, 4, 5]") && Catch::Contains("[2, 3, 4, 4]"));
    // the same number of values in another shape is still a mismatch
    REQUIRE_THROWS_WITH(silu.backward(diffuse::Tensor4<float>(2, 3, 2, 8)), Catch::Contains("dy.shape = [2, 3, 2, 8]"));
    REQUIRE_THROWS_WITH(silu.backward(diffuse::Tensor2<float>(6, 16)), Catch::Contains("dy.shape = [6, 16]"));
    REQUIRE_THROWS_WITH(silu.backward(diffuse::Tensor4<float>(0, 3, 4, 4)), Catch::Contains("dy.shape = [0, 3, 4, 4]"));
    diffuse::Tensor4<float> dy(2, 3, 4, 4);
    dy.setZero();
    REQUIRE_NOTHROW(silu.backward(dy));
}
