#pragma once
// GroupNorm (Wu & He 2018) on [N, C, H, W]: the C channels form G groups; each (sample, group) is
// normalised over its C/G x H x W values, then scaled and shifted per channel:
//     xhat = (x - mu) / sqrt(var + eps),   y = gamma_c xhat + beta_c   (var: biased, as in PyTorch)

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/parameter.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class GroupNorm {
  public:
    GroupNorm() = default;
    /// gamma = 1, beta = 0, as PyTorch initialises them.
    GroupNorm(Index groups, Index channels, double eps = 1e-5)
        : weight({channels}), bias({channels}), groups_(groups), channels_(channels), eps_(eps) {
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

    /// Training mode (the default) caches xhat for backward; evaluation mode caches nothing.
    void set_training(bool training) { training_ = training; }

    /// x: [N, C, H, W] -> y: same shape.
    Tensor4<T> forward(const Tensor4<T>& x) {
        if (x.dimension(1) != channels_ || x.dimension(0) < 1) {
            detail::throw_invalid("diffuse::nn::GroupNorm::forward", "x.shape", shape_string(x.dimensions()),
                                  std::to_string(channels_) + " channels in dimension 1");
        }
        const Index n = x.dimension(0), hw = x.dimension(2) * x.dimension(3), cg = channels_ / groups_;
        xhat_ = training_ ? Tensor4<T>(x.dimensions()) : Tensor4<T>();
        rstd_.assign(static_cast<std::size_t>(n * groups_), T(0));
        Tensor4<T> y(x.dimensions());
        parallel_for(n * groups_, 1, [&](Index begin, Index end) {
            for (Index ng = begin; ng < end; ++ng) {
                const Index at = ng * cg * hw, count = cg * hw;
                const auto v = Eigen::Map<const Array>(x.data() + at, count);
                const double mean = v.template cast<double>().mean();
                const double var = (v.template cast<double>() - mean).square().mean();
                const double rstd = 1.0 / std::sqrt(var + eps_);
                rstd_[ng] = static_cast<T>(rstd);
                if (training_) {
                    Eigen::Map<Array>(xhat_.data() + at, count) = (v - static_cast<T>(mean)) * static_cast<T>(rstd);
                }
                // y = gamma (x - mu) rstd + beta = a x + b per channel, one multiply-add per value
                const Index c0 = (ng % groups_) * cg;
                for (Index c = 0; c < cg; ++c) {
                    const double a = weight.data()[c0 + c] * rstd;
                    const T b = static_cast<T>(bias.data()[c0 + c] - a * mean);
                    Eigen::Map<Array>(y.data() + at + c * hw, hw) = v.segment(c * hw, hw) * static_cast<T>(a) + b;
                }
            }
        });
        return y;
    }

    /// dy -> dx;  with g = gamma dy over one group of m values:
    ///   dx = rstd (g - mean(g) - xhat mean(g xhat)),  dgamma_c += sum dy xhat,  dbeta_c += sum dy.
    Tensor4<T> backward(const Tensor4<T>& dy) {
        if (xhat_.size() == 0) detail::throw_no_forward_cache("diffuse::nn::GroupNorm::backward");
        if (dy.dimensions() != xhat_.dimensions()) {
            detail::throw_invalid("diffuse::nn::GroupNorm::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward input's shape " + shape_string(xhat_.dimensions()));
        }
        const Index n = dy.dimension(0), hw = dy.dimension(2) * dy.dimension(3), cg = channels_ / groups_;
        Tensor4<T> dx(dy.dimensions());
        // Per-sample parameter gradients, reduced in sample order afterwards (same bits, any threads).
        std::vector<T> partial(static_cast<std::size_t>(n * channels_ * 2), T(0));  // [N, dgamma|dbeta]
        parallel_for(n * groups_, 1, [&](Index begin, Index end) {
            Array g(cg * hw);
            for (Index ng = begin; ng < end; ++ng) {
                const Index at = ng * cg * hw, count = cg * hw, c0 = (ng % groups_) * cg;
                const auto d = Eigen::Map<const Array>(dy.data() + at, count);
                const auto xh = Eigen::Map<const Array>(xhat_.data() + at, count);
                T* dgamma = partial.data() + (ng / groups_) * channels_ * 2;
                T* dbeta = dgamma + channels_;
                for (Index c = 0; c < cg; ++c) {
                    g.segment(c * hw, hw) = d.segment(c * hw, hw) * weight.data()[c0 + c];
                    dgamma[c0 + c] = (d.segment(c * hw, hw) * xh.segment(c * hw, hw)).sum();
                    dbeta[c0 + c] = d.segment(c * hw, hw).sum();
                }
                const T mean_g = g.mean(), mean_gx = (g * xh).mean();
                Eigen::Map<Array>(dx.data() + at, count) = rstd_[ng] * (g - mean_g - xh * mean_gx);
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
    Index groups_ = 1, channels_ = 1;
    double eps_ = 1e-5;
    bool training_ = true;
    Tensor4<T> xhat_;       // [N, C, H, W]
    std::vector<T> rstd_;   // 1 / sqrt(var + eps), [N, G]
};

}  // namespace diffuse::nn
