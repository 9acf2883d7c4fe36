// The transformer parts of LDM's SpatialTransformer: LayerNorm, the GEGLU feed-forward, multi-head
// self- and cross-attention with a key padding mask, the transformer block and the spatial
// transformer. Forward against formulas in long double, every backward by finite differences in
// double (the mask and the context's gradient included), and bad input.

#include "../support/layers.hpp"

#include <diffuse/nn/spatial_transformer.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

using diffuse::Index;
using diffuse::Tensor3;

namespace {

// Every parameter drawn from N(0, 0.5^2): a zero-initialised proj_out, or LayerNorm's gamma = 1 and
// beta = 0, would leave parts of a gradient check trivially zero.
template <class Module>
void randomize_parameters(Module& module, std::uint64_t seed) {
    diffuse::Generator gen(seed);
    module.for_each_parameter("", [&gen](auto p) {
        gen.normal(p.value, p.size);
        for (Index i = 0; i < p.size; ++i) p.value[i] *= 0.5;
    });
}

}  // namespace

TEST_CASE("LayerNorm normalises each token over its features and scales it per feature", "[nn][transformer]") {
    diffuse::Generator gen(1);
    diffuse::nn::LayerNorm<double> norm(5);
    randomize_parameters(norm, 2);
    const auto x = gen.randn<double, 3>({2, 3, 5});
    const auto y = norm.forward(x);
    using LD = long double;
    for (Index r = 0; r < 6; ++r) {
        LD mean = 0, var = 0;
        for (Index i = 0; i < 5; ++i) mean += x.data()[r * 5 + i];
        mean /= 5;
        for (Index i = 0; i < 5; ++i) var += (x.data()[r * 5 + i] - mean) * (x.data()[r * 5 + i] - mean);
        var /= 5;
        for (Index i = 0; i < 5; ++i) {
            const LD expected = norm.weight.data()[i] * (x.data()[r * 5 + i] - mean) / std::sqrt(var + 1e-5L) + norm.bias.data()[i];
            REQUIRE(y.data()[r * 5 + i] == Approx(static_cast<double>(expected)).epsilon(1e-12));
        }
    }
}

TEST_CASE("LayerNorm's backward pass matches finite differences", "[nn][transformer][gradient]") {
    diffuse::Generator gen(3);
    diffuse::nn::LayerNorm<double> norm(6);
    randomize_parameters(norm, 4);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(norm, gen.randn<double, 3>({2, 4, 6})));
}

TEST_CASE("The GEGLU feed-forward computes out(a * GELU(g)) with the exact GELU", "[nn][transformer]") {
    using FF = diffuse::nn::FeedForward<double>;
    for (const double u : {-3.0, -0.5, 0.0, 0.7, 2.5}) {
        const double expected = 0.5 * u * (1.0 + std::erf(u / std::sqrt(2.0)));
        REQUIRE(FF::gelu(u) == Approx(expected).epsilon(1e-14).margin(1e-300));
        const double h = 1e-6;
        REQUIRE(FF::gelu_derivative(u) == Approx((FF::gelu(u + h) - FF::gelu(u - h)) / (2 * h)).epsilon(1e-8));
    }
    diffuse::Generator gen(5);
    FF ff(3, 2, gen);
    REQUIRE(ff.inner_features() == 6);
    const auto x = gen.randn<double, 3>({1, 2, 3});
    const auto y = ff.forward(x);
    for (Index r = 0; r < 2; ++r) {
        std::vector<long double> h(6);
        for (Index i = 0; i < 6; ++i) {
            long double a = ff.proj.bias.data()[i], g = ff.proj.bias.data()[6 + i];
            for (Index k = 0; k < 3; ++k) {
                a += ff.proj.weight.data()[i * 3 + k] * x.data()[r * 3 + k];
                g += ff.proj.weight.data()[(6 + i) * 3 + k] * x.data()[r * 3 + k];
            }
            h[i] = a * 0.5L * g * (1.0L + std::erf(g / std::sqrt(2.0L)));
        }
        for (Index o = 0; o < 3; ++o) {
            long double s = ff.out.bias.data()[o];
            for (Index i = 0; i < 6; ++i) s += ff.out.weight.data()[o * 6 + i] * h[i];
            REQUIRE(y.data()[r * 3 + o] == Approx(static_cast<double>(s)).epsilon(1e-12));
        }
    }
}

