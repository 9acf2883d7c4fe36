// RePaint inpainting and outpainting: the jump schedule, the known region at the end, the generated
// region's statistics with the exact denoiser, the outpainting canvas, and bad input.

#include "../support/reference.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/inpainting.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

}  // namespace

TEST_CASE("The RePaint schedule goes down, jumps back jump_length steps and repeats resample_count times", "[samplers][inpainting]") {
    // RePaint's get_schedule_jump(t_T = 10, jump_length = 3, jump_n_sample = 2), traced by hand: jumps at
    // levels 6, 3 and 0, each taken once.
    CHECK(diffuse::repaint_levels(10, 3, 2) == std::vector<int>{9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 5, 4,
                                                                  3, 2, 1, 0, 1, 2, 3, 2, 1, 0, -1});
    // no resampling: straight down
    CHECK(diffuse::repaint_levels(4, 10, 1) == std::vector<int>{3, 2, 1, 0, -1});
    REQUIRE_THROWS_WITH(diffuse::repaint_levels(10, 0, 2), Catch::Contains("jump_length = 0, expected >= 1"));
    REQUIRE_THROWS_WITH(diffuse::repaint_levels(10, 3, 0), Catch::Contains("resample_count = 0, expected >= 1"));
}

TEST_CASE("Inpainting with the exact denoiser keeps the known region equal to the known image and samples the rest",
          "[samplers][inpainting][statistical]") {
    // Data: coordinates i.i.d. N(0.2, 0.4^2), so the known pixels say nothing about the unknown ones and
    // the generated region must follow N(0.2, 0.4^2). Cosine T = 100, the left half of each image known.
    // Bounds: the known region bit-for-bit equal to the image; the generated region's mean within 5
    // standard errors plus 0.01 and its variance within 15%: DDPM's fixed-small variance under-disperses
    // at finite T (measured -6.0% with plain replacement at T = 100), and every down-and-up cycle of the
    // resampling repeats those reverse steps (-12.3% with 3 resamplings; fixed-large variance gives +5%).
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.2L, 0.4L);
    const diffuse::Shape4 shape = {16, 1, 16, 16};
    diffuse::Tensor4<double> known = diffuse::Generator(3).randn<double, 4>(shape) * 0.4 + 0.2;
    diffuse::Tensor4<double> mask(16, 1, 16, 16);
    for (Index n = 0; n < 16; ++n)
        for (Index y = 0; y < 16; ++y)
            for (Index x = 0; x < 16; ++x) mask(n, 0, y, x) = x < 8 ? 1.0 : 0.0;
    const int resample = GENERATE(1, 3);
    INFO("resample_count " << resample);
    diffuse::InpaintOptions<double> options;
    options.seed = 9;
    options.jump_length = 5;
    options.resample_count = resample;
    int reports = 0;
    options.progress = [&](int, int, const diffuse::Tensor4<double>&) { ++reports; };
    const auto samples = diffuse::inpaint(schedule, model, known, mask, options);
    // each level is denoised once per visit: 100 plain, plus 5 per jump with resampling (19 jumps x 2)
    CHECK(reports == (resample == 1 ? 100 : 100 + 19 * 2 * 5));
    std::vector<double> generated;
    bool known_equal = true;
    for (Index n = 0; n < 16; ++n)
        for (Index y = 0; y < 16; ++y)
            for (Index x = 0; x < 16; ++x) {
                if (x < 8) known_equal = known_equal && samples.x(n, 0, y, x) == known(n, 0, y, x);
                else generated.push_back(samples.x(n, 0, y, x));
            }
    CHECK(known_equal);
    const auto [m, v] = analytic::mean_variance(generated.data(), Index(generated.size()));
    INFO("generated region: mean " << double(m) << ", variance " << double(v));
    CHECK(std::fabs(m - 0.2L) <= 5 * 0.4L / std::sqrt(LD(generated.size())) + 0.01L);
    CHECK(std::fabs(v / 0.16L - 1) <= 0.15L);
}

TEST_CASE("Outpainting grows the canvas, keeps the image in its place and generates the border", "[samplers][inpainting]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(20));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    const auto image = diffuse::Generator(4).randn<float, 4>({2, 3, 4, 5});
    const diffuse::Padding padding{1, 2, 3, 0};
    const auto canvas = diffuse::outpaint_canvas(image, padding);
    REQUIRE(canvas.known.dimensions() == diffuse::Shape4{2, 3, 7, 8});
    REQUIRE(canvas.mask.dimensions() == diffuse::Shape4{2, 1, 7, 8});
    const auto samples = diffuse::outpaint(schedule, model, image, padding);
    REQUIRE(samples.x.dimensions() == diffuse::Shape4{2, 3, 7, 8});
    bool image_kept = true, mask_right = true;
    for (Index n = 0; n < 2; ++n)
        for (Index y = 0; y < 7; ++y)
            for (Index x = 0; x < 8; ++x) {
                const bool inside = y >= 1 && y < 5 && x >= 3;
                mask_right = mask_right && canvas.mask(n, 0, y, x) == (inside ? 1.0f : 0.0f);
                for (Index c = 0; inside && c < 3; ++c) image_kept = image_kept && samples.x(n, c, y, x) == image(n, c, y - 1, x - 3);
            }
    CHECK(mask_right);
    CHECK(image_kept);
}

TEST_CASE("Inpainting rejects a mask of the wrong shape or with values outside 0 to 1", "[samplers][inpainting][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(10));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    const auto known = diffuse::Generator(1).randn<double, 4>({2, 3, 4, 4});
    diffuse::Tensor4<double> wrong(2, 2, 4, 4);
    wrong.setConstant(1.0);
    REQUIRE_THROWS_AS(diffuse::inpaint(schedule, model, known, wrong), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::inpaint(schedule, model, known, wrong),
                        Contains("diffuse::inpaint: mask.shape = [2, 2, 4, 4], expected [N, 1, H, W] or [N, C, H, W] with the known image's [2, 3, 4, 4]"));
    diffuse::Tensor4<double> mask(2, 1, 4, 4);
    mask.setConstant(1.0);
    mask(1, 0, 2, 2) = 2.0;
    REQUIRE_THROWS_WITH(diffuse::inpaint(schedule, model, known, mask), Contains("mask[26] = 2, expected a value in [0, 1] (1: known)"));
    REQUIRE_THROWS_WITH(diffuse::outpaint_canvas(known, diffuse::Padding{0, -1, 0, 0}), Contains("padding.bottom = -1, expected >= 0"));
}
