// The SIMD code paths the examples and benchmarks run, tested on the instruction set this file is
// compiled for. tests/CMakeLists.txt builds it once per x86-64 level (-march=x86-64, x86-64-v3,
// x86-64-v4) into a program of its own, so no two copies of diffuse's inline templates, compiled
// for different processors, ever meet in one link. DIFFUSE_ISA names the level in every test case;
// DIFFUSE_ISA_FLOAT_LANES is the float vector width that level must give the GEMM.
//
// Checked, in float and in double: the GEMM's three products against a naive product in long double
// (partial register tiles, two K blocks, the edge mask), the dot-product and channels-last weight
// gradients of a 3x3 conv against the naive sum, the product with pixels along the register tile
// against the naive sum and rows_product's bits, the convolutions against the naive sum and
// by the adjoint identities of their backward pass, the Philox blocks computed in vector lanes
// against the scalar ones, and the U-Net's forward and backward (a float
// network against the same weights in double, and the double network by finite differences).

#include "../support/layers.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/detail/gemm.hpp>
#include <diffuse/detail/shifted_weight_gradient.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/nn/conv2d.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#ifndef DIFFUSE_ISA
#error "compile with -DDIFFUSE_ISA=\"<level>\" and -DDIFFUSE_ISA_FLOAT_LANES=<n> (tests/CMakeLists.txt does)"
#endif

using diffuse::Generator;
using diffuse::Index;
using diffuse::Tensor4;

namespace {

// Unit roundoff of T.
template <class T>
long double unit_roundoff() {
    return static_cast<long double>(std::numeric_limits<T>::epsilon()) / 2;
}

// A sum of k products in T is within gamma_k * sum |a_i b_i| of the exact sum, gamma_k ~ k u
// (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); twice that leaves room for the
// inputs' own rounding.
template <class T>
bool within_dot_bound(long double computed, long double exact, long double abs_sum, Index k) {
    return std::fabs(computed - exact) <= 2.0L * static_cast<long double>(k + 2) * unit_roundoff<T>() * abs_sum + 1e-30L;
}

template <class T>
std::vector<T> random_values(Generator& gen, Index n) {
    std::vector<T> v(static_cast<std::size_t>(n));
    gen.normal(v.data(), n);
    return v;
}

// C[M, N] (+)= A[M, K] . B[K, N] through pack_a and rows_product, with the edge mask of a 3x3
// convolution of width `width` (0: none) and, for images one after another, height `height` (0:
// one image), against the naive product in long double.
template <class T>
void check_rows_product(Index m, Index k, Index n, Index width, bool accumulate, Index height = 0) {
    using Gemm = diffuse::detail::Gemm<T>;
    Generator gen(static_cast<std::uint64_t>(m * 1000003 + k * 1009 + n));
    const std::vector<T> a = random_values<T>(gen, m * k);  // [M, K]
    const std::vector<T> b = random_values<T>(gen, k * n);  // [K, N]
    const std::vector<T> c0 = random_values<T>(gen, m * n); // [M, N]
    std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_a_size(m, k)));
    Gemm::pack_a(a.data(), k, 1, m, k, packed.data());
    std::vector<const T*> rows(static_cast<std::size_t>(k));
    for (Index kk = 0; kk < k; ++kk) rows[kk] = b.data() + kk * n;
    std::vector<T> c = c0;
    Gemm::rows_product(m, k, packed.data(), rows.data(), typename Gemm::EdgeMask{width, height}, 0, n, c.data(), n, accumulate);
    Index failures = 0;
    for (Index i = 0; i < m; ++i) {
        for (Index q = 0; q < n; ++q) {
            long double exact = accumulate ? c0[i * n + q] : 0.0L, abs_sum = std::fabs(exact);
            for (Index kk = 0; kk < k; ++kk) {
                const Index tap_i = kk / 3 % 3, tap_j = kk % 3, image = width * height;
                const bool masked = width > 0 && ((tap_j == 0 && q % width == 0) || (tap_j == 2 && q % width == width - 1));
                const bool across = image > 0 && ((tap_i == 0 && q % image < width) || (tap_i == 2 && q % image >= image - width));
                if (masked || across) continue;
                const long double p = static_cast<long double>(a[i * k + kk]) * b[kk * n + q];
                exact += p;
                abs_sum += std::fabs(p);
            }
            if (!within_dot_bound<T>(c[i * n + q], exact, abs_sum, k)) ++failures;
        }
    }
    INFO("M = " << m << ", K = " << k << ", N = " << n << ", edge width " << width << ", height " << height
                  << ", accumulate " << accumulate);
    REQUIRE(failures == 0);
}

