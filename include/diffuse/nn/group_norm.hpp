#pragma once
// GroupNorm (Wu & He 2018) on [N, C, H, W]: the C channels form G groups; each (sample, group) is
// normalised over its C/G x H x W values, then scaled and shifted per channel:
//     xhat = (x - mu) / sqrt(var + eps),   u = gamma_c xhat + beta_c   (var: biased, as in PyTorch)
// With Activation::silu the layer is GroupNorm followed by SiLU, y = u sigmoid(u), fused: the
// DDPM ResBlock never uses one without the other, and fused, the activation costs no pass of its own.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/parameter.hpp"

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace diffuse::nn {

/// What follows the normalisation in the same pass.
enum class Activation { none, silu };

template <class T = float>
class GroupNorm {
  public:
    GroupNorm() = default;
    /// gamma = 1, beta = 0, as PyTorch initialises them.
    GroupNorm(Index groups, Index channels, double eps = 1e-5, Activation activation = Activation::none)
        : weight({channels}), bias({channels}), groups_(groups), channels_(channels), eps_(eps),
          activation_(activation) {
        constexpr const char* where = "diffuse::nn::GroupNorm";
        if (groups < 1) detail::throw_invalid(where, "groups", groups, "at least 1");
        if (channels < 1 || channels % groups != 0) {
            detail::throw_invalid(where, "channels", channels,
                                  "a positive multiple of groups = " + std::to_string(groups));
        }
        if (!(eps > 0.0)) detail::throw_invalid(where, "eps", eps, "eps > 0");
        weight.value().setOnes();
    }

    Index groups() const { return groups_; }
    Index channels() const { return channels_; }
    Activation activation() const { return activation_; }

    /// Training mode (the default) keeps the input for backward (a temporary input is moved there, not
    /// copied); evaluation mode keeps nothing.
    void set_training(bool training) { training_ = training; }
    bool training() const { return training_; }
    /// The input the last training-mode forward kept, [N, C, H, W] (empty in evaluation mode): a
    /// layer around this one may read it instead of keeping a copy of its own.
    const Tensor4<T>& input() const { return borrowed_ ? *borrowed_ : x_; }

    /// x: [N, C, H, W] -> y: same shape.
    Tensor4<T> forward(const Tensor4<T>& x) {
        check_input(x);
        Tensor4<T> y(x.dimensions());
        x_ = training_ ? x : Tensor4<T>();
        borrowed_ = nullptr;
        normalise(x, y);
        return y;
    }
    Tensor4<T> forward(Tensor4<T>&& x) {
        check_input(x);
        borrowed_ = nullptr;
        if (!training_) {
            x_ = Tensor4<T>();
            normalise(x, x);  // in place
            return std::move(x);
        }
        x_ = std::move(x);
        Tensor4<T> y(x_.dimensions());
        normalise(x_, y);
        return y;
    }
    /// x borrowed, not copied: backward reads the caller's tensor, which must stay alive and
    /// unchanged until then (a U-Net's skip tensors, which it keeps anyway).
    Tensor4<T> forward(std::reference_wrapper<const Tensor4<T>> x) {
        check_input(x);
        Tensor4<T> y(x.get().dimensions());
        x_ = Tensor4<T>();
        borrowed_ = training_ ? &x.get() : nullptr;
        normalise(x, y);
        return y;
    }

    /// dy -> dx. Through the activation first (SiLU: du = dy s (1 + u (1 - s)), s = sigmoid(u)), then,
    /// with g = gamma du over one group of m values:
    ///   dx = rstd (g - mean(g) - xhat mean(g xhat)),  dgamma_c += sum du xhat,  dbeta_c += sum du.
    Tensor4<T> backward(const Tensor4<T>& dy) {
        const Tensor4<T>& x_kept = input();
        if (x_kept.size() == 0) detail::throw_no_forward_cache("diffuse::nn::GroupNorm::backward");
        if (dy.dimensions() != x_kept.dimensions()) {
            detail::throw_invalid("diffuse::nn::GroupNorm::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward input's shape " + shape_string(x_kept.dimensions()));
        }
        const Index n = dy.dimension(0), hw = dy.dimension(2) * dy.dimension(3), cg = channels_ / groups_;
        Tensor4<T> dx(dy.dimensions());
        // Per-sample parameter gradients, reduced in sample order afterwards (same bits, any threads).
        std::vector<T> partial(static_cast<std::size_t>(n * channels_ * 2), T(0));  // [N, dgamma|dbeta]
        parallel_for(n * groups_, 1, [&](Index begin, Index end) {
            Array du(cg * hw);  // one group's gradient of u, [C/G * H * W]
            for (Index ng = begin; ng < end; ++ng) {
                const Index at = ng * cg * hw, count = cg * hw, c0 = (ng % groups_) * cg;
                const auto x = Eigen::Map<const Array>(x_kept.data() + at, count);
                const auto d = Eigen::Map<const Array>(dy.data() + at, count);
                T* dgamma = partial.data() + (ng / groups_) * channels_ * 2;
                T* dbeta = dgamma + channels_;
                const T mean = mean_[ng], rstd = rstd_[ng];
                // g = gamma du: sum g = sum_c gamma_c dbeta_c, sum g xhat = sum_c gamma_c dgamma_c.
                double sum_g = 0.0, sum_gx = 0.0;
                for (Index c = 0; c < cg; ++c) {
                    const auto xs = x.segment(c * hw, hw), ds = d.segment(c * hw, hw);
                    auto dus = du.segment(c * hw, hw);
                    const auto [a, b] = affine(ng, c0 + c);
                    const auto u = xs * a + b;  // the forward's u, the same bits
                    if (activation_ == Activation::silu) {
                        dus = u.logistic();                            // s = sigmoid(u), as the forward
                        dus = ds * dus * (T(1) + u * (T(1) - dus));   // du
                    } else {
                        dus = ds;
                    }
                    dgamma[c0 + c] = (dus * ((xs - mean) * rstd)).sum();
                    dbeta[c0 + c] = dus.sum();
                    sum_g += static_cast<double>(weight.data()[c0 + c]) * dbeta[c0 + c];
                    sum_gx += static_cast<double>(weight.data()[c0 + c]) * dgamma[c0 + c];
                }
                const T mean_g = static_cast<T>(sum_g / count), mean_gx = static_cast<T>(sum_gx / count);
                for (Index c = 0; c < cg; ++c) {  // dx = rstd (g - mean(g) - xhat mean(g xhat))
                    const T w = weight.data()[c0 + c];
                    Eigen::Map<Array>(dx.data() + at + c * hw, hw) =
                        rstd * (w * du.segment(c * hw, hw) - mean_g - (x.segment(c * hw, hw) - mean) * rstd * mean_gx);
                }
            }
        });
        for (Index s = 0; s < n; ++s) {
            for (Index c = 0; c < channels_; ++c) {
                weight.grad()[c] += partial[(s * channels_ * 2) + c];
                bias.grad()[c] += partial[(s * channels_ * 2) + channels_ + c];
            }
        }
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
        bias.visit(join_name(prefix, "bias"), fn);
    }

    Parameter<T> weight;  // gamma, [C]
    Parameter<T> bias;    // beta, [C]

  private:
    using Array = Eigen::Array<T, Eigen::Dynamic, 1>;

    void check_input(const Tensor4<T>& x) const {
        if (x.dimension(1) != channels_ || x.dimension(0) < 1) {
            detail::throw_invalid("diffuse::nn::GroupNorm::forward", "x.shape", shape_string(x.dimensions()),
                                  std::to_string(channels_) + " channels in dimension 1");
        }
    }

    // u = gamma (x - mu) rstd + beta = a x + b for channel c of group ng: one multiply-add per value.
    std::pair<T, T> affine(Index ng, Index c) const {
        const double a = static_cast<double>(weight.data()[c]) * static_cast<double>(rstd_[ng]);
        return {static_cast<T>(a), static_cast<T>(bias.data()[c] - a * static_cast<double>(mean_[ng]))};
    }

    // y = the activation of u (y may be x itself: a group's statistics are taken before it is overwritten).
    void normalise(const Tensor4<T>& x, Tensor4<T>& y) {
        const Index n = x.dimension(0), hw = x.dimension(2) * x.dimension(3), cg = channels_ / groups_;
        mean_.assign(static_cast<std::size_t>(n * groups_), T(0));
        rstd_.assign(static_cast<std::size_t>(n * groups_), T(0));
        parallel_for(n * groups_, 1, [&](Index begin, Index end) {
            for (Index ng = begin; ng < end; ++ng) {
                const Index at = ng * cg * hw, count = cg * hw;
                const auto v = Eigen::Map<const Array>(x.data() + at, count);
                // Two passes in T over values still in cache: Eigen sums in vector lanes, a tree, so
                // the float error stays near sqrt(log n) ulps, far below the data's own noise.
                const T mean = v.mean();
                const T var = (v - mean).square().mean();
                mean_[ng] = mean;
                rstd_[ng] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var) + eps_));
                const Index c0 = (ng % groups_) * cg;
                for (Index c = 0; c < cg; ++c) {
                    const auto [a, b] = affine(ng, c0 + c);
                    auto out = Eigen::Map<Array>(y.data() + at + c * hw, hw);
                    const auto u = v.segment(c * hw, hw) * a + b;
                    if (activation_ == Activation::silu) {
                        out = u * u.logistic();  // Eigen's vectorised sigmoid
                    } else {
                        out = u;
                    }
                }
            }
        });
    }

    Index groups_ = 1, channels_ = 1;
    double eps_ = 1e-5;
    Activation activation_ = Activation::none;
    bool training_ = true;
    Tensor4<T> x_;          // the forward input, [N, C, H, W], unless borrowed
    const Tensor4<T>* borrowed_ = nullptr;  // the caller's forward input, when borrowed
    std::vector<T> mean_;   // mu, [N, G]
    std::vector<T> rstd_;   // 1 / sqrt(var + eps), [N, G]
};

}  // namespace diffuse::nn
