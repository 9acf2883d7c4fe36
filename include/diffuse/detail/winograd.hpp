#pragma once
// A 3x3 stride-1 convolution with zero padding 1 by Winograd's minimal filtering F(2x2, 3x3) (Lavin &
// Gray 2016). Not for direct use: nn::Conv2d calls it for its forward pass and its input gradient.
//
// The output is cut into 2x2 tiles; tile t of channel c reads the 4x4 input patch d around it. With
//     B^T = [1  0 -1  0]    G = [1    0    0 ]    A^T = [1  1  1  0]
//           [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
//           [0 -1  1  0]        [1/2 -1/2  1/2]
//           [0  1  0 -1]        [0    0    1 ]
// and per kernel g[o, c] (3x3), per patch d[c, t] (4x4):
//     U[o, c] = G g G^T,   V[c, t] = B^T d B,   M[o, t] = sum_c U[o, c] (.) V[c, t],   Y[o, t] = A^T M A
// (.) the elementwise product of 4x4 matrices. For each of the 16 points xi of a 4x4 matrix, M's sum is
// one matrix product M_xi [O, tiles] = U_xi [O, C] . V_xi [C, tiles], run on detail/gemm.hpp: 16
// multiplications per tile and (o, c) where the direct convolution takes 36, 2.25x fewer. Exact in
// exact arithmetic (the matrices' entries are 0, +-1 and +-1/2); in floating point the transforms add a
// few roundings per value (tests/nn/conv2d_test.cpp states the measured error against the direct sum).
//
// The tiles of every sample are numbered one after another and cut into blocks of a size set by the
// shapes alone; a block is a task: its patches are transformed, its 16 products run, its outputs
// written. Every output's sum is over c in the GEMM's fixed order, whichever block holds its tile, so
// the bits depend neither on the thread count nor on the batch around a sample.

#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/detail/gemm.hpp"
#include "diffuse/detail/scratch.hpp"

#include <algorithm>

namespace diffuse::detail {

template <class T>
struct Winograd {
    using Gemm = detail::Gemm<T>;
    static constexpr Index points = 16;  // a 4x4 transformed tile

    /// A convolution's sizes: x [N, C, H, W] -> y [N, O, H, W], tiles of 2x2 outputs.
    struct Shape {
        Index n, c, h, w, o;
        Index tile_rows() const { return (h + 1) / 2; }
        Index tile_cols() const { return (w + 1) / 2; }
        Index tiles() const { return tile_rows() * tile_cols(); }  // per sample
    };

    /// Terms added as y is written: y[n, o] += bias[o] + shift[n, o] + residual[n, o]; each may be null.
    struct Epilogue {
        const T* bias = nullptr;      // [O]
        const T* shift = nullptr;     // [N, O]
        const T* residual = nullptr;  // [N, O, H, W]
    };

    static Index packed_size(Index o, Index c) { return points * Gemm::packed_a_size(o, c); }

    /// U_xi = (G g G^T)[xi] for the kernels g = kernel(r, k) (a pointer to 9 values, row-major, or to
    /// be read flipped: g[i, j] = p[8 - 3i - j]), r < rows, k < cols; packed as 16 GEMM A operands
    /// [rows, cols], one after another (packed_size(rows, cols) values).
    template <class Kernel>
    static void transform_weights(Index rows, Index cols, bool flipped, Kernel&& kernel, T* packed) {
        std::vector<T> u(static_cast<std::size_t>(points * rows * cols));  // [16][rows, cols]
        for (Index r = 0; r < rows; ++r) {
            for (Index k = 0; k < cols; ++k) {
                const T* p = kernel(r, k);
                T g[3][3];
                for (Index t = 0; t < 9; ++t) g[t / 3][t % 3] = p[flipped ? 8 - t : t];
                T s[4][3];  // G g
                for (Index j = 0; j < 3; ++j) {
                    s[0][j] = g[0][j];
                    s[1][j] = T(0.5) * (g[0][j] + g[1][j] + g[2][j]);
                    s[2][j] = T(0.5) * (g[0][j] - g[1][j] + g[2][j]);
                    s[3][j] = g[2][j];
                }
                for (Index i = 0; i < 4; ++i) {  // (G g) G^T
                    T* out = u.data() + r * cols + k;
                    const Index stride = rows * cols;
                    out[(4 * i + 0) * stride] = s[i][0];
                    out[(4 * i + 1) * stride] = T(0.5) * (s[i][0] + s[i][1] + s[i][2]);
                    out[(4 * i + 2) * stride] = T(0.5) * (s[i][0] - s[i][1] + s[i][2]);
                    out[(4 * i + 3) * stride] = s[i][2];
                }
            }
        }
        const Index each = Gemm::packed_a_size(rows, cols);
        for (Index xi = 0; xi < points; ++xi) {
            Gemm::pack_a(u.data() + xi * rows * cols, cols, 1, rows, cols, packed + xi * each);
        }
    }