// C[M, N] += A . B^T, A by M row pointers [M][P], B [N, P], through rows_times_transposed.
template <class T>
void check_rows_times_transposed(Index m, Index n, Index p) {
    using Gemm = diffuse::detail::Gemm<T>;
    Generator gen(static_cast<std::uint64_t>(m * 7919 + n * 104729 + p));
    const std::vector<T> a = random_values<T>(gen, m * p);  // [M, P]
    const std::vector<T> b = random_values<T>(gen, n * p);  // [N, P]
    const std::vector<T> c0 = random_values<T>(gen, m * n); // [M, N]
    std::vector<const T*> rows(static_cast<std::size_t>(m));
    for (Index i = 0; i < m; ++i) rows[i] = a.data() + i * p;
    std::vector<T> c = c0;
    Gemm::rows_times_transposed(m, n, p, rows.data(), typename Gemm::EdgeMask{}, b.data(), c.data(), n);
    Index failures = 0;
    for (Index i = 0; i < m; ++i) {
        for (Index j = 0; j < n; ++j) {
            long double exact = c0[i * n + j], abs_sum = std::fabs(exact);
            for (Index q = 0; q < p; ++q) {
                const long double prod = static_cast<long double>(a[i * p + q]) * b[j * p + q];
                exact += prod;
                abs_sum += std::fabs(prod);
            }
            if (!within_dot_bound<T>(c[i * n + j], exact, abs_sum, p)) ++failures;
        }
    }
    INFO("M = " << m << ", N = " << n << ", P = " << p);
    REQUIRE(failures == 0);
}

// C[i0 : i1, N] += A[i0 : i1, K] . B through packed_product (nn::Linear's products): A row-major
// (a_transposed false) or given as A^T row-major, B packed by pack_b from B [K, N] (in two row ranges,
// as threads pack it) or by pack_transposed from B^T [N, K]; against long double, rows outside
// [i0, i1) untouched, and bit for bit against rows_product of the same operands (the same sums in
// the same order).
template <class T>
void check_packed_product(Index m, Index k, Index n, Index i0, Index i1, bool a_transposed, bool b_transposed) {
    using Gemm = diffuse::detail::Gemm<T>;
    Generator gen(static_cast<std::uint64_t>(m * 7919 + k * 131 + n * 17 + i0));
    const std::vector<T> a = random_values<T>(gen, m * k);   // [M, K]
    const std::vector<T> b = random_values<T>(gen, k * n);   // [K, N]
    const std::vector<T> c0 = random_values<T>(gen, m * n);  // [M, N]
    std::vector<T> at(static_cast<std::size_t>(k * m)), bt(static_cast<std::size_t>(n * k));  // A^T [K, M], B^T [N, K]
    for (Index i = 0; i < m; ++i) {
        for (Index kk = 0; kk < k; ++kk) at[kk * m + i] = a[i * k + kk];
    }
    for (Index kk = 0; kk < k; ++kk) {
        for (Index j = 0; j < n; ++j) bt[j * k + kk] = b[kk * n + j];
    }
    std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_b_size(k, n)), T(-3));
    if (b_transposed) {
        Gemm::pack_transposed(n, k, bt.data(), packed.data());
    } else {
        Gemm::pack_b(k, n, b.data(), n, packed.data(), 0, k / 2);
        Gemm::pack_b(k, n, b.data(), n, packed.data(), k / 2, k);
    }
    std::vector<T> c = c0;
    if (a_transposed) Gemm::packed_product(i0, i1, n, k, at.data(), 1, m, packed.data(), c.data(), n);
    else Gemm::packed_product(i0, i1, n, k, a.data(), k, 1, packed.data(), c.data(), n);

    std::vector<T> a_packed(static_cast<std::size_t>(Gemm::packed_a_size(m, k)));
    Gemm::pack_a(a.data(), k, 1, m, k, a_packed.data());
    std::vector<const T*> rows(static_cast<std::size_t>(k));
    for (Index kk = 0; kk < k; ++kk) rows[kk] = b.data() + kk * n;
    std::vector<T> reference = c0;
    Gemm::rows_product(m, k, a_packed.data(), rows.data(), typename Gemm::EdgeMask{}, 0, n, reference.data(), n, true);

    Index failures = 0, differing_bits = 0, touched = 0;
    for (Index i = 0; i < m; ++i) {
        for (Index j = 0; j < n; ++j) {
            const T got = c[i * n + j];
            if (i < i0 || i >= i1) {
                if (std::memcmp(&got, &c0[i * n + j], sizeof(T)) != 0) ++touched;
                continue;
            }
            long double exact = c0[i * n + j], abs_sum = std::fabs(exact);
            for (Index kk = 0; kk < k; ++kk) {
                const long double prod = static_cast<long double>(a[i * k + kk]) * b[kk * n + j];
                exact += prod;
                abs_sum += std::fabs(prod);
            }
            if (!within_dot_bound<T>(got, exact, abs_sum, k)) ++failures;
            if (std::memcmp(&got, &reference[i * n + j], sizeof(T)) != 0) ++differing_bits;
        }
    }
    INFO("M = " << m << ", K = " << k << ", N = " << n << ", rows " << i0 << " .. " << i1 << ", A transposed "
                << a_transposed << ", B transposed " << b_transposed);
    CHECK(failures == 0);
    CHECK(differing_bits == 0);
    CHECK(touched == 0);
}

