#pragma once
// Conv2d: a 2-D convolution with square kernel k (1 or 3 here), stride s (1 or 2), zero padding k/2,
// and a bias, on [N, C, H, W] batches:
//     y[n, o, p] = b[o] + sum_{c, i, j} w[o, c, i, j] x[n, c, s*py + i - k/2, s*px + j - k/2]
// Computed per sample as a GEMM, Y[Cout, P] = W[Cout, Cin*k*k] . X_col[Cin*k*k, P], P the output
// pixels, with detail/gemm.hpp. X_col is never built for the common 3x3 stride-1 case: row (c, i, j)
// of it is plane c shifted by (i - 1, j - 1), a contiguous slice of a copy of the plane with a zero
// row above and below; where a shift by one column would read the neighbouring image row, the GEMM
// zeroes the entry as it loads the slice (detail::Gemm::EdgeMask). A 1x1 stride-1 conv reads x
// itself; a stride-2 conv builds X_col (im2col, 2.25x the input).
// The input gradient of a 3x3 stride-1 conv is the same kind of convolution of dy, with the kernel
// flipped and its channels swapped. Small planes (7 x 7, and 14 x 14 with AVX-512) fill the GEMM's
// strips of columns badly, so there a product spans several samples' planes laid one after another
// (samples_per_product). Where a small plane is a product of its own (batch 1 at 7 x 7), with AVX2
// or AVX-512 the forward product is computed transposed, pixels along the register tile's rows and
// output channels along its lanes (detail::Gemm::pixel_product: at 7 x 7, 49 of 49 rows filled, where
// 49 columns fill 49 of 64 lanes with AVX-512, 49 of 56 with AVX2), with the same sums in the same
// order. The weight gradient is the GEMM dW^T = X_col . dY^T (for a 3x3 stride-1 conv with X_col read
// in place from the input stored channels last), or, for a 3x3 stride-1 conv with few output channels
// or small planes, dot products along the pixels (detail/shifted_weight_gradient.hpp). Work is split
// by samples and by output columns; sums over samples (dW, db) are reduced in a fixed order, so the
// bits do not depend on the thread count.
// On request (set_algorithm(ConvAlgorithm::winograd)) a 3x3 stride-1 conv with enough channels
// computes its forward pass and its input gradient by Winograd's F(2x2, 3x3) instead
// (detail/winograd.hpp): 2.25x fewer multiplications in its products, the same result up to a few
// roundings. Not the default: on the machines measured it was no faster (docs/benchmarks.md).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/detail/gemm.hpp"
#include "diffuse/detail/scratch.hpp"
#include "diffuse/detail/shifted_weight_gradient.hpp"
#include "diffuse/detail/winograd.hpp"
#include "diffuse/nn/parameter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace diffuse::nn {

/// How a 3x3 stride-1 convolution computes its forward pass and input gradient: by the direct sum
/// (the default), or by Winograd's F(2x2, 3x3) where it has at least Conv2d::winograd_min_channels
/// input and output channels. The weight gradient is always direct.
enum class ConvAlgorithm { direct, winograd };

