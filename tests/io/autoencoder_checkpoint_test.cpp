// An autoencoder's weights file: rebuilt from the file alone under LDM's names with the same outputs,
// the latent scale factor stored with it, and the file of one model refused where the other is expected.

#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/unet.hpp>

#include "../support/bits.hpp"
#include "../support/rejection.hpp"
#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <string>

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
    diffuse::UNetConfig u;
    u.model_channels = 4;
    u.channel_mult = {1};
    u.num_res_blocks = 1;
    u.attention_resolutions = {};
    u.groups = 2;
    u.image_size = 4;
    diffuse::UNet<float> unet(u, 1);
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