// dW^T[(c, i, j), o] += sum_{y, x} x[c, y + i - 1, x + j - 1] dy[o, y, x] (zero outside the image)
// through channels_last_times_transposed (X_col read in place from x channels last), against long
// double, and bit for bit against rows_times_transposed over the shifted planes with the edge mask
// (both sum over the pixels in order): partial panels (Cin % MR), partial strips (Cout % NR), K
// blocks that start mid-row, one-row and one-column images.
template <class T>
void check_channels_last_times_transposed(Index cin, Index cout, Index h, Index w) {
    using Gemm = diffuse::detail::Gemm<T>;
    Generator gen(static_cast<std::uint64_t>(cin * 7919 + cout * 104729 + h * 31 + w));
    const Index p = h * w, k = 9 * cin, len = p + 2 * (w + 1);
    const std::vector<T> x = random_values<T>(gen, cin * p);      // [Cin, H, W]
    const std::vector<T> dy = random_values<T>(gen, cout * p);    // [Cout, H, W]
    const std::vector<T> dwt0 = random_values<T>(gen, k * cout);  // [K, Cout]
    std::vector<T> xt(static_cast<std::size_t>(Gemm::channels_last_size(cin, h, w)), T(-7));  // [H + 2][W + 2][Cin]
    Gemm::pack_channels_last(x.data(), cin, h, w, xt.data());
    std::vector<T> dwt = dwt0;
    Gemm::channels_last_times_transposed(cin, h, w, xt.data(), cout, dy.data(), dwt.data(), cout);

    std::vector<T> planes(static_cast<std::size_t>(cin * len), T(0));  // [Cin, L]: shifted planes
    for (Index c = 0; c < cin; ++c) std::copy_n(x.data() + c * p, p, planes.data() + c * len + w + 1);
    std::vector<const T*> rows(static_cast<std::size_t>(k));
    for (Index r = 0; r < k; ++r) rows[r] = planes.data() + (r / 9) * len + (r / 3 % 3) * w + r % 3;
    std::vector<T> reference = dwt0;
    Gemm::rows_times_transposed(k, cout, p, rows.data(), typename Gemm::EdgeMask{w}, dy.data(), reference.data(), cout);

    Index failures = 0, differing_bits = 0;
    for (Index r = 0; r < k; ++r) {
        const Index c = r / 9, i = r / 3 % 3, j = r % 3;
        for (Index o = 0; o < cout; ++o) {
            long double exact = dwt0[r * cout + o], abs_sum = std::fabs(exact);
            for (Index y = 0; y < h; ++y) {
                for (Index xx = 0; xx < w; ++xx) {
                    const Index yi = y + i - 1, xj = xx + j - 1;
                    if (yi < 0 || yi >= h || xj < 0 || xj >= w) continue;
                    const long double prod = static_cast<long double>(x[(c * h + yi) * w + xj]) * dy[o * p + y * w + xx];
                    exact += prod;
                    abs_sum += std::fabs(prod);
                }
            }
            if (!within_dot_bound<T>(dwt[r * cout + o], exact, abs_sum, p)) ++failures;
            if (std::memcmp(&dwt[r * cout + o], &reference[r * cout + o], sizeof(T)) != 0) ++differing_bits;
        }
    }
    INFO("Cin = " << cin << ", Cout = " << cout << ", H = " << h << ", W = " << w);
    CHECK(failures == 0);
    CHECK(differing_bits == 0);
}

// Y[o, (y, x)] (+)= sum_{c, i, j} w[o, (c, i, j)] x[c, y + i - 1, x + j - 1] (zero outside the image)
// through pixel_product (pixels along the tile's rows, X_col^T read in place from the zero-padded
// planes), every strip and band of rows as Conv2d hands them out, against long double, and bit for bit
// against rows_product over the shifted planes with the edge mask (both sum over k = (c, i, j) in
// order): widths that are not a multiple of the run of 7, odd heights (a last band of one row),
// output channels past a strip or within one vector, one-row and one-column images. band: image rows
// per call (0: Gemm::pixel_band, as Conv2d calls it).
template <class T>
void check_pixel_product(Index cin, Index cout, Index h, Index w, bool accumulate, Index band = 0) {
    using Gemm = diffuse::detail::Gemm<T>;
    Generator gen(static_cast<std::uint64_t>(cin * 7919 + cout * 104729 + h * 31 + w + accumulate));
    const Index p = h * w, k = 9 * cin, len = p + 2 * (w + 1);
    const std::vector<T> x = random_values<T>(gen, cin * p);    // [Cin, H, W]
    const std::vector<T> wk = random_values<T>(gen, cout * k);  // [Cout, K]
    const std::vector<T> y0 = random_values<T>(gen, cout * p);  // [Cout, P]
    std::vector<T> padded(static_cast<std::size_t>(Gemm::padded_planes_size(cin, h, w)), T(-7));  // [Cin][H + 2][W + 2]
    Gemm::pack_padded_planes(x.data(), cin, h, w, padded.data());
    std::vector<T> wt(static_cast<std::size_t>(Gemm::packed_b_size(k, cout)));
    Gemm::pack_transposed(cout, k, wk.data(), wt.data());
    std::vector<T> y = y0;
    for (Index s = 0; s < Gemm::strips(cout); ++s) {
        const Index band_rows = band == 0 ? Gemm::pixel_band(h) : band;
        for (Index b = 0; b < h; b += band_rows) {
            Gemm::pixel_product(cin, h, w, padded.data(), cout, wt.data(), s, b, std::min(h, b + band_rows), y.data(),
                                accumulate);
        }
    }

    std::vector<T> planes(static_cast<std::size_t>(cin * len), T(0));  // [Cin, L]: shifted planes
    for (Index c = 0; c < cin; ++c) std::copy_n(x.data() + c * p, p, planes.data() + c * len + w + 1);
    std::vector<const T*> rows(static_cast<std::size_t>(k));
    for (Index r = 0; r < k; ++r) rows[r] = planes.data() + (r / 9) * len + (r / 3 % 3) * w + r % 3;
    std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_a_size(cout, k)));
    Gemm::pack_a(wk.data(), k, 1, cout, k, packed.data());
    std::vector<T> reference = y0;
    Gemm::rows_product(cout, k, packed.data(), rows.data(), typename Gemm::EdgeMask{w}, 0, p, reference.data(), p, accumulate);

    Index failures = 0, differing_bits = 0;
    for (Index o = 0; o < cout; ++o) {
        for (Index q = 0; q < p; ++q) {
            long double exact = accumulate ? y0[o * p + q] : 0.0L, abs_sum = std::fabs(exact);
            for (Index r = 0; r < k; ++r) {
                const Index c = r / 9, yi = q / w + r / 3 % 3 - 1, xj = q % w + r % 3 - 1;
                if (yi < 0 || yi >= h || xj < 0 || xj >= w) continue;
                const long double prod = static_cast<long double>(wk[o * k + r]) * x[(c * h + yi) * w + xj];
                exact += prod;
                abs_sum += std::fabs(prod);
            }
            if (!within_dot_bound<T>(y[o * p + q], exact, abs_sum, k)) ++failures;
            if (std::memcmp(&y[o * p + q], &reference[o * p + q], sizeof(T)) != 0) ++differing_bits;
        }
    }
    INFO("Cin = " << cin << ", Cout = " << cout << ", H = " << h << ", W = " << w << ", accumulate " << accumulate);
    CHECK(failures == 0);
    CHECK(differing_bits == 0);
}

