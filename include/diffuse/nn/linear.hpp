#pragma once
// Linear: y = x W^T + b over the last dimension, [..., in] -> [..., out], W: [out, in] as in PyTorch:
// a batch of vectors [N, in], or of token sequences [N, L, in]. The bias is optional (LDM's attention
// projections to_q, to_k and to_v have none). The forward product runs on detail/gemm.hpp as
// Y^T = W X^T, whose sums run in an order fixed by `in` alone: each row of y is the same bits however
// many rows share the batch (a sampler's batch in chunks, models/unet.hpp) and whatever the thread count.

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
        const Index rows = x.size() / in_;
        x_ = Tensor2<T>(rows, in_);  // [rows, in]
        std::copy_n(x.data(), x.size(), x_.data());
        auto dims = x.dimensions();
        dims[Rank - 1] = out_;
        Tensor<T, Rank> y(dims);
        product(x.data(), rows, y.data());
        return y;
    }

    /// dy: [..., out] -> dx: [..., in]; dW += dy^T x, db += the sum of dy over all leading dimensions.
    template <int Rank>
    Tensor<T, Rank> backward(const Tensor<T, Rank>& dy) {
        static_assert(Rank >= 2, "Linear takes [N, in] or [N, ..., in]");
        if (dy.dimension(Rank - 1) != out_ || dy.size() / out_ != x_.dimension(0)) {
            detail::throw_invalid("diffuse::nn::Linear::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward output's shape, " + std::to_string(x_.dimension(0)) + " rows of " +
                                      std::to_string(out_));
        }
        const Index rows = x_.dimension(0);
        const auto dym = cmatrix(dy.data(), rows, out_);
        matrix(weight.grad(), out_, in_).noalias() += dym.transpose() * matrix(x_);
        if (has_bias()) Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias.grad(), out_) += dym.colwise().sum();
        auto dims = dy.dimensions();
        dims[Rank - 1] = in_;
        Tensor<T, Rank> dx(dims);
        matrix(dx.data(), rows, in_).noalias() = dym * weights();  // dx = dy W
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

    // y [rows, out] = x [rows, in] W^T + b, as Y^T [out, rows] = W X^T (+ b per row of Y^T), the
    // columns of Y^T (the rows of y) split between threads in whole strips. Each thread moves its own
    // rows into X^T and out of Y^T, a tile of rows at a time (the transposes are data movement only:
    // the bits are those of one product over the whole batch).
    void product(const T* x, Index rows, T* y) const {
        std::vector<T> xt(static_cast<std::size_t>(in_ * rows));   // X^T [in, rows]
        std::vector<T> yt(static_cast<std::size_t>(out_ * rows));  // Y^T [out, rows]
        std::vector<const T*> b_rows(static_cast<std::size_t>(in_));  // row k of B = X^T
        for (Index k = 0; k < in_; ++k) b_rows[static_cast<std::size_t>(k)] = xt.data() + k * rows;
        std::vector<T> packed(static_cast<std::size_t>(Gemm::packed_a_size(out_, in_)));
        Gemm::pack_a(weight.data(), in_, 1, out_, in_, packed.data());  // W [out, in]
        const Index strips = (rows + Gemm::nr - 1) / Gemm::nr;
        parallel_for(strips, 1, [&](Index first, Index last) {
            const Index r0 = first * Gemm::nr, r1 = std::min(rows, last * Gemm::nr);
            constexpr Index tile = 16;  // rows of x (of y) read (written) while their columns move
            for (Index t0 = r0; t0 < r1; t0 += tile) {
                const Index t1 = std::min(r1, t0 + tile);
                for (Index k = 0; k < in_; ++k) {
                    T* to = xt.data() + k * rows;
                    for (Index r = t0; r < t1; ++r) to[r] = x[r * in_ + k];
                }
            }
            for (Index o = 0; o < out_; ++o) std::fill(yt.data() + o * rows + r0, yt.data() + o * rows + r1, has_bias() ? bias.data()[o] : T(0));
            Gemm::rows_product(out_, in_, packed.data(), b_rows.data(), {}, r0, r1, yt.data(), rows, true);
            for (Index t0 = r0; t0 < r1; t0 += tile) {
                const Index t1 = std::min(r1, t0 + tile);
                for (Index o = 0; o < out_; ++o) {
                    const T* from = yt.data() + o * rows;
                    for (Index r = t0; r < t1; ++r) y[r * out_ + o] = from[r];
                }
            }
        });
    }

    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    template <class M>
    using Map = Eigen::Map<M>;
    static Map<RowMatrix> matrix(T* p, Index rows, Index cols) { return {p, rows, cols}; }
    static Map<const RowMatrix> cmatrix(const T* p, Index rows, Index cols) { return {p, rows, cols}; }
    static Map<const RowMatrix> matrix(const Tensor2<T>& t) { return {t.data(), t.dimension(0), t.dimension(1)}; }
    Map<const RowMatrix> weights() const { return {weight.data(), out_, in_}; }

    Index in_ = 0, out_ = 0;
    Tensor2<T> x_;  // the forward input as rows, [rows, in]
};

}  // namespace diffuse::nn
