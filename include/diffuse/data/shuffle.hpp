#pragma once
// A resumable order of the training data: epoch e visits the n examples in a permutation drawn from
// a stream of its own, derive_seed(seed, e), so the order of any epoch is a function of (seed, e)
// alone, and the whole stream of indices is where a cursor (epoch, position) says. A checkpoint
// that stores the cursor resumes the data order exactly where the interrupted run was.

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

/// The order of epoch `epoch` over n examples: a permutation of 0 .. n-1, Fisher-Yates on uniform
/// draws of stream derive_seed(seed, epoch).
inline std::vector<Index> epoch_permutation(std::uint64_t seed, std::uint64_t epoch, Index n) {
    if (n < 1) detail::throw_invalid("diffuse::epoch_permutation", "n", n, "at least one example");
    Generator generator(derive_seed(seed, epoch));
    std::vector<double> u(static_cast<std::size_t>(n));
    generator.uniform(u.data(), n);
    std::vector<Index> order(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    for (Index i = n - 1; i > 0; --i) {
        // j uniform in [0, i]; min() guards the u * (i + 1) == i + 1 that rounding could give
        const Index j = std::min(i, static_cast<Index>(u[static_cast<std::size_t>(i)] * static_cast<double>(i + 1)));
        std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    return order;
}

/// Where the data stream is: the epoch, and the position in its order of the next example.
struct DataCursor {
    std::uint64_t epoch = 0;
    Index position = 0;
};

/// The stream of example indices, epoch after epoch, each epoch in its epoch_permutation.
class ShuffledIndices {
  public:
    /// n examples, the order drawn from `seed`, starting at `cursor` (a checkpoint's, to resume).
    ShuffledIndices(Index n, std::uint64_t seed, DataCursor cursor = {})
        : n_(n), seed_(seed), cursor_(cursor), order_(epoch_permutation(seed, cursor.epoch, n)) {
        if (cursor.position < 0 || cursor.position > n) {
            detail::throw_invalid("diffuse::ShuffledIndices", "cursor.position", cursor.position,
                                  "a position in [0, " + std::to_string(n) + "] of the epoch's order");
        }
    }

    /// The cursor of the next index: store it with a checkpoint.
    const DataCursor& cursor() const { return cursor_; }

    /// The next `batch` indices, crossing into the next epoch (and its order) where one ends.
    std::vector<Index> next(Index batch) {
        if (batch < 0) detail::throw_invalid("diffuse::ShuffledIndices::next", "batch", batch, ">= 0");
        std::vector<Index> out(static_cast<std::size_t>(batch));
        for (Index b = 0; b < batch; ++b) {
            if (cursor_.position == n_) {
                ++cursor_.epoch;
                cursor_.position = 0;
                order_ = epoch_permutation(seed_, cursor_.epoch, n_);
            }
            out[static_cast<std::size_t>(b)] = order_[static_cast<std::size_t>(cursor_.position++)];
        }
        return out;
    }

  private:
    Index n_;
    std::uint64_t seed_;
    DataCursor cursor_;
    std::vector<Index> order_;  // [n] the current epoch's order
};

}  // namespace diffuse
