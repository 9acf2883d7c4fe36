// Respacing (Improved DDPM section 4, and diffusers' timestep spacings): which timesteps are kept,
// and that the respaced schedule has the original alphabar at every kept step.

#include "../support/reference.hpp"

#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

namespace {

using ref::LD;

std::vector<int> range(int start, int stop, int step) {
    std::vector<int> out;
    for (int i = start; i < stop; i += step) out.push_back(i);
    return out;
}

}  // namespace

TEST_CASE("space_timesteps of 1000 steps with ddim50 is range(0, 1000, 20)", "[schedule][respacing]") {
    CHECK(diffuse::space_timesteps(1000, std::string("ddim50")) == range(0, 1000, 20));
    // The smallest stride whose range has exactly N steps: ceil(1000 / 143) = 7, ceil(1000 / 142) = 8.
    CHECK(diffuse::space_timesteps(1000, std::string("ddim7")) == range(0, 1000, 143));
    CHECK(diffuse::space_timesteps(1000, std::string("ddim1000")) == range(0, 1000, 1));
    // ceil(250 / 5) = 50
    CHECK(diffuse::space_timesteps(250, std::string("ddim50")) == range(0, 250, 5));
}

TEST_CASE("space_timesteps of 300 steps with sections 10,15,20 follows Improved DDPM's algorithm",
          "[schedule][respacing]") {
    // By hand, as Improved DDPM's Python does it: 300 // 3 = 100 steps per section, no remainder.
    //  Section 0 [0, 100), 10 steps: stride (100 - 1) / (10 - 1) = 11.0, so 0, 11, ..., 99.
    //  Section 1 [100, 200), 15 steps: stride 99 / 14 = 7.0714285714285712 (double), accumulated by
    //   repeated addition: 0, 7.07, 14.14, 21.21, 28.29, 35.36, 42.43, 49.49999999999999 (7 additions
    //   fall just short of 49.5), 56.57, 63.64, 70.71, 77.79, 84.86, 91.93, 98.99999999999999;
    //   rounded: 0, 7, 14, 21, 28, 35, 42, 49, 57, 64, 71, 78, 85, 92, 99; plus 100.
    //  Section 2 [200, 300), 20 steps: stride 99 / 19 = 5.2105263157894735: 0, 5.21, 10.42, 15.63,
    //   20.84, 26.05, 31.26, 36.47, 41.68, 46.89, 52.11, 57.32, 62.53, 67.74, 72.95, 78.16, 83.37,
    //   88.58, 93.79, 99.00000000000003; rounded: 0, 5, 10, 16, 21, 26, 31, 36, 42, 47, 52, 57, 63,
    //   68, 73, 78, 83, 89, 94, 99; plus 200.
    const std::vector<int> expected = {
        0,   11,  22,  33,  44,  55,  66,  77,  88,  99,                                 // section 0
        100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199,       // section 1
        200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273, 278,  // section 2
        283, 289, 294, 299};
    CHECK(diffuse::space_timesteps(300, std::string("10,15,20")) == expected);
    CHECK(diffuse::space_timesteps(300, std::vector<int>{10, 15, 20}) == expected);
}

TEST_CASE("space_timesteps rounds fractional strides half to even, as Python's round does",
          "[schedule][respacing]") {
    // T = 100, one section of 25 steps: stride 99 / 24 = 4.125, exact in binary, so every multiple is
    // exact: 16.5, 49.5 and 82.5 are true ties and round to the even 16, 50 and 82.
    const std::vector<int> expected = {0,  4,  8,  12, 16, 21, 25, 29, 33, 37, 41, 45, 50,
                                       54, 58, 62, 66, 70, 74, 78, 82, 87, 91, 95, 99};
    CHECK(diffuse::space_timesteps(100, std::string("25")) == expected);
}

