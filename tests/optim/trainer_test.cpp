// Training: gradient-norm clipping, the loss of a few hundred steps on a tiny fixed batch, a
// reproducible run, a non-finite loss stopping with a clear error, and no trainer on a temporary schedule.

#include "../support/unet_configs.hpp"

#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

using diffuse::UNet;
using diffuse::UNetConfig;

namespace {

using diffuse::testing_support::trainer_unet_config;

diffuse::Tensor4<float> tiny_batch() {
    diffuse::Generator gen(5);
    auto x = gen.randn<float, 4>({8, 1, 8, 8});
    for (diffuse::Index i = 0; i < x.size(); ++i) x.data()[i] = std::tanh(x.data()[i]);
    return x;
}

}  // namespace

TEST_CASE("clip_grad_norm scales the gradients to the maximum norm and returns the norm before", "[optim][clip]") {
    diffuse::Generator gen(1);
    diffuse::nn::Linear<double> layer(2, 2, gen);
    for (diffuse::Index i = 0; i < 4; ++i) layer.weight.grad()[i] = 3.0;
    for (diffuse::Index i = 0; i < 2; ++i) layer.bias.grad()[i] = 4.0;
    const double norm = diffuse::optim::clip_grad_norm(layer, 1.0);
    REQUIRE(norm == Approx(std::sqrt(4 * 9.0 + 2 * 16.0)));
    REQUIRE(layer.weight.grad()[0] == Approx(3.0 / norm).epsilon(1e-5));
    REQUIRE(diffuse::optim::clip_grad_norm(layer, 10.0) == Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
    REQUIRE(layer.bias.grad()[0] == Approx(4.0 / norm).epsilon(1e-5));
}

TEST_CASE("Adam on a fixed noisy batch drives the U-Net's loss down by a large factor", "[optim][overfit]") {
    // The test of backward and optimizer together: x_t, t and the target are fixed, so the network
    // can memorise them; the loss must fall far below its starting value.
    UNet<float> unet(trainer_unet_config(), 1);
    diffuse::optim::AdamOptions options;
    options.lr = 2e-3;
    diffuse::optim::Adam<float> adam(options);
    diffuse::Generator gen(2);
    const auto x_t = gen.randn<float, 4>({4, 1, 8, 8});
    const auto target = gen.randn<float, 4>({4, 1, 8, 8});
    const diffuse::Timesteps t = {10, 200, 500, 900};
    const std::vector<int> labels = {0, 1, 2, 0};
    double first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
        diffuse::Tensor4<float> grad;
        const double loss = diffuse::mse_loss(unet.forward(x_t, t, labels), target, {}, grad);
        if (step == 0) first = loss;
        last = loss;
        diffuse::nn::zero_grad(unet);
        unet.backward(grad);
        adam.step(unet);
    }
    INFO("loss " << first << " -> " << last);
    REQUIRE(last < first / 50);
}

TEST_CASE("The trainer's loss falls over a few hundred steps and a run repeats bit for bit", "[optim][trainer]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(1000));
    diffuse::optim::TrainerOptions options;
    options.adam.lr = 1e-3;
    options.seed = 3;
    const auto x = tiny_batch();
    const std::vector<int> labels = {0, 1, 0, 1, 0, 1, 0, 1};
    std::vector<float> weights[2];
    double early = 0, late = 0;
    for (int run = 0; run < 2; ++run) {
        UNet<float> unet(trainer_unet_config(), 1);
        diffuse::optim::Trainer<UNet<float>> trainer(unet, schedule, options);
        const int steps = run == 0 ? 300 : 20;
        for (int i = 0; i < steps; ++i) {
            const auto stats = trainer.step(x, labels);
            if (run == 0 && i < 20) early += stats.loss / 20;
            if (run == 0 && i >= steps - 40) late += stats.loss / 40;
            if (run == 0 && i == 19) weights[0].assign(unet.conv_out.weight.data(), unet.conv_out.weight.data() + unet.conv_out.weight.size());
        }
        if (run == 1) weights[1].assign(unet.conv_out.weight.data(), unet.conv_out.weight.data() + unet.conv_out.weight.size());
    }
    INFO("mean loss of the first 20 steps " << early << ", of the last 40 " << late);
    // The loss is an average over random t and noise, so it cannot reach 0; a three-fold drop is far
    // outside its step-to-step spread on this batch.
    REQUIRE(late < early / 3);
    REQUIRE(weights[0] == weights[1]);  // the same 20 steps, the same bits
}

