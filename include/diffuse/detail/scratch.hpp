#pragma once
// Per-thread scratch buffers that grow and are kept, so hot loops allocate nothing after warm-up.
// Not for direct use.

#include <cstddef>
#include <vector>

namespace diffuse::detail {

/// A buffer of at least n elements owned by the calling thread; `slot` tells apart buffers that are
/// needed at the same time. Contents are unspecified.
template <class T, int Slot>
T* scratch(std::size_t n) {
    thread_local std::vector<T> buffer;
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

}  // namespace diffuse::detail
