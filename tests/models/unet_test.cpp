// The U-Net: parameter counts and FLOPs of the reference configurations, output shapes, the whole
// network's gradients by finite differences (with a context and a concatenated image too),
// chunked evaluation, thread-count independence, a concatenated image that a trained model follows,
// and bad input.

#include "../support/layers.hpp"
#include "../support/unet_configs.hpp"

#include <diffuse/core/threading.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using diffuse::Index;
using diffuse::UNet;
using diffuse::UNetConfig;

namespace {

// Two levels (4x4 -> 2x2), attention at 2x2, two heads, classes and dropout: every kind of block.
UNetConfig two_level_config() {
    UNetConfig c = diffuse::testing_support::two_level_unet_config();
    c.num_classes = 3;
    c.dropout = 0.2;
    return c;
}

}  // namespace

TEST_CASE("The reference U-Net has 1,623,169 parameters and costs 0.554 GFLOP per image", "[models][unet]") {
    UNet<float> reference(UNetConfig::reference());
    REQUIRE(diffuse::nn::parameter_count(reference) == 1623169);
    REQUIRE(reference.forward_flops_per_image() == Approx(0.554e9).epsilon(1e-3));
    UNet<float> small(UNetConfig::small());
    REQUIRE(diffuse::nn::parameter_count(small) == 408641);
    UNetConfig conditional = UNetConfig::reference();
    conditional.num_classes = 10;
    UNet<float> cond(conditional);
    // plus an 11 x 128 class embedding (10 classes and "no class")
    REQUIRE(diffuse::nn::parameter_count(cond) == 1623169 + 11 * 128);
}

TEST_CASE("The U-Net maps N x C x H x W to the same shape with out_channels channels", "[models][unet]") {
    UNetConfig c = UNetConfig::small();
    c.out_channels = 2;
    UNet<float> unet(c, 1);
    diffuse::Generator gen(2);
    const auto x = gen.randn<float, 4>({3, 1, 28, 28});
    const auto y = unet.forward(x, {0, 500, 999});
    REQUIRE(y.dimension(0) == 3);
    REQUIRE(y.dimension(1) == 2);
    REQUIRE(y.dimension(2) == 28);
    REQUIRE(y.dimension(3) == 28);
}

TEST_CASE("A U-Net in evaluation mode gives the training output without dropout and refuses backward", "[models][unet]") {
    UNetConfig c = two_level_config();
    c.dropout = 0.0;  // then training and evaluation compute the same function
    UNet<float> unet(c, 1);
    diffuse::Generator gen(3);
    const auto x = gen.randn<float, 4>({2, 1, 4, 4});
    const diffuse::Tensor4<float> trained = unet.forward(x, {3, 700}, {0, 3});
    unet.set_training(false);
    const diffuse::Tensor4<float> evaluated = unet.forward(x, {3, 700}, {0, 3});
    REQUIRE(std::equal(trained.data(), trained.data() + trained.size(), evaluated.data()));
    REQUIRE_THROWS_WITH(unet.backward(evaluated), Catch::Contains("training mode"));
    unet.set_training(true);
    unet.forward(x, {3, 700}, {0, 3});
    REQUIRE_NOTHROW(unet.backward(evaluated));
}

TEST_CASE("A U-Net in evaluation mode gives the same bits in chunks of any size as in one batch", "[models][unet]") {
    UNet<float> unet(two_level_config(), 2);
    unet.set_training(false);
    diffuse::Generator gen(9);
    const auto x = gen.randn<float, 4>({7, 1, 4, 4});
    const diffuse::Timesteps t = {0, 10, 200, 400, 600, 800, 999};
    const std::vector<int> labels = {0, 1, 2, 3, 0, 1, 2};
    unet.set_evaluation_chunk(0);
    const diffuse::Tensor4<float> whole = unet.forward(x, t, labels);
    for (const diffuse::Index chunk : {1, 2, 3, 6, 7, 16}) {
        unet.set_evaluation_chunk(chunk);
        REQUIRE(unet.evaluation_chunk() == chunk);
        const diffuse::Tensor4<float> chunked = unet.forward(x, t, labels);
        REQUIRE(chunked.dimensions() == whole.dimensions());
        REQUIRE(std::equal(whole.data(), whole.data() + whole.size(), chunked.data()));
    }
    REQUIRE_THROWS_WITH(unet.set_evaluation_chunk(-1), Catch::Contains("chunk"));
    // training runs the whole batch: a backward pass after a chunked setting still sees every sample
    unet.set_evaluation_chunk(2);
    unet.set_training(true);
    const diffuse::Tensor4<float> y = unet.forward(x, t, labels, diffuse::Generator(1));
    REQUIRE_NOTHROW(unet.backward(y));
}

