// Classifier-free guidance: eps_uncond + s (eps_cond - eps_uncond) from one call on the doubled batch,
// guided sampling of class-conditional Gaussian data, and bad input.

#include "../support/reference.hpp"
#include "analytic.hpp"

#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <utility>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

}  // namespace

TEST_CASE("Guidance calls the model once on the doubled batch and returns eps_uncond plus s times the difference",
          "[samplers][guidance]") {
    // A model whose output depends on the label: x (label + 1) + t / 1000; "no class" is index 3.
    int calls = 0;
    std::vector<int> seen_labels;
    diffuse::Timesteps seen_t;
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                               const std::vector<int>& labels) {
        ++calls;
        seen_labels = labels;
        seen_t = t;
        diffuse::Tensor4<double> out(x.dimensions());
        const Index per = x.size() / x.dimension(0);
        for (Index i = 0; i < x.size(); ++i) out.data()[i] = x.data()[i] * (labels[static_cast<std::size_t>(i / per)] + 1) + t[static_cast<std::size_t>(i / per)] / 1000.0;
        return out;
    };
    const double scale = GENERATE(0.0, 1.0, 3.5);
    INFO("scale " << scale);
    const auto guided = diffuse::classifier_free_guidance(model, 3, scale);
    const auto x = diffuse::Generator(1).randn<double, 4>({2, 1, 3, 3});
    const auto out = guided(x, {5, 9}, {0, 2});
    CHECK(calls == 1);
    CHECK(seen_labels == std::vector<int>{0, 2, 3, 3});
    CHECK(seen_t == diffuse::Timesteps{5, 9, 5, 9});
    for (Index i = 0; i < x.size(); ++i) {
        const Index n = i / 9;
        const LD t = n == 0 ? 5 : 9, label = n == 0 ? 0 : 2;
        const LD cond = x.data()[i] * (label + 1) + t / 1000, uncond = x.data()[i] * 4 + t / 1000;
        const LD want = uncond + scale * (cond - uncond);
        // two roundings of values of order 10
        CHECK(std::fabs(out.data()[i] - want) <= 1e-14L * (std::fabs(cond) + std::fabs(uncond) + 1) * (1 + scale));
    }
}

TEST_CASE("Guided DDIM with scale 1 samples each class's Gaussian and a larger scale moves samples away from the unconditional mean",
          "[samplers][guidance][statistical]") {
    // Class c has data N(mu_c, 0.3^2), mu = (-0.5, 0.5); "no class" is their equal mixture. With the exact
    // eps of each (analytic.hpp) and scale 1 the guided model is the conditional one: DDIM with 50 steps
    // (cosine, leading) must give each class's mean within 5 standard errors plus 0.01 (2048 draws a
    // class). With scale 3 the class means move further from 0 (guidance sharpens), by at least 0.05.
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(1000));
    const std::vector<double> ab = schedule.alphas_cumprod_double();
    const std::vector<std::vector<analytic::Component>> data = {
        {{1, -0.5L, 0.3L}}, {{1, 0.5L, 0.3L}}, {{0.5L, -0.5L, 0.3L}, {0.5L, 0.5L, 0.3L}}};
    const std::vector<diffuse::ModelFn<double>> per_class = {analytic::eps_model<double>(ab, data[0]),
                                                             analytic::eps_model<double>(ab, data[1]),
                                                             analytic::eps_model<double>(ab, data[2])};
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                               const std::vector<int>& labels) {
        diffuse::Tensor4<double> out(x.dimensions());
        const Index per = x.size() / x.dimension(0);
        for (Index n = 0; n < x.dimension(0); ++n) {
            diffuse::Tensor4<double> one(1, x.dimension(1), x.dimension(2), x.dimension(3));
            std::copy_n(x.data() + n * per, per, one.data());
            const auto e = per_class[static_cast<std::size_t>(labels[static_cast<std::size_t>(n)])](one, {t[static_cast<std::size_t>(n)]}, {});
            std::copy_n(e.data(), per, out.data() + n * per);
        }
        return out;
    };
    diffuse::DDIMOptions<double> options;
    options.conditioning.labels = {0, 1, 0, 1, 0, 1, 0, 1};
    std::vector<LD> means_at_1;
    for (const double scale : {1.0, 3.0}) {
        const auto samples = diffuse::ddim_sample(schedule, diffuse::classifier_free_guidance(model, 2, scale), 50, {8, 1, 16, 32}, options);
        for (int c = 0; c < 2; ++c) {
            std::vector<double> draws;
            for (Index n = c; n < 8; n += 2) draws.insert(draws.end(), samples.x.data() + n * 512, samples.x.data() + (n + 1) * 512);
            const auto [m, v] = analytic::mean_variance(draws.data(), Index(draws.size()));
            INFO("scale " << scale << ", class " << c << ": mean " << double(m) << ", variance " << double(v));
            const LD mu = c == 0 ? -0.5L : 0.5L;
            if (scale == 1.0) {
                CHECK(std::fabs(m - mu) <= 5 * 0.3L / std::sqrt(LD(draws.size())) + 0.01L);
                means_at_1.push_back(m);
            } else {
                CHECK(std::fabs(m) >= std::fabs(means_at_1[static_cast<std::size_t>(c)]) + 0.05L);
            }
        }
    }
}

