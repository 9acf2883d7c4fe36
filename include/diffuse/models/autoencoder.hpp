#pragma once
// Latent diffusion's KL-regularised autoencoder (Rombach et al. 2022, appendix G; LDM's
// AutoencoderKL, ldm/modules/diffusionmodules/model.py), parameter names as LDM's:
//   encoder  h = conv_in(x)                                                  [N, ch, H, W]
//            level l: num_res_blocks ResBlocks -> ch * mult[l], then a stride-2 3x3 conv
//                     (down.l.downsample.conv), except at the last level
//            mid: ResBlock, single-head attention, ResBlock
//            moments = quant_conv(conv_out(SiLU(GroupNorm(h))))              [N, 2 z, H/f, W/f]
//   posterior q(z | x) = N(mean, exp(log_variance)), the moments' two halves, log_variance clamped
//            to [-30, 20] as LDM does; z = mean + exp(log_variance / 2) eps
//   decoder  h = conv_in(post_quant_conv(z)); mid as the encoder's; level l from the last:
//            num_res_blocks + 1 ResBlocks -> ch * mult[l], then nearest-2x upsampling and a 3x3 conv
//            (up.l.upsample.conv), except at level 0; x_hat = conv_out(SiLU(GroupNorm(h)))
// f = 2^(levels - 1). The ResBlocks have no time embedding and no dropout. One departure from LDM:
// its downsampling pads (0, 1, 0, 1) before a 3x3 stride-2 conv without padding; here the conv pads
// 1 on every side (DDPM's downsampling), which gives the same sizes and differs only at the border.

#include "diffuse/core/channels.hpp"
#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/nn/res_block.hpp"
#include "diffuse/nn/resample.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

struct AutoencoderConfig {
    Index in_channels = 1;               // the image's channels, also the decoder's output
    Index ch = 32;                       // channels at level 0
    std::vector<Index> ch_mult = {1, 2};  // per level; f = 2^(levels - 1)
    Index num_res_blocks = 1;            // per level in the encoder (the decoder has one more)
    Index z_channels = 4;                // latent channels
    Index groups = 8;                    // GroupNorm groups (LDM: 32)
    Index image_size = 28;               // H = W of the images; f must divide it

    Index downsampling_factor() const { return Index{1} << (ch_mult.size() - 1); }
    Index latent_size() const { return image_size / downsampling_factor(); }
};

namespace detail {

inline void check_autoencoder_config(const AutoencoderConfig& c) {
    constexpr const char* where = "diffuse::Autoencoder";
    if (c.in_channels < 1) throw_invalid(where, "in_channels", c.in_channels, ">= 1");
    if (c.ch < 1) throw_invalid(where, "ch", c.ch, ">= 1");
    if (c.ch_mult.empty()) throw_invalid(where, "ch_mult", "[]", "at least one level");
    if (c.groups < 1) throw_invalid(where, "groups", c.groups, ">= 1");
    for (const Index m : c.ch_mult) {
        if (m < 1) throw_invalid(where, "ch_mult", m, "multipliers >= 1");
        if ((c.ch * m) % c.groups != 0) {
            throw_invalid(where, "groups", c.groups, "a divisor of every level's channels (" + std::to_string(c.ch * m) + ")");
        }
    }
    if (c.num_res_blocks < 1) throw_invalid(where, "num_res_blocks", c.num_res_blocks, ">= 1");
    if (c.z_channels < 1) throw_invalid(where, "z_channels", c.z_channels, ">= 1");
    if (c.image_size < 1 || c.image_size % c.downsampling_factor() != 0) {
        throw_invalid(where, "image_size", c.image_size,
                      "a multiple of the downsampling factor " + std::to_string(c.downsampling_factor()) + " (2^(levels - 1))");
    }
}

}  // namespace detail

/// The posterior's parameters, the two halves of the encoder's moments.
template <class T>
struct DiagonalGaussianPosterior {
    Tensor4<T> mean;          // [N, z, h, w]
    Tensor4<T> log_variance;  // [N, z, h, w], clamped to [-30, 20]
};

