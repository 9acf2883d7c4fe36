// SDEdit (samplers/sdedit.hpp): strength 1 is plain sampling from the noised image, the timesteps it
// visits, the output returning to the input as the strength falls, every sampler by name, and bad
// strengths.

#include "../support/bits.hpp"
#include "../support/reference.hpp"
#include "../support/rejection.hpp"
#include "analytic.hpp"

#include <diffuse/process/forward.hpp>
#include <diffuse/samplers/named.hpp>
#include <diffuse/samplers/sdedit.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

using diffuse::Index;
using diffuse::testing_support::same_bits;

TEST_CASE("SDEdit at strength 1 is plain sampling from the image noised to T - 1", "[samplers][sdedit]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(100));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.1L, 0.5L);
    diffuse::Generator gen(3);
    const auto x0 = gen.randn<float, 4>({3, 1, 4, 4});
    diffuse::SamplerOptions<float> options;
    options.seed = 12;
    const std::string name = GENERATE("ddim", "dpm++2m", "euler_a", "heun", "ddpm");
    INFO(name);
    const auto edited = diffuse::sdedit(name, schedule, model, 10, x0, 1.0, options);
    const diffuse::Tensor4<float> eps = diffuse::detail::stream_noise<float>(12, 0, {3, 1, 4, 4});
    const auto x_T = diffuse::q_sample(schedule, x0, diffuse::Timesteps(3, 99), eps);
    diffuse::StepSelection trailing;
    trailing.spacing = diffuse::Spacing::trailing;
    CHECK(same_bits(edited.x, diffuse::sample_from(name, schedule, model, 10, x_T, options, trailing).x));
}

TEST_CASE("SDEdit visits trailing timesteps from ceil(s T) - 1 down, at most that many", "[samplers][sdedit]") {
    CHECK(diffuse::sdedit_timesteps(100, 5, 0.5) == std::vector<int>{9, 19, 29, 39, 49});
    CHECK(diffuse::sdedit_timesteps(1000, 4, 1.0) == std::vector<int>{249, 499, 749, 999});
    CHECK(diffuse::sdedit_timesteps(100, 10, 0.03) == std::vector<int>{0, 1, 2});  // fewer timesteps than steps
    CHECK(diffuse::sdedit_timesteps(100, 10, 0.001) == std::vector<int>{0});
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto exact = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    std::vector<int> told;
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                               const diffuse::Conditioning<double>& c) {
        told.push_back(t.front());
        return exact(x, t, c);
    };
    diffuse::Generator gen(4);
    diffuse::sdedit("ddim", schedule, model, 5, gen.randn<double, 4>({1, 1, 2, 2}), 0.5);
    CHECK(told == std::vector<int>{49, 39, 29, 19, 9});
}

TEST_CASE("SDEdit's output returns to its input as the strength falls", "[samplers][sdedit]") {
    // data N(0, 0.5^2) with its exact denoiser, linear T = 1000, DDIM with 20 steps: the mean absolute
    // change of 512 draws falls with the strength and at s = 1 / T (one step at t = 0, where
    // sqrt(1 - alphabar) = 0.01) is below 0.01.
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    diffuse::Generator gen(5);
    auto x0 = gen.randn<double, 4>({32, 1, 4, 4});
    for (Index k = 0; k < x0.size(); ++k) x0.data()[k] *= 0.5;
    double previous = 1e30;
    for (const double s : {1.0, 0.5, 0.2, 0.05, 0.001}) {
        diffuse::SamplerOptions<double> options;
        options.seed = 6;
        const auto out = diffuse::sdedit("ddim", schedule, model, 20, x0, s, options);
        double change = 0.0;
        for (Index k = 0; k < x0.size(); ++k) change += std::fabs(out.x.data()[k] - x0.data()[k]) / static_cast<double>(x0.size());
        INFO("strength " << s << ": mean absolute change " << change);
        CHECK(change < previous);
        previous = change;
        if (s == 0.001) CHECK(change < 0.01);
    }
}

TEST_CASE("SDEdit rejects a strength that is not in 0 < s <= 1", "[samplers][sdedit][errors]") {
    using Catch::Contains;
    using diffuse::testing_support::rejection;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    const diffuse::Tensor4<double> x0 = diffuse::Tensor4<double>(1, 1, 2, 2).setZero();
    for (const double s : {0.0, -0.5, 1.5, std::nan("")}) {
        CHECK_THAT(rejection([&] { diffuse::sdedit("ddim", schedule, model, 5, x0, s); }), Contains("strength = ") && Contains("(0, 1]"));
    }
    CHECK_THAT(rejection([&] { diffuse::sdedit("ddim", schedule, model, 0, x0, 0.5); }), Contains("num_steps = 0"));
    CHECK_THAT(rejection([&] { diffuse::sdedit("lms", schedule, model, 5, x0, 0.5); }), Contains("name = \"lms\""));
}