TEST_CASE("space_timesteps gives the remainder of an uneven split to the first sections",
          "[schedule][respacing]") {
    // T = 10, three sections: 10 // 3 = 3 with remainder 1, so sizes 4, 3, 3 starting at 0, 4, 7.
    //  Section 0, 3 of 4 steps: stride 3 / 2 = 1.5: 0, 1.5 -> 2 (tie, to even), 3.0 -> 3.
    //  Section 1, 2 of 3 steps: stride 2: 4 + {0, 2}.
    //  Section 2, 1 step: 7 + 0.
    CHECK(diffuse::space_timesteps(10, std::string("3,2,1")) == std::vector<int>{0, 2, 3, 4, 6, 7});
    // A section may keep no step at all.
    CHECK(diffuse::space_timesteps(10, std::string("0,3,0")) == std::vector<int>{4, 5, 6});
}

TEST_CASE("spaced_timesteps with leading spacing is k * (T / n) plus the offset", "[schedule][respacing]") {
    // diffusers: (np.arange(0, n) * (T // n)).round() + steps_offset
    CHECK(diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::leading) ==
          std::vector<int>{0, 100, 200, 300, 400, 500, 600, 700, 800, 900});
    CHECK(diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::leading, 1) ==
          std::vector<int>{1, 101, 201, 301, 401, 501, 601, 701, 801, 901});
    // Integer division: 1000 // 3 = 333.
    CHECK(diffuse::spaced_timesteps(1000, 3, diffuse::Spacing::leading) == std::vector<int>{0, 333, 666});
}

TEST_CASE("spaced_timesteps with trailing spacing always keeps the last timestep", "[schedule][respacing]") {
    // diffusers: np.round(np.arange(T, 0, -T / n)) - 1
    CHECK(diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::trailing) ==
          std::vector<int>{99, 199, 299, 399, 499, 599, 699, 799, 899, 999});
    // T = 10, n = 4: arange(10, 0, -2.5) = 10, 7.5, 5, 2.5; round half to even: 10, 8, 5, 2; minus 1:
    // 9, 7, 4, 1.
    CHECK(diffuse::spaced_timesteps(10, 4, diffuse::Spacing::trailing) == std::vector<int>{1, 4, 7, 9});
}

TEST_CASE("spaced_timesteps with linspace spacing keeps both ends", "[schedule][respacing]") {
    // diffusers: np.linspace(0, T - 1, n).round(); 999 / 9 = 111 exactly.
    CHECK(diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::linspace) ==
          std::vector<int>{0, 111, 222, 333, 444, 555, 666, 777, 888, 999});
    // linspace(0, 9, 3) = 0, 4.5, 9; the tie rounds to even: 4.
    CHECK(diffuse::spaced_timesteps(10, 3, diffuse::Spacing::linspace) == std::vector<int>{0, 4, 9});
    CHECK(diffuse::spaced_timesteps(10, 1, diffuse::Spacing::linspace) == std::vector<int>{0});
}

