#pragma once
// Threading: one process-wide pool and a parallel_for over index ranges.
// The thread count comes from set_num_threads(), else the environment variable DIFFUSE_NUM_THREADS,
// else the number of hardware threads. Results never depend on it: work is split by index, and every
// random number is a function of its index (core/random.hpp).

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#define EIGEN_USE_THREADS
#include <unsupported/Eigen/CXX11/ThreadPool>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

namespace diffuse {
namespace detail {

inline int default_num_threads() {
    if (const char* env = std::getenv("DIFFUSE_NUM_THREADS")) {
        char* end = nullptr;
        const long n = std::strtol(env, &end, 10);
        if (end == env || *end != '\0' || n < 1 || n > 1024) {
            throw_invalid("diffuse", "DIFFUSE_NUM_THREADS", env, "a whole number from 1 to 1024");
        }
        return static_cast<int>(n);
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

struct ThreadingState {
    std::mutex mutex;
    int num_threads = default_num_threads();
    std::unique_ptr<Eigen::ThreadPool> pool;  // num_threads - 1 workers; the caller is the last
};

inline ThreadingState& threading_state() {
    static ThreadingState state;
    return state;
}

}  // namespace detail

/// How many threads parallel work uses (the calling thread included).
inline int num_threads() { return detail::threading_state().num_threads; }

/// Sets how many threads parallel work uses, from 1 (serial) up. Call it between computations,
/// not while one is running on another thread.
inline void set_num_threads(int n) {
    if (n < 1) detail::throw_invalid("diffuse::set_num_threads", "n", n, "at least 1");
    auto& state = detail::threading_state();
    std::lock_guard<std::mutex> lock(state.mutex);
    if (n != state.num_threads) {
        state.pool.reset();
        state.num_threads = n;
    }
}

/// Calls fn(begin, end) on contiguous pieces of [0, n) using up to num_threads() threads, with at
/// most ceil(n / grain) pieces (so a piece is worth a hand-off: `grain` is roughly the smallest useful
/// piece). Returns when every piece is done. Calls from a pool thread run serially.
template <class Fn>
void parallel_for(Index n, Index grain, Fn&& fn) {
    if (n <= 0) return;
    auto& state = detail::threading_state();
    const Index g = std::max<Index>(grain, 1);
    const Index pieces = std::min<Index>(state.num_threads, (n + g - 1) / g);
    const bool nested = state.pool && state.pool->CurrentThreadId() != -1;
    if (pieces <= 1 || nested) {
        fn(Index{0}, n);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        if (!state.pool) state.pool = std::make_unique<Eigen::ThreadPool>(state.num_threads - 1);
    }
    Eigen::Barrier done(static_cast<unsigned>(pieces - 1));
    for (Index p = 1; p < pieces; ++p) {
        const Index begin = n * p / pieces, end = n * (p + 1) / pieces;
        state.pool->Schedule([&fn, &done, begin, end] {
            fn(begin, end);
            done.Notify();
        });
    }
    fn(Index{0}, n / pieces);
    done.Wait();
}

}  // namespace diffuse
