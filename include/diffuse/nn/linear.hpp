#pragma once
// Linear: y = x W^T + b over the last dimension, [..., in] -> [..., out], W: [out, in] as in PyTorch:
// a batch of vectors [N, in], or of token sequences [N, L, in]. The bias is optional (LDM's attention
// projections to_q, to_k and to_v have none). Every product runs on detail/gemm.hpp, on both threads:
//   forward   Y^T = W X^T                 its sums in an order fixed by `in` alone: each row of y is
//                                         the same bits however many rows share the batch (a
//                                         sampler's batch in chunks, models/unet.hpp)
//   backward  dX^T = W^T dY^T,  dW += dY^T X
// and none depends on the thread count (the weight gradient's rows are split between threads, each
// summed over all rows in one fixed order).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/detail/gemm.hpp"
#include "diffuse/nn/parameter.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class Linear {
  public:
    Linear() = default;
    /// Weights (and bias) drawn as PyTorch does by default: U(-1/sqrt(in), 1/sqrt(in)).
    Linear(Index in_features, Index out_features, Generator& init, bool with_bias = true)
        : weight({out_features, in_features}), in_(in_features), out_(out_features) {
        constexpr const char* where = "diffuse::nn::Linear";
        if (in_features < 1) detail::throw_invalid(where, "in_features", in_features, "at least 1");
        if (out_features < 1) detail::throw_invalid(where, "out_features", out_features, "at least 1");
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
        weight.init_uniform(init, bound);
        if (with_bias) {
            bias = Parameter<T>({out_features});
            bias.init_uniform(init, bound);
        }
    }

    Index in_features() const { return in_; }
    Index out_features() const { return out_; }
    bool has_bias() const { return bias.size() > 0; }

    /// x: [..., in] -> [..., out]
    template <int Rank>
    Tensor<T, Rank> forward(const Tensor<T, Rank>& x) {
        static_assert(Rank >= 2, "Linear takes [N, in] or [N, ..., in]");
        if (x.dimension(Rank - 1) != in_ || x.size() == 0) {
            detail::throw_invalid("diffuse::nn::Linear::forward", "x.shape", shape_string(x.dimensions()),
                                  "a non-empty [..., " + std::to_string(in_) + "]");
        }
        rows_ = x.size() / in_;
        xt_.resize(static_cast<std::size_t>(in_ * rows_));  // X^T [in, rows], kept for dW
        auto dims = x.dimensions();
        dims[Rank - 1] = out_;
        Tensor<T, Rank> y(dims);
        std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_a_size(out_, in_)));
        Gemm::pack_a(weight.data(), in_, 1, out_, in_, packed.data());  // W [out, in]
        rows_times(packed.data(), out_, in_, x.data(), rows_, y.data(), has_bias() ? bias.data() : nullptr, xt_.data());
        return y;
    }

    /// dy: [..., out] -> dx: [..., in]; dW += dy^T x, db += the sum of dy over all leading dimensions.
    template <int Rank>
    Tensor<T, Rank> backward(const Tensor<T, Rank>& dy) {
        static_assert(Rank >= 2, "Linear takes [N, in] or [N, ..., in]");
        if (dy.dimension(Rank - 1) != out_ || dy.size() / out_ != rows_) {
            detail::throw_invalid("diffuse::nn::Linear::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward output's shape, " + std::to_string(rows_) + " rows of " + std::to_string(out_));
        }
        const Index rows = rows_;
        if (has_bias()) {  // db += the sum of dy's rows
            Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias.grad(), out_) += cmatrix(dy.data(), rows, out_).colwise().sum();
        }
        // dx = dy W, as dX^T [in, rows] = W^T dY^T: W^T packed as A ([in, out], column stride in)
        auto dims = dy.dimensions();
        dims[Rank - 1] = in_;
        Tensor<T, Rank> dx(dims);
        std::vector<T> dyt(static_cast<std::size_t>(out_ * rows));  // dY^T [out, rows]
        std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_a_size(in_, out_)));
        Gemm::pack_a(weight.data(), 1, in_, in_, out_, packed.data());
        rows_times(packed.data(), in_, out_, dy.data(), rows, dx.data(), nullptr, dyt.data());
        // dW [out, in] += dY^T [out, rows] X [rows, in], as A . B^T with A's rows those of dY^T and
        // B = X^T [in, rows]; the rows of dW split between threads in whole panels
        std::vector<const T*> dy_rows(static_cast<std::size_t>(out_));
        for (Index o = 0; o < out_; ++o) dy_rows[static_cast<std::size_t>(o)] = dyt.data() + o * rows;
        parallel_for(Gemm::panels(out_), 1, [&](Index first, Index last) {
            const Index o0 = first * Gemm::mr, o1 = std::min(out_, last * Gemm::mr);
            Gemm::rows_times_transposed(o1 - o0, in_, rows, dy_rows.data() + o0, {}, xt_.data(), weight.grad() + o0 * in_, in_);
        });
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
        if (has_bias()) bias.visit(join_name(prefix, "bias"), fn);
    }

    Parameter<T> weight;  // [out, in]
    Parameter<T> bias;    // [out], or empty without a bias

  private:
    using Gemm = detail::Gemm<T>;

    // y [rows, m] = x [rows, k] A^T (+ bias per column), A [m, k] packed by pack_a, as Y^T [m, rows]
    // = A X^T (+ bias per row of Y^T), the columns of Y^T (the rows of y) split between threads in
    // whole strips. Each thread moves its own rows into X^T (xt, [k, rows], which the caller keeps)
    // and out of Y^T, a tile of rows at a time (the transposes are data movement only: the bits are
    // those of one product over the whole batch).
    static void rows_times(const T* a_packed, Index m, Index k, const T* x, Index rows, T* y, const T* bias, T* xt) {
        std::vector<T> yt(static_cast<std::size_t>(m * rows));     // Y^T [m, rows]
        std::vector<const T*> b_rows(static_cast<std::size_t>(k));  // row j of B = X^T
        for (Index j = 0; j < k; ++j) b_rows[static_cast<std::size_t>(j)] = xt + j * rows;
        const Index strips = (rows + Gemm::nr - 1) / Gemm::nr;
        parallel_for(strips, 1, [&](Index first, Index last) {
            const Index r0 = first * Gemm::nr, r1 = std::min(rows, last * Gemm::nr);
            constexpr Index tile = 16;  // rows of x (of y) read (written) while their columns move
            for (Index t0 = r0; t0 < r1; t0 += tile) {
                const Index t1 = std::min(r1, t0 + tile);
                for (Index j = 0; j < k; ++j) {
                    T* to = xt + j * rows;
                    for (Index r = t0; r < t1; ++r) to[r] = x[r * k + j];
                }
            }
            for (Index o = 0; o < m; ++o) std::fill(yt.data() + o * rows + r0, yt.data() + o * rows + r1, bias ? bias[o] : T(0));
            Gemm::rows_product(m, k, a_packed, b_rows.data(), {}, r0, r1, yt.data(), rows, true);
            for (Index t0 = r0; t0 < r1; t0 += tile) {
                const Index t1 = std::min(r1, t0 + tile);
                for (Index o = 0; o < m; ++o) {
                    const T* from = yt.data() + o * rows;
                    for (Index r = t0; r < t1; ++r) y[r * m + o] = from[r];
                }
            }
        });
    }

    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    template <class M>
    using Map = Eigen::Map<M>;
    static Map<const RowMatrix> cmatrix(const T* p, Index rows, Index cols) { return {p, rows, cols}; }

    Index in_ = 0, out_ = 0;
    Index rows_ = 0;     // rows of the last forward input
    std::vector<T> xt_;  // that input transposed, X^T [in, rows]
};

}  // namespace diffuse::nn
