// The EMA of the weights: the warm-up decay min(decay, (1 + n) / (10 + n)) and the average it keeps.

#include <diffuse/nn/linear.hpp>
#include <diffuse/optim/ema.hpp>

#include <catch2/catch.hpp>

TEST_CASE("The EMA averages the weights with the warm-up decay and copies them back by name", "[optim][ema]") {
    diffuse::Generator gen(1);
    diffuse::nn::Linear<double> layer(2, 2, gen);
    diffuse::optim::EMA<double> ema(0.9);
    long double shadow = 0;
    for (int n = 0; n < 30; ++n) {
        layer.weight.data()[0] = n;
        const long double d = std::min(0.9L, (1.0L + n) / (10.0L + n));
        REQUIRE(ema.current_decay() == Approx(static_cast<double>(d)).epsilon(1e-15));
        ema.update(layer);
        shadow = n == 0 ? 0.0L : d * shadow + (1 - d) * n;
        REQUIRE(ema.shadow().at("weight")[0] == Approx(static_cast<double>(shadow)).epsilon(1e-13));
    }
    diffuse::nn::Linear<double> copy(2, 2, gen);
    ema.copy_to(copy);
    REQUIRE(copy.weight.data()[0] == ema.shadow().at("weight")[0]);
    REQUIRE(copy.bias.data()[1] == layer.bias.data()[1]);  // a constant weight averages to itself
    diffuse::nn::Linear<double> other(3, 2, gen);
    REQUIRE_THROWS_WITH(ema.copy_to(other), Catch::Contains("weight"));
}
