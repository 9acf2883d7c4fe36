#pragma once
// The matrix products under the convolutions: C[M, N] (+)= A[M, K] . B[K, N], register-blocked.
// Not for direct use.
//
// A is packed into panels of MR rows, k-major ([K][MR] per panel), so the micro-kernel reads it
// sequentially. B is read in strips of NR columns straight from K row pointers (row k of B is
// rows[k][0 .. N)), the edge mask applied by a bitwise and as each row is loaded; only a product's
// last, partial strip is copied into a packed strip ([K][NR]). A convolution's im2col matrix is such
// a set of rows: each row is a shifted view of the (padded) input, so B is never built (conv2d.hpp).
// The weight gradient's product sums along the rows of both operands: B^T is packed, and A is read
// either transposed into panels or, for a 3x3 stride-1 convolution, in place from the input stored
// channels last, where MR channels at one tap lie side by side (channels_last_times_transposed).
// A small plane's convolution can run transposed (pixel_product): Y^T = X_col^T . W^T, the tile's rows
// runs of 7 pixels read in place from zero-padded planes, its lanes output channels.
// nn::Linear's products pack both operands (packed_product): A's panels from a row-major matrix
// (transposed as they are packed) or from its transpose (copied), B in strips.
// The micro-kernel keeps an MR x NR tile of C in registers (6 x 16 floats with AVX2: 12 of the 16
// vector registers; 8 x 32 with AVX-512: 16 of 32) and does MR * NR / lanes fused multiply-adds per k.
//
// The order of every sum depends only on the shapes (K is cut into fixed blocks), never on the
// thread count, so results are the same bits however the work is split.

#include "diffuse/core/tensor.hpp"
#include "diffuse/detail/scratch.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace diffuse::detail {

// The vector type and width of the micro-kernel, per scalar type and instruction set.
template <class T>
struct GemmVector;

#if defined(__AVX512F__)
template <> struct GemmVector<float> { using type = __m512; };
template <> struct GemmVector<double> { using type = __m512d; };
#elif defined(__AVX__)
template <> struct GemmVector<float> { using type = __m256; };
template <> struct GemmVector<double> { using type = __m256d; };
#elif defined(__SSE2__)
template <> struct GemmVector<float> { using type = __m128; };
template <> struct GemmVector<double> { using type = __m128d; };
#else
template <> struct GemmVector<float> { typedef float type __attribute__((vector_size(16))); };
template <> struct GemmVector<double> { typedef double type __attribute__((vector_size(16))); };
#endif

template <class T>
struct Gemm {
    using Vec = typename GemmVector<T>::type;
    static constexpr Index lanes = static_cast<Index>(sizeof(Vec) / sizeof(T));
    // Rows of the C tile: 6 x 2 vectors fill 12 of AVX2's 16 registers; with AVX-512's 32, 8 x 2
    // accumulators leave room for the B row and the broadcast, and 8 divides the U-Net's channel
    // counts (16, 32, 64, 96, 128), which 6 leaves an 89% full last panel of.
#if defined(__AVX512F__)
    static constexpr Index mr = 8;
#else
    static constexpr Index mr = 6;
#endif
    static constexpr Index nr = 2 * lanes;   // columns of the C tile
    // A B strip of kc rows, [kc][NR], is at most 24 KiB, so that it stays in a 32 or 48 KiB L1 beside
    // the A panel streaming past it: 384 rows of 16 floats (AVX2), 192 rows of 32 (AVX-512).
    static constexpr Index kc_max = 24576 / static_cast<Index>(nr * sizeof(T));