/// Splits moments [N, 2z, h, w] into the posterior's mean and (clamped) log-variance.
template <class T>
DiagonalGaussianPosterior<T> posterior_from_moments(const Tensor4<T>& moments) {
    if (moments.dimension(1) % 2 != 0) {
        detail::throw_invalid("diffuse::posterior_from_moments", "moments.shape", shape_string(moments.dimensions()),
                              "an even channel count: the mean's channels, then the log-variance's");
    }
    const Index z = moments.dimension(1) / 2;
    DiagonalGaussianPosterior<T> q{channel_slice(moments, 0, z), channel_slice(moments, z, z)};
    for (Index i = 0; i < q.log_variance.size(); ++i) {
        q.log_variance.data()[i] = std::clamp(q.log_variance.data()[i], T(-30), T(20));
    }
    return q;
}

/// The reparameterised sample z = mean + exp(log_variance / 2) eps. eps: [N, z, h, w], standard normal.
template <class T>
Tensor4<T> posterior_sample(const DiagonalGaussianPosterior<T>& q, const Tensor4<T>& eps) {
    check_same_shape("diffuse::posterior_sample", "q.mean", q.mean, "eps", eps);
    return elementwise([](T m, T lv, T e) { return m + std::exp(T(0.5) * lv) * e; }, q.mean, q.log_variance, eps);
}

/// KL(q(z | x) || N(0, I)) of each sample, summed over its latent's entries, in nats, [N]:
///   0.5 sum(mean^2 + exp(log_variance) - 1 - log_variance).
template <class T>
std::vector<double> posterior_kl(const DiagonalGaussianPosterior<T>& q) {
    const Index n = q.mean.dimension(0), per = q.mean.size() / n;
    std::vector<double> out(static_cast<std::size_t>(n), 0.0);
    for (Index s = 0; s < n; ++s) {
        double sum = 0.0;
        for (Index i = s * per; i < (s + 1) * per; ++i) {
            const double m = q.mean.data()[i], lv = q.log_variance.data()[i];
            sum += m * m + std::exp(lv) - 1.0 - lv;
        }
        out[static_cast<std::size_t>(s)] = 0.5 * sum;
    }
    return out;
}

/// The gradient with respect to the moments [N, 2z, h, w] of L = <dz, z> + kl_weight sum_n KL_n, z
/// being posterior_sample(posterior_from_moments(moments), eps): through the reparameterisation,
///   dL/dmean = dz + kl_weight mean,
///   dL/dlog_variance = (dz eps exp(log_variance / 2) / 2 + kl_weight (exp(log_variance) - 1) / 2),
/// zero where the clamp was active.
template <class T>
Tensor4<T> posterior_backward(const Tensor4<T>& moments, const Tensor4<T>& eps, const Tensor4<T>& dz, double kl_weight) {
    const Index n = moments.dimension(0), z = moments.dimension(1) / 2, plane = moments.dimension(2) * moments.dimension(3);
    check_same_shape("diffuse::posterior_backward", "eps", eps, "dz", dz);
    Tensor4<T> out(moments.dimensions());
    const T w = static_cast<T>(kl_weight);
    for (Index s = 0; s < n; ++s) {
        for (Index c = 0; c < z; ++c) {
            const T* mean = moments.data() + (s * 2 * z + c) * plane;
            const T* lv = moments.data() + (s * 2 * z + z + c) * plane;
            const T* e = eps.data() + (s * z + c) * plane;
            const T* g = dz.data() + (s * z + c) * plane;
            T* dmean = out.data() + (s * 2 * z + c) * plane;
            T* dlv = out.data() + (s * 2 * z + z + c) * plane;
            for (Index k = 0; k < plane; ++k) {
                dmean[k] = g[k] + w * mean[k];
                const bool clamped = lv[k] < T(-30) || lv[k] > T(20);
                const T l = std::clamp(lv[k], T(-30), T(20));
                dlv[k] = clamped ? T(0) : T(0.5) * g[k] * e[k] * std::exp(T(0.5) * l) + w * T(0.5) * (std::exp(l) - T(1));
            }
        }
    }
    return out;
}

