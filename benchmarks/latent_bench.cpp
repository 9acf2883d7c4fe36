// Latent against pixel diffusion on the 28x28 example's shapes, in one run: the training step of
// the reference U-Net at batch 16 (the example's batch) on 28x28x1 images and of the latent U-Net
// diffuse_train builds (latent_unet_config of reference with channel multipliers 1,1,2: levels 14 and 7
// with 32 and 64 channels) on the 14x14x2 latents of the example's
// autoencoder (f = 2, z = 2, ch 16), a sampling step (one DDIM step with classifier-free guidance, a
// model call on the doubled batch) at batch 16, and the autoencoder's encoding of training images
// and decoding of sampled latents. images/s counts images (or latents) per second; GFLOPS as
// unet_bench counts them (3x the forward for a training step). Threads: diffuse's default.
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/latent_diffusion.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/schedule/betas.hpp>

#include <benchmark/benchmark.h>

#include "kept_memory.hpp"

#include <vector>

namespace {

using diffuse::Index;
using diffuse::Tensor4;

/// The example's autoencoder: f = 2, z = 2, base 16 channels.
diffuse::AutoencoderConfig example_autoencoder() {
    diffuse::AutoencoderConfig c;
    c.ch = 16;
    c.ch_mult = {1, 2};
    c.z_channels = 2;
    c.image_size = 28;
    return c;
}

/// Arg 0: the pixel U-Net (reference, 10 classes); 1: diffuse_train's latent U-Net for
/// example_autoencoder(), cut from reference with channel multipliers 1,1,2.
diffuse::UNetConfig unet_config(bool latent) {
    diffuse::UNetConfig c = diffuse::UNetConfig::reference();
    c.num_classes = 10;
    if (!latent) return c;
    c.channel_mult = {1, 1, 2};
    return diffuse::latent_unet_config(c, example_autoencoder());
}

void set_counters(benchmark::State& state, Index batch, double flops_per_iteration) {
    state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
    if (flops_per_iteration > 0) {
        state.counters["GFLOPS"] = benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    }
}

void BM_train_step(benchmark::State& state) {
    const bool latent = state.range(0) != 0;
    const Index batch = 16;
    diffuse::UNet<float> unet(unet_config(latent), 1);
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(1000));
    diffuse::optim::TrainerOptions options;
    options.label_dropout = 0.1;
    diffuse::optim::Trainer<diffuse::UNet<float>> trainer(unet, schedule, options);
    const diffuse::UNetConfig& c = unet.config();
    auto x0 = diffuse::Generator(6).randn<float, 4>({batch, c.in_channels, c.image_size, c.image_size});
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) labels[static_cast<std::size_t>(n)] = static_cast<int>(n % 10);
    trainer.step(x0, labels);  // warm-up
    for (auto _ : state) {
        const auto stats = trainer.step(x0, labels);
        benchmark::DoNotOptimize(stats.loss);
    }
    set_counters(state, batch, 3.0 * unet.forward_flops_per_image() * static_cast<double>(batch));
}
BENCHMARK(BM_train_step)->ArgName("latent")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

// One DDIM step with classifier-free guidance (scale 3) at batch 16: the U-Net on 32 inputs.
void BM_sampling_step(benchmark::State& state) {
    const bool latent = state.range(0) != 0;
    const Index batch = 16;
    diffuse::UNet<float> unet(unet_config(latent), 1);
    unet.set_training(false);
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(1000));
    const diffuse::UNetConfig& c = unet.config();
    const auto x = diffuse::Generator(7).randn<float, 4>({batch, c.in_channels, c.image_size, c.image_size});
    const auto noise = Tensor4<float>(x.dimensions()).setZero();
    diffuse::DDIMOptions<float> options;
    options.conditioning.labels.assign(static_cast<std::size_t>(batch), 3);
    const auto model = diffuse::classifier_free_guidance<float>(diffuse::model_fn<float>(unet), static_cast<int>(c.num_classes), 3.0);
    diffuse::ddim_step(schedule, model, x, 500, noise, options);  // warm-up
    for (auto _ : state) {
        const auto step = diffuse::ddim_step(schedule, model, x, 500, noise, options);
        benchmark::DoNotOptimize(step.x.data());
    }
    set_counters(state, batch, 2.0 * unet.forward_flops_per_image() * static_cast<double>(batch));
}
BENCHMARK(BM_sampling_step)->ArgName("latent")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The autoencoder's encoder on 64 training images (diffuse_train encodes the training set once).
void BM_encode(benchmark::State& state) {
    diffuse::Autoencoder<float> ae(example_autoencoder(), 1);
    const auto x = diffuse::Generator(8).randn<float, 4>({64, 1, 28, 28});
    diffuse::encode_latents(ae, x, 1, 64);  // warm-up
    for (auto _ : state) {
        const auto z = diffuse::encode_latents(ae, x, 1, 64);
        benchmark::DoNotOptimize(z.data());
    }
    set_counters(state, 64, 0.0);
}
BENCHMARK(BM_encode)->Unit(benchmark::kMillisecond)->UseRealTime();

// The decoder on 16 sampled latents: once per sample, after all of its steps.
void BM_decode(benchmark::State& state) {
    diffuse::Autoencoder<float> ae(example_autoencoder(), 1);
    const auto z = diffuse::Generator(9).randn<float, 4>({16, 2, 14, 14});
    diffuse::decode_latents(ae, z, 16);  // warm-up
    for (auto _ : state) {
        const auto x = diffuse::decode_latents(ae, z, 16);
        benchmark::DoNotOptimize(x.data());
    }
    set_counters(state, 16, 0.0);
}
BENCHMARK(BM_decode)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