    static Vec load(const T* p) {
        Vec v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }
    // Keeps v in a register: without this, a value read once and used by several FMAs can be read
    // again from memory by each of them (a memory operand per FMA), when registers are scarce.
    static void in_register(Vec& v) {
#if defined(__AVX512F__)
        asm("" : "+v"(v));  // any of the 32 vector registers
#elif defined(__SSE2__)
        asm("" : "+x"(v));
#else
        (void)v;
#endif
    }
    static Vec broadcast(const T* p) {
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) return _mm512_set1_ps(*p);
        else return _mm512_set1_pd(*p);
#elif defined(__AVX__)
        if constexpr (std::is_same_v<T, float>) return _mm256_broadcast_ss(p);
        else return _mm256_broadcast_sd(p);
#elif defined(__SSE2__)
        if constexpr (std::is_same_v<T, float>) return _mm_set1_ps(*p);
        else return _mm_set1_pd(*p);
#else
        Vec v;
        for (Index i = 0; i < lanes; ++i) v[i] = *p;
        return v;
#endif
    }
    // broadcast(p) as one load into a vector register: GCC 12 otherwise loads such scalars ahead
    // into registers of their own (and spills the tile's accumulators to make room).
    static Vec broadcast_load(const T* p) {
#if defined(__AVX512F__) || defined(__AVX__)
        Vec v;
        if constexpr (std::is_same_v<T, float>) asm("vbroadcastss %1, %0" : "=v"(v) : "m"(*p));
        else asm("vbroadcastsd %1, %0" : "=v"(v) : "m"(*p));
        return v;
#else
        return broadcast(p);
#endif
    }
    // c + a * b, fused where the machine has FMA.
    static Vec fmadd(Vec a, Vec b, Vec c) {
#if defined(__FMA__) || defined(__AVX512F__)
        constexpr bool is_float = std::is_same_v<T, float>;
        if constexpr (sizeof(Vec) == 32 && is_float) return _mm256_fmadd_ps(a, b, c);
        if constexpr (sizeof(Vec) == 32 && !is_float) return _mm256_fmadd_pd(a, b, c);
#endif
#if defined(__AVX512F__)
        if constexpr (sizeof(Vec) == 64 && is_float) return _mm512_fmadd_ps(a, b, c);
        if constexpr (sizeof(Vec) == 64 && !is_float) return _mm512_fmadd_pd(a, b, c);
#endif
        return c + a * b;
    }

    /// K blocks: all of K up to kc_max, else equal blocks no longer than kc_max.
    static Index kc_block(Index k) {
        const Index blocks = (k + kc_max - 1) / kc_max;
        return (k + blocks - 1) / blocks;
    }
    static Index panels(Index m) { return (m + mr - 1) / mr; }
    static Index packed_a_size(Index m, Index k) { return panels(m) * mr * k; }

    /// Packs A(i, k) = a[i * row_stride + k * col_stride], [M, K], into panels [ceil(M/MR)][K][MR],
    /// rows past M zero.
    static void pack_a(const T* a, Index row_stride, Index col_stride, Index m, Index k, T* out) {
        for (Index p = 0; p < panels(m); ++p) {
            const Index rows = std::min(mr, m - p * mr);
            T* dst = out + p * k * mr;
            for (Index kk = 0; kk < k; ++kk) {
                const T* src = a + p * mr * row_stride + kk * col_stride;
                Index i = 0;
                for (; i < rows; ++i) dst[kk * mr + i] = src[i * row_stride];
                for (; i < mr; ++i) dst[kk * mr + i] = T(0);
            }
        }
    }

    /// Rows that are a plane shifted by one column (conv2d.hpp's 3x3 stride-1 rows, k = (c, i, j),
    /// i = k / 3 % 3, j = k % 3) read the neighbouring image row at the image's left or right edge;
    /// those entries are zero in X_col. With width W > 0: row k with j = 0 is zero where q % W == 0
    /// (no left neighbour), with j = 2 where q % W == W - 1 (no right neighbour). W = 0: rows as they
    /// are. With height H > 0 as well, the columns are several images of H x W pixels one after
    /// another, and a shift by one row reads the neighbouring image at an image's first or last row:
    /// row k with i = 0 is also zero where q % (H W) < W, with i = 2 where q % (H W) >= (H - 1) W.
    struct EdgeMask {
        Index width = 0;
        Index height = 0;
        // Calls zero(k, q) for every masked entry of rows [k0, k0 + kn) x columns [q0, q1) (an entry
        // masked twice may be called twice). The edge columns are found once; each row's tap then
        // cycles from k0 % 9, with no division.
        template <class Fn>
        void each(Index k0, Index kn, Index q0, Index q1, Fn&& zero) const {
            if (width == 0) return;
            const Index left = q0 + (width - q0 % width) % width;              // first q with q % W == 0
            const Index right = q0 + (2 * width - 1 - q0 % width) % width;     // first q with q % W == W-1
            const Index image = width * height;
            Index t = k0 % 9;
            for (Index k = k0; k < k0 + kn; ++k, t = t == 8 ? 0 : t + 1) {
                const Index i = t / 3, j = t % 3;
                if (j != 1) {
                    for (Index q = j == 0 ? left : right; q < q1; q += width) zero(k, q);
                }
                if (height == 0 || i == 1) continue;
                for (Index base = q0 - q0 % image; base < q1; base += image) {  // the image's first or last row
                    const Index from = i == 0 ? base : base + image - width;
                    for (Index q = std::max(from, q0); q < std::min(from + width, q1); ++q) zero(k, q);
                }
            }
        }
    };

    /// C[0:rows, 0:cols] (+)= A_panel[kc][MR] . B[kc][NR], for rows <= MR, cols <= NR. With
    /// accumulate the tile starts from C, else from zero. The MR x 2 accumulators are an array the
    /// compiler keeps in registers: every loop over them is unrolled, every index a constant. A tile
    /// of at most one vector's columns (a product's last, narrow strip) runs on MR x 1 accumulators:
    /// half the work of a full tile.
    static void kernel(Index kc, const T* a, const T* b, T* c, Index ldc, Index rows, Index cols, bool accumulate) {
        tile(kc, a, {}, {b}, c, ldc, rows, cols, accumulate);
    }

  private:
    // A read in place from an image stored channels last: step k reads its MR values at a, then a
    // moves by lda, and by lda + skip more after the last of a row's `width` pixels (`x` pixels of
    // the first row are behind the start). lda = 0 means a packed panel (a moves by MR).
    struct Walk {
        Index lda = 0, width = 0, x = 0, skip = 0;
    };
    // Where the micro-kernel finds B's row k: in a packed strip, b + k NR (rows == nullptr), or in
    // place at rows[k] + q with the edge mask applied as it is loaded (a bitwise and with keep[t],
    // t the row's tap, cycling from t).
    struct RowsOfB {
        const T* b = nullptr;
        const T* const* rows = nullptr;
        Index q = 0;
        const Vec (*keep)[2] = nullptr;
        Index t = 0;
    };

    // acc += A's MR values at a (broadcast) times B's row bv: one step along K.
    template <int V>
    __attribute__((always_inline)) static void step(Vec (&acc)[mr][V], const T* a, const Vec (&bv)[V]) {
#pragma GCC unroll 16
        for (Index i = 0; i < mr; ++i) {
            const Vec ai = broadcast(a + i);
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) acc[i][v] = fmadd(ai, bv[v], acc[i][v]);
        }
    }

    // The tile of kernel(), A walked as `walk` says and B's rows found as `b` says: on MR x 1
    // accumulators where cols <= lanes, else MR x 2.
    static void tile(Index kc, const T* a, Walk walk, RowsOfB b, T* c, Index ldc, Index rows, Index cols,
                     bool accumulate) {
        if (cols <= lanes) kernel_body<1>(kc, a, walk, b, c, ldc, rows, cols, accumulate);
        else kernel_body<2>(kc, a, walk, b, c, ldc, rows, cols, accumulate);
    }

    // The tile on MR x V accumulators: V = 2 for the full NR columns, 1 for a strip's first `lanes`
    // columns.
    template <int V>
    static void kernel_body(Index kc, const T* a, Walk walk, RowsOfB b, T* c, Index ldc, Index rows, Index cols,
                            bool accumulate) {
        const bool full = rows == mr && cols == V * lanes;
        T edge[mr * nr];  // a partial tile goes through here
        T* out = c;
        Index ld = ldc;
        if (!full) {
            out = edge;
            ld = nr;
            std::fill_n(edge, mr * nr, T(0));
            if (accumulate) {
                for (Index i = 0; i < rows; ++i) std::copy_n(c + i * ldc, cols, edge + i * nr);
            }
        }
        Vec acc[mr][V];
        const bool load_c = accumulate || !full;
#pragma GCC unroll 16
        for (Index i = 0; i < mr; ++i) {
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) acc[i][v] = load_c ? load(out + i * ld + v * lanes) : Vec{};
        }
        Vec bv[V];
        if (b.rows) {  // B in place, masked
#pragma GCC unroll 3
            for (Index k = 0, t = b.t; k < kc; ++k, a += mr, t = t == 8 ? 0 : t + 1) {
                const T* row = b.rows[k] + b.q;
#pragma GCC unroll 2
                for (int v = 0; v < V; ++v) bv[v] = keep_where(load(row + v * lanes), b.keep[t][v]);
                step<V>(acc, a, bv);
            }
        } else if (walk.lda == 0) {
#pragma GCC unroll 4
            for (Index k = 0; k < kc; ++k, a += mr, b.b += nr) {
#pragma GCC unroll 2
                for (int v = 0; v < V; ++v) bv[v] = load(b.b + v * lanes);
                step<V>(acc, a, bv);
            }
        } else {
            for (Index k = 0, x = walk.x; k < kc; x = 0, a += walk.skip) {  // a row of the image at a time
                const Index run = std::min(kc - k, walk.width - x);
#pragma GCC unroll 4
                for (Index r = 0; r < run; ++r, a += walk.lda, b.b += nr) {
#pragma GCC unroll 2
                    for (int v = 0; v < V; ++v) bv[v] = load(b.b + v * lanes);
                    step<V>(acc, a, bv);
                }
                k += run;
            }
        }
