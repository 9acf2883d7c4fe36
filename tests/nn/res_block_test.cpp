// The residual block: gradients for x, the time embedding and every parameter, with and without the
// 1x1 shortcut and with dropout on; dropout off in evaluation.

#include "../support/layers.hpp"

#include <diffuse/nn/res_block.hpp>

#include <catch2/catch.hpp>

TEST_CASE("ResBlock's backward pass matches finite differences, shortcut or identity, with dropout", "[nn][res_block][gradient]") {
    for (const diffuse::Index out : {4, 6}) {
        diffuse::Generator gen(81);
        diffuse::nn::ResBlock<double> block(4, out, 5, 2, 0.3, gen);
        REQUIRE(block.has_shortcut() == (out != 4));
        auto x = gen.randn<double, 4>({2, 4, 4, 3});
        auto temb = gen.randn<double, 2>({2, 5});
        const diffuse::Generator stream(99);
        diffuse::Tensor4<double> dx;
        diffuse::Tensor2<double> dtemb;
        const auto report = diffuse::testing::check_gradients(
            block,
            {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }},
             {"temb", temb.data(), temb.size(), [&] { return static_cast<const double*>(dtemb.data()); }}},
            [&] { return block.forward(x, temb, stream); },
            [&](const auto& g) { std::tie(dx, dtemb) = block.backward(g); });
        REQUIRE_GRADIENTS_MATCH(report);
    }
}

TEST_CASE("ResBlock's output does not depend on the dropout stream in evaluation", "[nn][res_block]") {
    diffuse::Generator gen(82);
    diffuse::nn::ResBlock<float> block(4, 4, 5, 2, 0.5, gen);
    const auto x = gen.randn<float, 4>({2, 4, 4, 4});
    const auto temb = gen.randn<float, 2>({2, 5});
    const auto a = block.forward(x, temb, diffuse::Generator(1));
    const auto b = block.forward(x, temb, diffuse::Generator(2));
    REQUIRE(!std::equal(a.data(), a.data() + a.size(), b.data()));
    block.set_training(false);
    const auto c = block.forward(x, temb, diffuse::Generator(1));
    const auto d = block.forward(x, temb, diffuse::Generator(2));
    REQUIRE(std::equal(c.data(), c.data() + c.size(), d.data()));
}

TEST_CASE("A ResBlock without an embedding term matches finite differences and has no temb_proj", "[nn][res_block][gradient]") {
    for (const diffuse::Index out : {4, 6}) {
        diffuse::Generator gen(83);
        diffuse::nn::ResBlock<double> block(4, out, 0, 2, 0.0, gen);
        REQUIRE_FALSE(block.has_embedding());
        auto x = gen.randn<double, 4>({2, 4, 4, 3});
        const diffuse::Generator stream(99);
        diffuse::Tensor4<double> dx;
        const auto report = diffuse::testing::check_gradients(
            block, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
            [&] { return block.forward(x, stream); },
            [&](const auto& g) {
                auto [gx, gtemb] = block.backward(g);
                CHECK(gtemb.size() == 0);
                dx = std::move(gx);
            });
        REQUIRE_GRADIENTS_MATCH(report);
        int temb_parameters = 0;
        block.for_each_parameter("b", [&](auto p) { temb_parameters += p.name.find("temb_proj") != std::string::npos; });
        CHECK(temb_parameters == 0);
    }
}

TEST_CASE("ResBlock refuses an embedding it was not built for, and the lack of one it was", "[nn][res_block][errors]") {
    diffuse::Generator gen(84);
    diffuse::nn::ResBlock<float> plain(4, 4, 0, 2, 0.0, gen), conditioned(4, 4, 5, 2, 0.0, gen);
    const auto x = gen.randn<float, 4>({1, 4, 2, 2});
    const auto temb = gen.randn<float, 2>({1, 5});
    REQUIRE_THROWS_WITH(plain.forward(x, temb, diffuse::Generator(1)), Catch::Contains("embedding_channels = 0"));
    REQUIRE_THROWS_WITH(conditioned.forward(x, diffuse::Generator(1)), Catch::Contains("[N, 5] embedding"));
}
