#pragma once
// The transformer's feed-forward with a GEGLU (Shazeer 2020), as LDM's FeedForward(glu=True):
//     [a, g] = proj(x)  (one Linear to 2 * inner features, split in halves),  h = a * GELU(g),  y = out(h)
// GELU is the exact one, GELU(u) = u Phi(u) with Phi the standard normal CDF, as PyTorch's default;
// GELU'(u) = Phi(u) + u phi(u). Parameter names as LDM's: net.0.proj, net.2 (no dropout here: LDM's
// SpatialTransformer uses none by default).
// Phi(u) = (1 + erf(u / sqrt 2)) / 2 comes from Eigen's vectorised erf (for float within 4e-7 of the
// exact erf, as PyTorch's float GELU also evaluates erf in float); the forward pass keeps Phi(g) for
// the backward pass, which adds phi(g) from a vectorised exp.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"

#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>
#include <string>

namespace diffuse::nn {

template <class T = float>
class FeedForward {
  public:
    FeedForward() = default;
    /// dim -> inner = mult * dim (GEGLU) -> dim
    FeedForward(Index dim, Index mult, Generator& init) : proj(dim, 2 * mult * dim, init), out(mult * dim, dim, init), inner_(mult * dim) {
        if (mult < 1) detail::throw_invalid("diffuse::nn::FeedForward", "mult", mult, "at least 1");
    }

    Index inner_features() const { return inner_; }

    /// x: [N, L, D] -> [N, L, D]
    Tensor3<T> forward(const Tensor3<T>& x) {
        p_ = proj.forward(x);  // [N, L, 2 inner]
        const Index rows = p_.size() / (2 * inner_), m = inner_;
        cdf_ = Tensor2<T>(rows, m);                         // Phi(g), [rows, inner]
        Tensor3<T> h(x.dimension(0), x.dimension(1), m);  // [N, L, inner]
        parallel_for(rows, 16, [&](Index first, Index last) {
            for (Index r = first; r < last; ++r) {
                const ConstRow a(p_.data() + r * 2 * m, m), g(p_.data() + r * 2 * m + m, m);
                Row phi(cdf_.data() + r * m, m);
                phi = T(0.5) * (T(1) + (g * static_cast<T>(sqrt1_2)).erf());
                Row(h.data() + r * m, m) = a * g * phi;  // a GELU(g)
            }
        });
        return out.forward(h);
    }

    /// dy: [N, L, D] -> dx: [N, L, D]
    Tensor3<T> backward(const Tensor3<T>& dy) {
        const Tensor3<T> dh = out.backward(dy);  // [N, L, inner]
        const Index rows = p_.size() / (2 * inner_), m = inner_;
        Tensor3<T> dp(p_.dimensions());  // [N, L, 2 inner]
        parallel_for(rows, 16, [&](Index first, Index last) {
            for (Index r = first; r < last; ++r) {
                const ConstRow a(p_.data() + r * 2 * m, m), g(p_.data() + r * 2 * m + m, m);
                const ConstRow phi(cdf_.data() + r * m, m), d(dh.data() + r * m, m);
                Row(dp.data() + r * 2 * m, m) = d * g * phi;  // da = dh GELU(g)
                // dg = dh a GELU'(g) = dh a (Phi(g) + g phi(g)), phi(g) = exp(-g^2 / 2) / sqrt(2 pi)
                Row(dp.data() + r * 2 * m + m, m) =
                    d * a * (phi + g * (T(-0.5) * g.square()).exp() * static_cast<T>(inv_sqrt_2pi));
            }
        });
        return proj.backward(dp);
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        proj.for_each_parameter(join_name(prefix, "net.0.proj"), fn);
        out.for_each_parameter(join_name(prefix, "net.2"), fn);
    }

    Linear<T> proj;  // [2 inner, D]: the value half, then the gate half
    Linear<T> out;   // [D, inner]

    /// GELU and its derivative of one value, in double (the reference the vectorised passes are
    /// tested against).
    static T gelu(T u) { return u * normal_cdf(u); }
    static T gelu_derivative(T u) {
        return normal_cdf(u) + u * static_cast<T>(inv_sqrt_2pi * std::exp(-0.5 * static_cast<double>(u) * u));
    }

  private:
    static constexpr double sqrt1_2 = 0.70710678118654752440, inv_sqrt_2pi = 0.39894228040143267794;
    using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
    using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
    static T normal_cdf(T u) { return static_cast<T>(0.5 * std::erfc(-static_cast<double>(u) * sqrt1_2)); }

    Index inner_ = 0;
    Tensor3<T> p_;    // proj's output, [N, L, 2 inner]
    Tensor2<T> cdf_;  // Phi of its gate half, [N * L, inner]
};

}  // namespace diffuse::nn