TEST_CASE("The float GEGLU's vectorised GELU and its gradient agree with the double formulas", "[nn][transformer]") {
    // Eigen's float erf is within 4e-7 of the exact erf; the float layer against the double one
    // with the same weights, forward and backward, on gates from -6 to 6.
    diffuse::Generator gen(9);
    diffuse::nn::FeedForward<double> exact(8, 4, gen);
    diffuse::nn::FeedForward<float> fast(8, 4, gen);
    std::vector<double> weights;
    exact.for_each_parameter("", [&](auto p) { weights.insert(weights.end(), p.value, p.value + p.size); });
    std::size_t at = 0;
    fast.for_each_parameter("", [&](auto p) {
        for (Index i = 0; i < p.size; ++i) p.value[i] = static_cast<float>(weights[at++]);
    });
    exact.for_each_parameter("", [&](auto p) {  // the double layer takes the float-rounded weights too
        for (Index i = 0; i < p.size; ++i) p.value[i] = static_cast<double>(static_cast<float>(p.value[i]));
    });
    auto x = gen.randn<double, 3>({2, 5, 8});
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<double>(static_cast<float>(3 * x.data()[i]));
    const auto dy = gen.randn<double, 3>({2, 5, 8});
    const auto y = exact.forward(x);
    const auto dx = exact.backward(dy);
    const auto yf = fast.forward(diffuse::Tensor3<float>(x.cast<float>()));
    const auto dxf = fast.backward(diffuse::Tensor3<float>(dy.cast<float>()));
    double y_scale = 0, dx_scale = 0, y_error = 0, dx_error = 0;
    for (Index i = 0; i < y.size(); ++i) {
        y_scale = std::max(y_scale, std::abs(y.data()[i]));
        dx_scale = std::max(dx_scale, std::abs(dx.data()[i]));
        y_error = std::max(y_error, std::abs(y.data()[i] - yf.data()[i]));
        dx_error = std::max(dx_error, std::abs(dx.data()[i] - dxf.data()[i]));
    }
    INFO("forward error " << y_error << " of " << y_scale << ", backward " << dx_error << " of " << dx_scale);
    REQUIRE(y_error < 2e-6 * y_scale);
    REQUIRE(dx_error < 2e-6 * dx_scale);
}

TEST_CASE("The GEGLU feed-forward's backward pass matches finite differences", "[nn][transformer][gradient]") {
    diffuse::Generator gen(6);
    diffuse::nn::FeedForward<double> ff(4, 2, gen);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(ff, gen.randn<double, 3>({2, 3, 4})));
}

TEST_CASE("Cross-attention attends over the context's real tokens only", "[nn][transformer]") {
    for (const Index heads : {1, 2}) {
        diffuse::Generator gen(7);
        const Index D = 4, Dc = 3, dh = 2, L = 3, Lc = 4, inner = heads * dh;
        diffuse::nn::CrossAttention<double> attn(D, Dc, heads, dh, gen);
        const auto x = gen.randn<double, 3>({2, L, D});
        const auto c = gen.randn<double, 3>({2, Lc, Dc});
        const diffuse::KeyMask mask = {1, 1, 0, 1, 1, 0, 0, 0};  // sample 0: token 2 padded; sample 1: 2 real
        const auto y = attn.forward(x, &c, mask);
        using LD = long double;
        const auto project = [](const diffuse::nn::Linear<double>& lin, const double* in, Index width, Index o) {
            LD s = lin.has_bias() ? lin.bias.data()[o] : 0;
            for (Index k = 0; k < width; ++k) s += lin.weight.data()[o * width + k] * in[k];
            return s;
        };
        for (Index s = 0; s < 2; ++s) {
            for (Index i = 0; i < L; ++i) {
                std::vector<LD> o(inner);
                for (Index h = 0; h < heads; ++h) {
                    std::vector<LD> w(Lc, 0);
                    LD total = 0;
                    for (Index j = 0; j < Lc; ++j) {
                        if (!mask[s * Lc + j]) continue;
                        LD dot = 0;
                        for (Index e = h * dh; e < (h + 1) * dh; ++e) {
                            dot += project(attn.to_q, x.data() + (s * L + i) * D, D, e) *
                                   project(attn.to_k, c.data() + (s * Lc + j) * Dc, Dc, e);
                        }
                        w[j] = std::exp(dot / std::sqrt(LD(dh)));
                        total += w[j];
                    }
                    for (Index e = h * dh; e < (h + 1) * dh; ++e) {
                        for (Index j = 0; j < Lc; ++j) o[e] += w[j] / total * project(attn.to_v, c.data() + (s * Lc + j) * Dc, Dc, e);
                    }
                }
                for (Index out = 0; out < D; ++out) {
                    LD v = attn.to_out.bias.data()[out];
                    for (Index e = 0; e < inner; ++e) v += attn.to_out.weight.data()[out * inner + e] * o[e];
                    REQUIRE(y.data()[(s * L + i) * D + out] == Approx(static_cast<double>(v)).epsilon(1e-11));
                }
            }
        }
    }
}

