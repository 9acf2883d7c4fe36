// Latent diffusion's autoencoder: shapes and LDM's parameter names, the whole model's gradients by
// finite differences in double (through the reparameterised posterior), the KL against its closed
// form in long double and its gradient, the posterior samples' moments, the same bits with 1 and 2
// threads, and the configurations and inputs it refuses.

#include "../support/bits.hpp"
#include "../support/layers.hpp"
#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/models/autoencoder.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <set>
#include <string>
#include <vector>

namespace {

// Two levels (8x8 -> 4x4), one block per level, two latent channels: every kind of layer.
diffuse::AutoencoderConfig two_level_autoencoder() {
    diffuse::AutoencoderConfig c;
    c.in_channels = 1;
    c.ch = 4;
    c.ch_mult = {1, 2};
    c.num_res_blocks = 1;
    c.z_channels = 2;
    c.groups = 2;
    c.image_size = 8;
    return c;
}

}  // namespace

TEST_CASE("The autoencoder maps images to moments at 1/f the size and latents back, under LDM's names", "[models][autoencoder]") {
    diffuse::Autoencoder<float> ae(two_level_autoencoder(), 1);
    CHECK(ae.config().downsampling_factor() == 2);
    const auto x = diffuse::Generator(2).randn<float, 4>({3, 1, 8, 8});
    const auto moments = ae.encode(x);
    REQUIRE(moments.dimensions() == std::array<diffuse::Index, 4>{3, 4, 4, 4});
    const auto q = diffuse::posterior_from_moments(moments);
    const auto z = diffuse::posterior_sample(q, diffuse::Generator(3).randn<float, 4>({3, 2, 4, 4}));
    REQUIRE(ae.decode(z).dimensions() == std::array<diffuse::Index, 4>{3, 1, 8, 8});

    std::set<std::string> names;
    ae.for_each_parameter("", [&](auto p) { names.insert(p.name); });
    for (const char* name : {"encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
                             "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
                             "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.block_1.conv2.bias",
                             "encoder.mid.attn_1.q.weight", "encoder.norm_out.weight", "encoder.conv_out.weight",
                             "quant_conv.weight", "post_quant_conv.bias", "decoder.conv_in.weight",
                             "decoder.mid.attn_1.proj_out.weight", "decoder.up.1.block.1.conv1.weight",
                             "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.0.nin_shortcut.weight",
                             "decoder.norm_out.bias", "decoder.conv_out.weight"}) {
        INFO(name);
        CHECK(names.count(name) == 1);
    }
    for (const auto& name : names) CHECK(name.find("temb") == std::string::npos);
    CHECK(names.count("decoder.up.0.upsample.conv.weight") == 0);  // level 0 is not upsampled
}

TEST_CASE("The whole autoencoder's backward pass matches finite differences through the posterior", "[models][autoencoder][gradient]") {
    diffuse::Autoencoder<double> ae(two_level_autoencoder(), 4);
    diffuse::Generator gen(5);
    auto x = gen.randn<double, 4>({2, 1, 8, 8});
    const auto eps = gen.randn<double, 4>({2, 2, 4, 4});
    diffuse::Tensor4<double> moments, dx;
    const auto report = diffuse::testing::check_gradients(
        ae, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
        [&] {
            moments = ae.encode(x);
            return ae.decode(diffuse::posterior_sample(diffuse::posterior_from_moments(moments), eps));
        },
        [&](const auto& g) { dx = ae.encode_backward(diffuse::posterior_backward(moments, eps, ae.decode_backward(g), 0.0)); });
    // An attention key's bias adds q_i . b to every score of row i, which the softmax ignores: its
    // gradient is exactly zero, and what the central differences see there is their rounding noise,
    // about 1e-8 through this many layers. Every other tensor: relative 1e-6 as for the layers.
    INFO(report.summary());
    REQUIRE(report.tensors.size() > 100);
    for (const auto& t : report.tensors) {
        INFO(t.name);
        const bool key_bias = t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".k.bias") == 0;
        if (key_bias) {
            CHECK(t.absolute <= 1e-7);
        } else {
            CHECK((t.relative <= 1e-6 || t.absolute <= 1e-8));
        }
    }
}

