// Beta schedules against their papers' formulas evaluated in long double.

#include "../support/reference.hpp"

#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using ref::LD;
constexpr LD eps = std::numeric_limits<double>::epsilon();  // 2^-52

}  // namespace

TEST_CASE("linear_betas is DDPM's linspace(1e-4, 0.02, T)", "[schedule][betas]") {
    // start + i (end - start) / (T - 1) in double: the step carries one rounding and i * step another,
    // each relative to a term no larger than beta_i, so 4 eps relative covers it.
    const int T = GENERATE(1000, 10, 2, 1);
    INFO("T = " << T);
    const diffuse::Betas betas = diffuse::linear_betas(T);
    CHECK_TABLE("linear betas", betas, ref::linear_betas(T), 4 * eps, LD(0));
    CHECK(betas.front() == 1e-4);
    if (T > 1) CHECK(betas.back() == 0.02);  // np.linspace's end point is exact
}

TEST_CASE("linear_betas with custom ends is linspace(beta_start, beta_end, T)", "[schedule][betas]") {
    diffuse::LinearOptions options;
    options.beta_start = 0.001;
    options.beta_end = 0.2;
    CHECK_TABLE("linear betas", diffuse::linear_betas(50, options), ref::linear_betas(50, 0.001L, 0.2L),
                4 * eps, LD(0));
}

TEST_CASE("linear_betas with scale_to_timesteps spans 1e-4 * 1000/T to 0.02 * 1000/T", "[schedule][betas]") {
    // Improved DDPM's get_named_beta_schedule("linear", T): scale = 1000 / T.
    diffuse::LinearOptions options;
    options.scale_to_timesteps = true;
    const int T = GENERATE(100, 250, 1000, 4000);
    INFO("T = " << T);
    const LD scale = LD(1000) / T;
    // One more rounding (the scale) than the unscaled case: 6 eps relative.
    CHECK_TABLE("scaled linear betas", diffuse::linear_betas(T, options),
                ref::linear_betas(T, 1e-4L * scale, 0.02L * scale), 6 * eps, LD(0));
    // Without the option T does not change the ends.
    const diffuse::Betas plain = diffuse::linear_betas(T);
    CHECK(plain.front() == 1e-4);
    CHECK(plain.back() == 0.02);
}

TEST_CASE("cosine_betas is Improved DDPM's 1 - alphabar(t+1) / alphabar(t) clipped at 0.999",
          "[schedule][betas]") {
    // Tolerance, per entry and absolute: beta = 1 - f(t+1) / f(t) turns the relative error of the
    // ratio into an absolute error of beta. f(t) = cos^2(theta_t) of an argument theta_t rounded to
    // double carries a relative error of about 2 eps (1 + theta_t tan(theta_t)), which grows as
    // theta_t nears pi/2 at the last steps (about 2 eps * 1000 at t = T - 1 for T = 1000).
    // 8 eps (2 + theta_t tan theta_t + theta_{t+1} tan theta_{t+1}) covers it with room to spare.
    const int T = GENERATE(1000, 10, 4000);
    INFO("T = " << T);
    const diffuse::Betas betas = diffuse::cosine_betas(T);
    const std::vector<LD> want = ref::cosine_betas(T);
    REQUIRE(betas.size() == want.size());
    const auto amplification = [T](int t) {
        const LD s = 0.008L, theta = (LD(t) / T + s) / (1 + s) * ref::pi() / 2;
        return theta * std::tan(theta);
    };
    for (int t = 0; t < T; ++t) {
        // A clipped entry is max_beta itself, 0.999 rounded to double.
        const bool clipped = want[static_cast<std::size_t>(t)] == 0.999L;
        const LD tolerance = clipped ? eps : 8 * eps * (2 + amplification(t) + amplification(t + 1));
        INFO("t = " << t << ", beta = " << betas[static_cast<std::size_t>(t)]);
        REQUIRE(std::fabs(betas[static_cast<std::size_t>(t)] - want[static_cast<std::size_t>(t)]) <=
                tolerance);
    }
}

TEST_CASE("The cosine schedule's alphabar telescopes to f(t+1) / f(0) until the clipped step",
          "[schedule][betas]") {
    // prod_{s <= t} (1 - beta_s) = prod f(s+1) / f(s) = f(t+1) / f(0) while no beta is clipped. The
    // product of T double betas: each (1 - beta_s) carries the absolute error of beta_s (see above, at
    // most ~1e-13 for T = 1000) relative to 1 - beta_s >= 0.44, summed over 1000 steps: 1e-10 relative.
    const int T = 1000;
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(T));
    ref::Worst worst;
    for (int t = 0; t + 1 < T; ++t) {
        const LD want = ref::cosine_f(t + 1, T) / ref::cosine_f(0, T);
        const LD error = std::fabs(schedule.alphas_cumprod()[t] - want) / want;
        if (error > worst.error)
            worst = {error, static_cast<std::size_t>(t), schedule.alphas_cumprod()[t], want};
    }
    INFO("worst at t = " << worst.index << ": " << double(worst.got) << " vs " << double(worst.want));
    CHECK(worst.error <= 1e-10L);
}