template <class T = float>
class Autoencoder {
  public:
    Autoencoder() = default;
    explicit Autoencoder(const AutoencoderConfig& config, std::uint64_t seed = 0) : config_(config) {
        detail::check_autoencoder_config(config);
        Generator init(seed);
        const AutoencoderConfig& c = config;
        const Index levels = static_cast<Index>(c.ch_mult.size());
        const Index top = c.ch * c.ch_mult.back();
        // encoder
        enc_conv_in = nn::Conv2d<T>(c.in_channels, c.ch, 3, 1, init);
        Index channels = c.ch;
        for (Index l = 0; l < levels; ++l) {
            const Index out = c.ch * c.ch_mult[static_cast<std::size_t>(l)];
            for (Index b = 0; b < c.num_res_blocks; ++b) {
                enc_blocks.emplace_back(channels, out, 0, c.groups, 0.0, init);
                channels = out;
            }
            if (l + 1 < levels) enc_down.emplace_back(channels, channels, 3, 2, init);
        }
        enc_mid_1 = nn::ResBlock<T>(top, top, 0, c.groups, 0.0, init);
        enc_mid_attn = nn::AttentionBlock<T>(top, 1, c.groups, init);
        enc_mid_2 = nn::ResBlock<T>(top, top, 0, c.groups, 0.0, init);
        enc_norm_out = nn::GroupNorm<T>(c.groups, top, 1e-6, nn::Activation::silu);
        enc_conv_out = nn::Conv2d<T>(top, 2 * c.z_channels, 3, 1, init);
        quant_conv = nn::Conv2d<T>(2 * c.z_channels, 2 * c.z_channels, 1, 1, init);
        // decoder
        post_quant_conv = nn::Conv2d<T>(c.z_channels, c.z_channels, 1, 1, init);
        dec_conv_in = nn::Conv2d<T>(c.z_channels, top, 3, 1, init);
        dec_mid_1 = nn::ResBlock<T>(top, top, 0, c.groups, 0.0, init);
        dec_mid_attn = nn::AttentionBlock<T>(top, 1, c.groups, init);
        dec_mid_2 = nn::ResBlock<T>(top, top, 0, c.groups, 0.0, init);
        channels = top;
        dec_blocks.resize(static_cast<std::size_t>(levels));
        dec_up.resize(static_cast<std::size_t>(levels));
        for (Index l = levels - 1; l >= 0; --l) {
            const Index out = c.ch * c.ch_mult[static_cast<std::size_t>(l)];
            for (Index b = 0; b <= c.num_res_blocks; ++b) {
                dec_blocks[static_cast<std::size_t>(l)].emplace_back(channels, out, 0, c.groups, 0.0, init);
                channels = out;
            }
            if (l > 0) dec_up[static_cast<std::size_t>(l)] = nn::Conv2d<T>(channels, channels, 3, 1, init);
        }
        dec_norm_out = nn::GroupNorm<T>(c.groups, c.ch * c.ch_mult.front(), 1e-6, nn::Activation::silu);
        dec_conv_out = nn::Conv2d<T>(c.ch * c.ch_mult.front(), c.in_channels, 3, 1, init);
    }

    const AutoencoderConfig& config() const { return config_; }

    void set_training(bool training) {
        for_each_layer([training](auto& layer) { layer.set_training(training); });
    }

