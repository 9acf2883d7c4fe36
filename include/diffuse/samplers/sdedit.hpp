#pragma once
// Image-to-image, SDEdit (Meng et al. 2022): a real image x0 noised in closed form to the timestep of
// strength s in (0, 1],
//   t_s = ceil(s T) - 1,      x_{t_s} = sqrt(alphabar_{t_s}) x0 + sqrt(1 - alphabar_{t_s}) eps,
// eps from stream 0 of the seed (where pure-noise sampling draws x_T), then denoised by a sampler, by
// name, toward the conditioning of the options (another class, another prompt): the article's domain
// adaptation and style transfer. The sampler visits num_steps timesteps of trailing spacing within
// [0, t_s], t_s first (all t_s + 1 of them when num_steps is larger), so s = 1 is plain sampling
// from that noise and as s falls the output keeps more of the input: at s = 1/T one step at t = 0.

#include "diffuse/core/error.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/process/forward.hpp"
#include "diffuse/samplers/named.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"
#include "diffuse/schedule/respacing.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace diffuse {

/// The timestep SDEdit noises to at strength s in (0, 1]: ceil(s T) - 1.
inline int sdedit_start(int num_timesteps, double strength) {
    if (!(strength > 0.0 && strength <= 1.0)) {
        detail::throw_invalid("diffuse::sdedit", "strength", strength, "a value in (0, 1] (1: plain sampling from the noised image)");
    }
    return std::max(0, static_cast<int>(std::ceil(strength * num_timesteps - 1e-9)) - 1);
}

/// The timesteps, ascending, that sdedit's sampler visits: num_steps of trailing spacing within
/// [0, sdedit_start] (all of them when num_steps is larger).
inline std::vector<int> sdedit_timesteps(int num_timesteps, int num_steps, double strength) {
    const int start = sdedit_start(num_timesteps, strength);
    if (num_steps < 1) detail::throw_invalid("diffuse::sdedit", "num_steps", num_steps, "at least 1");
    return spaced_timesteps(start + 1, std::min(num_steps, start + 1), Spacing::trailing);
}

/// x0 [N, C, H, W] (images as the model was trained on, e.g. in [-1, 1]) edited at strength s by the
/// named sampler toward options.conditioning; returns the samples with, when kept, the intermediates
/// from x_{t_s} on.
template <class T>
Samples<T> sdedit(const std::string& sampler, const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                  const Tensor4<T>& x0, double strength, const SamplerOptions<T>& options = {}) {
    check_batch("diffuse::sdedit", "x0", x0);
    StepSelection selection;
    selection.timesteps = sdedit_timesteps(schedule.num_timesteps(), num_steps, strength);
    const int start = selection.timesteps.back();
    const Tensor4<T> eps = detail::stream_noise<T>(options.seed, 0, x0.dimensions());  // [N, C, H, W]
    const Tensor4<T> x_start = q_sample(schedule, x0, Timesteps(static_cast<std::size_t>(x0.dimension(0)), start), eps);
    return sample_from(sampler, schedule, model, static_cast<int>(selection.timesteps.size()), x_start, options, selection);
}

}  // namespace diffuse
