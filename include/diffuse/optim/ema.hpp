#pragma once
// An exponential moving average of the weights, keyed by parameter name:
//     shadow = d shadow + (1 - d) w,   d = min(decay, (1 + updates) / (10 + updates))
// The warm-up term (as TensorFlow's ExponentialMovingAverage with num_updates) lets short runs
// benefit: early on the average follows the weights closely. DDPM used decay 0.9999.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/parameter.hpp"

#include <algorithm>
#include <map>
#include <string>

namespace diffuse::optim {

template <class T = float>
class EMA {
  public:
    explicit EMA(double decay = 0.9999, bool warmup = true) : decay_(decay), warmup_(warmup) {
        if (!(decay >= 0.0 && decay <= 1.0)) detail::throw_invalid("diffuse::optim::EMA", "decay", decay, "a value in [0, 1]");
    }

    double decay() const { return decay_; }
    bool warmup() const { return warmup_; }
    long updates() const { return updates_; }
    void set_updates(long updates) { updates_ = updates; }
    std::map<std::string, Table<T>>& shadow() { return shadow_; }
    const std::map<std::string, Table<T>>& shadow() const { return shadow_; }

    /// The decay the next update uses.
    double current_decay() const {
        return warmup_ ? std::min(decay_, (1.0 + updates_) / (10.0 + updates_)) : decay_;
    }

    /// Folds the module's current weights into the average (the first call copies them).
    template <class Module>
    void update(Module& module) {
        const T d = static_cast<T>(current_decay());
        module.for_each_parameter("", [&](nn::ParameterView<T> p) {
            const Eigen::Map<const Table<T>> w(p.value, p.size);
            auto it = shadow_.find(p.name);
            if (it == shadow_.end()) {
                shadow_.emplace(p.name, Table<T>(w));
            } else {
                it->second = d * it->second + (T(1) - d) * w;
            }
        });
        ++updates_;
    }

    /// Writes the averaged weights into `module` (a copy of the trained one, typically).
    template <class Module>
    void copy_to(Module& module) const {
        module.for_each_parameter("", [&](nn::ParameterView<T> p) {
            const auto it = shadow_.find(p.name);
            if (it == shadow_.end() || it->second.size() != p.size) {
                detail::throw_invalid("diffuse::optim::EMA::copy_to", "parameter", p.name,
                                      "a parameter the average has seen, of the same size");
            }
            std::copy_n(it->second.data(), p.size, p.value);
        });
    }

  private:
    double decay_;
    bool warmup_;
    long updates_ = 0;
    std::map<std::string, Table<T>> shadow_;
};

}  // namespace diffuse::optim
