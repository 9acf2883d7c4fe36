#pragma once
// Linear: y = x W^T + b over the last dimension, [..., in] -> [..., out], W: [out, in] as in PyTorch:
// a batch of vectors [N, in], or of token sequences [N, L, in]. The bias is optional (LDM's attention
// projections to_q, to_k and to_v have none). Every product runs on detail/gemm.hpp, on both threads,
// the rows of x (of dy) along the micro-kernel's MR rows, so that no operand is transposed in memory:
//   forward   y = x W^T                   its sums in an order fixed by `in` alone: each row of y is
//                                         the same bits however many rows share the batch (a
//                                         sampler's batch in chunks, models/unet.hpp)
//   backward  dx = dy W,  dW += dy^T x
// and none depends on the thread count (the rows of y, dx and dW are split between threads, each
// entry summed in one fixed order).

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
        auto dims = x.dimensions();
        dims[Rank - 1] = out_;
        Tensor<T, Rank> y(dims);
        x_strips_.resize(static_cast<std::size_t>(Gemm::packed_b_size(rows_, in_)));  // x in strips, for dW
        packed_.resize(static_cast<std::size_t>(Gemm::packed_b_size(in_, out_)));
        Gemm::pack_transposed(out_, in_, weight.data(), packed_.data());  // W^T [in, out] in strips
        const T* b = has_bias() ? bias.data() : nullptr;
        T* yp = y.data();
        parallel_for(Gemm::panels(rows_), 1, [&](Index first, Index last) {
            const Index r0 = first * Gemm::mr, r1 = std::min(rows_, last * Gemm::mr);
            for (Index r = r0; r < r1; ++r) {
                if (b) std::copy_n(b, out_, yp + r * out_);
                else std::fill_n(yp + r * out_, out_, T(0));
            }
            Gemm::packed_product(r0, r1, out_, in_, x.data(), in_, 1, packed_.data(), yp, out_);  // y += x W^T
            Gemm::pack_b(rows_, in_, x.data(), in_, x_strips_.data(), r0, r1);  // kept: B of dW = dy^T x
        });
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
        auto dims = dy.dimensions();
        dims[Rank - 1] = in_;
        Tensor<T, Rank> dx(dims);
        packed_.resize(static_cast<std::size_t>(Gemm::packed_b_size(out_, in_)));
        Gemm::pack_b(out_, in_, weight.data(), in_, packed_.data());  // W [out, in] in strips
        T* dxp = dx.data();
        parallel_for(Gemm::panels(rows), 1, [&](Index first, Index last) {  // dx = dy W
            const Index r0 = first * Gemm::mr, r1 = std::min(rows, last * Gemm::mr);
            std::fill(dxp + r0 * in_, dxp + r1 * in_, T(0));
            Gemm::packed_product(r0, r1, in_, out_, dy.data(), out_, 1, packed_.data(), dxp, in_);
        });
        // dW [out, in] += dy^T [out, rows] x [rows, in], A = dy^T read from dy's columns, the rows of dW
        // split between threads in whole panels
        parallel_for(Gemm::panels(out_), 1, [&](Index first, Index last) {
            const Index o0 = first * Gemm::mr, o1 = std::min(out_, last * Gemm::mr);
            Gemm::packed_product(o0, o1, in_, rows, dy.data(), 1, out_, x_strips_.data(), weight.grad(), in_);
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

    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    template <class M>
    using Map = Eigen::Map<M>;
    static Map<const RowMatrix> cmatrix(const T* p, Index rows, Index cols) { return {p, rows, cols}; }

    Index in_ = 0, out_ = 0;
    Index rows_ = 0;           // rows of the last forward input
    std::vector<T> x_strips_;  // that input in strips of NR columns (Gemm::pack_b), for dW
    std::vector<T> packed_;    // the weights packed for the last product, W^T or W in strips
};

}  // namespace diffuse::nn