    /// x: [N, C, H, W] -> the posterior's moments [N, 2z, H/f, W/f] (mean channels, then log-variance).
    Tensor4<T> encode(const Tensor4<T>& x) {
        constexpr const char* where = "diffuse::Autoencoder::encode";
        check_batch(where, "x", x);
        const std::array<Index, 4> want = {x.dimension(0), config_.in_channels, config_.image_size, config_.image_size};
        if (x.dimensions() != want) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()), shape_string(want));
        }
        Tensor4<T> h = enc_conv_in.forward(x);
        std::size_t block = 0;
        for (std::size_t l = 0; l < config_.ch_mult.size(); ++l) {
            for (Index b = 0; b < config_.num_res_blocks; ++b) h = enc_blocks[block++].forward(h, no_dropout_);
            if (l < enc_down.size()) h = enc_down[l].forward(h);
        }
        h = enc_mid_2.forward(enc_mid_attn.forward(enc_mid_1.forward(h, no_dropout_)), no_dropout_);
        return quant_conv.forward(enc_conv_out.forward(enc_norm_out.forward(std::move(h))));
    }

    /// d moments -> dx [N, C, H, W]; accumulates the encoder's parameter gradients.
    Tensor4<T> encode_backward(const Tensor4<T>& dmoments) {
        Tensor4<T> dh = enc_norm_out.backward(enc_conv_out.backward(quant_conv.backward(dmoments)));
        dh = enc_mid_1.backward(enc_mid_attn.backward(enc_mid_2.backward(dh).first)).first;
        std::size_t block = enc_blocks.size();
        for (std::size_t l = config_.ch_mult.size(); l-- > 0;) {
            if (l < enc_down.size()) dh = enc_down[l].backward(dh);
            for (Index b = 0; b < config_.num_res_blocks; ++b) dh = enc_blocks[--block].backward(dh).first;
        }
        return enc_conv_in.backward(dh);
    }

    /// z: [N, z, H/f, W/f] -> the reconstruction [N, C, H, W].
    Tensor4<T> decode(const Tensor4<T>& z) {
        constexpr const char* where = "diffuse::Autoencoder::decode";
        check_batch(where, "z", z);
        const std::array<Index, 4> want = {z.dimension(0), config_.z_channels, config_.latent_size(), config_.latent_size()};
        if (z.dimensions() != want) {
            detail::throw_invalid(where, "z.shape", shape_string(z.dimensions()), shape_string(want));
        }
        Tensor4<T> h = dec_conv_in.forward(post_quant_conv.forward(z));
        h = dec_mid_2.forward(dec_mid_attn.forward(dec_mid_1.forward(h, no_dropout_)), no_dropout_);
        for (std::size_t l = config_.ch_mult.size(); l-- > 0;) {
            for (auto& block : dec_blocks[l]) h = block.forward(h, no_dropout_);
            if (l > 0) h = dec_up[l].forward(nn::upsample_nearest2x(h));
        }
        return dec_conv_out.forward(dec_norm_out.forward(std::move(h)));
    }

    /// dx_hat -> dz [N, z, H/f, W/f]; accumulates the decoder's parameter gradients.
    Tensor4<T> decode_backward(const Tensor4<T>& dx_hat) {
        Tensor4<T> dh = dec_norm_out.backward(dec_conv_out.backward(dx_hat));
        for (std::size_t l = 0; l < config_.ch_mult.size(); ++l) {
            if (l > 0) dh = nn::upsample_nearest2x_backward(dec_up[l].backward(dh));
            for (auto block = dec_blocks[l].rbegin(); block != dec_blocks[l].rend(); ++block) dh = block->backward(dh).first;
        }
        dh = dec_mid_1.backward(dec_mid_attn.backward(dec_mid_2.backward(dh).first)).first;
        return post_quant_conv.backward(dec_conv_in.backward(dh));
    }

    /// LDM's names: encoder.conv_in, encoder.down.0.block.0.conv1, encoder.down.0.downsample.conv,
    /// encoder.mid.block_1, encoder.mid.attn_1, encoder.norm_out, quant_conv, post_quant_conv,
    /// decoder.up.1.block.2, decoder.up.1.upsample.conv, decoder.conv_out, ...
    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        const std::string e = nn::join_name(prefix, "encoder"), d = nn::join_name(prefix, "decoder");
        enc_conv_in.for_each_parameter(nn::join_name(e, "conv_in"), fn);
        std::size_t block = 0;
        for (std::size_t l = 0; l < config_.ch_mult.size(); ++l) {
            const std::string level = nn::join_name(e, "down." + std::to_string(l));
            for (Index b = 0; b < config_.num_res_blocks; ++b) {
                enc_blocks[block++].for_each_parameter(nn::join_name(level, "block." + std::to_string(b)), fn);
            }
            if (l < enc_down.size()) enc_down[l].for_each_parameter(nn::join_name(level, "downsample.conv"), fn);
        }
        enc_mid_1.for_each_parameter(nn::join_name(e, "mid.block_1"), fn);
        enc_mid_attn.for_each_parameter(nn::join_name(e, "mid.attn_1"), fn);
        enc_mid_2.for_each_parameter(nn::join_name(e, "mid.block_2"), fn);
        enc_norm_out.for_each_parameter(nn::join_name(e, "norm_out"), fn);
        enc_conv_out.for_each_parameter(nn::join_name(e, "conv_out"), fn);
        quant_conv.for_each_parameter(nn::join_name(prefix, "quant_conv"), fn);
        post_quant_conv.for_each_parameter(nn::join_name(prefix, "post_quant_conv"), fn);
        dec_conv_in.for_each_parameter(nn::join_name(d, "conv_in"), fn);
        dec_mid_1.for_each_parameter(nn::join_name(d, "mid.block_1"), fn);
        dec_mid_attn.for_each_parameter(nn::join_name(d, "mid.attn_1"), fn);
        dec_mid_2.for_each_parameter(nn::join_name(d, "mid.block_2"), fn);
        for (std::size_t l = 0; l < config_.ch_mult.size(); ++l) {
            const std::string level = nn::join_name(d, "up." + std::to_string(l));
            for (std::size_t b = 0; b < dec_blocks[l].size(); ++b) {
                dec_blocks[l][b].for_each_parameter(nn::join_name(level, "block." + std::to_string(b)), fn);
            }
            if (l > 0) dec_up[l].for_each_parameter(nn::join_name(level, "upsample.conv"), fn);
        }
        dec_norm_out.for_each_parameter(nn::join_name(d, "norm_out"), fn);
        dec_conv_out.for_each_parameter(nn::join_name(d, "conv_out"), fn);
    }

  private:
    template <class Fn>
    void for_each_layer(Fn&& fn) {
        fn(enc_conv_in);
        for (auto& b : enc_blocks) fn(b);
        for (auto& c : enc_down) fn(c);
        fn(enc_mid_1), fn(enc_mid_attn), fn(enc_mid_2), fn(enc_norm_out), fn(enc_conv_out), fn(quant_conv);
        fn(post_quant_conv), fn(dec_conv_in), fn(dec_mid_1), fn(dec_mid_attn), fn(dec_mid_2);
        for (auto& level : dec_blocks) {
            for (auto& b : level) fn(b);
        }
        for (std::size_t l = 1; l < dec_up.size(); ++l) fn(dec_up[l]);
        fn(dec_norm_out), fn(dec_conv_out);
    }

    AutoencoderConfig config_;
    Generator no_dropout_{0};  // the ResBlocks' dropout stream; their dropout is 0

    nn::Conv2d<T> enc_conv_in;
    std::vector<nn::ResBlock<T>> enc_blocks;  // level-major, num_res_blocks per level
    std::vector<nn::Conv2d<T>> enc_down;      // [levels - 1]
    nn::ResBlock<T> enc_mid_1;
    nn::AttentionBlock<T> enc_mid_attn;
    nn::ResBlock<T> enc_mid_2;
    nn::GroupNorm<T> enc_norm_out;  // followed by SiLU, fused
    nn::Conv2d<T> enc_conv_out, quant_conv;

    nn::Conv2d<T> post_quant_conv, dec_conv_in;
    nn::ResBlock<T> dec_mid_1;
    nn::AttentionBlock<T> dec_mid_attn;
    nn::ResBlock<T> dec_mid_2;
    std::vector<std::vector<nn::ResBlock<T>>> dec_blocks;  // [levels][num_res_blocks + 1], by level
    std::vector<nn::Conv2d<T>> dec_up;                     // [levels]; entry 0 unused
    nn::GroupNorm<T> dec_norm_out;  // followed by SiLU, fused
    nn::Conv2d<T> dec_conv_out;
};

