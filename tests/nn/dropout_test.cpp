// Dropout: the kept fraction and scaling, the same mask for the same stream, identity in evaluation,
// and its backward pass by finite differences.

#include "../support/layers.hpp"

#include <diffuse/nn/dropout.hpp>

#include <catch2/catch.hpp>

#include <cmath>

TEST_CASE("Dropout keeps a fraction 1 - p of the values, scaled by 1 / (1 - p)", "[nn][dropout]") {
    diffuse::nn::Dropout<double> dropout(0.3);
    diffuse::Tensor2<double> x(100, 1000);
    x.setConstant(2.0);
    const auto y = dropout.forward(x, diffuse::Generator(5));
    long kept = 0;
    for (diffuse::Index i = 0; i < y.size(); ++i) {
        REQUIRE((y.data()[i] == 0.0 || y.data()[i] == Approx(2.0 / 0.7).epsilon(1e-15)));
        kept += y.data()[i] != 0.0;
    }
    // Binomial(1e5, 0.7): standard deviation sqrt(1e5 * 0.21) = 145; allow 5 of them.
    REQUIRE(std::abs(kept - 70000) < 5 * 145);
}

TEST_CASE("Dropout draws the same mask from the same stream and is the identity in evaluation", "[nn][dropout]") {
    diffuse::nn::Dropout<float> dropout(0.5);
    diffuse::Generator gen(6);
    const auto x = gen.randn<float, 2>({8, 64});
    const auto a = dropout.forward(x, diffuse::Generator(9, 4));
    const auto b = dropout.forward(x, diffuse::Generator(9, 4));
    const auto c = dropout.forward(x, diffuse::Generator(9, 5));
    REQUIRE(std::equal(a.data(), a.data() + a.size(), b.data()));
    REQUIRE(!std::equal(a.data(), a.data() + a.size(), c.data()));
    dropout.set_training(false);
    const auto d = dropout.forward(x, diffuse::Generator(9, 4));
    REQUIRE(std::equal(x.data(), x.data() + x.size(), d.data()));
}

TEST_CASE("Dropout's backward pass matches finite differences", "[nn][dropout][gradient]") {
    diffuse::nn::Dropout<double> dropout(0.4);
    diffuse::Generator gen(7);
    auto x = gen.randn<double, 4>({2, 3, 4, 4});
    diffuse::Tensor4<double> dx;
    const auto report = diffuse::testing::check_gradients(
        dropout, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
        [&] { return dropout.forward(x, diffuse::Generator(1)); }, [&](const auto& g) { dx = dropout.backward(g); });
    REQUIRE_GRADIENTS_MATCH(report);
}

TEST_CASE("Dropout rejects a probability outside 0 <= p < 1", "[nn][dropout][errors]") {
    REQUIRE_THROWS_WITH(diffuse::nn::Dropout<float>(1.0), Catch::Contains("p = 1"));
    REQUIRE_THROWS_WITH(diffuse::nn::Dropout<float>(-0.1), Catch::Contains("p = -0.1"));
}

TEST_CASE("Dropout's backward pass rejects a gradient shaped unlike the forward input", "[nn][dropout][errors]") {
    diffuse::nn::Dropout<float> dropout(0.5);
    diffuse::Tensor4<float> x(2, 3, 4, 4);
    x.setConstant(1.0f);
    dropout.forward(x, diffuse::Generator(3));
    REQUIRE_THROWS_AS(dropout.backward(diffuse::Tensor4<float>(2, 3, 4, 5)), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(dropout.backward(diffuse::Tensor4<float>(2, 3, 4, 5)),
                        Catch::Contains("dy.shape = [2, 3, 4, 5]") && Catch::Contains("[2, 3, 4, 4]"));
    REQUIRE_THROWS_WITH(dropout.backward(diffuse::Tensor4<float>(3, 2, 4, 4)), Catch::Contains("dy.shape = [3, 2, 4, 4]"));
    REQUIRE_THROWS_WITH(dropout.backward(diffuse::Tensor2<float>(6, 16)), Catch::Contains("dy.shape = [6, 16]"));
    REQUIRE_NOTHROW(dropout.backward(x));
}
