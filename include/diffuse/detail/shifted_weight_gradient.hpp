#pragma once
// The weight gradient of a 3x3 stride-1 convolution with zero padding 1 (conv2d.hpp), as dot
// products along the pixels. Not for direct use.
//
//     dW[o, c, i, j] = sum_n sum_q dY[n, o, q] X_j[n, c, q + i W + j]
//
// X_j is channel c's plane as the forward pass reads it, a zero row above and below (conv2d.hpp's
// shifted rows), with the one column that tap column j would read across an image row's edge
// zeroed: j = 0 reads column W - 1 of the row above where q is in column 0, j = 2 column 0 of the
// row below where q is in column W - 1. The GEMM form of the same sum, dW^T = X_col . dY^T, runs along
// the rows of both operands, so both would first be transposed into panels; here both are read as
// they lie. A tile of R output channels by the 9 taps of one input channel keeps R x 9 vectors of
// partial sums in registers over a group of samples, then folds their lanes into the R x 9 sums.
//
// The order of every sum depends only on the shapes and the group of samples, never on the thread
// count.

#include "diffuse/core/tensor.hpp"
#include "diffuse/detail/gemm.hpp"
#include "diffuse/detail/scratch.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace diffuse::detail {

template <class T>
struct ShiftedWeightGradient {
    using Gemm = detail::Gemm<T>;
    using Vec = typename Gemm::Vec;
    static constexpr Index lanes = Gemm::lanes;
    static constexpr Index rows = 3;  // R: output channels per tile
    // Kernel columns j per pass over the pixels: all three with AVX-512's 32 registers (27
    // accumulators, 3 of dY, 1 of X), one with 16 (9 + 3 + 1).
#if defined(__AVX512F__)
    static constexpr Index columns_per_pass = 3;
#else
    static constexpr Index columns_per_pass = 1;
#endif

    /// dwt[(c * 9 + i * 3 + j) * ldo + o] += dW[o, c, i, j] over `samples` samples: x [S, Cin, H, W]
    /// (sample s at x + s * x_stride), dy [S, Cout, H, W] contiguous.
    static void accumulate(const T* x, Index x_stride, const T* dy, Index samples, Index cin, Index cout, Index h,
                           Index w, T* dwt, Index ldo) {
        // The samples' planes are stacked, one zero row between two, so that the sum over samples
        // and pixels is one sum along a stack of S (H + 1) - 1 rows: dY is zero on the rows between
        // (and from the stack's end to the last vector's), where X's taps would read across samples.
        const Index p = h * w, stride = (h + 1) * w;  // a sample's rows and the row between
        const Index vectors = ((samples * (h + 1) - 1) * w + lanes - 1) / lanes, pitch = vectors * lanes;
        T* dys = scratch<T, Scratch::wgrad_dy>(static_cast<std::size_t>(cout * pitch));  // [Cout][pitch]
        for (Index o = 0; o < cout; ++o) stack(dy + o * p, cout * p, samples, p, w, dys + o * pitch, pitch);
        // X_j for one input channel, the stack after a zero row and one more zero (as in the forward
        // pass's shifted planes): tap (i, j) reads X_j at q + i W + j, up to pitch - 1 + 2W + 2.
        const Index len = pitch + 2 * w + 2, top = w + 1;
        T* planes = scratch<T, Scratch::wgrad_planes>(static_cast<std::size_t>(3 * len));  // [3][len]
        for (Index c = 0; c < cin; ++c) {
            T* x1 = planes + len;  // X_1, no column masked
            std::fill_n(x1, top, T(0));
            stack(x + c * p, x_stride, samples, p, w, x1 + top, len - top);
            for (Index j = 0; j < 3; j += 2) {
                T* b = planes + j * len;
                std::copy_n(x1, len, b);
                const Index column = j == 0 ? w - 1 : 0;
                for (Index s = 0; s < samples; ++s) {
                    for (Index y = 0; y < h; ++y) b[top + s * stride + y * w + column] = T(0);
                }
            }
            T* out = dwt + c * 9 * ldo;
            Index o = 0;
            for (; o + rows <= cout; o += rows) tile<rows>(dys + o * pitch, pitch, planes, len, vectors, w, out + o, ldo);
            if (cout - o == 2) tile<2>(dys + o * pitch, pitch, planes, len, vectors, w, out + o, ldo);
            if (cout - o == 1) tile<1>(dys + o * pitch, pitch, planes, len, vectors, w, out + o, ldo);
        }
    }

