// The captions built from Fashion-MNIST's pixels: the measured attributes of drawn images, the thirds
// per class, the caption's words and their drops, and a vocabulary the tokenizer accepts.

#include "common/captions.hpp"

#include <diffuse/models/text_encoder.hpp>

#include <catch2/catch.hpp>

#include <vector>

TEST_CASE("Caption attributes measure a drawn garment's intensity and width", "[examples][captions]") {
    std::vector<float> image(28 * 28, -1.0f);                      // black
    for (int y = 4; y < 24; ++y) {
        for (int x = 10; x < 16; ++x) image[static_cast<std::size_t>(y * 28 + x)] = 0.0f;  // a 6-wide bar at 0.5
    }
    const examples::ImageAttributes a = examples::measure_attributes(image.data(), 28);
    REQUIRE(a.intensity == Approx(0.5));
    REQUIRE(a.width == Approx(6.0));
    const examples::ImageAttributes empty = examples::measure_attributes(std::vector<float>(28 * 28, -1.0f).data(), 28);
    REQUIRE(empty.intensity == 0.0);
    REQUIRE(empty.width == 0.0);
}

TEST_CASE("Captions name the class and the attributes of the lower and upper thirds, words dropped", "[examples][captions]") {
    std::vector<examples::ImageAttributes> attributes;
    std::vector<int> labels;
    for (int k = 0; k < 10; ++k) {
        for (int i = 0; i < 9; ++i) {
            attributes.push_back({0.1 * (i + 1), 2.0 * (i + 1)});
            labels.push_back(k);
        }
    }
    const examples::AttributeThirds thirds = examples::attribute_thirds(attributes, labels, 10);
    REQUIRE_THROWS_WITH(examples::attribute_thirds(attributes, labels, 11), Catch::Contains("images of class 10"));
    REQUIRE(thirds.intensity[9][0] == Approx(0.3));
    REQUIRE(thirds.intensity[9][1] == Approx(0.6));
    const std::array<double, 4> keep = {0.9, 0.9, 0.9, 0.1};
    REQUIRE(examples::caption(9, {0.1, 2.0}, thirds, 0.25, keep) == "a dark narrow ankle boot");
    REQUIRE(examples::caption(9, {0.9, 18.0}, thirds, 0.25, keep) == "a light wide ankle boot");
    REQUIRE(examples::caption(9, {0.5, 10.0}, thirds, 0.25, keep) == "a ankle boot");
    REQUIRE(examples::caption(9, {0.1, 2.0}, thirds, 0.25, {0.1, 0.1, 0.1, 0.9}) == "boot");
    const diffuse::Tokenizer tokenizer(examples::caption_vocabulary(), 6);
    REQUIRE_NOTHROW(tokenizer.encode("a dark narrow ankle boot"));
    for (const auto& synonyms : examples::fashion_mnist_nouns()) {
        for (const auto& noun : synonyms) REQUIRE_NOTHROW(tokenizer.encode("a light wide " + noun));
    }
}
