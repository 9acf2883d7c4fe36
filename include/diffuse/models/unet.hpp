#pragma once
// The DDPM U-Net (Ho et al. 2020, appendix B; parameter names as in the PyTorch port of its code):
//   temb  = TimeMLP(t) (+ class embedding) (+ context_embedding(pooled context))   [N, 4 ch]
//   h     = conv_in(x)      (x_t, with an image concatenated along the channels when configured)
//   down  level l: num_res_blocks x (ResBlock -> ch * mult[l], Attention at the listed resolutions),
//                  then a stride-2 3x3 conv, except at the last level; every output is kept for a skip
//   mid   ResBlock, Attention, ResBlock
//   up    level l (last to first): num_res_blocks + 1 x (concat the matching skip, ResBlock, Attention),
//                  then nearest 2x and a 3x3 conv, except at level 0
//   out   conv_out(SiLU(norm_out(h)))
// It predicts a tensor shaped like x (the noise eps, or x0 or v: the trainer decides what it means).
// With context_dim > 0 every attention block is LDM's SpatialTransformer instead (self-attention,
// cross-attention to a context [N, L, context_dim], a GEGLU feed-forward), the way a prompt conditions
// Stable Diffusion; backward then also gives the context's gradient (context_gradient()), for the
// text encoder that made it. With context_pooling as well, the context's mean over its real tokens,
// through a linear layer, is added to the time embedding, as Imagen adds its pooled text embedding:
// the prompt then reaches every ResBlock, as a class embedding does, besides the attention blocks.

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/embedding.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/nn/res_block.hpp"
#include "diffuse/nn/resample.hpp"
#include "diffuse/nn/silu.hpp"
#include "diffuse/nn/spatial_transformer.hpp"
#include "diffuse/nn/time_mlp.hpp"

#include <algorithm>
#include <cassert>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

struct UNetConfig {
    Index in_channels = 1;
    Index out_channels = 1;
    Index model_channels = 32;                  // ch, the base channel count
    std::vector<Index> channel_mult = {1, 2, 2};  // ch * mult[l] channels at level l
    Index num_res_blocks = 2;
    std::vector<Index> attention_resolutions = {7};  // feature-map sizes that get attention
    double dropout = 0.1;
    Index groups = 8;       // GroupNorm groups
    Index heads = 1;        // attention heads
    Index num_classes = 0;  // > 0: class-conditional, with index num_classes meaning "no class"
    Index image_size = 28;  // the side the resolutions above are counted from
    Index context_dim = 0;      // > 0: attention blocks are transformer blocks attending to a context [N, L, context_dim]
    Index concat_channels = 0;  // channels of an image concatenated to x_t (Conditioning::concat), 0: none
    bool context_pooling = false;  // with a context: its mean over the real tokens added to temb (context_embedding)

    /// The reference configuration for 28x28x1 images: 1,623,169 parameters unconditional.
    static UNetConfig reference() { return {}; }
    /// Base 16 channels: 408,641 parameters unconditional.
    static UNetConfig small() {
        UNetConfig c;
        c.model_channels = 16;
        return c;
    }
};

