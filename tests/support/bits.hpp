#pragma once
// Bit-for-bit comparison of tensors, for the tests that promise the same bits (reproducibility,
// refactors that must not move a value): -0 and 0 differ, a NaN equals the same NaN.

#include <diffuse/core/tensor.hpp>

#include <cstddef>
#include <cstring>

namespace diffuse::testing_support {

template <class T, int Rank>
bool same_bits(const diffuse::Tensor<T, Rank>& a, const diffuse::Tensor<T, Rank>& b) {
    return a.dimensions() == b.dimensions() &&
           std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.size())) == 0;
}

}  // namespace diffuse::testing_support
