#pragma once
// What every sampler takes and gives back: the seed, what the model predicts, the conditioning (class
// labels, a context, a concatenated image: core/conditioning.hpp), the x0 thresholding, a progress
// callback and whether to keep the intermediate states; and the result,
// the samples with, when asked, every intermediate state and x0 prediction.
//
// Randomness: the starting noise is stream 0 of the seed and the noise of step k is stream k + 1
// (derive_seed), each drawn by a counter-based Philox generator, so a seed gives the same samples,
// bit for bit, whatever the thread count.

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/reverse.hpp"
#include "diffuse/process/thresholding.hpp"
#include "diffuse/schedule/noise_schedule.hpp"
#include "diffuse/schedule/respacing.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace diffuse {

/// The dimensions of a batch of images, [N, C, H, W].
using Shape4 = std::array<Index, 4>;

/// Called after every step: the step number k = 0, 1, ... (in sampling order), the timestep the model
/// was just told, and the model's current x0 prediction [N, C, H, W], for previews.
template <class T>
using ProgressFn = std::function<void(int step, int t, const Tensor4<T>& x0_pred)>;

template <class T>
struct SamplerOptions {
    std::uint64_t seed = 0;
    Prediction prediction = Prediction::epsilon;  // what the model outputs
    ModelVariance variance = ModelVariance::fixed_small;  // learned_range: the model outputs [N, 2C, H, W], [mean
                                                  // part, v]; DDPM draws with that variance, every other sampler
                                                  // uses the mean part. DDPM's fixed_small or fixed_large otherwise
    Conditioning<T> conditioning;                 // handed to the model at every step: labels [N] (empty for an
                                                  // unconditional model), a context, a concatenated image
    Thresholding thresholding = Thresholding::none;
    double dynamic_percentile = 0.995;            // Imagen's p, for Thresholding::dynamic
    double clip_range = 1.0;                      // Thresholding::clip's bound, x0 in [-r, r]: 1 for images in
                                                  // [-1, 1], the latents' range for a latent model
    ProgressFn<T> progress;                       // empty: no reports
    bool keep_intermediates = false;
};

/// Which timesteps of the training schedule a few-step sampler (DDIM, DPM-Solver++) visits.
struct StepSelection {
    Spacing spacing = Spacing::leading;  // as diffusers names it; leading with T % n == 0 is "ddimN"
    int steps_offset = 0;                // leading spacing only, as in diffusers
    std::vector<int> timesteps;          // explicit timesteps (e.g. space_timesteps(T, "ddim50")); overrides spacing
};

template <class T>
struct Samples {
    Tensor4<T> x;                            // [N, C, H, W], the samples
    std::vector<Tensor4<T>> intermediates;   // when kept: the starting x, then x after every step, each [N, C, H, W]
    std::vector<Tensor4<T>> predicted_x0;    // when kept: the x0 prediction of every step, each [N, C, H, W]
};

/// What one step of a sampler gives.
template <class T>
struct StepResult {
    Tensor4<T> x;        // [N, C, H, W], the state after the step
    Tensor4<T> pred_x0;  // [N, C, H, W], the x0 prediction the step used
};

namespace detail {

/// Standard normal noise of the given shape from stream `stream` of `seed`.
template <class T>
Tensor4<T> stream_noise(std::uint64_t seed, std::uint64_t stream, const Shape4& shape) {
    Generator generator(derive_seed(seed, stream));
    return generator.randn<T, 4>(shape);
}

template <class T>
void check_sampler_options(const char* where, const SamplerOptions<T>& options, const Tensor4<T>& x) {
    check_conditioning(where, options.conditioning, x.dimension(0), x.dimension(2), x.dimension(3));
    if (options.thresholding == Thresholding::dynamic) check_percentile(where, options.dynamic_percentile);
    if (options.thresholding == Thresholding::clip) check_clip_range(where, options.clip_range);
}

inline void check_shape4(const char* where, const Shape4& shape) {
    for (std::size_t d = 0; d < 4; ++d) {
        if (shape[d] < 1) throw_invalid(where, "shape", shape_string(shape), "[N, C, H, W], every dimension >= 1");
    }
}

/// The schedule a few-step sampler runs on: the training schedule respaced to num_steps timesteps
/// (respace() keeps alphabar at each of them, and timestep_map() tells the model where it is).
template <class T>
NoiseSchedule<T> sampling_schedule(const char* where, const NoiseSchedule<T>& schedule, int num_steps,
                                   const StepSelection& selection) {
    const int n = schedule.num_timesteps();
    if (num_steps < 1 || num_steps > n) {
        throw_invalid(where, "num_steps", num_steps, "from 1 to the schedule's " + std::to_string(n) + " timesteps");
    }
    if (!selection.timesteps.empty()) {
        if (static_cast<int>(selection.timesteps.size()) != num_steps) {
            throw_invalid(where, "timesteps.size()", selection.timesteps.size(),
                          "num_steps, " + std::to_string(num_steps));
        }
        return respace(schedule, selection.timesteps);
    }
    return respace(schedule, spaced_timesteps(n, num_steps, selection.spacing, selection.steps_offset));
}

}  // namespace detail
}  // namespace diffuse