TEST_CASE("The whole U-Net's backward pass matches finite differences", "[models][unet][gradient]") {
    UNet<double> unet(two_level_config(), 5);
    diffuse::Generator gen(8);
    auto x = gen.randn<double, 4>({2, 1, 4, 4});
    const diffuse::Timesteps t = {3, 700};
    const std::vector<int> labels = {1, 3};  // 3: "no class"
    const diffuse::Generator dropout(77);
    diffuse::Tensor4<double> dx;
    diffuse::testing::GradientCheckOptions options;
    options.max_coordinates = 16;  // per tensor; there are about 150 tensors
    const auto report = diffuse::testing::check_gradients(
        unet, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
        [&] { return unet.forward(x, t, labels, dropout); }, [&](const auto& g) { dx = unet.backward(g); }, options);
    REQUIRE_GRADIENTS_MATCH(report);
}

TEST_CASE("The U-Net gives the same bits with one thread or two", "[models][unet][threads]") {
    const int saved = diffuse::num_threads();
    UNet<float> unet(UNetConfig::small(), 3);
    diffuse::Generator gen(4);
    const auto x = gen.randn<float, 4>({3, 1, 28, 28});
    diffuse::Tensor4<float> y[2], dx[2];
    for (int threads = 1; threads <= 2; ++threads) {
        diffuse::set_num_threads(threads);
        y[threads - 1] = unet.forward(x, {1, 2, 3}, {}, diffuse::Generator(6));
        dx[threads - 1] = unet.backward(y[threads - 1]);
    }
    diffuse::set_num_threads(saved);
    REQUIRE(std::equal(y[0].data(), y[0].data() + y[0].size(), y[1].data()));
    REQUIRE(std::equal(dx[0].data(), dx[0].data() + dx[0].size(), dx[1].data()));
}

TEST_CASE("The U-Net rejects bad configurations and inputs, naming what was wrong", "[models][unet][errors]") {
    UNetConfig c = UNetConfig::small();
    c.groups = 6;
    REQUIRE_THROWS_WITH(UNet<float>(c), Catch::Contains("groups = 6"));
    c = UNetConfig::small();
    c.image_size = 30;
    REQUIRE_THROWS_WITH(UNet<float>(c), Catch::Contains("image_size = 30"));

    UNet<float> unet(two_level_config(), 1);
    diffuse::Tensor4<float> x(2, 1, 4, 4);
    x.setZero();
    REQUIRE_THROWS_WITH(unet.forward(diffuse::Tensor4<float>(2, 3, 4, 4), {1, 2}, {0, 1}), Catch::Contains("x.shape = [2, 3, 4, 4]"));
    REQUIRE_THROWS_WITH(unet.forward(diffuse::Tensor4<float>(2, 1, 5, 4), {1, 2}, {0, 1}), Catch::Contains("divisible by 2"));
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, {0, 4}), Catch::Contains("labels[1] = 4"));
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, {}), Catch::Contains("labels.size() = 0"));
    REQUIRE_THROWS_WITH(unet.forward(x, {1}, {0, 1}), Catch::Contains("t.size() = 1"));
    UNet<float> unconditional(UNetConfig::small(), 1);
    REQUIRE_THROWS_WITH(unconditional.forward(diffuse::Tensor4<float>(1, 1, 28, 28), {1}, {0}),
                        Catch::Contains("unconditional"));
}