template <class T = float>
class Conv2d {
  public:
    Conv2d() = default;
    /// Weights and bias drawn as PyTorch does by default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Conv2d(Index in_channels, Index out_channels, Index kernel_size, Index stride, Generator& init)
        : weight({out_channels, in_channels, kernel_size, kernel_size}), bias({out_channels}),
          in_(in_channels), out_(out_channels), k_(kernel_size), stride_(stride) {
        constexpr const char* where = "diffuse::nn::Conv2d";
        if (in_channels < 1) detail::throw_invalid(where, "in_channels", in_channels, "at least 1");
        if (out_channels < 1) detail::throw_invalid(where, "out_channels", out_channels, "at least 1");
        if (kernel_size != 1 && kernel_size != 3) {
            detail::throw_invalid(where, "kernel_size", kernel_size, "1 or 3");
        }
        if (stride != 1 && stride != 2) detail::throw_invalid(where, "stride", stride, "1 or 2");
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel_size * kernel_size));
        weight.init_uniform(init, bound);
        bias.init_uniform(init, bound);
    }

    Index in_channels() const { return in_; }
    Index out_channels() const { return out_; }
    Index kernel_size() const { return k_; }
    Index stride() const { return stride_; }
    Index output_size(Index input_size) const { return (input_size + 2 * (k_ / 2) - k_) / stride_ + 1; }
    /// Multiply-adds times two for one forward pass over x's shape.
    double forward_flops(const Tensor4<T>& x) const {
        return 2.0 * x.dimension(0) * out_ * in_ * k_ * k_ * output_size(x.dimension(2)) *
               output_size(x.dimension(3));
    }

    /// Below this many input or output channels the transformed products are too thin to gain.
    static constexpr Index winograd_min_channels = 8;
    /// A 3x3 stride-1 conv with at most dot_wgrad_max_out_channels output channels, or planes of at
    /// most dot_wgrad_max_pixels pixels (counting one row between samples), computes its weight gradient
    /// as dot products along the pixels (detail/shifted_weight_gradient.hpp) instead of the GEMM
    /// dW^T = X_col . dY^T: there the GEMM's tile is mostly empty (its B strip spans 16 or 32 output
    /// channels) or its transposes cost more than the products. Elsewhere the GEMM was faster
    /// (docs/benchmarks.md).
    static constexpr Index dot_wgrad_max_out_channels = 7;
    static constexpr Index dot_wgrad_max_pixels = 64;
    /// Pixels per group of samples in the dot-product weight gradient: enough that the lanes of its
    /// partial sums are folded rarely, few enough that a group's dY stays in L2.
    static constexpr Index dot_wgrad_pixels = 800;
    void set_algorithm(ConvAlgorithm algorithm) { algorithm_ = algorithm; }
    ConvAlgorithm algorithm() const { return algorithm_; }
    /// Whether forward and the input gradient run by Winograd's F(2x2, 3x3).
    bool uses_winograd() const {
        return shifted() && algorithm_ == ConvAlgorithm::winograd && in_ >= winograd_min_channels &&
               out_ >= winograd_min_channels;
    }

    /// Training mode (the default) keeps the input for backward (a temporary input is moved there, not
    /// copied); evaluation mode keeps nothing.
    void set_training(bool training) { training_ = training; }

    /// x: [N, Cin, H, W] -> y: [N, Cout, Ho, Wo], Ho = (H - 1) / stride + 1. Terms that would otherwise
    /// take a pass of their own are added as y is first written: `shift` [N, Cout], one value per sample
    /// and channel (a ResBlock's time embedding), and `residual`, shaped like y.
    Tensor4<T> forward(const Tensor4<T>& x, const Tensor2<T>* shift = nullptr, const Tensor4<T>* residual = nullptr) {
        check_input(x, shift, residual);
        x_ = training_ ? x : Tensor4<T>();
        borrowed_ = nullptr;
        return convolve(x, shift, residual);
    }
    Tensor4<T> forward(Tensor4<T>&& x, const Tensor2<T>* shift = nullptr, const Tensor4<T>* residual = nullptr) {
        check_input(x, shift, residual);
        borrowed_ = nullptr;
        if (!training_) {
            x_ = Tensor4<T>();
            return convolve(x, shift, residual);
        }
        x_ = std::move(x);
        return convolve(x_, shift, residual);
    }
    /// x borrowed, not copied: backward reads the caller's tensor, which must stay alive and
    /// unchanged until then (a U-Net's skip tensors, or the input a GroupNorm before it keeps).
    Tensor4<T> forward(std::reference_wrapper<const Tensor4<T>> x, const Tensor2<T>* shift = nullptr,
                       const Tensor4<T>* residual = nullptr) {
        check_input(x, shift, residual);
        x_ = Tensor4<T>();
        borrowed_ = training_ ? &x.get() : nullptr;
        return convolve(x, shift, residual);
    }

    /// dy: [N, Cout, Ho, Wo] -> dx: [N, Cin, H, W];  dW += dY . X_col^T,  db += sum dY,
    /// dX = col2im(W^T . dY), which for a 3x3 stride-1 conv is the conv of dY with W flipped.
    Tensor4<T> backward(const Tensor4<T>& dy) {
        if (input().size() == 0) detail::throw_no_forward_cache("diffuse::nn::Conv2d::backward");
        const Geometry g = geometry(input());
        if (dy.dimension(0) != g.n || dy.dimension(1) != out_ || dy.dimension(2) != g.ho ||
            dy.dimension(3) != g.wo) {
            detail::throw_invalid("diffuse::nn::Conv2d::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward output's shape [" + std::to_string(g.n) + ", " +
                                      std::to_string(out_) + ", " + std::to_string(g.ho) + ", " +
                                      std::to_string(g.wo) + "]");
        }
        Tensor4<T> dx(input().dimensions());
        const bool winograd = uses_winograd();
        if (winograd) {  // dx = conv(dy, W'), W'[c, o] = w[o, c] flipped, for the whole batch
            packed_.resize(static_cast<std::size_t>(Winograd::packed_size(in_, out_)));
            Winograd::transform_weights(in_, out_, true, [&](Index c, Index o) { return weight.data() + (o * in_ + c) * 9; },
                                        packed_.data());
            Winograd::convolve(dy.data(), {g.n, out_, g.h, g.w, in_}, packed_.data(), dx.data(), {});
        } else {
            pack_input_gradient_weights(g);
        }
        // Small planes: dx by products over several samples' columns (as in the forward pass).
        const bool grouped = !winograd && samples_per_product(g) > 1;
        if (grouped) {
            grouped_products(dy.data(), out_, in_, g, samples_per_product(g), dx.data(),
                             [&](Index, Index, T* row) { std::fill_n(row, g.p, T(0)); });
        }
        // The dot-product weight gradient: groups of samples stacked into about dot_wgrad_pixels pixels
        // (detail/shifted_weight_gradient.hpp), each group's partial dW^T reduced in group order
        // afterwards; a task is a group and a range of input channels.
        const Index wsize = g.k * out_;
        // Partial sums are zeroed by the task that owns them, not up front: zeroing megabytes on the
        // calling thread left the other threads waiting.
        std::unique_ptr<T[]> group_dwt;  // [groups, K, Cout]
        Index groups = 0;
        const bool dot = dot_weight_gradient(g);
        if (dot) {
            const Index per_group = std::clamp<Index>(dot_wgrad_pixels / ((g.h + 1) * g.w), 1, g.n);
            groups = (g.n + per_group - 1) / per_group;
            const Index chunks = std::clamp<Index>((4 * num_threads() + groups - 1) / groups, 1, in_);
            group_dwt.reset(new T[static_cast<std::size_t>(groups * wsize)]);
            parallel_for(groups * chunks, 1, [&](Index first, Index last) {
                for (Index task = first; task < last; ++task) {
                    const Index group = task / chunks, chunk = task % chunks;
                    const Index n0 = group * per_group, n1 = std::min(g.n, n0 + per_group);
                    const Index c0 = in_ * chunk / chunks, c1 = in_ * (chunk + 1) / chunks;
                    std::fill_n(group_dwt.get() + group * wsize + c0 * 9 * out_, (c1 - c0) * 9 * out_, T(0));
                    detail::ShiftedWeightGradient<T>::accumulate(
                        input().data() + (n0 * g.c + c0) * g.h * g.w, g.c * g.h * g.w, dy.data() + n0 * out_ * g.p, n1 - n0,
                        c1 - c0, out_, g.h, g.w, group_dwt.get() + group * wsize + c0 * 9 * out_, out_);
                }
            });
        }
        // Tasks: groups of whole samples, each with its own partial db (and dW^T unless dot),
        // reduced in task order afterwards. The grouping depends on N only, so the bits do not depend
        // on the thread count.
        const Index per_task = std::max<Index>(1, g.n / 16);
        const Index tasks = (g.n + per_task - 1) / per_task;
        const Index partial_size = dot ? out_ : wsize + out_;  // dW^T|db, or db alone
        std::unique_ptr<T[]> partial(new T[static_cast<std::size_t>(tasks * partial_size)]);  // [tasks, (dW^T,) db]
        parallel_for(tasks, 1, [&](Index first, Index last) {
            for (Index task = first; task < last; ++task) {
                T* dwt = dot ? nullptr : partial.get() + task * partial_size;  // [K, Cout]
                T* db = partial.get() + task * partial_size + partial_size - out_;  // [Cout], last
                std::fill_n(partial.get() + task * partial_size, partial_size, T(0));
                for (Index n = task * per_task; n < std::min(g.n, (task + 1) * per_task); ++n) {
                    backward_sample(dy.data() + n * out_ * g.p, g, n, !dot, dwt, db,
                                    winograd || grouped ? nullptr : dx.data() + n * g.c * g.h * g.w);
                }
            }
        });
        // dW += the partial dW^T, in group order, then task order: a row r of dW^T at a time, its
        // Cout entries summed in a contiguous buffer and written back transposed; threads split the
        // rows, and every entry's sum keeps its order.
        parallel_for(g.k, 8, [&](Index r0, Index r1) {
            std::vector<T> row(static_cast<std::size_t>(out_));  // dW[:, r], [Cout]
            for (Index r = r0; r < r1; ++r) {
                for (Index o = 0; o < out_; ++o) row[o] = weight.grad()[o * g.k + r];
                for (Index group = 0; group < groups; ++group) {
                    const T* p = group_dwt.get() + group * wsize + r * out_;
                    for (Index o = 0; o < out_; ++o) row[o] += p[o];
                }
                for (Index task = 0; task < (dot ? 0 : tasks); ++task) {
                    const T* p = partial.get() + task * partial_size + r * out_;
                    for (Index o = 0; o < out_; ++o) row[o] += p[o];
                }
                for (Index o = 0; o < out_; ++o) weight.grad()[o * g.k + r] = row[o];
            }
        });
        for (Index task = 0; task < tasks; ++task) {  // db += the partial db, in task order
            for (Index o = 0; o < out_; ++o) bias.grad()[o] += partial[task * partial_size + partial_size - out_ + o];
        }
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
        bias.visit(join_name(prefix, "bias"), fn);
    }

    Parameter<T> weight;  // [Cout, Cin, k, k]
    Parameter<T> bias;    // [Cout]

  private:
    using Gemm = detail::Gemm<T>;
    using Winograd = detail::Winograd<T>;

    struct Geometry {
        Index n, c, h, w;  // input [N, Cin, H, W]
        Index ho, wo, p;   // output pixels per sample, p = ho * wo
        Index k;           // rows of X_col: Cin * k * k
    };

    // The input the last training-mode forward pass kept: its own or the caller's.
    const Tensor4<T>& input() const { return borrowed_ ? *borrowed_ : x_; }

    Geometry geometry(const Tensor4<T>& x) const {
        const Index ho = output_size(x.dimension(2)), wo = output_size(x.dimension(3));
        return {x.dimension(0), x.dimension(1), x.dimension(2), x.dimension(3), ho, wo, ho * wo,
                in_ * k_ * k_};
    }

    Tensor4<T> convolve(const Tensor4<T>& x, const Tensor2<T>* shift, const Tensor4<T>* residual) {
        const Geometry g = geometry(x);
        Tensor4<T> y(g.n, out_, g.ho, g.wo);
        if (uses_winograd()) {
            packed_.resize(static_cast<std::size_t>(Winograd::packed_size(out_, in_)));
            Winograd::transform_weights(out_, in_, false, [&](Index o, Index c) { return weight.data() + (o * in_ + c) * 9; },
                                        packed_.data());
            Winograd::convolve(x.data(), {g.n, in_, g.h, g.w, out_}, packed_.data(), y.data(),
                               {bias.data(), shift ? shift->data() : nullptr, residual ? residual->data() : nullptr});
            return y;
        }
        const Index group = samples_per_product(g);
        if (group == 1 && shifted() && Gemm::pixel_product_faster(g.h, g.w, in_, out_)) {
            convolve_pixels(x, g, shift, residual, y);
            return y;
        }
        packed_.resize(static_cast<std::size_t>(Gemm::packed_a_size(out_, g.k)));
        Gemm::pack_a(weight.data(), g.k, 1, out_, g.k, packed_.data());  // W [Cout, K]
        if (group > 1) {
            convolve_groups(x, g, group, shift, residual, y);
            return y;
        }
        // Tasks: (sample, a tile of output columns), enough of them to keep every thread busy.
        const Index strips = (g.p + Gemm::nr - 1) / Gemm::nr;
        const Index tiles = std::clamp<Index>((4 * num_threads() + g.n - 1) / g.n, 1, (strips + 3) / 4);
        // X_col's rows: built inside each task when a task is a whole sample (so they are still in
        // cache when the GEMM reads them), else once for all samples up front.
        const Index plane = plane_size(in_, g);
        const T* planes = x.data();
        if (!pointwise() && tiles > 1) {
            T* built = detail::scratch<T, detail::Scratch::conv_input_planes>(static_cast<std::size_t>(g.n * plane));  // [N, plane]
            parallel_for(g.n, 1, [&](Index first, Index last) {
                for (Index n = first; n < last; ++n) build_planes(x.data() + n * g.c * g.h * g.w, in_, g, built + n * plane);
            });
            planes = built;
        }
        parallel_for(g.n * tiles, 1, [&](Index first, Index last) {
            const T** rows = detail::scratch<const T*, detail::Scratch::conv_plane_rows>(static_cast<std::size_t>(g.k));  // [K]
            for (Index task = first; task < last; ++task) {
                const Index n = task / tiles, tile = task % tiles;
                const Index q0 = strips * tile / tiles * Gemm::nr;
                const Index q1 = std::min(g.p, strips * (tile + 1) / tiles * Gemm::nr);
                if (pointwise() || tiles > 1) {
                    plane_rows(planes + n * plane, in_, g, rows);
                } else {
                    T* own = detail::scratch<T, detail::Scratch::conv_planes>(static_cast<std::size_t>(plane));
                    build_planes(x.data() + n * g.c * g.h * g.w, in_, g, own);
                    plane_rows(own, in_, g, rows);
                }
                T* ys = y.data() + n * out_ * g.p;  // [Cout, P]
                for (Index o = 0; o < out_; ++o) start_output(shift, residual, g, n, o, q0, q1, ys + o * g.p);
                Gemm::rows_product(out_, g.k, packed_.data(), rows, mask(g), q0, q1, ys, g.p, true);  // Y += W . X_col
            }
        });
        return y;
    }

    // Samples whose columns go into one product, for a shifted conv: a plane of fewer than 8 strips of
    // the GEMM's columns leaves its last strip part empty (7 x 7 = 49 columns fill 49 of 64), so
    // several samples' planes are laid one after another (the edge mask zeroes the taps that would
    // read across two), as many as fill 16 strips, but no fewer than two groups per thread. The sums
    // are the same, so are the bits. (A pointwise conv reads x itself; copying its planes together
    // cost more than the fuller strips gained.)
    Index samples_per_product(const Geometry& g) const {
        if (!shifted() || g.p >= 8 * Gemm::nr || g.n == 1) return 1;
        const Index fill = (16 * Gemm::nr + g.p - 1) / g.p;
        return std::clamp<Index>(std::min(fill, g.n / (2 * num_threads())), 1, g.n);
    }

    // convolve() for groups of `group` samples, each one product over its samples' columns.
    void convolve_groups(const Tensor4<T>& x, const Geometry& g, Index group, const Tensor2<T>* shift,
                         const Tensor4<T>* residual, Tensor4<T>& y) const {
        grouped_products(x.data(), in_, out_, g, group, y.data(),
                         [&](Index n, Index o, T* yo) { start_output(shift, residual, g, n, o, 0, g.p, yo); });
    }

    // convolve() by Gemm::pixel_product (small planes, where it fills the register tile better): the
    // samples' zero-padded planes, then tasks of (sample, NR output channels, a band of
    // Gemm::pixel_band image rows).
    void convolve_pixels(const Tensor4<T>& x, const Geometry& g, const Tensor2<T>* shift, const Tensor4<T>* residual,
                         Tensor4<T>& y) {
        packed_.resize(static_cast<std::size_t>(Gemm::packed_b_size(g.k, out_)));
        Gemm::pack_transposed(out_, g.k, weight.data(), packed_.data());  // W^T [K, Cout] in strips of NR
        const Index size = Gemm::padded_planes_size(in_, g.h, g.w);
        const Index band = Gemm::pixel_band(g.h), strips = Gemm::strips(out_), bands = (g.h + band - 1) / band;
        T* padded = detail::scratch<T, detail::Scratch::conv_input_planes>(static_cast<std::size_t>(g.n * size));  // [N, Cin, H + 2, W + 2]
        parallel_for(g.n, 1, [&](Index first, Index last) {
            for (Index n = first; n < last; ++n) {
                Gemm::pack_padded_planes(x.data() + n * g.c * g.h * g.w, in_, g.h, g.w, padded + n * size);
                for (Index o = 0; o < out_; ++o) start_output(shift, residual, g, n, o, 0, g.p, y.data() + (n * out_ + o) * g.p);
            }
        });
        parallel_for(g.n * strips * bands, 1, [&](Index first, Index last) {
            for (Index task = first; task < last; ++task) {
                const Index n = task / (strips * bands), s = task / bands % strips, y0 = task % bands * band;
                Gemm::pixel_product(in_, g.h, g.w, padded + n * size, out_, packed_.data(), s, y0,
                                    std::min(g.h, y0 + band), y.data() + n * out_ * g.p, true);  // Y += W . X_col
            }
        });
    }

    // Y = b (+ shift) (+ residual): columns [q0, q1) of output row yo, sample n's channel o.
    void start_output(const Tensor2<T>* shift, const Tensor4<T>* residual, const Geometry& g, Index n, Index o,
                      Index q0, Index q1, T* yo) const {
        const T b = bias.data()[o] + (shift ? shift->data()[n * out_ + o] : T(0));
        if (residual) {
            const T* r = residual->data() + (n * out_ + o) * g.p;
            for (Index q = q0; q < q1; ++q) yo[q] = r[q] + b;
        } else {
            std::fill(yo + q0, yo + q1, b);
        }
    }

    // dst [N, Cd, P] = the product of packed_ [Cd, Cs * 9] and the X_col of src [N, Cs, P], a product
    // per group of `group` samples over all their columns, each output row started by init(n, o, row)
    // (the row of P values of sample n, channel o), or from zero when init is null.
    template <class Init>
    void grouped_products(const T* src, Index src_channels, Index dst_channels, const Geometry& g, Index group,
                          T* dst, Init&& init) const {
        const Index groups = (g.n + group - 1) / group;
        const Index len = group_plane_length(group, g), k = src_channels * 9;
        parallel_for(groups, 1, [&](Index first, Index last) {
            const T** rows = detail::scratch<const T*, detail::Scratch::conv_plane_rows>(static_cast<std::size_t>(k));  // [K]
            T* planes = detail::scratch<T, detail::Scratch::conv_planes>(static_cast<std::size_t>(src_channels * len));  // [Cs, len]
            T* out = detail::scratch<T, detail::Scratch::conv_group_output>(static_cast<std::size_t>(dst_channels * group * g.p));
            for (Index task = first; task < last; ++task) {
                const Index n0 = task * group, count = std::min(group, g.n - n0), cols = count * g.p;
                group_planes(src + n0 * src_channels * g.p, count, src_channels, g, len, planes);
                group_rows(planes, src_channels, g, len, rows);
                for (Index o = 0; o < dst_channels; ++o) {  // [Cd, count * P]
                    for (Index s = 0; s < count; ++s) init(n0 + s, o, out + o * cols + s * g.p);
                }
                Gemm::rows_product(dst_channels, k, packed_.data(), rows, group_mask(g), 0, cols, out, cols, true);
                for (Index s = 0; s < count; ++s) {
                    for (Index o = 0; o < dst_channels; ++o) {
                        std::copy_n(out + o * cols + s * g.p, g.p, dst + ((n0 + s) * dst_channels + o) * g.p);
                    }
                }
            }
        });
    }

    // A group's planes: per channel, the samples' planes one after another, with W + 1 zeros before
    // and after (the row above the first image and below the last, as in a single sample's planes).
    static Index group_plane_length(Index count, const Geometry& g) { return count * g.p + 2 * (g.w + 1); }
    static typename Gemm::EdgeMask group_mask(const Geometry& g) { return {g.w, g.h}; }
    // xs: `count` samples [count, C, H, W] -> planes [C, len].
    static void group_planes(const T* xs, Index count, Index channels, const Geometry& g, Index len, T* planes) {
        const Index pad = g.w + 1;
        for (Index c = 0; c < channels; ++c) {
            T* b = planes + c * len;
            std::fill_n(b, pad, T(0));
            for (Index s = 0; s < count; ++s) std::copy_n(xs + (s * channels + c) * g.p, g.p, b + pad + s * g.p);
            std::fill(b + pad + count * g.p, b + len, T(0));
        }
    }
    // Row r = (c, i, j) of the group's X_col: plane c shifted by (i - 1, j - 1).
    static void group_rows(const T* planes, Index channels, const Geometry& g, Index len, const T** rows) {
        for (Index c = 0; c < channels; ++c) {
            for (Index t = 0; t < 9; ++t) rows[c * 9 + t] = planes + c * len + (t / 3) * g.w + t % 3;
        }
    }

    bool pointwise() const { return k_ == 1 && stride_ == 1; }  // X_col is x itself
    bool shifted() const { return k_ == 3 && stride_ == 1; }    // X_col's rows are shifted planes
    bool dot_weight_gradient(const Geometry& g) const {
        return shifted() && (out_ <= dot_wgrad_max_out_channels || (g.h + 1) * g.w <= dot_wgrad_max_pixels);
    }

    // The GEMM-form weight gradient of a 3x3 stride-1 conv reads X_col in place from the input stored
    // channels last (Gemm::channels_last_times_transposed), with a panel per tap and MR channels; with
    // fewer channels than MR (conv_in's one) that is nine nearly empty panels, where the transposed
    // rows fill ceil(9 Cin / MR).
    bool channels_last_weight_gradient() const { return shifted() && in_ >= Gemm::mr; }

    void check_input(const Tensor4<T>& x, const Tensor2<T>* shift, const Tensor4<T>* residual) const {
        constexpr const char* where = "diffuse::nn::Conv2d::forward";
        if (x.dimension(1) != in_) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()),
                                  std::to_string(in_) + " channels in dimension 1");
        }
        if (x.dimension(0) < 1 || x.dimension(2) < 1 || x.dimension(3) < 1) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()), "a non-empty [N, C, H, W]");
        }
        const Index n = x.dimension(0);
        if (shift && (shift->dimension(0) != n || shift->dimension(1) != out_)) {
            detail::throw_invalid(where, "shift.shape", shape_string(shift->dimensions()),
                                  "[" + std::to_string(n) + ", " + std::to_string(out_) + "]");
        }
        const typename Tensor4<T>::Dimensions y_shape(n, out_, output_size(x.dimension(2)), output_size(x.dimension(3)));
        if (residual && residual->dimensions() != y_shape) {
            detail::throw_invalid(where, "residual.shape", shape_string(residual->dimensions()),
                                  "the output's shape " + shape_string(y_shape));
        }
    }

    // A shifted plane: a zero row above and below the H x W plane, and one more zero at each end.
    static Index shifted_length(const Geometry& g) { return group_plane_length(1, g); }
    typename Gemm::EdgeMask mask(const Geometry& g) const { return {shifted() ? g.w : 0}; }

    // Elements of the buffer that holds X_col's rows for one sample of `channels` channels.
    Index plane_size(Index channels, const Geometry& g) const {
        if (pointwise()) return channels * g.p;
        if (shifted()) return channels * shifted_length(g);  // [C, L]
        return channels * k_ * k_ * g.p;                     // X_col [K, P]
    }

    // xs [C, H, W] -> the rows of X_col in `planes`: a padded copy of every channel for a shifted
    // conv, else im2col.
    void build_planes(const T* xs, Index channels, const Geometry& g, T* planes) const {
        if (!shifted()) {
            im2col(xs, g, planes);
            return;
        }
        group_planes(xs, 1, channels, g, shifted_length(g), planes);  // one sample's group
    }

    // Row r = (c, i, j) of X_col: output column q reads rows[r][q] (masked by mask(g)).
    void plane_rows(const T* planes, Index channels, const Geometry& g, const T** rows) const {
        if (shifted()) {
            group_rows(planes, channels, g, shifted_length(g), rows);
        } else {
            for (Index r = 0; r < channels * k_ * k_; ++r) rows[r] = planes + r * g.p;
        }
    }

    // The A operand of the input gradient, packed: W^T [K, Cout] in general; for a shifted conv the
    // flipped kernel with its channels swapped, W'[c, (o, i, j)] = w[o, c, 2 - i, 2 - j].
    void pack_input_gradient_weights(const Geometry& g) {
        if (shifted()) {
            std::vector<T> flipped(static_cast<std::size_t>(in_ * out_ * 9));  // [Cin, Cout * 9]
            for (Index c = 0; c < in_; ++c) {
                for (Index o = 0; o < out_; ++o) {
                    for (Index t = 0; t < 9; ++t) flipped[(c * out_ + o) * 9 + t] = weight.data()[(o * in_ + c) * 9 + 8 - t];
                }
            }
            packed_.resize(static_cast<std::size_t>(Gemm::packed_a_size(in_, out_ * 9)));
            Gemm::pack_a(flipped.data(), out_ * 9, 1, in_, out_ * 9, packed_.data());
        } else {
            const Index m = pointwise() ? in_ : g.k;  // W^T [K, Cout]
            packed_.resize(static_cast<std::size_t>(Gemm::packed_a_size(m, out_)));
            Gemm::pack_a(weight.data(), 1, g.k, m, out_, packed_.data());
        }
    }

    // One sample: db += row sums of dY, dW^T += X_col . dY^T with weight_gradient, dx = the input
    // gradient (unless dxs is null: Winograd or the grouped products computed it for the whole batch).
    void backward_sample(const T* dys, const Geometry& g, Index n, bool weight_gradient, T* dwt, T* db, T* dxs) const {
        for (Index o = 0; o < out_; ++o) {  // db += sum dY, in vector lanes (a chain of scalar adds cost up to 2.8% of a step)
            db[o] += Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(dys + o * g.p, g.p).sum();
        }
        const T* xs = input().data() + n * g.c * g.h * g.w;
        if (weight_gradient && channels_last_weight_gradient()) {  // X_col read in place from x channels last
            T* xt = detail::scratch<T, detail::Scratch::conv_planes>(
                static_cast<std::size_t>(Gemm::channels_last_size(in_, g.h, g.w)));  // [H + 2][W + 2][Cin]
            Gemm::pack_channels_last(xs, in_, g.h, g.w, xt);
            Gemm::channels_last_times_transposed(in_, g.h, g.w, xt, out_, dys, dwt, out_);  // dW^T += X_col . dY^T
        } else if (weight_gradient) {
            const T** rows = detail::scratch<const T*, detail::Scratch::conv_plane_rows>(static_cast<std::size_t>(g.k));  // [K]
            if (pointwise()) {
                plane_rows(xs, in_, g, rows);
            } else {
                T* planes = detail::scratch<T, detail::Scratch::conv_planes>(static_cast<std::size_t>(plane_size(in_, g)));
                build_planes(xs, in_, g, planes);
                plane_rows(planes, in_, g, rows);
            }
            Gemm::rows_times_transposed(g.k, out_, g.p, rows, mask(g), dys, dwt, out_);  // dW^T += X_col . dY^T
        }
        if (!dxs) return;

        const T** dy_rows = detail::scratch<const T*, detail::Scratch::conv_dy_rows>(static_cast<std::size_t>(out_ * 9));
        if (shifted()) {  // dx = conv(dy, W'), the same shifted-plane GEMM as the forward pass
            T* planes = detail::scratch<T, detail::Scratch::conv_planes>(static_cast<std::size_t>(plane_size(out_, g)));
            build_planes(dys, out_, g, planes);
            plane_rows(planes, out_, g, dy_rows);
            Gemm::rows_product(in_, out_ * 9, packed_.data(), dy_rows, mask(g), 0, g.p, dxs, g.p, false);
            return;
        }
        for (Index o = 0; o < out_; ++o) dy_rows[o] = dys + o * g.p;
        if (pointwise()) {  // dx = W^T . dY
            Gemm::rows_product(in_, out_, packed_.data(), dy_rows, {}, 0, g.p, dxs, g.p, false);
            return;
        }
        T* dcols = detail::scratch<T, detail::Scratch::conv_columns>(static_cast<std::size_t>(g.k * g.p));  // [K, P]
        Gemm::rows_product(g.k, out_, packed_.data(), dy_rows, {}, 0, g.p, dcols, g.p, false);
        std::fill_n(dxs, g.c * g.h * g.w, T(0));
        col2im(dcols, g, dxs);  // dX = col2im(W^T . dY)
    }

    // For kernel column j and output columns ox .. ox + run - 1 (stride 1), the q in [lo, hi) whose
    // input column ox + q + j - pad lies inside [0, W); outside it is padding.
    static void valid_range(Index ox, Index run, Index j, Index pad, Index w, Index& lo, Index& hi) {
        lo = std::clamp<Index>(pad - j - ox, 0, run);
        hi = std::clamp<Index>(w - ox - j + pad, lo, run);
    }

    // X_col[r, q] for r = (ci, i, j) and every output pixel q of one sample xs [Cin, H, W]: the input
    // pixel that kernel tap (i, j) of channel ci sees, or 0 in the padding.
    void im2col(const T* xs, const Geometry& g, T* cols) const {
        const Index pad = k_ / 2;
        for (Index r = 0; r < g.k; ++r) {
            const Index ci = r / (k_ * k_), i = (r / k_) % k_, j = r % k_;
            for (Index oy = 0; oy < g.ho; ++oy) {
                T* d = cols + r * g.p + oy * g.wo;
                const Index iy = oy * stride_ + i - pad;
                if (iy < 0 || iy >= g.h) {
                    std::fill_n(d, g.wo, T(0));
                    continue;
                }
                const T* src = xs + (ci * g.h + iy) * g.w;
                if (stride_ == 1) {
                    Index lo, hi;
                    valid_range(0, g.wo, j, pad, g.w, lo, hi);
                    std::fill_n(d, lo, T(0));
                    std::copy(src + lo + j - pad, src + hi + j - pad, d + lo);
                    std::fill(d + hi, d + g.wo, T(0));
                } else {  // ox in [lo, hi) reads ix = s * ox + j - pad inside [0, W)
                    const Index first = pad - j, last = g.w - 1 - j + pad;
                    const Index lo = first <= 0 ? 0 : std::min(g.wo, (first + stride_ - 1) / stride_);
                    const Index hi = last < 0 ? lo : std::clamp<Index>(last / stride_ + 1, lo, g.wo);
                    std::fill_n(d, lo, T(0));
                    for (Index ox = lo; ox < hi; ++ox) d[ox] = src[ox * stride_ + j - pad];
                    std::fill(d + hi, d + g.wo, T(0));
                }
            }
        }
    }

    // The adjoint of im2col over one sample: dxs[pixel] += dX_col[r, q] for every (r, q) that read it.
    void col2im(const T* cols, const Geometry& g, T* dxs) const {
        const Index pad = k_ / 2;
        for (Index r = 0; r < g.k; ++r) {
            const Index ci = r / (k_ * k_), i = (r / k_) % k_, j = r % k_;
            for (Index oy = 0; oy < g.ho; ++oy) {
                const Index iy = oy * stride_ + i - pad;
                if (iy < 0 || iy >= g.h) continue;
                const T* s = cols + r * g.p + oy * g.wo;
                T* dst = dxs + (ci * g.h + iy) * g.w;
                if (stride_ == 1) {
                    Index lo, hi;
                    valid_range(0, g.wo, j, pad, g.w, lo, hi);
                    for (Index q = lo; q < hi; ++q) dst[q + j - pad] += s[q];
                } else {
                    for (Index ox = 0; ox < g.wo; ++ox) {
                        const Index ix = ox * stride_ + j - pad;
                        if (ix >= 0 && ix < g.w) dst[ix] += s[ox];
                    }
                }
            }
        }
    }

    Index in_ = 0, out_ = 0, k_ = 1, stride_ = 1;
    bool training_ = true;
    ConvAlgorithm algorithm_ = ConvAlgorithm::direct;
    Tensor4<T> x_;          // the forward input, [N, Cin, H, W], unless borrowed
    const Tensor4<T>* borrowed_ = nullptr;  // the caller's forward input, when borrowed
    std::vector<T> packed_;  // the GEMM's A operand, packed (detail::Gemm::pack_a)
};

}  // namespace diffuse::nn
