// Learning-rate schedules: the linear warm-up, and the cosine decay after it, against their formulas;
// the trainer steps with the schedule's rate and refuses a decay inside its warm-up.

#include "../support/unet_configs.hpp"

#include <diffuse/models/unet.hpp>
#include <diffuse/optim/lr_schedule.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <cmath>

using diffuse::optim::cosine_lr;
using diffuse::optim::warmup_lr;

TEST_CASE("The cosine schedule warms up linearly, then falls as a half cosine to final_lr and stays there", "[optim][lr_schedule]") {
    const double lr = 2e-3, final_lr = 1e-4;
    const long warmup = 10, decay = 110;
    const double pi = 3.14159265358979323846;
    for (long step = 1; step <= warmup; ++step) {
        REQUIRE(cosine_lr(lr, step, warmup, decay, final_lr) == warmup_lr(lr, step, warmup));
    }
    REQUIRE(cosine_lr(lr, warmup, warmup, decay, final_lr) == lr);
    for (long step = warmup + 1; step < decay; ++step) {
        const double expected = final_lr + (lr - final_lr) * (1.0 + std::cos(pi * (step - warmup) / 100.0)) / 2.0;
        REQUIRE(cosine_lr(lr, step, warmup, decay, final_lr) == Approx(expected).epsilon(1e-14));
    }
    REQUIRE(cosine_lr(lr, 60, warmup, decay, final_lr) == Approx((lr + final_lr) / 2).epsilon(1e-14));  // halfway
    REQUIRE(cosine_lr(lr, decay, warmup, decay, final_lr) == final_lr);
    REQUIRE(cosine_lr(lr, decay + 1000, warmup, decay, final_lr) == final_lr);
    // without a warm-up the first step is already past it; decay_steps = 0 is the constant rate
    REQUIRE(cosine_lr(lr, 1, 0, 101, 0.0) == Approx(lr * (1.0 + std::cos(pi / 101.0)) / 2.0).epsilon(1e-14));
    REQUIRE(cosine_lr(lr, 5000, warmup, 0, final_lr) == lr);
}

TEST_CASE("The cosine schedule refuses a decay inside the warm-up and a final rate outside [0, lr]", "[optim][lr_schedule][errors]") {
    using Catch::Contains;
    REQUIRE_THROWS_WITH(cosine_lr(1e-3, 1, 50, 50, 0.0), Contains("decay_steps") && Contains("50"));
    REQUIRE_THROWS_WITH(cosine_lr(1e-3, 1, 50, 60, 2e-3), Contains("final_lr"));
    REQUIRE_THROWS_WITH(cosine_lr(1e-3, 1, 50, 60, -1e-4), Contains("final_lr"));
    REQUIRE_THROWS_WITH(cosine_lr(1e-3, 0, 50, 60, 0.0), Contains("step"));
}

TEST_CASE("The trainer steps with the cosine schedule's rate, and its decay can be fixed once a run's length is known",
          "[optim][lr_schedule][trainer]") {
    using Catch::Contains;
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    diffuse::Generator gen(5);
    const auto x = gen.randn<float, 4>({4, 1, 8, 8});
    const std::vector<int> labels = {0, 1, 0, 1};
    diffuse::optim::TrainerOptions options;
    options.adam.lr = 1e-3;
    options.warmup_steps = 2;
    options.lr_decay_steps = 6;
    options.final_lr = 1e-5;
    diffuse::UNet<float> unet(diffuse::testing_support::trainer_unet_config(), 1);
    diffuse::optim::Trainer<diffuse::UNet<float>> trainer(unet, schedule, options);
    for (long step = 1; step <= 8; ++step) {
        const double lr = trainer.step(x, labels).lr;
        REQUIRE(lr == cosine_lr(1e-3, step, 2, 6, 1e-5));
        REQUIRE(trainer.optimizer().options().lr == lr);
    }
    // the length fixed later: the rate follows the new decay from the next step
    trainer.set_lr_decay_steps(20);
    REQUIRE(trainer.step(x, labels).lr == cosine_lr(1e-3, 9, 2, 20, 1e-5));
    REQUIRE_THROWS_WITH(trainer.set_lr_decay_steps(2), Contains("lr_decay_steps") && Contains("2 warm-up steps"));
    REQUIRE(trainer.options().lr_decay_steps == 20);  // unchanged by the refused call

    options.final_lr = 2e-3;  // above adam.lr
    REQUIRE_THROWS_WITH((diffuse::optim::Trainer<diffuse::UNet<float>>(unet, schedule, options)), Contains("final_lr"));
    options.final_lr = 0.0;
    options.lr_decay_steps = 1;  // inside the warm-up
    REQUIRE_THROWS_WITH((diffuse::optim::Trainer<diffuse::UNet<float>>(unet, schedule, options)), Contains("lr_decay_steps"));
}
