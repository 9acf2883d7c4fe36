// The matrix product under the convolutions (detail/gemm.hpp) against the machine's own peak.
//
// BM_fma_peak: independent fused multiply-adds on registers with the GEMM's vector type, 1 and 2
// threads at once: the most floating-point work this machine does per second (2 flops per lane).
// BM_gemm: C[M, N] = A[M, K] . B[K, N] at the U-Net's convolution shapes, one thread, A packed once
// (as Conv2d packs its weights once per call), B read through row pointers as Conv2d reads X_col.
// BM_conv_gemm: the same products with B as Conv2d really reads it for a 3x3 stride-1 conv (shifted
// views of zero-padded planes, the edge mask applied).
// BM_conv_weight_gradient: a 3x3 stride-1 conv's weight gradient for one sample, dW^T += X_col . dY^T,
// X_col's rows transposed into panels (rows_times_transposed) or read in place from the input
// stored channels last (channels_last_times_transposed, with the copy into that layout).
// of_peak: the GEMM's GFLOPS over one core's peak (the median of 2000 rounds of BM_fma_peak's work;
// peak_GFLOPS says which figure that was).
#include <diffuse/core/random.hpp>
#include <diffuse/detail/gemm.hpp>

#include <benchmark/benchmark.h>

#include "fma_peak.hpp"

#include <algorithm>
#include <vector>

