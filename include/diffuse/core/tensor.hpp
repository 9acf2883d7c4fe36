#pragma once
// Tensor aliases. Data are row-major like PyTorch, so an image batch [N, C, H, W] has W contiguous
// and the first dimension is always the batch.

#include "diffuse/core/threading.hpp"

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

using Index = Eigen::Index;

/// A row-major tensor of rank Rank; dimension 0 is the batch.
template <class T, int Rank>
using Tensor = Eigen::Tensor<T, Rank, Eigen::RowMajor>;

template <class T> using Tensor1 = Tensor<T, 1>;  // [D]
template <class T> using Tensor2 = Tensor<T, 2>;  // [N, D]
template <class T> using Tensor3 = Tensor<T, 3>;  // [N, L, D]: a sequence of L tokens per sample
template <class T> using Tensor4 = Tensor<T, 4>;  // [N, C, H, W]

/// A 1-D array with Eigen's array arithmetic: a schedule's tables indexed by timestep (betas,
/// alphas_cumprod, ..., [T]), or a parameter's values flattened and Adam's moments of them ([P]).
template <class T>
using Table = Eigen::Array<T, Eigen::Dynamic, 1>;

/// One integer timestep per sample of a batch, [N].
using Timesteps = std::vector<int>;

/// a += b, elementwise, for tensors of one shape (a residual connection, a summed gradient); large
/// tensors on all threads.
template <class T, int Rank>
void add_inplace(Tensor<T, Rank>& a, const Tensor<T, Rank>& b) {
    assert(a.dimensions() == b.dimensions());
    parallel_for(a.size(), Index{1} << 15, [&](Index first, Index last) {
        Eigen::Map<Table<T>>(a.data() + first, last - first) += Eigen::Map<const Table<T>>(b.data() + first, last - first);
    });
}

/// Samples [first, first + count) of a batch x [N, ...], as a batch of their own [count, ...].
template <class T, int Rank>
Tensor<T, Rank> batch_slice(const Tensor<T, Rank>& x, Index first, Index count) {
    assert(first >= 0 && count >= 0 && first + count <= x.dimension(0));
    auto dims = x.dimensions();
    const Index per_sample = x.dimension(0) > 0 ? x.size() / x.dimension(0) : 0;
    dims[0] = count;
    Tensor<T, Rank> out(dims);
    std::copy_n(x.data() + first * per_sample, count * per_sample, out.data());
    return out;
}

/// Writes `part` [count, ...] into samples [first, first + count) of `batch` [N, ...].
template <class T, int Rank>
void batch_assign(Tensor<T, Rank>& batch, Index first, const Tensor<T, Rank>& part) {
    assert(part.dimension(0) > 0 && first + part.dimension(0) <= batch.dimension(0));
    assert(batch.size() / batch.dimension(0) == part.size() / part.dimension(0));
    std::copy_n(part.data(), part.size(), batch.data() + first * (part.size() / part.dimension(0)));
}

/// "[2, 1, 28, 28]", for error messages.
template <class Dims>
std::string shape_string(const Dims& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < static_cast<std::size_t>(dims.size()); ++i) {
        if (i) s += ", ";
        s += std::to_string(dims[i]);
    }
    return s + "]";
}

}  // namespace diffuse
