// diffuse/io/checkpoint.hpp: weights that give the same outputs after a save and a load, mismatches
// named tensor by tensor, the configuration rebuilt from the file alone, and a training run resumed
// from a checkpoint that ends bit for bit where the uninterrupted run ends.
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/schedule/betas.hpp>

#include "../support/rejection.hpp"
#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#if !defined(_WIN32)
#include <unistd.h>
#endif

using Catch::Matchers::Contains;
using diffuse::Index;
using diffuse::UNet;
using diffuse::UNetConfig;

namespace {

namespace fs = std::filesystem;

using diffuse::testing_support::TempDir;

// One level, 8x8 images: a U-Net small enough that a training step takes milliseconds, with
// attention, dropout and classes so that every random draw of a step is exercised.
UNetConfig checkpoint_unet_config() {
    UNetConfig c;
    c.model_channels = 8;
    c.channel_mult = {1};
    c.num_res_blocks = 1;
    c.attention_resolutions = {8};
    c.groups = 4;
    c.image_size = 8;
    c.num_classes = 2;
    c.dropout = 0.1;
    return c;
}

diffuse::optim::TrainerOptions tiny_options() {
    diffuse::optim::TrainerOptions o;
    o.adam.lr = 1e-3;
    o.adam.weight_decay = 0.01;
    o.warmup_steps = 4;  // the learning rate changes across the interruption
    o.ema_decay = 0.99;
    o.label_dropout = 0.3;
    o.seed = 7;
    return o;
}

// The batch of step k (0-based), the same in every run: x0 [4, 1, 8, 8] in (-1, 1), labels [4].
diffuse::Tensor4<float> batch(long k) {
    diffuse::Generator gen(1000 + static_cast<std::uint64_t>(k));
    auto x = gen.randn<float, 4>({4, 1, 8, 8});
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::tanh(x.data()[i]);
    return x;
}

std::vector<int> labels(long k) { return {static_cast<int>(k % 2), 1, 0, static_cast<int>((k + 1) % 2)}; }

template <class Module>
std::map<std::string, std::vector<float>> weights_of(Module& model) {
    std::map<std::string, std::vector<float>> out;
    model.for_each_parameter("", [&out](diffuse::nn::ParameterView<float> p) {
        out[p.name] = std::vector<float>(p.value, p.value + p.size);
    });
    return out;
}

std::vector<float> as_vector(const diffuse::Table<float>& t) { return std::vector<float>(t.data(), t.data() + t.size()); }

}  // namespace

TEST_CASE("saved weights loaded into a differently initialised U-Net give identical outputs", "[io][checkpoint]") {
    TempDir dir("forward");
    const std::string path = dir.file("weights.safetensors");
    UNet<float> saved(checkpoint_unet_config(), 1);
    diffuse::save_weights(path, saved);

    UNet<float> loaded(checkpoint_unet_config(), 2);
    REQUIRE(weights_of(loaded) != weights_of(saved));
    diffuse::load_weights(path, loaded);
    REQUIRE(weights_of(loaded) == weights_of(saved));

    diffuse::Generator gen(3);
    const auto x = gen.randn<float, 4>({2, 1, 8, 8});
    saved.set_training(false);
    loaded.set_training(false);
    const auto a = saved.forward(x, {10, 500}, {0, 2});
    const auto b = loaded.forward(x, {10, 500}, {0, 2});
    for (Index i = 0; i < a.size(); ++i) REQUIRE(a.data()[i] == b.data()[i]);
}

