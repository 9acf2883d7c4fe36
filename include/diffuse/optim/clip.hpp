#pragma once
// Gradient-norm clipping: if ||g|| (over every parameter) exceeds max_norm, scale all gradients by
// max_norm / ||g||. Returns the norm before clipping (what a training log shows).

#include "diffuse/core/error.hpp"
#include "diffuse/nn/parameter.hpp"

#include <cmath>

namespace diffuse::optim {

/// The L2 norm of all of module's parameter gradients together, accumulated in double.
template <class Module>
double grad_norm(Module& module) {
    double sum = 0.0;
    module.for_each_parameter("", [&](auto p) {
        for (Index i = 0; i < p.size; ++i) sum += static_cast<double>(p.grad[i]) * p.grad[i];
    });
    return std::sqrt(sum);
}

/// Scales the gradients so that their norm is at most max_norm; returns the norm before.
template <class Module>
double clip_grad_norm(Module& module, double max_norm) {
    if (!(max_norm > 0.0)) detail::throw_invalid("diffuse::optim::clip_grad_norm", "max_norm", max_norm, "max_norm > 0");
    const double norm = grad_norm(module);
    if (norm > max_norm) {
        const double scale = max_norm / (norm + 1e-6);
        module.for_each_parameter("", [&](auto p) {
            using T = std::remove_pointer_t<decltype(p.grad)>;
            for (Index i = 0; i < p.size; ++i) p.grad[i] *= static_cast<T>(scale);
        });
    }
    return norm;
}

}  // namespace diffuse::optim