TEST_CASE("cosine_betas with T = 1000 clips only the last beta, at 0.999", "[schedule][betas]") {
    // Improved DDPM: "we clip beta_t to be no larger than 0.999 to prevent singularities at the end".
    // Unclipped, the last beta would be 1 - f(T) / f(T-1) = 1 - cos^2(pi/2) / ... = 1.
    const diffuse::Betas betas = diffuse::cosine_betas(1000);
    CHECK(betas.back() == 0.999);
    int clipped = 0;
    for (const double b : betas) clipped += b >= 0.999;
    CHECK(clipped == 1);
    CHECK(betas[998] < 0.999);
}

TEST_CASE("cosine_betas with a larger offset s and a lower cap follows the same formula",
          "[schedule][betas]") {
    diffuse::CosineOptions options;
    options.s = 0.05;
    options.max_beta = 0.5;
    const int T = 50;
    const diffuse::Betas betas = diffuse::cosine_betas(T, options);
    const std::vector<LD> want = ref::cosine_betas(T, 0.05L, 0.5L);
    // T = 50 keeps theta * tan(theta) below ~60: 1e-13 absolute.
    CHECK_TABLE("cosine betas", betas, want, 1e-13L, LD(1));
    int clipped = 0;
    for (const double b : betas) clipped += b == 0.5;
    CHECK(clipped >= 2);  // the cap now bites on more than the last step
}

TEST_CASE("scaled_linear_betas is linspace(sqrt(0.00085), sqrt(0.012), T) squared", "[schedule][betas]") {
    // Latent diffusion / Stable Diffusion. Roundings: two square roots, the linspace (as above), the
    // square: 8 eps relative.
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    std::vector<LD> want = ref::linspace(std::sqrt(0.00085L), std::sqrt(0.012L), T);
    for (LD& b : want) b *= b;
    const diffuse::Betas betas = diffuse::scaled_linear_betas(T);
    CHECK_TABLE("scaled_linear betas", betas, want, 8 * eps, LD(0));
    CHECK(betas.front() == Approx(0.00085).epsilon(1e-15));
    CHECK(betas.back() == Approx(0.012).epsilon(1e-15));
}

TEST_CASE("sigmoid_betas is sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start",
          "[schedule][betas]") {
    // diffusers' "sigmoid" (GeoDiff). The linspace point x carries |x| eps of rounding, which moves
    // sigmoid(x) by a relative (1 - sigmoid(x)) |x| eps <= 6 eps on [-6, 6]; the exp, the division and
    // the affine map add a few eps more: 16 eps relative.
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    std::vector<LD> want = ref::linspace(-6, 6, T);
    for (LD& x : want) x = 1 / (1 + std::exp(-x)) * (0.02L - 1e-4L) + 1e-4L;
    CHECK_TABLE("sigmoid betas", diffuse::sigmoid_betas(T), want, 16 * eps, LD(0));
    // Symmetric about the midpoint: beta_t + beta_{T-1-t} = beta_start + beta_end.
    const diffuse::Betas betas = diffuse::sigmoid_betas(T);
    for (int t = 0; t < T; ++t) {
        CHECK(betas[static_cast<std::size_t>(t)] + betas[static_cast<std::size_t>(T - 1 - t)] ==
              Approx(0.0201).epsilon(1e-14));
    }
}