/// Latents of `images` [N, C, H, W] in [-1, 1]: z ~ q(z | x) = mean + exp(log_variance / 2) eps, as
/// LDM's encode_first_stage samples them; [N, z, H/f, W/f]. The model runs in evaluation mode,
/// `batch` images at a time, and eps comes from `seed`, drawn batch after batch (so the result
/// depends on `batch` as well as `seed`, and not on the thread count).
template <class T>
Tensor4<T> encode_latents(Autoencoder<T>& model, const Tensor4<T>& images, std::uint64_t seed = 0, Index batch = 64) {
    constexpr const char* where = "diffuse::encode_latents";
    check_batch(where, "images", images);
    if (batch < 1) detail::throw_invalid(where, "batch", batch, ">= 1");
    model.set_training(false);
    Generator generator(seed);
    const AutoencoderConfig& c = model.config();
    const Index n = images.dimension(0), latent = c.latent_size();
    Tensor4<T> out(n, c.z_channels, latent, latent);  // [N, z, H/f, W/f]
    for (Index first = 0; first < n; first += batch) {
        const Index m = std::min(batch, n - first);
        const DiagonalGaussianPosterior<T> q = posterior_from_moments(model.encode(batch_slice(images, first, m)));
        batch_assign(out, first, posterior_sample(q, generator.randn<T, 4>(q.mean.dimensions())));  // [m, z, h, w]
    }
    return out;
}

