// The prompt encoder: the tokenizer's round trips, padding and errors, and the text encoder's shapes,
// padding invariance and gradients by finite differences in double.

#include "../support/layers.hpp"

#include <diffuse/models/text_encoder.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using diffuse::Index;
using diffuse::Tokenizer;

namespace {

Tokenizer small_tokenizer() { return Tokenizer({"a", "dark", "light", "ankle", "boot", "t-shirt", "wide"}, 5); }

diffuse::TextEncoderConfig small_encoder_config(const Tokenizer& tok, Index width) {
    diffuse::TextEncoderConfig config;
    config.vocabulary_size = tok.vocabulary_size();
    config.max_length = tok.max_length();
    config.width = width;
    config.layers = 2;
    config.heads = 2;
    return config;
}

}  // namespace

TEST_CASE("The tokenizer encodes words to ids after <start> and decodes them back", "[models][text]") {
    const Tokenizer tok = small_tokenizer();
    REQUIRE(tok.vocabulary_size() == 8);
    REQUIRE(tok.encode("a dark ankle boot") == std::vector<int>{0, 1, 2, 4, 5});
    REQUIRE(tok.encode("  A DARK,  t-shirt. ") == std::vector<int>{0, 1, 2, 6});
    REQUIRE(tok.encode("") == std::vector<int>{0});  // the empty prompt: <start> alone
    for (const std::string p : {"a dark ankle boot", "t-shirt", "wide light boot", ""}) {
        REQUIRE(tok.decode(tok.encode(p)) == p);
    }
    const diffuse::Tokens t = tok.batch({"dark boot", "", "a wide t-shirt"});
    REQUIRE(t.batch == 3);
    REQUIRE(t.length == 4);
    REQUIRE(t.ids == std::vector<int>{0, 2, 5, 0, 0, 0, 0, 0, 0, 1, 7, 6});
    REQUIRE(t.mask == diffuse::KeyMask{1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1});
}

TEST_CASE("The tokenizer names an unknown word, a prompt too long and a bad vocabulary", "[models][text][errors]") {
    using Catch::Contains;
    const Tokenizer tok = small_tokenizer();
    REQUIRE_THROWS_WITH(tok.encode("a shiny boot"), Contains("the word \"shiny\"") && Contains("not in the vocabulary"));
    REQUIRE_THROWS_WITH(tok.encode("a dark light wide boot"), Contains("5 words") && Contains("at most 4 words"));
    REQUIRE_THROWS_WITH(Tokenizer({"boot", "boot"}, 4), Contains("not already in the vocabulary"));
    REQUIRE_THROWS_WITH(Tokenizer({"ankle boot"}, 4), Contains("one lower-case word"));
    REQUIRE_THROWS_WITH(Tokenizer({"Boot"}, 4), Contains("one lower-case word"));
    REQUIRE_THROWS_WITH(tok.decode({9}), Contains("id = 9"));
}

TEST_CASE("The text encoder gives a padded prompt's real tokens the unpadded prompt's context", "[models][text]") {
    const Tokenizer tok = small_tokenizer();
    diffuse::TextEncoder<double> encoder(small_encoder_config(tok, 8), 3);
    const auto alone = encoder.forward(tok.batch({"dark boot"}));
    const auto both = encoder.forward(tok.batch({"dark boot", "a wide light t-shirt"}));
    REQUIRE(alone.dimension(1) == 3);
    REQUIRE(both.dimension(1) == 5);
    for (Index j = 0; j < 3; ++j) {
        for (Index i = 0; i < 8; ++i) REQUIRE(both(0, j, i) == Approx(alone(0, j, i)).epsilon(1e-12));
    }
    diffuse::Tokens long_tokens = tok.batch({"dark boot"});
    long_tokens.length = 6;
    long_tokens.ids.resize(6, 0);
    long_tokens.mask.resize(6, 0);
    REQUIRE_THROWS_WITH(encoder.forward(long_tokens), Catch::Contains("tokens.length = 6, expected at most max_length = 5"));
}

TEST_CASE("The text encoder's backward pass matches finite differences", "[models][text][gradient]") {
    const Tokenizer tok = small_tokenizer();
    diffuse::TextEncoder<double> encoder(small_encoder_config(tok, 4), 4);
    diffuse::Generator init(5);
    encoder.for_each_parameter("", [&init](auto p) {  // beyond CLIP's tiny initial embeddings
        init.normal(p.value, p.size);
        for (Index i = 0; i < p.size; ++i) p.value[i] *= 0.5;
    });
    const diffuse::Tokens tokens = tok.batch({"a dark boot", "wide"});
    diffuse::testing::GradientCheckOptions options;
    options.max_coordinates = 24;
    const auto report = diffuse::testing::check_gradients(
        encoder, {}, [&] { return encoder.forward(tokens); }, [&](const auto& g) { encoder.backward(g); }, options);
    REQUIRE_GRADIENTS_MATCH(report);
    std::vector<std::string> names;
    encoder.for_each_parameter("", [&names](auto p) { names.push_back(p.name); });
    REQUIRE(names.front() == "token_embedding.weight");
    REQUIRE(names[1] == "position_embedding.weight");
    REQUIRE(names[2] == "layers.0.layer_norm1.weight");
    REQUIRE(names.back() == "final_layer_norm.bias");
}
