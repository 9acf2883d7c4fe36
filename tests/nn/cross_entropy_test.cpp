// Softmax cross-entropy: the loss against log-sum-exp evaluated in long double, finite at logits far
// beyond exp's range, its gradient by finite differences and in closed form, and bad labels.

#include "../support/layers.hpp"

#include <diffuse/nn/cross_entropy.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

namespace {

// The loss as a layer for the checker: logits [N, K] -> [1], the label set fixed.
struct CrossEntropyLayer {
    std::vector<int> labels;
    diffuse::nn::SoftmaxCrossEntropy<double> loss;
    diffuse::Tensor1<double> forward(const diffuse::Tensor2<double>& logits) {
        diffuse::Tensor1<double> y(1);
        y(0) = loss.forward(logits, labels);
        return y;
    }
    diffuse::Tensor2<double> backward(const diffuse::Tensor1<double>& dy) { return loss.backward(dy(0)); }
    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}
};

// (1/N) sum_n log sum_k exp(z[n, k]) - z[n, y_n], in long double, straight from the definition.
long double reference_loss(const diffuse::Tensor2<double>& z, const std::vector<int>& labels) {
    long double total = 0;
    for (int n = 0; n < z.dimension(0); ++n) {
        long double sum = 0;
        for (int k = 0; k < z.dimension(1); ++k) sum += std::exp(static_cast<long double>(z(n, k)));
        total += std::log(sum) - z(n, labels[n]);
    }
    return total / z.dimension(0);
}

}  // namespace

TEST_CASE("Cross-entropy is the mean of log-sum-exp minus the label's logit, as in long double", "[nn][cross_entropy]") {
    diffuse::Generator gen(71);
    auto z = gen.randn<double, 2>({5, 7});
    z = z * 3.0;
    const std::vector<int> labels = {0, 6, 3, 3, 1};
    diffuse::nn::SoftmaxCrossEntropy<double> loss;
    REQUIRE(loss.forward(z, labels) == Approx(static_cast<double>(reference_loss(z, labels))).epsilon(1e-14));
    diffuse::nn::SoftmaxCrossEntropy<float> loss_f;
    const diffuse::Tensor2<float> zf = z.cast<float>();
    REQUIRE(loss_f.forward(zf, labels) == Approx(static_cast<double>(reference_loss(z, labels))).epsilon(1e-6));
}

TEST_CASE("Cross-entropy of uniform logits is log K", "[nn][cross_entropy]") {
    diffuse::Tensor2<double> z(3, 10);
    z.setConstant(2.5);
    diffuse::nn::SoftmaxCrossEntropy<double> loss;
    REQUIRE(loss.forward(z, {0, 4, 9}) == Approx(std::log(10.0)).epsilon(1e-15));
}

TEST_CASE("Cross-entropy stays finite and exact for logits far beyond the range of exp", "[nn][cross_entropy]") {
    // exp(1000) overflows a double, exp(-1000) underflows: a naive softmax gives inf / inf.
    diffuse::Tensor2<float> z(2, 3);
    z.setValues({{1000.0f, -1000.0f, 0.0f}, {1000.0f, 999.0f, -50.0f}});
    diffuse::nn::SoftmaxCrossEntropy<float> loss;
    // row 0, label 1: 1000 - (-1000) = 2000 (the other terms are below float's rounding);
    // row 1, label 0: log(1 + e^-1 + e^-1050) = log(1 + 1/e)
    const double expected = (2000.0 + std::log1p(std::exp(-1.0))) / 2.0;
    const float l = loss.forward(z, {1, 0});
    REQUIRE(std::isfinite(l));
    REQUIRE(l == Approx(expected).epsilon(1e-6));
    const auto d = loss.backward();
    for (int i = 0; i < 6; ++i) REQUIRE(std::isfinite(d.data()[i]));
    REQUIRE(d(0, 0) == Approx(0.5f));   // (p - 1[k = y]) / N with p = 1 at the largest logit
    REQUIRE(d(0, 1) == Approx(-0.5f));
}

TEST_CASE("Cross-entropy's gradient is softmax minus the one-hot label, over N", "[nn][cross_entropy]") {
    diffuse::Generator gen(72);
    const auto z = gen.randn<double, 2>({4, 3});
    const std::vector<int> labels = {2, 0, 1, 2};
    diffuse::nn::SoftmaxCrossEntropy<double> loss;
    loss.forward(z, labels);
    const auto d = loss.backward(2.0);
    for (int n = 0; n < 4; ++n) {
        long double sum = 0;
        for (int k = 0; k < 3; ++k) sum += std::exp(static_cast<long double>(z(n, k)));
        for (int k = 0; k < 3; ++k) {
            const long double p = std::exp(static_cast<long double>(z(n, k))) / sum;
            const long double expected = 2.0L * (p - (k == labels[n] ? 1 : 0)) / 4;
            REQUIRE(d(n, k) == Approx(static_cast<double>(expected)).epsilon(1e-14).margin(1e-16));
        }
    }
}

TEST_CASE("Cross-entropy's backward pass matches finite differences", "[nn][cross_entropy][gradient]") {
    diffuse::Generator gen(73);
    CrossEntropyLayer layer;
    layer.labels = {1, 4, 0};
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(layer, gen.randn<double, 2>({3, 5})));
}

TEST_CASE("log_softmax rows exponentiate to probabilities that sum to one", "[nn][cross_entropy]") {
    diffuse::Generator gen(74);
    auto z = gen.randn<double, 2>({3, 6});
    z = z * 20.0;
    const auto lp = diffuse::nn::log_softmax(z);
    for (int n = 0; n < 3; ++n) {
        long double sum = 0;
        for (int k = 0; k < 6; ++k) {
            REQUIRE(lp(n, k) <= 0.0);
            sum += std::exp(static_cast<long double>(lp(n, k)));
        }
        REQUIRE(static_cast<double>(sum) == Approx(1.0).epsilon(1e-14));
    }
}

TEST_CASE("Cross-entropy rejects a label out of range and a label count that does not match", "[nn][cross_entropy][errors]") {
    diffuse::Tensor2<float> z(2, 10);
    z.setZero();
    diffuse::nn::SoftmaxCrossEntropy<float> loss;
    REQUIRE_THROWS_AS(loss.forward(z, {0, 10}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(loss.forward(z, {0, 10}), Catch::Contains("labels[1] = 10") && Catch::Contains("[0, 10)"));
    REQUIRE_THROWS_WITH(loss.forward(z, {-1, 3}), Catch::Contains("labels[0] = -1"));
    REQUIRE_THROWS_WITH(loss.forward(z, {0, 1, 2}), Catch::Contains("labels.size() = 3") && Catch::Contains("2"));
    REQUIRE_THROWS_WITH(loss.forward(diffuse::Tensor2<float>(0, 10), {}), Catch::Contains("logits.shape = [0, 10]"));
    diffuse::nn::SoftmaxCrossEntropy<float> fresh;
    REQUIRE_THROWS_WITH(fresh.backward(), Catch::Contains("forward pass before backward"));
}
