#pragma once
// Schedules by name, for command lines and configuration files.

#include "diffuse/core/error.hpp"
#include "diffuse/schedule/betas.hpp"

#include <string>
#include <vector>

namespace diffuse {

/// The names make_betas() knows, in the order the documentation lists them.
inline const std::vector<std::string>& schedule_names() {
    static const std::vector<std::string> names = {"linear", "cosine", "scaled_linear", "sigmoid"};
    return names;
}

/// The betas of a named schedule with its default options: "linear" (DDPM), "cosine" (Improved DDPM),
/// "scaled_linear" (latent diffusion) or "sigmoid" (GeoDiff).
inline Betas make_betas(const std::string& name, int num_timesteps) {
    if (name == "linear") return linear_betas(num_timesteps);
    if (name == "cosine") return cosine_betas(num_timesteps);
    if (name == "scaled_linear") return scaled_linear_betas(num_timesteps);
    if (name == "sigmoid") return sigmoid_betas(num_timesteps);
    std::string known;
    for (const auto& n : schedule_names()) known += (known.empty() ? "" : ", ") + n;
    detail::throw_invalid("diffuse::make_betas", "name", "\"" + name + "\"", "one of " + known);
}

}  // namespace diffuse
