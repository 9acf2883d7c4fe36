// Karras et al.'s Euler samplers in sigma space (samplers/euler.hpp): Euler is DDIM (eta = 0) on the
// same timesteps; one Euler ancestral step against its formula in long double; few-step sampling of
// Gaussian data with the exact denoiser against the moments the solver's own affine recursion gives;
// the modes of a mixture in their proportions; the same bits for a seed whatever the thread count; and
// bad input.

#include "../support/reference.hpp"
#include "../support/rejection.hpp"
#include "analytic.hpp"

#include <diffuse/core/threading.hpp>
#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/euler.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/karras.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// sigma and sqrt(alphabar) of selected step i, i = -1 below the last (sigma 0, scale 1), in long double
struct LevelsLD {
    std::vector<LD> ab;
    LD sigma(int i) const { return i < 0 ? 0 : std::sqrt((1 - ab[static_cast<std::size_t>(i)]) / ab[static_cast<std::size_t>(i)]); }
    LD scale(int i) const { return i < 0 ? 1 : std::sqrt(ab[static_cast<std::size_t>(i)]); }
};

// For N(mu, s^2) data and the exact denoiser, Euler's state is affine in x_T, x = p x_T + q: the update
// run on (p, q) in long double gives the output's mean q and variance p^2.
std::pair<LD, LD> euler_exact_moments(const std::vector<LD>& ab, LD mu, LD sd) {
    const LevelsLD level{ab};
    LD p = 1, q = 0;
    const int n = static_cast<int>(ab.size());
    for (int i = n - 1; i >= 0; --i) {
        const analytic::Affine f = analytic::gaussian_x0_affine(ab[static_cast<std::size_t>(i)], mu, sd);
        const LD s = level.sigma(i), s_next = level.sigma(i - 1), a = level.scale(i), a_next = level.scale(i - 1);
        const LD c_x = a_next * s_next / (s * a), c_d = a_next * (1 - s_next / s);
        const LD p0 = f.A * p, q0 = f.A * q + f.B;
        p = c_x * p + c_d * p0;
        q = c_x * q + c_d * q0;
    }
    return {q, p * p};
}

}  // namespace

TEST_CASE("Euler in sigma space is DDIM with eta 0 on the same timesteps", "[samplers][euler]") {
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(1000));
    const auto model = analytic::eps_model<double>(schedule.alphas_cumprod_double(), {{0.4L, -0.5L, 0.2L}, {0.6L, 0.4L, 0.3L}});
    diffuse::SigmaSamplerOptions<double> sigma;
    sigma.seed = 3;
    sigma.thresholding = diffuse::Thresholding::clip;
    sigma.steps.timesteps = diffuse::karras_timesteps(schedule, 12);
    diffuse::DDIMOptions<double> ddim;
    static_cast<diffuse::SamplerOptions<double>&>(ddim) = sigma;
    ddim.steps = sigma.steps;
    ddim.eps_from_thresholded_x0 = true;
    const auto a = diffuse::euler_sample(schedule, model, 12, {4, 1, 4, 4}, sigma);
    const auto b = diffuse::ddim_sample(schedule, model, 12, {4, 1, 4, 4}, ddim);
    for (Index k = 0; k < a.x.size(); ++k) REQUIRE(a.x.data()[k] == Approx(b.x.data()[k]).epsilon(1e-10).margin(1e-12));
}

TEMPLATE_TEST_CASE("One Euler ancestral step moves to sigma_down along d and adds sigma_up of fresh noise",
                   "[samplers][euler]", float, double) {
    using T = TestType;
    const diffuse::NoiseSchedule<T> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<T>(schedule.alphas_cumprod_double(), 0.3L, 0.5L);
    diffuse::SigmaSamplerOptions<T> options;
    options.seed = 9;
    options.eta = GENERATE(1.0, 0.5);
    options.keep_intermediates = true;
    options.steps.timesteps = {20, 60};
    const auto s = diffuse::euler_ancestral_sample(schedule, model, 2, {2, 1, 3, 3}, options);
    REQUIRE(s.intermediates.size() == 3);
    const auto& x = s.intermediates[0];   // x_T at t = 60
    const auto& after = s.intermediates[1];  // at t = 20
    const diffuse::Tensor4<T> z = diffuse::detail::move_noise<T>(options.seed, 0, {2, 1, 3, 3});
    const std::vector<LD> ab = ref::alphas_cumprod(ref::to_ld(diffuse::linear_betas(100)));
    const LD a = std::sqrt(ab[60]), a_next = std::sqrt(ab[20]);
    const LD sg = std::sqrt((1 - ab[60]) / ab[60]), sg_next = std::sqrt((1 - ab[20]) / ab[20]);
    const LD up = std::min(sg_next, LD(options.eta) * std::sqrt(sg_next * sg_next * (sg * sg - sg_next * sg_next) / (sg * sg)));
    const LD down = std::sqrt(sg_next * sg_next - up * up);
    const analytic::Affine f = analytic::gaussian_x0_affine(ab[60], 0.3L, 0.5L);
    const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    for (Index k = 0; k < x.size(); ++k) {
        const LD xs = LD(x.data()[k]) / a, d0 = f.A * LD(x.data()[k]) + f.B;  // x in sigma space, D
        const LD want = a_next * (xs + (xs - d0) / sg * (down - sg) + up * LD(z.data()[k]));
        REQUIRE(after.data()[k] == Approx(double(want)).epsilon(tolerance).margin(tolerance));
    }
    // the last step lands on the x0 prediction at t = 20
    const analytic::Affine f0 = analytic::gaussian_x0_affine(ab[20], 0.3L, 0.5L);
    for (Index k = 0; k < after.size(); ++k) {
        REQUIRE(s.x.data()[k] == Approx(double(f0.A * LD(after.data()[k]) + f0.B)).epsilon(tolerance).margin(tolerance));
    }
}

