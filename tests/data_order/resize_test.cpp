// Resizing for super-resolution: area averaging down, bicubic interpolation up (Keys, A = -0.75,
// pixel centres, edges repeated), against their definitions and against PyTorch's interpolate.

#include <diffuse/data/resize.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

namespace {

using diffuse::Index;

diffuse::Tensor4<double> resize_ramp(Index h, Index w, double a, double b, double c) {  // [1, 1, h, w]: a + b i + c j
    diffuse::Tensor4<double> x(1, 1, h, w);
    for (Index i = 0; i < h; ++i) {
        for (Index j = 0; j < w; ++j) x(0, 0, i, j) = a + b * static_cast<double>(i) + c * static_cast<double>(j);
    }
    return x;
}

}  // namespace

TEST_CASE("area_downsample averages each block", "[data][resize]") {
    diffuse::Tensor4<double> x(2, 1, 4, 6);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<double>(k * k % 17);
    const diffuse::Tensor4<double> y = diffuse::area_downsample(x, 2);
    REQUIRE(y.dimension(2) == 2);
    REQUIRE(y.dimension(3) == 3);
    for (Index n = 0; n < 2; ++n) {
        for (Index i = 0; i < 2; ++i) {
            for (Index j = 0; j < 3; ++j) {
                const double want = (x(n, 0, 2 * i, 2 * j) + x(n, 0, 2 * i, 2 * j + 1) + x(n, 0, 2 * i + 1, 2 * j) +
                                     x(n, 0, 2 * i + 1, 2 * j + 1)) / 4.0;
                CHECK(y(n, 0, i, j) == Approx(want).epsilon(1e-15));
            }
        }
    }
    const diffuse::Tensor4<double> same = diffuse::area_downsample(x, 1);
    for (Index k = 0; k < x.size(); ++k) CHECK(same.data()[k] == x.data()[k]);
}

TEST_CASE("bicubic_kernel is Keys' kernel with A = -0.75: interpolating, its taps summing to 1", "[data][resize]") {
    CHECK(diffuse::bicubic_kernel(0.0) == 1.0);
    CHECK(diffuse::bicubic_kernel(1.0) == Approx(0.0).margin(1e-15));
    CHECK(diffuse::bicubic_kernel(2.0) == 0.0);
    CHECK(diffuse::bicubic_kernel(-1.5) == Approx(-0.75 * (3.375 - 5 * 2.25 + 8 * 1.5 - 4)).epsilon(1e-15));
    for (const double f : {0.0, 0.125, 0.25, 0.5, 0.9}) {
        const double sum = diffuse::bicubic_kernel(f + 1) + diffuse::bicubic_kernel(f) + diffuse::bicubic_kernel(1 - f) +
                           diffuse::bicubic_kernel(2 - f);
        CHECK(sum == Approx(1.0).epsilon(1e-14));
    }
}

TEST_CASE("bicubic_resize keeps constants, is the identity at the same size and commutes with mirroring", "[data][resize]") {
    const diffuse::Tensor4<double> c = diffuse::bicubic_resize(resize_ramp(3, 5, 0.7, 0.0, 0.0), 12, 9);
    for (Index k = 0; k < c.size(); ++k) CHECK(c.data()[k] == Approx(0.7).epsilon(1e-14));
    // the same size: every tap but the centre's at a whole distance, where the kernel is 0
    diffuse::Tensor4<double> x(1, 1, 7, 6);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = std::cos(1.3 * static_cast<double>(k));
    const diffuse::Tensor4<double> id = diffuse::bicubic_resize(x, 7, 6);
    for (Index k = 0; k < x.size(); ++k) CHECK(id.data()[k] == Approx(x.data()[k]).margin(1e-14));
    // pixel centres are symmetric about the image's centre: resizing the mirror image gives the mirror
    diffuse::Tensor4<double> mirrored(1, 1, 7, 6);
    for (Index i = 0; i < 7; ++i) {
        for (Index j = 0; j < 6; ++j) mirrored(0, 0, i, j) = x(0, 0, 6 - i, 5 - j);
    }
    const diffuse::Tensor4<double> y = diffuse::bicubic_resize(x, 28, 24), ym = diffuse::bicubic_resize(mirrored, 28, 24);
    for (Index i = 0; i < 28; ++i) {
        for (Index j = 0; j < 24; ++j) CHECK(ym(0, 0, i, j) == Approx(y(0, 0, 27 - i, 23 - j)).margin(1e-13));
    }
}

TEST_CASE("bicubic_resize matches PyTorch's interpolate(bicubic, align_corners=False)", "[data][resize]") {
    // x = [[0, 1, 0], [1, 0.5, 0], [0, 0, 1]] upsampled to 6 x 6 by torch 1.13:
    // torch.nn.functional.interpolate(x[None, None], size=(6, 6), mode="bicubic", align_corners=False)
    diffuse::Tensor4<double> x(1, 1, 3, 3);
    const double v[9] = {0, 1, 0, 1, 0.5, 0, 0, 0, 1};
    for (Index k = 0; k < 9; ++k) x.data()[k] = v[k];
    const diffuse::Tensor4<double> y = diffuse::bicubic_resize(x, 6, 6);
    const double torch_row0[6] = {-0.227622986, 0.193946838, 0.901359558, 0.936378479, 0.279228210, -0.111030579};
    const double torch_row3[6] = {0.936378479, 0.759223938, 0.468772888, 0.252174377, 0.231742859, 0.215232849};
    for (Index j = 0; j < 6; ++j) {
        CHECK(y(0, 0, 0, j) == Approx(torch_row0[j]).margin(1e-6));
        CHECK(y(0, 0, 3, j) == Approx(torch_row3[j]).margin(1e-6));
    }
}

TEST_CASE("resizing refuses sizes it cannot reach", "[data][resize]") {
    const diffuse::Tensor4<float> x(1, 1, 28, 28);
    REQUIRE_THROWS_WITH(diffuse::area_downsample(x, 3), Catch::Contains("factor = 3") && Catch::Contains("28 x 28"));
    REQUIRE_THROWS_WITH(diffuse::area_downsample(x, 0), Catch::Contains("factor = 0"));
    REQUIRE_THROWS_WITH(diffuse::bicubic_resize(x, 0, 28), Catch::Contains("height = 0"));
    REQUIRE_THROWS_WITH(diffuse::bicubic_resize(x, 28, -1), Catch::Contains("width = -1"));
}

TEST_CASE("upsampled_low_resolution is the area average bicubic-upsampled back", "[data][resize]") {
    diffuse::Tensor4<float> x(2, 1, 28, 28);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<float>(std::sin(0.37 * static_cast<double>(k)));
    for (const Index side : {7, 14}) {
        const diffuse::Tensor4<float> got = diffuse::upsampled_low_resolution(x, side);
        const diffuse::Tensor4<float> want = diffuse::bicubic_resize(diffuse::area_downsample(x, 28 / side), 28, 28);
        REQUIRE(got.dimension(2) == 28);
        for (Index k = 0; k < got.size(); ++k) REQUIRE(got.data()[k] == want.data()[k]);
    }
    REQUIRE_THROWS_WITH(diffuse::upsampled_low_resolution(x, 8), Catch::Contains("side = 8") && Catch::Contains("28 x 28"));
    REQUIRE_THROWS_WITH(diffuse::upsampled_low_resolution(x, 0), Catch::Contains("side = 0"));
}
