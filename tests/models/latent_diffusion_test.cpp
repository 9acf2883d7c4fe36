// Latent diffusion's pairing of a U-Net with an autoencoder: the latent U-Net made from the pixel one,
// the U-Nets refused for an autoencoder's latents, the scaled encode and decode, and the checkpoint's
// reference to its autoencoder.

#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/latent_diffusion.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/process/thresholding.hpp>
#include <diffuse/samplers/options.hpp>

#include "../support/bits.hpp"
#include "../support/rejection.hpp"
#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace {

diffuse::AutoencoderConfig latent_autoencoder(std::vector<diffuse::Index> ch_mult, diffuse::Index z) {
    diffuse::AutoencoderConfig c;
    c.ch = 4;
    c.ch_mult = std::move(ch_mult);
    c.z_channels = z;
    c.groups = 2;
    c.image_size = 28;
    return c;
}

}  // namespace

TEST_CASE("The latent U-Net is the pixel U-Net without its outer levels and takes the latent channels",
          "[models][latent]") {
    diffuse::UNetConfig pixel = diffuse::UNetConfig::reference();  // levels 28, 14, 7; attention at 7
    pixel.num_classes = 10;
    const diffuse::UNetConfig f2 = diffuse::latent_unet_config(pixel, latent_autoencoder({1, 2}, 3));
    CHECK(f2.image_size == 14);
    CHECK(f2.in_channels == 3);
    CHECK(f2.out_channels == 3);
    CHECK(f2.channel_mult == std::vector<diffuse::Index>{2, 2});
    CHECK(f2.attention_resolutions == std::vector<diffuse::Index>{7});
    CHECK(f2.model_channels == pixel.model_channels);
    CHECK(f2.num_classes == 10);
    const diffuse::UNetConfig f4 = diffuse::latent_unet_config(pixel, latent_autoencoder({1, 2, 2}, 4));
    CHECK(f4.image_size == 7);
    CHECK(f4.channel_mult == std::vector<diffuse::Index>{2});
    CHECK(f4.attention_resolutions == std::vector<diffuse::Index>{7});
    // both build and run on their latents
    for (const auto& config : {f2, f4}) {
        diffuse::UNetConfig small = config;
        small.model_channels = 8;
        diffuse::UNet<float> unet(small, 1);
        const auto z = diffuse::Generator(2).randn<float, 4>({2, config.in_channels, config.image_size, config.image_size});
        CHECK(unet.forward(z, {3, 5}, {1, 10}).dimensions() == z.dimensions());
    }
    // a model with learned variances keeps two outputs per channel
    pixel.out_channels = 2;
    CHECK(diffuse::latent_unet_config(pixel, latent_autoencoder({1, 2}, 3)).out_channels == 6);
    // f = 8 would remove every level of a 3-level U-Net (of 32x32 images, which f = 8 divides)
    diffuse::UNetConfig pixel32 = pixel;
    pixel32.image_size = 32;
    diffuse::AutoencoderConfig f8 = latent_autoencoder({1, 2, 2, 2}, 3);
    f8.image_size = 32;
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_unet_config(pixel32, f8); }),
               Catch::Contains("more levels than the autoencoder's log2(f) = 3"));
}

TEST_CASE("A U-Net that does not fit the autoencoder's latents is refused naming what differs", "[models][latent][errors]") {
    const diffuse::AutoencoderConfig ae = latent_autoencoder({1, 2}, 3);
    diffuse::UNetConfig unet = diffuse::latent_unet_config(diffuse::UNetConfig::reference(), ae);
    diffuse::check_latent_unet(unet, ae);
    diffuse::UNetConfig wrong = unet;
    wrong.in_channels = 1;
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::check_latent_unet(wrong, ae); }),
               Catch::Contains("unet.in_channels = 1") && Catch::Contains("z_channels, 3"));
    wrong = unet;
    wrong.out_channels = 4;
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::check_latent_unet(wrong, ae); }),
               Catch::Contains("unet.out_channels = 4"));
    wrong = unet;
    wrong.image_size = 28;
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::check_latent_unet(wrong, ae); }),
               Catch::Contains("unet.image_size = 28") && Catch::Contains("latent side, 14"));
    // an image size the factor does not divide
    diffuse::AutoencoderConfig odd = ae;
    odd.image_size = 27;
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::Autoencoder<float> bad(odd); }),
               Catch::Contains("image_size = 27") && Catch::Contains("multiple of the downsampling factor 2"));
    diffuse::UNetConfig pixel27 = diffuse::UNetConfig::reference();
    pixel27.image_size = 27;
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_unet_config(pixel27, odd); }),
               Catch::Contains("image_size = 27"));
}