TEST_CASE("a weights file holds the model's PyTorch-style names and shapes and its configuration", "[io][checkpoint]") {
    TempDir dir("names");
    const std::string path = dir.file("weights.safetensors");
    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::save_weights(path, model, {{"note", "made by a test"}});

    const auto header = diffuse::read_safetensors_header(path);
    std::map<std::string, std::vector<Index>> in_file;
    for (const auto& e : header.entries) {
        REQUIRE(e.dtype == diffuse::Dtype::F32);
        in_file[e.name] = e.shape;
    }
    std::map<std::string, std::vector<Index>> in_model;
    model.for_each_parameter("", [&](diffuse::nn::ParameterView<float> p) { in_model[p.name] = p.shape; });
    REQUIRE(in_file == in_model);
    REQUIRE(in_file.at("down.0.block.0.conv1.weight") == std::vector<Index>{8, 8, 3, 3});  // [out, in, kh, kw]
    REQUIRE(in_file.count("mid.attn_1.q.weight") == 1);
    REQUIRE(header.metadata.at("format") == "pt");
    REQUIRE(header.metadata.at("diffuse.checkpoint") == "weights");
    REQUIRE(header.metadata.at("diffuse.weights") == "model");
    REQUIRE(header.metadata.at("note") == "made by a test");

    const UNetConfig c = diffuse::config_from_checkpoint(path);
    const UNetConfig e = checkpoint_unet_config();
    REQUIRE(c.in_channels == e.in_channels);
    REQUIRE(c.out_channels == e.out_channels);
    REQUIRE(c.model_channels == e.model_channels);
    REQUIRE(c.channel_mult == e.channel_mult);
    REQUIRE(c.num_res_blocks == e.num_res_blocks);
    REQUIRE(c.attention_resolutions == e.attention_resolutions);
    REQUIRE(c.dropout == e.dropout);
    REQUIRE(c.groups == e.groups);
    REQUIRE(c.heads == e.heads);
    REQUIRE(c.num_classes == e.num_classes);
    REQUIRE(c.image_size == e.image_size);
    REQUIRE(diffuse::unet_config_to_json(UNetConfig::reference()) ==
            diffuse::unet_config_to_json(diffuse::unet_config_from_json(diffuse::unet_config_to_json(UNetConfig::reference()))));
}

TEST_CASE("loading weights of another shape or dtype names each tensor and both shapes", "[io][checkpoint]") {
    TempDir dir("mismatch");
    const std::string path = dir.file("weights.safetensors");
    UNet<float> small(checkpoint_unet_config(), 1);
    diffuse::save_weights(path, small);

    UNetConfig wider = checkpoint_unet_config();
    wider.model_channels = 16;
    UNet<float> other(wider, 1);
    const auto before = weights_of(other);
    const std::string message = diffuse::testing_support::rejection([&] { diffuse::load_weights(path, other); });
    REQUIRE_THAT(message, Contains(path) && Contains("tensors do not match the model") &&
                              Contains("conv_in.weight: shape [8, 1, 3, 3] in file, [16, 1, 3, 3] expected") &&
                              Contains("down.0.block.0.conv1.weight: shape [8, 8, 3, 3] in file, [16, 16, 3, 3] expected"));
    REQUIRE(weights_of(other) == before);  // nothing was changed

    UNet<double> in_double(checkpoint_unet_config(), 1);
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_weights(path, in_double); }),
                 Contains("conv_in.weight: dtype F32 in file, F64 expected"));
}

TEST_CASE("loading weights with a tensor missing or one too many names them", "[io][checkpoint]") {
    TempDir dir("missing");
    const std::string path = dir.file("weights.safetensors");
    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::save_weights(path, model);
    const diffuse::SafeTensors complete = diffuse::load_safetensors(path);

    diffuse::SafeTensors edited;
    edited.metadata() = complete.metadata();
    for (const auto& [name, tensor] : complete.tensors()) {
        if (name != "conv_out.bias") edited.add(name, tensor);
    }
    const std::vector<float> extra = {1, 2};
    edited.add("conv_out.scale", {2}, extra.data());
    diffuse::save_safetensors(path, edited);

    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_weights(path, model); }),
                 Contains("2 tensors do not match the model") && Contains("conv_out.bias: missing from the file") &&
                     Contains("conv_out.scale: in the file but not in the model"));
}

TEST_CASE("a file without diffuse's metadata, as PyTorch writes one, loads by parameter names alone", "[io][checkpoint]") {
    TempDir dir("plain");
    const std::string path = dir.file("plain.safetensors");
    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::SafeTensors plain;
    model.for_each_parameter("", [&](diffuse::nn::ParameterView<float> p) { plain.add(p.name, p.shape, p.value); });
    diffuse::save_safetensors(path, plain);

    UNet<float> loaded(checkpoint_unet_config(), 5);
    diffuse::load_weights(path, loaded);
    REQUIRE(weights_of(loaded) == weights_of(model));
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::config_from_checkpoint(path); }),
                 Contains("no \"diffuse.unet_config\" in the file's __metadata__"));
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_weights(path, loaded, diffuse::Weights::ema); }),
                 Contains("holds a single set of weights"));
}

