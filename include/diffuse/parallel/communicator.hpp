#pragma once
// Data-parallel training across processes: what optim::Trainer needs from a group of ranks, and
// the pieces of a step that every rank computes alike. Eigen-only; an MPI implementation is in
// diffuse/parallel/mpi.hpp (target diffuse::mpi).
//
// Each of R ranks holds the same model and steps on its share of the global batch B: rank r takes
// samples [r B/R, (r + 1) B/R). The step's random draws (t, the noise, label dropout) are drawn for
// the whole global batch on every rank from the same generator, and each rank keeps its share, so
// every sample sees what it would in one process with batch B. The loss is a mean over the global
// batch, so each rank's gradient is its share's mean gradient times 1/R, and
//     g = sum over r of g_r                                        (Communicator::sum)
// is then the global batch's gradient; clipping, Adam and the EMA run on it alike on every rank,
// so the weights stay identical. The sum adds the ranks' values in rank order 0, 1, ..., R-1
// whatever the transport, so a run is reproducible bit for bit for a given rank count; against
// one process with the global batch it differs by the order of float additions only.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace diffuse {

/// A group of ranks that can sum buffers.
class Communicator {
  public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    /// data[0, n) on every rank becomes the sum over ranks, added in rank order, identical on every
    /// rank. Every rank calls it with the same n.
    virtual void sum(float* data, Index n) = 0;
    virtual void sum(double* data, Index n) = 0;
};

/// The samples [first, first + count) of a global batch that rank `rank` of `size` trains on.
struct Share {
    Index first = 0;
    Index count = 0;
};

/// Rank `rank`'s share of a global batch of `global` samples; the global batch must split evenly.
inline Share share_of(Index global, int rank, int size) {
    constexpr const char* where = "diffuse::share_of";
    if (size < 1) detail::throw_invalid(where, "size", size, "at least 1 rank");
    if (rank < 0 || rank >= size) detail::throw_invalid(where, "rank", rank, "in [0, " + std::to_string(size) + ")");
    if (global < size || global % size != 0) {
        detail::throw_invalid(where, "the global batch", global,
                              "a multiple of the rank count " + std::to_string(size) + " (each rank an equal share)");
    }
    const Index count = global / size;
    return {count * rank, count};
}

/// Every rank's `local` values, concatenated in rank order on every rank. Each rank passes the same
/// count; built on sum() (x + 0 is exact), so it is exact too.
inline std::vector<double> all_gather(Communicator& communicator, const std::vector<double>& local) {
    const std::size_t n = local.size();
    std::vector<double> all(n * static_cast<std::size_t>(communicator.size()), 0.0);
    std::copy(local.begin(), local.end(), all.begin() + static_cast<std::ptrdiff_t>(n * static_cast<std::size_t>(communicator.rank())));
    communicator.sum(all.data(), static_cast<Index>(all.size()));
    return all;
}

/// Sums every parameter gradient of `module` over the ranks, as one buffer: packed in
/// for_each_parameter's order into `buffer` (kept between calls), summed, unpacked. T is the
/// module's scalar type (float, or double in gradient checks).
template <class T, class Module>
void sum_gradients(Communicator& communicator, Module& module, std::vector<T>& buffer) {
    Index size = 0;
    module.for_each_parameter("", [&size](auto p) { size += p.size; });
    buffer.resize(static_cast<std::size_t>(size));
    Index at = 0;
    module.for_each_parameter("", [&](auto p) {
        static_assert(std::is_same_v<std::remove_pointer_t<decltype(p.grad)>, T>, "the buffer has the module's scalar type");
        std::copy(p.grad, p.grad + p.size, buffer.data() + at);
        at += p.size;
    });
    communicator.sum(buffer.data(), size);
    at = 0;
    module.for_each_parameter("", [&](auto p) {
        std::copy(buffer.data() + at, buffer.data() + at + p.size, p.grad);
        at += p.size;
    });
}

}  // namespace diffuse
