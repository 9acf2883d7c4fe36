#pragma once
// Softmax cross-entropy on logits [N, K] and integer labels [N], averaged over the batch:
//     L = (1/N) sum_n [ logsumexp_k z[n, k] - z[n, y_n] ],
//     logsumexp_k z_k = m + log sum_k exp(z_k - m),  m = max_k z_k   (no exp overflows: every z_k - m <= 0)
// and its gradient dL/dz[n, k] = (softmax(z[n])_k - [k == y_n]) / N.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

/// log softmax(z) row by row: z[n, k] - logsumexp_k z[n, k], [N, K] -> [N, K].
template <class T>
Tensor2<T> log_softmax(const Tensor2<T>& logits) {
    const Index n = logits.dimension(0), k = logits.dimension(1);
    if (n < 1 || k < 1) {
        detail::throw_invalid("diffuse::nn::log_softmax", "logits.shape", shape_string(logits.dimensions()),
                              "a non-empty [N, K]");
    }
    using Row = Eigen::Array<T, Eigen::Dynamic, 1>;  // one row of logits, [K]
    Tensor2<T> out(n, k);
    for (Index r = 0; r < n; ++r) {
        const Eigen::Map<const Row> z(logits.data() + r * k, k);
        const T m = z.maxCoeff();
        const T lse = m + std::log((z - m).exp().sum());  // logsumexp, the largest term is exp(0) = 1
        Eigen::Map<Row>(out.data() + r * k, k) = z - lse;
    }
    return out;
}

template <class T = float>
class SoftmaxCrossEntropy {
  public:
    /// logits: [N, K]; labels: [N], each a class in [0, K). Returns the mean loss over the batch.
    T forward(const Tensor2<T>& logits, const std::vector<int>& labels) {
        constexpr const char* where = "diffuse::nn::SoftmaxCrossEntropy::forward";
        const Index n = logits.dimension(0), k = logits.dimension(1);
        if (n < 1 || k < 1) {
            detail::throw_invalid(where, "logits.shape", shape_string(logits.dimensions()), "a non-empty [N, K]");
        }
        if (static_cast<Index>(labels.size()) != n) {
            detail::throw_invalid(where, "labels.size()", labels.size(),
                                  "one label per row of logits, " + std::to_string(n));
        }
        for (std::size_t i = 0; i < labels.size(); ++i) {
            if (labels[i] < 0 || labels[i] >= k) {
                detail::throw_invalid(where, "labels[" + std::to_string(i) + "]", labels[i],
                                      "a class in [0, " + std::to_string(k) + "), K = logits.dimension(1)");
            }
        }
        labels_ = labels;
        probabilities_ = log_softmax(logits);  // [N, K], log p for now
        double sum = 0.0;
        for (Index r = 0; r < n; ++r) sum -= static_cast<double>(probabilities_(r, labels[r]));  // -log p[y]
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> p(probabilities_.data(), probabilities_.size());
        p = p.exp();  // softmax, what backward needs
        return static_cast<T>(sum / static_cast<double>(n));
    }

    /// dloss: the upstream gradient of the scalar loss (1 when L is the objective) -> dlogits [N, K]:
    ///   dL/dz[n, k] = dloss (p[n, k] - [k == y_n]) / N.
    Tensor2<T> backward(T dloss = T(1)) {
        const Index n = probabilities_.dimension(0), k = probabilities_.dimension(1);
        if (n == 0) {
            detail::throw_invalid("diffuse::nn::SoftmaxCrossEntropy::backward", "forward calls", 0,
                                  "a forward pass before backward");
        }
        Tensor2<T> dlogits = probabilities_;
        for (Index r = 0; r < n; ++r) dlogits(r, labels_[r]) -= T(1);  // p - onehot(y)
        const T scale = dloss / static_cast<T>(n);
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(dlogits.data(), n * k) *= scale;
        return dlogits;
    }

    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}

  private:
    Tensor2<T> probabilities_;  // softmax(logits), [N, K]
    std::vector<int> labels_;   // [N]
};

}  // namespace diffuse::nn