TEST_CASE("Euler with the exact denoiser of Gaussian data reproduces its affine recursion's moments",
          "[samplers][euler][statistical]") {
    // x0 ~ N(-0.2, 0.4^2), 8192 draws, linear T = 1000 (sigma from 0.01 to 157), Karras spacing. The
    // draws match the moments of the update run on (p, q) in long double within 5 standard errors.
    // Those moments are the first-order solver's, off the data's: relative variance errors -50% at 10
    // steps and -12% at 50 (DDIM's, the same update, at 50 leading steps: -13%); bound at 50: 15%.
    const LD mu = -0.2L, sd = 0.4L;
    const int steps = GENERATE(10, 50);
    INFO(steps << " steps");
    const diffuse::Betas betas = diffuse::linear_betas(1000);
    const diffuse::NoiseSchedule<float> schedule(betas);
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), mu, sd);
    diffuse::SigmaSamplerOptions<float> options;
    options.seed = 4;
    options.steps.timesteps = diffuse::karras_timesteps(schedule, steps);
    const auto samples = diffuse::euler_sample(schedule, model, steps, {32, 1, 16, 16}, options);
    const auto [m, v] = analytic::mean_variance(samples.x.data(), samples.x.size());
    const auto [want_m, want_v] = euler_exact_moments(analytic::kept_alphabar(betas, options.steps.timesteps), mu, sd);
    CHECK_MOMENTS_5SE(m, v, want_m, want_v, LD(samples.x.size()));
    INFO("relative variance error of the solver " << double(want_v / (sd * sd) - 1));
    if (steps == 50) CHECK(std::fabs(want_v / (sd * sd) - 1) <= 0.15L);
}

TEST_CASE("Euler ancestral with 50 steps and the exact denoiser of a two-Gaussian mixture reproduces both modes",
          "[samplers][euler][statistical]") {
    // 0.3 N(-0.5, 0.15^2) + 0.7 N(0.5, 0.15^2), linear T = 1000, 50 Karras steps, 8192 draws: the share of
    // positive draws within 5 binomial standard errors of 0.7, each mode's mean within 5 standard errors
    // plus 0.04 and its standard deviation within 10% of 0.15 (measured: 0.724 positive, the modes at
    // -0.472 and 0.463 with standard deviations 0.142 and 0.133: a first-order sampler's bias at 50 steps).
    const std::vector<analytic::Component> mixture = {{0.3L, -0.5L, 0.15L}, {0.7L, 0.5L, 0.15L}};
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    const auto model = analytic::eps_model<double>(schedule.alphas_cumprod_double(), mixture);
    diffuse::SigmaSamplerOptions<double> options;
    options.seed = 8;
    options.steps.timesteps = diffuse::karras_timesteps(schedule, 50);
    const auto samples = diffuse::euler_ancestral_sample(schedule, model, 50, {32, 1, 16, 16}, options);
    analytic::check_two_modes(samples.x, mixture, 0.04L, 0.15L);
}

TEST_CASE("Euler ancestral gives the same bits for a seed whatever the thread count", "[samplers][euler]") {
    test_support::ThreadCountGuard guard;
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    const auto model = analytic::gaussian_eps_model<float>(schedule.alphas_cumprod_double(), 0.1L, 0.4L);
    diffuse::SigmaSamplerOptions<float> options;
    options.seed = 7;
    diffuse::set_num_threads(1);
    const auto one = diffuse::euler_ancestral_sample(schedule, model, 10, {64, 2, 8, 8}, options);
    diffuse::set_num_threads(2);
    const auto two = diffuse::euler_ancestral_sample(schedule, model, 10, {64, 2, 8, 8}, options);
    CHECK(std::memcmp(one.x.data(), two.x.data(), sizeof(float) * static_cast<std::size_t>(one.x.size())) == 0);
}

TEST_CASE("The Euler samplers reject zero steps, more steps than T and an eta outside [0, 1]", "[samplers][euler][errors]") {
    using Catch::Contains;
    using diffuse::testing_support::rejection;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(100));
    const auto model = analytic::gaussian_eps_model<double>(schedule.alphas_cumprod_double(), 0.0L, 0.5L);
    CHECK_THAT(rejection([&] { diffuse::euler_sample(schedule, model, 0, {1, 1, 2, 2}); }), Contains("num_steps = 0"));
    CHECK_THAT(rejection([&] { diffuse::euler_sample(schedule, model, 101, {1, 1, 2, 2}); }), Contains("num_steps = 101"));
    diffuse::SigmaSamplerOptions<double> options;
    options.eta = 1.5;
    CHECK_THAT(rejection([&] { diffuse::euler_ancestral_sample(schedule, model, 5, {1, 1, 2, 2}, options); }), Contains("eta = 1.5"));
}
