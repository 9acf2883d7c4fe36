#pragma once
// Training and scoring the evaluation classifier (common/classifier.hpp) on labelled images:
// minibatches in a fresh random order each epoch, softmax cross-entropy, Adam with a linear warm-up
// and a cosine decay to zero over the whole run,
//     lr_s = lr min(1, s / warmup) (1 + cos(pi (s - 1) / S)) / 2,   s = 1 .. S steps.

#include "common/classifier.hpp"
#include "common/classifier_metrics.hpp"

#include <diffuse/core/error.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/nn/cross_entropy.hpp>
#include <diffuse/nn/parameter.hpp>
#include <diffuse/optim/adam.hpp>
#include <diffuse/optim/lr_schedule.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace examples::eval {  // Index, Tensor4, nn, ... as common/classifier.hpp declares them

struct ClassifierTrainingOptions {
    int epochs = 2;
    Index batch_size = 64;
    double lr = 3e-3;             // the peak learning rate
    long warmup_steps = 100;
    bool cosine_decay = true;     // false: constant after the warm-up
    double weight_decay = 0.0;    // AdamW's decoupled decay
    std::uint64_t seed = 0;       // the order of the minibatches
    Index report_every = 100;     // steps between two progress reports (and one at each epoch's end)
};

/// What a progress report says: the loss and accuracy on the training batches since the last report.
struct ClassifierTrainingProgress {
    int epoch = 0;               // 1-based
    long step = 0;               // steps taken so far, over all epochs
    long total_steps = 0;
    double loss = 0.0;           // mean cross-entropy since the last report
    double accuracy = 0.0;       // share of those batches' samples classified right (before each update)
    double lr = 0.0;             // the learning rate of the last step
    double seconds = 0.0;        // since training began
    bool end_of_epoch = false;
};

/// A random order of 0 .. n-1: the indices sorted by a uniform key each, drawn from `generator`.
inline std::vector<Index> random_permutation(Index n, Generator& generator) {
    std::vector<double> keys(static_cast<std::size_t>(n));
    generator.uniform(keys.data(), n);
    std::vector<Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Index{0});
    std::stable_sort(order.begin(), order.end(), [&keys](Index a, Index b) { return keys[a] < keys[b]; });
    return order;
}

/// The learning rate of step s (1-based) of S, under the options' warm-up and cosine decay.
inline double classifier_lr(const ClassifierTrainingOptions& options, long step, long total_steps) {
    double lr = diffuse::optim::warmup_lr(options.lr, step, options.warmup_steps);
    if (options.cosine_decay) {
        const double pi = 3.14159265358979323846;
        lr *= 0.5 * (1.0 + std::cos(pi * static_cast<double>(step - 1) / static_cast<double>(total_steps)));
    }
    return lr;
}

/// Trains `model` on images [N, Cin, H, W] (scaled to [-1, 1]) with labels [N] in [0, K).
/// `on_progress(const ClassifierTrainingProgress&)` is called every report_every steps and at the
/// end of each epoch. Returns the last report.
template <class T, class OnProgress>
ClassifierTrainingProgress train_classifier(Classifier<T>& model, const Tensor4<T>& images,
                                            const std::vector<int>& labels, const ClassifierTrainingOptions& options,
                                            OnProgress&& on_progress) {
    constexpr const char* where = "examples::eval::train_classifier";
    const Index n = images.dimension(0), k = model.config().num_classes;
    if (n < 1) diffuse::detail::throw_invalid(where, "images.shape", diffuse::shape_string(images.dimensions()), "at least one image");
    if (static_cast<Index>(labels.size()) != n) {
        diffuse::detail::throw_invalid(where, "labels.size()", labels.size(), "one label per image, " + std::to_string(n));
    }
    detail::check_classes(where, "labels", labels, k);
    if (options.epochs < 1) diffuse::detail::throw_invalid(where, "epochs", options.epochs, "at least 1");
    if (options.batch_size < 1) diffuse::detail::throw_invalid(where, "batch_size", options.batch_size, "at least 1");
    if (options.report_every < 1) diffuse::detail::throw_invalid(where, "report_every", options.report_every, "at least 1");

    diffuse::optim::AdamOptions adam_options;
    adam_options.lr = options.lr;
    adam_options.weight_decay = options.weight_decay;
    diffuse::optim::Adam<T> adam(adam_options);
    nn::SoftmaxCrossEntropy<T> loss_fn;
    Generator generator(options.seed);

    const Index per_image = images.size() / n;
    const long batches = static_cast<long>((n + options.batch_size - 1) / options.batch_size);
    const long total = batches * options.epochs;
    const auto start = std::chrono::steady_clock::now();
    ClassifierTrainingProgress report;
    report.total_steps = total;
    double loss_sum = 0.0;
    Index seen = 0, correct = 0;
    model.set_training(true);
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
        const std::vector<Index> order = random_permutation(n, generator);
        for (long b = 0; b < batches; ++b) {
            const Index first = static_cast<Index>(b) * options.batch_size;
            const Index count = std::min(options.batch_size, n - first);
            Tensor4<T> x(count, images.dimension(1), images.dimension(2), images.dimension(3));  // [B, C, H, W]
            std::vector<int> y(static_cast<std::size_t>(count));                                 // [B]
            for (Index i = 0; i < count; ++i) {
                const Index src = order[first + i];
                std::copy_n(images.data() + src * per_image, per_image, x.data() + i * per_image);
                y[i] = labels[src];
            }
            nn::zero_grad(model);
            const Tensor2<T> logits = model.forward(x);  // [B, K]
            const T loss = loss_fn.forward(logits, y);
            if (!std::isfinite(static_cast<double>(loss))) {
                throw diffuse::numerical_error(std::string(where) + ": the loss is " + std::to_string(static_cast<double>(loss)) +
                                      " at step " + std::to_string(report.step + 1) + "; try a smaller lr");
            }
            model.backward(loss_fn.backward());
            ++report.step;
            report.lr = classifier_lr(options, report.step, total);
            adam.set_lr(report.lr);
            adam.step(model);

            loss_sum += static_cast<double>(loss) * static_cast<double>(count);
            seen += count;
            for (Index i = 0; i < count; ++i) {
                const T* row = logits.data() + i * k;
                correct += (std::max_element(row, row + k) - row) == y[i] ? 1 : 0;
            }
            const bool end = b + 1 == batches;
            if (end || report.step % options.report_every == 0) {
                report.epoch = epoch;
                report.loss = loss_sum / static_cast<double>(seen);
                report.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
                report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                report.end_of_epoch = end;
                on_progress(report);
                loss_sum = 0.0;
                seen = correct = 0;
            }
        }
    }
    model.set_training(false);
    return report;
}

template <class T>
ClassifierTrainingProgress train_classifier(Classifier<T>& model, const Tensor4<T>& images,
                                            const std::vector<int>& labels,
                                            const ClassifierTrainingOptions& options = {}) {
    return train_classifier(model, images, labels, options, [](const ClassifierTrainingProgress&) {});
}

}  // namespace examples::eval