// dW[o, c, i, j] += sum_s sum_{y, x} dy[s, o, y, x] x[s, c, y + i - 1, x + j - 1] through
// detail/shifted_weight_gradient.hpp (samples stacked, lanes folded), against long double: every
// tile height (cout % 3), lane tails, planes narrower than a vector, one row or one column.
template <class T>
void check_shifted_weight_gradient(Index samples, Index cin, Index cout, Index h, Index w) {
    Generator gen(static_cast<std::uint64_t>(samples * 131 + cin * 17 + cout * 7 + h * 3 + w));
    const Index p = h * w;
    const std::vector<T> x = random_values<T>(gen, samples * cin * p);    // [S, Cin, H, W]
    const std::vector<T> dy = random_values<T>(gen, samples * cout * p);  // [S, Cout, H, W]
    const std::vector<T> dwt0 = random_values<T>(gen, cin * 9 * cout);    // [Cin * 9, Cout]
    std::vector<T> dwt = dwt0;
    diffuse::detail::ShiftedWeightGradient<T>::accumulate(x.data(), cin * p, dy.data(), samples, cin, cout, h, w,
                                                          dwt.data(), cout);
    Index failures = 0;
    for (Index c = 0; c < cin; ++c) {
        for (Index t = 0; t < 9; ++t) {
            const Index i = t / 3, j = t % 3;
            for (Index o = 0; o < cout; ++o) {
                long double exact = dwt0[(c * 9 + t) * cout + o], abs_sum = std::fabs(exact);
                for (Index s = 0; s < samples; ++s) {
                    for (Index py = 0; py < h; ++py) {
                        for (Index px = 0; px < w; ++px) {
                            const Index iy = py + i - 1, ix = px + j - 1;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            const long double prod = static_cast<long double>(dy[(s * cout + o) * p + py * w + px]) *
                                                     x[(s * cin + c) * p + iy * w + ix];
                            exact += prod;
                            abs_sum += std::fabs(prod);
                        }
                    }
                }
                if (!within_dot_bound<T>(dwt[(c * 9 + t) * cout + o], exact, abs_sum, samples * p)) ++failures;
            }
        }
    }
    INFO("S = " << samples << ", Cin = " << cin << ", Cout = " << cout << ", H x W = " << h << " x " << w);
    REQUIRE(failures == 0);
}

// y[n, o, py, px] = b[o] + sum_{c,i,j} w[o, c, i, j] x[n, c, s py + i - k/2, s px + j - k/2], in
// long double, with the sum of the terms' magnitudes for the error bound.
template <class T>
std::pair<long double, long double> naive_conv(const diffuse::nn::Conv2d<T>& conv, const Tensor4<T>& x, Index n,
                                               Index o, Index py, Index px) {
    const Index k = conv.kernel_size(), s = conv.stride(), pad = k / 2, cin = x.dimension(1);
    long double sum = conv.bias.data()[o], abs_sum = std::fabs(sum);
    for (Index c = 0; c < cin; ++c) {
        for (Index i = 0; i < k; ++i) {
            for (Index j = 0; j < k; ++j) {
                const Index iy = s * py + i - pad, ix = s * px + j - pad;
                if (iy < 0 || iy >= x.dimension(2) || ix < 0 || ix >= x.dimension(3)) continue;
                const long double p = static_cast<long double>(conv.weight.data()[((o * cin + c) * k + i) * k + j]) * x(n, c, iy, ix);
                sum += p;
                abs_sum += std::fabs(p);
            }
        }
    }
    return {sum, abs_sum};
}

