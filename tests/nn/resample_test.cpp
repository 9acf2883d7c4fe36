// Nearest 2x upsampling and channel concatenation, and their adjoints by finite differences.

#include "../support/layers.hpp"

#include <diffuse/nn/resample.hpp>

#include <catch2/catch.hpp>

namespace {

// The free functions wrapped as a layer for the checker.
struct Upsample {
    diffuse::Tensor4<double> forward(const diffuse::Tensor4<double>& x) { return diffuse::nn::upsample_nearest2x(x); }
    diffuse::Tensor4<double> backward(const diffuse::Tensor4<double>& dy) { return diffuse::nn::upsample_nearest2x_backward(dy); }
    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}
};

}  // namespace

TEST_CASE("Nearest 2x upsampling copies each pixel to a 2x2 block", "[nn][resample]") {
    diffuse::Generator gen(51);
    const auto x = gen.randn<float, 4>({2, 3, 4, 5});
    const auto y = diffuse::nn::upsample_nearest2x(x);
    REQUIRE(y.dimension(2) == 8);
    REQUIRE(y.dimension(3) == 10);
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 3; ++c)
            for (int i = 0; i < 8; ++i)
                for (int j = 0; j < 10; ++j) REQUIRE(y(n, c, i, j) == x(n, c, i / 2, j / 2));
}

TEST_CASE("Upsampling's adjoint matches finite differences", "[nn][resample][gradient]") {
    diffuse::Generator gen(52);
    Upsample up;
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(up, gen.randn<double, 4>({2, 2, 3, 4})));
}

TEST_CASE("Channel concatenation puts a's channels first and split_channels undoes it", "[nn][resample]") {
    diffuse::Generator gen(53);
    const auto a = gen.randn<float, 4>({2, 3, 4, 4});
    const auto b = gen.randn<float, 4>({2, 5, 4, 4});
    const auto y = diffuse::nn::concat_channels(a, b);
    REQUIRE(y.dimension(1) == 8);
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 8; ++c)
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) REQUIRE(y(n, c, i, j) == (c < 3 ? a(n, c, i, j) : b(n, c - 3, i, j)));
    const auto [da, db] = diffuse::nn::split_channels(y, 3);
    REQUIRE(std::equal(a.data(), a.data() + a.size(), da.data()));
    REQUIRE(std::equal(b.data(), b.data() + b.size(), db.data()));
    REQUIRE_THROWS_WITH(diffuse::nn::concat_channels(a, diffuse::Tensor4<float>(2, 5, 4, 3)), Catch::Contains("b.shape = [2, 5, 4, 3]"));
}

TEST_CASE("split_channels rejects a first part with more channels than the gradient has, or fewer than none", "[nn][resample][errors]") {
    diffuse::Tensor4<float> dy(2, 5, 4, 4);
    dy.setZero();
    REQUIRE_THROWS_AS(diffuse::nn::split_channels(dy, 6), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::nn::split_channels(dy, 6), Catch::Contains("channels_a = 6") && Catch::Contains("[0, 5]"));
    REQUIRE_THROWS_WITH(diffuse::nn::split_channels(dy, -1), Catch::Contains("channels_a = -1"));
    const auto [a, b] = diffuse::nn::split_channels(dy, 5);
    REQUIRE(a.dimension(1) == 5);
    REQUIRE(b.dimension(1) == 0);
}
