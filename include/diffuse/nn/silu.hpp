#pragma once
// SiLU (swish): y = x sigmoid(x);  dy/dx = sigmoid(x) (1 + x (1 - sigmoid(x))).

#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <Eigen/Core>

#include <cassert>
#include <string>

namespace diffuse::nn {

template <class T = float>
class SiLU {
  public:
    /// x: [N, ...] -> y: same shape.
    template <int Rank>
    Tensor<T, Rank> forward(const Tensor<T, Rank>& x) {
        x_.resize(x.size());
        Tensor<T, Rank> y(x.dimensions());
        chunks(x.size(), [&](Index at, Index n) {
            const auto v = in(x.data() + at, n);
            out(x_.data() + at, n) = v;
            out(y.data() + at, n) = v / (T(1) + (-v).exp());  // Eigen's vectorised exp
        });
        return y;
    }

    /// dy -> dx, same shape.
    template <int Rank>
    Tensor<T, Rank> backward(const Tensor<T, Rank>& dy) {
        assert(dy.size() == x_.size());
        Tensor<T, Rank> dx(dy.dimensions());
        chunks(dy.size(), [&](Index at, Index n) {
            const auto v = in(x_.data() + at, n);
            const Eigen::Array<T, Eigen::Dynamic, 1> s = T(1) / (T(1) + (-v).exp());  // sigmoid(x)
            out(dx.data() + at, n) = in(dy.data() + at, n) * s * (T(1) + v * (T(1) - s));
        });
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}

  private:
    using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
    static Eigen::Map<const Array> in(const T* p, Index n) { return {p, n}; }
    static Eigen::Map<Array> out(T* p, Index n) { return {p, n}; }

    // fn(offset, count) over cache-sized pieces of [0, n), shared by the threads.
    template <class Fn>
    static void chunks(Index n, Fn&& fn) {
        constexpr Index piece = 4096;
        parallel_for((n + piece - 1) / piece, 4, [&](Index begin, Index end) {
            for (Index c = begin; c < end; ++c) fn(c * piece, std::min(piece, n - c * piece));
        });
    }

    Table<T> x_;  // the forward input, flat
};

}  // namespace diffuse::nn
