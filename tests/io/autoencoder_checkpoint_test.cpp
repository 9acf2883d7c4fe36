// An autoencoder's weights file: rebuilt from the file alone under LDM's names with the same outputs,
// the latent scale factor stored with it, and the file of one model refused where the other is expected.

#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/autoencoder_trainer.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include "../support/bits.hpp"
#include "../support/rejection.hpp"
#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace {

diffuse::AutoencoderConfig stored_autoencoder() {
    diffuse::AutoencoderConfig c;
    c.ch = 4;
    c.ch_mult = {1, 2, 2};
    c.num_res_blocks = 1;
    c.z_channels = 3;
    c.groups = 2;
    c.image_size = 12;
    return c;
}

/// A U-Net as small as it gets: one level, one block, 4 channels, 4x4 images.
diffuse::UNetConfig tiny_unet() {
    diffuse::UNetConfig u;
    u.model_channels = 4;
    u.channel_mult = {1};
    u.num_res_blocks = 1;
    u.attention_resolutions = {};
    u.groups = 2;
    u.image_size = 4;
    return u;
}

}  // namespace

TEST_CASE("An autoencoder saved with its scale factor is rebuilt from the file alone with the same outputs",
          "[io][checkpoint][autoencoder]") {
    diffuse::testing_support::TempDir dir("autoencoder");
    const std::string path = dir.file("autoencoder.safetensors");
    diffuse::Autoencoder<float> saved(stored_autoencoder(), 1);
    diffuse::save_weights(path, saved, diffuse::latent_scale_factor_metadata(0.8125));

    const diffuse::AutoencoderConfig c = diffuse::autoencoder_config_from_checkpoint(path);
    CHECK(c.ch_mult == stored_autoencoder().ch_mult);
    CHECK(c.z_channels == 3);
    CHECK(c.image_size == 12);
    diffuse::Autoencoder<float> loaded(c, 2);
    diffuse::load_weights(path, loaded);
    CHECK(diffuse::latent_scale_factor_from_checkpoint(path) == 0.8125);
    const auto header = diffuse::read_safetensors_header(path);
    bool named = false;
    for (const auto& e : header.entries) named = named || e.name == "decoder.up.2.upsample.conv.weight";
    CHECK(named);

    const auto x = diffuse::Generator(3).randn<float, 4>({2, 1, 12, 12});
    saved.set_training(false);
    loaded.set_training(false);
    const auto m = saved.encode(x);
    REQUIRE(diffuse::testing_support::same_bits(m, loaded.encode(x)));
    const auto z = diffuse::channel_slice(m, 0, 3);
    REQUIRE(diffuse::testing_support::same_bits(saved.decode(z), loaded.decode(z)));
}

TEST_CASE("A U-Net's file is refused where an autoencoder's is expected and the reverse and so is a bad scale factor",
          "[io][checkpoint][autoencoder][errors]") {
    diffuse::testing_support::TempDir dir("autoencoder_refused");
    const std::string ae_path = dir.file("ae.safetensors"), unet_path = dir.file("unet.safetensors");
    diffuse::Autoencoder<float> ae(stored_autoencoder(), 1);
    diffuse::save_weights(ae_path, ae);
    diffuse::UNet<float> unet(tiny_unet(), 1);
    diffuse::save_weights(unet_path, unet);
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::autoencoder_config_from_checkpoint(unet_path); }),
               Catch::Contains("diffuse.autoencoder_config"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::config_from_checkpoint(ae_path); }), Catch::Contains("diffuse.unet_config"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_scale_factor_from_checkpoint(ae_path); }),
               Catch::Contains("diffuse.latent_scale_factor"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::load_weights(unet_path, ae); }), Catch::Contains("not match the model"));
    REQUIRE_THROWS_WITH(diffuse::latent_scale_factor_metadata(-1.0), Catch::Contains("factor = -1"));
    REQUIRE_THROWS_WITH(diffuse::latent_scale_factor_metadata(std::nan("")), Catch::Contains("a finite number > 0"));
    diffuse::save_weights(ae_path, ae, {{"diffuse.latent_scale_factor", "0"}});
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_scale_factor_from_checkpoint(ae_path); }),
               Catch::Contains("expected a finite number > 0"));
}

