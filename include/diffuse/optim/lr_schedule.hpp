#pragma once
// Learning-rate schedules, as functions of the step about to be taken (1-based).

#include "diffuse/core/error.hpp"

#include <algorithm>
#include <cmath>

namespace diffuse::optim {

/// Linear warm-up from lr / warmup_steps to lr over warmup_steps steps, then constant (DDPM: 5000 steps).
inline double warmup_lr(double lr, long step, long warmup_steps) {
    if (warmup_steps < 0) detail::throw_invalid("diffuse::optim::warmup_lr", "warmup_steps", warmup_steps, ">= 0");
    if (step < 1) detail::throw_invalid("diffuse::optim::warmup_lr", "step", step, "a 1-based step, >= 1");
    if (warmup_steps == 0) return lr;
    return lr * std::min(1.0, static_cast<double>(step) / static_cast<double>(warmup_steps));
}

}  // namespace diffuse::optim