TEST_CASE("A padded prompt gives the same attention output as the unpadded one", "[nn][transformer]") {
    diffuse::Generator gen(8);
    diffuse::nn::CrossAttention<double> attn(4, 3, 2, 2, gen);
    const auto x = gen.randn<double, 3>({1, 5, 4});
    const auto c = gen.randn<double, 3>({1, 2, 3});
    Tensor3<double> padded(1, 4, 3);  // the same two tokens, then two tokens of padding
    padded.setConstant(7.0);
    std::copy_n(c.data(), c.size(), padded.data());
    const auto short_y = attn.forward(x, &c, {});
    const auto padded_y = attn.forward(x, &padded, {1, 1, 0, 0});
    for (Index i = 0; i < short_y.size(); ++i) REQUIRE(padded_y.data()[i] == Approx(short_y.data()[i]).epsilon(1e-13));
}

TEST_CASE("Self- and cross-attention's backward passes match finite differences, mask included", "[nn][transformer][gradient]") {
    for (const Index heads : {1, 2}) {
        diffuse::Generator gen(9);
        diffuse::nn::CrossAttention<double> self(4, 0, heads, 2, gen);
        REQUIRE(self.self_attention());
        auto u = gen.randn<double, 3>({2, 3, 4});
        const diffuse::KeyMask self_mask = {1, 1, 0, 1, 1, 1};  // a padded token of a prompt attends over the real ones
        diffuse::nn::AttentionGradients<double> ds;
        const auto self_report = diffuse::testing::check_gradients(
            self, {{"x", u.data(), u.size(), [&] { return static_cast<const double*>(ds.dx.data()); }}},
            [&] { return self.forward(u, nullptr, self_mask); }, [&](const auto& g) { ds = self.backward(g); });
        REQUIRE_GRADIENTS_MATCH(self_report);
        REQUIRE(ds.dcontext.size() == 0);

        diffuse::nn::CrossAttention<double> cross(4, 3, heads, 2, gen);
        auto x = gen.randn<double, 3>({2, 3, 4});
        auto c = gen.randn<double, 3>({2, 4, 3});
        const diffuse::KeyMask mask = {1, 0, 1, 1, 1, 1, 0, 0};
        diffuse::nn::AttentionGradients<double> d;
        const auto report = diffuse::testing::check_gradients(
            cross,
            {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(d.dx.data()); }},
             {"context", c.data(), c.size(), [&] { return static_cast<const double*>(d.dcontext.data()); }}},
            [&] { return cross.forward(x, &c, mask); }, [&](const auto& g) { d = cross.backward(g); });
        REQUIRE_GRADIENTS_MATCH(report);
    }
}