TEST_CASE("A non-finite loss stops training with an error and leaves the weights as they were", "[optim][trainer][errors]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    UNet<float> unet(trainer_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> trainer(unet, schedule);
    auto x = tiny_batch();
    x(0, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> before(unet.conv_in.weight.data(), unet.conv_in.weight.data() + unet.conv_in.weight.size());
    REQUIRE_THROWS_AS(trainer.step(x, {0, 1, 0, 1, 0, 1, 0, 1}), diffuse::numerical_error);
    const std::vector<float> after(unet.conv_in.weight.data(), unet.conv_in.weight.data() + unet.conv_in.weight.size());
    REQUIRE(before == after);
}

TEST_CASE("A training step refuses labels that are not one per image before it draws anything", "[optim][trainer][errors]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    UNet<float> unet(trainer_unet_config(), 1);
    diffuse::optim::Trainer<UNet<float>> trainer(unet, schedule);
    const std::vector<int> nine(9, 0);  // the batch has 8 images
    REQUIRE_THROWS_WITH(trainer.step(tiny_batch(), nine), Catch::Contains("labels.size() = 9, expected one label per sample, 8"));
    REQUIRE(trainer.step_count() == 0);
    REQUIRE(trainer.generator().offset() == 0);  // nothing drawn
}

TEST_CASE("A Trainer cannot be built on a temporary noise schedule, which would dangle, only on one that lives on", "[optim][trainer]") {
    using Trainer = diffuse::optim::Trainer<UNet<float>>;
    using Schedule = diffuse::NoiseSchedule<float>;
    STATIC_REQUIRE(!std::is_constructible_v<Trainer, UNet<float>&, Schedule&&>);
    STATIC_REQUIRE(!std::is_constructible_v<Trainer, UNet<float>&, const Schedule&&>);
    STATIC_REQUIRE(!std::is_constructible_v<Trainer, UNet<float>&, Schedule&&, diffuse::optim::TrainerOptions>);
    STATIC_REQUIRE(std::is_constructible_v<Trainer, UNet<float>&, Schedule&>);
    STATIC_REQUIRE(std::is_constructible_v<Trainer, UNet<float>&, const Schedule&>);
    STATIC_REQUIRE(std::is_constructible_v<Trainer, UNet<float>&, const Schedule&, diffuse::optim::TrainerOptions>);
}

TEST_CASE("A hybrid training step is hybrid_loss at the trainer's draws, the model's backward and one Adam step",
          "[optim][trainer][hybrid]") {
    // Replays the step by hand: t and the noise from a generator of the trainer's seed, no label
    // dropout, no clipping, no warm-up; the loss and the updated weights must match bit for bit.
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(100));
    UNetConfig config = trainer_unet_config();
    config.out_channels = 2;
    diffuse::optim::TrainerOptions options;
    options.loss = diffuse::Loss::hybrid;
    options.variance = diffuse::ModelVariance::learned_range;
    options.label_dropout = 0.0;
    options.max_grad_norm = 0.0;
    options.seed = 11;
    auto x0 = tiny_batch();
    for (diffuse::Index i = 0; i < x0.size(); ++i) x0.data()[i] = std::round((x0.data()[i] + 1) * 127.5f) / 127.5f - 1;
    const std::vector<int> labels = {0, 1, 0, 1, 0, 1, 0, 1};
    UNet<float> trained(config, 1), by_hand(config, 1);
    diffuse::optim::Trainer<UNet<float>> trainer(trained, schedule, options);
    const auto stats = trainer.step(x0, labels);

    diffuse::Generator generator(11);
    const diffuse::Timesteps t = generator.randint(8, 100);
    diffuse::Tensor4<float> eps;
    const auto x_t = diffuse::q_sample(schedule, x0, t, generator, eps);
    by_hand.set_training(true);
    const auto output = by_hand.forward(x_t, t, labels);
    const auto loss = diffuse::hybrid_loss(schedule, output, x0, eps, x_t, t);
    diffuse::nn::zero_grad(by_hand);
    by_hand.backward(loss.grad);
    diffuse::optim::Adam<float> adam(options.adam);
    adam.set_lr(options.adam.lr);
    adam.step(by_hand);

    CHECK(stats.loss == loss.loss);
    CHECK(stats.mse == loss.mse);
    CHECK(stats.vb == loss.vb);
    CHECK(stats.vb > 0.0);
    bool same = true;
    trained.for_each_parameter("", [&](diffuse::nn::ParameterView<float> p) {
        by_hand.for_each_parameter("", [&](diffuse::nn::ParameterView<float> q) {
            if (q.name == p.name) same = same && std::equal(p.value, p.value + p.size, q.value);
        });
    });
    CHECK(same);
}

