#pragma once
// Global average pooling (Lin et al. 2014, "Network in Network"): each channel's feature map
// collapses to its mean, [N, C, H, W] -> [N, C]:
//     y[n, c] = (1 / HW) sum_{i, j} x[n, c, i, j]

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <Eigen/Core>

#include <array>
#include <string>

namespace diffuse::nn {

template <class T = float>
class GlobalAvgPool {
  public:
    /// x: [N, C, H, W] -> y: [N, C].
    Tensor2<T> forward(const Tensor4<T>& x) {
        if (x.dimension(0) < 1 || x.dimension(1) < 1 || x.dimension(2) < 1 || x.dimension(3) < 1) {
            detail::throw_invalid("diffuse::nn::GlobalAvgPool::forward", "x.shape", shape_string(x.dimensions()),
                                  "a non-empty [N, C, H, W]");
        }
        input_dims_ = x.dimensions();
        const Index nc = x.dimension(0) * x.dimension(1), hw = x.dimension(2) * x.dimension(3);
        Tensor2<T> y(x.dimension(0), x.dimension(1));
        // Each row of the [NC, HW] view is one feature map; its mean is y[n, c].
        Eigen::Map<Column>(y.data(), nc) = Eigen::Map<const RowMatrix>(x.data(), nc, hw).rowwise().mean();
        return y;
    }

    /// dy: [N, C] -> dx: [N, C, H, W];  dx[n, c, i, j] = dy[n, c] / HW (every pixel counts equally).
    Tensor4<T> backward(const Tensor2<T>& dy) {
        if (dy.dimension(0) != input_dims_[0] || dy.dimension(1) != input_dims_[1]) {
            detail::throw_invalid("diffuse::nn::GlobalAvgPool::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "[" + std::to_string(input_dims_[0]) + ", " + std::to_string(input_dims_[1]) +
                                      "], the forward output's shape");
        }
        const Index nc = input_dims_[0] * input_dims_[1], hw = input_dims_[2] * input_dims_[3];
        Tensor4<T> dx(input_dims_);
        const T inv_hw = T(1) / static_cast<T>(hw);
        Eigen::Map<RowMatrix>(dx.data(), nc, hw) =
            (Eigen::Map<const Column>(dy.data(), nc) * inv_hw).replicate(1, hw);
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}

  private:
    using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Column = Eigen::Matrix<T, Eigen::Dynamic, 1>;

    std::array<Index, 4> input_dims_{};  // the forward input's [N, C, H, W]
};

}  // namespace diffuse::nn