namespace {

using diffuse::Index;
using Gemm = diffuse::detail::Gemm<float>;

using diffuse_bench::fma_round;

void BM_fma_peak(benchmark::State& state) {
    double flops = 0;
    for (auto _ : state) flops = fma_round();
    // Google Benchmark sums the counter over the threads and divides by the per-thread time share, which
    // counts the threads twice; kAvgThreads undoes that, so the figure is the machine's total.
    state.counters["GFLOPS"] = benchmark::Counter(
        flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_fma_peak)->Threads(1)->Threads(2)->UseRealTime();

// One core's peak for BM_gemm's fraction: the median of 2000 single rounds (about a quarter of a
// second), measured once, just before the first GEMM.
double one_core_peak_gflops() {
    static const double peak = diffuse_bench::peak_gflops(1, 2000, 1);
    return peak;
}

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
    const double gflop = 2.0 * m * n * k * 1e-9;
    state.counters["GFLOPS"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOPS"] = one_core_peak_gflops();
    state.counters["of_peak"] = benchmark::Counter(gflop / one_core_peak_gflops(), benchmark::Counter::kIsIterationInvariantRate);
}
// Y = W . X_col of the reference U-Net's 3x3 convolutions per sample: 28x28 with 32 channels,
// 14x14 with 64, 7x7 with 64, and a decoder conv over concatenated channels (96 -> 32 at 28x28)
BENCHMARK(BM_gemm)->Args({32, 288, 784})->Args({64, 576, 196})->Args({64, 576, 49})->Args({32, 864, 784})
    ->UseRealTime();

// X_col's rows for a 3x3 stride-1 conv over Cin zero-padded planes of length len: row (ch, i, j) is
// plane ch shifted by the tap, (i - 1) rows and (j - 1) columns (the padding absorbing the -1s).
std::vector<const float*> shifted_rows(const float* planes, Index cin, Index side, Index len) {
    std::vector<const float*> rows(static_cast<std::size_t>(9 * cin));
    for (Index r = 0; r < 9 * cin; ++r) rows[static_cast<std::size_t>(r)] = planes + (r / 9) * len + (r / 3 % 3) * side + r % 3;
    return rows;
}

// The same products with B as Conv2d reads it for a 3x3 stride-1 convolution: K = 9 Cin rows, each a
// view of one of Cin zero-padded planes shifted by the tap (i, j), the entries that would wrap to the
// neighbouring image row zeroed by the edge mask. Its distinct data is Cin planes, a ninth of
// BM_gemm's B. With several samples, each plane holds their images one after another (as Conv2d lays
// out a batch of small images: samples_per_product), N = samples H W, and the mask also zeroes the
// taps that would read across two images. args: M (output channels), Cin, side (H = W), samples.
void BM_conv_gemm(benchmark::State& state) {
    const Index m = state.range(0), cin = state.range(1), side = state.range(2), samples = state.range(3);
    const Index k = 9 * cin, n = samples * side * side, len = n + 2 * (side + 1);
    diffuse::Generator gen(1);
    std::vector<float> a(static_cast<std::size_t>(m * k)), planes(static_cast<std::size_t>(cin * len), 0.0f),
        c(static_cast<std::size_t>(m * n));
    gen.normal(a.data(), m * k);
    for (Index ch = 0; ch < cin; ++ch) gen.normal(planes.data() + ch * len + 1 + side, n);  // [Cin, L]
    std::vector<float> packed(static_cast<std::size_t>(Gemm::packed_a_size(m, k)));
    Gemm::pack_a(a.data(), k, 1, m, k, packed.data());
    const std::vector<const float*> rows = shifted_rows(planes.data(), cin, side, len);
    const Gemm::EdgeMask mask{side, samples > 1 ? side : 0};
    for (auto _ : state) {
        Gemm::rows_product(m, k, packed.data(), rows.data(), mask, 0, n, c.data(), n, false);
        benchmark::DoNotOptimize(c.data());
    }
    const double gflop = 2.0 * m * n * k * 1e-9;
    state.counters["GFLOPS"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOPS"] = one_core_peak_gflops();
    state.counters["of_peak"] = benchmark::Counter(gflop / one_core_peak_gflops(), benchmark::Counter::kIsIterationInvariantRate);
}
// The U-Net's shapes, with the samples per product Conv2d takes at batch 64 on one or two threads
// (AVX-512: 3 at 14x14 and 11 at 7x7; AVX2: 1 and 6), and 7x7 alone as at batch 1.
BENCHMARK(BM_conv_gemm)->ArgNames({"cout", "cin", "side", "samples"})->Args({32, 32, 28, 1})
    ->Args({64, 64, 14, 1})->Args({64, 64, 14, Gemm::nr == 32 ? 3 : 1})->Args({64, 64, 7, 1})
    ->Args({64, 64, 7, Gemm::nr == 32 ? 11 : 6})->Args({32, 96, 28, 1})->UseRealTime();

// The same product computed transposed (Gemm::pixel_product): pixels along the register tile's rows,
// output channels along its lanes, X_col^T read in place from zero-padded planes. args: M (output
// channels), Cin, side (H = W); one sample.
void BM_pixel_product(benchmark::State& state) {
    const Index m = state.range(0), cin = state.range(1), side = state.range(2);
    const Index k = 9 * cin, n = side * side;
    diffuse::Generator gen(1);
    std::vector<float> a(static_cast<std::size_t>(m * k)), x(static_cast<std::size_t>(cin * n)),
        c(static_cast<std::size_t>(m * n));
    gen.normal(a.data(), m * k);
    gen.normal(x.data(), cin * n);
    std::vector<float> padded(static_cast<std::size_t>(Gemm::padded_planes_size(cin, side, side)));
    Gemm::pack_padded_planes(x.data(), cin, side, side, padded.data());
    std::vector<float> wt(static_cast<std::size_t>(Gemm::packed_b_size(k, m)));
    Gemm::pack_transposed(m, k, a.data(), wt.data());
    for (auto _ : state) {
        for (Index s = 0; s < Gemm::strips(m); ++s) {
            Gemm::pixel_product(cin, side, side, padded.data(), m, wt.data(), s, 0, side, c.data(), false);
        }
        benchmark::DoNotOptimize(c.data());
    }
    const double gflop = 2.0 * m * n * k * 1e-9;
    state.counters["GFLOPS"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOPS"] = one_core_peak_gflops();
    state.counters["of_peak"] = benchmark::Counter(gflop / one_core_peak_gflops(), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_pixel_product)->ArgNames({"cout", "cin", "side"})->Args({32, 32, 28})->Args({64, 64, 14})
    ->Args({64, 64, 7})->Args({32, 96, 28})->UseRealTime();

// args: Cout, Cin, side (H = W), channels_last (0: rows_times_transposed over the shifted planes with
// the edge mask, as Conv2d reads X_col in its forward pass; 1: channels_last_times_transposed).
void BM_conv_weight_gradient(benchmark::State& state) {
    const Index cout = state.range(0), cin = state.range(1), side = state.range(2);
    const bool channels_last = state.range(3) != 0;
    const Index p = side * side, k = 9 * cin, len = p + 2 * (side + 1);
    diffuse::Generator gen(1);
    std::vector<float> x(static_cast<std::size_t>(cin * p)), dy(static_cast<std::size_t>(cout * p)),
        dwt(static_cast<std::size_t>(k * cout), 0.0f);  // x [Cin, H, W], dY [Cout, P], dW^T [K, Cout]
    gen.normal(x.data(), cin * p);
    gen.normal(dy.data(), cout * p);
    std::vector<float> planes(static_cast<std::size_t>(std::max(cin * len, Gemm::channels_last_size(cin, side, side))), 0.0f);
    const std::vector<const float*> rows = shifted_rows(planes.data(), cin, side, len);
    for (auto _ : state) {
        if (channels_last) {
            Gemm::pack_channels_last(x.data(), cin, side, side, planes.data());
            Gemm::channels_last_times_transposed(cin, side, side, planes.data(), cout, dy.data(), dwt.data(), cout);
        } else {
            for (Index ch = 0; ch < cin; ++ch) std::copy_n(x.data() + ch * p, p, planes.data() + ch * len + side + 1);
            Gemm::rows_times_transposed(k, cout, p, rows.data(), {side}, dy.data(), dwt.data(), cout);
        }
        benchmark::DoNotOptimize(dwt.data());
    }
    const double gflop = 2.0 * k * cout * p * 1e-9;
    state.counters["GFLOPS"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOPS"] = one_core_peak_gflops();
    state.counters["of_peak"] = benchmark::Counter(gflop / one_core_peak_gflops(), benchmark::Counter::kIsIterationInvariantRate);
}
// The U-Net's shapes whose weight gradient is a GEMM (Conv2d::dot_weight_gradient takes 7x7 and conv_out).
BENCHMARK(BM_conv_weight_gradient)->ArgNames({"cout", "cin", "side", "channels_last"})
    ->ArgsProduct({{32}, {32, 64, 96}, {28}, {0, 1}})->Args({64, 64, 14, 0})->Args({64, 64, 14, 1})
    ->Args({64, 128, 14, 0})->Args({64, 128, 14, 1})->UseRealTime();

}  // namespace