TEST_CASE("The posterior's KL is its closed form, and posterior_backward its gradient plus the sample's", "[models][autoencoder]") {
    diffuse::Generator gen(6);
    diffuse::Tensor4<double> moments = gen.randn<double, 4>({2, 4, 3, 3});
    moments(1, 2, 0, 0) = -40.0;  // clamped to -30: no gradient there
    const auto q = diffuse::posterior_from_moments(moments);
    CHECK(q.log_variance(1, 0, 0, 0) == -30.0);
    const std::vector<double> kl = diffuse::posterior_kl(q);
    for (diffuse::Index n = 0; n < 2; ++n) {
        ref::LD want = 0;
        for (diffuse::Index c = 0; c < 2; ++c) {
            for (diffuse::Index i = 0; i < 9; ++i) {
                const ref::LD m = moments(n, c, i / 3, i % 3);
                const ref::LD lv = std::clamp<ref::LD>(moments(n, c + 2, i / 3, i % 3), -30, 20);
                want += (m * m + std::exp(lv) - 1 - lv) / 2;
            }
        }
        CHECK(kl[static_cast<std::size_t>(n)] == Approx(static_cast<double>(want)).epsilon(1e-14));
    }
    // L = <dz, z> + w sum KL against central differences, coordinate by coordinate
    const auto eps = gen.randn<double, 4>({2, 2, 3, 3});
    const auto dz = gen.randn<double, 4>({2, 2, 3, 3});
    const double w = 0.7;
    const auto loss = [&](const diffuse::Tensor4<double>& m) {
        const auto qm = diffuse::posterior_from_moments(m);
        const auto z = diffuse::posterior_sample(qm, eps);
        double sum = 0.0;
        for (diffuse::Index i = 0; i < z.size(); ++i) sum += z.data()[i] * dz.data()[i];
        for (const double k : diffuse::posterior_kl(qm)) sum += w * k;
        return sum;
    };
    const auto grad = diffuse::posterior_backward(moments, eps, dz, w);
    for (diffuse::Index i = 0; i < moments.size(); ++i) {
        diffuse::Tensor4<double> plus = moments, minus = moments;
        plus.data()[i] += 1e-6;
        minus.data()[i] -= 1e-6;
        INFO("moment " << i);
        CHECK(grad.data()[i] == Approx((loss(plus) - loss(minus)) / 2e-6).epsilon(1e-6).margin(1e-8));
    }
}

TEST_CASE("Reparameterised samples have the posterior's mean and variance", "[models][autoencoder]") {
    diffuse::Tensor4<double> moments(1, 2, 1, 1);
    moments(0, 0, 0, 0) = 0.3;          // mean
    moments(0, 1, 0, 0) = std::log(0.25);  // variance 0.25
    const auto q = diffuse::posterior_from_moments(moments);
    const diffuse::Index n = 20000;
    diffuse::Generator gen(7);
    std::vector<double> draws;
    for (diffuse::Index i = 0; i < n; ++i) {
        draws.push_back(diffuse::posterior_sample(q, gen.randn<double, 4>({1, 1, 1, 1}))(0, 0, 0, 0));
    }
    const auto [mean_ld, variance_ld] = ref::mean_variance(draws.data(), n);
    const double mean = static_cast<double>(mean_ld), variance = static_cast<double>(variance_ld);
    // 5 standard errors: sqrt(v / n) for the mean, v sqrt(2 / (n - 1)) for the variance
    CHECK(std::fabs(mean - 0.3) < 5 * std::sqrt(0.25 / n));
    CHECK(std::fabs(variance - 0.25) < 5 * 0.25 * std::sqrt(2.0 / (n - 1)));
}

TEST_CASE("The autoencoder gives the same bits with 1 and 2 threads", "[models][autoencoder]") {
    diffuse::Autoencoder<float> ae(two_level_autoencoder(), 8);
    const auto x = diffuse::Generator(9).randn<float, 4>({4, 1, 8, 8});
    const int threads = diffuse::num_threads();
    diffuse::set_num_threads(1);
    const auto one = ae.encode(x);
    const auto back_one = ae.decode(diffuse::channel_slice(one, 0, 2));
    diffuse::set_num_threads(2);
    const auto two = ae.encode(x);
    const auto back_two = ae.decode(diffuse::channel_slice(two, 0, 2));
    diffuse::set_num_threads(threads);
    CHECK(diffuse::testing_support::same_bits(one, two));
    CHECK(diffuse::testing_support::same_bits(back_one, back_two));
}

TEST_CASE("The autoencoder refuses an image size its factor does not divide and inputs of the wrong shape",
          "[models][autoencoder][errors]") {
    diffuse::AutoencoderConfig c = two_level_autoencoder();
    c.image_size = 9;
    REQUIRE_THROWS_WITH(diffuse::Autoencoder<float>(c), Catch::Contains("image_size = 9") && Catch::Contains("factor 2"));
    c = two_level_autoencoder();
    c.groups = 3;
    REQUIRE_THROWS_WITH(diffuse::Autoencoder<float>(c), Catch::Contains("groups = 3"));
    c.groups = 0;
    REQUIRE_THROWS_WITH(diffuse::Autoencoder<float>(c), Catch::Contains("groups = 0"));
    diffuse::Autoencoder<float> ae(two_level_autoencoder());
    REQUIRE_THROWS_WITH(ae.encode(diffuse::Tensor4<float>(1, 1, 16, 16)), Catch::Contains("[1, 1, 16, 16]") && Catch::Contains("[1, 1, 8, 8]"));
    REQUIRE_THROWS_WITH(ae.decode(diffuse::Tensor4<float>(1, 3, 4, 4)), Catch::Contains("z.shape = [1, 3, 4, 4]"));
    REQUIRE_THROWS_WITH(diffuse::posterior_from_moments(diffuse::Tensor4<float>(1, 3, 4, 4)), Catch::Contains("even channel count"));
}
