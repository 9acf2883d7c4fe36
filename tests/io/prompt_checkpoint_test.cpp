// diffuse/io/checkpoint.hpp for a prompt model (PromptUNet): its configurations and tokenizer rebuilt
// from the file alone, a training run resumed bit for bit (prompt dropout included), and the files of
// a U-Net and a prompt model each refused for the other, naming why.
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/models/text_encoder.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/schedule/betas.hpp>

#include "../support/rejection.hpp"
#include "../support/temp_dir.hpp"
#include "../support/text_encoder_configs.hpp"
#include "../support/unet_configs.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

using Catch::Matchers::Contains;
using diffuse::Index;
using diffuse::PromptUNet;

namespace {

using diffuse::testing_support::rejection;
using diffuse::testing_support::TempDir;

diffuse::Tokenizer checkpoint_tokenizer() { return diffuse::Tokenizer({"a", "dark", "light", "ankle", "boot", "bag"}, 5); }

diffuse::UNetConfig checkpoint_prompt_unet() {
    diffuse::UNetConfig c = diffuse::testing_support::two_level_unet_config();
    c.dropout = 0.1;  // the dropout stream is part of what a resume must restore
    c.context_pooling = true;
    return c;
}

diffuse::optim::TrainerOptions prompt_options() {
    diffuse::optim::TrainerOptions o;
    o.adam.lr = 1e-3;
    o.warmup_steps = 3;
    o.ema_decay = 0.9;
    o.label_dropout = 0.4;  // prompts dropped to the empty prompt by the trainer's generator
    o.seed = 11;
    return o;
}

// The batch of step k, the same in every run: x0 [3, 1, 4, 4] in (-1, 1) and three prompts.
diffuse::Tensor4<float> prompt_batch(long k) {
    diffuse::Generator gen(500 + static_cast<std::uint64_t>(k));
    auto x = gen.randn<float, 4>({3, 1, 4, 4});
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::tanh(x.data()[i]);
    return x;
}

diffuse::Conditioning<float> step_prompts(long k) {
    const std::vector<std::vector<std::string>> sets = {{"a dark boot", "bag", "a light ankle boot"},
                                                        {"boot", "a bag", "dark bag"}};
    diffuse::Conditioning<float> c;
    c.prompt = checkpoint_tokenizer().batch(sets[static_cast<std::size_t>(k % 2)]);
    return c;
}

std::map<std::string, std::vector<float>> prompt_weights_of(PromptUNet<float>& model) {
    std::map<std::string, std::vector<float>> out;
    model.for_each_parameter("", [&out](diffuse::nn::ParameterView<float> p) {
        out[p.name] = std::vector<float>(p.value, p.value + p.size);
    });
    return out;
}

}  // namespace

TEST_CASE("A prompt model's training run resumed from a checkpoint rebuilt from the file alone ends bit for bit",
          "[io][checkpoint][prompt][resume]") {
    TempDir dir("prompt_resume");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(60));
    const diffuse::Tokenizer tok = checkpoint_tokenizer();
    constexpr long steps = 6;

    PromptUNet<float> straight(diffuse::testing_support::tiny_text_encoder_config(tok), checkpoint_prompt_unet(), 1);
    diffuse::optim::Trainer<PromptUNet<float>> a(straight, schedule, prompt_options());
    for (long k = 0; k < steps; ++k) a.step(prompt_batch(k), step_prompts(k));

    {
        PromptUNet<float> first(diffuse::testing_support::tiny_text_encoder_config(tok), checkpoint_prompt_unet(), 1);
        diffuse::optim::Trainer<PromptUNet<float>> b(first, schedule, prompt_options());
        for (long k = 0; k < steps / 2; ++k) b.step(prompt_batch(k), step_prompts(k));
        diffuse::save_checkpoint(path, b, diffuse::tokenizer_metadata(tok));
    }
    // every configuration from the file, and weights from another seed that the file must overwrite
    PromptUNet<float> resumed(diffuse::text_encoder_config_from_checkpoint(path), diffuse::config_from_checkpoint(path), 77);
    REQUIRE(resumed.config().context_dim == 4);
    diffuse::optim::Trainer<PromptUNet<float>> c(resumed, schedule, diffuse::trainer_options_from_checkpoint(path));
    diffuse::load_checkpoint(path, c);
    REQUIRE(c.step_count() == steps / 2);
    for (long k = c.step_count(); k < steps; ++k) c.step(prompt_batch(k), step_prompts(k));

    const auto wa = prompt_weights_of(straight), wc = prompt_weights_of(resumed);
    REQUIRE(wa.size() == wc.size());
    REQUIRE(wa.count("text_encoder.token_embedding.weight") == 1);
    for (const auto& [name, values] : wa) {
        INFO(name);
        REQUIRE(wc.at(name) == values);  // bit-identical
    }
    REQUIRE(c.generator().offset() == a.generator().offset());

    // The EMA's weights load into a model for sampling, which then gives the same outputs as the
    // trainer's EMA copied into it.
    PromptUNet<float> sampler(diffuse::text_encoder_config_from_checkpoint(path), diffuse::config_from_checkpoint(path), 5);
    diffuse::save_checkpoint(path, c, diffuse::tokenizer_metadata(tok));
    diffuse::load_weights(path, sampler, diffuse::Weights::ema);
    PromptUNet<float> copied(diffuse::testing_support::tiny_text_encoder_config(tok), checkpoint_prompt_unet(), 6);
    c.ema().copy_to(copied);
    REQUIRE(prompt_weights_of(sampler) == prompt_weights_of(copied));
}