TEST_CASE("Guidance rejects an unconditional model, missing labels and labels out of range", "[samplers][guidance][errors]") {
    using Catch::Contains;
    const diffuse::ModelFn<double> model = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                              const std::vector<int>&) { return x; };
    REQUIRE_THROWS_AS(diffuse::classifier_free_guidance(model, 0, 2.0), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::classifier_free_guidance(model, 0, 2.0),
                        Contains("num_classes = 0, expected a class-conditional model (num_classes >= 1)"));
    const auto guided = diffuse::classifier_free_guidance(model, 10, 2.0);
    const auto x = diffuse::Generator(1).randn<double, 4>({2, 1, 2, 2});
    REQUIRE_THROWS_WITH(guided(x, {1, 1}, {}), Contains("labels.size() = 0, expected one class per sample, 2"));
    REQUIRE_THROWS_WITH(guided(x, {1, 1}, {3, 10}), Contains("labels[1] = 10, expected a class in [0, 10)"));
    // through a sampler: an unconditional run (no labels) of a guided model
    const diffuse::NoiseSchedule<double> schedule(diffuse::cosine_betas(10));
    REQUIRE_THROWS_WITH(diffuse::ddim_sample(schedule, guided, 5, {2, 1, 2, 2}),
                        Contains("set the sampler's options.conditioning.labels; guidance needs a class"));
}

TEST_CASE("Guidance of a prompt model calls it once with the null prompt's embedding padded into the unconditional half",
          "[samplers][guidance]") {
    // A model whose output is x times the mean of each sample's real context tokens' first feature.
    diffuse::Conditioning<double> seen;
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                               const diffuse::Conditioning<double>& c) {
        seen = c;
        diffuse::Tensor4<double> out(x.dimensions());
        const Index per = x.size() / x.dimension(0), l = c.context.dimension(1), d = c.context.dimension(2);
        for (Index n = 0; n < x.dimension(0); ++n) {
            double sum = 0;
            int count = 0;
            for (Index j = 0; j < l; ++j) {
                if (!c.context_mask.empty() && !c.context_mask[static_cast<std::size_t>(n * l + j)]) continue;
                sum += c.context.data()[(n * l + j) * d];
                ++count;
            }
            for (Index i = 0; i < per; ++i) out.data()[n * per + i] = x.data()[n * per + i] * sum / count;
        }
        return out;
    };
    diffuse::Tensor3<double> null(1, 1, 2);  // the empty prompt: one token
    null.setValues({{{0.5, 9.0}}});
    const auto guided = diffuse::classifier_free_guidance<double>(model, diffuse::null_context<double>(null), 2.0);
    diffuse::Conditioning<double> c;
    c.context = diffuse::Tensor3<double>(2, 3, 2);
    c.context.setValues({{{1, 0}, {2, 0}, {3, 0}}, {{4, 0}, {8, 0}, {100, 0}}});
    c.context_mask = {1, 1, 1, 1, 1, 0};  // sample 1's third token is padding
    const auto x = diffuse::Generator(3).randn<double, 4>({2, 1, 2, 2});
    const auto out = guided(x, {1, 1}, c);
    REQUIRE(seen.context.dimension(0) == 4);
    REQUIRE(seen.context.dimension(1) == 3);
    REQUIRE(seen.context_mask == diffuse::KeyMask{1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0});
    for (Index i = 0; i < x.size(); ++i) {
        const double cond = i < 4 ? 2.0 : 6.0, uncond = 0.5;
        REQUIRE(out.data()[i] == Approx(x.data()[i] * (uncond + 2.0 * (cond - uncond))).epsilon(1e-14));
    }
    diffuse::Conditioning<double> none;
    REQUIRE_THROWS_WITH(guided(x, {1, 1}, none), Catch::Contains("a context per sample"));
    REQUIRE_THROWS_WITH(diffuse::null_context<double>(diffuse::Tensor3<double>(2, 1, 2)), Catch::Contains("[1, L, D]"));
}


