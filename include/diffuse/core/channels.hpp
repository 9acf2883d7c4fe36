#pragma once
// Channel ranges of a batch of images: the mean and variance halves of a model output with a
// learned variance, the parts of a channel concatenation.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <algorithm>
#include <string>

namespace diffuse {

/// Channels [begin, begin + count) of x. x: [N, C, H, W] -> [N, count, H, W].
template <class T>
Tensor4<T> channel_slice(const Tensor4<T>& x, Index begin, Index count) {
    constexpr const char* where = "diffuse::channel_slice";
    const Index channels = x.dimension(1);
    if (begin < 0 || begin > channels) {
        detail::throw_invalid(where, "begin", begin,
                              "a channel in [0, " + std::to_string(channels) + "] of x " + shape_string(x.dimensions()));
    }
    if (count < 0 || count > channels - begin) {
        detail::throw_invalid(where, "count", count,
                              "a count in [0, " + std::to_string(channels - begin) + "]: x " +
                                  shape_string(x.dimensions()) + " has " + std::to_string(channels) +
                                  " channels, from begin = " + std::to_string(begin));
    }
    Tensor4<T> out(x.dimension(0), count, x.dimension(2), x.dimension(3));
    const Index plane = x.dimension(2) * x.dimension(3);
    parallel_for(x.dimension(0), 1, [&](Index first, Index last) {
        for (Index n = first; n < last; ++n) {
            std::copy_n(x.data() + (n * x.dimension(1) + begin) * plane, count * plane, out.data() + n * count * plane);
        }
    });
    return out;
}

}  // namespace diffuse
