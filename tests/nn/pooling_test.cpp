// Global average pooling: each channel's mean against a long double sum, and its backward pass by
// finite differences.

#include "../support/layers.hpp"

#include <diffuse/nn/pooling.hpp>

#include <catch2/catch.hpp>

TEST_CASE("Global average pooling takes the mean of each channel's feature map", "[nn][pooling]") {
    diffuse::Generator gen(61);
    const auto x = gen.randn<double, 4>({2, 3, 4, 5});
    diffuse::nn::GlobalAvgPool<double> pool;
    const auto y = pool.forward(x);
    REQUIRE(y.dimension(0) == 2);
    REQUIRE(y.dimension(1) == 3);
    for (int n = 0; n < 2; ++n) {
        for (int c = 0; c < 3; ++c) {
            long double sum = 0;
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 5; ++j) sum += x(n, c, i, j);
            REQUIRE(y(n, c) == Approx(static_cast<double>(sum / 20)).epsilon(1e-14).margin(1e-15));
        }
    }
}

TEST_CASE("Global average pooling's backward pass matches finite differences", "[nn][pooling][gradient]") {
    diffuse::Generator gen(62);
    diffuse::nn::GlobalAvgPool<double> pool;
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(pool, gen.randn<double, 4>({2, 3, 3, 4})));
}

TEST_CASE("Global average pooling spreads the gradient evenly over the pixels", "[nn][pooling]") {
    diffuse::nn::GlobalAvgPool<float> pool;
    pool.forward(diffuse::Tensor4<float>(diffuse::Tensor4<float>(1, 2, 2, 2).setZero()));
    diffuse::Tensor2<float> dy(1, 2);
    dy(0, 0) = 4.0f;
    dy(0, 1) = -8.0f;
    const auto dx = pool.backward(dy);
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
            REQUIRE(dx(0, 0, i, j) == 1.0f);
            REQUIRE(dx(0, 1, i, j) == -2.0f);
        }
}

TEST_CASE("Global average pooling rejects an empty input and a gradient of the wrong shape", "[nn][pooling][errors]") {
    diffuse::nn::GlobalAvgPool<float> pool;
    REQUIRE_THROWS_WITH(pool.forward(diffuse::Tensor4<float>(2, 3, 0, 4)), Catch::Contains("x.shape = [2, 3, 0, 4]"));
    pool.forward(diffuse::Tensor4<float>(diffuse::Tensor4<float>(2, 3, 4, 4).setZero()));
    REQUIRE_THROWS_WITH(pool.backward(diffuse::Tensor2<float>(2, 4)),
                        Catch::Contains("dy.shape = [2, 4]") && Catch::Contains("[2, 3]"));
}
