#pragma once
// A prompt encoder that needs nothing from the internet: the role CLIP's text transformer plays in
// Stable Diffusion, at the scale of 28x28 data, trained jointly with the U-Net instead of frozen.
//   Tokenizer: words over a fixed vocabulary; token 0, <start>, begins every prompt, so that even the
//              empty prompt (the null condition of guidance) has a token to attend to; a batch is
//              padded to its longest prompt and the key mask marks the padding.
//   h = token_embedding[ids] + position_embedding[position]              [N, L, D]
//   per layer, pre-LN as CLIP:  h += self_attn(layer_norm1(h), mask);  h += mlp(layer_norm2(h))
//   context = final_layer_norm(h)                                        [N, L, D], with the mask
// Departures from CLIP, at this scale: attention is bidirectional over the real tokens (no causal
// mask), and the MLP is the GEGLU feed-forward of LDM's transformer blocks (nn/feed_forward.hpp).

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/cross_attention.hpp"
#include "diffuse/nn/embedding.hpp"
#include "diffuse/nn/feed_forward.hpp"
#include "diffuse/nn/layer_norm.hpp"
#include "diffuse/nn/parameter.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

/// Words over a fixed vocabulary. A prompt is lower-cased and split at every character that is not a
/// letter, a digit or '-'; a word outside the vocabulary is an error that names it (no unknown-word
/// token: a prompt the model cannot read should not sample as if it could).
class Tokenizer {
  public:
    static constexpr int start = 0;  // <start>, the first token of every prompt

    Tokenizer() = default;
    /// words: the vocabulary, ids 1, 2, ... in this order; max_length: the most tokens of a prompt,
    /// <start> included.
    Tokenizer(std::vector<std::string> words, Index max_length) : words_(std::move(words)), max_length_(max_length) {
        constexpr const char* where = "diffuse::Tokenizer";
        if (max_length < 1) detail::throw_invalid(where, "max_length", max_length, "at least 1 (the <start> token)");
        for (std::size_t i = 0; i < words_.size(); ++i) {
            const std::string& w = words_[i];
            if (w.empty() || split(w) != std::vector<std::string>{w}) {
                detail::throw_invalid(where, "words[" + std::to_string(i) + "]", "\"" + w + "\"",
                                      "one lower-case word of letters, digits and '-'");
            }
            if (!ids_.emplace(w, static_cast<int>(i) + 1).second) {
                detail::throw_invalid(where, "words[" + std::to_string(i) + "]", "\"" + w + "\"", "a word not already in the vocabulary");
            }
        }
    }

    const std::vector<std::string>& words() const { return words_; }
    Index vocabulary_size() const { return static_cast<Index>(words_.size()) + 1; }  // with <start>
    Index max_length() const { return max_length_; }

    /// The words of a prompt: lower-cased, split at every character other than a letter, digit or '-'.
    static std::vector<std::string> split(const std::string& prompt) {
        std::vector<std::string> out;
        std::string word;
        for (const char ch : prompt) {
            const unsigned char u = static_cast<unsigned char>(ch);
            if (std::isalnum(u) || ch == '-') {
                word += static_cast<char>(std::tolower(u));
            } else if (!word.empty()) {
                out.push_back(std::move(word));
                word.clear();
            }
        }
        if (!word.empty()) out.push_back(std::move(word));
        return out;
    }

    /// [<start>, w1, w2, ...]
    std::vector<int> encode(const std::string& prompt) const {
        constexpr const char* where = "diffuse::Tokenizer::encode";
        const std::vector<std::string> words = split(prompt);
        if (static_cast<Index>(words.size()) + 1 > max_length_) {
            detail::throw_invalid(where, "the prompt \"" + prompt + "\"", std::to_string(words.size()) + " words",
                                  "at most " + std::to_string(max_length_ - 1) + " words (max_length " +
                                      std::to_string(max_length_) + " tokens with <start>)");
        }
        std::vector<int> ids = {start};
        for (const std::string& w : words) {
            const auto it = ids_.find(w);
            if (it == ids_.end()) {
                detail::throw_invalid(where, "the word \"" + w + "\" of \"" + prompt + "\"", "not in the vocabulary",
                                      "one of the tokenizer's " + std::to_string(words_.size()) + " words");
            }
            ids.push_back(it->second);
        }
        return ids;
    }