struct ConvCase {
    Index cin, cout, k, s, n, h, w;
};

// Channel counts that are not multiples of any register tile, more than 384 rows of X_col (two K
// blocks), images wider than one strip, batch 1 (split into column tiles) and 9 (a task per sample),
// and one 7 x 7 sample, a product of its own (pixel_product with AVX2 and AVX-512).
const ConvCase conv_cases[] = {{13, 19, 3, 1, 1, 9, 17}, {50, 7, 3, 1, 9, 5, 11}, {7, 33, 3, 2, 2, 13, 10},
                               {45, 17, 1, 1, 3, 6, 19}, {2, 3, 3, 1, 2, 1, 1},   {3, 2, 3, 1, 1, 4, 1},
                               {4, 6, 3, 2, 1, 3, 1},    {5, 3, 1, 2, 2, 5, 4},   {32, 32, 3, 1, 2, 28, 28},
                               {16, 64, 3, 1, 1, 7, 7}};

// The forward pass against the naive sum, and the backward pass through the adjoint identities of
// the bilinear map (x, w) -> y - b: <y - b, dy> = <x, dx> = <w, dw>, and sum(db) = sum(dy).
template <class T>
void check_conv(const ConvCase& c) {
    INFO("Cin " << c.cin << ", Cout " << c.cout << ", k " << c.k << ", stride " << c.s << ", N " << c.n << ", "
                << c.h << "x" << c.w);
    Generator gen(17);
    diffuse::nn::Conv2d<T> conv(c.cin, c.cout, c.k, c.s, gen);
    const auto x = gen.randn<T, 4>({c.n, c.cin, c.h, c.w});  // [N, Cin, H, W]
    const Tensor4<T> y = conv.forward(x);                    // [N, Cout, H', W']
    const Index terms = c.cin * c.k * c.k;
    Index failures = 0;
    for (Index n = 0; n < c.n; ++n)
        for (Index o = 0; o < c.cout; ++o)
            for (Index py = 0; py < y.dimension(2); ++py)
                for (Index px = 0; px < y.dimension(3); ++px) {
                    const auto [exact, abs_sum] = naive_conv(conv, x, n, o, py, px);
                    if (!within_dot_bound<T>(y(n, o, py, px), exact, abs_sum, terms)) ++failures;
                }
    REQUIRE(failures == 0);

    const auto dy = gen.randn<T, 4>(y.dimensions());  // [N, Cout, H', W']
    diffuse::nn::zero_grad(conv);
    const Tensor4<T> dx = conv.backward(dy);  // [N, Cin, H, W]
    long double y_dy = 0, x_dx = 0, w_dw = 0, db_sum = 0, dy_sum = 0, magnitude = 0;
    for (Index i = 0; i < y.size(); ++i) {
        const Index o = (i / (y.dimension(2) * y.dimension(3))) % c.cout;
        const long double term = static_cast<long double>(y.data()[i] - conv.bias.data()[o]) * dy.data()[i];
        y_dy += term;
        magnitude += std::fabs(term);
        dy_sum += dy.data()[i];
    }
    for (Index i = 0; i < x.size(); ++i) x_dx += static_cast<long double>(x.data()[i]) * dx.data()[i];
    for (Index i = 0; i < conv.weight.size(); ++i) w_dw += static_cast<long double>(conv.weight.data()[i]) * conv.weight.grad()[i];
    for (Index o = 0; o < c.cout; ++o) db_sum += conv.bias.grad()[o];
    // Each side is a sum of rounded dot products of `terms` terms; the magnitudes bound their error.
    const long double bound = 4.0L * static_cast<long double>(terms + y.size() / c.cout) * unit_roundoff<T>() * magnitude;
    REQUIRE(std::fabs(x_dx - y_dy) <= bound);
    REQUIRE(std::fabs(w_dw - y_dy) <= bound);
    long double dy_abs = 0;
    for (Index i = 0; i < dy.size(); ++i) dy_abs += std::fabs(static_cast<long double>(dy.data()[i]));
    REQUIRE(std::fabs(db_sum - dy_sum) <= 4.0L * static_cast<long double>(y.size()) * unit_roundoff<T>() * dy_abs);
}

// Two levels (8x8 -> 4x4), attention at 4x4, classes: every kind of block, channels that leave
// partial register tiles.
diffuse::UNetConfig small_unet() {
    diffuse::UNetConfig c;
    c.model_channels = 6;
    c.channel_mult = {1, 2};
    c.num_res_blocks = 1;
    c.attention_resolutions = {4};
    c.groups = 3;
    c.heads = 2;
    c.image_size = 8;
    c.num_classes = 3;
    c.dropout = 0.0;
    return c;
}

