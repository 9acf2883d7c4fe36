#pragma once
// The DDPM residual block (Ho et al. 2020, after Wide ResNet), conditioned on the time embedding:
//     h = Conv3x3(SiLU(GroupNorm(x)))  +  Linear(SiLU(temb)) per channel
//     h = Conv3x3(Dropout(SiLU(GroupNorm(h))))
//     y = skip(x) + h,   skip = 1x1 conv when the channel count changes, else the identity
// With embedding_channels = 0 the block has no embedding term (LDM's autoencoder, temb_channels = 0):
// forward(x, stream) then, and backward's dtemb is empty.

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/dropout.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/nn/silu.hpp"

#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace diffuse::nn {

template <class T = float>
class ResBlock {
  public:
    ResBlock() = default;
    ResBlock(Index in_channels, Index out_channels, Index embedding_channels, Index groups, double dropout_p,
             Generator& init)
        : norm1(groups, in_channels, 1e-5, Activation::silu), conv1(in_channels, out_channels, 3, 1, init),
          temb_proj(embedding_channels > 0 ? Linear<T>(embedding_channels, out_channels, init) : Linear<T>()), norm2(groups, out_channels, 1e-5, Activation::silu),
          dropout(dropout_p),
          conv2(out_channels, out_channels, 3, 1, init) {
        if (in_channels != out_channels) nin_shortcut = Conv2d<T>(in_channels, out_channels, 1, 1, init);
    }

    bool has_shortcut() const { return nin_shortcut.out_channels() > 0; }
    bool has_embedding() const { return temb_proj.out_features() > 0; }
    /// Training: dropout on, activations cached for backward. Evaluation: dropout off, nothing cached.
    void set_training(bool training) {
        norm1.set_training(training), conv1.set_training(training), silu_temb.set_training(training);
        norm2.set_training(training), dropout.set_training(training);
        conv2.set_training(training), nin_shortcut.set_training(training);
    }

    /// x: [N, Cin, H, W], temb: [N, E] -> [N, Cout, H, W]; `stream` draws the dropout mask.
    Tensor4<T> forward(const Tensor4<T>& x, const Tensor2<T>& temb, const Generator& stream) {
        return forward_kept(x, &temb, stream);
    }
    /// The same for an input the caller gives up: in training it becomes the copy norm1 keeps for
    /// backward, which the residual then reads, so a temporary input is never copied.
    Tensor4<T> forward(Tensor4<T>&& x, const Tensor2<T>& temb, const Generator& stream) {
        return forward_kept(std::move(x), &temb, stream);
    }
    /// The same with x borrowed for backward, not copied: it must stay alive and unchanged until
    /// then (a U-Net's skip tensors, which it keeps anyway).
    Tensor4<T> forward(std::reference_wrapper<const Tensor4<T>> x, const Tensor2<T>& temb, const Generator& stream) {
        return forward_kept(x, &temb, stream);
    }

    /// x: [N, Cin, H, W] -> [N, Cout, H, W], for a block without an embedding term; an input given
    /// up or borrowed as above.
    Tensor4<T> forward(const Tensor4<T>& x, const Generator& stream) { return forward_kept(x, nullptr, stream); }
    Tensor4<T> forward(Tensor4<T>&& x, const Generator& stream) { return forward_kept(std::move(x), nullptr, stream); }
    Tensor4<T> forward(std::reference_wrapper<const Tensor4<T>> x, const Generator& stream) {
        return forward_kept(x, nullptr, stream);
    }

