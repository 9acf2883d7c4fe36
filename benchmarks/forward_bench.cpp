// The forward process on a training batch, x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps,
// [64, 1, 28, 28] float, next to the two things it is bounded by: a plain copy of the same buffers
// (the memory traffic) and the Philox normal draws that make eps. Bytes per second count every
// byte read and written; 1 and 2 threads (diffuse::set_num_threads).
#include <diffuse/core/random.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr diffuse::Index batch = 64, channels = 1, height = 28, width = 28;

// A batch as the trainer has it: data in [-1, 1], eps ~ N(0, I), one timestep per sample.
struct Batch {
    diffuse::Tensor4<float> x0{batch, channels, height, width};     // [N, C, H, W]
    diffuse::Tensor4<float> noise{batch, channels, height, width};  // [N, C, H, W]
    diffuse::Timesteps t;                                           // [N]
    Batch() {
        diffuse::Generator generator(1);
        generator.uniform(x0.data(), x0.size());
        x0 = x0 * 2.0f - 1.0f;
        generator.normal(noise);
        t = generator.randint(batch, 1000);
    }
};

void BM_q_sample(benchmark::State& state) {
    diffuse::set_num_threads(static_cast<int>(state.range(0)));
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    const Batch b;
    for (auto _ : state) {
        diffuse::Tensor4<float> x_t = diffuse::q_sample(schedule, b.x0, b.t, b.noise);  // [N, C, H, W]
        benchmark::DoNotOptimize(x_t.data());
        benchmark::ClobberMemory();
    }
    // x0 and noise read, x_t written
    state.SetBytesProcessed(state.iterations() * 3 * b.x0.size() * std::int64_t{sizeof(float)});
}

void BM_copy(benchmark::State& state) {
    diffuse::set_num_threads(static_cast<int>(state.range(0)));
    const Batch b;
    diffuse::Tensor4<float> out(b.x0.dimensions());  // [N, C, H, W]
    const float* in = b.x0.data();
    float* to = out.data();
    for (auto _ : state) {
        // Split as per_sample_combine splits q_sample: by sample, at least 2^15 elements a piece.
        const diffuse::Index per_sample = b.x0.size() / batch;
        const diffuse::Index grain = std::max<diffuse::Index>(1, (diffuse::Index{1} << 15) / per_sample);
        diffuse::parallel_for(batch, grain, [&](diffuse::Index begin, diffuse::Index end) {
            std::copy(in + begin * per_sample, in + end * per_sample, to + begin * per_sample);
        });
        benchmark::DoNotOptimize(to);
        benchmark::ClobberMemory();
    }
    // x0 read, out written
    state.SetBytesProcessed(state.iterations() * 2 * b.x0.size() * std::int64_t{sizeof(float)});
}

void BM_normal(benchmark::State& state) {
    diffuse::set_num_threads(static_cast<int>(state.range(0)));
    diffuse::Tensor4<float> noise(batch, channels, height, width);  // [N, C, H, W]
    diffuse::Generator generator(0);
    for (auto _ : state) {
        generator.normal(noise);
        benchmark::DoNotOptimize(noise.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * noise.size());  // normal draws per second
}

}  // namespace

BENCHMARK(BM_q_sample)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_copy)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_normal)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