template <class T = float>
class UNet {
  public:
    explicit UNet(UNetConfig config, std::uint64_t seed = 0) : config_(std::move(config)) {
        validate();
        Generator init(seed);
        const Index ch = config_.model_channels, temb_ch = 4 * ch;
        temb = nn::TimeMLP<T>(ch, temb_ch, init);
        if (config_.num_classes > 0) class_embedding = nn::Embedding<T>(config_.num_classes + 1, temb_ch, init);
        if (config_.context_pooling) context_embedding = nn::Linear<T>(config_.context_dim, temb_ch, init);
        conv_in = nn::Conv2d<T>(config_.in_channels + config_.concat_channels, ch, 3, 1, init);

        const Index levels = static_cast<Index>(config_.channel_mult.size());
        std::vector<Index> skip_channels = {ch};
        Index c = ch, resolution = config_.image_size;
        for (Index l = 0; l < levels; ++l) {
            Level level;
            const Index out = ch * config_.channel_mult[l];
            for (Index b = 0; b < config_.num_res_blocks; ++b) {
                level.blocks.emplace_back(c, out, temb_ch, config_.groups, config_.dropout, init);
                c = out;
                if (has_attention(resolution)) add_attention(level, c, init);
                skip_channels.push_back(c);
            }
            if (l + 1 < levels) {
                level.resample = nn::Conv2d<T>(c, c, 3, 2, init);
                skip_channels.push_back(c);
                resolution /= 2;
            }
            down.push_back(std::move(level));
        }
        mid_block_1 = nn::ResBlock<T>(c, c, temb_ch, config_.groups, config_.dropout, init);
        if (config_.context_dim > 0) {
            mid_transformer = transformer(c, init);
        } else {
            mid_attn_1 = nn::AttentionBlock<T>(c, config_.heads, config_.groups, init);
        }
        mid_block_2 = nn::ResBlock<T>(c, c, temb_ch, config_.groups, config_.dropout, init);
        up.resize(static_cast<std::size_t>(levels));
        for (Index l = levels - 1; l >= 0; --l) {
            Level& level = up[l];
            const Index out = ch * config_.channel_mult[l];
            for (Index b = 0; b <= config_.num_res_blocks; ++b) {
                level.blocks.emplace_back(c + skip_channels.back(), out, temb_ch, config_.groups, config_.dropout,
                                          init);
                skip_channels.pop_back();
                c = out;
                if (has_attention(resolution)) add_attention(level, c, init);
            }
            if (l > 0) {
                level.resample = nn::Conv2d<T>(c, c, 3, 1, init);
                resolution *= 2;
            }
        }
        norm_out = nn::GroupNorm<T>(config_.groups, c, 1e-5, nn::Activation::silu);
        conv_out = nn::Conv2d<T>(c, config_.out_channels, 3, 1, init);
    }

    const UNetConfig& config() const { return config_; }

    /// Training: dropout on, activations cached for backward. Evaluation (sampling): dropout off and
    /// nothing cached, so a forward pass copies less; backward then throws.
    void set_training(bool training) {
        training_ = training;
        for_each_res_block([training](nn::ResBlock<T>& b) { b.set_training(training); });
        conv_in.set_training(training);
        for (auto* levels : {&down, &up}) {
            for (Level& level : *levels) {
                for (auto& a : level.attentions) a.set_training(training);
                for (auto& a : level.transformers) a.set_training(training);
                level.resample.set_training(training);
            }
        }
        mid_attn_1.set_training(training);
        mid_transformer.set_training(training);
        norm_out.set_training(training), conv_out.set_training(training);
    }
    bool training() const { return training_; }

    /// Evaluation runs a batch larger than this through the network `chunk` samples at a time, so that
    /// a sampler's batch of thousands keeps its activations in cache instead of streaming hundreds of
    /// megabytes per layer. Every sample's computation is the same whatever its batch, so the outputs
    /// are the same bits for any chunk. 0: never chunk. Training always runs the whole batch.
    static constexpr Index default_evaluation_chunk = 16;
    void set_evaluation_chunk(Index chunk) {
        if (chunk < 0) detail::throw_invalid("diffuse::UNet::set_evaluation_chunk", "chunk", chunk, ">= 0 (0: never chunk)");
        evaluation_chunk_ = chunk;
    }
    Index evaluation_chunk() const { return evaluation_chunk_; }

