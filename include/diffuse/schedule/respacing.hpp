#pragma once
// Respacing: a schedule restricted to a subset S of its timesteps, with betas recomputed so that
// alphabar is unchanged at every kept step (Improved DDPM, section 4):
//     beta'_i = 1 - alphabar_{S_i} / alphabar_{S_{i-1}},  alphabar_{S_{-1}} = 1.
// Which subset: Improved DDPM's section counts ("10,15,20", "ddim50"), or the spacings that diffusers
// users know (leading, trailing, linspace).

#include "diffuse/core/error.hpp"
#include "diffuse/schedule/betas.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace diffuse {

namespace detail {

// Python's round() and NumPy's np.round(): to nearest, ties to even (the default FP rounding mode).
inline int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace detail

/// Improved DDPM's section counts: [0, T) is cut into len(counts) near-equal sections and section i
/// keeps counts[i] evenly strided steps (strides rounded half to even, as Python does). Ascending.
inline std::vector<int> space_timesteps(int num_timesteps, const std::vector<int>& section_counts) {
    constexpr const char* where = "diffuse::space_timesteps";
    detail::check_num_timesteps(where, num_timesteps);
    if (section_counts.empty()) {
        detail::throw_invalid(where, "section_counts.size()", 0, "at least one section");
    }
    const int sections = static_cast<int>(section_counts.size());
    const int size_per = num_timesteps / sections, extra = num_timesteps % sections;
    std::vector<int> steps;
    int start = 0;
    for (int i = 0; i < sections; ++i) {
        const int size = size_per + (i < extra ? 1 : 0);
        const int count = section_counts[static_cast<std::size_t>(i)];
        if (count < 0 || count > size) {
            detail::throw_invalid(where, "section_counts[" + std::to_string(i) + "]", count,
                                  "a count from 0 to the section's " + std::to_string(size) + " steps");
        }
        const double stride = count <= 1 ? 1.0 : (size - 1.0) / (count - 1.0);
        double at = 0.0;
        for (int k = 0; k < count; ++k, at += stride) steps.push_back(start + detail::round_half_even(at));
        start += size;
    }
    std::sort(steps.begin(), steps.end());
    steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
    if (steps.empty()) detail::throw_invalid(where, "sum(section_counts)", 0, "at least 1 step");
    return steps;
}

/// The same from a string: "10,15,20" (section counts) or "ddimN" (the single stride i for which
/// range(0, T, i) has exactly N steps).
inline std::vector<int> space_timesteps(int num_timesteps, const std::string& section_counts) {
    constexpr const char* where = "diffuse::space_timesteps";
    detail::check_num_timesteps(where, num_timesteps);
    const auto parse_int = [&](const std::string& text) {
        std::size_t used = 0;
        int value = 0;
        try {
            value = std::stoi(text, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != text.size()) {
            detail::throw_invalid(where, "section_counts", "\"" + section_counts + "\"",
                                  "comma-separated counts such as \"10,15,20\", or \"ddimN\"");
        }
        return value;
    };
    if (section_counts.rfind("ddim", 0) == 0) {
        const int desired = parse_int(section_counts.substr(4));
        for (int stride = 1; stride <= num_timesteps; ++stride) {
            if ((num_timesteps + stride - 1) / stride == desired) {
                std::vector<int> steps;
                for (int t = 0; t < num_timesteps; t += stride) steps.push_back(t);
                return steps;
            }
        }
        detail::throw_invalid(where, "section_counts", "\"" + section_counts + "\"",
                              "a DDIM step count that some stride of range(0, " +
                                  std::to_string(num_timesteps) + ", stride) gives exactly");
    }
    std::vector<int> counts;
    std::stringstream parts(section_counts);
    std::string part;
    while (std::getline(parts, part, ',')) counts.push_back(parse_int(part));
    // An empty string, or an empty count after a trailing comma, which getline does not return.
    if (counts.empty() || section_counts.back() == ',') parse_int("");  // throws with the expected form
    return space_timesteps(num_timesteps, counts);
}

/// How num_steps timesteps are picked from [0, T), as diffusers names it.
enum class Spacing {
    leading,   // k * (T / num_steps) + steps_offset, k = 0 .. num_steps-1 (integer division)
    trailing,  // round(T - k * T / num_steps) - 1: always keeps T-1, the noisiest step
    linspace,  // round(linspace(0, T - 1, num_steps)): keeps both ends
};

/// num_steps timesteps of [0, T) spaced as `spacing` says, ascending. `steps_offset` shifts the
/// leading spacing only, as in diffusers (Stable Diffusion uses leading with offset 1).
inline std::vector<int> spaced_timesteps(int num_timesteps, int num_steps, Spacing spacing,
                                         int steps_offset = 0) {
    constexpr const char* where = "diffuse::spaced_timesteps";
    detail::check_num_timesteps(where, num_timesteps);
    if (num_steps < 1 || num_steps > num_timesteps) {
        detail::throw_invalid(where, "num_steps", num_steps,
                              "from 1 to the schedule's " + std::to_string(num_timesteps) + " timesteps");
    }
    if (steps_offset != 0 && spacing != Spacing::leading) {
        detail::throw_invalid(where, "steps_offset", steps_offset,
                              "0 (the offset applies to the leading spacing only)");
    }
    std::vector<int> steps(static_cast<std::size_t>(num_steps));
    switch (spacing) {
        case Spacing::leading: {
            const int ratio = num_timesteps / num_steps;
            for (int k = 0; k < num_steps; ++k) steps[k] = k * ratio + steps_offset;
            if (steps_offset < 0 || steps.back() >= num_timesteps) {
                detail::throw_invalid(where, "steps_offset", steps_offset,
                                      "an offset that keeps every step in [0, " +
                                          std::to_string(num_timesteps) + ")");
            }
            break;
        }
        case Spacing::trailing: {
            // np.arange(T, 0, -T / n): NumPy fills start + k * delta, delta = (start + step) - start.
            const double start = num_timesteps, step = -static_cast<double>(num_timesteps) / num_steps;
            const double delta = (start + step) - start;
            for (int k = 0; k < num_steps; ++k) {
                steps[num_steps - 1 - k] = detail::round_half_even(start + k * delta) - 1;
            }
            break;
        }
        case Spacing::linspace: {
            const auto points = detail::linspace(0.0, num_timesteps - 1.0, num_steps);
            for (int k = 0; k < num_steps; ++k) steps[k] = detail::round_half_even(points[k]);
            break;
        }
    }
    return steps;
}

/// The schedule restricted to `use_timesteps` (any order, no repeats, each in [0, T)). Its step i stands
/// for the i-th kept timestep in ascending order; timestep_map() says which original timestep that is.
template <class T>
NoiseSchedule<T> respace(const NoiseSchedule<T>& base, std::vector<int> use_timesteps) {
    constexpr const char* where = "diffuse::respace";
    const int n = base.num_timesteps();
    if (use_timesteps.empty() || static_cast<int>(use_timesteps.size()) > n) {
        detail::throw_invalid(where, "use_timesteps.size()", use_timesteps.size(),
                              "from 1 to the schedule's " + std::to_string(n) + " timesteps");
    }
    std::sort(use_timesteps.begin(), use_timesteps.end());
    for (std::size_t i = 0; i < use_timesteps.size(); ++i) {
        const int t = use_timesteps[i];
        if (t < 0 || t >= n) {
            detail::throw_invalid(where, "use_timesteps[" + std::to_string(i) + "]", t,
                                  "a timestep in [0, " + std::to_string(n) + ")");
        }
        if (i > 0 && t == use_timesteps[i - 1]) {
            detail::throw_invalid(where, "use_timesteps", t, "each timestep at most once");
        }
    }
    const auto& ab = base.alphas_cumprod_double();
    Betas betas;
    std::vector<int> timestep_map;
    double last = 1.0;  // alphabar before the first kept step
    for (const int t : use_timesteps) {
        // beta' = 1 - alphabar_t / last, through expm1 so a beta near 0 keeps its precision
        betas.push_back(ab[t] == 0.0 ? 1.0 : -std::expm1(std::log(ab[t]) - std::log(last)));
        last = ab[t];
        timestep_map.push_back(base.timestep_map()[t]);
    }
    return NoiseSchedule<T>(std::move(betas), std::move(timestep_map));
}

}  // namespace diffuse
