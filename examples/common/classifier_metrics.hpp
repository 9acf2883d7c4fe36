#pragma once
// Scores of a classifier's predictions against labels: the confusion matrix, the accuracy and the
// per-class accuracy (recall). On class-conditional samples, the labels are the classes the samples
// were generated for, and the accuracy is the share of samples that the classifier takes for the class
// they were asked to be (sample_class_agreement).

#include <diffuse/core/error.hpp>
#include <diffuse/core/tensor.hpp>

#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace examples::eval {

using diffuse::Index;

/// counts(true class, predicted class) over K classes, [K, K].
struct ConfusionMatrix {
    Index num_classes = 0;
    std::vector<Index> counts;  // [K, K], row-major: row = label, column = prediction

    Index operator()(Index label, Index predicted) const { return counts[label * num_classes + predicted]; }
    /// The number of samples labelled `label`.
    Index label_count(Index label) const {
        Index sum = 0;
        for (Index p = 0; p < num_classes; ++p) sum += (*this)(label, p);
        return sum;
    }
    Index total() const {
        Index sum = 0;
        for (const Index c : counts) sum += c;
        return sum;
    }
    Index correct() const {
        Index sum = 0;
        for (Index k = 0; k < num_classes; ++k) sum += (*this)(k, k);
        return sum;
    }
};

namespace detail {

inline void check_classes(std::string_view where, std::string_view name, const std::vector<int>& classes,
                          Index num_classes) {
    for (std::size_t i = 0; i < classes.size(); ++i) {
        if (classes[i] < 0 || classes[i] >= num_classes) {
            diffuse::detail::throw_invalid(where, std::string(name) + "[" + std::to_string(i) + "]", classes[i],
                                           "a class in [0, " + std::to_string(num_classes) + ")");
        }
    }
}

inline void check_pairs(std::string_view where, const std::vector<int>& predicted, const std::vector<int>& labels,
                        std::string_view labels_name = "labels") {
    if (labels.empty()) {
        diffuse::detail::throw_invalid(where, std::string(labels_name) + ".size()", 0, "at least one sample");
    }
    if (predicted.size() != labels.size()) {
        diffuse::detail::throw_invalid(where, "predicted.size()", predicted.size(),
                                       "one prediction per entry of " + std::string(labels_name) + ", " +
                                           std::to_string(labels.size()));
    }
}

}  // namespace detail

/// The confusion matrix of `predicted` against `labels` ([N] each, classes in [0, num_classes)).
inline ConfusionMatrix confusion_matrix(const std::vector<int>& predicted, const std::vector<int>& labels,
                                        Index num_classes) {
    constexpr const char* where = "examples::eval::confusion_matrix";
    if (num_classes < 1) diffuse::detail::throw_invalid(where, "num_classes", num_classes, "at least 1");
    detail::check_pairs(where, predicted, labels);
    detail::check_classes(where, "labels", labels, num_classes);
    detail::check_classes(where, "predicted", predicted, num_classes);
    ConfusionMatrix m{num_classes, std::vector<Index>(static_cast<std::size_t>(num_classes * num_classes), 0)};
    for (std::size_t i = 0; i < labels.size(); ++i) ++m.counts[labels[i] * num_classes + predicted[i]];
    return m;
}

/// The share of samples whose prediction equals their label, in [0, 1].
inline double accuracy(const std::vector<int>& predicted, const std::vector<int>& labels) {
    detail::check_pairs("examples::eval::accuracy", predicted, labels);
    Index correct = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i] ? 1 : 0;
    return static_cast<double>(correct) / static_cast<double>(labels.size());
}

/// Accuracy within each class (its recall): correct / samples labelled k, [K]. A class with no
/// sample has no accuracy: its entry is NaN, never a made-up 0 or 1.
inline std::vector<double> per_class_accuracy(const ConfusionMatrix& m) {
    std::vector<double> out(static_cast<std::size_t>(m.num_classes));
    for (Index k = 0; k < m.num_classes; ++k) {
        const Index n = m.label_count(k);
        out[k] = n == 0 ? std::numeric_limits<double>::quiet_NaN()
                        : static_cast<double>(m(k, k)) / static_cast<double>(n);
    }
    return out;
}

inline std::vector<double> per_class_accuracy(const std::vector<int>& predicted, const std::vector<int>& labels,
                                              Index num_classes) {
    return per_class_accuracy(confusion_matrix(predicted, labels, num_classes));
}

/// For class-conditional samples: the share of samples that the classifier assigns to the class they
/// were generated for. `requested`: the class each sample was conditioned on, [N]; `predicted`: the
/// classifier's class for it, [N].
inline double sample_class_agreement(const std::vector<int>& predicted, const std::vector<int>& requested) {
    detail::check_pairs("examples::eval::sample_class_agreement", predicted, requested, "requested");
    return accuracy(predicted, requested);
}

}  // namespace examples::eval
