// GroupNorm: each (sample, group) normalised to mean 0 and variance 1 before the affine map, the
// backward pass by finite differences, and groups that do not divide the channels.

#include "../support/layers.hpp"

#include <diffuse/nn/group_norm.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>

using diffuse::Index;

TEST_CASE("GroupNorm normalises each group by its mean and biased variance, then scales and shifts", "[nn][group_norm]") {
    diffuse::Generator gen(41);
    diffuse::nn::GroupNorm<double> norm(2, 4, 1e-5);
    norm.weight.init_uniform(gen, 2.0);
    norm.bias.init_uniform(gen, 2.0);
    auto x = gen.randn<double, 4>({2, 4, 3, 5});
    const auto y = norm.forward(x);
    for (int n = 0; n < 2; ++n) {
        for (int g = 0; g < 2; ++g) {
            long double mean = 0, var = 0;
            for (int c = 2 * g; c < 2 * g + 2; ++c)
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 5; ++j) mean += x(n, c, i, j);
            mean /= 30;
            for (int c = 2 * g; c < 2 * g + 2; ++c)
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 5; ++j) var += (x(n, c, i, j) - mean) * (x(n, c, i, j) - mean);
            var /= 30;
            for (int c = 2 * g; c < 2 * g + 2; ++c)
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 5; ++j) {
                        const long double expected = (x(n, c, i, j) - mean) / std::sqrt(var + 1e-5L) * norm.weight.data()[c] + norm.bias.data()[c];
                        REQUIRE(y(n, c, i, j) == Approx(static_cast<double>(expected)).epsilon(1e-12).margin(1e-12));
                    }
        }
    }
}

TEST_CASE("GroupNorm's backward pass matches finite differences", "[nn][group_norm][gradient]") {
    diffuse::Generator gen(42);
    diffuse::nn::GroupNorm<double> norm(3, 6);
    norm.weight.init_uniform(gen, 2.0);
    norm.bias.init_uniform(gen, 2.0);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(norm, gen.randn<double, 4>({2, 6, 3, 4})));
}

TEST_CASE("GroupNorm with a fused SiLU is SiLU of GroupNorm, evaluated in place or not, and its backward matches finite differences", "[nn][group_norm][gradient]") {
    diffuse::Generator gen(43);
    diffuse::nn::GroupNorm<double> plain(2, 4);
    diffuse::nn::GroupNorm<double> fused(2, 4, 1e-5, diffuse::nn::Activation::silu);
    plain.weight.init_uniform(gen, 2.0);
    plain.bias.init_uniform(gen, 2.0);
    fused.weight.value() = plain.weight.value();
    fused.bias.value() = plain.bias.value();
    const auto x = gen.randn<double, 4>({2, 4, 3, 5});
    const auto u = plain.forward(x);
    const auto y = fused.forward(x);
    for (Index i = 0; i < x.size(); ++i) {
        const long double v = u.data()[i];
        REQUIRE(y.data()[i] == Approx(static_cast<double>(v / (1 + std::exp(-v)))).epsilon(1e-14).margin(1e-15));
    }
    fused.set_training(false);
    diffuse::Tensor4<double> moved = x;
    const auto in_place = fused.forward(std::move(moved));
    REQUIRE(std::equal(y.data(), y.data() + y.size(), in_place.data()));
    fused.set_training(true);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(fused, gen.randn<double, 4>({2, 4, 3, 4})));
}

TEST_CASE("GroupNorm with a borrowed input (std::cref) gives the bits of a copied one and reads the caller's tensor", "[nn][group_norm]") {
    diffuse::Generator gen(44);
    diffuse::nn::GroupNorm<float> copied(2, 4, 1e-5, diffuse::nn::Activation::silu);
    copied.weight.init_uniform(gen, 2.0);
    copied.bias.init_uniform(gen, 2.0);
    diffuse::nn::GroupNorm<float> borrowed = copied;
    const auto x = gen.randn<float, 4>({2, 4, 3, 5});
    const auto y = copied.forward(x);
    const auto y_borrowed = borrowed.forward(std::cref(x));
    REQUIRE(std::equal(y.data(), y.data() + y.size(), y_borrowed.data()));
    REQUIRE(&borrowed.input() == &x);  // kept by reference, not copied
    const auto dy = gen.randn<float, 4>({2, 4, 3, 5});
    const auto dx = copied.backward(dy), dx_borrowed = borrowed.backward(dy);
    CHECK(std::equal(dx.data(), dx.data() + dx.size(), dx_borrowed.data()));
    CHECK(std::equal(copied.weight.grad(), copied.weight.grad() + 4, borrowed.weight.grad()));
    CHECK(std::equal(copied.bias.grad(), copied.bias.grad() + 4, borrowed.bias.grad()));
}

TEST_CASE("GroupNorm rejects groups that do not divide the channels", "[nn][group_norm][errors]") {
    REQUIRE_THROWS_AS(diffuse::nn::GroupNorm<float>(3, 8), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::nn::GroupNorm<float>(3, 8), Catch::Contains("channels = 8") && Catch::Contains("groups = 3"));
    diffuse::nn::GroupNorm<float> norm(2, 8);
    REQUIRE_THROWS_WITH(norm.forward(diffuse::Tensor4<float>(1, 4, 2, 2)), Catch::Contains("8 channels"));
}
