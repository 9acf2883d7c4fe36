#pragma once
// A finite-difference gradient checker for layers that follow the contract of nn/parameter.hpp,
// usable for your own layers too. Run it in double.
//
// With a random upstream gradient g, the scalar L = <forward(inputs), g> has dL/d(anything) equal to
// what backward(g) yields. Each checked coordinate is compared with the central difference
// (L(v + h) - L(v - h)) / 2h. Parameter gradients are pre-filled with a sentinel before backward,
// so a layer that assigns (=) where it should accumulate (+=), or forgets a gradient, is caught.
// Errors are normwise per tensor: relative ||analytic - numeric|| / max(||analytic||, ||numeric||),
// and absolute ||analytic - numeric||, which judges a gradient that is truly zero (the key bias of an
// attention block, say), where the relative error only measures rounding noise.

#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/parameter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace diffuse::testing {

struct GradientCheckOptions {
    double step = 1e-6;              // h of the central difference
    Index max_coordinates = 64;      // per tensor; larger tensors are checked at a random subset
    std::uint64_t seed = 1234;       // for g and the subsets
    double sentinel = 0.375;         // what parameter gradients hold before backward
};

/// One checked tensor: its name and its normwise errors.
struct GradientError {
    std::string name;
    double relative;
    double absolute;
    Index coordinates;
};

struct GradientCheckReport {
    std::vector<GradientError> tensors;
    /// True when every tensor's relative error is at most `relative`, or its absolute error at most
    /// `absolute`.
    bool passed(double relative = 1e-6, double absolute = 1e-8) const {
        for (const auto& t : tensors) {
            if (!(t.relative <= relative || t.absolute <= absolute)) return false;
        }
        return !tensors.empty();
    }
    /// "name: error" per line, for a failure message.
    std::string summary() const {
        std::ostringstream s;
        s.precision(3);
        for (const auto& t : tensors) {
            s << t.name << ": relative " << std::scientific << t.relative << ", absolute " << t.absolute
              << " over " << t.coordinates << " coordinates\n";
        }
        return s.str();
    }
};

/// An input of the function under test: a buffer the checker perturbs, and where backward leaves
/// its analytic gradient (read after backward returns).
struct GradientInput {
    std::string name;
    double* value;
    Index size;
    std::function<const double*()> gradient;
};

/// The general form. `forward()` runs the module on its current inputs and returns its output
/// tensor (any rank); `backward(g)` runs the backward pass for upstream gradient g, leaving each
/// input's gradient where GradientInput::gradient points. Every parameter of `module` is checked.
template <class Module, class Forward, class Backward>
GradientCheckReport check_gradients(Module& module, std::vector<GradientInput> inputs, Forward forward,
                                    Backward backward, const GradientCheckOptions& options = {}) {
    Generator generator(options.seed);
    auto y = forward();
    auto g = y;
    generator.normal(g.data(), g.size());
    const auto loss = [&] {
        const auto out = forward();
        double sum = 0.0;
        for (Index i = 0; i < out.size(); ++i) sum += out.data()[i] * g.data()[i];
        return sum;
    };

    // Analytic gradients, with the sentinel under the parameters' accumulation.
    module.for_each_parameter("", [&](auto p) { std::fill(p.grad, p.grad + p.size, options.sentinel); });
    forward();
    backward(g);
    struct Probe {
        std::string name;
        double* value;
        Index size;
        std::vector<double> analytic;
    };
    std::vector<Probe> probes;
    for (auto& in : inputs) {
        const double* grad = in.gradient();
        probes.push_back({in.name, in.value, in.size, std::vector<double>(grad, grad + in.size)});
    }
    module.for_each_parameter("", [&](auto p) {
        std::vector<double> analytic(p.grad, p.grad + p.size);
        for (double& a : analytic) a -= options.sentinel;
        probes.push_back({p.name, p.value, p.size, std::move(analytic)});
    });

    GradientCheckReport report;
    for (auto& probe : probes) {
        std::vector<Index> coords(static_cast<std::size_t>(probe.size));
        for (Index i = 0; i < probe.size; ++i) coords[i] = i;
        if (probe.size > options.max_coordinates) {  // a random subset, by a seeded shuffle
            auto picks = generator.randint(options.max_coordinates, 1 << 30);
            for (Index i = 0; i < options.max_coordinates; ++i) {
                std::swap(coords[i], coords[i + picks[i] % (probe.size - i)]);
            }
            coords.resize(static_cast<std::size_t>(options.max_coordinates));
        }
        double diff2 = 0.0, a2 = 0.0, n2 = 0.0;
        for (const Index i : coords) {
            const double saved = probe.value[i];
            probe.value[i] = saved + options.step;
            const double plus = loss();
            probe.value[i] = saved - options.step;
            const double minus = loss();
            probe.value[i] = saved;
            const double numeric = (plus - minus) / (2.0 * options.step);
            const double analytic = probe.analytic[i];
            diff2 += (analytic - numeric) * (analytic - numeric);
            a2 += analytic * analytic;
            n2 += numeric * numeric;
        }
        const double scale = std::max({std::sqrt(a2), std::sqrt(n2), 1e-300});
        report.tensors.push_back({probe.name, std::sqrt(diff2) / scale, std::sqrt(diff2),
                                  static_cast<Index>(coords.size())});
    }
    return report;
}

/// The common case: a layer with Tensor forward(const Tensor&) and Tensor backward(const Tensor&).
template <class Layer, int Rank>
GradientCheckReport check_layer(Layer& layer, Tensor<double, Rank> x, const GradientCheckOptions& options = {}) {
    Tensor<double, Rank> dx;
    return check_gradients(
        layer, {{"input", x.data(), x.size(), [&dx] { return static_cast<const double*>(dx.data()); }}},
        [&] { return layer.forward(x); }, [&](const auto& g) { dx = layer.backward(g); }, options);
}

}  // namespace diffuse::testing
