// elementwise: the formula applied to every entry, of tensors and TensorMaps, and a shape mismatch named.

#include <diffuse/core/elementwise.hpp>
#include <diffuse/core/random.hpp>

#include <catch2/catch.hpp>

#include <array>

TEST_CASE("elementwise applies the formula to every entry of operands of one shape", "[core][elementwise]") {
    diffuse::Generator generator(11);
    const auto x = generator.randn<float, 4>({2, 3, 4, 5});
    const auto y = generator.randn<float, 4>({2, 3, 4, 5});
    const auto z = generator.randn<float, 4>({2, 3, 4, 5});
    const float a = 0.25f, b = -1.5f, c = 3.0f;
    const auto out = diffuse::elementwise([=](float xs, float ys, float zs) { return a * xs + b * ys + c * zs; }, x, y, z);
    REQUIRE(out.dimensions() == x.dimensions());
    for (diffuse::Index k = 0; k < out.size(); ++k) {
        const float want = a * x.data()[k] + b * y.data()[k] + c * z.data()[k];
        REQUIRE(out.data()[k] == want);
    }
    // one operand, and TensorMaps over halves of one buffer
    const auto square = diffuse::elementwise([](float v) { return v * v; }, x);
    CHECK(square.data()[7] == x.data()[7] * x.data()[7]);
    const std::array<diffuse::Index, 4> half = {1, 3, 4, 5};
    const Eigen::TensorMap<const diffuse::Tensor4<float>> first(x.data(), half), second(x.data() + 60, half);
    const diffuse::Tensor4<float> diff = diffuse::elementwise([](float u, float v) { return u - v; }, first, second);
    REQUIRE(diff.dimensions() == half);
    CHECK(diff.data()[59] == x.data()[59] - x.data()[119]);
}

TEST_CASE("elementwise rejects operands of another shape, naming both shapes", "[core][elementwise][errors]") {
    diffuse::Tensor4<double> x(2, 3, 4, 5), y(2, 3, 5, 4);
    x.setZero();
    y.setZero();
    REQUIRE_THROWS_AS(diffuse::elementwise([](double u, double v) { return u + v; }, x, y), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::elementwise([](double u, double v) { return u + v; }, x, y),
                        Catch::Contains("[2, 3, 5, 4]") && Catch::Contains("[2, 3, 4, 5]"));
}