// max |a - b| / max |b|
template <class A, class B>
double relative_max_difference(const A& a, const B& b) {
    double diff = 0, scale = 0;
    for (Index i = 0; i < b.size(); ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
        scale = std::max(scale, std::fabs(static_cast<double>(b.data()[i])));
    }
    return diff / scale;
}

}  // namespace

TEST_CASE(DIFFUSE_ISA ": the GEMM uses this instruction set's vector width", "[isa][gemm]") {
    INFO("compiled for " DIFFUSE_ISA);
    REQUIRE(diffuse::detail::Gemm<float>::lanes == DIFFUSE_ISA_FLOAT_LANES);
    REQUIRE(diffuse::detail::Gemm<double>::lanes == DIFFUSE_ISA_FLOAT_LANES / 2);
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the GEMM's packed product matches a naive product, partial tiles and two K blocks included",
                   "[isa][gemm]", float, double) {
    const Index nr = diffuse::detail::Gemm<TestType>::nr;
    for (const Index m : {1, 5, 6, 7, 13, 32}) {
        for (const Index k : {1, 9, 27, 385, 800}) {
            for (const Index n : {Index{1}, nr - 1, nr, nr + 3, 3 * nr + 5}) {
                check_rows_product<TestType>(m, k, n, 0, false);
            }
        }
    }
    check_rows_product<TestType>(19, 288, 2 * nr + 1, 0, true);
    // a last strip of exactly one vector (the one-vector tile, full) and one column past it
    const Index lanes = diffuse::detail::Gemm<TestType>::lanes;
    for (const Index n : {lanes, 3 * nr + lanes, 3 * nr + lanes + 1}) check_rows_product<TestType>(16, 45, n, 0, true);
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the GEMM's edge mask zeroes the columns that wrap to the next image row",
                   "[isa][gemm]", float, double) {
    for (const Index width : {1, 2, 7, 28}) check_rows_product<TestType>(11, 9 * 5, width * 6 + 1, width, false);
    check_rows_product<TestType>(7, 9 * 50, 14 * 14, 14, true);  // two K blocks
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the GEMM's edge mask also zeroes the rows that would read across images laid one after another",
                   "[isa][gemm]", float, double) {
    // Images of H x W, several per product (Conv2d's samples_per_product): full and partial strips,
    // a strip holding the end of one image and the start of the next, one-row and one-column images.
    for (const auto& [w, h] : {std::pair<Index, Index>{7, 7}, {1, 5}, {5, 1}, {3, 4}, {14, 14}, {1, 1}}) {
        for (const Index images : {2, 3, 11}) check_rows_product<TestType>(13, 9 * 3, images * w * h, w, false, h);
    }
    check_rows_product<TestType>(9, 9 * 50, 11 * 49, 7, true, 7);  // two K blocks
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the GEMM's transposed product (the weight gradient) matches a naive product",
                   "[isa][gemm]", float, double) {
    const Index nr = diffuse::detail::Gemm<TestType>::nr;
    for (const Index m : {1, 6, 11, 45}) {
        for (const Index n : {Index{1}, nr - 1, nr + 1, 3 * nr}) {
            for (const Index p : {1, 49, 385, 1000}) check_rows_times_transposed<TestType>(m, n, p);
        }
    }
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the GEMM's product of packed operands (nn::Linear's) matches a naive product and "
                   "rows_product's bits", "[isa][gemm]", float, double) {
    using Gemm = diffuse::detail::Gemm<TestType>;
    const Index mr = Gemm::mr, nr = Gemm::nr;
    for (const bool a_transposed : {false, true}) {
        for (const bool b_transposed : {false, true}) {
            for (const Index k : {Index{1}, Index{7}, Index{64}, 2 * Gemm::kc_max + 3}) {  // one, two and three K blocks
                for (const Index n : {Index{1}, nr - 1, nr, 2 * nr + 5}) {
                    check_packed_product<TestType>(3 * mr + 2, k, n, 0, 3 * mr + 2, a_transposed, b_transposed);
                    check_packed_product<TestType>(3 * mr + 2, k, n, mr, 2 * mr + 1, a_transposed, b_transposed);
                }
            }
            check_packed_product<TestType>(5, 33, nr, 2, 2, a_transposed, b_transposed);  // no rows
        }
    }
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the channels-last weight gradient of a 3x3 conv matches the naive sum and the "
                   "transposed product's bits", "[isa][gemm]", float, double) {
    const Index mr = diffuse::detail::Gemm<TestType>::mr, nr = diffuse::detail::Gemm<TestType>::nr;
    for (const Index cin : {mr, mr + 3, 3 * mr}) {
        for (const Index cout : {Index{1}, nr - 1, nr, 2 * nr + 5}) {
            for (const auto& [h, w] : {std::pair<Index, Index>{7, 7}, {1, 9}, {6, 1}, {5, 13}}) {
                check_channels_last_times_transposed<TestType>(cin, cout, h, w);
            }
        }
    }
    check_channels_last_times_transposed<TestType>(mr, nr, 28, 28);  // K blocks starting mid-row
    check_channels_last_times_transposed<TestType>(2 * mr, 2 * nr, 14, 14);
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the product with pixels along the register tile (small planes) matches the naive "
                   "sum and rows_product's bits", "[isa][gemm]", float, double) {
    const Index lanes = diffuse::detail::Gemm<TestType>::lanes, nr = diffuse::detail::Gemm<TestType>::nr;
    for (const Index cout : {Index{1}, lanes, lanes + 1, nr, 2 * nr + 5}) {
        for (const auto& [h, w] : {std::pair<Index, Index>{7, 7}, {1, 9}, {6, 1}, {5, 13}, {3, 14}}) {
            for (const bool accumulate : {false, true}) check_pixel_product<TestType>(3, cout, h, w, accumulate);
        }
    }
    for (const Index band : {1, 3}) check_pixel_product<TestType>(5, nr + 1, 5, 13, true, band);  // other bands
    check_pixel_product<TestType>(64, 64, 7, 7, true);  // the U-Net's 7 x 7 convolution
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": the dot-product weight gradient of a 3x3 conv matches the naive sum",
                   "[isa][gemm]", float, double) {
    for (const Index samples : {1, 2, 5}) {
        for (const Index cout : {1, 2, 3, 7}) {
            check_shifted_weight_gradient<TestType>(samples, 2, cout, 7, 7);
            check_shifted_weight_gradient<TestType>(samples, 1, cout, 1, 1);
            check_shifted_weight_gradient<TestType>(samples, 3, cout, 1, 9);
            check_shifted_weight_gradient<TestType>(samples, 2, cout, 6, 1);
            check_shifted_weight_gradient<TestType>(samples, 1, cout, 5, 13);
        }
    }
    check_shifted_weight_gradient<TestType>(3, 4, 32, 14, 14);
}

