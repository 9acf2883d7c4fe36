#pragma once
// Conv2d: a 2-D convolution with square kernel k (1 or 3 here), stride s (1 or 2), zero padding k/2,
// and a bias, on [N, C, H, W] batches:
//     y[n, o, p] = b[o] + sum_{c, i, j} w[o, c, i, j] x[n, c, s*py + i - k/2, s*px + j - k/2]
// Computed per sample as a GEMM over im2col columns: Y[Cout, P] = W[Cout, Cin*k*k] . X_col[Cin*k*k, P],
// P the output pixels, cut into tiles of whole rows that the threads share. The tiling depends on the
// shapes only, never on the thread count, so results are the same bits with any number of threads.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/detail/scratch.hpp"
#include "diffuse/nn/parameter.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <string>

namespace diffuse::nn {

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

    /// x: [N, Cin, H, W] -> y: [N, Cout, Ho, Wo], Ho = (H - 1) / stride + 1.
    Tensor4<T> forward(const Tensor4<T>& x) {
        check_input(x);
        x_ = x;
        const Geometry g = geometry(x);
        Tensor4<T> y(g.n, out_, g.ho, g.wo);
        // Tasks: (sample, a tile of whole output rows), so a GEMM writes straight into y.
        const Index rows_per_tile = std::max<Index>(1, 256 / g.wo);
        const Index tiles = (g.ho + rows_per_tile - 1) / rows_per_tile;
        parallel_for(g.n * tiles, 1, [&](Index first, Index last) {
            for (Index task = first; task < last; ++task) {
                const Index n = task / tiles, row0 = (task % tiles) * rows_per_tile;
                const Index p0 = row0 * g.wo, width = std::min(g.ho, row0 + rows_per_tile) * g.wo - p0;
                StridedMap out(y.data() + n * out_ * g.p + p0, out_, width, Stride(g.p));
                out.noalias() = weights() * columns(x.data(), g, n, p0, width);  // Y = W . X_col
                out.colwise() += bias_vector();
            }
        });
        return y;
    }

