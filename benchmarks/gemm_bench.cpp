// The matrix product under the convolutions (detail/gemm.hpp) against the machine's own peak.
//
// BM_fma_peak: independent fused multiply-adds on registers with the GEMM's vector type, 1 and 2
// threads at once: the most floating-point work this machine does per second (2 flops per lane).
// BM_gemm: C[M, N] = A[M, K] . B[K, N] at the U-Net's convolution shapes, one thread, A packed once
// (as Conv2d packs its weights once per call), B read through row pointers as Conv2d reads X_col.
// The ratio of the two GFLOPS is the fraction of peak the GEMM reaches.
#include <diffuse/core/random.hpp>
#include <diffuse/detail/gemm.hpp>

#include <benchmark/benchmark.h>

#include <vector>

namespace {

using diffuse::Index;
using Gemm = diffuse::detail::Gemm<float>;

void BM_fma_peak(benchmark::State& state) {
    constexpr int chains = 12;  // enough independent chains to cover the FMA latency on 2 ports
    constexpr Index iterations = 1 << 16;
    Gemm::Vec acc[chains];
    const float one = 1.0f, tiny = 1e-7f;
    for (auto& a : acc) a = Gemm::broadcast(&one);
    const Gemm::Vec x = Gemm::broadcast(&tiny), y = Gemm::broadcast(&one);
    for (auto _ : state) {
        // (without -ffast-math the compiler may not reassociate the chains, so none is folded)
        for (Index i = 0; i < iterations; ++i) {
            for (auto& a : acc) a = Gemm::fmadd(x, y, a);
        }
        for (auto& a : acc) benchmark::DoNotOptimize(a);
    }
    const double flops = 2.0 * chains * Gemm::lanes * iterations;
    // Google Benchmark sums the counter over the threads and divides by the per-thread time share, which
    // counts the threads twice; kAvgThreads undoes that, so the figure is the machine's total.
    state.counters["GFLOPS"] = benchmark::Counter(
        flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_fma_peak)->Threads(1)->Threads(2)->UseRealTime();

// args: M, K, N
void BM_gemm(benchmark::State& state) {
    const Index m = state.range(0), k = state.range(1), n = state.range(2);
    diffuse::Generator gen(1);
    std::vector<float> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n)),
        c(static_cast<std::size_t>(m * n));
    gen.normal(a.data(), m * k);
    gen.normal(b.data(), k * n);
    std::vector<float> packed(static_cast<std::size_t>(Gemm::packed_a_size(m, k)));
    Gemm::pack_a(a.data(), k, 1, m, k, packed.data());
    std::vector<const float*> rows(static_cast<std::size_t>(k));
    for (Index r = 0; r < k; ++r) rows[static_cast<std::size_t>(r)] = b.data() + r * n;
    for (auto _ : state) {
        Gemm::rows_product(m, k, packed.data(), rows.data(), {}, 0, n, c.data(), n, false);
        benchmark::DoNotOptimize(c.data());
    }
    state.counters["GFLOPS"] = benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
// Y = W . X_col of the reference U-Net's 3x3 convolutions per sample: 28x28 with 32 channels,
// 14x14 with 64, 7x7 with 64, and a decoder conv over concatenated channels (96 -> 32 at 28x28)
BENCHMARK(BM_gemm)->Args({32, 288, 784})->Args({64, 576, 196})->Args({64, 576, 49})->Args({32, 864, 784})
    ->UseRealTime();

}  // namespace
