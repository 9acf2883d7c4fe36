#pragma once
// The benchmarks' allocator setting: freed activations stay with the process (core/memory.hpp), as
// with the jemalloc PyTorch is compared with. Set while the program starts, before any benchmark
// allocates, and written into the run's context ("freed_memory_kept"), because a run without it pays
// a page fault for every 4 KiB of every activation (half the U-Net's batch-16 forward on an AMD EPYC,
// Zen 5 with AVX-512).
#include <diffuse/core/memory.hpp>

#include <benchmark/benchmark.h>

namespace diffuse_bench {

inline const bool memory_kept = [] {
    const bool kept = diffuse::keep_freed_memory();
    benchmark::AddCustomContext("freed_memory_kept", kept ? "yes" : "no");
    return kept;
}();

}  // namespace diffuse_bench
