// The attention block: forward against softmax(q.k / sqrt(d)) v evaluated naively in long double,
// its backward pass by finite differences (one and two heads), and heads that do not divide C.

#include "../support/layers.hpp"

#include <diffuse/nn/attention.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

using diffuse::Index;

TEST_CASE("The attention block adds proj_out(softmax(q k / sqrt(d)) v) to its input", "[nn][attention]") {
    for (const Index heads : {1, 2}) {
        diffuse::Generator gen(61);
        const Index C = 4, H = 2, W = 3, P = H * W, d = C / heads;
        diffuse::nn::AttentionBlock<double> attn(C, heads, 2, gen);
        const auto x = gen.randn<double, 4>({1, C, H, W});
        const auto y = attn.forward(x);
        // the reference: GroupNorm by hand, 1x1 convs as sums, softmax rows, all in long double
        using LD = long double;
        std::vector<LD> h(C * P), q(C * P), k(C * P), v(C * P), o(C * P);
        for (Index g = 0; g < 2; ++g) {
            LD mean = 0, var = 0;
            for (Index i = g * 2 * P; i < (g + 1) * 2 * P; ++i) mean += x.data()[i];
            mean /= 2 * P;
            for (Index i = g * 2 * P; i < (g + 1) * 2 * P; ++i) var += (x.data()[i] - mean) * (x.data()[i] - mean);
            var /= 2 * P;
            for (Index i = g * 2 * P; i < (g + 1) * 2 * P; ++i) h[i] = (x.data()[i] - mean) / std::sqrt(var + 1e-5L);
        }
        const auto conv1x1 = [&](const diffuse::nn::Conv2d<double>& conv, const std::vector<LD>& in, std::vector<LD>& out) {
            for (Index co = 0; co < C; ++co)
                for (Index p = 0; p < P; ++p) {
                    LD s = conv.bias.data()[co];
                    for (Index ci = 0; ci < C; ++ci) s += conv.weight.data()[co * C + ci] * in[ci * P + p];
                    out[co * P + p] = s;
                }
        };
        conv1x1(attn.q, h, q);
        conv1x1(attn.k, h, k);
        conv1x1(attn.v, h, v);
        for (Index head = 0; head < heads; ++head) {
            for (Index i = 0; i < P; ++i) {
                std::vector<LD> w(P);
                LD total = 0;
                for (Index j = 0; j < P; ++j) {
                    LD s = 0;
                    for (Index c = head * d; c < (head + 1) * d; ++c) s += q[c * P + i] * k[c * P + j];
                    w[j] = std::exp(s / std::sqrt(LD(d)));
                    total += w[j];
                }
                for (Index c = head * d; c < (head + 1) * d; ++c) {
                    LD s = 0;
                    for (Index j = 0; j < P; ++j) s += w[j] / total * v[c * P + j];
                    o[c * P + i] = s;
                }
            }
        }
        std::vector<LD> out(C * P);
        conv1x1(attn.proj_out, o, out);
        for (Index i = 0; i < C * P; ++i) REQUIRE(y.data()[i] == Approx(static_cast<double>(x.data()[i] + out[i])).epsilon(1e-11));
    }
}

TEST_CASE("The attention block's backward pass matches finite differences", "[nn][attention][gradient]") {
    for (const Index heads : {1, 2}) {
        diffuse::Generator gen(62);
        diffuse::nn::AttentionBlock<double> attn(4, heads, 2, gen);
        REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(attn, gen.randn<double, 4>({2, 4, 3, 3})));
    }
}

TEST_CASE("The attention block rejects heads that do not divide the channels", "[nn][attention][errors]") {
    diffuse::Generator gen(63);
    REQUIRE_THROWS_WITH(diffuse::nn::AttentionBlock<float>(6, 4, 2, gen), Catch::Contains("heads = 4"));
}
