// The evaluation classifier: shapes and parameter count of the Fashion-MNIST configuration, the whole
// network's gradients by finite differences, batched inference equal to one forward pass, dotted
// parameter names, and bad input.

#include "../support/layers.hpp"

#include "common/classifier.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using examples::eval::Classifier;
using examples::eval::ClassifierConfig;

namespace {

// Three blocks (8x8 -> 4x4 -> 2x2), two groups per norm: every kind of layer, small enough for double.
ClassifierConfig tiny_classifier_config(examples::eval::ClassifierPooling pooling = examples::eval::ClassifierPooling::flatten) {
    ClassifierConfig c;
    c.image_size = 8;
    c.pooling = pooling;
    c.channels = {4, 4, 6};
    c.groups = 2;
    c.feature_dim = 5;
    c.num_classes = 3;
    return c;
}

}  // namespace

TEST_CASE("The Fashion-MNIST classifier maps N x 1 x 28 x 28 images to N x 10 logits and N x 128 features", "[models][classifier]") {
    Classifier<float> model(ClassifierConfig::fashion_mnist(), 1);
    REQUIRE(diffuse::nn::parameter_count(model) == 495114);
    diffuse::Generator gen(91);
    const auto x = gen.randn<float, 4>({3, 1, 28, 28});
    const auto logits = model.forward(x);
    REQUIRE(logits.dimension(0) == 3);
    REQUIRE(logits.dimension(1) == 10);
    const auto dx = model.backward(logits);
    REQUIRE(dx.dimensions() == x.dimensions());
    const auto f = model.features(x);
    REQUIRE(f.dimension(0) == 3);
    REQUIRE(f.dimension(1) == 128);
    // Batched inference runs in evaluation mode and keeps nothing: no backward after it.
    REQUIRE_THROWS_WITH(model.backward(logits), Catch::Contains("training mode"));
}

TEST_CASE("The whole classifier's backward pass matches finite differences", "[models][classifier][gradient]") {
    Classifier<double> model(tiny_classifier_config(), 3);
    diffuse::Generator gen(92);
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(model, gen.randn<double, 4>({2, 1, 8, 8})));
}

TEST_CASE("The classifier with global average pooling matches finite differences on any image size", "[models][classifier][gradient]") {
    Classifier<double> model(tiny_classifier_config(examples::eval::ClassifierPooling::global_average), 3);
    diffuse::Generator gen(94);
    REQUIRE(model.fc.in_features() == 6);  // the channels of the last block
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(model, gen.randn<double, 4>({2, 1, 6, 7})));
}

TEST_CASE("Batched features, logits and predictions equal those of one forward pass", "[models][classifier]") {
    Classifier<double> model(tiny_classifier_config(), 4);
    diffuse::Generator gen(93);
    const auto x = gen.randn<double, 4>({7, 1, 8, 8});
    const auto whole = model.forward(x);                        // [7, 3]
    const auto batched = model.logits(x, /*batch_size=*/3);     // 3 + 3 + 1
    const auto features = model.features(x, 2);                // [7, 5]
    const auto head = model.head.forward(features);             // the logits again, from the features
    const auto predicted = model.predict(x, 4);
    for (int n = 0; n < 7; ++n) {
        int best = 0;
        for (int k = 0; k < 3; ++k) {
            REQUIRE(batched(n, k) == Approx(whole(n, k)).epsilon(1e-12).margin(1e-14));
            REQUIRE(head(n, k) == Approx(whole(n, k)).epsilon(1e-12).margin(1e-14));
            if (whole(n, k) > whole(n, best)) best = k;
        }
        REQUIRE(predicted[n] == best);
    }
}

TEST_CASE("The classifier's parameters have dotted names in the order of the layers", "[models][classifier]") {
    Classifier<float> model(tiny_classifier_config());
    std::vector<std::string> names;
    model.for_each_parameter("classifier", [&names](auto p) { names.push_back(p.name); });
    const std::vector<std::string> expected = {
        "classifier.blocks.0.conv.weight", "classifier.blocks.0.conv.bias", "classifier.blocks.0.norm.weight",
        "classifier.blocks.0.norm.bias",   "classifier.blocks.1.conv.weight", "classifier.blocks.1.conv.bias",
        "classifier.blocks.1.norm.weight", "classifier.blocks.1.norm.bias", "classifier.blocks.2.conv.weight",
        "classifier.blocks.2.conv.bias",   "classifier.blocks.2.norm.weight", "classifier.blocks.2.norm.bias",
        "classifier.fc.weight",            "classifier.fc.bias",            "classifier.head.weight",
        "classifier.head.bias"};
    REQUIRE(names == expected);
}

TEST_CASE("The same seed gives the same classifier and a different seed another", "[models][classifier]") {
    Classifier<float> a(tiny_classifier_config(), 7), b(tiny_classifier_config(), 7), c(tiny_classifier_config(), 8);
    REQUIRE((a.fc.weight.value() == b.fc.weight.value()).all());
    REQUIRE_FALSE((a.fc.weight.value() == c.fc.weight.value()).all());
}

TEST_CASE("The classifier rejects images with the wrong channel count and an impossible configuration", "[models][classifier][errors]") {
    Classifier<float> model(tiny_classifier_config());
    REQUIRE_THROWS_AS(model.forward(diffuse::Tensor4<float>(2, 3, 8, 8)), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(model.forward(diffuse::Tensor4<float>(2, 3, 8, 8)),
                        Catch::Contains("x.shape = [2, 3, 8, 8]") && Catch::Contains("[N, 1, H, W]"));
    REQUIRE_THROWS_WITH(model.predict(diffuse::Tensor4<float>(0, 1, 8, 8)), Catch::Contains("x.shape = [0, 1, 8, 8]"));
    REQUIRE_THROWS_WITH(model.forward(diffuse::Tensor4<float>(2, 1, 9, 8)),
                        Catch::Contains("x.shape = [2, 1, 9, 8]") && Catch::Contains("[N, 1, 8, 8]"));
    diffuse::Tensor4<float> x(2, 1, 8, 8);
    x.setZero();
    REQUIRE_THROWS_WITH(model.features(x, 0), Catch::Contains("batch_size = 0"));
    ClassifierConfig bad = tiny_classifier_config();
    bad.channels = {4, 5};
    REQUIRE_THROWS_WITH(Classifier<float>(bad), Catch::Contains("channels[1] = 5") && Catch::Contains("groups = 2"));
    bad = tiny_classifier_config();
    bad.num_classes = 1;
    REQUIRE_THROWS_WITH(Classifier<float>(bad), Catch::Contains("num_classes = 1"));
    bad = tiny_classifier_config();
    bad.channels.clear();
    REQUIRE_THROWS_WITH(Classifier<float>(bad), Catch::Contains("channels.size() = 0"));
}

TEST_CASE("Batched inference runs in evaluation mode and gives the caller's mode back", "[models][classifier]") {
    Classifier<float> model(tiny_classifier_config(), 5);
    diffuse::Tensor4<float> x(3, 1, 8, 8);
    x.setConstant(0.5f);
    REQUIRE(model.training());
    model.predict(x);
    REQUIRE(model.training());
    model.set_training(false);
    model.features(x, 2);
    REQUIRE_FALSE(model.training());
}
