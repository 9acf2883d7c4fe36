#pragma once
// Linear: y = x W^T + b on [N, in] -> [N, out], W: [out, in] as in PyTorch.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/parameter.hpp"

#include <Eigen/Core>

#include <cmath>
#include <string>

namespace diffuse::nn {

template <class T = float>
class Linear {
  public:
    Linear() = default;
    /// Weights and bias drawn as PyTorch does by default: U(-1/sqrt(in), 1/sqrt(in)).
    Linear(Index in_features, Index out_features, Generator& init)
        : weight({out_features, in_features}), bias({out_features}), in_(in_features), out_(out_features) {
        constexpr const char* where = "diffuse::nn::Linear";
        if (in_features < 1) detail::throw_invalid(where, "in_features", in_features, "at least 1");
        if (out_features < 1) detail::throw_invalid(where, "out_features", out_features, "at least 1");
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
        weight.init_uniform(init, bound);
        bias.init_uniform(init, bound);
    }

    Index in_features() const { return in_; }
    Index out_features() const { return out_; }

    /// x: [N, in] -> [N, out]
    Tensor2<T> forward(const Tensor2<T>& x) {
        if (x.dimension(1) != in_ || x.dimension(0) < 1) {
            detail::throw_invalid("diffuse::nn::Linear::forward", "x.shape", shape_string(x.dimensions()),
                                  "[N, " + std::to_string(in_) + "]");
        }
        x_ = x;
        Tensor2<T> y(x.dimension(0), out_);
        matrix(y).noalias() = matrix(x) * weights().transpose();  // y = x W^T
        matrix(y).rowwise() += bias.value().matrix().transpose();  // + b
        return y;
    }

    /// dy: [N, out] -> dx: [N, in]; dW += dy^T x, db += sum_n dy.
    Tensor2<T> backward(const Tensor2<T>& dy) {
        if (dy.dimension(0) != x_.dimension(0) || dy.dimension(1) != out_) {
            detail::throw_invalid("diffuse::nn::Linear::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "[" + std::to_string(x_.dimension(0)) + ", " + std::to_string(out_) + "]");
        }
        Map<RowMatrix>(weight.grad(), out_, in_).noalias() += matrix(dy).transpose() * matrix(x_);
        Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias.grad(), out_) += matrix(dy).colwise().sum();
        Tensor2<T> dx(x_.dimension(0), in_);
        matrix(dx).noalias() = matrix(dy) * weights();  // dx = dy W
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
        bias.visit(join_name(prefix, "bias"), fn);
    }

    Parameter<T> weight;  // [out, in]
    Parameter<T> bias;    // [out]

  private:
    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    template <class M>
    using Map = Eigen::Map<M>;
    static Map<RowMatrix> matrix(Tensor2<T>& t) { return {t.data(), t.dimension(0), t.dimension(1)}; }
    static Map<const RowMatrix> matrix(const Tensor2<T>& t) { return {t.data(), t.dimension(0), t.dimension(1)}; }
    Map<const RowMatrix> weights() const { return {weight.data(), out_, in_}; }

    Index in_ = 0, out_ = 0;
    Tensor2<T> x_;  // the forward input, [N, in]
};

}  // namespace diffuse::nn