TEST_CASE("A U-Net configuration with zero groups is rejected before any division by the group count", "[models][unet][errors]") {
    UNetConfig c = UNetConfig::small();
    c.groups = 0;
    REQUIRE_THROWS_AS(UNet<float>(c), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(UNet<float>(c), Catch::Contains("groups = 0, expected at least 1"));
    c.groups = -4;
    REQUIRE_THROWS_WITH(UNet<float>(c), Catch::Contains("groups = -4, expected at least 1"));
}

TEST_CASE("A U-Net reports the mode set_training set last", "[models][unet]") {
    UNet<float> unet(two_level_config(), 1);
    REQUIRE(unet.training());
    unet.set_training(false);
    REQUIRE(!unet.training());
    unet.set_training(true);
    REQUIRE(unet.training());
}

namespace {

// two_level_config with a context of width 3 (transformer blocks at 2x2 and in the middle) and one
// concatenated channel.
UNetConfig context_config() {
    UNetConfig c = two_level_config();
    c.context_dim = 3;
    c.concat_channels = 1;
    c.dropout = 0.0;
    return c;
}

diffuse::Conditioning<double> context_conditioning(diffuse::Generator& gen) {
    diffuse::Conditioning<double> c = {1, 3};
    c.context = gen.randn<double, 3>({2, 3, 3});
    c.context_mask = {1, 1, 0, 1, 1, 1};
    c.concat = gen.randn<double, 4>({2, 1, 4, 4});
    return c;
}

}  // namespace

TEST_CASE("A U-Net with a context has transformer blocks under LDM's names and its gradients match finite differences",
          "[models][unet][gradient]") {
    const bool pooling = GENERATE(false, true);  // the pooled context added to the time embedding, or not
    INFO("context_pooling " << pooling);
    UNetConfig config = context_config();
    config.context_pooling = pooling;
    UNet<double> unet(config, 5);
    std::vector<std::string> names;
    unet.for_each_parameter("", [&names](auto p) { names.push_back(p.name); });
    const auto has = [&names](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
    REQUIRE(has("down.1.attn.0.transformer_blocks.0.attn2.to_k.weight"));
    REQUIRE(has("mid.attn_1.transformer_blocks.0.ff.net.0.proj.weight"));
    REQUIRE(has("up.1.attn.1.proj_out.weight"));
    REQUIRE_FALSE(has("mid.attn_1.q.weight"));
    REQUIRE(has("context_embedding.weight") == pooling);
    // proj_out starts at zero (the blocks are the identity): give every parameter a value, so that the
    // check sees every path
    diffuse::Generator init(6);
    unet.for_each_parameter("", [&init](auto p) {
        init.normal(p.value, p.size);
        for (Index i = 0; i < p.size; ++i) p.value[i] *= 0.3;
    });
    diffuse::Generator gen(8);
    auto x = gen.randn<double, 4>({2, 1, 4, 4});
    diffuse::Conditioning<double> c = context_conditioning(gen);
    const diffuse::Timesteps t = {3, 700};
    diffuse::Tensor4<double> dx;
    diffuse::testing::GradientCheckOptions options;
    options.max_coordinates = 12;
    const auto report = diffuse::testing::check_gradients(
        unet,
        {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }},
         {"context", c.context.data(), c.context.size(), [&] { return unet.context_gradient().data(); }}},
        [&] { return unet.forward(x, t, c); }, [&](const auto& g) { dx = unet.backward(g); }, options);
    REQUIRE_GRADIENTS_MATCH(report);
    REQUIRE(dx.dimension(1) == 1);  // x_t's gradient alone, not the concatenated image's
}

TEST_CASE("A U-Net's padded prompt gives the output of the unpadded one", "[models][unet]") {
    UNetConfig config = context_config();
    config.context_pooling = GENERATE(false, true);  // padding must not enter the pooled mean either
    UNet<double> unet(config, 7);
    unet.for_each_parameter("", [](auto p) {
        for (Index i = 0; i < p.size; ++i) p.value[i] += 0.01 * static_cast<double>(i % 7);
    });
    diffuse::Generator gen(9);
    const auto x = gen.randn<double, 4>({1, 1, 4, 4});
    diffuse::Conditioning<double> short_prompt = {2};
    short_prompt.context = gen.randn<double, 3>({1, 2, 3});
    short_prompt.concat = gen.randn<double, 4>({1, 1, 4, 4});
    diffuse::Conditioning<double> padded = short_prompt;
    padded.context = diffuse::Tensor3<double>(1, 4, 3);
    padded.context.setConstant(-5.0);
    std::copy_n(short_prompt.context.data(), 6, padded.context.data());
    padded.context_mask = {1, 1, 0, 0};
    const auto a = unet.forward(x, {100}, short_prompt);
    const auto b = unet.forward(x, {100}, padded);
    for (Index i = 0; i < a.size(); ++i) REQUIRE(b.data()[i] == Approx(a.data()[i]).epsilon(1e-12));
}

