#pragma once
// Per-thread scratch buffers that grow and are kept, so hot loops allocate nothing after warm-up.
// Not for direct use.
//
// Aligned as Eigen aligns its own arrays. This matters for more than speed: Eigen evaluates the
// unaligned head of a vectorised expression with scalar code, and its scalar and vector exp() differ
// in the last bit, so an expression written into a buffer whose alignment depended on the allocator's
// history would give different bits from one process to the next (a resumed training run would then
// drift from an uninterrupted one).

#include <Eigen/Core>

#include <cstddef>
#include <vector>

namespace diffuse::detail {

/// A buffer of at least n elements owned by the calling thread; `slot` tells apart buffers that are
/// needed at the same time. Contents are unspecified.
template <class T, int Slot>
T* scratch(std::size_t n) {
    thread_local std::vector<T, Eigen::aligned_allocator<T>> buffer;
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

}  // namespace diffuse::detail
