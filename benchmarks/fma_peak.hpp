#pragma once
// The machine's floating-point peak, measured in the benchmark's own process: independent fused
// multiply-adds on registers with the GEMM's vector type (2 flops per lane), on one core or on two
// at once. A benchmark divides its own rate by it (`of_peak`), so the fraction is of what this
// processor did at that moment; on a shared virtual machine the two-core figure moves by 10-15% from
// one minute to the next.
#include <diffuse/detail/gemm.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

namespace diffuse_bench {

using Gemm = diffuse::detail::Gemm<float>;

constexpr int fma_chains = 12;  // enough independent chains to cover the FMA latency on 2 ports
constexpr diffuse::Index fma_iterations = 1 << 16;

// One round of independent fused multiply-adds; returns its flops. Not inlined: inlined between two
// clock reads, the compiler may move register-only work past them.
__attribute__((noinline)) inline double fma_round() {
    Gemm::Vec acc[fma_chains];
    const float one = 1.0f, tiny = 1e-7f;
    for (auto& a : acc) a = Gemm::broadcast(&one);
    const Gemm::Vec x = Gemm::broadcast(&tiny), y = Gemm::broadcast(&one);
    // (without -ffast-math the compiler may not reassociate the chains, so none is folded)
    for (diffuse::Index i = 0; i < fma_iterations; ++i) {
        for (auto& a : acc) a = Gemm::fmadd(x, y, a);
    }
    for (auto& a : acc) benchmark::DoNotOptimize(a);
    return 2.0 * fma_chains * Gemm::lanes * fma_iterations;
}

// GFLOP/s of `rounds` rounds of fma_round on each of `threads` threads started together, over the
// wall time until the last finishes.
inline double fma_rate(int threads, int rounds) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> others;
    for (int t = 1; t < threads; ++t) {
        others.emplace_back([rounds] {
            for (int r = 0; r < rounds; ++r) fma_round();
        });
    }
    double flops = 0;
    for (int r = 0; r < rounds; ++r) flops += fma_round();
    for (auto& t : others) t.join();
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    return threads * flops * 1e-9 / seconds.count();
}

// The median of `samples` measurements of fma_rate(threads, rounds).
inline double peak_gflops(int threads, int samples = 9, int rounds = 200) {
    std::vector<double> rates;
    for (int s = 0; s < samples; ++s) rates.push_back(fma_rate(threads, rounds));
    std::nth_element(rates.begin(), rates.begin() + samples / 2, rates.end());
    return rates[static_cast<std::size_t>(samples / 2)];
}

}  // namespace diffuse_bench
