#pragma once
// Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), with per-parameter state keyed by the
// parameter's name, so it survives a rebuilt model and goes into a checkpoint by name.
//     m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,
//     w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)      [AdamW first: w -= lr wd w]
// Defaults are DDPM's: lr 2e-4, b1 0.9, b2 0.999, eps 1e-8.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/parameter.hpp"

#include <cmath>
#include <map>
#include <string>

namespace diffuse::optim {

struct AdamOptions {
    double lr = 2e-4;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    double weight_decay = 0.0;
};

template <class T = float>
class Adam {
  public:
    /// One parameter's moments, [size] each.
    struct State {
        Table<T> m, v;
    };

    explicit Adam(AdamOptions options = {}) : options_(options) {
        constexpr const char* where = "diffuse::optim::Adam";
        if (!(options.lr >= 0.0)) detail::throw_invalid(where, "lr", options.lr, "lr >= 0");
        if (!(options.beta1 >= 0.0 && options.beta1 < 1.0)) detail::throw_invalid(where, "beta1", options.beta1, "a value in [0, 1)");
        if (!(options.beta2 >= 0.0 && options.beta2 < 1.0)) detail::throw_invalid(where, "beta2", options.beta2, "a value in [0, 1)");
        if (!(options.eps > 0.0)) detail::throw_invalid(where, "eps", options.eps, "eps > 0");
        if (!(options.weight_decay >= 0.0)) detail::throw_invalid(where, "weight_decay", options.weight_decay, ">= 0");
    }

    const AdamOptions& options() const { return options_; }
    /// The learning rate of the next step (a schedule sets it before each step).
    void set_lr(double lr) { options_.lr = lr; }
    /// Steps taken so far, t.
    long step_count() const { return steps_; }
    void set_step_count(long steps) { steps_ = steps; }
    std::map<std::string, State>& state() { return state_; }
    const std::map<std::string, State>& state() const { return state_; }

    /// One update of every parameter of `module` from its accumulated gradient.
    template <class Module>
    void step(Module& module) {
        ++steps_;
        const double c1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
        const double c2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
        const T b1 = static_cast<T>(options_.beta1), b2 = static_cast<T>(options_.beta2);
        // lr / (1 - b1^t) and sqrt(1 - b2^t) folded into two scalars:
        // w -= lr_t m / (sqrt(v) + eps_t),  lr_t = lr sqrt(c2) / c1,  eps_t = eps sqrt(c2)
        const T lr_t = static_cast<T>(options_.lr * std::sqrt(c2) / c1);
        const T eps_t = static_cast<T>(options_.eps * std::sqrt(c2));
        const T decay = static_cast<T>(1.0 - options_.lr * options_.weight_decay);
        module.for_each_parameter("", [&](nn::ParameterView<T> p) {
            State& s = state_[p.name];
            if (s.m.size() != p.size) {
                s.m = Table<T>::Zero(p.size);
                s.v = Table<T>::Zero(p.size);
            }
            Eigen::Map<Table<T>> w(p.value, p.size);
            const Eigen::Map<const Table<T>> g(p.grad, p.size);
            s.m = b1 * s.m + (T(1) - b1) * g;
            s.v = b2 * s.v + (T(1) - b2) * g.square();
            if (options_.weight_decay > 0.0) w *= decay;
            w -= lr_t * s.m / (s.v.sqrt() + eps_t);
        });
    }

  private:
    AdamOptions options_;
    long steps_ = 0;
    std::map<std::string, State> state_;
};

}  // namespace diffuse::optim
