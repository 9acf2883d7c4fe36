// Training the evaluation classifier: the minibatch order, the learning-rate schedule, a small
// separable problem learnt to full accuracy in a few steps, and bad input.

#include "common/train_classifier.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace eval = examples::eval;

namespace {

// Three classes of 8x8 images on a -1 background with noise: a bright top-left quadrant, a bright
// bottom-right quadrant, or bright even rows. Separable by where the ink is, not by how much.
void synthetic(diffuse::Index n, std::uint64_t seed, diffuse::Tensor4<float>& x, std::vector<int>& y) {
    diffuse::Generator gen(seed);
    x = gen.randn<float, 4>({n, 1, 8, 8});
    y.resize(static_cast<std::size_t>(n));
    for (diffuse::Index s = 0; s < n; ++s) {
        const int label = static_cast<int>(s % 3);
        y[s] = label;
        for (int i = 0; i < 8; ++i)
            for (int j = 0; j < 8; ++j) {
                const bool ink = label == 0 ? (i < 4 && j < 4) : label == 1 ? (i >= 4 && j >= 4) : (i % 2 == 0);
                x(s, 0, i, j) = (ink ? 1.0f : -1.0f) + 0.3f * x(s, 0, i, j);
            }
    }
}

examples::eval::ClassifierConfig trainable_classifier_config() {
    examples::eval::ClassifierConfig c;
    c.image_size = 8;
    c.channels = {8, 8};
    c.groups = 2;
    c.feature_dim = 8;
    c.num_classes = 3;
    return c;
}

}  // namespace

TEST_CASE("A random permutation holds every index exactly once and depends on the seed", "[eval][train_classifier]") {
    diffuse::Generator a(1), b(1), c(2);
    const auto p = eval::random_permutation(100, a);
    std::vector<diffuse::Index> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (diffuse::Index i = 0; i < 100; ++i) REQUIRE(sorted[i] == i);
    REQUIRE(eval::random_permutation(100, b) == p);
    REQUIRE(eval::random_permutation(100, c) != p);
    REQUIRE(eval::random_permutation(100, a) != p);  // the next epoch, another order
}

TEST_CASE("The classifier's learning rate warms up linearly, then decays to zero along a cosine", "[eval][train_classifier]") {
    eval::ClassifierTrainingOptions o;
    o.lr = 1e-3;
    o.warmup_steps = 10;
    const double pi = 3.14159265358979323846;
    REQUIRE(eval::classifier_lr(o, 1, 100) == Approx(1e-4).epsilon(1e-14));
    REQUIRE(eval::classifier_lr(o, 5, 100) == Approx(1e-3 * 0.5 * 0.5 * (1 + std::cos(pi * 4 / 100))).epsilon(1e-14));
    REQUIRE(eval::classifier_lr(o, 51, 100) == Approx(0.5e-3).epsilon(1e-12));
    REQUIRE(eval::classifier_lr(o, 100, 100) == Approx(1e-3 * 0.5 * (1 + std::cos(pi * 99 / 100))).epsilon(1e-12));
    o.cosine_decay = false;
    REQUIRE(eval::classifier_lr(o, 100, 100) == 1e-3);
}

TEST_CASE("The classifier learns a small separable problem to full accuracy in a few steps", "[eval][train_classifier]") {
    diffuse::Tensor4<float> x, x_test;
    std::vector<int> y, y_test;
    synthetic(60, 11, x, y);
    synthetic(30, 12, x_test, y_test);
    examples::eval::Classifier<float> model(trainable_classifier_config(), 13);
    eval::ClassifierTrainingOptions o;
    o.epochs = 8;
    o.batch_size = 10;  // 48 steps
    o.lr = 1e-2;
    o.warmup_steps = 5;
    o.report_every = 1000;
    std::vector<eval::ClassifierTrainingProgress> reports;
    const auto last = eval::train_classifier(model, x, y, o, [&](const auto& p) { reports.push_back(p); });
    REQUIRE(reports.size() == 8);  // one at the end of each epoch
    REQUIRE(last.step == 48);
    REQUIRE(last.total_steps == 48);
    REQUIRE(reports.back().end_of_epoch);
    REQUIRE(reports.back().loss < 0.5 * reports.front().loss);
    REQUIRE(eval::accuracy(model.predict(x_test), y_test) == 1.0);
}

TEST_CASE("Training the classifier rejects labels out of range, a label count that does not match and no epochs", "[eval][train_classifier][errors]") {
    diffuse::Tensor4<float> x;
    std::vector<int> y;
    synthetic(6, 1, x, y);
    examples::eval::Classifier<float> model(trainable_classifier_config());
    std::vector<int> bad = y;
    bad[4] = 3;
    REQUIRE_THROWS_AS(eval::train_classifier(model, x, bad), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(eval::train_classifier(model, x, bad), Catch::Contains("labels[4] = 3") && Catch::Contains("[0, 3)"));
    REQUIRE_THROWS_WITH(eval::train_classifier(model, x, std::vector<int>{0, 1}), Catch::Contains("labels.size() = 2"));
    eval::ClassifierTrainingOptions o;
    o.epochs = 0;
    REQUIRE_THROWS_WITH(eval::train_classifier(model, x, y, o), Catch::Contains("epochs = 0"));
    o = {};
    o.batch_size = 0;
    REQUIRE_THROWS_WITH(eval::train_classifier(model, x, y, o), Catch::Contains("batch_size = 0"));
}