    /// x: [N, Cin, H, W]; t: [N] timesteps; the conditioning: labels [N], class indices in
    /// [0, num_classes] (num_classes meaning "no class"), empty for an unconditional model; a context
    /// [N, L, context_dim] with its mask when context_dim > 0; an image [N, concat_channels, H, W] when
    /// concat_channels > 0. `dropout` draws the dropout masks. Returns [N, Cout, H, W].
    Tensor4<T> forward(const Tensor4<T>& x, const Timesteps& t, const Conditioning<T>& conditioning = {},
                       const Generator& dropout = Generator()) {
        check_input(x, t, conditioning);
        const Index n = x.dimension(0), chunk = evaluation_chunk_;
        if (training_ || chunk == 0 || n <= chunk) return forward_batch(x, t, conditioning, dropout);
        Tensor4<T> y(n, config_.out_channels, x.dimension(2), x.dimension(3));  // [N, Cout, H, W]
        for (Index first = 0; first < n; first += chunk) {
            const Index count = std::min(chunk, n - first);
            const Timesteps t_part(t.begin() + first, t.begin() + first + count);  // [count]
            batch_assign(y, first, forward_batch(batch_slice(x, first, count), t_part,
                                                 slice_conditioning(conditioning, first, count), dropout));
        }
        skips_.clear();  // a chunk's activations are no use to a backward pass
        return y;
    }

    /// dy: [N, Cout, H, W] -> dx: [N, Cin, H, W], the gradient of x_t (not of a concatenated image);
    /// accumulates every parameter gradient, and with a context, sets context_gradient().
    Tensor4<T> backward(const Tensor4<T>& dy) {
        context_gradient_ = Tensor3<T>();
        Tensor4<T> dh = norm_out.backward(conv_out.backward(dy));
        Tensor2<T> demb;
        const auto res_backward = [&](nn::ResBlock<T>& block, const Tensor4<T>& d) {
            auto [dx, de] = block.backward(d);
            if (demb.size() == 0) {
                demb = std::move(de);
            } else {
                add_inplace(demb, de);
            }
            return std::move(dx);
        };

        std::vector<Tensor4<T>> dskips(skips_.size());
        const auto add_skip = [&](std::size_t i, Tensor4<T>&& d) {  // the first gradient is moved in, not copied
            if (dskips[i].size() == 0) dskips[i] = std::move(d); else add_inplace(dskips[i], d);
        };
        std::size_t skip = 0;  // up blocks popped skips from the end; undo in reverse order
        std::size_t used = skip_channels_used_.size();
        const std::size_t first_popped = skips_.size() - skip_channels_used_.size();
        for (std::size_t l = 0; l < up.size(); ++l) {
            Level& level = up[l];
            if (level.resample.out_channels() > 0) dh = nn::upsample_nearest2x_backward(level.resample.backward(dh));
            for (std::size_t b = level.blocks.size(); b-- > 0;) {
                dh = attention_backward(level, b, std::move(dh));
                const Tensor4<T> dcat = res_backward(level.blocks[b], dh);
                --used;
                auto [dprev, dskip] = nn::split_channels(dcat, skip_channels_used_[used]);
                add_skip(first_popped + skip++, std::move(dskip));
                dh = std::move(dprev);
            }
        }
        dh = res_backward(mid_block_2, dh);
        dh = config_.context_dim > 0 ? transformer_backward(mid_transformer, dh) : mid_attn_1.backward(dh);
        dh = res_backward(mid_block_1, dh);
        add_skip(skips_.size() - 1, std::move(dh));
        std::size_t top = skips_.size() - 1;
        for (std::size_t l = down.size(); l-- > 0;) {
            Level& level = down[l];
            if (level.resample.out_channels() > 0) {
                add_skip(top - 1, level.resample.backward(dskips[top]));
                --top;
            }
            for (std::size_t b = level.blocks.size(); b-- > 0;) {
                const Tensor4<T> d = attention_backward(level, b, std::move(dskips[top]));  // not read again
                add_skip(top - 1, res_backward(level.blocks[b], d));
                --top;
            }
        }
        Tensor4<T> dx = conv_in.backward(dskips[0]);
        if (config_.concat_channels > 0) dx = nn::split_channels(dx, config_.in_channels).first;
        temb.backward(demb);
        if (config_.num_classes > 0) class_embedding.backward(demb);
        if (config_.context_pooling) pooling_backward(context_embedding.backward(demb));
        return dx;
    }

