#pragma once
// Embedding: a learned vector per class index, y[n] = W[label[n]]; the backward pass adds each row of
// dy into the row of W it came from.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/parameter.hpp"

#include <array>
#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class Embedding {
  public:
    Embedding() = default;
    /// Rows drawn from N(0, 1), as PyTorch initialises nn.Embedding.
    Embedding(Index num_embeddings, Index dim, Generator& init)
        : weight({num_embeddings, dim}), count_(num_embeddings), dim_(dim) {
        if (num_embeddings < 1) detail::throw_invalid("diffuse::nn::Embedding", "num_embeddings", num_embeddings, "at least 1");
        if (dim < 1) detail::throw_invalid("diffuse::nn::Embedding", "dim", dim, "at least 1");
        init.normal(weight.data(), weight.size());
    }

    Index num_embeddings() const { return count_; }

    /// labels: [N], each in [0, num_embeddings) -> [N, dim].
    Tensor2<T> forward(const std::vector<int>& labels) {
        for (std::size_t i = 0; i < labels.size(); ++i) {
            if (labels[i] < 0 || labels[i] >= count_) {
                detail::throw_invalid("diffuse::nn::Embedding::forward", "labels[" + std::to_string(i) + "]",
                                      labels[i], "an index in [0, " + std::to_string(count_) + ")");
            }
        }
        labels_ = labels;
        Tensor2<T> y(static_cast<Index>(labels.size()), dim_);
        for (Index n = 0; n < y.dimension(0); ++n) {
            std::copy_n(weight.data() + labels[n] * dim_, dim_, y.data() + n * dim_);
        }
        return y;
    }

    /// dW[label[n]] += dy[n]; labels have no gradient. dy: [N, dim], N the labels of the last forward pass.
    void backward(const Tensor2<T>& dy) {
        const std::array<Index, 2> want = {static_cast<Index>(labels_.size()), dim_};  // [N, dim]
        if (dy.dimension(0) != want[0] || dy.dimension(1) != want[1]) {
            detail::throw_invalid("diffuse::nn::Embedding::backward", "dy.shape", shape_string(dy.dimensions()),
                                  "[N, dim] = " + shape_string(want) + ", N the labels of the last forward pass");
        }
        for (Index n = 0; n < dy.dimension(0); ++n) {
            T* row = weight.grad() + labels_[n] * dim_;
            for (Index i = 0; i < dim_; ++i) row[i] += dy(n, i);
        }
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        weight.visit(join_name(prefix, "weight"), fn);
    }

    Parameter<T> weight;  // [num_embeddings, dim]

  private:
    Index count_ = 0, dim_ = 0;
    std::vector<int> labels_;  // [N]
};

}  // namespace diffuse::nn
