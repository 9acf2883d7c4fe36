#pragma once
// One formula applied entry by entry to tensors of one shape: the sampler updates
// (x_{t-1} = a x0_hat + b eps_hat + sigma z and the like) are written as the formula itself,
//     x = elementwise([=](T x0, T eps, T z) { return a * x0 + b * eps + sigma * z; }, x0_hat, eps_hat, noise);
// and compiled to one loop over the entries.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"

#include <string>
#include <type_traits>

namespace diffuse {
namespace detail {

template <class X, class Y>
void check_operand_shape(const X& x, const Y& y) {
    if (y.dimensions() != x.dimensions()) {
        throw_invalid("diffuse::elementwise", "an operand's shape", shape_string(y.dimensions()),
                      "the first operand's " + shape_string(x.dimensions()));
    }
}

}  // namespace detail

/// out[k] = f(x[k], ys[k]...) for every entry k. x and every y: tensors (or TensorMaps) of x's
/// shape; out is a new tensor of that shape.
template <class F, class X, class... Ys>
Tensor<std::remove_const_t<typename X::Scalar>, static_cast<int>(X::NumIndices)> elementwise(F&& f, const X& x,
                                                                                          const Ys&... ys) {
    (detail::check_operand_shape(x, ys), ...);
    Tensor<std::remove_const_t<typename X::Scalar>, static_cast<int>(X::NumIndices)> out(x.dimensions());
    for (Index k = 0; k < out.size(); ++k) out.data()[k] = f(x.data()[k], ys.data()[k]...);
    return out;
}

}  // namespace diffuse
