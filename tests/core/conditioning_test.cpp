// The conditioning a model is handed: checks of each part against the batch, slicing, and the
// concatenation guidance makes, which pads contexts of different lengths and marks the padding.

#include <diffuse/core/conditioning.hpp>
#include <diffuse/core/random.hpp>

#include <catch2/catch.hpp>

#include <vector>

using diffuse::Conditioning;
using diffuse::Index;

TEST_CASE("A conditioning is checked part by part against the batch", "[core][conditioning]") {
    using Catch::Contains;
    Conditioning<float> c = {1, 2};  // labels alone
    REQUIRE(c.has_labels());
    REQUIRE_FALSE(c.has_context());
    REQUIRE_NOTHROW(diffuse::check_conditioning("test", c, 2, 4, 4));
    REQUIRE_THROWS_WITH(diffuse::check_conditioning("test", c, 3, 4, 4), Contains("labels.size() = 2, expected one label per sample, 3"));
    c.context = diffuse::Generator(1).randn<float, 3>({2, 3, 5});
    c.context_mask = {1, 1, 0, 1, 0, 0};
    REQUIRE_NOTHROW(diffuse::check_conditioning("test", c, 2, 4, 4));
    c.context_mask = {1, 1, 0, 0, 0, 0};
    REQUIRE_THROWS_WITH(diffuse::check_conditioning("test", c, 2, 4, 4), Contains("context_mask of sample 1") && Contains("real token"));
    c.context_mask = {1, 1};
    REQUIRE_THROWS_WITH(diffuse::check_conditioning("test", c, 2, 4, 4), Contains("context_mask.size() = 2"));
    c.context_mask.clear();
    c.concat = diffuse::Tensor4<float>(2, 1, 4, 3);
    REQUIRE_THROWS_WITH(diffuse::check_conditioning("test", c, 2, 4, 4), Contains("concat.shape = [2, 1, 4, 3]") && Contains("the size of x_t"));
    const Conditioning<float> mask_only = [] { Conditioning<float> m; m.context_mask = {1}; return m; }();
    REQUIRE_THROWS_WITH(diffuse::check_conditioning("test", mask_only, 1, 4, 4), Contains("there is no context"));
}

TEST_CASE("Concatenated conditionings pad the shorter context and mark its padding", "[core][conditioning]") {
    diffuse::Generator gen(2);
    Conditioning<float> a = {0, 1};
    a.context = gen.randn<float, 3>({2, 3, 2});  // 3 tokens, all real
    a.concat = gen.randn<float, 4>({2, 1, 2, 2});
    Conditioning<float> b = {5};
    b.context = gen.randn<float, 3>({1, 1, 2});  // 1 token
    b.concat = gen.randn<float, 4>({1, 1, 2, 2});
    const Conditioning<float> ab = diffuse::concat_conditioning(a, b);
    REQUIRE(ab.labels == std::vector<int>{0, 1, 5});
    REQUIRE(ab.context.dimension(0) == 3);
    REQUIRE(ab.context.dimension(1) == 3);
    REQUIRE(ab.context_mask == diffuse::KeyMask{1, 1, 1, 1, 1, 1, 1, 0, 0});
    for (Index i = 0; i < 12; ++i) REQUIRE(ab.context.data()[i] == a.context.data()[i]);
    REQUIRE(ab.context.data()[12] == b.context.data()[0]);
    REQUIRE(ab.context.data()[13] == b.context.data()[1]);
    for (Index i = 14; i < 18; ++i) REQUIRE(ab.context.data()[i] == 0.0f);
    REQUIRE(ab.concat.dimension(0) == 3);
    REQUIRE(ab.concat.data()[8] == b.concat.data()[0]);
    REQUIRE_NOTHROW(diffuse::check_conditioning("test", ab, 3, 2, 2));

    const Conditioning<float> back = diffuse::slice_conditioning(ab, 2, 1);
    REQUIRE(back.labels == std::vector<int>{5});
    REQUIRE(back.context_mask == diffuse::KeyMask{1, 0, 0});
    REQUIRE(back.concat.data()[3] == b.concat.data()[3]);

    const Conditioning<float> labels_only = {3};
    REQUIRE_THROWS_WITH(diffuse::concat_conditioning(a, labels_only), Catch::Contains("the same parts"));
}