    /// Tiles per task: a block whose transformed patches and products ([16][C + O][block]) stay near
    /// 256 KiB, a whole number of GEMM strips; by the shapes alone.
    static Index block_tiles(const Shape& s) {
        const Index bytes = points * (s.c + s.o) * static_cast<Index>(sizeof(T));
        const Index fit = std::max<Index>(1, (Index{256} << 10) / bytes);
        return std::max<Index>(Gemm::nr, fit / Gemm::nr * Gemm::nr);
    }

    /// y = the convolution of x with the kernels whose transforms transform_weights packed into u
    /// ([O, C]), plus the epilogue's terms. x [N, C, H, W], y [N, O, H, W] (written, not accumulated).
    static void convolve(const T* x, const Shape& s, const T* u, T* y, const Epilogue& e) {
        const Index per_sample = s.tiles(), total = s.n * per_sample;
        const Index block = std::min(block_tiles(s), total);
        const Index tasks = (total + block - 1) / block;
        parallel_for(tasks, 1, [&](Index first, Index last) {
            // Rows of V and M are a vector longer than the block: the transforms run whole vectors of
            // tiles past a row's end, into that slack, and never read what is there.
            const Index pitch = block + Gemm::lanes;
            T* v = scratch<T, Scratch::winograd_v>(static_cast<std::size_t>(points * s.c * pitch));  // [16][C][pitch]
            T* m = scratch<T, Scratch::winograd_m>(static_cast<std::size_t>(points * s.o * pitch));  // [16][O][pitch]
            const T** rows = scratch<const T*, Scratch::conv_plane_rows>(static_cast<std::size_t>(s.c));  // [C]
            for (Index task = first; task < last; ++task) {
                const Index t0 = task * block, t1 = std::min(total, t0 + block), count = t1 - t0;
                transform_input(x, s, t0, t1, pitch, v);
                const Index each = Gemm::packed_a_size(s.o, s.c);
                for (Index xi = 0; xi < points; ++xi) {  // M_xi = U_xi . V_xi
                    for (Index c = 0; c < s.c; ++c) rows[c] = v + (xi * s.c + c) * pitch;
                    Gemm::rows_product(s.o, s.c, u + xi * each, rows, {}, 0, count, m + xi * s.o * pitch, pitch, false);
                }
                transform_output(m, s, t0, t1, pitch, e, y);
            }
        });
    }

  private:
    // Calls fn(n, a, b) for each sample n whose tiles [n * tiles + a, n * tiles + b) lie in [t0, t1).
    template <class Fn>
    static void each_sample(const Shape& s, Index t0, Index t1, Fn&& fn) {
        const Index per_sample = s.tiles();
        for (Index n = t0 / per_sample; n * per_sample < t1; ++n) {
            fn(n, std::max(t0, n * per_sample) - n * per_sample, std::min(t1, (n + 1) * per_sample) - n * per_sample);
        }
    }

    // Calls fn(ty, xa, xb) for each tile row ty holding local tiles [a, b) of a sample: its tiles
    // xa .. xb - 1.
    template <class Fn>
    static void each_row(Index tw, Index a, Index b, Fn&& fn) {
        for (Index ty = a / tw; ty <= (b - 1) / tw; ++ty) {
            fn(ty, ty == a / tw ? a % tw : 0, ty == (b - 1) / tw ? (b - 1) % tw + 1 : tw);
        }
    }

    // The padded plane's rows 2 * row0 .. 2 * row1 + 3, each split into its even and odd columns:
    // split[pr][0][k] = padded[pr][2k], split[pr][1][k] = padded[pr][2k + 1], k <= tile_cols, where
    // padded[1 + i][1 + j] = plane[i, j] and zero elsewhere. A patch's columns are then
    // even[tx], odd[tx], even[tx + 1], odd[tx + 1]: contiguous across a row of tiles.
    static void split_rows(const T* plane, const Shape& s, Index row0, Index row1, T* split) {
        const Index half = s.tile_cols() + 1;
        for (Index pr = 2 * row0; pr < 2 * row1 + 4; ++pr) {
            T* even = split + pr * 2 * half;
            T* odd = even + half;
            const Index i = pr - 1;
            if (i < 0 || i >= s.h) {
                std::fill_n(even, 2 * half, T(0));
                continue;
            }
            split_row(plane + i * s.w, s.w, half, even, odd);
        }
    }