TEST_CASE("a training run resumed from a checkpoint ends bit for bit where the uninterrupted run ends", "[io][checkpoint][resume]") {
    TempDir dir("resume");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    constexpr long steps = 6;

    // Straight through.
    UNet<float> straight(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> a(straight, schedule, tiny_options());
    for (long k = 0; k < steps; ++k) a.step(batch(k), labels(k));

    // Half, a checkpoint, and the other half in fresh objects (built from another seed, so every
    // weight has to come from the file).
    {
        UNet<float> first(checkpoint_unet_config(), 1);
        diffuse::optim::Trainer<UNet<float>> b(first, schedule, tiny_options());
        for (long k = 0; k < steps / 2; ++k) b.step(batch(k), labels(k));
        diffuse::save_checkpoint(path, b);
    }
    UNet<float> resumed(checkpoint_unet_config(), 99);
    diffuse::optim::Trainer<UNet<float>> c(resumed, schedule, diffuse::trainer_options_from_checkpoint(path));
    diffuse::load_checkpoint(path, c);
    REQUIRE(c.step_count() == steps / 2);
    for (long k = c.step_count(); k < steps; ++k) c.step(batch(k), labels(k));

    REQUIRE(c.step_count() == a.step_count());
    REQUIRE(c.generator().seed() == a.generator().seed());
    REQUIRE(c.generator().offset() == a.generator().offset());
    REQUIRE(c.optimizer().step_count() == a.optimizer().step_count());
    REQUIRE(c.ema().updates() == a.ema().updates());
    const auto wa = weights_of(straight), wc = weights_of(resumed);
    REQUIRE(wa.size() == wc.size());
    for (const auto& [name, values] : wa) {
        INFO(name);
        REQUIRE(wc.at(name) == values);  // == on every element: bit-identical
        REQUIRE(as_vector(c.ema().shadow().at(name)) == as_vector(a.ema().shadow().at(name)));
        REQUIRE(as_vector(c.optimizer().state().at(name).m) == as_vector(a.optimizer().state().at(name).m));
        REQUIRE(as_vector(c.optimizer().state().at(name).v) == as_vector(a.optimizer().state().at(name).v));
    }

    // The test can tell: resuming from the weights alone (fresh Adam, EMA and generator) diverges.
    UNet<float> weights_only(checkpoint_unet_config(), 99);
    diffuse::optim::Trainer<UNet<float>> d(weights_only, schedule, tiny_options());
    diffuse::load_weights(path, weights_only);
    for (long k = steps / 2; k < steps; ++k) d.step(batch(k), labels(k));
    REQUIRE(weights_of(weights_only) != wa);
}

TEST_CASE("a training checkpoint holds the optimizer, EMA, counters and generator under their names", "[io][checkpoint]") {
    TempDir dir("contents");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> trainer(model, schedule, tiny_options());
    for (long k = 0; k < 2; ++k) trainer.step(batch(k), labels(k));
    diffuse::save_checkpoint(path, trainer);

    const diffuse::SafeTensors file = diffuse::load_safetensors(path);
    const Index n = diffuse::nn::parameter_count(model);
    Index per_section[4] = {0, 0, 0, 0};
    std::size_t tensors = 0;
    model.for_each_parameter("", [&](diffuse::nn::ParameterView<float> p) {
        ++tensors;
        per_section[0] += file.at(p.name).numel();
        per_section[1] += file.at("ema." + p.name).numel();
        per_section[2] += file.at("optimizer.exp_avg." + p.name).numel();
        per_section[3] += file.at("optimizer.exp_avg_sq." + p.name).numel();
    });
    for (const Index count : per_section) REQUIRE(count == n);
    REQUIRE(file.scalar<std::int64_t>("trainer.step") == 2);
    REQUIRE(file.scalar<std::int64_t>("optimizer.step") == 2);
    REQUIRE(file.scalar<std::int64_t>("ema.num_updates") == 2);
    REQUIRE(file.scalar<std::int64_t>("generator.seed") == 7);
    REQUIRE(static_cast<std::uint64_t>(file.scalar<std::int64_t>("generator.offset")) == trainer.generator().offset());
    REQUIRE(file.metadata().at("diffuse.checkpoint") == "training_state");
    REQUIRE(file.size() == 4 * tensors + 5);

    // The EMA half of the checkpoint, for a sampling program.
    UNet<float> sampler(diffuse::config_from_checkpoint(path), 3);
    diffuse::load_weights(path, sampler, diffuse::Weights::ema);
    for (const auto& [name, values] : weights_of(sampler)) REQUIRE(values == as_vector(trainer.ema().shadow().at(name)));
    UNet<float> trained(diffuse::config_from_checkpoint(path), 3);
    diffuse::load_weights(path, trained);
    REQUIRE(weights_of(trained) == weights_of(model));

    // And as a weights file of its own.
    const std::string ema_path = dir.file("ema.safetensors");
    diffuse::save_weights(ema_path, model, trainer.ema());
    UNet<float> from_ema_file(diffuse::config_from_checkpoint(ema_path), 4);
    diffuse::load_weights(ema_path, from_ema_file);
    REQUIRE(weights_of(from_ema_file) == weights_of(sampler));
    REQUIRE(diffuse::read_safetensors_header(ema_path).metadata.at("diffuse.weights") == "ema");
}

TEST_CASE("a checkpoint that does not fit the trainer is rejected and leaves it untouched", "[io][checkpoint]") {
    TempDir dir("reject");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    UNetConfig other_config = checkpoint_unet_config();
    other_config.num_res_blocks = 2;
    UNet<float> other(other_config, 1);
    diffuse::optim::Trainer<UNet<float>> writer(other, schedule, tiny_options());
    writer.step(batch(0), labels(0));
    diffuse::save_checkpoint(path, writer);

    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> trainer(model, schedule, tiny_options());
    trainer.step(batch(0), labels(0));
    const auto before = weights_of(model);
    const auto offset = trainer.generator().offset();
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_checkpoint(path, trainer); }),
                 Contains("not match the model, EMA and optimizer") &&
                     Contains("down.0.attn.1.k.bias: in the file but not in the model") && Contains("more"));
    REQUIRE(weights_of(model) == before);
    REQUIRE(trainer.step_count() == 1);
    REQUIRE(trainer.generator().offset() == offset);

    const std::string weights = dir.file("weights.safetensors");
    diffuse::save_weights(weights, model);
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_checkpoint(weights, trainer); }),
                 Contains("holds weights only, not a training state"));
}

