#pragma once
// What a network predicts, and the conversions between the three usual choices, given x_t:
//   epsilon  the noise:  x_t = sqrt(alphabar) x_0 + sqrt(1 - alphabar) eps       (Ho et al. 2020)
//   x0       the clean data x_0
//   v        v = sqrt(alphabar) eps - sqrt(1 - alphabar) x_0                       (Salimans & Ho 2022)
// All arguments are [N, ...] with one timestep per sample in t, [N].

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/detail/per_sample.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <string>

namespace diffuse {

enum class Prediction { epsilon, x0, v };

inline const char* to_string(Prediction p) {
    switch (p) {
        case Prediction::epsilon: return "epsilon";
        case Prediction::x0: return "x0";
        case Prediction::v: return "v";
    }
    return "?";
}

/// "epsilon" (or "eps"), "x0" or "v".
inline Prediction prediction_from_string(const std::string& name) {
    if (name == "epsilon" || name == "eps") return Prediction::epsilon;
    if (name == "x0") return Prediction::x0;
    if (name == "v") return Prediction::v;
    detail::throw_invalid("diffuse::prediction_from_string", "name", "\"" + name + "\"",
                          "one of epsilon, x0, v");
}

/// x_0 = sqrt(1 / alphabar) x_t - sqrt(1 / alphabar - 1) eps
template <class T, int Rank>
Tensor<T, Rank> predict_x0_from_eps(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                                    const Timesteps& t, const Tensor<T, Rank>& eps) {
    return detail::per_sample_combine("diffuse::predict_x0_from_eps", schedule.sqrt_recip_alphas_cumprod(),
                                      "x_t", x_t, Table<T>(-schedule.sqrt_recipm1_alphas_cumprod()),
                                      "eps", eps, t);
}

/// eps = (x_t - sqrt(alphabar) x_0) / sqrt(1 - alphabar)
template <class T, int Rank>
Tensor<T, Rank> predict_eps_from_x0(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                                    const Timesteps& t, const Tensor<T, Rank>& x0) {
    const Table<T>& s1 = schedule.sqrt_one_minus_alphas_cumprod();
    return detail::per_sample_combine("diffuse::predict_eps_from_x0", Table<T>(s1.inverse()), "x_t", x_t,
                                      Table<T>(-schedule.sqrt_alphas_cumprod() / s1), "x0", x0, t);
}

/// v = sqrt(alphabar) eps - sqrt(1 - alphabar) x_0
template <class T, int Rank>
Tensor<T, Rank> v_from_x0_eps(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x0,
                              const Timesteps& t, const Tensor<T, Rank>& eps) {
    return detail::per_sample_combine("diffuse::v_from_x0_eps", schedule.sqrt_alphas_cumprod(), "eps", eps,
                                      Table<T>(-schedule.sqrt_one_minus_alphas_cumprod()), "x0", x0, t);
}

/// x_0 = sqrt(alphabar) x_t - sqrt(1 - alphabar) v
template <class T, int Rank>
Tensor<T, Rank> predict_x0_from_v(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                                  const Timesteps& t, const Tensor<T, Rank>& v) {
    return detail::per_sample_combine("diffuse::predict_x0_from_v", schedule.sqrt_alphas_cumprod(), "x_t",
                                      x_t, Table<T>(-schedule.sqrt_one_minus_alphas_cumprod()), "v", v, t);
}

/// eps = sqrt(1 - alphabar) x_t + sqrt(alphabar) v
template <class T, int Rank>
Tensor<T, Rank> predict_eps_from_v(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                                   const Timesteps& t, const Tensor<T, Rank>& v) {
    return detail::per_sample_combine("diffuse::predict_eps_from_v",
                                      schedule.sqrt_one_minus_alphas_cumprod(), "x_t", x_t,
                                      schedule.sqrt_alphas_cumprod(), "v", v, t);
}

/// x_0 from a model output of any kind.
template <class T, int Rank>
Tensor<T, Rank> predict_x0(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                           const Timesteps& t, const Tensor<T, Rank>& model_output, Prediction kind) {
    switch (kind) {
        case Prediction::epsilon: return predict_x0_from_eps(schedule, x_t, t, model_output);
        case Prediction::v: return predict_x0_from_v(schedule, x_t, t, model_output);
        case Prediction::x0: break;
    }
    check_same_shape("diffuse::predict_x0", "x_t", x_t, "model_output", model_output);
    check_timesteps("diffuse::predict_x0", t, x_t.dimension(0), schedule.num_timesteps());
    return model_output;
}

/// eps from a model output of any kind.
template <class T, int Rank>
Tensor<T, Rank> predict_eps(const NoiseSchedule<T>& schedule, const Tensor<T, Rank>& x_t,
                            const Timesteps& t, const Tensor<T, Rank>& model_output, Prediction kind) {
    switch (kind) {
        case Prediction::x0: return predict_eps_from_x0(schedule, x_t, t, model_output);
        case Prediction::v: return predict_eps_from_v(schedule, x_t, t, model_output);
        case Prediction::epsilon: break;
    }
    check_same_shape("diffuse::predict_eps", "x_t", x_t, "model_output", model_output);
    check_timesteps("diffuse::predict_eps", t, x_t.dimension(0), schedule.num_timesteps());
    return model_output;
}

}  // namespace diffuse