    // even[k] = row[2k - 1], odd[k] = row[2k] for k < half, zero outside the row's w values.
    static void split_row(const T* __restrict row, Index w, Index half, T* __restrict even, T* __restrict odd) {
        const Index even_end = w / 2 + 1, odd_end = (w + 1) / 2;  // 2k - 1 < w, 2k < w
        even[0] = T(0);
        for (Index k = 1; k < even_end; ++k) even[k] = row[2 * k - 1];
        for (Index k = even_end; k < half; ++k) even[k] = T(0);
        for (Index k = 0; k < odd_end; ++k) odd[k] = row[2 * k];
        for (Index k = odd_end; k < half; ++k) odd[k] = T(0);
    }

    // Runs step(load, store, tx) for tx = xa, xa + lanes, ... while tx < xb: a vector of Gemm::lanes
    // tiles at a time, the last one running past xb (into slack the callers leave after each row).
    template <class Step>
    static void across_tiles(Index xa, Index xb, Step&& step) {
        for (Index tx = xa; tx < xb; tx += Gemm::lanes) {
            step([](const T* p) { return Gemm::load(p); }, [](T* p, typename Gemm::Vec v) { Gemm::store(p, v); }, tx);
        }
    }

    // out[xi * stride + tx] = (B^T d B)[xi] for the tiles xa .. xb - 1 of a row, from its four split
    // padded rows (split_rows' layout, starting at the row's first).
    static void input_row(const T* split, Index half, Index xa, Index xb, T* out, Index stride) {
        const T *e0 = split, *o0 = split + half, *e1 = split + 2 * half, *o1 = split + 3 * half;
        const T *e2 = split + 4 * half, *o2 = split + 5 * half, *e3 = split + 6 * half, *o3 = split + 7 * half;
        across_tiles(xa, xb, [&](auto load, auto store, Index tx) {
            // d's columns are even[tx], odd[tx], even[tx + 1], odd[tx + 1] of its four rows
            const auto a0 = load(e0 + tx), b0 = load(o0 + tx), c0 = load(e0 + tx + 1), d0 = load(o0 + tx + 1);
            const auto a1 = load(e1 + tx), b1 = load(o1 + tx), c1 = load(e1 + tx + 1), d1 = load(o1 + tx + 1);
            const auto a2 = load(e2 + tx), b2 = load(o2 + tx), c2 = load(e2 + tx + 1), d2 = load(o2 + tx + 1);
            const auto a3 = load(e3 + tx), b3 = load(o3 + tx), c3 = load(e3 + tx + 1), d3 = load(o3 + tx + 1);
            // B^T d: row 0 = d0 - d2, row 1 = d1 + d2, row 2 = d2 - d1, row 3 = d1 - d3 (of d's rows)
            const auto r00 = a0 - a2, r01 = b0 - b2, r02 = c0 - c2, r03 = d0 - d2;
            const auto r10 = a1 + a2, r11 = b1 + b2, r12 = c1 + c2, r13 = d1 + d2;
            const auto r20 = a2 - a1, r21 = b2 - b1, r22 = c2 - c1, r23 = d2 - d1;
            const auto r30 = a1 - a3, r31 = b1 - b3, r32 = c1 - c3, r33 = d1 - d3;
            // (B^T d) B: the same combinations of the columns
            T* q = out + tx;
            store(q + 0 * stride, r00 - r02), store(q + 1 * stride, r01 + r02);
            store(q + 2 * stride, r02 - r01), store(q + 3 * stride, r01 - r03);
            store(q + 4 * stride, r10 - r12), store(q + 5 * stride, r11 + r12);
            store(q + 6 * stride, r12 - r11), store(q + 7 * stride, r11 - r13);
            store(q + 8 * stride, r20 - r22), store(q + 9 * stride, r21 + r22);
            store(q + 10 * stride, r22 - r21), store(q + 11 * stride, r21 - r23);
            store(q + 12 * stride, r30 - r32), store(q + 13 * stride, r31 + r32);
            store(q + 14 * stride, r32 - r31), store(q + 15 * stride, r31 - r33);
        });
    }

    // V[xi][c][t - t0] = (B^T d B)[xi] for the tiles t0 .. t1 (numbered across samples) and every c;
    // rows of V `pitch` apart, at least a vector longer than t1 - t0.
    static void transform_input(const T* x, const Shape& s, Index t0, Index t1, Index pitch, T* v) {
        const Index tw = s.tile_cols(), half = tw + 1;
        T* split = scratch<T, Scratch::winograd_padded>(static_cast<std::size_t>((2 * s.tile_rows() + 2) * 2 * half + 2 * Gemm::lanes));  // [PH][2][tw + 1] and slack
        each_sample(s, t0, t1, [&](Index n, Index a, Index b) {
            for (Index c = 0; c < s.c; ++c) {
                split_rows(x + (n * s.c + c) * s.h * s.w, s, a / tw, (b - 1) / tw, split);
                each_row(tw, a, b, [&](Index ty, Index xa, Index xb) {
                    input_row(split + 2 * ty * 2 * half, half, xa, xb, v + c * pitch + n * s.tiles() + ty * tw - t0, s.c * pitch);
                });
            }
        });
    }