#pragma GCC unroll 16
        for (Index i = 0; i < mr; ++i) {
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) store(out + i * ld + v * lanes, acc[i][v]);
        }
        if (!full) {
            for (Index i = 0; i < rows; ++i) std::copy_n(edge + i * nr, cols, c + i * ldc);
        }
    }

  public:
    /// C[M, q0 : q1) (+)= A . B[:, q0 : q1), A packed by pack_a ([M, K]), row k of B at rows[k].
    /// Reads B only inside [q0, q1).
    static void rows_product(Index m, Index k, const T* a_packed, const T* const* rows, EdgeMask mask, Index q0,
                             Index q1, T* c, Index ldc, bool accumulate) {
        const Index kc = kc_block(k);
        T* strip = scratch<T, Scratch::gemm_strip>(static_cast<std::size_t>(kc * nr));  // [kc][NR]
        for (Index k0 = 0; k0 < k; k0 += kc) {
            const Index kb = std::min(kc, k - k0);
            const bool acc = accumulate || k0 > 0;
            for (Index q = q0; q < q1; q += nr) {
                const Index cols = std::min(nr, q1 - q);
                RowsOfB b{strip};
                Vec keep[9][2];  // [tap (i, j)][half]
                if (cols == nr) {
                    // A full strip is read in place by every panel's product: copying it into a packed
                    // strip first cost more than the sequential reads gained (docs/benchmarks.md).
                    strip_keep(mask, q, keep);
                    b = {nullptr, rows + k0, q, keep, k0 % 9};
                } else {  // the last strip, copied with zeros past q1 so that no read leaves [q0, q1)
                    for (Index kk = 0; kk < kb; ++kk) {
                        std::copy_n(rows[k0 + kk] + q, cols, strip + kk * nr);
                        std::fill(strip + kk * nr + cols, strip + (kk + 1) * nr, T(0));
                    }
                    mask.each(k0, kb, q, q + cols, [&](Index kk, Index qq) { strip[(kk - k0) * nr + qq - q] = T(0); });
                }
                for (Index p = 0; p < panels(m); ++p) {
                    tile(kb, a_packed + p * k * mr + k0 * mr, {}, b, c + q + p * mr * ldc, ldc, std::min(mr, m - p * mr),
                         cols, acc);
                }
            }
        }
    }

    /// C[M, N] += A . B^T with A given by M row pointers (A(i, p) = a_rows[i][p], p < P) and
    /// B [N, P] row-major: the weight gradient dW^T = X_col . dY^T of a convolution.
    static void rows_times_transposed(Index m, Index n, Index p, const T* const* a_rows, EdgeMask mask, const T* b,
                                      T* c, Index ldc) {
        const T* bt = pack_transposed(n, p, b);  // [strips][P][NR]
        const Index kc = kc_block(p);
        T* panel = scratch<T, Scratch::gemm_panel>(static_cast<std::size_t>(kc * mr));  // [kc][MR]
        for (Index q0 = 0; q0 < p; q0 += kc) {
            const Index kb = std::min(kc, p - q0);
            for (Index i0 = 0; i0 < m; i0 += mr) {
                const Index rows = std::min(mr, m - i0);
                const T* a_panel_rows[mr];
                for (Index i = 0; i < rows; ++i) a_panel_rows[i] = a_rows[i0 + i] + q0;
                transpose_rows(a_panel_rows, rows, mr, kb, panel);
                mask.each(i0, rows, q0, q0 + kb, [&](Index i, Index q) { panel[(q - q0) * mr + i - i0] = T(0); });
                for (Index s = 0; s < strips(n); ++s) {
                    kernel(kb, panel, bt + s * p * nr + q0 * nr, c + i0 * ldc + s * nr, ldc, rows,
                           std::min(nr, n - s * nr), true);
                }
            }
        }
    }

    /// Values an image of H x W pixels and C channels takes channels last with a zero border
    /// (channels_last_times_transposed's xt): (H + 2) (W + 2) C, and MR more that a panel may read past
    /// the last channel.
    static Index channels_last_size(Index channels, Index h, Index w) { return (h + 2) * (w + 2) * channels + mr; }

    /// x [C, H, W] -> xt [H + 2][W + 2][C]: channels last, a zero border, MR zeros of slack.
    static void pack_channels_last(const T* x, Index channels, Index h, Index w, T* xt) {
        const T** rows = scratch<const T*, Scratch::gemm_rows>(static_cast<std::size_t>(channels));  // [C]
        const Index row_length = (w + 2) * channels;
        std::fill_n(xt, row_length + channels, T(0));  // the top border, row 0's left one
        for (Index y = 0; y < h; ++y) {
            for (Index c = 0; c < channels; ++c) rows[c] = x + (c * h + y) * w;
            T* out = xt + (y + 1) * row_length + channels;  // pixel (y, 0)
            transpose_rows(rows, channels, channels, w, out);
            std::fill_n(out + w * channels, 2 * channels, T(0));  // row y's right border, the next row's left one
        }
        std::fill_n(xt + (h + 1) * row_length + channels, row_length - channels + mr, T(0));  // the bottom border, slack
    }

    /// C[9 C, N] += X_col . B^T for a 3x3 stride-1 convolution of one image (the weight gradient dW^T
    /// += X_col . dY^T, B = dY [N, H W] row-major; C's row c * 9 + t is X_col's row (c, t)), with
    /// X_col read in place from the image stored channels last with a zero border, xt [H + 2][W + 2][C]
    /// (pack_channels_last): row (c, i, j) at pixel (y, x) is xt[y + i][x + j][c]. MR channels at one
    /// tap are MR consecutive values at every pixel, an A panel as it lies: no transpose of X_col's
    /// rows, no edge mask. Each entry's sum runs over the pixels in order, as in rows_times_transposed.
    static void channels_last_times_transposed(Index channels, Index h, Index w, const T* xt, Index n, const T* b, T* c,
                                               Index ldc) {
        const Index p = h * w;
        const T* bt = pack_transposed(n, p, b);  // [strips][P][NR]
        const Index kc = kc_block(p);
        for (Index q0 = 0; q0 < p; q0 += kc) {
            const Index kb = std::min(kc, p - q0);
            const Index y0 = q0 / w, x0 = q0 % w;
            const Walk walk{channels, w, x0, 2 * channels};  // the two border pixels at a row's end
            for (Index t = 0; t < 9; ++t) {
                const T* at = xt + ((y0 + t / 3) * (w + 2) + x0 + t % 3) * channels;  // tap t at pixel q0
                for (Index c0 = 0; c0 < channels; c0 += mr) {
                    for (Index s = 0; s < strips(n); ++s) {
                        tile(kb, at + c0, walk, {bt + s * p * nr + q0 * nr}, c + (c0 * 9 + t) * ldc + s * nr, 9 * ldc,
                             std::min(mr, channels - c0), std::min(nr, n - s * nr), true);
                    }
                }
            }
        }
    }

    /// Pixels in a run of pixel_product's AVX-512 tile: a 7 x 7 plane's row, half of a 14 x 14 plane's.
    static constexpr Index run = 7;
    /// pixel_product's tile is two runs (image rows) of pixels by two vectors of output channels with
    /// AVX-512 (28 accumulators of its 32 registers). With 16 registers it is MR pixels in raster order
    /// by two vectors (12 accumulators, as rows_product's): 7 pixels by two vectors would spill.
    static constexpr bool pixel_runs = sizeof(Vec) == 64;
    static constexpr Index tile_rows = pixel_runs ? 2 : 1;

    /// Image rows of a band, pixel_product's unit of work: two (a tile's two runs) with AVX-512, else
    /// the whole plane, so that its pixels fill tiles of MR in raster order across the image rows.
    static Index pixel_band(Index h) { return pixel_runs ? tile_rows : h; }
    static_assert(pixel_runs || mr <= run, "exchange_tile moves at most `run` pixels of a one-row tile");

    /// Whether pixel_product computes a 3x3 stride-1 convolution of an H x W plane with C input and
    /// Cout output channels faster than rows_product: on a small plane (fewer than 4 NR pixels),
    /// where its tiles (pixels by NR output channels) hold no more than rows_product's (MR output
    /// channels by strips of NR pixels), and K = 9 C is at least 9 MR, so that its products outweigh
    /// the exchange of each tile with Y (at K = 9, conv_out's input gradient measured twice as slow).
    /// Measured on one core (benchmarks/gemm_bench.cpp, AMD EPYC Zen 5) at 7 x 7, 64 -> 64: with
    /// AVX-512 0.92 of the peak against rows_product's 0.60 (49 pixels fill 49 tile rows and 49 of
    /// 64 lanes), built for AVX2 (x86-64-v3) 0.85 against 0.69 (49 of 56 lanes). At 14 x 14 and
    /// 28 x 28 AVX-512's is also 0.90-0.93 against 0.82-0.86 alone, but inside the U-Net's training
    /// step at batch 64 no faster (docs/benchmarks.md), so there rows_product stays. SSE keeps
    /// rows_product.
    static bool pixel_product_faster(Index h, Index w, Index channels, Index out_channels) {
        if (sizeof(Vec) < 32 || h * w >= 4 * nr || channels < mr) return false;
        const Index full = h * w / nr, rest = h * w % nr;  // a last strip of at most `lanes` runs on one vector
        const Index columns = full * nr + (rest == 0 ? 0 : rest <= lanes ? lanes : nr);
        const Index pixels = pixel_runs ? run * ((w + run - 1) / run) * h : h * w;  // the tile rows pixel_product fills
        return pixels * strips(out_channels) * nr <= columns * panels(out_channels) * mr;
    }

    /// Values of x [C, H, W] with a zero border all round, [C][H + 2][W + 2], and `run` values of slack
    /// that a run past a row's end may read.
    static Index padded_planes_size(Index channels, Index h, Index w) { return channels * (h + 2) * (w + 2) + run; }

    /// x [C, H, W] -> padded [C][H + 2][W + 2]: a zero border round every plane, zeros of slack.
    static void pack_padded_planes(const T* x, Index channels, Index h, Index w, T* padded) {
        const Index row = w + 2;
        for (Index c = 0; c < channels; ++c) {
            T* plane = padded + c * (h + 2) * row;
            std::fill_n(plane, row + 1, T(0));  // the top border, row 0's left one
            for (Index y = 0; y < h; ++y) {
                std::copy_n(x + (c * h + y) * w, w, plane + (y + 1) * row + 1);
                std::fill_n(plane + (y + 1) * row + 1 + w, 2, T(0));  // row y's right border, the next row's left one
            }
            std::fill_n(plane + (h + 1) * row + 1, row - 1, T(0));  // the bottom border
        }
        std::fill_n(padded + channels * (h + 2) * row, run, T(0));
    }

    /// Y[Cout, H W] (+)= W . X_col for a 3x3 stride-1 convolution of one image, computed as
    /// Y^T = X_col^T . W^T: the register tile holds pixels along its rows and output channels along
    /// its lanes, so a 7 x 7 plane's 49 pixels fill 49 tile rows (the product with pixels along the
    /// lanes fills 49 of 64 lanes with AVX-512, 49 of 56 with AVX2). With AVX-512 the tile is two
    /// runs of 7 pixels, each from one image row; else MR consecutive pixels in raster order (the
    /// last tile of a band holds the rest). X_col^T is read in place from the zero-padded planes
    /// (pack_padded_planes): tap (c, i, j) of pixel (y, x) is padded[c][y + i][x + j], and the border
    /// is the padding (no edge mask). wt = W^T packed by pack_transposed(Cout, 9 C, W). Computes image
    /// rows [y0, y1) of output-channel strip s (channels s NR .. s NR + NR). Every entry sums over
    /// k = (c, i, j) in order from the value it holds (accumulate) or from zero, as rows_product does:
    /// the same bits.
    static void pixel_product(Index channels, Index h, Index w, const T* padded, Index out_channels, const T* wt,
                              Index s, Index y0, Index y1, T* y, bool accumulate) {
        const Index row = w + 2, p = h * w, k = 9 * channels;
        const Index cols = std::min(nr, out_channels - s * nr);
        const bool one = cols <= lanes;  // one vector of output channels
        const T* b = wt + s * k * nr;
        const Exchange start = accumulate ? Exchange::load : Exchange::zero;
        T tile[16 * nr];  // [pixel][output channel], 16 >= the tile's pixels
        if constexpr (pixel_runs) {
            for (Index yy = y0; yy < y1; yy += tile_rows) {
                const Index rows = std::min(tile_rows, y1 - yy);
                for (Index x0 = 0; x0 < w; x0 += run) {
                    const Index px = std::min(run, w - x0);
                    T* ys = y + s * nr * p + yy * w + x0;  // the tile's first pixel in output channel s NR
                    exchange_tile(tile, ys, p, w, rows, px, cols, start);
                    const T* a = padded + yy * row + x0;
                    const Runs runs{row};
                    if (rows == 2 && !one) pixel_tile<2 * run, 2>(channels, h, row, a, runs, b, tile);
                    else if (rows == 2) pixel_tile<2 * run, 1>(channels, h, row, a, runs, b, tile);
                    else if (!one) pixel_tile<run, 2>(channels, h, row, a, runs, b, tile);
                    else pixel_tile<run, 1>(channels, h, row, a, runs, b, tile);
                    exchange_tile(tile, ys, p, w, rows, px, cols, Exchange::store);
                }
            }
        } else {
            for (Index q0 = y0 * w; q0 < y1 * w; q0 += mr) {
                const Index px = std::min(mr, y1 * w - q0);
                T* ys = y + s * nr * p + q0;  // the tile's first pixel in output channel s NR
                exchange_tile(tile, ys, p, w, 1, px, cols, start);
                Raster raster;
                for (Index r = 0; r < mr; ++r) {
                    const Index q = q0 + std::min(r, px - 1);
                    raster.at[r] = q / w * row + q % w;
                }
                if (one) raster_tiles<1, mr>(px, channels, h, row, padded, raster, b, tile);
                else raster_tiles<2, mr>(px, channels, h, row, padded, raster, b, tile);
                exchange_tile(tile, ys, p, w, 1, px, cols, Exchange::store);
            }
        }
    }

  private:
    enum class Exchange { zero, load, store };
    // Between pixel_product's tile [pixel r run + x][output channel o] and Y, whose entry (o, pixel)
    // is ys[o P + r W + x] for r < rows, x < px, o < cols: zero the tile, load it from Y, or store it
    // to Y. With AVX-512 and floats, 16 x 16 blocks are transposed in registers (pixels along the lanes
    // of Y's rows, each image row's run a masked load or store); else one value at a time.
    static void exchange_tile(T* tile, T* ys, Index p, Index w, Index rows, Index px, Index cols, Exchange what) {
        if (what == Exchange::zero) {
            std::fill_n(tile, 16 * nr, T(0));
            return;
        }
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float> && lanes == 16 && run * tile_rows <= 16) {
            const __mmask16 run_mask = static_cast<__mmask16>((1u << px) - 1);
            for (Index o0 = 0; o0 < cols; o0 += 16) {  // 16 output channels: tile columns o0 .. o0 + 15
                __m512 m[16];
                if (what == Exchange::load) {
                    for (Index o = 0; o < 16; ++o) {  // m[o]: channel o0 + o's pixels along the lanes
                        m[o] = _mm512_setzero_ps();
                        if (o0 + o >= cols) continue;
                        for (Index r = 0; r < rows; ++r) {
                            m[o] = _mm512_mask_loadu_ps(m[o], static_cast<__mmask16>(run_mask << (r * run)),
                                                        ys + (o0 + o) * p + r * w - r * run);
                        }
                    }
                    transpose16(m);
                    for (Index i = 0; i < 16; ++i) _mm512_storeu_ps(tile + i * nr + o0, m[i]);
                } else {
                    for (Index i = 0; i < 16; ++i) m[i] = _mm512_loadu_ps(tile + i * nr + o0);
                    transpose16(m);
                    for (Index o = 0; o < std::min<Index>(16, cols - o0); ++o) {
                        for (Index r = 0; r < rows; ++r) {
                            _mm512_mask_storeu_ps(ys + (o0 + o) * p + r * w - r * run,
                                                  static_cast<__mmask16>(run_mask << (r * run)), m[o]);
                        }
                    }
                }
            }
            return;
        }