TEMPLATE_TEST_CASE(DIFFUSE_ISA ": Conv2d matches the naive sum and its backward pass the adjoint identities",
                   "[isa][conv2d]", float, double) {
    for (const ConvCase& c : conv_cases) check_conv<TestType>(c);
}

TEST_CASE(DIFFUSE_ISA ": the Philox blocks computed in vector lanes are the blocks one at a time", "[isa][random]") {
    // 16 lanes with AVX-512, 8 with AVX2; SSE2 computes one block at a time (its 32-bit products
    // were slower than scalar 64-bit ones). Runs start on both sides of a carry into the high word.
    using Lanes = diffuse::detail::PhiloxLanes;
    using Words = std::array<std::uint32_t, 4>;
    CHECK(Lanes::count == (DIFFUSE_ISA_FLOAT_LANES == 4 ? 1 : DIFFUSE_ISA_FLOAT_LANES));
    const std::array<std::uint32_t, 2> key = {0x89abcdef, 0x01234567};
    for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{0xfffffffa}, std::uint64_t{0xfedcba98ffffffffULL}}) {
        std::array<Words, Lanes::count> out{};
        Lanes::blocks(first, key, out.data());
        for (int l = 0; l < Lanes::count; ++l) {
            const std::uint64_t i = first + static_cast<std::uint64_t>(l);
            INFO("block " << i);
            CHECK(out[static_cast<std::size_t>(l)] ==
                  diffuse::philox4x32_10({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32), 0, 0}, key));
        }
    }
    // Fills go through the lanes: uniform draws of lengths around a multiple of the lanes, from an
    // offset that is not one, are the documented words (u = (w >> 8) 2^-24 in float).
    for (const Index n : {Index{1}, Index{4 * Lanes::count - 1}, Index{4 * Lanes::count + 5}, Index{10007}}) {
        const std::uint64_t seed = 0x0123456789abcdefULL, offset = 0xfffffffdULL;
        Generator generator(seed, offset);
        std::vector<float> u(static_cast<std::size_t>(n));
        generator.uniform(u.data(), n);
        CHECK(generator.offset() == offset + static_cast<std::uint64_t>((n + 3) / 4));
        const Generator layout(seed);
        Index wrong = 0;
        for (Index k = 0; k < n; ++k) {
            const Words w = layout.block(offset + static_cast<std::uint64_t>(k / 4));
            wrong += u[static_cast<std::size_t>(k)] != static_cast<float>(w[static_cast<std::size_t>(k % 4)] >> 8) * 0x1p-24f;
        }
        INFO("n = " << n);
        CHECK(wrong == 0);
    }
}

TEST_CASE(DIFFUSE_ISA ": Conv2d gives a small plane the same bits alone as grouped with other samples in one product",
          "[isa][conv2d]") {
    // 7 x 7: a batch of 16 runs products over several samples' planes (rows_product), one sample alone
    // the product with pixels along the register tile with AVX2 and AVX-512 (pixel_product).
    Generator gen(23);
    constexpr Index cout = 64;
    diffuse::nn::Conv2d<float> conv(16, cout, 3, 1, gen);
    const auto x = gen.randn<float, 4>({16, 16, 7, 7});
    const auto shift = gen.randn<float, 2>({16, cout});
    const auto residual = gen.randn<float, 4>({16, cout, 7, 7});
    const Tensor4<float> y = conv.forward(x, &shift, &residual);
    const Index in = 16 * 49, out = cout * 49;
    for (const Index n : {Index{0}, Index{5}, Index{15}}) {
        Tensor4<float> one(1, 16, 7, 7), r(1, cout, 7, 7);
        diffuse::Tensor2<float> s(1, cout);
        std::copy_n(x.data() + n * in, in, one.data());
        std::copy_n(residual.data() + n * out, out, r.data());
        std::copy_n(shift.data() + n * cout, cout, s.data());
        const Tensor4<float> alone = conv.forward(one, &s, &r);
        REQUIRE(std::equal(alone.data(), alone.data() + out, y.data() + n * out));
    }
}

