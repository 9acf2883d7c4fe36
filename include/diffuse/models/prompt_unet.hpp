#pragma once
// A prompt-conditioned diffusion model: a text encoder (models/text_encoder.hpp) makes the context
// from the prompt's tokens and a U-Net with cross-attention (models/unet.hpp, context_dim = the
// encoder's width) attends to it; both are trained together, as one model, by optim::Trainer:
//     context = text_encoder(prompt)          [N, L, D], with the prompt's mask
//     output  = unet(x_t, t, context, ...)    [N, C, H, W]
// backward runs the U-Net's backward, then the encoder's on the context's gradient. Parameters are
// named text_encoder.* and unet.* (as LDM keeps cond_stage_model.* beside model.diffusion_model.*).
// The conditioning holds the prompt (Conditioning::prompt), and may hold labels and a concatenated
// image for the U-Net too; a context given directly is refused (the encoder makes it).

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/models/text_encoder.hpp"
#include "diffuse/models/unet.hpp"
#include "diffuse/nn/parameter.hpp"

#include <string>
#include <utility>

namespace diffuse {

template <class T = float>
class PromptUNet {
  public:
    /// unet's context_dim is set to the encoder's width.
    PromptUNet(TextEncoderConfig text, UNetConfig unet_config, std::uint64_t seed = 0)
        : text_encoder(text, derive_seed(seed, 1)), unet(with_context(std::move(unet_config), text.width), seed) {}

    const UNetConfig& config() const { return unet.config(); }
    const TextEncoderConfig& text_config() const { return text_encoder.config(); }

    void set_training(bool training) {
        training_ = training;
        unet.set_training(training);
    }
    bool training() const { return training_; }

    /// x: [N, C, H, W]; t: [N]; conditioning with a prompt of N token sequences -> [N, C', H, W]
    Tensor4<T> forward(const Tensor4<T>& x, const Timesteps& t, const Conditioning<T>& conditioning = {},
                       const Generator& dropout = Generator()) {
        constexpr const char* where = "diffuse::PromptUNet::forward";
        if (!conditioning.has_prompt()) {
            detail::throw_invalid(where, "conditioning.prompt", "none", "the prompts' tokens, one per sample (Tokenizer::batch)");
        }
        if (conditioning.has_context()) {
            detail::throw_invalid(where, "conditioning.context", shape_string(conditioning.context.dimensions()),
                                  "none: the text encoder makes the context from the prompt");
        }
        check_conditioning(where, conditioning, x.dimension(0), x.dimension(2), x.dimension(3));
        Conditioning<T> inner;
        inner.labels = conditioning.labels;
        inner.concat = conditioning.concat;
        inner.context = text_encoder.forward(conditioning.prompt);  // [N, L, D]
        inner.context_mask = conditioning.prompt.mask;
        return unet.forward(x, t, inner, dropout);
    }

    /// dy: [N, C', H, W] -> dx: [N, C, H, W]; every parameter's gradient, the encoder's included.
    Tensor4<T> backward(const Tensor4<T>& dy) {
        Tensor4<T> dx = unet.backward(dy);
        text_encoder.backward(unet.context_gradient());
        return dx;
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        text_encoder.for_each_parameter(nn::join_name(prefix, "text_encoder"), fn);
        unet.for_each_parameter(nn::join_name(prefix, "unet"), fn);
    }

    TextEncoder<T> text_encoder;
    UNet<T> unet;

  private:
    static UNetConfig with_context(UNetConfig c, Index width) {
        c.context_dim = width;
        return c;
    }
    bool training_ = true;
};

}  // namespace diffuse