TEST_CASE("A U-Net rejects a missing or mis-shaped context and concatenated image", "[models][unet][errors]") {
    using Catch::Contains;
    UNet<float> unet(context_config(), 1);
    diffuse::Generator gen(10);
    const auto x = gen.randn<float, 4>({2, 1, 4, 4});
    diffuse::Conditioning<float> c = {0, 1};
    c.concat = gen.randn<float, 4>({2, 1, 4, 4});
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, c), Contains("context.shape = none") && Contains("[N, L, 3]"));
    c.context = gen.randn<float, 3>({2, 2, 4});
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, c), Contains("context.shape = [2, 2, 4]"));
    c.context = gen.randn<float, 3>({2, 2, 3});
    c.concat = gen.randn<float, 4>({2, 2, 4, 4});
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, c), Contains("concat.shape = [2, 2, 4, 4]") && Contains("[N, 1, H, W]"));
    c.concat = gen.randn<float, 4>({2, 1, 2, 2});
    REQUIRE_THROWS_WITH(unet.forward(x, {1, 2}, c), Contains("concat.shape = [2, 1, 2, 2]"));
    UNet<float> plain(two_level_config(), 1);
    c.concat = gen.randn<float, 4>({2, 1, 4, 4});
    REQUIRE_THROWS_WITH(plain.forward(x, {1, 2}, c), Contains("no cross-attention"));
    diffuse::Conditioning<float> prompted = {0, 1};
    prompted.prompt.batch = 2;
    prompted.prompt.length = 1;
    prompted.prompt.ids = {0, 0};
    REQUIRE_THROWS_WITH(plain.forward(x, {1, 2}, prompted), Contains("a PromptUNet embeds prompts"));
    UNetConfig bad = context_config();
    bad.heads = 3;
    REQUIRE_THROWS_WITH(UNet<float>(bad), Contains("heads = 3"));
}

namespace {

// The four 4x4 patterns of the concatenation test: left half, top half, a checkerboard of 2x2
// squares and a diagonal band set to +1 on -1.
diffuse::Tensor4<float> concat_patterns() {
    diffuse::Tensor4<float> p(4, 1, 4, 4);  // [4, 1, 4, 4]
    for (Index y = 0; y < 4; ++y) {
        for (Index x = 0; x < 4; ++x) {
            p(0, 0, y, x) = x < 2 ? 1.0f : -1.0f;
            p(1, 0, y, x) = y < 2 ? 1.0f : -1.0f;
            p(2, 0, y, x) = (x / 2 + y / 2) % 2 == 0 ? 1.0f : -1.0f;
            p(3, 0, y, x) = std::abs(x - y) <= 1 ? 1.0f : -1.0f;
        }
    }
    return p;
}

}  // namespace

TEST_CASE("A U-Net trained with a concatenated image samples the image it is given", "[models][unet][concat]") {
    // The task of super-resolution and inpainting at its simplest: x0 is the concatenated image itself,
    // one of four patterns; the model can only tell which from the concatenated channel. Trained, its
    // DDIM samples must land on the pattern they are given (chance: 1 in 4).
    UNetConfig config = diffuse::testing_support::two_level_unet_config();
    config.model_channels = 8;
    config.concat_channels = 1;
    UNet<float> unet(config, 3);
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(100));
    diffuse::optim::TrainerOptions options;
    options.adam.lr = 3e-3;
    options.warmup_steps = 10;
    options.ema_decay = 0.0;
    options.seed = 4;
    diffuse::optim::Trainer<UNet<float>> trainer(unet, schedule, options);
    const diffuse::Tensor4<float> patterns = concat_patterns();
    const auto pick = [&patterns](const std::vector<int>& which) {
        diffuse::Tensor4<float> x(static_cast<Index>(which.size()), 1, 4, 4);  // [N, 1, 4, 4]
        for (std::size_t n = 0; n < which.size(); ++n) diffuse::batch_assign(x, static_cast<Index>(n), diffuse::batch_slice(patterns, which[n], 1));
        return x;
    };
    diffuse::Generator data(5);
    for (int step = 0; step < 400; ++step) {
        const diffuse::Timesteps k = data.randint(16, 4);
        const std::vector<int> which(k.begin(), k.end());
        diffuse::Conditioning<float> c;
        c.concat = pick(which);
        trainer.step(c.concat, c);
    }

    std::vector<int> asked;
    for (int n = 0; n < 32; ++n) asked.push_back(n % 4);
    diffuse::DDIMOptions<float> sampling;
    sampling.seed = 6;
    sampling.conditioning.concat = pick(asked);
    unet.set_training(false);
    const diffuse::Samples<float> s = diffuse::ddim_sample(schedule, diffuse::model_fn<float>(unet), 20, {32, 1, 4, 4}, sampling);
    int landed = 0;
    for (Index n = 0; n < 32; ++n) {
        int nearest = 0;
        double best = 1e30;
        for (int p = 0; p < 4; ++p) {
            double d = 0.0;
            for (Index i = 0; i < 16; ++i) {
                const double e = static_cast<double>(s.x.data()[n * 16 + i]) - static_cast<double>(patterns.data()[p * 16 + i]);
                d += e * e;
            }
            if (d < best) best = d, nearest = p;
        }
        landed += nearest == asked[static_cast<std::size_t>(n)] ? 1 : 0;
    }
    INFO("samples on the pattern they were given: " << landed << " of 32");
    // by chance, binomial(32, 1/4): mean 8, and 24 or more has probability below 1e-7
    REQUIRE(landed >= 24);
}
