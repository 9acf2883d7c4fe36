#pragma once
// Threading: one process-wide pool and a parallel_for over index ranges.
// The thread count comes from set_num_threads(), else the environment variable DIFFUSE_NUM_THREADS,
// else the number of hardware threads. Results never depend on it: work is split by index, and every
// random number is a function of its index (core/random.hpp).
//
// The pool is built for what a U-Net asks of it: a hundred or more short parallel regions per call,
// some of them tens of microseconds long at batch 1. Its workers wait for the next region spinning
// for a while (worker_spin) before they sleep, and the caller waits for the workers spinning
// (caller_spin) before it sleeps: a wake-up through the kernel costs tens of microseconds on a
// virtual machine, as long as the region itself.

#include "diffuse/core/error.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace diffuse {

using Index = Eigen::Index;  // as in core/tensor.hpp, which includes this header

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

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Waits for done() without sleeping for up to `limit`; returns done()'s last value. The first
// microseconds spin; after that each check yields the core, so that a thread this one waits for
// gets it when there are more threads than cores (two programs at once, say).
template <class Done>
bool spin_until(Done&& done, std::chrono::microseconds limit) {
    constexpr std::chrono::microseconds busy{20};
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        for (int i = 0; i < 32; ++i) {
            if (done()) return true;
            cpu_relax();
        }
        const auto waited = std::chrono::steady_clock::now() - start;
        if (waited > limit) return done();
        if (waited > busy) std::this_thread::yield();
    }
}

/// num_threads - 1 worker threads that run the pieces of one region at a time; the caller runs piece
/// 0 and worker w piece w + 1. A region is published by bumping `generation_` (by 2: see run).
class ThreadPool {
  public:
    static constexpr std::chrono::microseconds worker_spin{500};  // idle workers spin this long, then sleep
    static constexpr std::chrono::microseconds caller_spin{2000};  // the caller waits this long spinning

    explicit ThreadPool(int workers) {
        threads_.reserve(static_cast<std::size_t>(workers));
        for (int w = 0; w < workers; ++w) threads_.emplace_back([this, w] { work(w); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    /// Whether a region is running (then a new one from any thread runs serially instead).
    bool try_begin() {
        bool expected = false;
        return busy_.compare_exchange_strong(expected, true, std::memory_order_acquire);
    }

    /// Runs call(context, piece) for every piece in [0, pieces), pieces <= workers + 1, piece 0 on
    /// this thread; returns when all are done, rethrowing the first exception (by piece) any threw.
    /// Only after try_begin() returned true.
    void run(Index pieces, void (*call)(void*, Index), void* context) {
        // generation_ is odd while the region is written (a seqlock: a worker that reads the region
        // while it is written sees the generation change and reads it again).
        generation_.fetch_add(1, std::memory_order_seq_cst);
        call_.store(call, std::memory_order_release);
        context_.store(context, std::memory_order_release);
        pieces_.store(pieces, std::memory_order_release);
        errors_.assign(static_cast<std::size_t>(pieces), nullptr);
        remaining_.store(static_cast<int>(pieces - 1), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_seq_cst);  // even again: published
        if (sleeping_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            wake_.notify_all();
        }
        try {
            call(context, 0);
        } catch (...) {
            errors_[0] = std::current_exception();
        }
        const auto all_done = [this] { return remaining_.load(std::memory_order_seq_cst) == 0; };
        if (!spin_until(all_done, caller_spin)) {
            std::unique_lock<std::mutex> lock(mutex_);
            caller_waiting_.store(true, std::memory_order_seq_cst);
            done_.wait(lock, all_done);
            caller_waiting_.store(false, std::memory_order_relaxed);
        }
        std::exception_ptr first;
        for (const auto& e : errors_) {
            if (e && !first) first = e;
        }
        busy_.store(false, std::memory_order_release);
        if (first) std::rethrow_exception(first);
    }

  private:
    void work(int w) {
        std::uint64_t seen = 0;
        for (;;) {
            const auto published = [&] { return generation_.load(std::memory_order_seq_cst) != seen; };
            if (!spin_until(published, worker_spin)) {
                std::unique_lock<std::mutex> lock(mutex_);
                sleeping_.fetch_add(1, std::memory_order_seq_cst);
                wake_.wait(lock, [&] { return stop_ || published(); });
                sleeping_.fetch_sub(1, std::memory_order_relaxed);
                if (stop_) return;
            }
            // Read the region at an even generation, then check that the generation did not move
            // meanwhile (a worker with no piece in a region may read it late, while the caller already
            // writes the next). A region this worker has a piece in cannot be overwritten: its caller
            // waits for the piece.
            void (*call)(void*, Index) = nullptr;
            void* context = nullptr;
            Index pieces = 0;
            for (;;) {
                seen = generation_.load(std::memory_order_acquire);
                if (seen % 2 != 0) {
                    cpu_relax();
                    continue;
                }
                // Acquire loads: a value written for a newer region makes the generation below newer.
                call = call_.load(std::memory_order_acquire);
                context = context_.load(std::memory_order_acquire);
                pieces = pieces_.load(std::memory_order_acquire);
                if (generation_.load(std::memory_order_acquire) == seen) break;
            }
            const Index piece = w + 1;
            if (piece >= pieces) continue;
            try {
                call(context, piece);
            } catch (...) {
                errors_[static_cast<std::size_t>(piece)] = std::current_exception();
            }
            if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
                caller_waiting_.load(std::memory_order_seq_cst)) {
                std::lock_guard<std::mutex> lock(mutex_);
                done_.notify_one();
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    bool stop_ = false;  // guarded by mutex_
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<int> remaining_{0}, sleeping_{0};
    std::atomic<bool> busy_{false}, caller_waiting_{false};
    // The region: atomics, as a worker with no piece in it may read them while the next is written.
    std::atomic<void (*)(void*, Index)> call_{nullptr};
    std::atomic<void*> context_{nullptr};
    std::atomic<Index> pieces_{0};
    std::vector<std::exception_ptr> errors_;  // [pieces]
};

struct ThreadingState {
    std::mutex mutex;
    int num_threads = default_num_threads();
    std::unique_ptr<ThreadPool> pool;  // num_threads - 1 workers; the caller is the last
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
/// piece): piece p is [n p / pieces, n (p + 1) / pieces), the first on the calling thread. Returns when
/// every piece is done; an exception from any piece is rethrown here. A call made while another
/// region runs (from inside a piece, or from another thread) runs serially.
template <class Fn>
void parallel_for(Index n, Index grain, Fn&& fn) {
    if (n <= 0) return;
    auto& state = detail::threading_state();
    const Index g = std::max<Index>(grain, 1);
    const Index pieces = std::min<Index>(state.num_threads, (n + g - 1) / g);
    if (pieces <= 1) {
        fn(Index{0}, n);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        if (!state.pool) state.pool = std::make_unique<detail::ThreadPool>(state.num_threads - 1);
    }
    if (!state.pool->try_begin()) {
        fn(Index{0}, n);
        return;
    }
    struct Region {
        Fn& fn;
        Index n, pieces;
    } region{fn, n, pieces};
    state.pool->run(pieces, [](void* context, Index p) {
        auto& r = *static_cast<Region*>(context);
        r.fn(r.n * p / r.pieces, r.n * (p + 1) / r.pieces);
    }, &region);
}

}  // namespace diffuse
