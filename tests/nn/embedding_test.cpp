// The class embedding and the time-embedding MLP: lookups, gradients, and labels out of range.

#include "../support/layers.hpp"

#include <diffuse/nn/embedding.hpp>
#include <diffuse/nn/time_mlp.hpp>

#include <catch2/catch.hpp>

TEST_CASE("Embedding looks up one row per label and accumulates its gradient into that row", "[nn][embedding]") {
    diffuse::Generator gen(71);
    diffuse::nn::Embedding<double> embedding(4, 3, gen);
    const auto y = embedding.forward({2, 0, 2});
    for (int n = 0; n < 3; ++n)
        for (int i = 0; i < 3; ++i) REQUIRE(y(n, i) == embedding.weight.data()[(n == 1 ? 0 : 2) * 3 + i]);
    diffuse::Tensor2<double> dy(3, 3);
    dy.setConstant(1.0);
    diffuse::nn::zero_grad(embedding);
    embedding.backward(dy);
    REQUIRE(embedding.weight.grad()[2 * 3] == 2.0);  // label 2 appeared twice
    REQUIRE(embedding.weight.grad()[0] == 1.0);
    REQUIRE(embedding.weight.grad()[3] == 0.0);
    REQUIRE_THROWS_WITH(embedding.forward({4}), Catch::Contains("labels[0] = 4"));
}

TEST_CASE("The time-embedding MLP's parameter gradients match finite differences", "[nn][time_embedding][gradient]") {
    diffuse::Generator gen(72);
    diffuse::nn::TimeMLP<double> temb(8, 32, gen);
    const std::vector<int> t = {0, 17, 999};
    const auto report = diffuse::testing::check_gradients(
        temb, {}, [&] { return temb.forward(t); }, [&](const auto& g) { temb.backward(g); });
    REQUIRE_GRADIENTS_MATCH(report);
}

TEST_CASE("Embedding's backward pass rejects a gradient that is not one row of dim values per label", "[nn][embedding][errors]") {
    diffuse::Generator gen(73);
    diffuse::nn::Embedding<float> embedding(4, 3, gen);
    embedding.forward({2, 0});
    REQUIRE_THROWS_AS(embedding.backward(diffuse::Tensor2<float>(3, 3)), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(embedding.backward(diffuse::Tensor2<float>(3, 3)),
                        Catch::Contains("dy.shape = [3, 3]") && Catch::Contains("[N, dim] = [2, 3]"));
    REQUIRE_THROWS_WITH(embedding.backward(diffuse::Tensor2<float>(2, 4)), Catch::Contains("dy.shape = [2, 4]"));
    diffuse::Tensor2<float> dy(2, 3);
    dy.setZero();
    REQUIRE_NOTHROW(embedding.backward(dy));
}
