// Linear: y = x W^T + b against its definition, and its backward pass by finite differences.

#include "../support/layers.hpp"

#include <diffuse/nn/linear.hpp>

#include <catch2/catch.hpp>

using diffuse::Generator;

TEST_CASE("Linear computes x W^T + b", "[nn][linear]") {
    Generator gen(21);
    diffuse::nn::Linear<double> linear(4, 3, gen);
    const auto x = gen.randn<double, 2>({2, 4});
    const auto y = linear.forward(x);
    for (int n = 0; n < 2; ++n) {
        for (int o = 0; o < 3; ++o) {
            long double sum = linear.bias.data()[o];
            for (int i = 0; i < 4; ++i) sum += static_cast<long double>(linear.weight.data()[o * 4 + i]) * x(n, i);
            REQUIRE(y(n, o) == Approx(static_cast<double>(sum)).epsilon(1e-13));
        }
    }
}

TEST_CASE("Linear's backward pass matches finite differences", "[nn][linear][gradient]") {
    Generator gen(22);
    diffuse::nn::Linear<double> linear(6, 5, gen);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(linear, gen.randn<double, 2>({3, 6})));
}

TEST_CASE("Linear rejects an input of the wrong width", "[nn][linear][errors]") {
    Generator gen(23);
    diffuse::nn::Linear<float> linear(6, 5, gen);
    REQUIRE_THROWS_WITH(linear.forward(diffuse::Tensor2<float>(2, 4)), Catch::Contains("x.shape = [2, 4]"));
}