#endif
        for (Index r = 0; r < tile_rows; ++r) {
            for (Index x = 0; x < run; ++x) {
                T* t = tile + (r * run + x) * nr;
                const bool inside = r < rows && x < px;
                for (Index o = 0; o < nr; ++o) {
                    T* yo = ys + o * p + r * w + x;
                    if (what == Exchange::load) t[o] = inside && o < cols ? *yo : T(0);
                    else if (inside && o < cols) *yo = t[o];
                }
            }
        }
    }

#if defined(__AVX512F__)
    // m[i][j] -> m[j][i] for a 16 x 16 block of floats, in four rounds of shuffles.
    static void transpose16(__m512 (&m)[16]) {
        __m512 t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            m[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
            m[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
            m[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
            m[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int i = 0; i < 16; i += 8) {
            for (int j = 0; j < 4; ++j) {
                t[i + j] = _mm512_shuffle_f32x4(m[i + j], m[i + j + 4], 0x88);
                t[i + j + 4] = _mm512_shuffle_f32x4(m[i + j], m[i + j + 4], 0xdd);
            }
        }
        for (int j = 0; j < 8; ++j) {
            m[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
            m[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
        }
    }
#endif

    // Where pixel p of pixel_product's tile reads its tap (0, 0, 0) in the padded planes, from the
    // tile's first pixel (Runs: runs of `run` pixels from consecutive image rows) or from their
    // start (Raster: MR pixels in raster order, each at its own offset).
    struct Runs {
        Index row;
        Index operator()(int p) const { return p / run * row + p % run; }
    };
    struct Raster {
        Index at[mr];
        Index operator()(int p) const { return at[p]; }
    };

    // pixel_tile<R, V> for R = px (1 .. R).
    template <int V, int R>
    static void raster_tiles(Index px, Index channels, Index h, Index row, const T* a, Raster raster, const T* b,
                             T* tile) {
        if constexpr (R > 1) {
            if (px < R) return raster_tiles<V, R - 1>(px, channels, h, row, a, raster, b, tile);
        }
        pixel_tile<R, V>(channels, h, row, a, raster, b, tile);
    }

    // pixel_product's tile: P pixels, tap (0, 0, 0) of pixel p at a + offset(p), times V vectors of
    // output channels, tile [P][NR] (its first V lanes-wide columns) += X_col^T . W^T over all of K;
    // B's row k at b + k NR.
    template <int P, int V, class Offset>
    static void pixel_tile(Index channels, Index h, Index row, const T* a, Offset offset, const T* b, T* tile) {
        Vec acc[P][V];
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) acc[p][v] = load(tile + p * nr + v * lanes);
        }
        const Index plane = (h + 2) * row;
        for (Index c = 0; c < channels; ++c, a += plane) {
            for (Index i = 0; i < 3; ++i) {
#pragma GCC unroll 1
                for (Index j = 0; j < 3; ++j, b += nr) {
                    const T* tap = a + i * row + j;  // tap (c, i, j) of pixel offset 0
                    Vec bv[V];
#pragma GCC unroll 2
                    for (int v = 0; v < V; ++v) {
                        bv[v] = load(b + v * lanes);
                        in_register(bv[v]);
                    }
#pragma GCC unroll 16
                    for (int p = 0; p < P; ++p) {
                        const Vec ap = broadcast_load(tap + offset(p));
#pragma GCC unroll 2
                        for (int v = 0; v < V; ++v) acc[p][v] = fmadd(ap, bv[v], acc[p][v]);
                    }
                }
            }
        }
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) store(tile + p * nr + v * lanes, acc[p][v]);
        }
    }

  private:
    // pack_transposed into this thread's scratch.
    static const T* pack_transposed(Index n, Index p, const T* b) {
        T* bt = scratch<T, Scratch::gemm_packed_b>(static_cast<std::size_t>(packed_b_size(p, n)));
        pack_transposed(n, p, b, bt);
        return bt;
    }

  public:
    static Index strips(Index n) { return (n + nr - 1) / nr; }
    /// Values of B [K, N] packed into strips of NR columns, [strips][K][NR].
    static Index packed_b_size(Index k, Index n) { return strips(n) * k * nr; }
    /// B [K, N] with row stride ldb -> strips of NR columns, out [strips][K][NR], zero past N: rows
    /// [k0, k1) of it (threads may pack disjoint ranges).
    static void pack_b(Index k, Index n, const T* b, Index ldb, T* out, Index k0, Index k1) {
        for (Index s = 0; s < strips(n); ++s) {
            const Index cols = std::min(nr, n - s * nr);
            for (Index kk = k0; kk < k1; ++kk) {
                const T* src = b + kk * ldb + s * nr;
                T* dst = out + (s * k + kk) * nr;
                if (cols == nr) {
                    store(dst, load(src));
                    store(dst + lanes, load(src + lanes));
                } else {
                    std::copy_n(src, cols, dst);
                    std::fill(dst + cols, dst + nr, T(0));
                }
            }
        }
    }
    static void pack_b(Index k, Index n, const T* b, Index ldb, T* out) { pack_b(k, n, b, ldb, out, 0, k); }
    /// B = C^T for C [N, K] row-major: strips of NR of C's rows transposed, out [strips][K][NR], zero
    /// past N. (Not inlined: once per product, and inlined with constant shapes GCC 12 warns of a loop
    /// it misreads.)
    __attribute__((noinline)) static void pack_transposed(Index n, Index k, const T* c, T* out) {
        for (Index s = 0; s < strips(n); ++s) {
            const Index cols = std::min(nr, n - s * nr);
            const T* c_rows[nr];
            for (Index j = 0; j < cols; ++j) c_rows[j] = c + (s * nr + j) * k;
            transpose_rows(c_rows, cols, nr, k, out + s * k * nr);
        }
    }

    /// C[i0 : i1, 0 : N] += A[i0 : i1, 0 : K] . B, with A(i, k) = a[i * row_stride + k * col_stride]
    /// (one of the strides 1: A row-major, its panels transposed as they are packed, or A^T row-major,
    /// its panels copied) and B packed by pack_b or pack_transposed. Per K block, the rows' panels are
    /// packed, then each strip of B (in L1) meets every panel. Each entry sums over k in order, in
    /// kc_block(K) blocks, from the value it holds. Threads take disjoint row ranges.
    static void packed_product(Index i0, Index i1, Index n, Index k, const T* a, Index row_stride, Index col_stride,
                               const T* b_packed, T* c, Index ldc) {
        if (i1 <= i0) return;
        const Index kc = kc_block(k), count = panels(i1 - i0);
        T* packed = scratch<T, Scratch::gemm_panel>(static_cast<std::size_t>(count * kc * mr));  // [panels][kc][MR]
        for (Index k0 = 0; k0 < k; k0 += kc) {
            const Index kb = std::min(kc, k - k0);
            for (Index p = 0; p < count; ++p) {
                const Index first = i0 + p * mr, rows = std::min(mr, i1 - first);
                T* panel = packed + p * kb * mr;
                if (col_stride == 1) {
                    const T* a_rows[mr];
                    for (Index i = 0; i < rows; ++i) a_rows[i] = a + (first + i) * row_stride + k0;
                    transpose_rows(a_rows, rows, mr, kb, panel);
                } else {
                    for (Index kk = 0; kk < kb; ++kk) {
                        const T* src = a + first * row_stride + (k0 + kk) * col_stride;
                        T* dst = panel + kk * mr;
                        if (rows == mr && row_stride == 1) {
                            std::copy_n(src, mr, dst);
                        } else {
                            for (Index i = 0; i < rows; ++i) dst[i] = src[i * row_stride];
                            std::fill(dst + rows, dst + mr, T(0));
                        }
                    }
                }
            }
            for (Index s = 0; s < strips(n); ++s) {
                for (Index p = 0; p < count; ++p) {
                    const Index first = i0 + p * mr;
                    kernel(kb, packed + p * kb * mr, b_packed + (s * k + k0) * nr, c + first * ldc + s * nr, ldc,
                           std::min(mr, i1 - first), std::min(nr, n - s * nr), true);
                }
            }
        }
    }

    /// dst[q * width + i] = src[i][q] for i < rows and q < count, zero for rows <= i < width: rows
    /// of length `count` transposed into a k-major panel. Floats go through vector registers, 8 x 8
    /// blocks with AVX and 4 x 4 with SSE (a scalar transpose cost as much as the products it feeds).
    static void transpose_rows(const T* const* src, Index rows, Index width, Index count, T* dst) {
        // Columns q0 .. count of rows i0 .. i0 + block, one entry at a time: a block's last columns.
        [[maybe_unused]] const auto columns_from = [&](Index i0, Index block, Index q0) {
            for (Index q = q0; q < count; ++q) {
                for (Index r = 0; r < block; ++r) dst[q * width + i0 + r] = src[i0 + r][q];
            }
        };
        Index i = 0;
#if defined(__SSE2__)
        if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX__)
            for (; i + 8 <= rows; i += 8) {  // 8 x 8 blocks through AVX registers
                Index q = 0;
                for (; q + 8 <= count; q += 8) {
                    __m256 r[8], t[8];
                    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src[i + k] + q);
                    for (int k = 0; k < 8; k += 2) {
                        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
                        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
                    }
                    for (int k = 0; k < 8; k += 4) {
                        r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
                        r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
                        r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
                        r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
                    }
                    float* out = dst + q * width + i;
                    for (int k = 0; k < 4; ++k) {
                        _mm256_storeu_ps(out + k * width, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
                        _mm256_storeu_ps(out + (k + 4) * width, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
                    }
                }
                columns_from(i, 8, q);
            }
#endif
            for (; i + 4 <= rows; i += 4) {
                const float *r0 = src[i], *r1 = src[i + 1], *r2 = src[i + 2], *r3 = src[i + 3];
                Index q = 0;
                for (; q + 4 <= count; q += 4) {
                    __m128 a = _mm_loadu_ps(r0 + q), b = _mm_loadu_ps(r1 + q);
                    __m128 c = _mm_loadu_ps(r2 + q), d = _mm_loadu_ps(r3 + q);
                    _MM_TRANSPOSE4_PS(a, b, c, d);
                    float* out = dst + q * width + i;
                    _mm_storeu_ps(out, a);
                    _mm_storeu_ps(out + width, b);
                    _mm_storeu_ps(out + 2 * width, c);
                    _mm_storeu_ps(out + 3 * width, d);
                }
                columns_from(i, 4, q);
            }
        }
#endif
        for (; i < rows; ++i) {
            const T* row = src[i];
            for (Index q = 0; q < count; ++q) dst[q * width + i] = row[q];
        }
        for (; i < width; ++i) {
            for (Index q = 0; q < count; ++q) dst[q * width + i] = T(0);
        }
    }

  private:
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;  // one lane's bits

    // v's lanes where keep's bits are all set, +0 where they are clear (a bitwise and).
    static Vec keep_where(Vec v, Vec keep) {
        typedef Bits BitVec __attribute__((vector_size(sizeof(Vec))));
        BitVec x, y;
        std::memcpy(&x, &v, sizeof v);
        std::memcpy(&y, &keep, sizeof keep);
        x &= y;
        std::memcpy(&v, &x, sizeof v);
        return v;
    }

    // keep[t][half]: all ones in the lanes of columns q .. q + NR that row tap t = (i, j) = (t / 3, t % 3)
    // keeps, zero where the edge mask clears it: where (q + c) % W is 0 (j = 0) or W - 1 (j = 2), and
    // with a height, where (q + c) % (H W) is in the first row (i = 0) or the last (i = 2).
    static void strip_keep(EdgeMask mask, Index q, Vec (&keep)[9][2]) {
        Bits keep_bits[3][2][nr];  // [j: columns | i: rows][column c]: all ones to keep, zero to clear
        const Index image = mask.width * mask.height;
        for (Index c = 0, r = mask.width ? q % mask.width : 1, at = image ? q % image : 0; c < nr; ++c) {
            keep_bits[0][0][c] = mask.width && r == 0 ? Bits(0) : ~Bits(0);
            keep_bits[1][0][c] = ~Bits(0);
            keep_bits[2][0][c] = mask.width && r == mask.width - 1 ? Bits(0) : ~Bits(0);
            keep_bits[0][1][c] = image && at < mask.width ? Bits(0) : ~Bits(0);
            keep_bits[1][1][c] = ~Bits(0);
            keep_bits[2][1][c] = image && at >= image - mask.width ? Bits(0) : ~Bits(0);
            if (mask.width) r = r + 1 == mask.width ? 0 : r + 1;
            if (image) at = at + 1 == image ? 0 : at + 1;
        }
        for (int t = 0; t < 9; ++t) {
            for (int half = 0; half < 2; ++half) {
                Vec column, row;
                std::memcpy(&column, keep_bits[t % 3][0] + half * lanes, sizeof(Vec));
                std::memcpy(&row, keep_bits[t / 3][1] + half * lanes, sizeof(Vec));
                keep[t][half] = keep_where(column, row);
            }
        }
    }
};

}  // namespace diffuse::detail
