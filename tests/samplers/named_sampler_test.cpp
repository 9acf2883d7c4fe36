// Samplers by name: sample() gives, bit for bit, what the named sampler's own function gives with
// the same options, and rejects an unknown name listing the known ones.

#include "../support/bits.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/ddpm.hpp>
#include <diffuse/samplers/dpm_solver.hpp>
#include <diffuse/samplers/euler.hpp>
#include <diffuse/samplers/heun.hpp>
#include <diffuse/samplers/named.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <string>

using diffuse::testing_support::same_bits;

TEST_CASE("sample() by name gives what each sampler's own function gives", "[samplers][named]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.25L, 0.5L);
    const diffuse::Shape4 shape = {3, 1, 2, 2};
    diffuse::SamplerOptions<float> options;
    options.seed = 42;
    options.thresholding = diffuse::Thresholding::clip;
    options.keep_intermediates = true;
    diffuse::StepSelection selection;
    selection.spacing = diffuse::Spacing::trailing;

    diffuse::DDPMOptions<float> ddpm;
    static_cast<diffuse::SamplerOptions<float>&>(ddpm) = options;
    const auto full = diffuse::sample("ddpm", schedule, model, 100, shape, options, selection);
    CHECK(same_bits(full.x, diffuse::ddpm_sample(schedule, model, shape, ddpm).x));
    CHECK(full.intermediates.size() == 101);
    const auto respaced = diffuse::respace(schedule, diffuse::spaced_timesteps(100, 10, diffuse::Spacing::trailing));
    CHECK(same_bits(diffuse::sample("ddpm", schedule, model, 10, shape, options, selection).x,
                    diffuse::ddpm_sample(respaced, model, shape, ddpm).x));

    diffuse::DDIMOptions<float> ddim;
    static_cast<diffuse::SamplerOptions<float>&>(ddim) = options;
    ddim.steps = selection;
    CHECK(same_bits(diffuse::sample("ddim", schedule, model, 10, shape, options, selection).x,
                    diffuse::ddim_sample(schedule, model, 10, shape, ddim).x));

    diffuse::DPMSolverOptions<float> dpm;
    static_cast<diffuse::SamplerOptions<float>&>(dpm) = options;
    dpm.steps = selection;
    const auto by_name = diffuse::sample("dpm++2m", schedule, model, 10, shape, options, selection);
    CHECK(same_bits(by_name.x, diffuse::dpm_solver_sample(schedule, model, 10, shape, dpm).x));
    CHECK(by_name.predicted_x0.size() == 10);

    diffuse::SigmaSamplerOptions<float> sigma;
    static_cast<diffuse::SamplerOptions<float>&>(sigma) = options;
    sigma.steps = selection;
    CHECK(same_bits(diffuse::sample("euler", schedule, model, 10, shape, options, selection).x,
                    diffuse::euler_sample(schedule, model, 10, shape, sigma).x));
    CHECK(same_bits(diffuse::sample("euler_a", schedule, model, 10, shape, options, selection).x,
                    diffuse::euler_ancestral_sample(schedule, model, 10, shape, sigma).x));
    CHECK(same_bits(diffuse::sample("heun", schedule, model, 10, shape, options, selection).x,
                    diffuse::heun_sample(schedule, model, 10, shape, sigma).x));
}

TEST_CASE("sample() rejects an unknown sampler name and lists the names it knows", "[samplers][named][errors]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(10));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.0L, 1.0L);
    REQUIRE_THROWS_AS(diffuse::sample("lms", schedule, model, 5, {1, 1, 2, 2}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::sample("lms", schedule, model, 5, {1, 1, 2, 2}),
                        Catch::Contains("name = \"lms\"") && Catch::Contains("ddpm, ddim, dpm++2m, euler, euler_a, heun"));
    CHECK(diffuse::sampler_names() == std::vector<std::string>{"ddpm", "ddim", "dpm++2m", "euler", "euler_a", "heun"});
}