TEMPLATE_TEST_CASE("respace keeps alphabar at every kept step", "[schedule][respacing]", float, double) {
    // Improved DDPM's SpacedDiffusion: beta'_i = 1 - alphabar_{S_i} / alphabar_{S_{i-1}}, so the
    // respaced alphabar_i is the original alphabar at S_i. Reference: the original alphabar as a plain
    // product in long double of the input betas.
    // Tolerance: double, 2e-12 relative (a product of up to 1000 terms, see noise_schedule_test.cpp);
    // float, one rounding to float on top: 2^-23. For alphabar there is one more term: the respaced
    // schedule is held as double betas, and a double beta' near 1 fixes 1 - beta' only to 2^-53
    // absolute, i.e. to a relative 2^-53 / (1 - beta'); these add up along the kept steps. (With
    // cosine T = 1000 and the single kept step 999, 1 - beta' = alphabar_999 = 2.4e-9: 5e-8 relative.)
    const LD tolerance = std::is_same<TestType, float>::value ? LD(0x1p-23) : LD(2e-12);
    const std::string schedule_name = GENERATE(std::string("linear"), std::string("cosine"));
    const diffuse::Betas betas =
        schedule_name == "linear" ? diffuse::linear_betas(1000) : diffuse::cosine_betas(1000);
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(betas));
    const diffuse::NoiseSchedule<TestType> base(betas);

    const std::vector<std::vector<int>> subsets = {
        diffuse::space_timesteps(1000, std::string("ddim50")),
        diffuse::space_timesteps(1000, std::string("10,15,20")),
        diffuse::spaced_timesteps(1000, 50, diffuse::Spacing::leading, 1),
        diffuse::spaced_timesteps(1000, 50, diffuse::Spacing::trailing),
        diffuse::spaced_timesteps(1000, 50, diffuse::Spacing::linspace),
        {999},
        {0, 1, 2, 997, 998, 999},
    };
    for (std::size_t k = 0; k < subsets.size(); ++k) {
        const std::vector<int>& kept = subsets[k];
        INFO(schedule_name << ", subset " << k << " of " << kept.size() << " steps");
        const diffuse::NoiseSchedule<TestType> spaced = diffuse::respace(base, kept);
        REQUIRE(spaced.num_timesteps() == static_cast<int>(kept.size()));
        CHECK(spaced.timestep_map() == kept);

        std::vector<LD> want_ab, want_betas;
        for (std::size_t i = 0; i < kept.size(); ++i) {
            want_ab.push_back(alphabar[static_cast<std::size_t>(kept[i])]);
            const LD previous = i == 0 ? LD(1) : alphabar[static_cast<std::size_t>(kept[i - 1])];
            want_betas.push_back(1 - want_ab.back() / previous);
        }
        LD beta_rounding = 0;  // sum over the kept steps so far of 2^-53 / (1 - beta'_j)
        for (std::size_t i = 0; i < kept.size(); ++i) {
            beta_rounding += LD(0x1p-53) / (1 - want_betas[i]);
            const LD got = spaced.alphas_cumprod()[static_cast<Eigen::Index>(i)];
            INFO("respaced alphas_cumprod[" << i << "] = " << double(got) << ", expected "
                                            << double(want_ab[i]));
            CHECK(std::fabs(got - want_ab[i]) <= (tolerance + beta_rounding) * want_ab[i]);
        }
        CHECK_TABLE("respaced betas", spaced.betas(), want_betas, tolerance, LD(0));
        // And so every derived table is the original's at the kept steps, e.g. sqrt(1 - alphabar).
        std::vector<LD> want_sqrt_1m;
        for (const LD ab : want_ab) want_sqrt_1m.push_back(std::sqrt(1 - ab));
        CHECK_TABLE("respaced sqrt_one_minus_alphas_cumprod", spaced.sqrt_one_minus_alphas_cumprod(),
                    want_sqrt_1m, tolerance, LD(0));
    }
}

TEST_CASE("respace sorts the kept timesteps and maps steps to the original timesteps",
          "[schedule][respacing]") {
    // Tolerance 2e-12 relative, as in the previous test.
    const std::vector<LD> alphabar = ref::alphas_cumprod(ref::to_ld(diffuse::linear_betas(100)));
    const diffuse::NoiseSchedule<double> base(diffuse::linear_betas(100));
    const diffuse::NoiseSchedule<double> spaced = diffuse::respace(base, {90, 10, 50, 0});
    CHECK(spaced.timestep_map() == std::vector<int>{0, 10, 50, 90});
    CHECK(std::fabs(spaced.alphas_cumprod()[2] - alphabar[50]) <= 2e-12L * alphabar[50]);

    // Respacing a respaced schedule composes the maps: step j stands for original timestep S1[S2[j]].
    const diffuse::NoiseSchedule<double> twice = diffuse::respace(spaced, {1, 3});
    CHECK(twice.timestep_map() == std::vector<int>{10, 90});
    CHECK(std::fabs(twice.alphas_cumprod()[1] - alphabar[90]) <= 2e-12L * alphabar[90]);
    CHECK(std::fabs(twice.alphas_cumprod()[0] - alphabar[10]) <= 2e-12L * alphabar[10]);
}