    /// dy: [N, Cout, Ho, Wo] -> dx: [N, Cin, H, W];  dW += dY . X_col^T,  db += sum dY,
    /// dX = col2im(W^T . dY).
    Tensor4<T> backward(const Tensor4<T>& dy) {
        const Geometry g = geometry(x_);
        if (dy.dimension(0) != g.n || dy.dimension(1) != out_ || dy.dimension(2) != g.ho ||
            dy.dimension(3) != g.wo) {
            detail::throw_invalid("diffuse::nn::Conv2d::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward output's shape [" + std::to_string(g.n) + ", " +
                                      std::to_string(out_) + ", " + std::to_string(g.ho) + ", " +
                                      std::to_string(g.wo) + "]");
        }
        Tensor4<T> dx(x_.dimensions());
        if (!direct()) dx.setZero();  // col2im accumulates
        // Tasks: groups of whole samples, each with its own partial dW and db, reduced in task order
        // afterwards. The grouping depends on N only, so the bits do not depend on the thread count.
        const Index per_task = std::max<Index>(1, g.n / 16);
        const Index tasks = (g.n + per_task - 1) / per_task;
        const Index wsize = out_ * g.k;
        std::vector<T> partial(static_cast<std::size_t>(tasks * (wsize + out_)), T(0));  // [tasks, dW|db]
        parallel_for(tasks, 1, [&](Index first, Index last) {
            for (Index task = first; task < last; ++task) {
                Eigen::Map<RowMatrix> dw(partial.data() + task * (wsize + out_), out_, g.k);
                Eigen::Map<Vector> db(partial.data() + task * (wsize + out_) + wsize, out_);
                for (Index n = task * per_task; n < std::min(g.n, (task + 1) * per_task); ++n) {
                    const Eigen::Map<const RowMatrix> d(dy.data() + n * out_ * g.p, out_, g.p);
                    dw.noalias() += d * columns(x_.data(), g, n, 0, g.p).transpose();  // dW += dY . X_col^T
                    db += d.rowwise().sum();                                            // db += sum dY
                    if (direct()) {  // a 1x1 stride-1 conv: X_col is x itself
                        Eigen::Map<RowMatrix>(dx.data() + n * g.c * g.p, g.k, g.p).noalias() =
                            weights().transpose() * d;
                    } else {
                        T* dcols = detail::scratch<T, 1>(static_cast<std::size_t>(g.k * g.p));  // [K, P]
                        Eigen::Map<RowMatrix>(dcols, g.k, g.p).noalias() = weights().transpose() * d;
                        col2im(dcols, g, n, dx.data());  // dX = col2im(W^T . dY)
                    }
                }
            }
        });
        for (Index task = 0; task < tasks; ++task) {
            const T* p = partial.data() + task * (wsize + out_);
            for (Index i = 0; i < wsize; ++i) weight.grad()[i] += p[i];
            for (Index i = 0; i < out_; ++i) bias.grad()[i] += p[wsize + i];
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
    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    using Stride = Eigen::OuterStride<>;
    using StridedMap = Eigen::Map<RowMatrix, 0, Stride>;
    using ConstStridedMap = Eigen::Map<const RowMatrix, 0, Stride>;

    struct Geometry {
        Index n, c, h, w;  // input [N, Cin, H, W]
        Index ho, wo, p;   // output pixels per sample, p = ho * wo
        Index k;           // rows of X_col: Cin * k * k
    };

    Geometry geometry(const Tensor4<T>& x) const {
        const Index ho = output_size(x.dimension(2)), wo = output_size(x.dimension(3));
        return {x.dimension(0), x.dimension(1), x.dimension(2), x.dimension(3), ho, wo, ho * wo,
                in_ * k_ * k_};
    }

    Eigen::Map<const RowMatrix> weights() const { return {weight.data(), out_, in_ * k_ * k_}; }
    Eigen::Map<const Vector> bias_vector() const { return {bias.data(), out_}; }
    bool direct() const { return k_ == 1 && stride_ == 1; }

    void check_input(const Tensor4<T>& x) const {
        constexpr const char* where = "diffuse::nn::Conv2d::forward";
        if (x.dimension(1) != in_) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()),
                                  std::to_string(in_) + " channels in dimension 1");
        }
        if (x.dimension(0) < 1 || x.dimension(2) < 1 || x.dimension(3) < 1) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()), "a non-empty [N, C, H, W]");
        }
    }

    // X_col[:, p0 : p0 + width] of sample n, [K, width]: a view of x itself for a 1x1 stride-1 conv,
    // else built in this thread's scratch buffer by im2col.
    ConstStridedMap columns(const T* x, const Geometry& g, Index n, Index p0, Index width) const {
        if (direct()) return ConstStridedMap(x + n * g.c * g.p + p0, g.k, width, Stride(g.p));
        T* cols = detail::scratch<T, 0>(static_cast<std::size_t>(g.k * width));
        im2col(x + n * g.c * g.h * g.w, g, p0, width, cols);
        return ConstStridedMap(cols, g.k, width, Stride(width));
    }

    // For kernel column j and output columns ox .. ox + run - 1 (stride 1), the q in [lo, hi) whose
    // input column ox + q + j - pad lies inside [0, W); outside it is padding.
    static void valid_range(Index ox, Index run, Index j, Index pad, Index w, Index& lo, Index& hi) {
        lo = std::clamp<Index>(pad - j - ox, 0, run);
        hi = std::clamp<Index>(w - ox - j + pad, lo, run);
    }

    // X_col[r, q] for r = (ci, i, j) and output pixels p0 .. p0 + width - 1 (whole rows) of one sample
    // xs [Cin, H, W]: the input pixel that kernel tap (i, j) of channel ci sees, or 0 in the padding.
    void im2col(const T* xs, const Geometry& g, Index p0, Index width, T* cols) const {
        const Index pad = k_ / 2, oy0 = p0 / g.wo, rows = width / g.wo;
        for (Index r = 0; r < g.k; ++r) {
            const Index ci = r / (k_ * k_), i = (r / k_) % k_, j = r % k_;
            for (Index oy = oy0; oy < oy0 + rows; ++oy) {
                T* d = cols + r * width + (oy - oy0) * g.wo;
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
                } else {
                    for (Index ox = 0; ox < g.wo; ++ox) {
                        const Index ix = ox * stride_ + j - pad;
                        d[ox] = (ix >= 0 && ix < g.w) ? src[ix] : T(0);
                    }
                }
            }
        }
    }

    // The adjoint of im2col over a whole sample n: dx[pixel] += dX_col[r, p] for every (r, p) that read it.
    void col2im(const T* cols, const Geometry& g, Index n, T* dx) const {
        const Index pad = k_ / 2;
        T* dxs = dx + n * g.c * g.h * g.w;
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
    Tensor4<T> x_;  // the forward input, [N, Cin, H, W]
};

}  // namespace diffuse::nn