TEST_CASE("the trainer options survive the checkpoint's JSON exactly", "[io][checkpoint]") {
    diffuse::optim::TrainerOptions o = tiny_options();
    o.prediction = diffuse::Prediction::v;
    o.min_snr_gamma = 5.0;
    o.seed = 0xFEDCBA9876543210ull;
    o.adam.lr = 1.0 / 3.0;
    const auto back = diffuse::trainer_options_from_json(diffuse::trainer_options_to_json(o));
    REQUIRE(back.adam.lr == o.adam.lr);
    REQUIRE(back.adam.beta1 == o.adam.beta1);
    REQUIRE(back.adam.beta2 == o.adam.beta2);
    REQUIRE(back.adam.eps == o.adam.eps);
    REQUIRE(back.adam.weight_decay == o.adam.weight_decay);
    REQUIRE(back.warmup_steps == o.warmup_steps);
    REQUIRE(back.max_grad_norm == o.max_grad_norm);
    REQUIRE(back.ema_decay == o.ema_decay);
    REQUIRE(back.ema_warmup == o.ema_warmup);
    REQUIRE(back.prediction == o.prediction);
    REQUIRE(back.min_snr_gamma == o.min_snr_gamma);
    REQUIRE(back.label_dropout == o.label_dropout);
    REQUIRE(back.seed == o.seed);
    REQUIRE(back.loss == diffuse::Loss::simple);
    o.loss = diffuse::Loss::hybrid;
    o.variance = diffuse::ModelVariance::learned_range;
    o.vlb_lambda = 0.0025;
    o.timestep_sampling = diffuse::optim::TimestepSampling::loss_aware;
    const auto hybrid = diffuse::trainer_options_from_json(diffuse::trainer_options_to_json(o));
    REQUIRE(hybrid.loss == o.loss);
    REQUIRE(hybrid.variance == o.variance);
    REQUIRE(hybrid.vlb_lambda == o.vlb_lambda);
    REQUIRE(hybrid.timestep_sampling == o.timestep_sampling);
    // a constant rate writes no decay keys, so programs older than the cosine decay read the file
    REQUIRE(diffuse::trainer_options_to_json(o).find("lr_decay_steps") == std::string::npos);
    o.lr_decay_steps = 4321;
    o.final_lr = 1.0 / 7.0;
    const auto cosine = diffuse::trainer_options_from_json(diffuse::trainer_options_to_json(o));
    REQUIRE(cosine.lr_decay_steps == o.lr_decay_steps);
    REQUIRE(cosine.final_lr == o.final_lr);
    // a file written before the objectives were stored reads as the simple loss
    const auto older = diffuse::trainer_options_from_json(
        R"({"adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.0}, "warmup_steps": 0, )"
        R"("max_grad_norm": 1.0, "ema_decay": 0.999, "ema_warmup": true, "prediction": "epsilon", "min_snr_gamma": 0.0, )"
        R"("label_dropout": 0.1, "seed": 0})");
    REQUIRE(older.loss == diffuse::Loss::simple);
    REQUIRE(older.variance == diffuse::ModelVariance::fixed_small);
    REQUIRE(older.timestep_sampling == diffuse::optim::TimestepSampling::uniform);
    REQUIRE(older.lr_decay_steps == 0);  // and a constant learning rate
    REQUIRE_THROWS_WITH(diffuse::unet_config_from_json(R"({"in_channels": 1})", "f.safetensors"),
                        Contains("f.safetensors") && Contains("diffuse.unet_config has no \"out_channels\""));
}

