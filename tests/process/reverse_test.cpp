// The model's reverse step: p_mean_variance thresholds the x0 prediction as asked (none, clip,
// Imagen's dynamic thresholding) before taking the posterior mean, and rejects a bad percentile.

#include "../support/bits.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/process/parameterization.hpp>
#include <diffuse/process/posterior.hpp>
#include <diffuse/process/reverse.hpp>
#include <diffuse/process/thresholding.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>


using diffuse::testing_support::same_bits;

TEST_CASE("p_mean_variance takes the posterior mean at the x0 prediction thresholded as asked", "[process][reverse]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(50));
    diffuse::Generator generator(8);
    const auto x_t = generator.randn<double, 4>({2, 1, 4, 4});
    // eps large enough that the x0 prediction leaves [-1, 1] at t = 3
    const diffuse::Tensor4<double> eps = generator.randn<double, 4>({2, 1, 4, 4}) * 3.0;
    const diffuse::Timesteps t = {3, 40};
    const auto raw = diffuse::predict_x0(schedule, x_t, t, eps, diffuse::Prediction::epsilon);
    for (const auto kind : {diffuse::Thresholding::none, diffuse::Thresholding::clip, diffuse::Thresholding::dynamic}) {
        INFO(diffuse::to_string(kind));
        diffuse::ReverseOptions options;
        options.thresholding = kind;
        options.dynamic_percentile = 0.9;
        const auto step = diffuse::p_mean_variance(schedule, eps, x_t, t, options);
        const auto x0 = diffuse::threshold_x0(raw, kind, 0.9);
        CHECK(same_bits(step.pred_x0, x0));
        CHECK(same_bits(step.mean, diffuse::q_posterior_mean(schedule, x0, x_t, t)));
    }
    diffuse::ReverseOptions bad;
    bad.thresholding = diffuse::Thresholding::dynamic;
    bad.dynamic_percentile = 0.0;
    REQUIRE_THROWS_WITH(diffuse::p_mean_variance(schedule, eps, x_t, t, bad), Catch::Contains("percentile = 0"));
}