TEST_CASE("rescale_zero_terminal_snr follows Lin et al.'s Algorithm 1", "[schedule][betas]") {
    // Algorithm 1 in long double: sqrt(alphabar) shifted so the last entry is 0 and scaled so the
    // first is unchanged, then betas from the ratios of consecutive alphabar.
    const int T = GENERATE(1000, 10);
    INFO("T = " << T);
    const diffuse::Betas input = diffuse::scaled_linear_betas(T);
    std::vector<LD> sqrt_ab;
    for (const LD ab : ref::alphas_cumprod(ref::to_ld(input))) sqrt_ab.push_back(std::sqrt(ab));
    const LD a0 = sqrt_ab.front(), aT = sqrt_ab.back();
    std::vector<LD> want_sqrt_ab, want_ab, want_betas;
    for (const LD s : sqrt_ab) {
        want_sqrt_ab.push_back((s - aT) * a0 / (a0 - aT));
        want_ab.push_back(want_sqrt_ab.back() * want_sqrt_ab.back());
    }
    for (int t = 0; t < T; ++t) {
        want_betas.push_back(
            1 - (t == 0 ? want_ab[0]
                        : want_ab[static_cast<std::size_t>(t)] / want_ab[static_cast<std::size_t>(t) - 1]));
    }

    const diffuse::Betas betas = diffuse::rescale_zero_terminal_snr(input);
    // Each beta is 1 - (a ratio computed to a few eps), so its error is a few eps absolute; 64 eps
    // leaves room for the affine map's cancellation (s - aT) near the end, where aT ~ 0.07 for T = 1000.
    CHECK_TABLE("rescaled betas", betas, want_betas, 64 * eps, LD(1));
    // The last alphabar is exactly 0: the last beta is exactly 1.
    CHECK(betas.back() == 1.0);
    // The first alphabar is unchanged: beta_0 = 1 - alphabar_0 is the input's beta_0 (its relative
    // precision is that of 1 - a ratio near 1: 64 eps / beta_0).
    CHECK(std::fabs(betas.front() - input.front()) <= 64 * eps);

    // The schedule built from them: alphabar = the affine map's square, to the relative error of a
    // product of T terms each ~1 eps off (1e-12 for T = 1000), and in absolute terms near the end
    // where alphabar goes to 0.
    const diffuse::NoiseSchedule<double> schedule(betas);
    CHECK_TABLE("rescaled alphabar", schedule.alphas_cumprod(), want_ab, 1e-12L, LD(1e-3));
    CHECK(schedule.alphas_cumprod()[T - 1] == 0.0);
    CHECK(schedule.snr()[T - 1] == 0.0);
    CHECK(schedule.alphas_cumprod()[0] == Approx(1 - input.front()).epsilon(1e-13));

    // sqrt(alphabar') is an affine map of sqrt(alphabar): collinear with the first and last points.
    const LD slope = a0 / (a0 - aT);
    for (int t = 0; t < T; ++t) {
        const LD got = std::sqrt(static_cast<LD>(schedule.alphas_cumprod()[t]));
        REQUIRE(std::fabs(got - slope * (sqrt_ab[static_cast<std::size_t>(t)] - aT)) <= 1e-12L);
    }
}

TEST_CASE("Beta schedules reject a non-positive number of timesteps, naming num_timesteps",
          "[schedule][betas][errors]") {
    using Catch::Contains;
    const int T = GENERATE(0, -3);
    const std::string value = "num_timesteps = " + std::to_string(T);
    REQUIRE_THROWS_AS(diffuse::linear_betas(T), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::linear_betas(T), Contains(value) && Contains("linear_betas"));
    REQUIRE_THROWS_WITH(diffuse::cosine_betas(T), Contains(value) && Contains("cosine_betas"));
    REQUIRE_THROWS_WITH(diffuse::scaled_linear_betas(T), Contains(value) && Contains("scaled_linear_betas"));
    REQUIRE_THROWS_WITH(diffuse::sigmoid_betas(T), Contains(value) && Contains("sigmoid_betas"));
}

TEST_CASE("Beta schedules reject options that put a beta outside (0, 1)", "[schedule][betas][errors]") {
    using Catch::Contains;
    diffuse::LinearOptions scaled;
    scaled.scale_to_timesteps = true;
    // T = 20: beta_end = 0.02 * 1000 / 20 = 1.
    REQUIRE_THROWS_AS(diffuse::linear_betas(20, scaled), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::linear_betas(20, scaled), Contains("beta_end (after scaling) = 1"));
    diffuse::LinearOptions negative;
    negative.beta_start = -0.1;
    REQUIRE_THROWS_WITH(diffuse::linear_betas(10, negative), Contains("beta_start (after scaling) = -0.1"));
    diffuse::CosineOptions cap;
    cap.max_beta = 1.0;
    REQUIRE_THROWS_WITH(diffuse::cosine_betas(10, cap), Contains("max_beta = 1"));
    diffuse::CosineOptions offset;
    offset.s = -0.5;
    REQUIRE_THROWS_WITH(diffuse::cosine_betas(10, offset), Contains("s = -0.5"));
    diffuse::ScaledLinearOptions big;
    big.beta_end = 2.0;
    REQUIRE_THROWS_WITH(diffuse::scaled_linear_betas(10, big), Contains("beta_end = 2"));
    diffuse::SigmoidOptions range;
    range.low = 6.0;
    range.high = -6.0;
    REQUIRE_THROWS_WITH(diffuse::sigmoid_betas(10, range), Contains("low = 6"));
}

TEST_CASE("rescale_zero_terminal_snr rejects fewer than two betas and betas outside (0, 1)",
          "[schedule][betas][errors]") {
    using Catch::Contains;
    REQUIRE_THROWS_AS(diffuse::rescale_zero_terminal_snr({0.1}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::rescale_zero_terminal_snr({0.1}), Contains("betas.size() = 1"));
    REQUIRE_THROWS_WITH(diffuse::rescale_zero_terminal_snr({0.1, 1.0}), Contains("betas[1] = 1"));
}
