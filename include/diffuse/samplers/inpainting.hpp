#pragma once
// Inpainting with an unconditional model, as RePaint does (Lugmayr et al. 2022, Algorithm 1): given a
// known image and a mask (1 where the pixel is known), every DDPM step from x_t to x_{t-1} is followed by
//   x_{t-1} <- m * q_sample(known, t-1) + (1 - m) * x_{t-1},
// the known region replaced by the known image noised to the new step (the image itself after the
// last step, so the known region ends exactly equal to it). Resampling: RePaint's jump schedule goes
// down jump_length steps, then back up jump_length steps by forward noising,
//   x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z,
// resample_count times in all per jump, so the generated region can harmonise with the known one
// (jump_length = 10, resample_count = 10 in the paper; resample_count = 1 means no jumps).
// Outpainting is the same on a grown canvas whose new border is unknown.

#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/forward.hpp"
#include "diffuse/samplers/ddpm.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

template <class T>
struct InpaintOptions : DDPMOptions<T> {
    int jump_length = 10;    // steps per jump back (RePaint's jump_length)
    int resample_count = 1;  // times each jump's steps are run (RePaint's jump_n_sample); 1: no jumps
};

/// RePaint's time schedule (get_schedule_jump) over num_steps steps: the levels visited in order,
/// from num_steps - 1 (pure noise) down to -1 (the data); a decrease is a denoising step, an increase
/// a forward noising step.
inline std::vector<int> repaint_levels(int num_steps, int jump_length, int resample_count) {
    constexpr const char* where = "diffuse::repaint_levels";
    if (num_steps < 1) detail::throw_invalid(where, "num_steps", num_steps, ">= 1");
    if (jump_length < 1) detail::throw_invalid(where, "jump_length", jump_length, ">= 1");
    if (resample_count < 1) detail::throw_invalid(where, "resample_count", resample_count, ">= 1 (1: no resampling)");
    std::map<int, int> jumps;  // level -> jumps back still to make from it
    for (int j = 0; j < num_steps - jump_length; j += jump_length) jumps[j] = resample_count - 1;
    std::vector<int> levels;
    int t = num_steps;
    while (t >= 1) {
        levels.push_back(--t);
        const auto jump = jumps.find(t);
        if (jump != jumps.end() && jump->second > 0) {
            --jump->second;
            for (int k = 0; k < jump_length; ++k) levels.push_back(++t);
        }
    }
    levels.push_back(-1);
    return levels;
}

namespace detail {

template <class T>
void check_inpainting_inputs(const char* where, const Tensor4<T>& known, const Tensor4<T>& mask) {
    check_batch(where, "known", known);
    const bool per_channel = mask.dimension(1) == known.dimension(1);
    const bool shared = mask.dimension(1) == 1;
    if (mask.dimension(0) != known.dimension(0) || !(per_channel || shared) || mask.dimension(2) != known.dimension(2) ||
        mask.dimension(3) != known.dimension(3)) {
        throw_invalid(where, "mask.shape", shape_string(mask.dimensions()),
                      "[N, 1, H, W] or [N, C, H, W] with the known image's " + shape_string(known.dimensions()));
    }
    for (Index i = 0; i < mask.size(); ++i) {
        if (!(mask.data()[i] >= T(0) && mask.data()[i] <= T(1))) {
            throw_invalid(where, "mask[" + std::to_string(i) + "]", mask.data()[i], "a value in [0, 1] (1: known)");
        }
    }
}

// x <- m * known_t + (1 - m) * x, the mask broadcast over channels when it has one.
template <class T>
void paste_known(Tensor4<T>& x, const Tensor4<T>& known_t, const Tensor4<T>& mask) {
    const Index n = x.dimension(0), c = x.dimension(1), plane = x.dimension(2) * x.dimension(3);
    const Index mask_c = mask.dimension(1);
    for (Index b = 0; b < n; ++b) {
        for (Index ch = 0; ch < c; ++ch) {
            const T* m = mask.data() + (b * mask_c + (mask_c == 1 ? 0 : ch)) * plane;
            T* xp = x.data() + (b * c + ch) * plane;
            const T* kp = known_t.data() + (b * c + ch) * plane;
            for (Index k = 0; k < plane; ++k) xp[k] = m[k] * kp[k] + (T(1) - m[k]) * xp[k];
        }
    }
}

}  // namespace detail

