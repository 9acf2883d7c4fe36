#pragma once
// The layer contract, stated once for every layer in nn/ and models/:
//  - forward(x) returns y and caches exactly what backward needs;
//  - backward(dy) returns dx and ACCUMULATES (+=) every parameter gradient; zero_grad() is explicit.
//    Four layers differ, as their inputs do: Embedding and TimeMLP return nothing (labels and
//    timesteps have no gradient), ResBlock returns (dx, dtemb) (it has two inputs), and
//    SoftmaxCrossEntropy's backward takes the loss's upstream gradient and returns dlogits;
//  - parameters have PyTorch-style dotted names ("down.0.res.1.conv1.weight") and are visited by name
//    with for_each_parameter(prefix, fn); optimizer state, EMA and checkpoints key on those names.
// The scalar type T is a template parameter so that gradient checks run the same code in double.

#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

/// A parameter as the visitors see it: its name, PyTorch shape, and its value and gradient buffers.
template <class T>
struct ParameterView {
    const std::string& name;
    const std::vector<Index>& shape;
    T* value;  // [size]
    T* grad;   // [size]
    Index size;
};

/// A learnable tensor and its gradient, stored flat with a PyTorch shape.
template <class T>
class Parameter {
  public:
    Parameter() = default;
    explicit Parameter(std::vector<Index> shape) : shape_(std::move(shape)) {
        Index size = 1;
        for (const Index d : shape_) size *= d;
        value_.resize(size);
        grad_.resize(size);
        value_.setZero();
        grad_.setZero();
    }

    const std::vector<Index>& shape() const { return shape_; }
    Index size() const { return value_.size(); }
    T* data() { return value_.data(); }
    const T* data() const { return value_.data(); }
    T* grad() { return grad_.data(); }
    const T* grad() const { return grad_.data(); }
    /// Value and gradient as flat Eigen arrays, [size].
    Table<T>& value() { return value_; }
    const Table<T>& value() const { return value_; }
    Table<T>& gradient() { return grad_; }
    const Table<T>& gradient() const { return grad_; }

    /// U(-bound, bound), drawn from `generator` (PyTorch's default init uses bound = 1/sqrt(fan_in)).
    void init_uniform(Generator& generator, double bound) {
        generator.uniform(value_.data(), value_.size());
        value_ = (value_ * T(2) - T(1)) * static_cast<T>(bound);
    }

    template <class Fn>
    void visit(const std::string& name, Fn&& fn) {
        fn(ParameterView<T>{name, shape_, value_.data(), grad_.data(), value_.size()});
    }

  private:
    std::vector<Index> shape_;
    Table<T> value_;  // [size]
    Table<T> grad_;   // [size]
};

/// "prefix.name", or "name" at the top.
inline std::string join_name(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
}

/// Sets every gradient of `module` to zero.
template <class Module>
void zero_grad(Module& module) {
    module.for_each_parameter("", [](auto p) { std::fill(p.grad, p.grad + p.size, 0); });
}

/// The number of scalar parameters of `module`.
template <class Module>
Index parameter_count(Module& module) {
    Index count = 0;
    module.for_each_parameter("", [&count](auto p) { count += p.size; });
    return count;
}

}  // namespace diffuse::nn