TEST_CASE("The transformer block's and the spatial transformer's backward passes match finite differences", "[nn][transformer][gradient]") {
    diffuse::Generator gen(10);
    diffuse::nn::TransformerBlock<double> block(4, 2, 2, 3, gen);
    randomize_parameters(block, 11);
    auto u = gen.randn<double, 3>({2, 3, 4});
    auto c = gen.randn<double, 3>({2, 2, 3});
    const diffuse::KeyMask mask = {1, 1, 1, 0};
    diffuse::nn::ContextGradients<double, Tensor3<double>> d;
    const auto block_report = diffuse::testing::check_gradients(
        block,
        {{"u", u.data(), u.size(), [&] { return static_cast<const double*>(d.dx.data()); }},
         {"context", c.data(), c.size(), [&] { return static_cast<const double*>(d.dcontext.data()); }}},
        [&] { return block.forward(u, c, mask); }, [&](const auto& g) { d = block.backward(g); });
    REQUIRE_GRADIENTS_MATCH(block_report);

    diffuse::nn::SpatialTransformer<double> st(4, 2, 2, 3, 2, gen);
    randomize_parameters(st, 12);
    auto x = gen.randn<double, 4>({2, 4, 2, 3});
    diffuse::nn::ContextGradients<double, diffuse::Tensor4<double>> ds;
    const auto st_report = diffuse::testing::check_gradients(
        st,
        {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(ds.dx.data()); }},
         {"context", c.data(), c.size(), [&] { return static_cast<const double*>(ds.dcontext.data()); }}},
        [&] { return st.forward(x, c, mask); }, [&](const auto& g) { ds = st.backward(g); });
    REQUIRE_GRADIENTS_MATCH(st_report);
}

TEST_CASE("A new spatial transformer is the identity, and its parameters have LDM's names", "[nn][transformer]") {
    diffuse::Generator gen(13);
    diffuse::nn::SpatialTransformer<float> st(8, 2, 4, 5, 4, gen);
    const auto x = gen.randn<float, 4>({2, 8, 3, 3});
    const auto c = gen.randn<float, 3>({2, 4, 5});
    const auto y = st.forward(x, c, {});
    REQUIRE(std::equal(x.data(), x.data() + x.size(), y.data()));  // proj_out starts at zero
    std::vector<std::string> names;
    st.for_each_parameter("", [&names](auto p) { names.push_back(p.name); });
    const std::vector<std::string> expected = {
        "norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias",
        "transformer_blocks.0.attn1.to_q.weight", "transformer_blocks.0.attn1.to_k.weight",
        "transformer_blocks.0.attn1.to_v.weight", "transformer_blocks.0.attn1.to_out.0.weight",
        "transformer_blocks.0.attn1.to_out.0.bias", "transformer_blocks.0.ff.net.0.proj.weight",
        "transformer_blocks.0.ff.net.0.proj.bias", "transformer_blocks.0.ff.net.2.weight",
        "transformer_blocks.0.ff.net.2.bias", "transformer_blocks.0.attn2.to_q.weight",
        "transformer_blocks.0.attn2.to_k.weight", "transformer_blocks.0.attn2.to_v.weight",
        "transformer_blocks.0.attn2.to_out.0.weight", "transformer_blocks.0.attn2.to_out.0.bias",
        "transformer_blocks.0.norm1.weight", "transformer_blocks.0.norm1.bias", "transformer_blocks.0.norm2.weight",
        "transformer_blocks.0.norm2.bias", "transformer_blocks.0.norm3.weight", "transformer_blocks.0.norm3.bias",
        "proj_out.weight", "proj_out.bias"};
    REQUIRE(names == expected);
}

TEST_CASE("Cross-attention rejects a context of the wrong width, a bad mask and a missing context", "[nn][transformer][errors]") {
    diffuse::Generator gen(14);
    diffuse::nn::CrossAttention<float> cross(4, 3, 1, 2, gen);
    const auto x = gen.randn<float, 3>({2, 3, 4});
    const auto wide = gen.randn<float, 3>({2, 2, 5});
    REQUIRE_THROWS_WITH(cross.forward(x, &wide, {}), Catch::Contains("context.shape") && Catch::Contains("[N, L, 3]"));
    const auto c = gen.randn<float, 3>({2, 2, 3});
    REQUIRE_THROWS_WITH(cross.forward(x, &c, {1, 1, 1}), Catch::Contains("mask.size()"));
    REQUIRE_THROWS_WITH(cross.forward(x, &c, {1, 1, 0, 0}), Catch::Contains("mask of sample 1") && Catch::Contains("real token"));
    REQUIRE_THROWS_WITH(cross.forward(x, nullptr, {}), Catch::Contains("context"));
    const auto other_batch = gen.randn<float, 3>({3, 2, 3});
    REQUIRE_THROWS_WITH(cross.forward(x, &other_batch, {}), Catch::Contains("one sequence per sample"));
    diffuse::nn::CrossAttention<float> self(4, 0, 1, 2, gen);
    REQUIRE_THROWS_WITH(self.forward(x, &c, {}), Catch::Contains("self-attention"));
}
