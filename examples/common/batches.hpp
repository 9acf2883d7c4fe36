#pragma once
// The example trainers' data order: a data set's images and labels, batch after batch, in the
// library's resumable shuffled order (diffuse/data/shuffle.hpp). Not part of the library; needs
// diffuse::io (the IDX reader).

#include <diffuse/core/random.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/data/shuffle.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace examples {

using diffuse::Index;

/// The next `batch` items of a data set (images, or an autoencoder's latents) and their labels, in
/// the resumable shuffled order (diffuse/data/shuffle.hpp) of its first `count` items, stream
/// "data1" of the run's seed.
class Batches {
  public:
    /// data: [N, C, H, W]; labels: [N]. Both must outlive the Batches.
    Batches(const diffuse::Tensor4<float>& data, const std::vector<int>& labels, Index count, std::uint64_t seed,
            diffuse::DataCursor cursor)
        : data_(data), labels_(labels), order_(count, diffuse::derive_seed(seed, 0x6461746131ULL), cursor) {}

    const diffuse::DataCursor& cursor() const { return order_.cursor(); }
    /// The data set's indices of the last batch, in its order.
    const std::vector<Index>& last_indices() const { return indices_; }

    void next(Index batch, diffuse::Tensor4<float>& x, std::vector<int>& y) {
        const Index per = data_.dimension(1) * data_.dimension(2) * data_.dimension(3);
        x = diffuse::Tensor4<float>(batch, data_.dimension(1), data_.dimension(2), data_.dimension(3));  // [B, C, H, W]
        y.resize(static_cast<std::size_t>(batch));
        indices_ = order_.next(batch);
        for (Index b = 0; b < batch; ++b) {
            const Index i = indices_[static_cast<std::size_t>(b)];
            std::copy_n(data_.data() + i * per, per, x.data() + b * per);
            y[static_cast<std::size_t>(b)] = labels_[static_cast<std::size_t>(i)];
        }
    }

  private:
    const diffuse::Tensor4<float>& data_;
    const std::vector<int>& labels_;
    diffuse::ShuffledIndices order_;
    std::vector<Index> indices_;  // [batch], of the last next()
};

}  // namespace examples
