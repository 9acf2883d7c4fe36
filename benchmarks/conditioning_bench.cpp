// What conditioning on a prompt costs against conditioning on a class: the 28x28 example's two models
// at batch 16, the class-conditional reference U-Net (a class embedding added to the time embedding)
// and the prompt model (the same U-Net without the class embedding, its attention blocks at 7x7 and
// in the middle LDM's spatial transformers with cross-attention to the prompt, the prompt's pooled
// embedding added to the time embedding, and a 2-layer text encoder of width 64, trained with it). Per model: a training step (noise, forward, loss, backward,
// clipping, Adam, EMA) and a guided sampling step (one model call on the doubled batch [c; null],
// what a DDIM or DPM-Solver step costs; the update itself is negligible).
// Threads: diffuse's default (DIFFUSE_NUM_THREADS or all).
//   build/release/benchmarks/diffuse_conditioning_bench
#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/models/text_encoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/nn/spatial_transformer.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/schedule/betas.hpp>

#include <benchmark/benchmark.h>

#include "kept_memory.hpp"

#include <string>
#include <vector>

namespace {

using diffuse::Index;
using diffuse::Tensor4;

constexpr Index batch = 16;  // the example's

diffuse::UNetConfig class_model() {
    diffuse::UNetConfig c = diffuse::UNetConfig::reference();
    c.num_classes = 10;
    return c;
}

// as examples/train.cpp's prompt_model_config and examples/common/prompts.hpp build it
diffuse::UNetConfig prompt_unet() {
    diffuse::UNetConfig c = diffuse::UNetConfig::reference();
    c.heads = 4;
    c.context_pooling = true;
    return c;
}

const diffuse::Tokenizer& tokenizer() {
    static const diffuse::Tokenizer t({"a", "dark", "light", "narrow", "wide", "ankle", "boot", "bag", "dress"}, 8);
    return t;
}

diffuse::TextEncoderConfig text_encoder() {
    diffuse::TextEncoderConfig c;
    c.vocabulary_size = tokenizer().vocabulary_size();
    c.max_length = tokenizer().max_length();
    c.width = 64;
    c.layers = 2;
    c.heads = 4;
    return c;
}

// Captions of the lengths the example draws: 2 to 5 words.
diffuse::Tokens captions() {
    const std::vector<std::string> kinds = {"a dark narrow ankle boot", "bag", "a light dress", "wide boot"};
    std::vector<std::string> prompts;
    for (Index n = 0; n < batch; ++n) prompts.push_back(kinds[static_cast<std::size_t>(n) % kinds.size()]);
    return tokenizer().batch(prompts);
}

diffuse::Conditioning<float> conditioning(bool prompt) {
    diffuse::Conditioning<float> c;
    if (prompt) {
        c.prompt = captions();
    } else {
        for (Index n = 0; n < batch; ++n) c.labels.push_back(static_cast<int>(n % 10));
    }
    return c;
}

template <class Model>
void train_step(benchmark::State& state, Model& model, bool prompt) {
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(1000));
    diffuse::optim::Trainer<Model> trainer(model, schedule);
    diffuse::Generator gen(6);
    const auto x0 = gen.randn<float, 4>({batch, 1, 28, 28});
    const diffuse::Conditioning<float> c = conditioning(prompt);
    trainer.step(x0, c);  // warm-up: the first step touches fresh memory
    for (auto _ : state) {
        const auto stats = trainer.step(x0, c);
        benchmark::DoNotOptimize(stats.loss);
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void guided_step(benchmark::State& state, const diffuse::ModelFn<float>& guided, bool prompt) {
    diffuse::Generator gen(7);
    const auto x = gen.randn<float, 4>({batch, 1, 28, 28});
    const diffuse::Timesteps t(static_cast<std::size_t>(batch), 500);
    const diffuse::Conditioning<float> c = conditioning(prompt);
    guided(x, t, c);  // warm-up
    for (auto _ : state) {
        const Tensor4<float> eps = guided(x, t, c);
        benchmark::DoNotOptimize(eps.data());
    }
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_class_train_step(benchmark::State& state) {
    diffuse::UNet<float> unet(class_model(), 1);
    train_step(state, unet, false);
}
void BM_prompt_train_step(benchmark::State& state) {
    diffuse::PromptUNet<float> model(text_encoder(), prompt_unet(), 1);
    train_step(state, model, true);
}
void BM_class_guided_sampling_step(benchmark::State& state) {
    diffuse::UNet<float> unet(class_model(), 1);
    unet.set_training(false);
    guided_step(state, diffuse::classifier_free_guidance<float>(diffuse::model_fn<float>(unet), 10, 3.0), false);
}
void BM_prompt_guided_sampling_step(benchmark::State& state) {
    diffuse::PromptUNet<float> model(text_encoder(), prompt_unet(), 1);
    model.set_training(false);
    guided_step(state, diffuse::classifier_free_guidance<float>(diffuse::model_fn<float>(model), diffuse::null_prompt<float>(), 3.0),
                true);
}
// One of the prompt model's spatial transformers alone, as at 7x7 (64 channels, 4 heads, a context of
// 8 tokens of width 64), forward or forward + backward, at batch 16: the prompt model has six.
void BM_spatial_transformer(benchmark::State& state) {
    diffuse::Generator gen(8);
    diffuse::nn::SpatialTransformer<float> block(64, 4, 16, 64, 8, gen);
    const auto x = gen.randn<float, 4>({batch, 64, 7, 7});     // [N, C, 7, 7]
    const auto context = gen.randn<float, 3>({batch, 8, 64});  // [N, L, D]
    const auto dy = gen.randn<float, 4>({batch, 64, 7, 7});
    const diffuse::KeyMask mask;
    const bool backward = state.range(0) != 0;
    for (auto _ : state) {
        auto y = block.forward(x, context, mask);
        if (backward) {
            auto d = block.backward(dy);
            benchmark::DoNotOptimize(d.dx.data());
        }
        benchmark::DoNotOptimize(y.data());
    }
}

BENCHMARK(BM_class_train_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_prompt_train_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_class_guided_sampling_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_prompt_guided_sampling_step)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_spatial_transformer)->ArgName("bwd")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
