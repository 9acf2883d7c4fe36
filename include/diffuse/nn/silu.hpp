#pragma once
// SiLU (swish): y = x sigmoid(x);  dy/dx = sigmoid(x) (1 + x (1 - sigmoid(x))).

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/detail/scratch.hpp"

#include <Eigen/Core>

#include <cstddef>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class SiLU {
  public:
    /// Training mode (the default) caches the input for backward; evaluation mode caches nothing.
    void set_training(bool training) { training_ = training; }

    /// x: [N, ...] -> y: same shape.
    template <int Rank>
    Tensor<T, Rank> forward(const Tensor<T, Rank>& x) {
        x_.resize(training_ ? x.size() : 0);
        shape_.resize(training_ ? static_cast<std::size_t>(Rank) : 0);
        for (std::size_t i = 0; i < shape_.size(); ++i) shape_[i] = x.dimension(static_cast<Index>(i));
        Tensor<T, Rank> y(x.dimensions());
        chunks(x.size(), [&](Index at, Index n) {
            const auto v = in(x.data() + at, n);
            if (training_) out(x_.data() + at, n) = v;
            out(y.data() + at, n) = v / (T(1) + (-v).exp());  // Eigen's vectorised exp
        });
        return y;
    }

    /// dy, shaped like the last (training-mode) forward pass's input -> dx, same shape.
    template <int Rank>
    Tensor<T, Rank> backward(const Tensor<T, Rank>& dy) {
        constexpr const char* where = "diffuse::nn::SiLU::backward";
        if (x_.size() == 0 && dy.size() > 0) detail::throw_no_forward_cache(where);
        if ((dy.size() > 0 || x_.size() > 0) && !has_shape(dy, shape_)) {
            detail::throw_invalid(where, "dy.shape", shape_string(dy.dimensions()),
                                  "the shape of the forward pass's input, " + shape_string(shape_));
        }
        Tensor<T, Rank> dx(dy.dimensions());
        chunks(dy.size(), [&](Index at, Index n) {
            const auto v = in(x_.data() + at, n);
            T* s = detail::scratch<T, detail::Scratch::silu_sigmoid>(static_cast<std::size_t>(n));  // sigmoid(x), [n]
            out(s, n) = T(1) / (T(1) + (-v).exp());
            out(dx.data() + at, n) = in(dy.data() + at, n) * in(s, n) * (T(1) + v * (T(1) - in(s, n)));
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

    Table<T> x_;                // the forward input, flat
    std::vector<Index> shape_;  // its shape (training mode; empty in evaluation)
    bool training_ = true;
};

}  // namespace diffuse::nn