TEST_CASE(DIFFUSE_ISA ": Conv2d and the U-Net give the same bits with one thread or two", "[isa][conv2d][unet]") {
    const int saved = diffuse::num_threads();
    diffuse::UNet<float> unet(small_unet(), 3);
    Generator gen(4);
    const auto x = gen.randn<float, 4>({3, 1, 8, 8});  // [N, C, H, W]
    Tensor4<float> y[2], dx[2];
    for (int threads = 1; threads <= 2; ++threads) {
        diffuse::set_num_threads(threads);
        y[threads - 1] = unet.forward(x, {1, 500, 999}, {0, 1, 3});
        dx[threads - 1] = unet.backward(y[threads - 1]);
    }
    diffuse::set_num_threads(saved);
    REQUIRE(std::equal(y[0].data(), y[0].data() + y[0].size(), y[1].data()));
    REQUIRE(std::equal(dx[0].data(), dx[0].data() + dx[0].size(), dx[1].data()));
}

TEST_CASE(DIFFUSE_ISA ": the float U-Net's forward and backward match the same weights in double", "[isa][unet]") {
    diffuse::UNet<double> reference(small_unet(), 5);
    diffuse::UNet<float> unet(small_unet(), 5);
    std::map<std::string, const double*> values;
    reference.for_each_parameter("", [&](auto p) { values[p.name] = p.value; });
    unet.for_each_parameter("", [&](auto p) {
        const double* v = values.at(p.name);
        for (Index i = 0; i < p.size; ++i) p.value[i] = static_cast<float>(v[i]);
    });
    Generator gen(8);
    const auto x64 = gen.randn<double, 4>({4, 1, 8, 8});  // [N, C, H, W]
    const Tensor4<float> x32 = x64.cast<float>();
    const diffuse::Timesteps t = {0, 3, 700, 999};
    const std::vector<int> labels = {0, 1, 2, 3};
    const Tensor4<double> y64 = reference.forward(x64, t, labels);
    const Tensor4<float> y32 = unet.forward(x32, t, labels);
    // Float32 through ~20 layers: the differences are a few ulps of the largest output.
    REQUIRE(relative_max_difference(y32, y64) < 1e-4);
    const auto g64 = gen.randn<double, 4>(y64.dimensions());  // [N, C, H, W]
    const Tensor4<float> g32 = g64.cast<float>();
    diffuse::nn::zero_grad(reference);
    diffuse::nn::zero_grad(unet);
    const Tensor4<double> dx64 = reference.backward(g64);
    const Tensor4<float> dx32 = unet.backward(g32);
    REQUIRE(relative_max_difference(dx32, dx64) < 1e-3);
    std::map<std::string, std::pair<const double*, Index>> grads;
    reference.for_each_parameter("", [&](auto p) { grads[p.name] = {p.grad, p.size}; });
    // Each parameter's error relative to its largest gradient, but never to less than a thousandth
    // of the largest in the network: some gradients are zero in exact arithmetic (an attention key's
    // bias shifts every logit of a query alike, which the softmax ignores) and only rounding is left.
    double largest = 0;
    for (const auto& [name, g] : grads) {
        for (Index i = 0; i < g.second; ++i) largest = std::max(largest, std::fabs(g.first[i]));
    }
    double worst = 0;
    std::string worst_name;
    unet.for_each_parameter("", [&](auto p) {
        const auto [g, n] = grads.at(p.name);
        double diff = 0, scale = 1e-3 * largest;
        for (Index i = 0; i < n; ++i) {
            diff = std::max(diff, std::fabs(static_cast<double>(p.grad[i]) - g[i]));
            scale = std::max(scale, std::fabs(g[i]));
        }
        if (diff / scale > worst) worst = diff / scale, worst_name = p.name;
    });
    INFO("worst parameter gradient: " << worst_name);
    REQUIRE(worst < 1e-3);
}

TEST_CASE(DIFFUSE_ISA ": the double U-Net's backward pass matches finite differences", "[isa][unet][gradient]") {
    diffuse::UNet<double> unet(small_unet(), 5);
    Generator gen(9);
    auto x = gen.randn<double, 4>({2, 1, 8, 8});  // [N, C, H, W]
    const diffuse::Timesteps t = {3, 700};
    const std::vector<int> labels = {1, 3};  // 3: "no class"
    Tensor4<double> dx;
    diffuse::testing::GradientCheckOptions options;
    options.max_coordinates = 8;  // per tensor
    const auto report = diffuse::testing::check_gradients(
        unet, {{"x", x.data(), x.size(), [&] { return static_cast<const double*>(dx.data()); }}},
        [&] { return unet.forward(x, t, labels); }, [&](const auto& g) { dx = unet.backward(g); }, options);
    REQUIRE_GRADIENTS_MATCH(report);
}
