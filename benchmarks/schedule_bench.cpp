// Building a NoiseSchedule<float>: every table computed in double from the betas and cast once.
// Done once per model or per respaced sampler, so it only has to be cheap next to one network call.
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <benchmark/benchmark.h>

namespace {

template <diffuse::Betas (*MakeBetas)(int)>
void BM_NoiseSchedule(benchmark::State& state) {
    const int timesteps = static_cast<int>(state.range(0));
    const diffuse::Betas betas = MakeBetas(timesteps);  // [T], made once: the tables are what is timed
    for (auto _ : state) {
        diffuse::NoiseSchedule<float> schedule(betas);
        benchmark::DoNotOptimize(schedule.snr().data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * timesteps);  // timesteps per second
}

diffuse::Betas linear(int t) { return diffuse::linear_betas(t); }
diffuse::Betas cosine(int t) { return diffuse::cosine_betas(t); }

}  // namespace

BENCHMARK_TEMPLATE(BM_NoiseSchedule, linear)->ArgName("T")->Arg(1000)->Arg(4000);
BENCHMARK_TEMPLATE(BM_NoiseSchedule, cosine)->ArgName("T")->Arg(1000)->Arg(4000);