    /// The words of ids (without <start>), joined by spaces.
    std::string decode(const std::vector<int>& ids) const {
        std::string out;
        for (const int id : ids) {
            if (id < 0 || id >= vocabulary_size()) {
                detail::throw_invalid("diffuse::Tokenizer::decode", "id", id, "a token in [0, " + std::to_string(vocabulary_size()) + ")");
            }
            if (id == start) continue;
            if (!out.empty()) out += ' ';
            out += words_[static_cast<std::size_t>(id - 1)];
        }
        return out;
    }

    /// Prompts encoded and padded to the longest of them.
    Tokens batch(const std::vector<std::string>& prompts) const {
        if (prompts.empty()) detail::throw_invalid("diffuse::Tokenizer::batch", "prompts.size()", 0, "at least one prompt");
        std::vector<std::vector<int>> encoded;
        Index length = 1;
        for (const std::string& p : prompts) {
            encoded.push_back(encode(p));
            length = std::max(length, static_cast<Index>(encoded.back().size()));
        }
        Tokens t;
        t.batch = static_cast<Index>(prompts.size());
        t.length = length;
        t.ids.assign(static_cast<std::size_t>(t.batch * length), start);
        t.mask.assign(static_cast<std::size_t>(t.batch * length), 0);
        for (Index n = 0; n < t.batch; ++n) {
            const auto& e = encoded[static_cast<std::size_t>(n)];
            std::copy(e.begin(), e.end(), t.ids.begin() + n * length);
            std::fill_n(t.mask.begin() + n * length, e.size(), std::uint8_t{1});
        }
        return t;
    }

  private:
    std::vector<std::string> words_;
    std::map<std::string, int> ids_;
    Index max_length_ = 1;
};

struct TextEncoderConfig {
    Index vocabulary_size = 1;  // with <start>: Tokenizer::vocabulary_size()
    Index max_length = 16;      // tokens, <start> included
    Index width = 64;           // D, the context's features
    Index layers = 2;
    Index heads = 4;
};

template <class T = float>
class TextEncoder {
  public:
    TextEncoder() = default;
    explicit TextEncoder(TextEncoderConfig config, std::uint64_t seed = 0) : config_(config) {
        constexpr const char* where = "diffuse::TextEncoder";
        if (config.vocabulary_size < 1) detail::throw_invalid(where, "vocabulary_size", config.vocabulary_size, "at least 1");
        if (config.max_length < 1) detail::throw_invalid(where, "max_length", config.max_length, "at least 1");
        if (config.layers < 0) detail::throw_invalid(where, "layers", config.layers, ">= 0");
        if (config.heads < 1 || config.width % config.heads != 0) {
            detail::throw_invalid(where, "heads", config.heads, "a divisor of width = " + std::to_string(config.width));
        }
        Generator init(seed);
        token_embedding = nn::Embedding<T>(config.vocabulary_size, config.width, init);
        token_embedding.weight.value() *= T(0.02);  // CLIP's initialisation: N(0, 0.02^2) tokens, N(0, 0.01^2) positions
        position_embedding = nn::Parameter<T>({config.max_length, config.width});
        init.normal(position_embedding.data(), position_embedding.size());
        position_embedding.value() *= T(0.01);
        for (Index l = 0; l < config.layers; ++l) {
            Layer layer;
            layer.layer_norm1 = nn::LayerNorm<T>(config.width);
            layer.self_attn = nn::CrossAttention<T>(config.width, 0, config.heads, config.width / config.heads, init);
            layer.layer_norm2 = nn::LayerNorm<T>(config.width);
            layer.mlp = nn::FeedForward<T>(config.width, 4, init);
            layers.push_back(std::move(layer));
        }
        final_layer_norm = nn::LayerNorm<T>(config.width);
    }