    /// dy [N, Cout, H, W] -> (dx [N, Cin, H, W], dtemb [N, temb_channels]): a gradient for each of
    /// the block's two inputs (dtemb empty without an embedding term).
    std::pair<Tensor4<T>, Tensor2<T>> backward(const Tensor4<T>& dy) {
        Tensor4<T> dh = norm2.backward(dropout.backward(conv2.backward(dy)));
        Tensor2<T> dtemb;
        if (has_embedding()) {
            const Index n = dh.dimension(0), c = dh.dimension(1), hw = dh.dimension(2) * dh.dimension(3);
            Tensor2<T> de(n, c);  // the per-channel embedding term's gradient: dh summed over pixels
            parallel_for(n * c, 16, [&](Index first, Index last) {
                for (Index i = first; i < last; ++i) de.data()[i] = Eigen::Map<const Table<T>>(dh.data() + i * hw, hw).sum();
            });
            dtemb = silu_temb.backward(temb_proj.backward(de));
        }
        Tensor4<T> dx = norm1.backward(conv1.backward(dh));
        if (has_shortcut()) add_inplace(dx, nin_shortcut.backward(dy)); else add_inplace(dx, dy);
        return {std::move(dx), std::move(dtemb)};
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        norm1.for_each_parameter(join_name(prefix, "norm1"), fn);
        conv1.for_each_parameter(join_name(prefix, "conv1"), fn);
        if (has_embedding()) temb_proj.for_each_parameter(join_name(prefix, "temb_proj"), fn);
        norm2.for_each_parameter(join_name(prefix, "norm2"), fn);
        conv2.for_each_parameter(join_name(prefix, "conv2"), fn);
        if (has_shortcut()) nin_shortcut.for_each_parameter(join_name(prefix, "nin_shortcut"), fn);
    }

  private:
    [[noreturn]] static void throw_embedding_not_built() {
        detail::throw_invalid("diffuse::nn::ResBlock::forward", "temb", "an embedding",
                              "none: this block was built with embedding_channels = 0; call forward(x, stream)");
    }

    [[noreturn]] void throw_embedding_expected() const {
        detail::throw_invalid("diffuse::nn::ResBlock::forward", "temb", "none",
                              "the [N, " + std::to_string(temb_proj.in_features()) + "] embedding this block was built for");
    }

    // h = conv1(...) -> y = skip(x) + conv2(Dropout(SiLU(GroupNorm(h))))
    // x: the input as the caller passed it (a copy, a temporary or a borrowed tensor), kept by norm1
    // in training mode; temb: [N, E] or null (a block without an embedding).
    template <class X>
    Tensor4<T> forward_kept(X&& x, const Tensor2<T>* temb, const Generator& stream) {
        if (has_embedding() != (temb != nullptr)) {
            if (temb) throw_embedding_not_built();
            throw_embedding_expected();
        }
        Tensor2<T> e;  // [N, Cout], added per channel to conv1's output
        if (temb) e = temb_proj.forward(silu_temb.forward(*temb));
        const Tensor2<T>* shift = temb ? &e : nullptr;
        if (!norm1.training()) {  // nothing is kept; x is read twice, so not consumed in place
            const Tensor4<T>& in = x;
            return residual(in, conv1.forward(norm1.forward(in), shift), stream);
        }
        Tensor4<T> h = norm1.forward(std::forward<X>(x));
        return residual(norm1.input(), conv1.forward(std::move(h), shift), stream);
    }

    // x: the block's input, which in training mode norm1 keeps until backward, so the shortcut
    // borrows it rather than keeping a copy of its own.
    Tensor4<T> residual(const Tensor4<T>& x, Tensor4<T> h, const Generator& stream) {
        const Tensor4<T> skip = has_shortcut() ? nin_shortcut.forward(std::cref(x)) : Tensor4<T>();
        return conv2.forward(dropout.forward(norm2.forward(std::move(h)), stream), nullptr,
                             has_shortcut() ? &skip : &x);  // + the residual
    }

  public:
    GroupNorm<T> norm1;  // followed by SiLU, fused
    Conv2d<T> conv1;
    SiLU<T> silu_temb;
    Linear<T> temb_proj;
    GroupNorm<T> norm2;  // followed by SiLU, fused
    Dropout<T> dropout;
    Conv2d<T> conv2;
    Conv2d<T> nin_shortcut;  // empty (0 channels) when Cin == Cout
};

}  // namespace diffuse::nn