    // y_ij[tx] = (A^T M A)[i][j] for the tiles xa .. xb - 1 of a row, M[xi] at m[xi * stride + tx];
    // the four outputs at y + (2 i + j) * pitch.
    static void output_row(const T* m, Index stride, Index xa, Index xb, T* y, Index pitch) {
        across_tiles(xa, xb, [&](auto load, auto store, Index tx) {
            const T* p = m + tx;
            // A^T M: row 0 = m0 + m1 + m2, row 1 = m1 - m2 - m3 (of M's rows)
            const auto m4 = load(p + 4 * stride), m5 = load(p + 5 * stride), m6 = load(p + 6 * stride), m7 = load(p + 7 * stride);
            const auto m8 = load(p + 8 * stride), m9 = load(p + 9 * stride), m10 = load(p + 10 * stride), m11 = load(p + 11 * stride);
            const auto r00 = load(p) + m4 + m8, r01 = load(p + stride) + m5 + m9;
            const auto r02 = load(p + 2 * stride) + m6 + m10, r03 = load(p + 3 * stride) + m7 + m11;
            const auto r10 = m4 - m8 - load(p + 12 * stride), r11 = m5 - m9 - load(p + 13 * stride);
            const auto r12 = m6 - m10 - load(p + 14 * stride), r13 = m7 - m11 - load(p + 15 * stride);
            // (A^T M) A: column 0 = r0 + r1 + r2, column 1 = r1 - r2 - r3
            store(y + tx, r00 + r01 + r02);
            store(y + pitch + tx, r01 - r02 - r03);
            store(y + 2 * pitch + tx, r10 + r11 + r12);
            store(y + 3 * pitch + tx, r11 - r12 - r13);
        });
    }

    // y[q] = (residual[q] + add) + (q even ? even : odd)[q / 2] for q = q0 .. q1 - 1, q0 even; no
    // residual where it is null.
    static void add_interleaved(const T* __restrict even, const T* __restrict odd, const T* __restrict residual, T add,
                                T* __restrict y, Index q0, Index q1) {
        const Index k0 = q0 / 2, k1 = q1 / 2;  // whole pairs
        if (residual) {
            for (Index k = k0; k < k1; ++k) {
                y[2 * k] = (residual[2 * k] + add) + even[k];
                y[2 * k + 1] = (residual[2 * k + 1] + add) + odd[k];
            }
            if (q1 % 2) y[q1 - 1] = (residual[q1 - 1] + add) + even[k1];
        } else {
            for (Index k = k0; k < k1; ++k) {
                y[2 * k] = add + even[k];
                y[2 * k + 1] = add + odd[k];
            }
            if (q1 % 2) y[q1 - 1] = add + even[k1];
        }
    }

    // y[n, o] over tiles t0 .. t1: Y = A^T M A plus the epilogue, cropped at an odd edge; rows of M
    // `pitch` apart, at least a vector longer than t1 - t0.
    static void transform_output(const T* m, const Shape& s, Index t0, Index t1, Index pitch, const Epilogue& e, T* y) {
        const Index tw = s.tile_cols(), stride = s.o * pitch, rp = tw + Gemm::lanes;
        T* rows = scratch<T, Scratch::winograd_padded>(static_cast<std::size_t>(4 * rp));  // [2][2][rp]: a tile row's outputs by (i, j)
        each_sample(s, t0, t1, [&](Index n, Index a, Index b) {
            each_row(tw, a, b, [&](Index ty, Index xa, Index xb) {
                const Index q0 = 2 * xa, q1 = std::min(2 * xb, s.w);
                for (Index o = 0; o < s.o; ++o) {
                    output_row(m + o * pitch + n * s.tiles() + ty * tw - t0, stride, xa, xb, rows, rp);
                    const T add = (e.bias ? e.bias[o] : T(0)) + (e.shift ? e.shift[n * s.o + o] : T(0));
                    for (Index i = 0; i < 2 && 2 * ty + i < s.h; ++i) {
                        const Index at = ((n * s.o + o) * s.h + 2 * ty + i) * s.w;
                        const T* even = rows + 2 * i * rp;  // output columns 2 tx
                        add_interleaved(even, even + rp, e.residual ? e.residual + at : nullptr, add, y + at, q0, q1);
                    }
                }
            });
        });
    }
};

}  // namespace diffuse::detail