TEST_CASE("The trainer refuses a variance its model's outputs or its loss cannot have, and a negative lambda",
          "[optim][trainer][errors]") {
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    using diffuse::Loss;
    using diffuse::ModelVariance;
    UNet<float> fixed(trainer_unet_config(), 1);
    UNetConfig config = trainer_unet_config();
    config.out_channels = 2;
    UNet<float> learned(config, 1);
    const auto options = [](Loss loss, ModelVariance variance) {
        diffuse::optim::TrainerOptions o;
        o.loss = loss;
        o.variance = variance;
        return o;
    };
    using Trainer = diffuse::optim::Trainer<UNet<float>>;
    REQUIRE_THROWS_WITH(Trainer(fixed, schedule, options(Loss::hybrid, ModelVariance::learned_range)),
                        Catch::Contains("the model's out_channels = 1, expected 2 for 1 data channels and variance learned_range"));
    REQUIRE_THROWS_WITH(Trainer(learned, schedule, options(Loss::vlb, ModelVariance::fixed_small)),
                        Catch::Contains("the model's out_channels = 2, expected 1"));
    REQUIRE_THROWS_WITH(Trainer(fixed, schedule, options(Loss::hybrid, ModelVariance::fixed_small)),
                        Catch::Contains("variance = fixed_small, expected learned_range for the hybrid loss"));
    REQUIRE_THROWS_WITH(Trainer(learned, schedule, options(Loss::simple, ModelVariance::learned_range)),
                        Catch::Contains("loss = simple, expected hybrid or vlb for a learned variance"));
    auto negative = options(Loss::hybrid, ModelVariance::learned_range);
    negative.vlb_lambda = -1e-3;
    REQUIRE_THROWS_WITH(Trainer(learned, schedule, negative), Catch::Contains("vlb_lambda = -0.001"));
    auto snr = options(Loss::vlb, ModelVariance::learned_range);
    snr.min_snr_gamma = 5;
    REQUIRE_THROWS_WITH(Trainer(learned, schedule, snr), Catch::Contains("min_snr_gamma = 5"));
    // L_vlb alone trains a fixed-variance model by the bound, and a learned one
    Trainer vlb_fixed(fixed, schedule, options(Loss::vlb, ModelVariance::fixed_small));
    Trainer vlb_learned(learned, schedule, options(Loss::vlb, ModelVariance::learned_range));
    auto x0 = tiny_batch();
    for (diffuse::Index i = 0; i < x0.size(); ++i) x0.data()[i] = std::round((x0.data()[i] + 1) * 127.5f) / 127.5f - 1;
    CHECK(std::isfinite(vlb_fixed.step(x0, {0, 1, 0, 1, 0, 1, 0, 1}).loss));
    CHECK(std::isfinite(vlb_learned.step(x0, {0, 1, 0, 1, 0, 1, 0, 1}).loss));
}

TEST_CASE("A loss-aware step weights each sample's loss by 1 / (T p_t) and records its unweighted loss",
          "[optim][trainer][hybrid]") {
    // T = 10: the histories fill within the first steps; then one step is replayed by hand from copies of
    // the trainer's generator, sampler and weights
    const diffuse::NoiseSchedule<float> schedule(diffuse::cosine_betas(10));
    UNetConfig config = trainer_unet_config();
    config.out_channels = 2;
    diffuse::optim::TrainerOptions options;
    options.loss = diffuse::Loss::hybrid;
    options.variance = diffuse::ModelVariance::learned_range;
    options.timestep_sampling = diffuse::optim::TimestepSampling::loss_aware;
    options.label_dropout = 0.0;
    options.seed = 12;
    auto x0 = tiny_batch();
    for (diffuse::Index i = 0; i < x0.size(); ++i) x0.data()[i] = std::round((x0.data()[i] + 1) * 127.5f) / 127.5f - 1;
    const std::vector<int> labels = {0, 1, 0, 1, 0, 1, 0, 1};
    UNet<float> trained(config, 1);
    diffuse::optim::Trainer<UNet<float>> trainer(trained, schedule, options);
    while (!trainer.timestep_sampler()->warmed_up()) trainer.step(x0, labels);

    diffuse::Generator generator = trainer.generator();
    diffuse::optim::LossAwareSampler sampler = *trainer.timestep_sampler();
    UNet<float> by_hand(config, 2);
    trained.for_each_parameter("", [&](diffuse::nn::ParameterView<float> p) {
        by_hand.for_each_parameter("", [&](diffuse::nn::ParameterView<float> q) {
            if (q.name == p.name) std::copy(p.value, p.value + p.size, q.value);
        });
    });
    const auto stats = trainer.step(x0, labels);

    const diffuse::optim::TimestepDraw draw = sampler.draw(generator, 8);
    bool weighted = false;
    for (const double w : draw.weights) weighted = weighted || w != 1.0;
    CHECK(weighted);  // past warm-up, the weights are not all 1
    diffuse::Tensor4<float> eps;
    const auto x_t = diffuse::q_sample(schedule, x0, draw.t, generator, eps);
    by_hand.set_training(true);
    const auto output = by_hand.forward(x_t, draw.t, labels);
    const auto loss = diffuse::hybrid_loss(schedule, output, x0, eps, x_t, draw.t, diffuse::Prediction::epsilon, 0.001,
                                           draw.weights);
    CHECK(stats.loss == loss.loss);
    double unweighted = 0.0;
    for (const double l : loss.per_sample) unweighted += l / 8;
    CHECK(stats.loss != unweighted);
    sampler.update(draw.t, loss.per_sample);
    CHECK(trainer.timestep_sampler()->history() == sampler.history());
}
