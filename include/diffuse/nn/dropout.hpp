#pragma once
// Dropout (Srivastava et al. 2014), inverted: in training each value is kept with probability 1 - p
// and scaled by 1 / (1 - p); in evaluation it is the identity. The mask comes from a Generator that
// the caller passes, so the same (seed, offset) gives the same mask: a training step is reproducible
// and a gradient check sees one fixed function.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class Dropout {
  public:
    explicit Dropout(double p = 0.0) : p_(p) {
        if (!(p >= 0.0 && p < 1.0)) detail::throw_invalid("diffuse::nn::Dropout", "p", p, "a probability in [0, 1)");
    }

    double p() const { return p_; }
    bool training() const { return training_; }
    void set_training(bool training) { training_ = training; }

    /// x: [N, ...] -> same shape, in place (a temporary is not copied). Draws from a copy of `stream`
    /// (the caller's generator is not advanced).
    template <int Rank>
    Tensor<T, Rank> forward(Tensor<T, Rank> x, Generator stream) {
        active_ = training_ && p_ > 0.0;
        if (!active_) return x;
        shape_.resize(static_cast<std::size_t>(Rank));
        for (std::size_t i = 0; i < shape_.size(); ++i) shape_[i] = x.dimension(static_cast<Index>(i));
        mask_.resize(x.size());
        stream.uniform(mask_.data(), mask_.size());
        const T keep_scale = static_cast<T>(1.0 / (1.0 - p_)), p = static_cast<T>(p_);
        parallel_for(x.size(), parallel_grain, [&](Index first, Index last) {  // mask = 0 where u < p, else 1 / (1 - p); x *= mask
            auto mask = mask_.segment(first, last - first);
            mask = (mask < p).select(T(0), Table<T>::Constant(last - first, keep_scale));
            Eigen::Map<Table<T>>(x.data() + first, last - first) *= mask;
        });
        return x;
    }

    /// dy -> dx = dy * mask; dy is shaped like the last forward pass's input when that pass dropped
    /// values (training mode, p > 0), and anything otherwise (the identity).
    template <int Rank>
    Tensor<T, Rank> backward(Tensor<T, Rank> dy) {
        if (!active_) return dy;
        if (!has_shape(dy, shape_)) {
            detail::throw_invalid("diffuse::nn::Dropout::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "the shape of the forward pass's input, " + shape_string(shape_));
        }
        parallel_for(dy.size(), parallel_grain, [&](Index first, Index last) {
            Eigen::Map<Table<T>>(dy.data() + first, last - first) *= mask_.segment(first, last - first);
        });
        return dy;
    }

    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}

  private:
    static constexpr Index parallel_grain = Index{1} << 15;  // values per thread at least, as add_inplace
    double p_;
    bool training_ = true;
    bool active_ = false;
    Table<T> mask_;             // 0 or 1 / (1 - p), flat like x
    std::vector<Index> shape_;  // x's shape
};

}  // namespace diffuse::nn
