#pragma once
// What a sampler does to its x0 prediction before using it: nothing, clipping to the data range
// [-r, r], r = 1 for images in [-1, 1] (DDPM's and Improved DDPM's clip_denoised), r the latents' range
// for a latent model, or Imagen's dynamic thresholding (Saharia et al.
// 2022, section 2.3): per sample, s = max(percentile p of |x0|, 1), then x0 <- clip(x0, -s, s) / s.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace diffuse {

enum class Thresholding { none, clip, dynamic };

inline const char* to_string(Thresholding t) {
    switch (t) {
        case Thresholding::none: return "none";
        case Thresholding::clip: return "clip";
        case Thresholding::dynamic: return "dynamic";
    }
    return "?";
}

namespace detail {

inline void check_clip_range(const char* where, double range) {
    if (!std::isfinite(range) || !(range > 0.0)) throw_invalid(where, "clip_range", range, "a finite number > 0");
}

inline void check_percentile(const char* where, double percentile) {
    if (!(percentile > 0.0 && percentile <= 1.0)) {
        throw_invalid(where, "percentile", percentile, "a fraction in (0, 1] (Imagen uses 0.995)");
    }
}

}  // namespace detail

/// x0 clamped to [-range, range] elementwise. x0: [N, ...] -> [N, ...].
template <class T, int Rank>
Tensor<T, Rank> clip_x0(const Tensor<T, Rank>& x0, double range = 1.0) {
    Tensor<T, Rank> out(x0.dimensions());
    const T r = static_cast<T>(range);
    for (Index i = 0; i < x0.size(); ++i) out.data()[i] = std::clamp(x0.data()[i], -r, r);
    return out;
}

/// The percentile p of |x| over one sample's values, interpolated linearly between order statistics
/// as torch.quantile and numpy.quantile do: position p (n - 1) in the sorted values.
template <class T>
double abs_quantile(const T* x, Index n, double p) {
    std::vector<double> a(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) a[static_cast<std::size_t>(i)] = std::fabs(static_cast<double>(x[i]));
    const double position = p * static_cast<double>(n - 1);
    const auto lo = static_cast<std::size_t>(std::floor(position));
    const std::size_t hi = std::min(lo + 1, a.size() - 1);
    std::nth_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(lo), a.end());
    const double below = a[lo];
    // the next order statistic is the smallest value above position lo
    const double above = hi == lo ? below : *std::min_element(a.begin() + static_cast<std::ptrdiff_t>(hi), a.end());
    return below + (position - static_cast<double>(lo)) * (above - below);
}

/// Imagen's dynamic thresholding, per sample: s = max(quantile(|x0|, percentile), 1),
/// x0 <- clamp(x0, -s, s) / s. Samples whose values lie in [-1, 1] are unchanged. x0: [N, ...].
template <class T, int Rank>
Tensor<T, Rank> dynamic_threshold(const Tensor<T, Rank>& x0, double percentile = 0.995) {
    constexpr const char* where = "diffuse::dynamic_threshold";
    detail::check_percentile(where, percentile);
    check_batch(where, "x0", x0);
    Tensor<T, Rank> out(x0.dimensions());
    const Index batch = x0.dimension(0), per_sample = x0.size() / batch;
    for (Index n = 0; n < batch; ++n) {
        const T* in = x0.data() + n * per_sample;
        T* o = out.data() + n * per_sample;
        const double s = std::max(abs_quantile(in, per_sample, percentile), 1.0);
        const T st = static_cast<T>(s);
        for (Index i = 0; i < per_sample; ++i) o[i] = std::clamp(in[i], -st, st) / st;
    }
    return out;
}

/// x0 after the chosen thresholding. x0: [N, ...] -> [N, ...].
template <class T, int Rank>
Tensor<T, Rank> threshold_x0(const Tensor<T, Rank>& x0, Thresholding kind, double percentile = 0.995,
                             double clip_range = 1.0) {
    switch (kind) {
        case Thresholding::clip: return clip_x0(x0, clip_range);
        case Thresholding::dynamic: return dynamic_threshold(x0, percentile);
        case Thresholding::none: break;
    }
    return x0;
}

}  // namespace diffuse
