#pragma once
// The loop every sampler runs around its update formula. From a starting state, move k = 0, 1, ...
// computes the next state from the current one; after each move the loop checks that the state is
// finite, reports the move to options.progress and keeps the state and the x0 prediction when
// options.keep_intermediates asks. A sampler is then its update: ddpm.hpp, ddim.hpp, dpm_solver.hpp
// and inpainting.hpp each hand the loop one move. Randomness: the starting noise is stream 0 of
// options.seed and move k draws from stream k + 1, whatever the thread count.

#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/options.hpp"

#include <cstdint>
#include <string>
#include <utility>

namespace diffuse {
namespace detail {

/// What one move of a sampler gives its loop.
template <class T>
struct Move {
    Tensor4<T> x;        // [N, C, H, W], the state after the move
    Tensor4<T> pred_x0;  // [N, C, H, W], the x0 prediction the move used; empty for a move without a model call
    int t = 0;           // the model's timestep of the move: what progress reports and errors name
};

/// The generator of move k's noise: stream k + 1 of the seed.
inline Generator move_generator(std::uint64_t seed, int k) {
    return Generator(derive_seed(seed, static_cast<std::uint64_t>(k) + 1));
}

/// Move k's standard normal noise of the given shape.
template <class T>
Tensor4<T> move_noise(std::uint64_t seed, int k, const Shape4& shape) {
    return stream_noise<T>(seed, static_cast<std::uint64_t>(k) + 1, shape);
}

/// Runs `moves` moves from x_start [N, C, H, W]: move(k, x) -> Move<T> gives the state after move k
/// from the state x before it. `move_name` names a move in the finite check's message ("step at",
/// "inversion step to"). A move without a model call (an empty pred_x0) is not reported to
/// options.progress and keeps no x0 prediction. The options were checked by the caller.
template <class T, class MoveFn>
Samples<T> sampling_loop(const char* where, const char* move_name, Tensor4<T> x_start, int moves,
                         const SamplerOptions<T>& options, MoveFn&& move) {
    Samples<T> out;
    out.x = std::move(x_start);  // [N, C, H, W]
    if (options.keep_intermediates) out.intermediates.push_back(out.x);
    for (int k = 0; k < moves; ++k) {
        Move<T> m = move(k, static_cast<const Tensor4<T>&>(out.x));
        out.x = std::move(m.x);
        check_finite(where, std::string("x after the ") + move_name + " t = " + std::to_string(m.t), out.x);
        const bool denoised = m.pred_x0.size() > 0;
        if (denoised && options.progress) options.progress(k, m.t, m.pred_x0);
        if (options.keep_intermediates) {
            out.intermediates.push_back(out.x);
            if (denoised) out.predicted_x0.push_back(std::move(m.pred_x0));
        }
    }
    return out;
}

}  // namespace detail
}  // namespace diffuse