TEST_CASE("A prompt model's tokenizer and text encoder read back from its checkpoint", "[io][checkpoint][prompt]") {
    TempDir dir("prompt_tokenizer");
    const std::string path = dir.file("weights.safetensors");
    const diffuse::Tokenizer tok = checkpoint_tokenizer();
    PromptUNet<float> model(diffuse::testing_support::tiny_text_encoder_config(tok), checkpoint_prompt_unet(), 2);
    diffuse::save_weights(path, model, diffuse::tokenizer_metadata(tok));

    const diffuse::Tokenizer read = diffuse::tokenizer_from_checkpoint(path);
    REQUIRE(read.words() == tok.words());
    REQUIRE(read.max_length() == tok.max_length());
    REQUIRE(read.encode("A light ankle boot") == tok.encode("a light ankle boot"));
    REQUIRE(read.encode("A light ankle boot") == std::vector<int>{0, 1, 3, 4, 5});
    const diffuse::TextEncoderConfig text = diffuse::text_encoder_config_from_checkpoint(path);
    REQUIRE(text.vocabulary_size == 7);
    REQUIRE(text.max_length == 5);
    REQUIRE(text.width == 4);
    REQUIRE(text.layers == 1);
    REQUIRE(text.heads == 2);
    REQUIRE(diffuse::config_from_checkpoint(path).context_dim == 4);
    REQUIRE(diffuse::config_from_checkpoint(path).context_pooling);

    // a vocabulary of another size than the encoder's embedding table is refused, naming both
    const std::string other = dir.file("other.safetensors");
    diffuse::save_weights(other, model, diffuse::tokenizer_metadata(diffuse::Tokenizer({"a", "bag"}, 5)));
    REQUIRE_THAT(rejection([&] { diffuse::tokenizer_from_checkpoint(other); }),
                 Contains("the tokenizer (3 tokens, 5 long) does not match the text encoder (7 tokens, 5 long)"));
}

TEST_CASE("A U-Net's file is refused for a prompt model and a prompt model's for a U-Net with the reason",
          "[io][checkpoint][prompt]") {
    TempDir dir("prompt_refusals");
    const diffuse::Tokenizer tok = checkpoint_tokenizer();
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(60));
    PromptUNet<float> prompt_model(diffuse::testing_support::tiny_text_encoder_config(tok), checkpoint_prompt_unet(), 2);
    diffuse::UNetConfig plain = checkpoint_prompt_unet();
    plain.context_pooling = false;  // a U-Net without a context has nothing to pool
    diffuse::UNet<float> unet(plain, 2);
    const std::string prompt_file = dir.file("prompt.safetensors"), unet_file = dir.file("unet.safetensors");
    {
        diffuse::optim::Trainer<PromptUNet<float>> trainer(prompt_model, schedule, prompt_options());
        diffuse::save_checkpoint(prompt_file, trainer, diffuse::tokenizer_metadata(tok));
    }
    diffuse::save_weights(unet_file, unet);

    REQUIRE_THAT(rejection([&] { diffuse::load_weights(prompt_file, unet); }),
                 Contains("the file is a prompt-conditioned model's (diffuse.text_encoder_config)"));
    diffuse::optim::Trainer<diffuse::UNet<float>> unet_trainer(unet, schedule, prompt_options());
    REQUIRE_THAT(rejection([&] { diffuse::load_checkpoint(prompt_file, unet_trainer); }),
                 Contains("load it into a PromptUNet"));
    REQUIRE_THAT(rejection([&] { diffuse::load_weights(unet_file, prompt_model); }),
                 Contains("a U-Net's without a text encoder"));
    REQUIRE_THAT(rejection([&] { diffuse::text_encoder_config_from_checkpoint(unet_file); }),
                 Contains("not a prompt-conditioned model's"));
    REQUIRE_THAT(rejection([&] { diffuse::tokenizer_from_checkpoint(unet_file); }), Contains("no \"diffuse.tokenizer\""));
}

TEST_CASE("A U-Net configuration keeps its context width and concatenated channels that older files lack",
          "[io][checkpoint][prompt]") {
    diffuse::UNetConfig c = checkpoint_prompt_unet();
    c.context_dim = 12;
    c.concat_channels = 3;
    c.context_pooling = true;
    const diffuse::UNetConfig back = diffuse::unet_config_from_json(diffuse::unet_config_to_json(c));
    REQUIRE(back.context_dim == 12);
    REQUIRE(back.concat_channels == 3);
    REQUIRE(back.context_pooling);
    // a file written before the two existed: both 0
    const std::string older = R"({"in_channels":1,"out_channels":1,"model_channels":4,"channel_mult":[1,2],)"
                              R"("num_res_blocks":1,"attention_resolutions":[2],"dropout":0.0,"groups":2,"heads":2,)"
                              R"("num_classes":0,"image_size":4})";
    const diffuse::UNetConfig old = diffuse::unet_config_from_json(older);
    REQUIRE(old.context_dim == 0);
    REQUIRE(old.concat_channels == 0);
    REQUIRE_FALSE(old.context_pooling);
    REQUIRE(old.model_channels == 4);
    REQUIRE_THAT(rejection([&] { diffuse::unet_config_from_json(R"({"context_dims":1})", "f.safetensors"); }),
                 Contains("unknown key \"context_dims\""));
}
