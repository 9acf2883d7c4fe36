#pragma once
// LayerNorm (Ba et al. 2016) over the last dimension D of [..., D], a transformer's token features:
//     xhat = (x - mu) / sqrt(var + eps),  y = gamma xhat + beta   (mu, var per token; var biased, as PyTorch)
// Backward, with g = gamma dy per token:  dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/parameter.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class LayerNorm {
  public:
    LayerNorm() = default;
    /// gamma = 1, beta = 0, as PyTorch initialises them.
    explicit LayerNorm(Index features, double eps = 1e-5) : weight({features}), bias({features}), features_(features), eps_(eps) {
        constexpr const char* where = "diffuse::nn::LayerNorm";
        if (features < 1) detail::throw_invalid(where, "features", features, "at least 1");
        if (!(eps > 0.0)) detail::throw_invalid(where, "eps", eps, "eps > 0");
        weight.value().setOnes();
    }

    Index features() const { return features_; }

    /// x: [..., D] -> y: same shape.
    template <int Rank>
    Tensor<T, Rank> forward(const Tensor<T, Rank>& x) {
        if (x.dimension(Rank - 1) != features_ || x.size() == 0) {
            detail::throw_invalid("diffuse::nn::LayerNorm::forward", "x.shape", shape_string(x.dimensions()),
                                  "a non-empty [..., " + std::to_string(features_) + "]");
        }
        const Index rows = x.size() / features_, d = features_;
        xhat_.resize(static_cast<std::size_t>(x.size()));
        rstd_.resize(static_cast<std::size_t>(rows));
        Tensor<T, Rank> y(x.dimensions());
        const T* gamma = weight.data();
        const T* beta = bias.data();
        parallel_for(rows, 64, [&](Index first, Index last) {
            for (Index r = first; r < last; ++r) {
                const T* xr = x.data() + r * d;
                double mean = 0.0, var = 0.0;
                for (Index i = 0; i < d; ++i) mean += xr[i];
                mean /= static_cast<double>(d);
                for (Index i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
                var /= static_cast<double>(d);
                const T rstd = static_cast<T>(1.0 / std::sqrt(var + eps_));
                rstd_[static_cast<std::size_t>(r)] = rstd;
                T* xh = xhat_.data() + r * d;
                T* yr = y.data() + r * d;
                for (Index i = 0; i < d; ++i) {
                    xh[i] = (xr[i] - static_cast<T>(mean)) * rstd;
                    yr[i] = gamma[i] * xh[i] + beta[i];
                }
            }
        });
        return y;
    }

    /// dy -> dx; dgamma += sum dy xhat, dbeta += sum dy over all tokens.
    template <int Rank>
    Tensor<T, Rank> backward(const Tensor<T, Rank>& dy) {
        if (dy.dimension(Rank - 1) != features_ || dy.size() != static_cast<Index>(xhat_.size())) {
            detail::throw_invalid("diffuse::nn::LayerNorm::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the forward input's shape");
        }
        const Index rows = dy.size() / features_, d = features_;
        Tensor<T, Rank> dx(dy.dimensions());
        const T* gamma = weight.data();
        parallel_for(rows, 64, [&](Index first, Index last) {
            for (Index r = first; r < last; ++r) {
                const T* g = dy.data() + r * d;
                const T* xh = xhat_.data() + r * d;
                double mean_g = 0.0, mean_gx = 0.0;
                for (Index i = 0; i < d; ++i) {
                    const double gi = static_cast<double>(gamma[i]) * g[i];
                    mean_g += gi;
                    mean_gx += gi * xh[i];
                }
                mean_g /= static_cast<double>(d);
                mean_gx /= static_cast<double>(d);
                const T rstd = rstd_[static_cast<std::size_t>(r)];
                T* dxr = dx.data() + r * d;
                for (Index i = 0; i < d; ++i) {
                    dxr[i] = (gamma[i] * g[i] - static_cast<T>(mean_g) - xh[i] * static_cast<T>(mean_gx)) * rstd;
                }
            }
        });
        // parameter sums in token order, one thread: the same bits for any thread count
        for (Index r = 0; r < rows; ++r) {
            const T* g = dy.data() + r * d;
            const T* xh = xhat_.data() + r * d;
            for (Index i = 0; i < d; ++i) {
                weight.grad()[i] += g[i] * xh[i];
                bias.grad()[i] += g[i];
            }
        }
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
        bias.visit(join_name(prefix, "bias"), fn);
    }

    Parameter<T> weight;  // gamma, [D]
    Parameter<T> bias;    // beta, [D]

  private:
    Index features_ = 0;
    double eps_ = 1e-5;
    std::vector<T> xhat_;  // [rows * D], the normalised input
    std::vector<T> rstd_;  // [rows], 1 / sqrt(var + eps)
};

}  // namespace diffuse::nn
