// The prompt-conditioned model: the text encoder and the U-Net as one model, its gradients by finite
// differences (the encoder's included), the trainer's prompt dropout, guidance with the empty prompt,
// and bad input.

#include "../support/layers.hpp"
#include "../support/text_encoder_configs.hpp"
#include "../support/unet_configs.hpp"

#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using diffuse::Index;

namespace {

diffuse::Tokenizer prompt_tokenizer() { return diffuse::Tokenizer({"a", "dark", "light", "boot", "bag"}, 4); }

diffuse::UNetConfig prompt_unet_config() { return diffuse::testing_support::two_level_unet_config(); }

// A model that records the conditioning it was given and predicts zero.
struct ConditioningSpy {
    diffuse::UNetConfig c = prompt_unet_config();
    diffuse::Conditioning<float> seen;
    diffuse::nn::Parameter<float> weight{std::vector<Index>{1}};
    const diffuse::UNetConfig& config() const { return c; }
    void set_training(bool) {}
    diffuse::Tensor4<float> forward(const diffuse::Tensor4<float>& x, const diffuse::Timesteps&,
                                    const diffuse::Conditioning<float>& conditioning, const diffuse::Generator&) {
        seen = conditioning;
        diffuse::Tensor4<float> y(x.dimensions());
        y.setZero();
        return y;
    }
    diffuse::Tensor4<float> backward(const diffuse::Tensor4<float>& dy) { return dy; }
    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(diffuse::nn::join_name(prefix, "weight"), fn);
    }
};

}  // namespace

TEST_CASE("A prompt U-Net's gradients, the text encoder's included, match finite differences", "[models][prompt][gradient]") {
    const diffuse::Tokenizer tok = prompt_tokenizer();
    diffuse::PromptUNet<double> model(diffuse::testing_support::tiny_text_encoder_config(tok), prompt_unet_config(), 3);
    REQUIRE(model.config().context_dim == 4);
    diffuse::Generator init(4);
    model.for_each_parameter("", [&init](auto p) {
        init.normal(p.value, p.size);
        for (Index i = 0; i < p.size; ++i) p.value[i] *= 0.3;
    });
    std::vector<std::string> names;
    model.for_each_parameter("", [&names](auto p) { names.push_back(p.name); });
    REQUIRE(names.front() == "text_encoder.token_embedding.weight");
    REQUIRE(std::find(names.begin(), names.end(), "unet.mid.attn_1.transformer_blocks.0.attn2.to_k.weight") != names.end());

    diffuse::Generator gen(5);
    auto x = gen.randn<double, 4>({2, 1, 4, 4});
    diffuse::Conditioning<double> c;
    c.prompt = tok.batch({"a dark boot", "bag"});
    diffuse::Tensor4<double> dx;
    diffuse::testing::GradientCheckOptions options;
    options.max_coordinates = 10;
    const auto report = diffuse::testing::check_gradients(
        model, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
        [&] { return model.forward(x, {10, 900}, c); }, [&](const auto& g) { dx = model.backward(g); }, options);
    REQUIRE_GRADIENTS_MATCH(report);
}

TEST_CASE("The trainer drops prompts to the empty prompt at its label-dropout rate", "[models][prompt][optim]") {
    const diffuse::Tokenizer tok = prompt_tokenizer();
    ConditioningSpy spy;
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(50));
    diffuse::optim::TrainerOptions options;
    options.label_dropout = 0.5;
    diffuse::optim::Trainer<ConditioningSpy> trainer(spy, schedule, options);
    const Index n = 2000;
    const std::vector<std::string> prompts(static_cast<std::size_t>(n), "a dark boot");
    diffuse::Conditioning<float> c;
    c.prompt = tok.batch(prompts);
    diffuse::Tensor4<float> x(n, 1, 4, 4);
    x.setZero();
    trainer.step(x, c);
    const diffuse::Tokens& seen = spy.seen.prompt;
    REQUIRE(seen.batch == n);
    REQUIRE(seen.length == 4);
    Index dropped = 0;
    for (Index s = 0; s < n; ++s) {
        const bool empty = seen.ids[static_cast<std::size_t>(s * 4)] == 0 && seen.mask[static_cast<std::size_t>(s * 4)] == 1 &&
                           std::all_of(seen.mask.begin() + s * 4 + 1, seen.mask.begin() + s * 4 + 4, [](std::uint8_t m) { return m == 0; });
        const bool kept = std::equal(seen.ids.begin() + s * 4, seen.ids.begin() + s * 4 + 4, c.prompt.ids.begin() + s * 4);
        REQUIRE((empty || kept));
        dropped += empty ? 1 : 0;
    }
    // binomial(2000, 0.5): standard deviation 22.4; 5 of them either side
    REQUIRE(dropped > 1000 - 112);
    REQUIRE(dropped < 1000 + 112);
}

TEST_CASE("Guidance of a prompt U-Net pads the empty prompt into the unconditional half", "[models][prompt][guidance]") {
    const diffuse::Tokenizer tok = prompt_tokenizer();
    diffuse::PromptUNet<double> model(diffuse::testing_support::tiny_text_encoder_config(tok), prompt_unet_config(), 6);
    model.set_training(false);
    diffuse::Generator gen(7);
    const auto x = gen.randn<double, 4>({2, 1, 4, 4});
    diffuse::Conditioning<double> c;
    c.prompt = tok.batch({"a dark boot", "a bag"});
    diffuse::Conditioning<double> empty;
    empty.prompt = tok.batch({"", ""});
    const diffuse::ModelFn<double> plain = diffuse::model_fn<double>(model);
    const auto guided = diffuse::classifier_free_guidance<double>(plain, diffuse::null_prompt<double>(), 2.5);
    const auto g = guided(x, {40, 40}, c);
    const auto cond = plain(x, {40, 40}, c), uncond = plain(x, {40, 40}, empty);
    for (Index i = 0; i < g.size(); ++i) {
        REQUIRE(g.data()[i] == Approx(uncond.data()[i] + 2.5 * (cond.data()[i] - uncond.data()[i])).epsilon(1e-10).margin(1e-12));
    }
    REQUIRE_THROWS_WITH(model.forward(x, {1, 1}, {}), Catch::Contains("conditioning.prompt = none"));
    diffuse::Conditioning<double> with_context = c;
    with_context.context = gen.randn<double, 3>({2, 1, 4});
    REQUIRE_THROWS_WITH(model.forward(x, {1, 1}, with_context), Catch::Contains("the text encoder makes the context"));
    diffuse::Conditioning<double> wrong_batch;
    wrong_batch.prompt = tok.batch({"bag"});
    REQUIRE_THROWS_WITH(model.forward(x, {1, 1}, wrong_batch), Catch::Contains("one prompt per sample, 2"));
}