/// The decoder's images D(z) [N, C, H, W] of latents z [N, z, H/f, W/f], `batch` at a time, in
/// evaluation mode. (A diffusion model's latents are z times the scale factor: divide first.)
template <class T>
Tensor4<T> decode_latents(Autoencoder<T>& model, const Tensor4<T>& z, Index batch = 64) {
    constexpr const char* where = "diffuse::decode_latents";
    check_batch(where, "z", z);
    if (batch < 1) detail::throw_invalid(where, "batch", batch, ">= 1");
    model.set_training(false);
    const AutoencoderConfig& c = model.config();
    const Index n = z.dimension(0);
    Tensor4<T> out(n, c.in_channels, c.image_size, c.image_size);  // [N, C, H, W]
    for (Index first = 0; first < n; first += batch) {
        batch_assign(out, first, model.decode(batch_slice(z, first, std::min(batch, n - first))));
    }
    return out;
}

/// Latent diffusion's scale factor: 1 / the standard deviation of the latents z the encoder gives
/// for `images` [N, C, H, W] in [-1, 1] (encode_latents(model, images, seed, batch)), over all their
/// entries, so that the diffusion model sees latents of unit variance (how Stable Diffusion's
/// 0.18215 was computed).
template <class T>
double latent_scale_factor(Autoencoder<T>& model, const Tensor4<T>& images, std::uint64_t seed = 0, Index batch = 64) {
    constexpr const char* where = "diffuse::latent_scale_factor";
    const Tensor4<T> z = encode_latents(model, images, seed, batch);  // [N, z, h, w]
    double sum = 0.0, squares = 0.0;
    for (Index i = 0; i < z.size(); ++i) {
        sum += z.data()[i];
        squares += static_cast<double>(z.data()[i]) * z.data()[i];
    }
    const double count = static_cast<double>(z.size());
    const double mean = sum / count, variance = squares / count - mean * mean;
    const double factor = 1.0 / std::sqrt(variance);
    if (!std::isfinite(factor) || !(factor > 0.0)) {
        throw numerical_error(std::string(where) + ": the latents' variance is " + std::to_string(variance) +
                              ", which gives no finite positive scale factor");
    }
    return factor;
}

}  // namespace diffuse
