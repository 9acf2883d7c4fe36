#pragma once
// What a model is told besides x_t and t: the conditioning of Stable Diffusion's three kinds, each
// optional, each with one entry per sample of the batch:
//  - class labels, added to the time embedding (the class-conditional U-Net);
//  - a context: a sequence of token embeddings per sample (a prompt, through a text encoder), which
//    the U-Net's transformer blocks attend to by cross-attention, with a key padding mask so that
//    prompts of different lengths share a batch;
//  - an image concatenated to x_t along the channels, spatially aligned with it (a low-resolution
//    image for super-resolution, a masked image and its mask for inpainting);
//  - a prompt's tokens, for a model that embeds them itself (models/prompt_unet.hpp: a text encoder
//    trained with the U-Net makes the context from them).
// A sampler hands it to the model unchanged at every step; guidance doubles it (samplers/guidance.hpp).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

/// A key padding mask over a batch of token sequences [N, L]: mask[n * L + j] != 0 when token j of
/// sample n is real, 0 when it is padding. Empty: every token is real.
using KeyMask = std::vector<std::uint8_t>;

/// Throws unless `mask` is empty or [batch * length] with a real token in every sample.
inline void check_key_mask(const char* where, const std::string& name, const KeyMask& mask, Index batch, Index length) {
    if (mask.empty()) return;
    if (static_cast<Index>(mask.size()) != batch * length) {
        detail::throw_invalid(where, name + ".size()", mask.size(),
                              "one entry per context token, " + std::to_string(batch) + " x " + std::to_string(length) + ", or none");
    }
    for (Index s = 0; s < batch; ++s) {
        const auto first = mask.begin() + s * length;
        if (std::none_of(first, first + length, [](std::uint8_t m) { return m != 0; })) {
            detail::throw_invalid(where, name + " of sample " + std::to_string(s), "every token padding",
                                  "at least one real token to attend to");
        }
    }
}

/// A batch of tokenised prompts, padded to its longest (models/text_encoder.hpp's Tokenizer): ids
/// [N * L] (padding holds id 0, <start>, masked out), mask [N * L] (1: a real token).
struct Tokens {
    Index batch = 0, length = 0;
    std::vector<int> ids;
    KeyMask mask;

    bool empty() const { return batch == 0; }
};

template <class T>
struct Conditioning {
    std::vector<int> labels;  // [N] class per sample, or empty
    Tensor3<T> context;       // [N, L, D] token embeddings per sample, or empty
    KeyMask context_mask;     // [N * L], or empty: every token of the context is real
    Tensor4<T> concat;        // [N, Cc, H, W] concatenated to x_t, or empty
    Tokens prompt;            // [N, L] token ids with their mask, or empty

    Conditioning() = default;
    /// Labels alone, so that model(x_t, t, labels) reads as before there was more to condition on.
    Conditioning(std::vector<int> class_labels) : labels(std::move(class_labels)) {}  // NOLINT: implicit on purpose
    Conditioning(std::initializer_list<int> class_labels) : labels(class_labels) {}
    /// A labels-only model's callback, (x_t, t, const std::vector<int>& labels), takes a Conditioning
    /// as its labels.
    operator const std::vector<int>&() const { return labels; }  // NOLINT: implicit on purpose

    bool has_labels() const { return !labels.empty(); }
    bool has_context() const { return context.size() > 0; }
    bool has_concat() const { return concat.size() > 0; }
    bool has_prompt() const { return !prompt.empty(); }
    bool empty() const { return !has_labels() && !has_context() && !has_concat() && !has_prompt(); }
};

/// Throws unless every part present has one entry per sample of a batch of `batch` images of
/// height x width, and the mask (if any) one per context token with a real token in each sample.
template <class T>
void check_conditioning(const char* where, const Conditioning<T>& c, Index batch, Index height, Index width) {
    const std::string n = std::to_string(batch);
    if (c.has_labels() && static_cast<Index>(c.labels.size()) != batch) {
        detail::throw_invalid(where, "labels.size()", c.labels.size(), "one label per sample, " + n + ", or none");
    }
    if (c.has_context() && c.context.dimension(0) != batch) {
        detail::throw_invalid(where, "context.shape", shape_string(c.context.dimensions()), "[" + n + ", L, D]: one sequence per sample");
    }
    if (!c.context_mask.empty() && !c.has_context()) {
        detail::throw_invalid(where, "context_mask.size()", c.context_mask.size(), "0: there is no context");
    }
    if (c.has_context()) check_key_mask(where, "context_mask", c.context_mask, batch, c.context.dimension(1));
    if (c.has_prompt()) {
        const Tokens& p = c.prompt;
        if (p.batch != batch || p.length < 1 || static_cast<Index>(p.ids.size()) != p.batch * p.length) {
            detail::throw_invalid(where, "prompt", std::to_string(p.batch) + " x " + std::to_string(p.length) + " tokens in " +
                                      std::to_string(p.ids.size()) + " ids",
                                  "one prompt per sample, " + n + " x L tokens");
        }
        check_key_mask(where, "prompt.mask", p.mask, p.batch, p.length);
    }
    if (c.has_concat() && (c.concat.dimension(0) != batch || c.concat.dimension(2) != height || c.concat.dimension(3) != width)) {
        detail::throw_invalid(where, "concat.shape", shape_string(c.concat.dimensions()),
                              "[" + n + ", C, " + std::to_string(height) + ", " + std::to_string(width) +
                                  "]: one image per sample, the size of x_t");
    }
}

