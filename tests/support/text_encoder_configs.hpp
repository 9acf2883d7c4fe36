#pragma once
// The smallest text encoder for a tokenizer, for tests: width 4, one layer of two heads.

#include <diffuse/models/text_encoder.hpp>

namespace diffuse::testing_support {

inline TextEncoderConfig tiny_text_encoder_config(const Tokenizer& tokenizer) {
    TextEncoderConfig t;
    t.vocabulary_size = tokenizer.vocabulary_size();
    t.max_length = tokenizer.max_length();
    t.width = 4;
    t.layers = 1;
    t.heads = 2;
    return t;
}

}  // namespace diffuse::testing_support