    /// The gradient of the context [N, L, context_dim] from the last backward pass (summed over every
    /// transformer block); empty without a context.
    const Tensor3<T>& context_gradient() const { return context_gradient_; }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        temb.for_each_parameter(nn::join_name(prefix, "temb"), fn);
        if (config_.num_classes > 0) class_embedding.for_each_parameter(nn::join_name(prefix, "class_embedding"), fn);
        if (config_.context_pooling) context_embedding.for_each_parameter(nn::join_name(prefix, "context_embedding"), fn);
        conv_in.for_each_parameter(nn::join_name(prefix, "conv_in"), fn);
        const auto visit_levels = [&](std::vector<Level>& levels, const char* name, const char* resample) {
            for (std::size_t l = 0; l < levels.size(); ++l) {
                const std::string at = nn::join_name(prefix, std::string(name) + "." + std::to_string(l));
                for (std::size_t b = 0; b < levels[l].blocks.size(); ++b) {
                    levels[l].blocks[b].for_each_parameter(at + ".block." + std::to_string(b), fn);
                }
                for (std::size_t b = 0; b < levels[l].attentions.size(); ++b) {
                    levels[l].attentions[b].for_each_parameter(at + ".attn." + std::to_string(b), fn);
                }
                for (std::size_t b = 0; b < levels[l].transformers.size(); ++b) {
                    levels[l].transformers[b].for_each_parameter(at + ".attn." + std::to_string(b), fn);
                }
                if (levels[l].resample.out_channels() > 0) {
                    levels[l].resample.for_each_parameter(at + "." + resample + ".conv", fn);
                }
            }
        };
        visit_levels(down, "down", "downsample");
        mid_block_1.for_each_parameter(nn::join_name(prefix, "mid.block_1"), fn);
        if (config_.context_dim > 0) {
            mid_transformer.for_each_parameter(nn::join_name(prefix, "mid.attn_1"), fn);
        } else {
            mid_attn_1.for_each_parameter(nn::join_name(prefix, "mid.attn_1"), fn);
        }
        mid_block_2.for_each_parameter(nn::join_name(prefix, "mid.block_2"), fn);
        visit_levels(up, "up", "upsample");
        norm_out.for_each_parameter(nn::join_name(prefix, "norm_out"), fn);
        conv_out.for_each_parameter(nn::join_name(prefix, "conv_out"), fn);
    }

    /// Floating-point operations (2 per multiply-add) of the convolutions, linear layers and attention
    /// products in one forward pass of one image (with a context of context_length tokens, for a
    /// model with cross-attention); norms and activations are not counted.
    double forward_flops_per_image(Index context_length = 0) const {
        const UNetConfig& c = config_;
        const double ch = static_cast<double>(c.model_channels), temb_ch = 4 * ch;
        double side = static_cast<double>(c.image_size), flops = 0.0;
        const auto conv = [&](double in, double out, double k, double out_side) {
            flops += 2.0 * in * out * k * k * out_side * out_side;
        };
        const auto res = [&](double in, double out) {
            conv(in, out, 3, side);
            conv(out, out, 3, side);
            flops += 2.0 * temb_ch * out;  // temb_proj
            if (in != out) conv(in, out, 1, side);
        };
        const auto attn = [&](double channels) {
            const double p = side * side;
            if (c.context_dim == 0) {
                for (int i = 0; i < 4; ++i) conv(channels, channels, 1, side);  // q, k, v, proj_out
                flops += 4.0 * p * p * channels;                                // Q^T K and V A^T
                return;
            }
            const double width = static_cast<double>(c.context_dim), l = static_cast<double>(context_length);
            flops += 4.0 * p * channels * channels;                                // proj_in, proj_out
            flops += 8.0 * p * channels * channels + 4.0 * p * p * channels;       // attn1: q, k, v, out; Q K^T, A V
            flops += 4.0 * p * channels * channels + 4.0 * l * width * channels +  // attn2: q, out; k, v of the context
                     4.0 * p * l * channels;                                       //        Q K^T, A V
            flops += 24.0 * p * channels * channels;                               // GEGLU: C -> 8C, 4C -> C
        };
        flops += 2.0 * ch * temb_ch + 2.0 * temb_ch * temb_ch;  // time MLP
        if (c.context_pooling) flops += 2.0 * static_cast<double>(c.context_dim) * temb_ch;  // context_embedding
        conv(static_cast<double>(c.in_channels + c.concat_channels), ch, 3, side);
        std::vector<double> skip = {ch};
        double cur = ch;
        const std::size_t levels = c.channel_mult.size();
        for (std::size_t l = 0; l < levels; ++l) {
            const double out = ch * c.channel_mult[l];
            for (Index b = 0; b < c.num_res_blocks; ++b) {
                res(cur, out);
                cur = out;
                if (has_attention(static_cast<Index>(side))) attn(cur);
                skip.push_back(cur);
            }
            if (l + 1 < levels) {
                side /= 2;
                conv(cur, cur, 3, side);
                skip.push_back(cur);
            }
        }
        res(cur, cur);
        attn(cur);
        res(cur, cur);
        for (std::size_t l = levels; l-- > 0;) {
            const double out = ch * c.channel_mult[l];
            for (Index b = 0; b <= c.num_res_blocks; ++b) {
                res(cur + skip.back(), out);
                skip.pop_back();
                cur = out;
                if (has_attention(static_cast<Index>(side))) attn(cur);
            }
            if (l > 0) {
                side *= 2;
                conv(cur, cur, 3, side);
            }
        }
        conv(cur, static_cast<double>(c.out_channels), 3, side);
        return flops;
    }

    struct Level {
        std::vector<nn::ResBlock<T>> blocks;
        std::vector<nn::AttentionBlock<T>> attentions;  // one per block, or none
        std::vector<nn::SpatialTransformer<T>> transformers;  // instead of attentions, with a context
        nn::Conv2d<T> resample;                         // stride-2 conv (down) or conv after 2x (up)
    };

    nn::TimeMLP<T> temb;
    nn::Embedding<T> class_embedding;
    nn::Linear<T> context_embedding;  // [4 ch, context_dim], with context_pooling
    nn::Conv2d<T> conv_in;
    std::vector<Level> down;
    nn::ResBlock<T> mid_block_1;
    nn::AttentionBlock<T> mid_attn_1;
    nn::SpatialTransformer<T> mid_transformer;  // instead of mid_attn_1, with a context
    nn::ResBlock<T> mid_block_2;
    std::vector<Level> up;  // indexed by level, run from the last to the first
    nn::GroupNorm<T> norm_out;  // followed by SiLU, fused
    nn::Conv2d<T> conv_out;

  private:
    nn::SpatialTransformer<T> transformer(Index channels, Generator& init) const {
        if (channels % config_.heads != 0) {
            detail::throw_invalid("diffuse::UNet", "heads", config_.heads, "a divisor of channels = " + std::to_string(channels));
        }
        return nn::SpatialTransformer<T>(channels, config_.heads, channels / config_.heads, config_.context_dim,
                                         config_.groups, init);
    }
    void add_attention(Level& level, Index channels, Generator& init) {
        if (config_.context_dim > 0) {
            level.transformers.push_back(transformer(channels, init));
        } else {
            level.attentions.emplace_back(channels, config_.heads, config_.groups, init);
        }
    }
    // Block b's attention (or transformer) of a level, if it has one.
    Tensor4<T> attend(Level& level, std::size_t b, Tensor4<T> h, const Conditioning<T>& c) {
        if (!level.attentions.empty()) return level.attentions[b].forward(h);
        if (!level.transformers.empty()) return level.transformers[b].forward(h, c.context, c.context_mask);
        return h;
    }
    Tensor4<T> attention_backward(Level& level, std::size_t b, Tensor4<T> dh) {  // dh moved through where there is none
        if (!level.attentions.empty()) return level.attentions[b].backward(dh);
        if (!level.transformers.empty()) return transformer_backward(level.transformers[b], dh);
        return dh;
    }
    Tensor4<T> transformer_backward(nn::SpatialTransformer<T>& block, const Tensor4<T>& dh) {
        auto d = block.backward(dh);
        if (context_gradient_.size() == 0) {
            context_gradient_ = std::move(d.dcontext);
        } else {
            add_inplace(context_gradient_, d.dcontext);
        }
        return std::move(d.dx);
    }

    // The context's mean over its real tokens: [N, L, D] with its mask -> [N, D]; keeps the mask's
    // token counts for the backward pass.
    Tensor2<T> pool_context(const Conditioning<T>& c) {
        const Index n = c.context.dimension(0), l = c.context.dimension(1), d = c.context.dimension(2);
        pool_mask_ = c.context_mask;
        pool_length_ = l;
        Tensor2<T> pooled(n, d);  // [N, D]
        pooled.setZero();
        for (Index s = 0; s < n; ++s) {
            Index real = 0;
            for (Index k = 0; k < l; ++k) {
                if (!pool_mask_.empty() && pool_mask_[static_cast<std::size_t>(s * l + k)] == 0) continue;
                ++real;
                for (Index i = 0; i < d; ++i) pooled(s, i) += c.context(s, k, i);
            }
            for (Index i = 0; i < d; ++i) pooled(s, i) /= static_cast<T>(real);  // check_conditioning: real >= 1
        }
        return pooled;
    }
    // d pooled [N, D] -> the context's gradient: d context[s, k] += d pooled[s] / (real tokens of s), for
    // each real token k of sample s.
    void pooling_backward(const Tensor2<T>& dpooled) {
        const Index n = dpooled.dimension(0), d = dpooled.dimension(1), l = pool_length_;
        if (context_gradient_.size() == 0) {
            context_gradient_ = Tensor3<T>(n, l, d);
            context_gradient_.setZero();
        }
        for (Index s = 0; s < n; ++s) {
            const auto is_real = [&](Index k) { return pool_mask_.empty() || pool_mask_[static_cast<std::size_t>(s * l + k)] != 0; };
            Index real = 0;
            for (Index k = 0; k < l; ++k) real += is_real(k) ? 1 : 0;
            for (Index k = 0; k < l; ++k) {
                if (!is_real(k)) continue;
                for (Index i = 0; i < d; ++i) context_gradient_(s, k, i) += dpooled(s, i) / static_cast<T>(real);
            }
        }
    }

    bool has_attention(Index resolution) const {
        const auto& r = config_.attention_resolutions;
        return std::find(r.begin(), r.end(), resolution) != r.end();
    }

    template <class Fn>
    void for_each_res_block(Fn&& fn) {
        for (auto* levels : {&down, &up}) {
            for (Level& level : *levels) for (auto& b : level.blocks) fn(b);
        }
        fn(mid_block_1);
        fn(mid_block_2);
    }

    // forward() of a checked input, the whole batch at once.
    Tensor4<T> forward_batch(const Tensor4<T>& x, const Timesteps& t, const Conditioning<T>& c,
                             const Generator& dropout) {
        Tensor2<T> emb = temb.forward(t);
        if (config_.num_classes > 0) {
            const Tensor2<T> e = class_embedding.forward(c.labels);
            add_inplace(emb, e);
        }
        if (config_.context_pooling) add_inplace(emb, context_embedding.forward(pool_context(c)));
        Index block_index = 0;
        const auto res = [&](nn::ResBlock<T>& block, auto&& in) {  // a temporary input is moved, not copied
            // Each block's masks come from its own stretch of the stream: 2^40 blocks apart.
            Generator stream(dropout.seed(), dropout.offset() + (static_cast<std::uint64_t>(block_index++) << 40));
            return block.forward(std::forward<decltype(in)>(in), emb, stream);
        };

        skips_.clear();
        std::size_t skip_count = 1;
        for (const Level& level : down) skip_count += level.blocks.size() + (level.resample.out_channels() > 0 ? 1 : 0);
        // A vector of tensors moves them when it grows, and the layers below borrow them (std::cref:
        // read in backward, not copied), so it must not grow.
        skips_.reserve(skip_count);
        skips_.push_back(config_.concat_channels > 0 ? conv_in.forward(nn::concat_channels(x, c.concat)) : conv_in.forward(x));
        for (Level& level : down) {
            for (std::size_t b = 0; b < level.blocks.size(); ++b) {
                skips_.push_back(attend(level, b, res(level.blocks[b], std::cref(skips_.back())), c));
            }
            if (level.resample.out_channels() > 0) skips_.push_back(level.resample.forward(std::cref(skips_.back())));
        }
        assert(skips_.size() == skip_count);
        Tensor4<T> h = res(mid_block_1, std::cref(skips_.back()));
        h = config_.context_dim > 0 ? mid_transformer.forward(h, c.context, c.context_mask) : mid_attn_1.forward(h);
        h = res(mid_block_2, std::move(h));
        std::size_t skip = skips_.size();
        skip_channels_used_.clear();
        for (Index l = static_cast<Index>(up.size()) - 1; l >= 0; --l) {
            Level& level = up[l];
            for (std::size_t b = 0; b < level.blocks.size(); ++b) {
                const Tensor4<T>& s = skips_[--skip];
                skip_channels_used_.push_back(h.dimension(1));
                h = attend(level, b, res(level.blocks[b], nn::concat_channels(h, s)), c);
            }
            if (level.resample.out_channels() > 0) h = level.resample.forward(nn::upsample_nearest2x(h));
        }
        return conv_out.forward(norm_out.forward(std::move(h)));
    }

    void validate() const {
        constexpr const char* where = "diffuse::UNet";
        const UNetConfig& c = config_;
        if (c.in_channels < 1) detail::throw_invalid(where, "in_channels", c.in_channels, "at least 1");
        if (c.out_channels < 1) detail::throw_invalid(where, "out_channels", c.out_channels, "at least 1");
        if (c.model_channels < 1) detail::throw_invalid(where, "model_channels", c.model_channels, "at least 1");
        if (c.channel_mult.empty()) detail::throw_invalid(where, "channel_mult.size()", 0, "at least one level");
        // before any `% c.groups` below: groups = 0 would be a division by zero
        if (c.groups < 1) detail::throw_invalid(where, "groups", c.groups, "at least 1");
        for (std::size_t l = 0; l < c.channel_mult.size(); ++l) {
            if (c.channel_mult[l] < 1) {
                detail::throw_invalid(where, "channel_mult[" + std::to_string(l) + "]", c.channel_mult[l], "at least 1");
            }
            if ((c.model_channels * c.channel_mult[l]) % c.groups != 0) {
                detail::throw_invalid(where, "groups", c.groups,
                                      "a divisor of every level's channel count (level " + std::to_string(l) +
                                          " has " + std::to_string(c.model_channels * c.channel_mult[l]) + ")");
            }
        }
        if (c.model_channels % c.groups != 0) {
            detail::throw_invalid(where, "groups", c.groups,
                                  "a divisor of model_channels = " + std::to_string(c.model_channels));
        }
        if (c.num_res_blocks < 1) detail::throw_invalid(where, "num_res_blocks", c.num_res_blocks, "at least 1");
        if (!(c.dropout >= 0.0 && c.dropout < 1.0)) detail::throw_invalid(where, "dropout", c.dropout, "a value in [0, 1)");
        if (c.num_classes < 0) detail::throw_invalid(where, "num_classes", c.num_classes, ">= 0 (0: unconditional)");
        if (c.context_dim < 0) detail::throw_invalid(where, "context_dim", c.context_dim, ">= 0 (0: no cross-attention)");
        if (c.concat_channels < 0) detail::throw_invalid(where, "concat_channels", c.concat_channels, ">= 0 (0: nothing concatenated)");
        if (c.context_pooling && c.context_dim == 0) {
            detail::throw_invalid(where, "context_pooling", "true", "false without a context (context_dim = 0)");
        }
        const Index halvings = static_cast<Index>(c.channel_mult.size()) - 1;
        if (c.image_size < 1 || c.image_size % (Index{1} << halvings) != 0) {
            detail::throw_invalid(where, "image_size", c.image_size,
                                  "a size divisible by 2^" + std::to_string(halvings) + " (one halving per level after the first)");
        }
    }

    void check_input(const Tensor4<T>& x, const Timesteps& t, const Conditioning<T>& conditioning) const {
        const std::vector<int>& labels = conditioning.labels;
        constexpr const char* where = "diffuse::UNet::forward";
        const Index halvings = static_cast<Index>(config_.channel_mult.size()) - 1, factor = Index{1} << halvings;
        if (x.dimension(0) < 1 || x.dimension(1) != config_.in_channels) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()),
                                  "[N, " + std::to_string(config_.in_channels) + ", H, W] with N >= 1");
        }
        if (x.dimension(2) % factor != 0 || x.dimension(3) % factor != 0 || x.dimension(2) < 1 || x.dimension(3) < 1) {
            detail::throw_invalid(where, "x.shape", shape_string(x.dimensions()),
                                  "H and W divisible by " + std::to_string(factor) + ", the U-Net halves them " +
                                      std::to_string(halvings) + " times");
        }
        if (static_cast<Index>(t.size()) != x.dimension(0)) {
            detail::throw_invalid(where, "t.size()", t.size(), "one timestep per sample, " + std::to_string(x.dimension(0)));
        }
        if (config_.num_classes > 0) {
            if (static_cast<Index>(labels.size()) != x.dimension(0)) {
                detail::throw_invalid(where, "labels.size()", labels.size(),
                                      "one label per sample, " + std::to_string(x.dimension(0)));
            }
            for (std::size_t i = 0; i < labels.size(); ++i) {
                if (labels[i] < 0 || labels[i] > config_.num_classes) {
                    detail::throw_invalid(where, "labels[" + std::to_string(i) + "]", labels[i],
                                          "a class in [0, " + std::to_string(config_.num_classes) + "), or " +
                                              std::to_string(config_.num_classes) + " for no class");
                }
            }
        } else if (!labels.empty()) {
            detail::throw_invalid(where, "labels.size()", labels.size(), "0: the model is unconditional (num_classes = 0)");
        }
        check_conditioning(where, conditioning, x.dimension(0), x.dimension(2), x.dimension(3));
        const Index context_dim = config_.context_dim, cc = config_.concat_channels;
        if (context_dim > 0 && (!conditioning.has_context() || conditioning.context.dimension(2) != context_dim)) {
            detail::throw_invalid(where, "context.shape",
                                  conditioning.has_context() ? shape_string(conditioning.context.dimensions()) : std::string("none"),
                                  "[N, L, " + std::to_string(context_dim) + "]: the model attends to a context of that width");
        }
        if (context_dim == 0 && conditioning.has_context()) {
            detail::throw_invalid(where, "context.shape", shape_string(conditioning.context.dimensions()),
                                  "none: the model has no cross-attention (context_dim = 0)");
        }
        if (cc > 0 && (!conditioning.has_concat() || conditioning.concat.dimension(1) != cc)) {
            detail::throw_invalid(where, "concat.shape",
                                  conditioning.has_concat() ? shape_string(conditioning.concat.dimensions()) : std::string("none"),
                                  "[N, " + std::to_string(cc) + ", H, W]: the image the model concatenates to x_t");
        }
        if (conditioning.has_prompt()) {
            detail::throw_invalid(where, "conditioning.prompt", std::to_string(conditioning.prompt.batch) + " prompts",
                                  "none: a U-Net attends to a context; a PromptUNet embeds prompts into one");
        }
        if (cc == 0 && conditioning.has_concat()) {
            detail::throw_invalid(where, "concat.shape", shape_string(conditioning.concat.dimensions()),
                                  "none: the model concatenates nothing (concat_channels = 0)");
        }
    }

    UNetConfig config_;
    std::vector<Tensor4<T>> skips_;           // the down path's outputs, kept for the up path
    std::vector<Index> skip_channels_used_;   // channels of h at each concatenation, in forward order
    Tensor3<T> context_gradient_;             // [N, L, context_dim], from the last backward
    KeyMask pool_mask_;                       // [N * L], the pooled context's mask (context_pooling)
    Index pool_length_ = 0;                   // L of the pooled context
    bool training_ = true;                    // the mode set_training set last
    Index evaluation_chunk_ = default_evaluation_chunk;  // set_evaluation_chunk
};

}  // namespace diffuse
