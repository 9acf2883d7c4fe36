#pragma once
// The sinusoidal timestep embedding of DDPM (Ho et al. 2020, after the Transformer's positional
// encoding): with half = dim / 2 and frequencies
//     omega_i = exp(-ln(max_period) * i / (half - freq_shift)),  i = 0 .. half-1,
// emb(t) = [sin(t omega_0), ..., sin(t omega_{half-1}), cos(t omega_0), ..., cos(t omega_{half-1})],
// zero-padded by one column when dim is odd. DDPM's defaults: max_period 10000, freq_shift 1, sin first.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::nn {

struct TimestepEmbeddingOptions {
    double max_period = 10000.0;
    /// 1 as in DDPM (the last frequency is exactly 1 / max_period); 0 as in the Transformer and
    /// Improved DDPM's code.
    double freq_shift = 1.0;
    /// cos half first, then sin (diffusers' flip_sin_to_cos, Stable Diffusion's choice). Default: sin first.
    bool cos_first = false;
};

/// Embeds one timestep per sample; t may be fractional (continuous-time samplers). t: [N] -> [N, dim].
template <class T = float, class Time>
Tensor2<T> timestep_embedding(const std::vector<Time>& t, Index dim,
                              const TimestepEmbeddingOptions& options = {}) {
    constexpr const char* where = "diffuse::timestep_embedding";
    const Index half = dim / 2;
    if (half < 1) detail::throw_invalid(where, "dim", dim, "dim >= 2");
    if (!(half - options.freq_shift > 0.0)) {
        detail::throw_invalid(where, "dim", dim,
                              "half of dim greater than freq_shift = " + std::to_string(options.freq_shift));
    }
    if (!(options.max_period > 0.0)) {
        detail::throw_invalid(where, "max_period", options.max_period, "max_period > 0");
    }
    const Index batch = static_cast<Index>(t.size());
    Tensor2<T> emb(batch, dim);
    emb.setZero();
    const Index sin_at = options.cos_first ? half : 0, cos_at = options.cos_first ? 0 : half;
    for (Index i = 0; i < half; ++i) {
        const double omega =
            std::exp(-std::log(options.max_period) * static_cast<double>(i) / (half - options.freq_shift));
        for (Index n = 0; n < batch; ++n) {
            const double angle = static_cast<double>(t[static_cast<std::size_t>(n)]) * omega;
            emb(n, sin_at + i) = static_cast<T>(std::sin(angle));
            emb(n, cos_at + i) = static_cast<T>(std::cos(angle));
        }
    }
    return emb;
}

}  // namespace diffuse::nn
