#pragma once
// Learning-rate schedules, as functions of the step about to be taken (1-based).

#include "diffuse/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace diffuse::optim {

/// Linear warm-up from lr / warmup_steps to lr over warmup_steps steps, then constant (DDPM: 5000 steps).
inline double warmup_lr(double lr, long step, long warmup_steps) {
    if (warmup_steps < 0) detail::throw_invalid("diffuse::optim::warmup_lr", "warmup_steps", warmup_steps, ">= 0");
    if (step < 1) detail::throw_invalid("diffuse::optim::warmup_lr", "step", step, "a 1-based step, >= 1");
    if (warmup_steps == 0) return lr;
    return lr * std::min(1.0, static_cast<double>(step) / static_cast<double>(warmup_steps));
}

/// Refuses a cosine decay that ends within the warm-up (decay_steps = 0, no decay, is allowed) or a
/// final rate outside [0, lr]; `where` and `decay_name` name the caller and its parameter.
inline void check_cosine_decay(const char* where, const char* decay_name, double lr, long warmup_steps, long decay_steps,
                               double final_lr) {
    if (decay_steps != 0 && decay_steps <= warmup_steps) {
        detail::throw_invalid(where, decay_name, decay_steps,
                              "0 (no decay) or past the " + std::to_string(warmup_steps) + " warm-up steps");
    }
    if (!(final_lr >= 0.0 && final_lr <= lr)) detail::throw_invalid(where, "final_lr", final_lr, "a value in [0, lr]");
}

/// The linear warm-up, then a half cosine from lr down to final_lr at step decay_steps (SGDR without
/// restarts, Loshchilov & Hutter 2017), final_lr after it:
///     lr_s = final_lr + (lr - final_lr) (1 + cos(pi (s - w) / (D - w))) / 2,   w < s <= D.
/// decay_steps = 0: no decay, warmup_lr.
inline double cosine_lr(double lr, long step, long warmup_steps, long decay_steps, double final_lr) {
    const double warm = warmup_lr(lr, step, warmup_steps);
    if (decay_steps == 0) return warm;
    check_cosine_decay("diffuse::optim::cosine_lr", "decay_steps", lr, warmup_steps, decay_steps, final_lr);
    if (step <= warmup_steps) return warm;
    if (step >= decay_steps) return final_lr;
    const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps - warmup_steps);
    const double pi = std::acos(-1.0);
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + std::cos(pi * progress));
}

}  // namespace diffuse::optim