/// RePaint inpainting over every step of `schedule` (pass a respaced schedule for fewer steps).
/// known: [N, C, H, W], the image in [-1, 1] (its unknown region is ignored); mask: [N, 1, H, W] or
/// [N, C, H, W], 1 where known, 0 where to generate. The noise of the k-th move of the jump schedule is
/// stream k + 1 of options.seed; x_T is stream 0. The progress callback sees every denoising step.
template <class T>
Samples<T> inpaint(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& known,
                   const Tensor4<T>& mask, const InpaintOptions<T>& options = {}) {
    constexpr const char* where = "diffuse::inpaint";
    detail::check_inpainting_inputs(where, known, mask);
    detail::check_sampler_options(where, options, known);
    const int n_steps = schedule.num_timesteps();
    const std::vector<int> levels = repaint_levels(n_steps, options.jump_length, options.resample_count);
    const Shape4 shape = known.dimensions();
    const Index batch = known.dimension(0);
    const auto moves = static_cast<int>(levels.size()) - 1;
    return detail::sampling_loop(where, "step at", detail::stream_noise<T>(options.seed, 0, shape), moves, options,
                                 [&](int k, const Tensor4<T>& x) {
        const int from = levels[static_cast<std::size_t>(k)], to = levels[static_cast<std::size_t>(k) + 1];
        Generator generator = detail::move_generator(options.seed, k);
        const Tensor4<T> z = generator.randn<T, 4>(shape);  // [N, C, H, W]
        if (to > from) {
            // forward one step: x_to = sqrt(1 - beta_to) x_from + sqrt(beta_to) z
            const double beta = schedule.betas_double()[static_cast<std::size_t>(to)];
            const T a = static_cast<T>(std::sqrt(1.0 - beta)), b = static_cast<T>(std::sqrt(beta));
            return detail::Move<T>{elementwise([a, b](T xs, T zs) { return a * xs + b * zs; }, x, z), {},
                                   schedule.timestep_map()[static_cast<std::size_t>(to)]};
        }
        // denoise from level `from`, then paste the known image noised to level `to`
        StepResult<T> step = detail::ddpm_update(schedule, model, x, from, z, options);
        if (to >= 0) {
            Tensor4<T> noise;  // [N, C, H, W]
            const Tensor4<T> known_t = q_sample(schedule, known, Timesteps(static_cast<std::size_t>(batch), to), generator, noise);
            detail::paste_known(step.x, known_t, mask);
        } else {
            detail::paste_known(step.x, known, mask);
        }
        return detail::Move<T>{std::move(step.x), std::move(step.pred_x0), schedule.timestep_map()[static_cast<std::size_t>(from)]};
    });
}

/// How far the canvas grows on each side, in pixels.
struct Padding {
    Index top = 0, bottom = 0, left = 0, right = 0;
};

/// A known image and its mask.
template <class T>
struct Canvas {
    Tensor4<T> known;  // [N, C, H', W'], the image placed in the grown canvas, zeros around it
    Tensor4<T> mask;   // [N, 1, H', W'], 1 over the image, 0 over the new border
};

/// The canvas for outpainting image [N, C, H, W]: H' = top + H + bottom, W' = left + W + right.
template <class T>
Canvas<T> outpaint_canvas(const Tensor4<T>& image, const Padding& padding) {
    constexpr const char* where = "diffuse::outpaint_canvas";
    check_batch(where, "image", image);
    for (const auto& [name, value] : {std::pair{"padding.top", padding.top}, std::pair{"padding.bottom", padding.bottom},
                                      std::pair{"padding.left", padding.left}, std::pair{"padding.right", padding.right}}) {
        if (value < 0) detail::throw_invalid(where, name, value, ">= 0");
    }
    const Index n = image.dimension(0), c = image.dimension(1), h = image.dimension(2), w = image.dimension(3);
    const Index hh = padding.top + h + padding.bottom, ww = padding.left + w + padding.right;
    Canvas<T> canvas{Tensor4<T>(n, c, hh, ww), Tensor4<T>(n, 1, hh, ww)};
    canvas.known.setZero();
    canvas.mask.setZero();
    for (Index b = 0; b < n; ++b) {
        for (Index y = 0; y < h; ++y) {
            for (Index x = 0; x < w; ++x) {
                canvas.mask(b, 0, padding.top + y, padding.left + x) = T(1);
                for (Index ch = 0; ch < c; ++ch) canvas.known(b, ch, padding.top + y, padding.left + x) = image(b, ch, y, x);
            }
        }
    }
    return canvas;
}

/// Outpainting: inpainting of the grown canvas, the image kept and the border generated.
/// image: [N, C, H, W]; returns samples of [N, C, top + H + bottom, left + W + right].
template <class T>
Samples<T> outpaint(const NoiseSchedule<T>& schedule, const ModelArg<T>& model, const Tensor4<T>& image,
                    const Padding& padding, const InpaintOptions<T>& options = {}) {
    const Canvas<T> canvas = outpaint_canvas(image, padding);
    return inpaint(schedule, model, canvas.known, canvas.mask, options);
}

}  // namespace diffuse
