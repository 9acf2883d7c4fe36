// The U-Net and its layers at the reference configuration's shapes (28x28x1, base 32 channels,
// batch 64 for training): each layer's forward and backward, the whole network's forward at batch
// 1 and 16, a DDPM sampling step at batch 16, and a full training step at batch 64. GFLOPS counts
// 2 flops per multiply-add of the convolutions, linear layers and attention products (the same
// count as forward_flops_per_image);
// a backward pass costs twice its forward. Threads: diffuse's default (DIFFUSE_NUM_THREADS or all).
// The whole network's benchmarks also report of_peak, their rate over the FMA peak of as many threads
// measured in the same run (benchmarks/fma_peak.hpp).
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/samplers/ddpm.hpp>
#include <diffuse/schedule/betas.hpp>

#include <benchmark/benchmark.h>

#include <functional>

#include "fma_peak.hpp"
#include "kept_memory.hpp"

namespace {

using diffuse::Index;

using diffuse::Tensor4;

void set_gflops(benchmark::State& state, double flops_per_iteration) {
    state.counters["GFLOPS"] = benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The peak of the threads diffuse runs on (fma_peak.hpp), measured in this process: the whole
// network's benchmarks take it just before and just after their timed loop.
double threads_peak_gflops() { return diffuse_bench::peak_gflops(static_cast<int>(diffuse::num_threads())); }

// set_gflops, and of_peak: that rate over the mean of the peaks measured before and after the timed
// loop (peak_GFLOPS).
void set_gflops_of_peak(benchmark::State& state, double flops_per_iteration, double peak_before) {
    set_gflops(state, flops_per_iteration);
    const double peak = (peak_before + threads_peak_gflops()) / 2;
    state.counters["peak_GFLOPS"] = peak;
    state.counters["of_peak"] = benchmark::Counter(flops_per_iteration * 1e-9 / peak, benchmark::Counter::kIsIterationInvariantRate);
}

// args: in channels, out channels, kernel, stride, side, backward, winograd; batch 64. GFLOPS counts
// the direct convolution's FLOPs, also for Winograd's F(2x2, 3x3) (which does 2.25x fewer
// multiplications in its products): the rate is of the work replaced.
void BM_conv2d(benchmark::State& state) {
    const Index cin = state.range(0), cout = state.range(1), k = state.range(2), s = state.range(3), side = state.range(4);
    const bool backward = state.range(5) != 0;
    diffuse::Generator gen(1);
    diffuse::nn::Conv2d<float> conv(cin, cout, k, s, gen);
    conv.set_algorithm(state.range(6) != 0 ? diffuse::nn::ConvAlgorithm::winograd : diffuse::nn::ConvAlgorithm::direct);
    const auto x = gen.randn<float, 4>({64, cin, side, side});
    Tensor4<float> y = conv.forward(x);
    for (auto _ : state) {
        if (backward) {
            Tensor4<float> dx = conv.backward(y);
            benchmark::DoNotOptimize(dx.data());
        } else {
            y = conv.forward(x);
            benchmark::DoNotOptimize(y.data());
        }
    }
    set_gflops(state, conv.forward_flops(x) * (backward ? 2 : 1));
}
// {cin, cout, k, stride, side, backward, winograd}
BENCHMARK(BM_conv2d)
    ->ArgNames({"cin", "cout", "k", "s", "side", "bwd", "winograd"})
    ->ArgsProduct({{32}, {32}, {3}, {1}, {28}, {0, 1}, {0, 1}})
    ->ArgsProduct({{64}, {32}, {3}, {1}, {28}, {0, 1}, {0, 1}})
    ->ArgsProduct({{64}, {64}, {3}, {1}, {14}, {0, 1}, {0, 1}})
    ->ArgsProduct({{64}, {64}, {3}, {1}, {7}, {0, 1}, {0, 1}})
    ->Args({32, 32, 3, 2, 28, 0, 0})->Args({32, 32, 3, 2, 28, 1, 0})
    ->Args({64, 64, 1, 1, 7, 0, 0})->Args({64, 64, 1, 1, 7, 1, 0})
    ->Args({128, 64, 3, 1, 7, 0, 0})->Args({128, 64, 3, 1, 7, 1, 0})   // the decoder's 7x7 convs
    ->Args({32, 1, 3, 1, 28, 0, 0})->Args({32, 1, 3, 1, 28, 1, 0})     // conv_out
    ->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_group_norm(benchmark::State& state) {
    const bool backward = state.range(0) != 0;
    diffuse::Generator gen(2);
    const auto activation = state.range(1) != 0 ? diffuse::nn::Activation::silu : diffuse::nn::Activation::none;
    diffuse::nn::GroupNorm<float> norm(8, 32, 1e-5, activation);
    const auto x = gen.randn<float, 4>({64, 32, 28, 28});
    Tensor4<float> y = norm.forward(std::cref(x));
    for (auto _ : state) {  // x borrowed, as the U-Net's layers pass it: no copy kept for backward
        Tensor4<float> out = backward ? norm.backward(y) : norm.forward(std::cref(x));
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(state.iterations() * x.size() * Index{sizeof(float)} * (backward ? 3 : 2));
}
BENCHMARK(BM_group_norm)->ArgNames({"bwd", "silu"})->ArgsProduct({{0, 1}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_silu(benchmark::State& state) {
    const bool backward = state.range(0) != 0;
    diffuse::Generator gen(3);
    diffuse::nn::SiLU<float> silu;
    const auto x = gen.randn<float, 4>({64, 32, 28, 28});
    Tensor4<float> y = silu.forward(x);
    for (auto _ : state) {
        Tensor4<float> out = backward ? silu.backward(y) : silu.forward(x);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(state.iterations() * x.size() * Index{sizeof(float)} * (backward ? 3 : 3));
}
BENCHMARK(BM_silu)->ArgName("bwd")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_attention(benchmark::State& state) {
    const bool backward = state.range(0) != 0;
    diffuse::Generator gen(4);
    diffuse::nn::AttentionBlock<float> attn(64, 1, 8, gen);
    const auto x = gen.randn<float, 4>({64, 64, 7, 7});
    Tensor4<float> y = attn.forward(x);
    for (auto _ : state) {
        Tensor4<float> out = backward ? attn.backward(y) : attn.forward(x);
        benchmark::DoNotOptimize(out.data());
    }
    const double flops = 64.0 * (4 * 2.0 * 64 * 64 * 49 + 4.0 * 49 * 49 * 64);
    set_gflops(state, flops * (backward ? 2 : 1));
}
BENCHMARK(BM_attention)->ArgName("bwd")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The reference U-Net (class-conditional, as the example trains it), evaluation mode.
void BM_unet_forward(benchmark::State& state) {
    const Index batch = state.range(0);
    diffuse::UNetConfig config = diffuse::UNetConfig::reference();
    config.num_classes = 10;
    diffuse::UNet<float> unet(config, 1);
    unet.set_training(false);
    diffuse::Generator gen(5);
    const auto x = gen.randn<float, 4>({batch, 1, 28, 28});
    const diffuse::Timesteps t = gen.randint(batch, 1000);
    const std::vector<int> labels(static_cast<std::size_t>(batch), 3);
    unet.forward(x, t, labels);  // warm-up: the first pass touches fresh memory, later ones reuse it
    const double peak_before = threads_peak_gflops();
    for (auto _ : state) {
        Tensor4<float> eps = unet.forward(x, t, labels);
        benchmark::DoNotOptimize(eps.data());
    }
    set_gflops_of_peak(state, unet.forward_flops_per_image() * batch, peak_before);
}
BENCHMARK(BM_unet_forward)->ArgName("batch")->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

// One whole training step: noise, forward, loss, backward, clipping, Adam, EMA.
// One step of DDPM ancestral sampling at batch 16 (the U-Net's forward, the posterior mean and the
// noise), class-conditional; a 1000-step sample of 16 images costs 1000 of these.
void BM_ddpm_step(benchmark::State& state) {
    const Index batch = state.range(0);
    diffuse::UNetConfig config = diffuse::UNetConfig::reference();
    config.num_classes = 10;
    diffuse::UNet<float> unet(config, 1);
    unet.set_training(false);
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    diffuse::Generator gen(7);
    const auto x = gen.randn<float, 4>({batch, 1, 28, 28});
    const auto noise = gen.randn<float, 4>({batch, 1, 28, 28});
    diffuse::DDPMOptions<float> options;
    options.conditioning.labels.assign(static_cast<std::size_t>(batch), 3);
    const auto model = diffuse::model_fn<float>(unet);
    diffuse::ddpm_step(schedule, model, x, 500, noise, options);  // warm-up
    const double peak_before = threads_peak_gflops();
    for (auto _ : state) {
        const auto step = diffuse::ddpm_step(schedule, model, x, 500, noise, options);
        benchmark::DoNotOptimize(step.x.data());
    }
    set_gflops_of_peak(state, unet.forward_flops_per_image() * batch, peak_before);
}
BENCHMARK(BM_ddpm_step)->ArgName("batch")->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_train_step(benchmark::State& state) {
    const Index batch = state.range(0);
    diffuse::UNetConfig config = diffuse::UNetConfig::reference();
    config.num_classes = 10;
    diffuse::UNet<float> unet(config, 1);
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    diffuse::optim::Trainer<diffuse::UNet<float>> trainer(unet, schedule);
    diffuse::Generator gen(6);
    auto x0 = gen.randn<float, 4>({batch, 1, 28, 28});
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (Index n = 0; n < batch; ++n) labels[n] = static_cast<int>(n % 10);
    // Warm-up: a training run is all steady-state steps. The first three still grow the heap (page
    // faults: 152,000, 13,000 and 4,700 at batch 64 on an AMD EPYC, Zen 5), the fourth on none.
    for (int step = 0; step < 3; ++step) trainer.step(x0, labels);
    const double peak_before = threads_peak_gflops();
    for (auto _ : state) {
        const auto stats = trainer.step(x0, labels);
        benchmark::DoNotOptimize(stats.loss);
    }
    set_gflops_of_peak(state, 3.0 * unet.forward_flops_per_image() * batch, peak_before);
}
BENCHMARK(BM_train_step)->ArgName("batch")->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);

}  // namespace