  private:
    // dst[0 .. size) = the S planes src + s * src_stride ([H, W], p = H W) one above the other with a
    // zero row between two, then zeros.
    static void stack(const T* src, Index src_stride, Index samples, Index p, Index w, T* dst, Index size) {
        Index at = 0;
        for (Index s = 0; s < samples; ++s) {
            if (s > 0) {
                std::fill_n(dst + at, w, T(0));
                at += w;
            }
            std::copy_n(src + s * src_stride, p, dst + at);
            at += p;
        }
        std::fill(dst + at, dst + size, T(0));
    }

    // out[(i * 3 + j) * ldo + r] += sum_q dy[r][q] * planes[j][q + i W + j], r < R, q < vectors * lanes.
    template <int R>
    static void tile(const T* dy, Index pitch, const T* planes, Index len, Index vectors, Index w, T* out, Index ldo) {
        constexpr int J = static_cast<int>(columns_per_pass);
        for (int j0 = 0; j0 < 3; j0 += J) {
            Vec acc[R * 3 * J] = {};  // [r][jj][i]
            for (Index q = 0; q < vectors * lanes; q += lanes) {
                Vec dv[R];
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) dv[r] = Gemm::load(dy + r * pitch + q);
#pragma GCC unroll 4
                for (int jj = 0; jj < J; ++jj) {
                    const T* xj = planes + (j0 + jj) * len + (j0 + jj) + q;
#pragma GCC unroll 4
                    for (int i = 0; i < 3; ++i) {
                        Vec xv = Gemm::load(xj + i * w);
                        Gemm::in_register(xv);
#pragma GCC unroll 4
                        for (int r = 0; r < R; ++r) acc[(r * J + jj) * 3 + i] = Gemm::fmadd(dv[r], xv, acc[(r * J + jj) * 3 + i]);
                    }
                }
            }
            T sums[(R * 3 * J + lanes - 1) / lanes * lanes];
            lane_sums(acc, sums);
            for (int r = 0; r < R; ++r) {
                for (int jj = 0; jj < J; ++jj) {
                    for (int i = 0; i < 3; ++i) out[(i * 3 + j0 + jj) * ldo + r] += sums[(r * J + jj) * 3 + i];
                }
            }
        }
    }

    using Lane = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef Lane Mask __attribute__((vector_size(sizeof(Vec))));

    // Lane u of the first (second) operand of fold<H>: x holds L / 2H blocks of 2H lanes, each one
    // vector's partial sums, then y as many; the result's block b of H lanes is the sum of the two
    // halves of input block b.
    static constexpr Lane fold_source(Index u, Index h, bool second) {
        const Index b = u / h, e = u % h, blocks = lanes / (2 * h);
        return static_cast<Lane>((b < blocks ? b * 2 * h : lanes + (b - blocks) * 2 * h) + e + (second ? h : 0));
    }
    template <Index H, std::size_t... U>
    static Vec fold(Vec x, Vec y, std::index_sequence<U...>) {
        const Mask first{fold_source(static_cast<Index>(U), H, false)...};
        const Mask second{fold_source(static_cast<Index>(U), H, true)...};
        return __builtin_shuffle(x, y, first) + __builtin_shuffle(x, y, second);
    }
    // v[0 .. n) folded pairwise with blocks halving from H lanes down to one.
    template <Index H>
    static void fold_all(Vec* v, Index n) {
        for (Index t = 0; t < n / 2; ++t) v[t] = fold<H>(v[2 * t], v[2 * t + 1], std::make_index_sequence<lanes>{});
        if constexpr (H > 1) fold_all<H / 2>(v, n / 2);
    }

    // sums[t] = the sum of v[t]'s lanes, t < Count, by a tree of lane shuffles: L vectors give one
    // vector of their L sums in L - 1 folds (a sum per vector would take log2 L).
    template <int Count>
    static void lane_sums(const Vec (&v)[Count], T* sums) {
        for (int g = 0; g < Count; g += static_cast<int>(lanes)) {
            Vec group[lanes];
            for (int t = 0; t < static_cast<int>(lanes); ++t) group[t] = g + t < Count ? v[g + t] : Vec{};
            if constexpr (lanes > 1) fold_all<lanes / 2>(group, lanes);
            Gemm::store(sums + g, group[0]);
        }
    }
};

}  // namespace diffuse::detail