TEST_CASE("a checkpoint saved before the first step has no EMA or optimizer tensors and resumes too", "[io][checkpoint][resume]") {
    TempDir dir("step0");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    UNet<float> straight(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> a(straight, schedule, tiny_options());
    diffuse::save_checkpoint(path, a);
    const diffuse::SafeTensors file = diffuse::load_safetensors(path);
    for (const auto& [name, tensor] : file.tensors()) {
        (void)tensor;
        INFO(name);
        REQUIRE((name == "ema.num_updates" || name == "optimizer.step" || name.rfind("ema.", 0) != 0));
        REQUIRE((name == "optimizer.step" || name.rfind("optimizer.", 0) != 0));
    }

    UNet<float> resumed(checkpoint_unet_config(), 2);
    diffuse::optim::Trainer<UNet<float>> b(resumed, schedule, tiny_options());
    b.step(batch(0), labels(0));  // state that the load must replace
    diffuse::load_checkpoint(path, b);
    REQUIRE(b.step_count() == 0);
    REQUIRE(b.ema().shadow().empty());
    REQUIRE(b.optimizer().state().empty());
    for (long k = 0; k < 2; ++k) {
        a.step(batch(k), labels(k));
        b.step(batch(k), labels(k));
    }
    REQUIRE(weights_of(resumed) == weights_of(straight));
}

TEST_CASE("a checkpoint stores the trainer's schedule, which reads back to the same betas, and refuses another on resume",
          "[io][checkpoint][schedule]") {
    TempDir dir("schedule");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> cosine(diffuse::cosine_betas(100));
    UNet<float> model(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> trainer(model, cosine, tiny_options());
    trainer.step(batch(0), labels(0));

    // unnamed by default, named when the caller says
    diffuse::save_checkpoint(path, trainer);
    diffuse::StoredSchedule stored = diffuse::schedule_from_checkpoint(path);
    CHECK(stored.name.empty());
    REQUIRE(stored.betas == cosine.betas_double());  // every double back exactly
    diffuse::save_checkpoint(path, trainer, diffuse::schedule_metadata(cosine, "cosine"));
    stored = diffuse::schedule_from_checkpoint(path);
    CHECK(stored.name == "cosine");
    REQUIRE(stored.betas == diffuse::cosine_betas(100));
    const diffuse::NoiseSchedule<float> rebuilt(stored.betas);
    REQUIRE(rebuilt.alphas_cumprod_double() == cosine.alphas_cumprod_double());

    // a weights file holds one only when given
    const std::string weights = dir.file("weights.safetensors");
    diffuse::save_weights(weights, model);
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::schedule_from_checkpoint(weights); }), Contains("diffuse.schedule"));
    diffuse::save_weights(weights, model, diffuse::schedule_metadata(cosine, "cosine"));
    REQUIRE(diffuse::schedule_from_checkpoint(weights).betas == cosine.betas_double());

    // resuming on other betas is refused, naming where they part, and changes nothing
    const diffuse::NoiseSchedule<float> linear(diffuse::linear_betas(100));
    UNet<float> other(checkpoint_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> on_linear(other, linear, tiny_options());
    const auto before = weights_of(other);
    REQUIRE_THAT(diffuse::testing_support::rejection([&] { diffuse::load_checkpoint(path, on_linear); }),
                 Contains("another noise schedule") && Contains("T = 100 in the file, 100 in the trainer") &&
                     Contains("from t = 0"));
    REQUIRE(weights_of(other) == before);
    REQUIRE(on_linear.step_count() == 0);
    diffuse::load_checkpoint(path, trainer);  // its own schedule: accepted
}