TEST_CASE("Guidance of a learned-variance model guides its mean part and keeps the conditional half's variance channels",
          "[samplers][guidance]") {
    // output [N, 2C, H, W] = [x (label + 1), label / 10]: the mean part guided, v the conditional one's (GLIDE)
    const diffuse::ModelFn<double> model = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                              const std::vector<int>& labels) {
        const Index n = x.dimension(0), c = x.dimension(1), plane = x.dimension(2) * x.dimension(3);
        diffuse::Tensor4<double> out(n, 2 * c, x.dimension(2), x.dimension(3));
        for (Index s = 0; s < n; ++s) {
            const double label = labels[static_cast<std::size_t>(s)];
            for (Index i = 0; i < c * plane; ++i) {
                out.data()[s * 2 * c * plane + i] = x.data()[s * c * plane + i] * (label + 1);
                out.data()[s * 2 * c * plane + c * plane + i] = label / 10;
            }
        }
        return out;
    };
    const auto guided = diffuse::classifier_free_guidance(model, 3, 2.5);
    const auto x = diffuse::Generator(4).randn<double, 4>({2, 2, 2, 2});
    const auto out = guided(x, {5, 9}, {0, 2});
    REQUIRE(out.dimensions() == diffuse::Shape4{2, 4, 2, 2});
    for (Index s = 0; s < 2; ++s) {
        const double label = s == 0 ? 0 : 2;
        for (Index i = 0; i < 8; ++i) {
            const double xv = x.data()[s * 8 + i];
            CHECK(out.data()[s * 16 + i] == Approx(xv * 4 + 2.5 * (xv * (label + 1) - xv * 4)).margin(1e-14));
            CHECK(out.data()[s * 16 + 8 + i] == label / 10);
        }
    }
    // the samplers other than DDPM use the mean part; without_variance drops the v channels
    const auto mean_only = diffuse::without_variance<double>(guided);
    const auto m = mean_only(x, {5, 9}, {0, 2});
    REQUIRE(m.dimensions() == diffuse::Shape4{2, 2, 2, 2});
    for (Index s = 0; s < 2; ++s)
        for (Index i = 0; i < 8; ++i) CHECK(m.data()[s * 8 + i] == out.data()[s * 16 + i]);
    const diffuse::ModelFn<double> fixed = [](const diffuse::Tensor4<double>& x_t, const diffuse::Timesteps&,
                                              const std::vector<int>&) { return x_t; };
    REQUIRE_THROWS_WITH(diffuse::without_variance<double>(fixed)(x, {5, 9}, {0, 2}),
                        Catch::Contains("the output's channels = 2, expected 4"));
}

TEST_CASE("guidance_interval names the timesteps whose noise level sigma_t is above sigma_low and at most sigma_high",
          "[samplers][guidance]") {
    const bool cosine = GENERATE(false, true);
    INFO((cosine ? "cosine" : "linear") << " schedule, T = 1000");
    const diffuse::Betas betas = cosine ? diffuse::cosine_betas(1000) : diffuse::linear_betas(1000);
    const diffuse::NoiseSchedule<float> schedule(betas);
    // sigma_t from the betas in long double: alphabar_t = prod_{s <= t} (1 - beta_s)
    std::vector<LD> sigma;
    LD alphabar = 1;
    for (const double beta : betas) {
        alphabar *= 1 - static_cast<LD>(beta);
        sigma.push_back(std::sqrt((1 - alphabar) / alphabar));
    }
    const auto [low, high] = GENERATE(std::pair<double, double>{0.0, 1e300}, std::pair<double, double>{0.28, 5.42},
                                      std::pair<double, double>{1.0, 2.0}, std::pair<double, double>{0.05, 80.0});
    INFO("(" << low << ", " << high << "]");
    const diffuse::GuidanceInterval interval = diffuse::guidance_interval(schedule, low, high);
    for (int t = 0; t < 1000; ++t) {
        INFO("t = " << t << ", sigma_t = " << static_cast<double>(sigma[static_cast<std::size_t>(t)]));
        CHECK(interval.contains(t) == (sigma[static_cast<std::size_t>(t)] > low && sigma[static_cast<std::size_t>(t)] <= high));
    }
    // a respaced schedule: the timesteps the model is told, those of the training schedule
    const diffuse::NoiseSchedule<float> respaced = diffuse::respace(schedule, diffuse::spaced_timesteps(1000, 20, diffuse::Spacing::trailing));
    const diffuse::GuidanceInterval coarse = diffuse::guidance_interval(respaced, 1.0, 2.0);
    int inside = 0;
    for (const int t : respaced.timestep_map()) {
        const bool want = sigma[static_cast<std::size_t>(t)] > 1.0 && sigma[static_cast<std::size_t>(t)] <= 2.0;
        CHECK(coarse.contains(t) == want);
        inside += want ? 1 : 0;
    }
    CHECK(inside >= 1);
}

