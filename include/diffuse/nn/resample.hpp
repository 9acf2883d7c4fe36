#pragma once
// Nearest-neighbour 2x upsampling and channel concatenation, with their adjoints.

#include "diffuse/core/channels.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <algorithm>
#include <string>
#include <utility>

namespace diffuse::nn {

/// y[n, c, 2i + a, 2j + b] = x[n, c, i, j]: [N, C, H, W] -> [N, C, 2H, 2W].
template <class T>
Tensor4<T> upsample_nearest2x(const Tensor4<T>& x) {
    const Index nc = x.dimension(0) * x.dimension(1), h = x.dimension(2), w = x.dimension(3);
    Tensor4<T> y(x.dimension(0), x.dimension(1), 2 * h, 2 * w);
    parallel_for(nc, 16, [&](Index first, Index last) {
        for (Index p = first; p < last; ++p) {
            for (Index i = 0; i < h; ++i) {
                const T* src = x.data() + (p * h + i) * w;
                T* row = y.data() + (p * 2 * h + 2 * i) * 2 * w;
                for (Index j = 0; j < w; ++j) row[2 * j] = row[2 * j + 1] = src[j];
                std::copy_n(row, 2 * w, row + 2 * w);
            }
        }
    });
    return y;
}

/// The adjoint: dx[n, c, i, j] = sum of dy over the 2x2 block it was copied to.
template <class T>
Tensor4<T> upsample_nearest2x_backward(const Tensor4<T>& dy) {
    const Index nc = dy.dimension(0) * dy.dimension(1), h = dy.dimension(2) / 2, w = dy.dimension(3) / 2;
    Tensor4<T> dx(dy.dimension(0), dy.dimension(1), h, w);
    parallel_for(nc, 16, [&](Index first, Index last) {
        for (Index p = first; p < last; ++p) {
            for (Index i = 0; i < h; ++i) {
                const T* r0 = dy.data() + (p * 2 * h + 2 * i) * 2 * w;
                const T* r1 = r0 + 2 * w;
                T* dst = dx.data() + (p * h + i) * w;
                for (Index j = 0; j < w; ++j) dst[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
            }
        }
    });
    return dx;
}

/// [N, Ca, H, W] and [N, Cb, H, W] -> [N, Ca + Cb, H, W], a's channels first.
template <class T>
Tensor4<T> concat_channels(const Tensor4<T>& a, const Tensor4<T>& b) {
    if (a.dimension(0) != b.dimension(0) || a.dimension(2) != b.dimension(2) || a.dimension(3) != b.dimension(3)) {
        detail::throw_invalid("diffuse::nn::concat_channels", "b.shape", shape_string(b.dimensions()),
                              "the N, H and W of a, " + shape_string(a.dimensions()));
    }
    const Index n = a.dimension(0), sa = a.size() / n, sb = b.size() / n;
    Tensor4<T> y(n, a.dimension(1) + b.dimension(1), a.dimension(2), a.dimension(3));
    parallel_for(n, 1, [&](Index first, Index last) {
        for (Index i = first; i < last; ++i) {
            std::copy_n(a.data() + i * sa, sa, y.data() + i * (sa + sb));
            std::copy_n(b.data() + i * sb, sb, y.data() + i * (sa + sb) + sa);
        }
    });
    return y;
}

/// The adjoint: splits dy [N, Ca + Cb, H, W] into its first Ca channels and the rest.
template <class T>
std::pair<Tensor4<T>, Tensor4<T>> split_channels(const Tensor4<T>& dy, Index channels_a) {
    if (channels_a < 0 || channels_a > dy.dimension(1)) {
        detail::throw_invalid("diffuse::nn::split_channels", "channels_a", channels_a,
                              "a channel count in [0, " + std::to_string(dy.dimension(1)) + "], the channels of dy " +
                                  shape_string(dy.dimensions()));
    }
    return {channel_slice(dy, 0, channels_a), channel_slice(dy, channels_a, dy.dimension(1) - channels_a)};
}

}  // namespace diffuse::nn
