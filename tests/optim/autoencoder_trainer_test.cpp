// The autoencoder's training step: the loss is the reconstruction error plus kl_weight times the
// batch's mean KL, training lowers the reconstruction error of held-out images, and the latent scale
// factor makes the latents' variance 1.

#include "../support/bits.hpp"
#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/optim/autoencoder_trainer.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace {

diffuse::AutoencoderConfig trainable_autoencoder() {
    diffuse::AutoencoderConfig c;
    c.ch = 8;
    c.ch_mult = {1, 2};
    c.num_res_blocks = 1;
    c.z_channels = 2;
    c.groups = 4;
    c.image_size = 8;
    return c;
}

// n images of 8x8 in [-1, 1], each two Gaussian bumps of random place and sign: structure to learn.
diffuse::Tensor4<float> bump_images(diffuse::Index n, std::uint64_t seed) {
    diffuse::Generator gen(seed);
    std::vector<double> u(static_cast<std::size_t>(6 * n));
    gen.uniform(u.data(), static_cast<diffuse::Index>(u.size()));
    diffuse::Tensor4<float> x(n, 1, 8, 8);
    for (diffuse::Index i = 0; i < n; ++i) {
        for (diffuse::Index h = 0; h < 8; ++h) {
            for (diffuse::Index w = 0; w < 8; ++w) {
                double v = 0.0;
                for (int b = 0; b < 2; ++b) {
                    const double* p = u.data() + 6 * i + 3 * b;
                    const double cy = 1 + 6 * p[0], cx = 1 + 6 * p[1], sign = p[2] < 0.5 ? -1.0 : 1.0;
                    v += sign * std::exp(-((h - cy) * (h - cy) + (w - cx) * (w - cx)) / 3.0);
                }
                x(i, 0, h, w) = static_cast<float>(std::tanh(1.5 * v));
            }
        }
    }
    return x;
}

// The mean squared error of reconstructions from the posterior's mean, in evaluation mode.
double reconstruction_mse(diffuse::Autoencoder<float>& ae, const diffuse::Tensor4<float>& x) {
    ae.set_training(false);
    const auto q = diffuse::posterior_from_moments(ae.encode(x));
    const auto x_hat = ae.decode(q.mean);
    double sum = 0.0;
    for (diffuse::Index i = 0; i < x.size(); ++i) sum += (x_hat.data()[i] - x.data()[i]) * (x_hat.data()[i] - x.data()[i]);
    return sum / static_cast<double>(x.size());
}

}  // namespace

TEST_CASE("Training the autoencoder lowers the reconstruction error of held-out images", "[optim][autoencoder]") {
    const auto train = bump_images(256, 1), test = bump_images(64, 2);
    diffuse::Autoencoder<float> ae(trainable_autoencoder(), 3);
    diffuse::optim::AutoencoderTrainerOptions options;
    options.adam.lr = 3e-3;
    options.warmup_steps = 20;
    options.kl_weight = 1e-4;
    diffuse::optim::AutoencoderTrainer<float> trainer(ae, options);
    const double before = reconstruction_mse(ae, test);
    diffuse::optim::AutoencoderStepStats stats{};
    for (int step = 0; step < 300; ++step) {
        diffuse::Tensor4<float> batch(16, 1, 8, 8);
        const diffuse::Index first = (step * 16) % 256;
        std::copy_n(train.data() + first * 64, 16 * 64, batch.data());
        stats = trainer.step(batch);
        REQUIRE(stats.loss == Approx(stats.reconstruction + options.kl_weight * stats.kl).epsilon(1e-12));
        REQUIRE(stats.kl >= 0.0);
    }
    const double after = reconstruction_mse(ae, test);
    INFO("test MSE " << before << " -> " << after);
    CHECK(after < 0.25 * before);
    CHECK(trainer.step_count() == 300);
}

TEST_CASE("The latent scale factor gives the encoded latents unit variance", "[models][autoencoder]") {
    diffuse::Autoencoder<float> ae(trainable_autoencoder(), 4);
    const auto x = bump_images(40, 5);
    const double factor = diffuse::latent_scale_factor(ae, x, 6, 40);
    // the same latents, drawn again from the same stream, their variance in long double
    ae.set_training(false);
    diffuse::Generator gen(6);
    const auto q = diffuse::posterior_from_moments(ae.encode(x));
    const auto z = diffuse::posterior_sample(q, gen.randn<float, 4>(q.mean.dimensions()));
    const auto [mean, variance] = ref::mean_variance(z.data(), z.size());
    const ref::LD population = variance * (z.size() - 1) / z.size();
    CHECK(static_cast<double>(population) * factor * factor == Approx(1.0).epsilon(1e-6));
    (void)mean;

    // weights that are not finite give no scale factor
    ae.for_each_parameter("", [](auto p) {
        if (p.name == "encoder.conv_in.bias") p.value[0] = std::numeric_limits<float>::quiet_NaN();
    });
    REQUIRE_THROWS_AS(diffuse::latent_scale_factor(ae, x), diffuse::numerical_error);
}

TEST_CASE("Latents encoded and decoded in batches are those of the whole batch and do not depend on the threads",
          "[models][autoencoder]") {
    diffuse::Autoencoder<float> ae(trainable_autoencoder(), 4);
    const auto x = bump_images(12, 8);
    ae.set_training(false);
    diffuse::Generator gen(9);
    const auto q = diffuse::posterior_from_moments(ae.encode(x));
    const auto z = diffuse::posterior_sample(q, gen.randn<float, 4>(q.mean.dimensions()));  // [12, z, h, w]
    REQUIRE(diffuse::testing_support::same_bits(diffuse::encode_latents(ae, x, 9, 12), z));
    const auto whole = ae.decode(z);
    const int threads = diffuse::num_threads();
    diffuse::set_num_threads(1);
    const auto one = diffuse::encode_latents(ae, x, 9, 5);
    const auto decoded_one = diffuse::decode_latents(ae, z, 5);
    diffuse::set_num_threads(2);
    const auto two = diffuse::encode_latents(ae, x, 9, 5);
    const auto decoded_two = diffuse::decode_latents(ae, z, 5);
    diffuse::set_num_threads(threads);
    REQUIRE(diffuse::testing_support::same_bits(one, two));
    REQUIRE(diffuse::testing_support::same_bits(decoded_one, decoded_two));
    REQUIRE(decoded_one.dimensions() == whole.dimensions());
    double worst = 0.0;
    for (diffuse::Index i = 0; i < whole.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(decoded_one.data()[i]) - whole.data()[i]));
    CHECK(worst < 1e-5);
    REQUIRE_THROWS_WITH(diffuse::decode_latents(ae, x, 5), Catch::Contains("z.shape"));
    REQUIRE_THROWS_WITH(diffuse::encode_latents(ae, x, 9, 0), Catch::Contains("batch = 0"));
}

TEST_CASE("The autoencoder trainer refuses a negative KL weight", "[optim][autoencoder][errors]") {
    diffuse::Autoencoder<float> ae(trainable_autoencoder(), 1);
    diffuse::optim::AutoencoderTrainerOptions options;
    options.kl_weight = -1.0;
    REQUIRE_THROWS_WITH(diffuse::optim::AutoencoderTrainer<float>(ae, options), Catch::Contains("kl_weight = -1"));
}
