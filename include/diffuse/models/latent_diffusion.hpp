#pragma once
// Latent diffusion (Rombach et al. 2022): the forward and reverse processes run on an autoencoder's
// latents instead of pixels, scaled to unit variance by the scale factor s (Stable Diffusion's 0.18215):
//   z_0 = s * z,  z ~ q(z | x) = N(mean E(x), exp(log_variance E(x)))      encode
//   x   = D(z_0 / s)                                                      decode
// The U-Net is trained on z_0 as it would be on images and every sampler draws z_0 unchanged; the
// decoder turns the sampled latent into an image. A U-Net fits an autoencoder when its input and
// output have the latent's z channels and its image_size is the latent's side.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/models/autoencoder.hpp"
#include "diffuse/models/unet.hpp"
#include "diffuse/process/thresholding.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

/// The U-Net for the latents of `autoencoder` made from a U-Net for its images: the pixel model
/// without its log2(f) outermost levels, so that each remaining level works at the resolution it had
/// in the pixel model, with its channels (ch * mult[l]); the input and output take the z channels.
/// For the 28x28 reference U-Net (levels 28, 14, 7) and f = 2 that is levels 14 and 7, for f = 4 the
/// single level 7, which needs no halving. The attention resolutions the latent has are kept.
inline UNetConfig latent_unet_config(const UNetConfig& pixel, const AutoencoderConfig& autoencoder) {
    constexpr const char* where = "diffuse::latent_unet_config";
    detail::check_autoencoder_config(autoencoder);
    if (pixel.image_size != autoencoder.image_size) {
        detail::throw_invalid(where, "pixel.image_size", pixel.image_size,
                              "the autoencoder's image_size, " + std::to_string(autoencoder.image_size));
    }
    std::size_t drop = 0;
    for (Index f = autoencoder.downsampling_factor(); f > 1; f /= 2) ++drop;
    if (drop >= pixel.channel_mult.size()) {
        detail::throw_invalid(where, "pixel.channel_mult.size()", pixel.channel_mult.size(),
                              "more levels than the autoencoder's log2(f) = " + std::to_string(drop));
    }
    UNetConfig c = pixel;
    c.in_channels = autoencoder.z_channels;
    c.out_channels = pixel.out_channels / pixel.in_channels * autoencoder.z_channels;  // eps, or eps and variances
    c.image_size = autoencoder.latent_size();
    c.channel_mult.assign(pixel.channel_mult.begin() + static_cast<std::ptrdiff_t>(drop), pixel.channel_mult.end());
    c.attention_resolutions.clear();
    for (const Index r : pixel.attention_resolutions) {
        if (r <= c.image_size) c.attention_resolutions.push_back(r);
    }
    return c;
}

/// Refuses a U-Net that does not fit the latents of `autoencoder`, naming what differs.
inline void check_latent_unet(const UNetConfig& unet, const AutoencoderConfig& autoencoder) {
    constexpr const char* where = "diffuse::check_latent_unet";
    if (unet.in_channels != autoencoder.z_channels) {
        detail::throw_invalid(where, "unet.in_channels", unet.in_channels,
                              "the autoencoder's z_channels, " + std::to_string(autoencoder.z_channels));
    }
    if (unet.out_channels % autoencoder.z_channels != 0) {
        detail::throw_invalid(where, "unet.out_channels", unet.out_channels,
                              "a multiple of the autoencoder's z_channels, " + std::to_string(autoencoder.z_channels));
    }
    if (unet.image_size != autoencoder.latent_size()) {
        detail::throw_invalid(where, "unet.image_size", unet.image_size,
                              "the autoencoder's latent side, " + std::to_string(autoencoder.latent_size()) + " (" +
                                  std::to_string(autoencoder.image_size) + " / f = " +
                                  std::to_string(autoencoder.downsampling_factor()) + ")");
    }
}

/// An autoencoder and its scale factor: images to the diffusion model's latents and back.
template <class T = float>
class LatentSpace {
  public:
    /// Keeps a reference to the autoencoder: it must outlive this.
    LatentSpace(Autoencoder<T>& autoencoder, double scale_factor) : autoencoder_(autoencoder), scale_(scale_factor) {
        if (!std::isfinite(scale_factor) || !(scale_factor > 0.0)) {
            detail::throw_invalid("diffuse::LatentSpace", "scale_factor", scale_factor, "a finite number > 0");
        }
    }

    Autoencoder<T>& autoencoder() { return autoencoder_; }
    double scale_factor() const { return scale_; }
    Index latent_size() const { return autoencoder_.config().latent_size(); }
    Index latent_channels() const { return autoencoder_.config().z_channels; }

    /// images [N, C, H, W] in [-1, 1] -> z_0 = s z, z ~ q(z | x) [N, z, H/f, W/f]; the noise from `seed`.
    Tensor4<T> encode(const Tensor4<T>& images, std::uint64_t seed = 0, Index batch = 64) {
        Tensor4<T> z = encode_latents(autoencoder_, images, seed, batch);
        const T s = static_cast<T>(scale_);
        for (Index i = 0; i < z.size(); ++i) z.data()[i] *= s;
        return z;
    }

    /// z_0 [N, z, H/f, W/f] -> D(z_0 / s) [N, C, H, W].
    Tensor4<T> decode(const Tensor4<T>& z0, Index batch = 64) {
        Tensor4<T> z = z0;
        const T s = static_cast<T>(scale_);
        for (Index i = 0; i < z.size(); ++i) z.data()[i] /= s;
        return decode_latents(autoencoder_, z, batch);
    }

  private:
    Autoencoder<T>& autoencoder_;
    double scale_;
};

/// The quantile q of |z_0| over latents z_0 [N, z, h, w]: the range [-r, r] a latent model's samplers
/// clip x0 predictions to, as clip_denoised clips images to [-1, 1]. The default, q = 0.9, is measured:
/// on four 28x28 latent checkpoints (DPM-Solver++(2M), 20 steps, guidance 3) it gave a lower Frechet
/// distance than q = 0.97 and 0.995 on every one, and a tighter range was worse again
/// (docs/latent-diffusion.md#clipping-x0). Linear interpolation between order statistics, as numpy.quantile.
template <class T>
double latent_clip_range(const Tensor4<T>& z0, double q = 0.9) {
    constexpr const char* where = "diffuse::latent_clip_range";
    check_batch(where, "z0", z0);
    if (!(q > 0.0 && q <= 1.0)) detail::throw_invalid(where, "q", q, "a fraction in (0, 1]");
    const double r = abs_quantile(z0.data(), z0.size(), q);
    if (!std::isfinite(r) || !(r > 0.0)) {
        throw numerical_error(std::string(where) + ": the latents' quantile is " + std::to_string(r) +
                              ", which gives no finite positive range");
    }
    return r;
}

}  // namespace diffuse
