#pragma once
// The C allocator and large activations. Every layer returns a fresh tensor, so one training step
// allocates and frees hundreds of megabytes. glibc's malloc returns large freed blocks to the
// operating system (munmap, or trimming the heap top), and the next step then pays a page fault and
// a page clear for every 4 KiB it touches again: about a tenth of a step at batch 64. PyTorch users
// avoid the same cost by loading jemalloc or tcmalloc.

// <cstdlib> first: it defines __GLIBC__ (through <features.h>). Without it, a program that includes
// this header before any other would compile the setting out and silently keep the page faults.
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace diffuse {

/// Asks the C allocator to keep freed memory for reuse instead of handing it back to the operating
/// system (glibc: blocks up to 1 GiB come from the heap, and the heap is never trimmed). This is a
/// process-wide setting, so it is the program's choice, never made by the library itself: call it
/// once at the start of main, as the example trainer and the benchmarks do. Returns whether the
/// allocator took the setting (false on a C library other than glibc, where it does nothing).
inline bool keep_freed_memory() {
#if defined(__GLIBC__)
    const bool mmap = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;
    const bool trim = mallopt(M_TRIM_THRESHOLD, -1) == 1;  // -1: never trim
    return mmap && trim;
#else
    return false;
#endif
}

}  // namespace diffuse
