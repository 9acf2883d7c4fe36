#pragma once
// The U-Net's transformer block over image features, as LDM's SpatialTransformer (Rombach et al.
// 2022), the way a prompt conditions Stable Diffusion:
//     h = proj_in(GroupNorm(x))                              [N, inner, H, W], a 1x1 conv
//     tokens: h as [N, H*W, inner], one token per position
//     BasicTransformerBlock, per token:
//         u = u + attn1(norm1(u))                            self-attention over the positions
//         u = u + attn2(norm2(u), context, mask)             cross-attention to the prompt
//         u = u + ff(norm3(u))                               GEGLU feed-forward
//     y = x + proj_out(u as [N, inner, H, W])                proj_out starts at zero, as LDM's
// Parameter names as LDM's: norm, proj_in, transformer_blocks.0.{attn1,attn2,ff,norm1,norm2,norm3}, proj_out.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/cross_attention.hpp"
#include "diffuse/nn/feed_forward.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/layer_norm.hpp"
#include "diffuse/nn/parameter.hpp"

#include <string>
#include <utility>

namespace diffuse::nn {

/// What a block conditioned on a context gives back from backward: the gradients of both inputs.
template <class T, class X>
struct ContextGradients {
    X dx;                 // shaped like the block's input
    Tensor3<T> dcontext;  // [N, Lc, Dc]
};

/// LDM's BasicTransformerBlock on tokens [N, L, D].
template <class T = float>
class TransformerBlock {
  public:
    TransformerBlock() = default;
    TransformerBlock(Index dim, Index heads, Index dim_head, Index context_dim, Generator& init)
        : attn1(dim, 0, heads, dim_head, init), ff(dim, 4, init), attn2(dim, context_dim, heads, dim_head, init),
          norm1(dim), norm2(dim), norm3(dim) {
        if (context_dim < 1) detail::throw_invalid("diffuse::nn::TransformerBlock", "context_dim", context_dim, "at least 1");
    }

    /// u: [N, L, D], context: [N, Lc, Dc] with its key mask ([N * Lc] or empty) -> [N, L, D]
    Tensor3<T> forward(const Tensor3<T>& u, const Tensor3<T>& context, const KeyMask& mask) {
        Tensor3<T> h = attn1.forward(norm1.forward(u));
        add_inplace(h, u);
        Tensor3<T> h2 = attn2.forward(norm2.forward(h), &context, mask);
        add_inplace(h2, h);
        Tensor3<T> y = ff.forward(norm3.forward(h2));
        add_inplace(y, h2);
        return y;
    }

    ContextGradients<T, Tensor3<T>> backward(const Tensor3<T>& dy) {
        Tensor3<T> dh2 = norm3.backward(ff.backward(dy));
        add_inplace(dh2, dy);
        AttentionGradients<T> cross = attn2.backward(dh2);
        Tensor3<T> dh = norm2.backward(cross.dx);
        add_inplace(dh, dh2);
        Tensor3<T> du = norm1.backward(attn1.backward(dh).dx);
        add_inplace(du, dh);
        return {std::move(du), std::move(cross.dcontext)};
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        attn1.for_each_parameter(join_name(prefix, "attn1"), fn);
        ff.for_each_parameter(join_name(prefix, "ff"), fn);
        attn2.for_each_parameter(join_name(prefix, "attn2"), fn);
        norm1.for_each_parameter(join_name(prefix, "norm1"), fn);
        norm2.for_each_parameter(join_name(prefix, "norm2"), fn);
        norm3.for_each_parameter(join_name(prefix, "norm3"), fn);
    }

    CrossAttention<T> attn1;  // self-attention
    FeedForward<T> ff;
    CrossAttention<T> attn2;  // cross-attention to the context
    LayerNorm<T> norm1, norm2, norm3;
};

template <class T = float>
class SpatialTransformer {
  public:
    SpatialTransformer() = default;
    /// channels: the image features' C; inner = heads * dim_head token features; context_dim: the
    /// prompt embeddings' width; groups: the GroupNorm's (eps 1e-6, as LDM's Normalize).
    SpatialTransformer(Index channels, Index heads, Index dim_head, Index context_dim, Index groups, Generator& init)
        : norm(groups, channels, 1e-6), proj_in(channels, heads * dim_head, 1, 1, init),
          block(heads * dim_head, heads, dim_head, context_dim, init), proj_out(heads * dim_head, channels, 1, 1, init) {
        proj_out.weight.value().setZero();  // zero_module(proj_out): the block starts as the identity
        proj_out.bias.value().setZero();
    }

    void set_training(bool training) {
        norm.set_training(training), proj_in.set_training(training), proj_out.set_training(training);
    }

    /// x: [N, C, H, W], context: [N, Lc, Dc], mask: [N * Lc] or empty -> [N, C, H, W]
    Tensor4<T> forward(const Tensor4<T>& x, const Tensor3<T>& context, const KeyMask& mask) {
        const Tensor4<T> h = proj_in.forward(norm.forward(x));  // [N, inner, H, W]
        const Tensor3<T> u = block.forward(to_tokens(h), context, mask);  // [N, HW, inner]
        return proj_out.forward(from_tokens(u, x.dimension(2), x.dimension(3)), nullptr, &x);  // + x
    }

    ContextGradients<T, Tensor4<T>> backward(const Tensor4<T>& dy) {
        const Tensor4<T> dh = proj_out.backward(dy);  // [N, inner, H, W]
        ContextGradients<T, Tensor3<T>> d = block.backward(to_tokens(dh));
        Tensor4<T> dx = norm.backward(proj_in.backward(from_tokens(d.dx, dy.dimension(2), dy.dimension(3))));
        add_inplace(dx, dy);  // the residual
        return {std::move(dx), std::move(d.dcontext)};
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        norm.for_each_parameter(join_name(prefix, "norm"), fn);
        proj_in.for_each_parameter(join_name(prefix, "proj_in"), fn);
        block.for_each_parameter(join_name(prefix, "transformer_blocks.0"), fn);
        proj_out.for_each_parameter(join_name(prefix, "proj_out"), fn);
    }

    GroupNorm<T> norm;
    Conv2d<T> proj_in;
    TransformerBlock<T> block;
    Conv2d<T> proj_out;

    /// [N, C, H, W] -> [N, H*W, C]: a token per position.
    static Tensor3<T> to_tokens(const Tensor4<T>& h) {
        const Index n = h.dimension(0), c = h.dimension(1), p = h.dimension(2) * h.dimension(3);
        Tensor3<T> u(n, p, c);
        parallel_for(n, 1, [&](Index first, Index last) {
            for (Index s = first; s < last; ++s) {
                for (Index ch = 0; ch < c; ++ch) {
                    const T* src = h.data() + (s * c + ch) * p;
                    for (Index q = 0; q < p; ++q) u.data()[(s * p + q) * c + ch] = src[q];
                }
            }
        });
        return u;
    }
    /// [N, H*W, C] -> [N, C, H, W]
    static Tensor4<T> from_tokens(const Tensor3<T>& u, Index height, Index width) {
        const Index n = u.dimension(0), p = u.dimension(1), c = u.dimension(2);
        Tensor4<T> h(n, c, height, width);
        parallel_for(n, 1, [&](Index first, Index last) {
            for (Index s = first; s < last; ++s) {
                for (Index q = 0; q < p; ++q) {
                    const T* src = u.data() + (s * p + q) * c;
                    for (Index ch = 0; ch < c; ++ch) h.data()[(s * c + ch) * p + q] = src[ch];
                }
            }
        });
        return h;
    }
};

}  // namespace diffuse::nn
