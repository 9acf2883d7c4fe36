#pragma once
// Multi-head attention over token sequences, as LDM's CrossAttention (Vaswani et al. 2017):
//     q = x Wq,  k = c Wk,  v = c Wv   (no biases),  per sample and head (d = dim_head features):
//     A = softmax_j(q_i . k_j / sqrt(d)),  o_i = sum_j A_ij v_j,  y = to_out(concat_heads(o))
// with c = x for self-attention and c a context [N, Lc, Dc] (a prompt's token embeddings) for
// cross-attention. A key padding mask keeps prompts of different lengths in one batch: a masked key
// j gets A_ij = 0 (its logit is -infinity), so a padded prompt attends exactly as the unpadded one.
// Backward, with dO per head:  dA = dO V^T,  dV = A^T dO,  dS = A * (dA - rowsum(dA * A)),
//     dQ = dS K / sqrt(d),  dK = dS^T Q / sqrt(d).
// Parameter names as LDM's: to_q, to_k, to_v, to_out.0.

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace diffuse::nn {

/// What a cross-attention's backward gives: the gradients of its two inputs.
template <class T>
struct AttentionGradients {
    Tensor3<T> dx;        // [N, L, D], the queries' input
    Tensor3<T> dcontext;  // [N, Lc, Dc], the context's (empty for self-attention)
};

template <class T = float>
class CrossAttention {
  public:
    CrossAttention() = default;
    /// query_dim: the features of x; context_dim: those of the context (0: self-attention, keys and
    /// values from x).
    CrossAttention(Index query_dim, Index context_dim, Index heads, Index dim_head, Generator& init)
        : to_q(query_dim, heads * dim_head, init, false),
          to_k(context_dim > 0 ? context_dim : query_dim, heads * dim_head, init, false),
          to_v(context_dim > 0 ? context_dim : query_dim, heads * dim_head, init, false),
          to_out(heads * dim_head, query_dim, init), heads_(heads), dim_head_(dim_head), self_(context_dim == 0) {
        constexpr const char* where = "diffuse::nn::CrossAttention";
        if (heads < 1) detail::throw_invalid(where, "heads", heads, "at least 1");
        if (dim_head < 1) detail::throw_invalid(where, "dim_head", dim_head, "at least 1");
        if (context_dim < 0) detail::throw_invalid(where, "context_dim", context_dim, ">= 0 (0: self-attention)");
    }

    Index heads() const { return heads_; }
    Index dim_head() const { return dim_head_; }
    bool self_attention() const { return self_; }

    /// Self-attention: x [N, L, D] -> [N, L, D].
    Tensor3<T> forward(const Tensor3<T>& x) { return forward(x, nullptr, {}); }

    /// Cross-attention: x [N, L, D], context [N, Lc, Dc] with its key mask ([N * Lc] or empty) ->
    /// [N, L, D]. A self-attention layer takes context = nullptr.
    Tensor3<T> forward(const Tensor3<T>& x, const Tensor3<T>* context, const KeyMask& mask) {
        constexpr const char* where = "diffuse::nn::CrossAttention::forward";
        if (self_ && context != nullptr) detail::throw_invalid(where, "context", "a context", "none: this layer is self-attention");
        if (!self_ && context == nullptr) detail::throw_invalid(where, "context", "none", "a context [N, L, " + std::to_string(to_k.in_features()) + "]");
        const Tensor3<T>& c = self_ ? x : *context;
        const Index n = x.dimension(0), lq = x.dimension(1), lk = c.dimension(1);
        if (c.dimension(0) != n) {
            detail::throw_invalid(where, "context.shape", shape_string(c.dimensions()), "one sequence per sample, " + std::to_string(n));
        }
        if (c.dimension(2) != to_k.in_features()) {
            detail::throw_invalid(where, "context.shape", shape_string(c.dimensions()),
                                  "[N, L, " + std::to_string(to_k.in_features()) + "], the context width this layer was built for");
        }
        check_key_mask(where, "mask", mask, n, lk);
        mask_ = mask;
        q_ = to_q.forward(x);
        k_ = to_k.forward(c);
        v_ = to_v.forward(c);
        const Index inner = heads_ * dim_head_, d = dim_head_;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
        attention_ = Tensor4<T>(n, heads_, lq, lk);
        Tensor3<T> o(n, lq, inner);  // [N, L, heads * d]
        parallel_for(n * heads_, 1, [&](Index begin, Index end) {
            for (Index nh = begin; nh < end; ++nh) {
                const Index s = nh / heads_, h = nh % heads_;
                const auto qh = head(q_.data() + s * lq * inner + h * d, lq);
                const auto kh = head(k_.data() + s * lk * inner + h * d, lk);
                const auto vh = head(v_.data() + s * lk * inner + h * d, lk);
                auto a = map(attention_.data() + nh * lq * lk, lq, lk);
                a.noalias() = (qh * kh.transpose()) * scale;  // S = Q K^T / sqrt(d)
                const std::uint8_t* keep = mask_.empty() ? nullptr : mask_.data() + s * lk;
                for (Index i = 0; i < lq; ++i) {              // A = softmax over each row's real keys
                    auto row = a.row(i);
                    if (keep) {
                        for (Index j = 0; j < lk; ++j) if (!keep[j]) row(j) = -std::numeric_limits<T>::infinity();
                    }
                    row.array() = (row.array() - row.maxCoeff()).exp();
                    row /= row.sum();
                }
                head(o.data() + s * lq * inner + h * d, lq).noalias() = a * vh;  // O = A V
            }
        });
        return to_out.forward(o);
    }

    /// dy [N, L, D] -> the gradients of x and of the context (for self-attention, dx holds both).
    AttentionGradients<T> backward(const Tensor3<T>& dy) {
        const Tensor3<T> d_o = to_out.backward(dy);  // [N, L, heads * d]
        const Index n = q_.dimension(0), lq = q_.dimension(1), lk = k_.dimension(1);
        const Index inner = heads_ * dim_head_, d = dim_head_;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
        Tensor3<T> dq(q_.dimensions()), dk(k_.dimensions()), dv(v_.dimensions());
        parallel_for(n * heads_, 1, [&](Index begin, Index end) {
            Matrix da(lq, lk);
            for (Index nh = begin; nh < end; ++nh) {
                const Index s = nh / heads_, h = nh % heads_;
                const Index at_q = s * lq * inner + h * d, at_k = s * lk * inner + h * d;
                const auto qh = head(q_.data() + at_q, lq), kh = head(k_.data() + at_k, lk);
                const auto vh = head(v_.data() + at_k, lk), doh = head(d_o.data() + at_q, lq);
                const auto a = cmap(attention_.data() + nh * lq * lk, lq, lk);
                da.noalias() = doh * vh.transpose();                 // dA = dO V^T
                head(dv.data() + at_k, lk).noalias() = a.transpose() * doh;  // dV = A^T dO
                const auto row_dot = (da.array() * a.array()).rowwise().sum().eval();
                da = (a.array() * (da.array().colwise() - row_dot)).matrix() * scale;  // dS / sqrt(d)
                head(dq.data() + at_q, lq).noalias() = da * kh;              // dQ = dS K / sqrt(d)
                head(dk.data() + at_k, lk).noalias() = da.transpose() * qh;  // dK = dS^T Q / sqrt(d)
            }
        });
        AttentionGradients<T> out;
        out.dx = to_q.backward(dq);
        Tensor3<T> dc = to_k.backward(dk);
        add_inplace(dc, to_v.backward(dv));
        if (self_) {
            add_inplace(out.dx, dc);
        } else {
            out.dcontext = std::move(dc);
        }
        return out;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        to_q.for_each_parameter(join_name(prefix, "to_q"), fn);
        to_k.for_each_parameter(join_name(prefix, "to_k"), fn);
        to_v.for_each_parameter(join_name(prefix, "to_v"), fn);
        to_out.for_each_parameter(join_name(prefix, "to_out.0"), fn);
    }

    Linear<T> to_q, to_k, to_v, to_out;

  private:
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    static Eigen::Map<Matrix> map(T* p, Index rows, Index cols) { return {p, rows, cols}; }
    static Eigen::Map<const Matrix> cmap(const T* p, Index rows, Index cols) { return {p, rows, cols}; }
    // One head's [L, d] columns of a [L, heads * d] block.
    Eigen::Map<Matrix, 0, Stride> head(T* p, Index rows) const { return {p, rows, dim_head_, Stride(heads_ * dim_head_)}; }
    Eigen::Map<const Matrix, 0, Stride> head(const T* p, Index rows) const {
        return {p, rows, dim_head_, Stride(heads_ * dim_head_)};
    }

    Index heads_ = 1, dim_head_ = 1;
    bool self_ = true;
    KeyMask mask_;
    Tensor3<T> q_, k_, v_;  // [N, L, inner], [N, Lc, inner] twice
    Tensor4<T> attention_;  // A, [N, heads, L, Lc]
};

}  // namespace diffuse::nn
