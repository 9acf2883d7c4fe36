#pragma once
// Samplers by name, for command lines and configuration files (the twin of schedule/named.hpp):
// "ddpm" (ancestral, Ho et al. 2020, on the schedule respaced to the step count), "ddim" (eta = 0,
// Song et al. 2021), "dpm++2m" (DPM-Solver++(2M), Lu et al. 2022), and Karras et al. 2022's "euler",
// "euler_a" (Euler ancestral, eta = 1) and "heun" (num_steps noise levels, 2 num_steps - 2 model
// calls), each from pure noise with the options every sampler takes (seed, labels, prediction,
// thresholding, progress, kept intermediates). Karras et al.'s spacing: selection.timesteps =
// karras_timesteps(schedule, num_steps).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/ddim.hpp"
#include "diffuse/samplers/ddpm.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/dpm_solver.hpp"
#include "diffuse/samplers/euler.hpp"
#include "diffuse/samplers/heun.hpp"
#include "diffuse/samplers/options.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <string>
#include <vector>

namespace diffuse {

/// The names sample() knows, in the order the documentation lists them.
inline const std::vector<std::string>& sampler_names() {
    static const std::vector<std::string> names = {"ddpm", "ddim", "dpm++2m", "euler", "euler_a", "heun"};
    return names;
}

/// The named sampler's samples from x_start [N, C, H, W] at the noisiest selected timestep, with
/// num_steps model calls over the training schedule `schedule`, the timesteps chosen by `selection`
/// (DDPM runs every step of the schedule when num_steps is its length and no timesteps are given,
/// else the respaced schedule).
template <class T>
Samples<T> sample_from(const std::string& name, const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                       const Tensor4<T>& x_start, const SamplerOptions<T>& options = {}, const StepSelection& selection = {}) {
    constexpr const char* where = "diffuse::sample";
    if (name == "ddpm") {
        DDPMOptions<T> ddpm;
        static_cast<SamplerOptions<T>&>(ddpm) = options;
        if (num_steps == schedule.num_timesteps() && selection.timesteps.empty()) {
            return ddpm_sample_from(schedule, model, x_start, ddpm);
        }
        return ddpm_sample_from(detail::sampling_schedule(where, schedule, num_steps, selection), model, x_start, ddpm);
    }
    if (name == "ddim") {
        DDIMOptions<T> ddim;
        static_cast<SamplerOptions<T>&>(ddim) = options;
        ddim.steps = selection;
        return ddim_sample_from(schedule, model, num_steps, x_start, ddim);
    }
    if (name == "dpm++2m") {
        DPMSolverOptions<T> dpm;
        static_cast<SamplerOptions<T>&>(dpm) = options;
        dpm.steps = selection;
        return dpm_solver_sample_from(schedule, model, num_steps, x_start, dpm);
    }
    if (name == "euler" || name == "euler_a" || name == "heun") {
        SigmaSamplerOptions<T> sigma;
        static_cast<SamplerOptions<T>&>(sigma) = options;
        sigma.steps = selection;
        if (name == "euler") return euler_sample_from(schedule, model, num_steps, x_start, sigma);
        if (name == "euler_a") return euler_ancestral_sample_from(schedule, model, num_steps, x_start, sigma);
        return heun_sample_from(schedule, model, num_steps, x_start, sigma);
    }
    std::string known;
    for (const auto& n : sampler_names()) known += (known.empty() ? "" : ", ") + n;
    detail::throw_invalid(where, "name", "\"" + name + "\"", "one of " + known);
}

/// The same from pure noise x_T ~ N(0, I) of the given shape [N, C, H, W], stream 0 of options.seed.
template <class T>
Samples<T> sample(const std::string& name, const NoiseSchedule<T>& schedule, const ModelArg<T>& model, int num_steps,
                  const Shape4& shape, const SamplerOptions<T>& options = {}, const StepSelection& selection = {}) {
    detail::check_shape4("diffuse::sample", shape);
    return sample_from(name, schedule, model, num_steps, detail::stream_noise<T>(options.seed, 0, shape), options, selection);
}

}  // namespace diffuse
