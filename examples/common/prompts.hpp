#pragma once
// The 28x28 example's prompt model: the tokenizer and text encoder it is built with, the captions
// it is trained on (captions.hpp, drawn anew per image per step), and the prompt model as the report
// and the samplers call it. Not part of the library.

#include "common/captions.hpp"

#include <diffuse/core/conditioning.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/models/text_encoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/samplers/guidance.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace examples {

using diffuse::Index;

/// Prompts of at most this many tokens, <start> included: the longest caption, "a dark narrow ankle
/// boot", is 6.
inline constexpr Index prompt_max_length = 8;

/// The tokenizer of the captions' words.
inline diffuse::Tokenizer caption_tokenizer() { return diffuse::Tokenizer(caption_vocabulary(), prompt_max_length); }

/// The text encoder of the example's prompt model: 64 features, 2 layers of 4 heads.
inline diffuse::TextEncoderConfig caption_text_encoder(const diffuse::Tokenizer& tokenizer) {
    diffuse::TextEncoderConfig c;
    c.vocabulary_size = tokenizer.vocabulary_size();
    c.max_length = tokenizer.max_length();
    c.width = 64;
    c.layers = 2;
    c.heads = 4;
    return c;
}

/// The prompt each class is sampled with when a class is asked for ("a t-shirt", ..., "a ankle boot"
/// reads badly, so "an ankle boot" is not in the vocabulary: the article is "a" throughout).
inline std::vector<std::string> class_prompts() {
    std::vector<std::string> out;
    for (const auto& nouns : fashion_mnist_nouns()) out.push_back("a " + nouns.front());
    return out;
}

/// Captions of the training images, drawn per image per step: each image's attributes are measured
/// once; the words of a step's captions come from stream "captions" of the run's seed at that step,
/// so that (seed, step) alone decide them and a resumed run draws the same.
class CaptionDrawer {
  public:
    static constexpr double drop = 0.2;  // each word but the noun left out with this probability

    /// images: [N, 1, 28, 28] in [-1, 1]; labels: [N] (at least N).
    CaptionDrawer(const diffuse::Tensor4<float>& images, const std::vector<int>& labels, std::uint64_t seed)
        : labels_(labels.begin(), labels.begin() + images.dimension(0)), seed_(diffuse::derive_seed(seed, 0x63617074ULL)) {
        const Index side = images.dimension(2), per = images.dimension(1) * side * images.dimension(3);
        for (Index i = 0; i < images.dimension(0); ++i) attributes_.push_back(measure_attributes(images.data() + i * per, side));
        thirds_ = attribute_thirds(attributes_, labels_, static_cast<int>(fashion_mnist_nouns().size()));
    }

    const AttributeThirds& thirds() const { return thirds_; }
    const std::vector<ImageAttributes>& attributes() const { return attributes_; }

    /// The captions of images `indices` at training step `step`.
    std::vector<std::string> draw(const std::vector<Index>& indices, long step) const {
        diffuse::Generator generator(diffuse::derive_seed(seed_, static_cast<std::uint64_t>(step)));
        std::vector<double> u(4 * indices.size());
        generator.uniform(u.data(), static_cast<Index>(u.size()));
        std::vector<std::string> out;
        for (std::size_t b = 0; b < indices.size(); ++b) {
            const auto i = static_cast<std::size_t>(indices[b]);
            out.push_back(caption(labels_[i], attributes_[i], thirds_, drop, {u[4 * b], u[4 * b + 1], u[4 * b + 2], u[4 * b + 3]}));
        }
        return out;
    }

  private:
    std::vector<int> labels_;
    std::vector<ImageAttributes> attributes_;
    AttributeThirds thirds_;
    std::uint64_t seed_;
};

/// The prompt model as the samplers call it, in evaluation mode: guidance scale 1 calls it as it is,
/// anything else wraps it in classifier-free guidance against the empty prompt (one call on the
/// doubled batch) at the timesteps of `interval`. The model must outlive the callback.
inline diffuse::ModelFn<float> guided_prompt_model(diffuse::PromptUNet<float>& model, double guidance_scale,
                                                   diffuse::GuidanceInterval interval = {}) {
    model.set_training(false);
    diffuse::ModelFn<float> plain = diffuse::model_fn<float>(model);
    if (guidance_scale == 1.0) return plain;
    return diffuse::classifier_free_guidance<float>(plain, diffuse::null_prompt<float>(), guidance_scale, interval);
}

/// A prompt model called with class labels, as the class-conditional report calls its models: label k
/// becomes prompts[k], the "no class" label prompts.size() the empty prompt. The prompt model's own
/// guidance (guided_prompt_model) applies inside.
inline diffuse::ModelFn<float> labels_as_prompts(diffuse::ModelFn<float> prompt_model, diffuse::Tokenizer tokenizer,
                                                 std::vector<std::string> prompts) {
    return [model = std::move(prompt_model), tokenizer = std::move(tokenizer), prompts = std::move(prompts)](
               const diffuse::Tensor4<float>& x, const diffuse::Timesteps& t, const diffuse::Conditioning<float>& c) {
        const Index n = x.dimension(0);
        if (static_cast<Index>(c.labels.size()) != n) {
            diffuse::detail::throw_invalid("examples::labels_as_prompts", "labels.size()", c.labels.size(),
                                           "one class per sample, " + std::to_string(n));
        }
        std::vector<std::string> text;
        for (const int k : c.labels) {
            if (k < 0 || k > static_cast<int>(prompts.size())) {
                diffuse::detail::throw_invalid("examples::labels_as_prompts", "label", k,
                                               "a class in [0, " + std::to_string(prompts.size()) + "]");
            }
            text.push_back(k == static_cast<int>(prompts.size()) ? std::string() : prompts[static_cast<std::size_t>(k)]);
        }
        diffuse::Conditioning<float> with_prompts;
        with_prompts.prompt = tokenizer.batch(text);
        with_prompts.concat = c.concat;
        return model(x, t, with_prompts);
    };
}

}  // namespace examples
