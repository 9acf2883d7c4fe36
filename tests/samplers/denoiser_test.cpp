// The denoiser: a model's output of any kind converted to (x0, eps) at a step of a respaced schedule,
// told the original timestep; model_fn wrapping anything with forward(x, t, labels), calling a model
// with a training mode in evaluation mode and giving it its mode back.

#include "../support/bits.hpp"
#include "../support/reference.hpp"
#include "../support/unet_configs.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/samplers/named.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using diffuse::testing_support::same_bits;

using diffuse::Index;
using ref::LD;

struct Doubler {
    std::vector<int> last_t, last_labels;
    diffuse::Tensor4<double> forward(const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t, const std::vector<int>& labels) {
        last_t = t;
        last_labels = labels;
        return x * 2.0;
    }
};

// Two levels (4x4 -> 2x2) with attention and heavy dropout, so that a training-mode call shows it.
diffuse::UNet<float> dropout_unet() {
    diffuse::UNetConfig c = diffuse::testing_support::two_level_unet_config();
    c.heads = 1;
    c.dropout = 0.5;
    return diffuse::UNet<float>(c, 1);
}

}  // namespace

TEST_CASE("denoise converts eps, x0 and v outputs to x0 and eps at the original timestep of a respaced step",
          "[samplers][denoiser]") {
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const std::vector<LD> ab = ref::alphas_cumprod(ref::to_ld(betas));
    const auto schedule = diffuse::respace(diffuse::NoiseSchedule<double>(betas), diffuse::space_timesteps(1000, "ddim10"));
    Doubler doubler;
    const auto model = diffuse::model_fn<double>(doubler);
    const auto x = diffuse::Generator(2).randn<double, 4>({2, 1, 2, 3});
    const auto kind = GENERATE(diffuse::Prediction::epsilon, diffuse::Prediction::x0, diffuse::Prediction::v);
    INFO(diffuse::to_string(kind));
    diffuse::SamplerOptions<double> options;
    options.prediction = kind;
    options.conditioning.labels = {4, 5};
    const auto d = diffuse::denoise("test", schedule, model, x, 3, options);
    CHECK(doubler.last_t == std::vector<int>{300, 300});
    CHECK(doubler.last_labels == std::vector<int>{4, 5});
    const LD a = ab[300];
    for (Index i = 0; i < x.size(); ++i) {
        const LD xt = x.data()[i], o = 2 * xt;
        LD x0 = 0, eps = 0;
        switch (kind) {
            case diffuse::Prediction::epsilon: eps = o, x0 = (xt - std::sqrt(1 - a) * o) / std::sqrt(a); break;
            case diffuse::Prediction::x0: x0 = o, eps = (xt - std::sqrt(a) * o) / std::sqrt(1 - a); break;
            case diffuse::Prediction::v:
                x0 = std::sqrt(a) * xt - std::sqrt(1 - a) * o;
                eps = std::sqrt(1 - a) * xt + std::sqrt(a) * o;
                break;
        }
        CHECK(std::fabs(d.x0.data()[i] - x0) <= 1e-12L * (std::fabs(xt) / std::sqrt(a) + 1));
        CHECK(std::fabs(d.eps.data()[i] - eps) <= 1e-12L * (std::fabs(xt) / std::sqrt(1 - a) + 1));
    }
}

TEST_CASE("model_fn calls a model in training mode as in evaluation mode, without dropout", "[samplers][denoiser]") {
    diffuse::UNet<float> unet = dropout_unet();
    const auto x = diffuse::Generator(4).randn<float, 4>({2, 1, 4, 4});
    const diffuse::Timesteps t = {10, 500};
    REQUIRE(unet.training());
    const diffuse::Tensor4<float> dropped = unet.forward(x, t);  // training mode: seed-0 dropout masks
    const diffuse::Tensor4<float> sampled = diffuse::model_fn<float>(unet)(x, t, {});
    unet.set_training(false);
    const diffuse::Tensor4<float> evaluated = unet.forward(x, t);
    REQUIRE(same_bits(sampled, evaluated));
    REQUIRE(!same_bits(dropped, evaluated));  // the dropout was there to be switched off
}

TEST_CASE("model_fn gives the model its mode back after each call, even one that throws", "[samplers][denoiser]") {
    diffuse::UNet<float> unet = dropout_unet();
    const auto model = diffuse::model_fn<float>(unet);
    const auto x = diffuse::Generator(5).randn<float, 4>({2, 1, 4, 4});
    model(x, {10, 500}, {});
    REQUIRE(unet.training());
    REQUIRE_THROWS_AS(model(diffuse::Tensor4<float>(2, 3, 4, 4), {10, 500}, {}), diffuse::invalid_argument);
    REQUIRE(unet.training());
    unet.set_training(false);
    model(x, {10, 500}, {});
    REQUIRE(!unet.training());
}

TEST_CASE("denoise of a learned-variance model reads the mean part and ignores its variance channels",
          "[samplers][denoiser]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto x = diffuse::Generator(3).randn<double, 4>({2, 1, 2, 3});
    const auto v = diffuse::Generator(4).randn<double, 4>({2, 1, 2, 3});
    const diffuse::ModelFn<double> learned = [&](const diffuse::Tensor4<double>& x_t, const diffuse::Timesteps&,
                                                 const diffuse::Conditioning<double>&) {
        diffuse::Tensor4<double> out(2, 2, 2, 3);  // [eps = x_t / 2, v]
        for (Index n = 0; n < 2; ++n)
            for (Index i = 0; i < 6; ++i) {
                out.data()[n * 12 + i] = x_t.data()[n * 6 + i] / 2;
                out.data()[n * 12 + 6 + i] = v.data()[n * 6 + i];
            }
        return out;
    };
    const diffuse::ModelFn<double> fixed = [](const diffuse::Tensor4<double>& x_t, const diffuse::Timesteps&,
                                              const diffuse::Conditioning<double>&) {
        return diffuse::Tensor4<double>(x_t / 2.0);
    };
    diffuse::SamplerOptions<double> options;
    const auto want = diffuse::denoise("test", schedule, fixed, x, 40, options);
    options.variance = diffuse::ModelVariance::learned_range;
    const auto got = diffuse::denoise("test", schedule, learned, x, 40, options);
    for (Index i = 0; i < x.size(); ++i) {
        CHECK(got.eps.data()[i] == want.eps.data()[i]);
        CHECK(got.x0.data()[i] == want.x0.data()[i]);
    }
    // every sampler takes it: DDIM with the learned model equals DDIM with its mean part
    options.seed = 5;
    const auto a = diffuse::sample("ddim", schedule, learned, 10, {2, 1, 2, 3}, options);
    options.variance = diffuse::ModelVariance::fixed_small;
    const auto b = diffuse::sample("ddim", schedule, fixed, 10, {2, 1, 2, 3}, options);
    for (Index i = 0; i < a.x.size(); ++i) CHECK(a.x.data()[i] == b.x.data()[i]);
    REQUIRE_THROWS_WITH(diffuse::denoise("test", schedule, learned, x, 40, options), Catch::Contains("[2, 1, 2, 3]"));
}
