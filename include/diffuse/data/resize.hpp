#pragma once
// Image resizing for super-resolution (SR3, Saharia et al. 2021; LDM's super-resolution model): the
// low-resolution image is the high-resolution one averaged over f x f blocks, and the model is told it
// upsampled back to the full size by bicubic interpolation, concatenated to x_t.
//
//   area:     y[i, j] = (1 / f^2) sum_{a, b < f} x[f i + a, f j + b]
//   bicubic:  y[i, j] = sum_{p, q} k(u - p) k(v - q) x[clamp(p), clamp(q)],
//             u = (i + 1/2) / s - 1/2,  v = (j + 1/2) / s - 1/2  (pixel centres, s = out / in),
//             k(d) = (A + 2)|d|^3 - (A + 3)|d|^2 + 1            for |d| <= 1
//                    A|d|^3 - 5A|d|^2 + 8A|d| - 4A              for 1 < |d| < 2, else 0,
// Keys' cubic convolution kernel with A = -0.75 and edge pixels repeated: PyTorch's
// interpolate(mode="bicubic", align_corners=False) and OpenCV's INTER_CUBIC.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

/// Keys' cubic convolution kernel with A = -0.75 (see the top of this file).
inline double bicubic_kernel(double d) {
    constexpr double A = -0.75;
    d = std::abs(d);
    if (d <= 1.0) return ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    if (d < 2.0) return ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    return 0.0;
}

/// The mean of each factor x factor block: [N, C, H, W] -> [N, C, H / factor, W / factor].
template <class T>
Tensor4<T> area_downsample(const Tensor4<T>& x, Index factor) {
    constexpr const char* where = "diffuse::area_downsample";
    const Index h = x.dimension(2), w = x.dimension(3);
    if (factor < 1) detail::throw_invalid(where, "factor", factor, "at least 1");
    if (h % factor != 0 || w % factor != 0) {
        detail::throw_invalid(where, "factor", factor,
                              "a divisor of the image's height and width, " + std::to_string(h) + " x " + std::to_string(w));
    }
    const Index planes = x.dimension(0) * x.dimension(1), ho = h / factor, wo = w / factor;
    const T scale = T(1) / static_cast<T>(factor * factor);
    Tensor4<T> y(x.dimension(0), x.dimension(1), ho, wo);
    for (Index p = 0; p < planes; ++p) {
        const T* src = x.data() + p * h * w;
        T* dst = y.data() + p * ho * wo;
        for (Index i = 0; i < ho; ++i) {
            for (Index j = 0; j < wo; ++j) {
                T sum = 0;
                for (Index a = 0; a < factor; ++a) {
                    for (Index b = 0; b < factor; ++b) sum += src[(factor * i + a) * w + factor * j + b];
                }
                dst[i * wo + j] = sum * scale;
            }
        }
    }
    return y;
}

namespace detail {

/// The four taps of output position o of a 1-D bicubic resize from `in` to `out` samples: their
/// input indices (edges repeated) and weights, which sum to 1.
struct CubicTaps {
    std::array<Index, 4> index;
    std::array<double, 4> weight;
};

inline std::vector<CubicTaps> cubic_taps(Index in, Index out) {
    std::vector<CubicTaps> taps(static_cast<std::size_t>(out));
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (Index o = 0; o < out; ++o) {
        const double u = (static_cast<double>(o) + 0.5) * scale - 0.5;
        const double floor_u = std::floor(u);
        const Index p0 = static_cast<Index>(floor_u) - 1;
        CubicTaps& t = taps[static_cast<std::size_t>(o)];
        for (Index k = 0; k < 4; ++k) {
            t.index[static_cast<std::size_t>(k)] = std::clamp<Index>(p0 + k, 0, in - 1);
            t.weight[static_cast<std::size_t>(k)] = bicubic_kernel(u - static_cast<double>(p0 + k));
        }
    }
    return taps;
}

}  // namespace detail

/// Bicubic resizing to height x width (see the top of this file): [N, C, H, W] -> [N, C, height, width].
/// Not clamped: like any cubic interpolation it overshoots a little at sharp edges.
template <class T>
Tensor4<T> bicubic_resize(const Tensor4<T>& x, Index height, Index width) {
    constexpr const char* where = "diffuse::bicubic_resize";
    if (height < 1) detail::throw_invalid(where, "height", height, "at least 1");
    if (width < 1) detail::throw_invalid(where, "width", width, "at least 1");
    const Index h = x.dimension(2), w = x.dimension(3), planes = x.dimension(0) * x.dimension(1);
    if (h < 1 || w < 1) detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()), "an image of at least 1 x 1");
    const std::vector<detail::CubicTaps> rows = detail::cubic_taps(h, height), cols = detail::cubic_taps(w, width);
    Tensor4<T> y(x.dimension(0), x.dimension(1), height, width);
    std::vector<double> across(static_cast<std::size_t>(h * width));  // [h, width]: the rows resized first
    for (Index p = 0; p < planes; ++p) {
        const T* src = x.data() + p * h * w;
        for (Index i = 0; i < h; ++i) {
            for (Index j = 0; j < width; ++j) {
                const detail::CubicTaps& t = cols[static_cast<std::size_t>(j)];
                double v = 0.0;
                for (std::size_t k = 0; k < 4; ++k) v += t.weight[k] * static_cast<double>(src[i * w + t.index[k]]);
                across[static_cast<std::size_t>(i * width + j)] = v;
            }
        }
        T* dst = y.data() + p * height * width;
        for (Index i = 0; i < height; ++i) {
            const detail::CubicTaps& t = rows[static_cast<std::size_t>(i)];
            for (Index j = 0; j < width; ++j) {
                double v = 0.0;
                for (std::size_t k = 0; k < 4; ++k) v += t.weight[k] * across[static_cast<std::size_t>(t.index[k] * width + j)];
                dst[i * width + j] = static_cast<T>(v);
            }
        }
    }
    return y;
}

/// SR3's conditioning image: x [N, C, H, W] averaged over blocks down to side x side, then bicubic-
/// upsampled back to H x W, what a super-resolution model is told of the image it restores.
template <class T>
Tensor4<T> upsampled_low_resolution(const Tensor4<T>& x, Index side) {
    const Index h = x.dimension(2), w = x.dimension(3);
    if (side < 1 || h != w || h % side != 0) {
        detail::throw_invalid("diffuse::upsampled_low_resolution", "side", side,
                              "a side that the square image's " + std::to_string(h) + " x " + std::to_string(w) +
                                  " is a whole multiple of (" + std::to_string(h) + " / side area-averaged pixels per low-resolution pixel)");
    }
    return bicubic_resize(area_downsample(x, h / side), h, w);
}

}  // namespace diffuse