TEST_CASE("The latent space scales the encoder's latents by the scale factor and divides them out before decoding",
          "[models][latent]") {
    diffuse::AutoencoderConfig c = latent_autoencoder({1, 2}, 2);
    c.image_size = 8;
    diffuse::Autoencoder<float> ae(c, 3);
    const auto x = diffuse::Generator(4).randn<float, 4>({3, 1, 8, 8});
    diffuse::LatentSpace<float> space(ae, 0.5);
    const auto z0 = space.encode(x, 7, 2);
    const auto z = diffuse::encode_latents(ae, x, 7, 2);
    REQUIRE(z0.dimensions() == z.dimensions());
    for (diffuse::Index i = 0; i < z.size(); ++i) REQUIRE(z0.data()[i] == 0.5f * z.data()[i]);  // exact: a power of 2
    REQUIRE(diffuse::testing_support::same_bits(space.decode(z0, 2), diffuse::decode_latents(ae, z, 2)));
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::LatentSpace<float> bad(ae, 0.0); }),
               Catch::Contains("scale_factor = 0"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::LatentSpace<float> bad(ae, std::nan("")); }),
               Catch::Contains("a finite number > 0"));
}

TEST_CASE("A latent checkpoint names its autoencoder and refuses another one", "[models][latent][io]") {
    diffuse::testing_support::TempDir dir("latent_reference");
    const std::string ae_path = dir.file("ae.safetensors"), other_path = dir.file("other.safetensors");
    const std::string unet_path = dir.file("unet.safetensors");
    diffuse::AutoencoderConfig c = latent_autoencoder({1, 2}, 2);
    c.image_size = 8;
    diffuse::Autoencoder<float> ae(c, 3);
    diffuse::save_weights(ae_path, ae, diffuse::latent_scale_factor_metadata(0.75));
    diffuse::UNetConfig u = diffuse::UNetConfig::reference();
    u.model_channels = 8;
    u.image_size = 8;
    u.channel_mult = {1, 2};
    u.attention_resolutions = {};
    diffuse::UNet<float> unet(diffuse::latent_unet_config(u, c), 1);
    CHECK_FALSE(diffuse::latent_reference_from_checkpoint(ae_path).has_value());  // not a latent model
    diffuse::save_weights(unet_path, unet, diffuse::latent_metadata({ae_path, c, 0.75, 2.5}));
    const auto reference = diffuse::latent_reference_from_checkpoint(unet_path);
    REQUIRE(reference.has_value());
    CHECK(reference->autoencoder == ae_path);
    CHECK(reference->scale_factor == 0.75);
    CHECK(reference->clip_range == 2.5);
    CHECK(reference->config.z_channels == 2);
    diffuse::check_latent_autoencoder(*reference, ae_path);

    diffuse::save_weights(other_path, ae, diffuse::latent_scale_factor_metadata(0.5));
    REQUIRE_THROWS_WITH(diffuse::check_latent_autoencoder(*reference, other_path), Catch::Contains("scale factor 0.5"));
    diffuse::AutoencoderConfig wider = c;
    wider.z_channels = 3;
    diffuse::Autoencoder<float> other(wider, 3);
    diffuse::save_weights(other_path, other, diffuse::latent_scale_factor_metadata(0.75));
    REQUIRE_THROWS_WITH(diffuse::check_latent_autoencoder(*reference, other_path), Catch::Contains("configuration"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_metadata({ae_path, c, -1.0, 1.0}); }),
               Catch::Contains("scale_factor = -1"));
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_metadata({ae_path, c, 1.0, 0.0}); }),
               Catch::Contains("clip_range = 0"));
    // a latent U-Net's file where a pixel U-Net is expected: refused naming the input convolution
    diffuse::UNet<float> pixel(u, 1);
    REQUIRE_THROWS_WITH(diffuse::load_weights(unet_path, pixel), Catch::Contains("conv_in.weight: shape"));
}

TEST_CASE("The latent clip range is the quantile of the latents' magnitudes and clipping uses it", "[models][latent]") {
    diffuse::Tensor4<float> z(1, 1, 2, 5);  // |z| = 0, 1, ..., 9
    for (diffuse::Index i = 0; i < 10; ++i) z.data()[i] = static_cast<float>(i % 2 == 0 ? i : -i);
    CHECK(diffuse::latent_clip_range(z, 1.0) == 9.0);
    CHECK(diffuse::latent_clip_range(z, 0.5) == Approx(4.5));  // numpy.quantile(range(10), 0.5)
    const auto clipped = diffuse::clip_x0(z, 2.5);
    CHECK(clipped.data()[9] == -2.5f);
    CHECK(clipped.data()[2] == 2.0f);
    CHECK_THAT(diffuse::testing_support::rejection([&] { (void)diffuse::latent_clip_range(z, 0.0); }), Catch::Contains("q = 0"));
    diffuse::SamplerOptions<float> options;
    options.thresholding = diffuse::Thresholding::clip;
    options.clip_range = -1.0;
    CHECK_THAT(diffuse::testing_support::rejection([&] { diffuse::detail::check_sampler_options("test", options, diffuse::Tensor4<float>(1, 1, 2, 2)); }),
               Catch::Contains("clip_range = -1"));
}