namespace {

/// Every parameter's values, in for_each_parameter order.
std::vector<float> autoencoder_weights(diffuse::Autoencoder<float>& model) {
    std::vector<float> out;
    model.for_each_parameter("", [&out](diffuse::nn::ParameterView<float> p) { out.insert(out.end(), p.value, p.value + p.size); });
    return out;
}

diffuse::optim::AutoencoderTrainerOptions resumable_options() {
    diffuse::optim::AutoencoderTrainerOptions o;
    o.adam.lr = 2e-3;
    o.warmup_steps = 2;
    o.ema_decay = 0.9;
    o.reconstruction = diffuse::optim::Reconstruction::mse;
    o.kl_weight = 1e-3;
    o.seed = 17;
    return o;
}

}  // namespace

TEST_CASE("An autoencoder training run resumed from its checkpoint ends bit for bit where the uninterrupted run ends",
          "[io][checkpoint][autoencoder][resume]") {
    diffuse::testing_support::TempDir dir("autoencoder_resume");
    const std::string path = dir.file("ae_state.safetensors");
    std::vector<diffuse::Tensor4<float>> batches;
    for (int i = 0; i < 6; ++i) batches.push_back(diffuse::Generator(100 + static_cast<std::uint64_t>(i)).randn<float, 4>({3, 1, 12, 12}));

    diffuse::Autoencoder<float> straight(stored_autoencoder(), 5);
    diffuse::optim::AutoencoderTrainer<float> a(straight, resumable_options());
    for (const auto& x : batches) (void)a.step(x);

    diffuse::Autoencoder<float> first(stored_autoencoder(), 5);
    diffuse::optim::AutoencoderTrainer<float> b(first, resumable_options());
    for (int i = 0; i < 3; ++i) (void)b.step(batches[static_cast<std::size_t>(i)]);
    diffuse::save_checkpoint(path, b, {{"example.note", "kept"}});
    CHECK(diffuse::read_safetensors_header(path).metadata.at("example.note") == "kept");

    // the model, its configuration and the options from the file alone; other initial weights
    diffuse::Autoencoder<float> resumed(diffuse::autoencoder_config_from_checkpoint(path), 99);
    const diffuse::optim::AutoencoderTrainerOptions stored = diffuse::autoencoder_trainer_options_from_checkpoint(path);
    CHECK(stored.kl_weight == 1e-3);
    CHECK(stored.reconstruction == diffuse::optim::Reconstruction::mse);
    CHECK(stored.seed == 17);
    diffuse::optim::AutoencoderTrainer<float> c(resumed, stored);
    diffuse::load_checkpoint(path, c);
    CHECK(c.step_count() == 3);
    for (int i = 3; i < 6; ++i) (void)c.step(batches[static_cast<std::size_t>(i)]);
    REQUIRE(autoencoder_weights(resumed) == autoencoder_weights(straight));
    REQUIRE(c.ema().shadow().size() == a.ema().shadow().size());
    for (const auto& [name, average] : a.ema().shadow()) {
        const auto& other = c.ema().shadow().at(name);
        REQUIRE(std::vector<float>(other.data(), other.data() + other.size()) ==
                std::vector<float>(average.data(), average.data() + average.size()));
    }
    REQUIRE(c.generator().offset() == a.generator().offset());
}

TEST_CASE("A diffusion trainer refuses an autoencoder's training state and the reverse", "[io][checkpoint][autoencoder][errors]") {
    diffuse::testing_support::TempDir dir("autoencoder_state_refused");
    const std::string ae_path = dir.file("ae_state.safetensors"), unet_path = dir.file("unet_state.safetensors");
    diffuse::Autoencoder<float> ae(stored_autoencoder(), 1);
    diffuse::optim::AutoencoderTrainer<float> ae_trainer(ae, resumable_options());
    (void)ae_trainer.step(diffuse::Generator(1).randn<float, 4>({2, 1, 12, 12}));
    diffuse::save_checkpoint(ae_path, ae_trainer);

    diffuse::UNet<float> unet(tiny_unet(), 1);
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(10));
    diffuse::optim::Trainer<diffuse::UNet<float>> unet_trainer(unet, schedule, {});
    diffuse::save_checkpoint(unet_path, unet_trainer);

    REQUIRE_THROWS_WITH(diffuse::load_checkpoint(ae_path, unet_trainer), Catch::Contains("an autoencoder's training state"));
    REQUIRE_THROWS_WITH(diffuse::load_checkpoint(unet_path, ae_trainer), Catch::Contains("not an autoencoder's training state"));
    diffuse::save_weights(ae_path, ae);
    REQUIRE_THROWS_WITH(diffuse::load_checkpoint(ae_path, ae_trainer), Catch::Contains("weights only"));
    REQUIRE_THROWS_WITH(diffuse::autoencoder_trainer_options_from_checkpoint(unet_path),
                        Catch::Contains("diffuse.autoencoder_trainer_options"));
}
