#pragma once
// How close images are to their originals: the mean squared error per pixel and the peak signal-to-
// noise ratio, both on [0, 1] pixel values (the [-1, 1] data halved), PSNR per image with peak 1 and
// averaged over the images (as SR3 and the autoencoder literature report it).

#include <diffuse/core/error.hpp>
#include <diffuse/core/tensor.hpp>

#include <algorithm>
#include <cmath>

namespace examples {

struct Fidelity {
    double mse = 0.0;   // per pixel, on [0, 1]
    double psnr = 0.0;  // dB, the images' mean of 10 log10(1 / MSE_i)
};

/// x_hat and x: [N, C, H, W] in [-1, 1] (x_hat as it is, not clipped).
inline Fidelity fidelity(const diffuse::Tensor4<float>& x_hat, const diffuse::Tensor4<float>& x) {
    if (x_hat.dimensions() != x.dimensions() || x.size() == 0) {
        diffuse::detail::throw_invalid("examples::fidelity", "x_hat.shape", diffuse::shape_string(x_hat.dimensions()),
                                       "the non-empty shape of x, " + diffuse::shape_string(x.dimensions()));
    }
    const diffuse::Index n = x.dimension(0), per = x.size() / n;
    Fidelity f;
    double total = 0.0;
    for (diffuse::Index i = 0; i < n; ++i) {
        double squares = 0.0;
        for (diffuse::Index k = 0; k < per; ++k) {
            const double d = 0.5 * (static_cast<double>(x_hat.data()[i * per + k]) - x.data()[i * per + k]);
            squares += d * d;
        }
        total += squares;
        f.psnr += 10.0 * std::log10(static_cast<double>(per) / std::max(squares, 1e-20));
    }
    f.mse = total / static_cast<double>(x.size());
    f.psnr /= static_cast<double>(n);
    return f;
}

}  // namespace examples
