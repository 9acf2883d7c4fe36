// Clipping and Imagen's dynamic thresholding of the x0 prediction, against a sort in long double.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/process/thresholding.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

}  // namespace

TEST_CASE("Dynamic thresholding divides each sample by max(its 99.5th percentile of |x0|, 1) after clipping to it",
          "[process][thresholding]") {
    // Sample 0 is wide (percentile > 1), sample 1 lies in [-1, 1] (unchanged). The percentile is numpy's
    // linear interpolation at position p (n - 1) of the sorted |x0|.
    diffuse::Tensor4<double> x0 = diffuse::Generator(1).randn<double, 4>({2, 3, 8, 8});
    for (Index i = 0; i < 192; ++i) x0.data()[i] *= 3.0;
    for (Index i = 192; i < 384; ++i) x0.data()[i] = std::tanh(x0.data()[i]);
    const double p = GENERATE(0.995, 0.9, 1.0);
    INFO("percentile " << p);
    const auto out = diffuse::dynamic_threshold(x0, p);
    for (Index n = 0; n < 2; ++n) {
        std::vector<LD> a;
        for (Index i = n * 192; i < (n + 1) * 192; ++i) a.push_back(std::fabs(LD(x0.data()[i])));
        std::sort(a.begin(), a.end());
        const LD position = p * 191;
        const std::size_t lo = static_cast<std::size_t>(std::floor(position));
        const LD q = a[lo] + (position - lo) * (a[std::min<std::size_t>(lo + 1, 191)] - a[lo]);
        const LD s = std::max(q, LD(1));
        if (n == 0) CHECK(s > 1);
        for (Index i = n * 192; i < (n + 1) * 192; ++i) {
            const LD want = std::min(s, std::max(-s, LD(x0.data()[i]))) / s;
            CHECK(std::fabs(out.data()[i] - want) <= 4e-16L);
        }
    }
}

TEST_CASE("Clipping clamps x0 to the range from -1 to 1 and threshold_x0 dispatches on the kind", "[process][thresholding]") {
    diffuse::Tensor4<float> x0(1, 1, 1, 4);
    x0.setValues({{{{-3.0f, -0.5f, 0.25f, 7.0f}}}});
    const auto clipped = diffuse::clip_x0(x0);
    CHECK(clipped(0, 0, 0, 0) == -1.0f);
    CHECK(clipped(0, 0, 0, 1) == -0.5f);
    CHECK(clipped(0, 0, 0, 2) == 0.25f);
    CHECK(clipped(0, 0, 0, 3) == 1.0f);
    const auto none = diffuse::threshold_x0(x0, diffuse::Thresholding::none);
    CHECK(none(0, 0, 0, 3) == 7.0f);
    CHECK(diffuse::threshold_x0(x0, diffuse::Thresholding::clip)(0, 0, 0, 0) == -1.0f);
    // dynamic with p = 1: s = max |x0| = 7, so x0 / 7
    CHECK(diffuse::threshold_x0(x0, diffuse::Thresholding::dynamic, 1.0)(0, 0, 0, 1) == Approx(-0.5 / 7));
    REQUIRE_THROWS_WITH(diffuse::dynamic_threshold(x0, 0.0), Catch::Contains("percentile = 0, expected a fraction in (0, 1]"));
}