/// Prompts [first, first + count) of a batch of tokens.
inline Tokens slice_tokens(const Tokens& t, Index first, Index count) {
    Tokens out;
    out.batch = count;
    out.length = t.length;
    out.ids.assign(t.ids.begin() + first * t.length, t.ids.begin() + (first + count) * t.length);
    if (!t.mask.empty()) out.mask.assign(t.mask.begin() + first * t.length, t.mask.begin() + (first + count) * t.length);
    return out;
}

/// [a; b], padded to the longer prompts (id 0, masked).
inline Tokens concat_tokens(const Tokens& a, const Tokens& b) {
    Tokens out;
    out.batch = a.batch + b.batch;
    out.length = std::max(a.length, b.length);
    out.ids.assign(static_cast<std::size_t>(out.batch * out.length), 0);
    out.mask.assign(static_cast<std::size_t>(out.batch * out.length), 0);
    const auto place = [&out](const Tokens& t, Index at) {
        for (Index s = 0; s < t.batch; ++s) {
            for (Index j = 0; j < t.length; ++j) {
                const std::size_t to = static_cast<std::size_t>((at + s) * out.length + j), from = static_cast<std::size_t>(s * t.length + j);
                out.ids[to] = t.ids[from];
                out.mask[to] = t.mask.empty() ? 1 : t.mask[from];
            }
        }
    };
    place(a, 0);
    place(b, a.batch);
    return out;
}

/// Samples [first, first + count) of a conditioning.
template <class T>
Conditioning<T> slice_conditioning(const Conditioning<T>& c, Index first, Index count) {
    Conditioning<T> out;
    if (c.has_labels()) out.labels.assign(c.labels.begin() + first, c.labels.begin() + first + count);
    if (c.has_context()) {
        out.context = batch_slice(c.context, first, count);
        const Index l = c.context.dimension(1);
        if (!c.context_mask.empty()) out.context_mask.assign(c.context_mask.begin() + first * l, c.context_mask.begin() + (first + count) * l);
    }
    if (c.has_concat()) out.concat = batch_slice(c.concat, first, count);
    if (c.has_prompt()) out.prompt = slice_tokens(c.prompt, first, count);
    return out;
}

/// [a; b]: the samples of a, then those of b. Contexts of different lengths are padded to the longer
/// (with zeros), and the mask says which tokens are padding. Both must have the same parts.
template <class T>
Conditioning<T> concat_conditioning(const Conditioning<T>& a, const Conditioning<T>& b) {
    constexpr const char* where = "diffuse::concat_conditioning";
    if (a.has_labels() != b.has_labels() || a.has_context() != b.has_context() || a.has_concat() != b.has_concat() ||
        a.has_prompt() != b.has_prompt()) {
        detail::throw_invalid(where, "the parts of b", "other parts than a's", "the same parts (labels, context, concat, prompt) as a");
    }
    Conditioning<T> out;
    out.labels = a.labels;
    out.labels.insert(out.labels.end(), b.labels.begin(), b.labels.end());
    if (a.has_context()) {
        if (a.context.dimension(2) != b.context.dimension(2)) {
            detail::throw_invalid(where, "b.context.shape", shape_string(b.context.dimensions()),
                                  "token embeddings as wide as a's, " + std::to_string(a.context.dimension(2)));
        }
        const Index na = a.context.dimension(0), nb = b.context.dimension(0), d = a.context.dimension(2);
        const Index la = a.context.dimension(1), lb = b.context.dimension(1), l = std::max(la, lb);
        out.context = Tensor3<T>(na + nb, l, d);
        out.context.setZero();
        const bool masked = la != lb || !a.context_mask.empty() || !b.context_mask.empty();
        if (masked) out.context_mask.assign(static_cast<std::size_t>((na + nb) * l), 0);
        const auto place = [&](const Conditioning<T>& c, Index n, Index len, Index at) {
            for (Index s = 0; s < n; ++s) {
                std::copy_n(c.context.data() + s * len * d, len * d, out.context.data() + (at + s) * l * d);
                if (!masked) continue;
                for (Index j = 0; j < len; ++j) {
                    out.context_mask[static_cast<std::size_t>((at + s) * l + j)] =
                        c.context_mask.empty() ? 1 : c.context_mask[static_cast<std::size_t>(s * len + j)];
                }
            }
        };
        place(a, na, la, 0);
        place(b, nb, lb, na);
    }
    if (a.has_concat()) {
        if (a.concat.dimension(1) != b.concat.dimension(1) || a.concat.dimension(2) != b.concat.dimension(2) ||
            a.concat.dimension(3) != b.concat.dimension(3)) {
            detail::throw_invalid(where, "b.concat.shape", shape_string(b.concat.dimensions()),
                                  "images shaped like a's, " + shape_string(a.concat.dimensions()) + " but for the batch");
        }
        const Index na = a.concat.dimension(0), nb = b.concat.dimension(0);
        out.concat = Tensor4<T>(na + nb, a.concat.dimension(1), a.concat.dimension(2), a.concat.dimension(3));
        batch_assign(out.concat, 0, a.concat);
        batch_assign(out.concat, na, b.concat);
    }
    if (a.has_prompt()) out.prompt = concat_tokens(a.prompt, b.prompt);
    return out;
}

}  // namespace diffuse