TEST_CASE("respace keeps zero terminal SNR at the last step", "[schedule][respacing]") {
    const diffuse::NoiseSchedule<double> base(
        diffuse::rescale_zero_terminal_snr(diffuse::linear_betas(1000)));
    const diffuse::NoiseSchedule<double> spaced =
        diffuse::respace(base, diffuse::spaced_timesteps(1000, 10, diffuse::Spacing::trailing));
    CHECK(spaced.betas_double().back() == 1.0);
    CHECK(spaced.alphas_cumprod()[9] == 0.0);
}

TEST_CASE("respace rejects no steps, more steps than T, repeats and timesteps out of range",
          "[schedule][respacing][errors]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<float> base(diffuse::linear_betas(10));
    REQUIRE_THROWS_AS(diffuse::respace(base, {}), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::respace(base, {}), Contains("use_timesteps.size() = 0"));
    std::vector<int> eleven(11);
    std::iota(eleven.begin(), eleven.end(), 0);
    REQUIRE_THROWS_WITH(diffuse::respace(base, eleven), Contains("use_timesteps.size() = 11"));
    REQUIRE_THROWS_WITH(diffuse::respace(base, {3, 10}), Contains("use_timesteps[1] = 10"));
    REQUIRE_THROWS_WITH(diffuse::respace(base, {-1, 3}), Contains("use_timesteps[0] = -1"));
    REQUIRE_THROWS_WITH(diffuse::respace(base, {4, 2, 4}), Contains("use_timesteps = 4"));
}

TEST_CASE("spaced_timesteps rejects zero steps, more steps than T and a misplaced offset",
          "[schedule][respacing][errors]") {
    using Catch::Contains;
    using diffuse::Spacing;
    REQUIRE_THROWS_AS(diffuse::spaced_timesteps(10, 0, Spacing::leading), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(10, 0, Spacing::linspace), Contains("num_steps = 0"));
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(10, 11, Spacing::trailing), Contains("num_steps = 11"));
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(0, 1, Spacing::leading), Contains("num_timesteps = 0"));
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(10, 5, Spacing::trailing, 1), Contains("steps_offset = 1"));
    // leading with offset 2: 0, 2, 4, 6, 8 -> 2, ..., 10, out of [0, 10)
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(10, 5, Spacing::leading, 2), Contains("steps_offset = 2"));
    REQUIRE_THROWS_WITH(diffuse::spaced_timesteps(10, 5, Spacing::leading, -1),
                        Contains("steps_offset = -1"));
}

TEST_CASE("space_timesteps rejects more steps than a section has and no steps at all",
          "[schedule][respacing][errors]") {
    using Catch::Contains;
    REQUIRE_THROWS_AS(diffuse::space_timesteps(10, std::string("11")), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("11")), Contains("section_counts[0] = 11"));
    // Sections of 5 and 5 steps.
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("2,6")), Contains("section_counts[1] = 6"));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("0")), Contains("sum(section_counts) = 0"));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("-1")), Contains("section_counts[0] = -1"));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::vector<int>{}),
                        Contains("section_counts.size() = 0"));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(0, std::string("1")), Contains("num_timesteps = 0"));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(-5, std::vector<int>{1}), Contains("num_timesteps = -5"));
}

TEST_CASE("space_timesteps rejects malformed section-count strings, quoting them",
          "[schedule][respacing][errors]") {
    using Catch::Contains;
    // Python's int() rejects each of these pieces: "", "abc", "10x", "" (after the trailing comma).
    for (const std::string bad : {"", "abc", "10,,20", "10x", "10,", ",10", "ddim", "ddimx", "ddim5.5"}) {
        INFO("section_counts = \"" << bad << "\"");
        REQUIRE_THROWS_AS(diffuse::space_timesteps(100, bad), diffuse::invalid_argument);
        REQUIRE_THROWS_WITH(diffuse::space_timesteps(100, bad), Contains("section_counts = \"" + bad + "\""));
    }
    // No stride of range(0, 10, stride) gives 6 steps (10, 5, 4, 3, 2, 2, ... do).
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("ddim6")),
                        Contains("section_counts = \"ddim6\""));
    REQUIRE_THROWS_WITH(diffuse::space_timesteps(10, std::string("ddim0")),
                        Contains("section_counts = \"ddim0\""));
}
