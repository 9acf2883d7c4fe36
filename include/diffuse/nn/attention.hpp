#pragma once
// Self-attention over spatial positions, as in DDPM's AttnBlock (Ho et al. 2020, after Wang et al.
// 2018's non-local block), with heads:
//     h = GroupNorm(x);  q, k, v = 1x1 convs of h;  per head (d = C / heads channels) and sample,
//     A = softmax_j(q_i . k_j / sqrt(d)),  o_i = sum_j A_ij v_j;  y = x + proj_out(o)

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/parameter.hpp"

#include <Eigen/Core>

#include <cmath>
#include <functional>
#include <string>

namespace diffuse::nn {

template <class T = float>
class AttentionBlock {
  public:
    AttentionBlock() = default;
    AttentionBlock(Index channels, Index heads, Index groups, Generator& init)
        : norm(groups, channels), q(channels, channels, 1, 1, init), k(channels, channels, 1, 1, init),
          v(channels, channels, 1, 1, init), proj_out(channels, channels, 1, 1, init), heads_(heads) {
        if (heads < 1 || channels % heads != 0) {
            detail::throw_invalid("diffuse::nn::AttentionBlock", "heads", heads,
                                  "a divisor of channels = " + std::to_string(channels));
        }
    }

    Index heads() const { return heads_; }
    /// Training caches the activations for backward; evaluation caches only what the forward needs.
    void set_training(bool training) {
        norm.set_training(training), q.set_training(training), k.set_training(training);
        v.set_training(training), proj_out.set_training(training);
        training_ = training;
    }

    /// x: [N, C, H, W] -> y: same shape.
    Tensor4<T> forward(const Tensor4<T>& x) {
        h_ = norm.forward(x);
        q_ = q.forward(std::cref(h_));  // q, k and v borrow h_ for backward: one tensor kept, not three copies
        k_ = k.forward(std::cref(h_));
        v_ = v.forward(std::cref(h_));
        if (!training_) h_ = Tensor4<T>();
        const Index n = x.dimension(0), c = x.dimension(1), p = x.dimension(2) * x.dimension(3);
        const Index d = c / heads_;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
        attention_ = Tensor4<T>(n, heads_, p, p);
        Tensor4<T> o(x.dimensions());
        parallel_for(n * heads_, 1, [&](Index begin, Index end) {
            for (Index nh = begin; nh < end; ++nh) {
                const Index at = nh * d * p;  // head nh's [d, P] block of a [N, C, P] tensor
                const auto qh = cmap(q_.data() + at, d, p), kh = cmap(k_.data() + at, d, p);
                const auto vh = cmap(v_.data() + at, d, p);
                auto a = map(attention_.data() + nh * p * p, p, p);
                a.noalias() = (qh.transpose() * kh) * scale;  // S = Q^T K / sqrt(d)
                for (Index i = 0; i < p; ++i) {               // A = softmax over each row
                    auto row = a.row(i).array();
                    row = (row - row.maxCoeff()).exp();
                    row /= row.sum();
                }
                map(o.data() + at, d, p).noalias() = vh * a.transpose();  // O = V A^T
            }
        });
        return proj_out.forward(std::move(o), nullptr, &x);  // + the residual
    }

    /// dy -> dx. With dO from proj_out:  dA = dO^T V,  dV = dO A,  dS = A * (dA - rowsum(dA * A)),
    /// dQ = K dS^T / sqrt(d),  dK = Q dS / sqrt(d); then back through q, k, v and the norm, plus dy.
    Tensor4<T> backward(const Tensor4<T>& dy) {
        const Tensor4<T> d_o = proj_out.backward(dy);
        const Index n = dy.dimension(0), c = dy.dimension(1), p = dy.dimension(2) * dy.dimension(3);
        const Index d = c / heads_;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
        Tensor4<T> dq(dy.dimensions()), dk(dy.dimensions()), dv(dy.dimensions());
        parallel_for(n * heads_, 1, [&](Index begin, Index end) {
            Matrix da(p, p);
            for (Index nh = begin; nh < end; ++nh) {
                const Index at = nh * d * p;
                const auto qh = cmap(q_.data() + at, d, p), kh = cmap(k_.data() + at, d, p);
                const auto vh = cmap(v_.data() + at, d, p), doh = cmap(d_o.data() + at, d, p);
                const auto a = cmap(attention_.data() + nh * p * p, p, p);
                da.noalias() = doh.transpose() * vh;                      // dA = dO^T V
                map(dv.data() + at, d, p).noalias() = doh * a;             // dV = dO A
                const auto row_dot = (da.array() * a.array()).rowwise().sum().eval();
                da = (a.array() * (da.array().colwise() - row_dot)).matrix() * scale;  // dS / sqrt(d)
                map(dq.data() + at, d, p).noalias() = kh * da.transpose();  // dQ = K dS^T / sqrt(d)
                map(dk.data() + at, d, p).noalias() = qh * da;              // dK = Q dS / sqrt(d)
            }
        });
        Tensor4<T> dh = q.backward(dq);
        add_inplace(dh, k.backward(dk));
        add_inplace(dh, v.backward(dv));
        Tensor4<T> dx = norm.backward(dh);
        add_inplace(dx, dy);  // the residual
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        norm.for_each_parameter(join_name(prefix, "norm"), fn);
        q.for_each_parameter(join_name(prefix, "q"), fn);
        k.for_each_parameter(join_name(prefix, "k"), fn);
        v.for_each_parameter(join_name(prefix, "v"), fn);
        proj_out.for_each_parameter(join_name(prefix, "proj_out"), fn);
    }

    GroupNorm<T> norm;
    Conv2d<T> q, k, v, proj_out;

  private:
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    static Eigen::Map<Matrix> map(T* p, Index rows, Index cols) { return {p, rows, cols}; }
    static Eigen::Map<const Matrix> cmap(const T* p, Index rows, Index cols) { return {p, rows, cols}; }

    Index heads_ = 1;
    bool training_ = true;
    Tensor4<T> h_;             // norm(x), [N, C, H, W]: the input q, k and v read in backward
    Tensor4<T> q_, k_, v_;     // [N, C, H, W] each
    Tensor4<T> attention_;     // A, [N, heads, P, P]
};

}  // namespace diffuse::nn
