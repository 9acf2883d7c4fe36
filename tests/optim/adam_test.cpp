// Adam and AdamW: steps against the update rule evaluated in long double; state keyed by name.

#include <diffuse/nn/linear.hpp>
#include <diffuse/optim/adam.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

TEST_CASE("Adam's updates follow Kingma and Ba's rule with bias correction, AdamW's decay decoupled", "[optim][adam]") {
    for (const double wd : {0.0, 0.1}) {
        diffuse::Generator gen(1);
        diffuse::nn::Linear<double> layer(3, 2, gen);
        diffuse::optim::AdamOptions options;
        options.lr = 1e-2;
        options.weight_decay = wd;
        diffuse::optim::Adam<double> adam(options);
        using LD = long double;
        const diffuse::Index size = layer.weight.size();
        std::vector<LD> w(layer.weight.data(), layer.weight.data() + size), m(size, 0), v(size, 0);
        for (int step = 1; step <= 3; ++step) {
            for (diffuse::Index i = 0; i < size; ++i) layer.weight.grad()[i] = std::sin(1.0 + i * step);
            adam.step(layer);
            for (diffuse::Index i = 0; i < size; ++i) {
                const LD g = std::sin(1.0 + i * step);
                m[i] = 0.9L * m[i] + 0.1L * g;
                v[i] = 0.999L * v[i] + 0.001L * g * g;
                const LD mhat = m[i] / (1 - std::pow(0.9L, step)), vhat = v[i] / (1 - std::pow(0.999L, step));
                w[i] = w[i] * (1 - 1e-2L * wd) - 1e-2L * mhat / (std::sqrt(vhat) + 1e-8L);
                REQUIRE(layer.weight.data()[i] == Approx(static_cast<double>(w[i])).epsilon(1e-12));
            }
        }
        REQUIRE(adam.step_count() == 3);
        REQUIRE(adam.state().count("weight") == 1);
        REQUIRE(adam.state().count("bias") == 1);
    }
}

TEST_CASE("Adam rejects impossible settings", "[optim][adam][errors]") {
    diffuse::optim::AdamOptions options;
    options.beta2 = 1.0;
    REQUIRE_THROWS_WITH(diffuse::optim::Adam<float>(options), Catch::Contains("beta2 = 1"));
}