TEST_CASE("Guidance in an interval is the conditional model alone, in one call, at the timesteps outside it",
          "[samplers][guidance]") {
    // the model of the first test case: x (label + 1) + t / 1000, "no class" is index 3
    std::vector<Index> batches;
    const diffuse::ModelFn<double> model = [&](const diffuse::Tensor4<double>& x, const diffuse::Timesteps& t,
                                               const std::vector<int>& labels) {
        batches.push_back(x.dimension(0));
        diffuse::Tensor4<double> out(x.dimensions());
        const Index per = x.size() / x.dimension(0);
        for (Index i = 0; i < x.size(); ++i) out.data()[i] = x.data()[i] * (labels[static_cast<std::size_t>(i / per)] + 1) + t[static_cast<std::size_t>(i / per)] / 1000.0;
        return out;
    };
    const double scale = 2.5;
    const auto guided = diffuse::classifier_free_guidance(model, 3, scale, diffuse::GuidanceInterval{100, 200});
    const auto x = diffuse::Generator(2).randn<double, 4>({3, 1, 2, 2});
    const std::vector<int> labels{0, 2, 1};
    const auto check = [&](const diffuse::Tensor4<double>& out, const diffuse::Timesteps& t) {
        for (Index i = 0; i < x.size(); ++i) {
            const std::size_t n = static_cast<std::size_t>(i / 4);
            const LD cond = x.data()[i] * (labels[n] + 1) + t[n] / 1000.0L, uncond = x.data()[i] * 4 + t[n] / 1000.0L;
            const bool inside = t[n] >= 100 && t[n] <= 200;
            INFO("sample " << n << ", t = " << t[n]);
            if (inside) {
                CHECK(std::fabs(out.data()[i] - (uncond + scale * (cond - uncond))) <= 1e-14L * (std::fabs(cond) + std::fabs(uncond) + 1) * (1 + scale));
            } else {
                CHECK(out.data()[i] == static_cast<double>(x.data()[i] * (labels[n] + 1) + t[n] / 1000.0));  // exactly the conditional output
            }
        }
    };
    SECTION("every t outside: one call on the batch") {
        const diffuse::Timesteps t{99, 201, 999};
        check(guided(x, t, labels), t);
        CHECK(batches == std::vector<Index>{3});
    }
    SECTION("every t inside, both ends included: one call on the doubled batch") {
        const diffuse::Timesteps t{100, 150, 200};
        check(guided(x, t, labels), t);
        CHECK(batches == std::vector<Index>{6});
    }
    SECTION("a batch of both: guided where t is inside") {
        const diffuse::Timesteps t{50, 150, 500};
        check(guided(x, t, labels), t);
        CHECK(batches == std::vector<Index>{6});
    }
}

TEST_CASE("Guidance rejects an empty interval, bad noise levels and timesteps that do not match the batch",
          "[samplers][guidance][errors]") {
    using Catch::Contains;
    const diffuse::ModelFn<double> model = [](const diffuse::Tensor4<double>& x, const diffuse::Timesteps&,
                                              const std::vector<int>&) { return x; };
    REQUIRE_THROWS_WITH(diffuse::classifier_free_guidance(model, 10, 2.0, diffuse::GuidanceInterval{5, 4}),
                        Contains("interval = [5, 4], expected first <= last"));
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(1000));
    REQUIRE_THROWS_WITH(diffuse::guidance_interval(schedule, -0.5, 1.0), Contains("sigma_low = -0.5, expected a finite noise level >= 0"));
    REQUIRE_THROWS_WITH(diffuse::guidance_interval(schedule, std::nan(""), 1.0), Contains("sigma_low = nan"));
    REQUIRE_THROWS_WITH(diffuse::guidance_interval(schedule, 2.0, 2.0), Contains("sigma_high = 2, expected a noise level above sigma_low"));
    REQUIRE_THROWS_WITH(diffuse::guidance_interval(schedule, 1e3, 1e4),
                        Contains("(sigma_low, sigma_high] = (1000, 10000], expected an interval holding a timestep of the schedule, whose sigma_t runs from 0.01"));
    const auto guided = diffuse::classifier_free_guidance(model, 10, 2.0, diffuse::GuidanceInterval{0, 10});
    const auto x = diffuse::Generator(1).randn<double, 4>({2, 1, 2, 2});
    REQUIRE_THROWS_WITH(guided(x, {1}, {3, 4}), Contains("t.size() = 1, expected one timestep per sample, 2"));
    // a label out of range is refused at the steps outside the interval too, not taken as "no class"
    REQUIRE_THROWS_WITH(guided(x, {50, 50}, {3, 10}), Contains("labels[1] = 10, expected a class in [0, 10)"));
}