    const TextEncoderConfig& config() const { return config_; }

    /// tokens [N, L] -> the context [N, L, D] (its mask is tokens.mask).
    Tensor3<T> forward(const Tokens& tokens) {
        constexpr const char* where = "diffuse::TextEncoder::forward";
        if (tokens.batch < 1 || tokens.length < 1 || static_cast<Index>(tokens.ids.size()) != tokens.batch * tokens.length) {
            detail::throw_invalid(where, "tokens.ids.size()", tokens.ids.size(),
                                  "batch x length = " + std::to_string(tokens.batch) + " x " + std::to_string(tokens.length) + ", at least 1 x 1");
        }
        if (tokens.length > config_.max_length) {
            detail::throw_invalid(where, "tokens.length", tokens.length, "at most max_length = " + std::to_string(config_.max_length));
        }
        check_key_mask(where, "tokens.mask", tokens.mask, tokens.batch, tokens.length);
        mask_ = tokens.mask;
        const Index n = tokens.batch, l = tokens.length, d = config_.width;
        const Tensor2<T> e = token_embedding.forward(tokens.ids);  // [N * L, D]
        Tensor3<T> h(n, l, d);
        for (Index r = 0; r < n * l; ++r) {
            const T* pos = position_embedding.data() + (r % l) * d;
            for (Index i = 0; i < d; ++i) h.data()[r * d + i] = e.data()[r * d + i] + pos[i];
        }
        for (Layer& layer : layers) {
            add_inplace(h, layer.self_attn.forward(layer.layer_norm1.forward(h), nullptr, mask_));
            add_inplace(h, layer.mlp.forward(layer.layer_norm2.forward(h)));
        }
        return final_layer_norm.forward(h);
    }

    /// dcontext [N, L, D] -> every parameter's gradient (tokens have none).
    void backward(const Tensor3<T>& dcontext) {
        Tensor3<T> dh = final_layer_norm.backward(dcontext);
        for (std::size_t k = layers.size(); k-- > 0;) {
            Layer& layer = layers[k];
            add_inplace(dh, layer.layer_norm2.backward(layer.mlp.backward(dh)));
            add_inplace(dh, layer.layer_norm1.backward(layer.self_attn.backward(dh).dx));
        }
        const Index rows = dh.dimension(0) * dh.dimension(1), l = dh.dimension(1), d = config_.width;
        token_embedding.backward(Tensor2<T>(dh.reshape(std::array<Index, 2>{rows, d})));
        for (Index r = 0; r < rows; ++r) {
            T* pos = position_embedding.grad() + (r % l) * d;
            for (Index i = 0; i < d; ++i) pos[i] += dh.data()[r * d + i];
        }
    }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        token_embedding.for_each_parameter(nn::join_name(prefix, "token_embedding"), fn);
        position_embedding.visit(nn::join_name(prefix, "position_embedding.weight"), fn);
        for (std::size_t k = 0; k < layers.size(); ++k) {
            const std::string at = nn::join_name(prefix, "layers." + std::to_string(k));
            layers[k].layer_norm1.for_each_parameter(at + ".layer_norm1", fn);
            layers[k].self_attn.for_each_parameter(at + ".self_attn", fn);
            layers[k].layer_norm2.for_each_parameter(at + ".layer_norm2", fn);
            layers[k].mlp.for_each_parameter(at + ".mlp", fn);
        }
        final_layer_norm.for_each_parameter(nn::join_name(prefix, "final_layer_norm"), fn);
    }

    struct Layer {
        nn::LayerNorm<T> layer_norm1;
        nn::CrossAttention<T> self_attn;
        nn::LayerNorm<T> layer_norm2;
        nn::FeedForward<T> mlp;
    };

    nn::Embedding<T> token_embedding;        // [V, D]
    nn::Parameter<T> position_embedding;     // [max_length, D]
    std::vector<Layer> layers;
    nn::LayerNorm<T> final_layer_norm;

  private:
    TextEncoderConfig config_;
    KeyMask mask_;  // [N * L], of the last forward
};

}  // namespace diffuse
