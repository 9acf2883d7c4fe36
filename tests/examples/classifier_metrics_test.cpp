// Accuracy, the confusion matrix, per-class accuracy and the class agreement of conditional samples,
// on hand-made predictions, and inputs that do not fit together.

#include "common/classifier_metrics.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

namespace eval = examples::eval;

TEST_CASE("Accuracy is the share of predictions equal to their labels", "[eval][metrics]") {
    REQUIRE(eval::accuracy({0, 1, 2, 2}, {0, 1, 1, 2}) == 0.75);
    REQUIRE(eval::accuracy({3}, {3}) == 1.0);
    REQUIRE(eval::accuracy({1, 1}, {0, 0}) == 0.0);
}

TEST_CASE("The confusion matrix counts each label and prediction pair", "[eval][metrics]") {
    // labels:    0 0 0 1 1 2
    // predicted: 0 1 0 1 2 2
    const auto m = eval::confusion_matrix({0, 1, 0, 1, 2, 2}, {0, 0, 0, 1, 1, 2}, 3);
    REQUIRE(m.num_classes == 3);
    const std::vector<diffuse::Index> expected = {2, 1, 0,   // label 0
                                                  0, 1, 1,   // label 1
                                                  0, 0, 1};  // label 2
    REQUIRE(m.counts == expected);
    REQUIRE(m(1, 2) == 1);
    REQUIRE(m.label_count(0) == 3);
    REQUIRE(m.total() == 6);
    REQUIRE(m.correct() == 4);
}

TEST_CASE("Per-class accuracy is each class's recall and NaN for a class with no sample", "[eval][metrics]") {
    const auto acc = eval::per_class_accuracy({0, 1, 0, 1, 2, 2}, {0, 0, 0, 1, 1, 2}, 4);
    REQUIRE(acc.size() == 4);
    REQUIRE(acc[0] == Approx(2.0 / 3.0));
    REQUIRE(acc[1] == 0.5);
    REQUIRE(acc[2] == 1.0);
    REQUIRE(std::isnan(acc[3]));
}

TEST_CASE("Class agreement is the share of conditional samples classified as the class they were asked for", "[eval][metrics]") {
    const std::vector<int> requested = {0, 0, 1, 1, 2, 2, 3, 3};
    const std::vector<int> predicted = {0, 6, 1, 1, 2, 0, 3, 3};
    REQUIRE(eval::sample_class_agreement(predicted, requested) == 0.75);
}

TEST_CASE("The metrics reject mismatched sizes, empty inputs and classes out of range", "[eval][metrics][errors]") {
    REQUIRE_THROWS_AS(eval::accuracy({0, 1}, {0}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(eval::accuracy({0, 1}, {0}), Catch::Contains("predicted.size() = 2") && Catch::Contains("1"));
    REQUIRE_THROWS_WITH(eval::accuracy({}, {}), Catch::Contains("labels.size() = 0"));
    REQUIRE_THROWS_WITH(eval::sample_class_agreement({}, {}), Catch::Contains("requested.size() = 0"));
    REQUIRE_THROWS_WITH(eval::confusion_matrix({0, 3}, {0, 1}, 3), Catch::Contains("predicted[1] = 3") && Catch::Contains("[0, 3)"));
    REQUIRE_THROWS_WITH(eval::confusion_matrix({0, 1}, {-1, 1}, 3), Catch::Contains("labels[0] = -1"));
    REQUIRE_THROWS_WITH(eval::confusion_matrix({0}, {0}, 0), Catch::Contains("num_classes = 0"));
}