TEST_CASE("a hybrid-loss run with the loss-aware timestep sampler resumes bit for bit, the sampler's histories included",
          "[io][checkpoint][resume]") {
    TempDir dir("resume_hybrid");
    const std::string path = dir.file("checkpoint.safetensors");
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(8));  // T = 8: the histories fill in ~20 steps
    UNetConfig config = checkpoint_unet_config();
    config.out_channels = 2;  // [eps, v]
    diffuse::optim::TrainerOptions options = tiny_options();
    options.loss = diffuse::Loss::hybrid;
    options.variance = diffuse::ModelVariance::learned_range;
    options.timestep_sampling = diffuse::optim::TimestepSampling::loss_aware;
    constexpr long steps = 40, half = 20;
    // 8-bit data: the bound's decoder term needs it
    const auto data = [](long k) {
        diffuse::Tensor4<float> x = batch(k);
        for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::round((x.data()[i] + 1) * 127.5f) / 127.5f - 1;
        return x;
    };

    UNet<float> straight(config, 1);
    diffuse::optim::Trainer<UNet<float>> a(straight, schedule, options);
    for (long k = 0; k < steps; ++k) a.step(data(k), labels(k));
    REQUIRE(a.timestep_sampler()->warmed_up());  // the second half draws by importance
    {
        UNet<float> first(config, 1);
        diffuse::optim::Trainer<UNet<float>> b(first, schedule, options);
        for (long k = 0; k < half; ++k) b.step(data(k), labels(k));
        diffuse::save_checkpoint(path, b);
    }
    const diffuse::SafeTensors file = diffuse::load_safetensors(path);
    REQUIRE(file.at("trainer.timestep_loss_history").shape == std::vector<Index>{8, 10});
    REQUIRE(file.at("trainer.timestep_loss_counts").shape == std::vector<Index>{8});
    UNet<float> resumed(config, 99);
    diffuse::optim::Trainer<UNet<float>> c(resumed, schedule, diffuse::trainer_options_from_checkpoint(path));
    diffuse::load_checkpoint(path, c);
    for (long k = c.step_count(); k < steps; ++k) c.step(data(k), labels(k));
    REQUIRE(c.timestep_sampler()->history() == a.timestep_sampler()->history());
    REQUIRE(c.timestep_sampler()->counts() == a.timestep_sampler()->counts());
    REQUIRE(weights_of(resumed) == weights_of(straight));

    // the test can tell: a fresh sampler (empty histories) on resume diverges
    UNet<float> fresh(config, 99);
    diffuse::optim::Trainer<UNet<float>> d(fresh, schedule, options);
    diffuse::load_checkpoint(path, d);
    d.timestep_sampler()->set_state(std::vector<double>(80, 0.0), std::vector<std::int64_t>(8, 0));
    for (long k = d.step_count(); k < steps; ++k) d.step(data(k), labels(k));
    REQUIRE(weights_of(fresh) != weights_of(straight));

    // a stored history that is not finite is refused, and nothing changes
    diffuse::SafeTensors bad = diffuse::load_safetensors(path);
    std::vector<double> history(80);
    bad.copy_to("trainer.timestep_loss_history", history.data(), 80);
    history[0] = std::nan("");
    diffuse::SafeTensors rewritten(path);
    for (const auto& [name, tensor] : bad.tensors()) {
        if (name != "trainer.timestep_loss_history") rewritten.add(name, tensor);
    }
    rewritten.add("trainer.timestep_loss_history", {8, 10}, history.data());
    rewritten.metadata() = bad.metadata();
    const std::string bad_path = dir.file("bad.safetensors");
    diffuse::save_safetensors(bad_path, rewritten);
    UNet<float> target(config, 5);
    diffuse::optim::Trainer<UNet<float>> e(target, schedule, options);
    const auto before = weights_of(target);
    REQUIRE_THROWS_WITH(diffuse::load_checkpoint(bad_path, e), Contains("history[0][0] = nan"));
    REQUIRE(weights_of(target) == before);
    REQUIRE(e.step_count() == 0);
}
