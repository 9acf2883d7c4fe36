#pragma once
// Captions for Fashion-MNIST, which has none, built from what can be measured in each image: the
// class's name or a synonym ("ankle boot", "boot"; "sneaker", "trainer"), "dark" or "light" from the
// garment's mean intensity, "wide" or "narrow" from its silhouette's mean width. An attribute word is
// given to the images of the lowest and highest third of their class (a dark coat is dark for a
// coat), none to the middle third. A caption is drawn per image per step, a synonym at random and
// each word but the garment's dropped with some probability, so that the model learns words rather
// than whole sentences. Not part of the library.

#include <diffuse/core/error.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/tensor.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

namespace examples {

/// What a caption is made of, measured in one 28x28 image in [-1, 1].
struct ImageAttributes {
    double intensity = 0.0;  // mean of the garment's pixels on [0, 1] (pixels above 0.1)
    double width = 0.0;      // mean over the garment's rows of (rightmost - leftmost + 1) garment pixels
};

/// The attributes of image [side, side] (values in [-1, 1]).
inline ImageAttributes measure_attributes(const float* image, diffuse::Index side) {
    constexpr double garment = 0.1;  // on [0, 1]: lighter than this is the garment
    ImageAttributes a;
    double total = 0.0;
    long pixels = 0, rows = 0;
    double widths = 0.0;
    for (diffuse::Index y = 0; y < side; ++y) {
        diffuse::Index left = -1, right = -1;
        for (diffuse::Index x = 0; x < side; ++x) {
            const double v = 0.5 * (static_cast<double>(image[y * side + x]) + 1.0);
            if (v <= garment) continue;
            total += v;
            ++pixels;
            if (left < 0) left = x;
            right = x;
        }
        if (left >= 0) {
            widths += static_cast<double>(right - left + 1);
            ++rows;
        }
    }
    a.intensity = pixels > 0 ? total / static_cast<double>(pixels) : 0.0;
    a.width = rows > 0 ? widths / static_cast<double>(rows) : 0.0;
    return a;
}

/// Per class, the thirds of each attribute over a set of images: below `low` is dark (narrow),
/// above `high` light (wide).
struct AttributeThirds {
    std::vector<std::array<double, 2>> intensity;  // [classes] {low, high}
    std::vector<std::array<double, 2>> width;      // [classes] {low, high}
};

inline AttributeThirds attribute_thirds(const std::vector<ImageAttributes>& attributes, const std::vector<int>& labels,
                                        int classes) {
    AttributeThirds t;
    for (int k = 0; k < classes; ++k) {
        std::vector<double> intensity, width;
        for (std::size_t i = 0; i < labels.size(); ++i) {
            if (labels[i] != k) continue;
            intensity.push_back(attributes[i].intensity);
            width.push_back(attributes[i].width);
        }
        if (intensity.empty()) {
            diffuse::detail::throw_invalid("examples::attribute_thirds", "images of class " + std::to_string(k), 0, "at least one");
        }
        const auto thirds = [](std::vector<double> v) {
            std::sort(v.begin(), v.end());
            const auto at = [&v](double q) { return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))]; };
            return std::array<double, 2>{at(1.0 / 3.0), at(2.0 / 3.0)};
        };
        t.intensity.push_back(thirds(intensity));
        t.width.push_back(thirds(width));
    }
    return t;
}

/// Fashion-MNIST's classes as words: the name first, then its synonyms.
inline const std::vector<std::vector<std::string>>& fashion_mnist_nouns() {
    static const std::vector<std::vector<std::string>> nouns = {
        {"t-shirt", "top", "tee"}, {"trousers", "pants"},  {"pullover", "sweater", "jumper"}, {"dress", "frock"},
        {"coat", "jacket"},        {"sandal", "slipper"},  {"shirt", "blouse"},              {"sneaker", "trainer"},
        {"bag", "handbag", "purse"}, {"ankle boot", "boot"}};
    return nouns;
}

/// The words of the captions below, for the tokenizer: "a", the four attributes, every noun's words.
inline std::vector<std::string> caption_vocabulary() {
    std::vector<std::string> words = {"a", "dark", "light", "narrow", "wide"};
    for (const auto& synonyms : fashion_mnist_nouns()) {
        for (const std::string& noun : synonyms) {
            std::string w;
            for (const char ch : noun + " ") {
                if (ch != ' ') {
                    w += ch;
                } else if (!w.empty()) {
                    if (std::find(words.begin(), words.end(), w) == words.end()) words.push_back(w);
                    w.clear();
                }
            }
        }
    }
    return words;
}

/// "a dark wide ankle boot": [a] [dark|light] [narrow|wide] noun, the attribute words only where the
/// image is in its class's lower or upper third, each word but the noun dropped with probability
/// `drop`, the noun a synonym drawn uniformly. u: four uniform draws in [0, 1).
inline std::string caption(int label, const ImageAttributes& a, const AttributeThirds& thirds, double drop,
                           const std::array<double, 4>& u) {
    const auto& nouns = fashion_mnist_nouns()[static_cast<std::size_t>(label)];
    const auto& ti = thirds.intensity[static_cast<std::size_t>(label)];
    const auto& tw = thirds.width[static_cast<std::size_t>(label)];
    std::string out;
    const auto add = [&out](const std::string& w) { out += out.empty() ? w : " " + w; };
    if (u[0] >= drop) add("a");
    if (u[1] >= drop) {
        if (a.intensity < ti[0]) add("dark");
        if (a.intensity > ti[1]) add("light");
    }
    if (u[2] >= drop) {
        if (a.width < tw[0]) add("narrow");
        if (a.width > tw[1]) add("wide");
    }
    add(nouns[std::min(nouns.size() - 1, static_cast<std::size_t>(u[3] * static_cast<double>(nouns.size())))]);
    return out;
}

}  // namespace examples
