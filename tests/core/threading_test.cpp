// The thread pool and parallel_for: every index exactly once, pieces as documented, nesting, and the
// thread count setting.

#include "../support/reference.hpp"

#include <diffuse/core/threading.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace {

using diffuse::Index;

struct Piece {
    Index begin, end;
    std::thread::id thread;
};

// Runs parallel_for(n, grain) and returns the pieces it called fn with, in order of begin.
std::vector<Piece> pieces_of(Index n, Index grain) {
    std::mutex mutex;
    std::vector<Piece> pieces;
    diffuse::parallel_for(n, grain, [&](Index begin, Index end) {
        std::lock_guard<std::mutex> lock(mutex);
        pieces.push_back({begin, end, std::this_thread::get_id()});
    });
    std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
    return pieces;
}

}  // namespace

TEST_CASE("parallel_for covers 0 .. n-1 with contiguous pieces, each index once", "[core][threading]") {
    test_support::ThreadCountGuard guard;
    for (const int threads : {1, 2, 3, 4}) {
        diffuse::set_num_threads(threads);
        for (const Index n : {Index{0}, Index{1}, Index{5}, Index{1000}, Index{100003}}) {
            for (const Index grain : {Index{1}, Index{3}, Index{7}, Index{1000}, Index{0}}) {
                INFO(threads << " threads, n = " << n << ", grain = " << grain);
                const std::vector<Piece> pieces = pieces_of(n, grain);
                if (n == 0) {
                    CHECK(pieces.empty());
                    continue;
                }
                REQUIRE(!pieces.empty());
                CHECK(static_cast<int>(pieces.size()) <= threads);
                CHECK(pieces.front().begin == 0);
                CHECK(pieces.back().end == n);
                for (std::size_t p = 0; p < pieces.size(); ++p) {
                    CHECK(pieces[p].begin < pieces[p].end);
                    if (p > 0) CHECK(pieces[p].begin == pieces[p - 1].end);
                }
                // At most ceil(n / grain) pieces, so no piece is much smaller than `grain`.
                const Index g = std::max<Index>(grain, 1);
                CHECK(static_cast<Index>(pieces.size()) <= (n + g - 1) / g);
            }
        }
    }
}

TEST_CASE("parallel_for runs its first piece on the calling thread and the others on the pool",
          "[core][threading]") {
    test_support::ThreadCountGuard guard;
    diffuse::set_num_threads(3);
    const std::vector<Piece> pieces = pieces_of(3000, 1);
    REQUIRE(pieces.size() == 3);
    CHECK(pieces[0].thread == std::this_thread::get_id());
    CHECK(pieces[1].thread != std::this_thread::get_id());
    CHECK(pieces[2].thread != std::this_thread::get_id());

    diffuse::set_num_threads(1);
    const std::vector<Piece> serial = pieces_of(3000, 1);
    REQUIRE(serial.size() == 1);
    CHECK(serial[0].thread == std::this_thread::get_id());
}

TEST_CASE("Nested parallel_for calls visit every index pair once", "[core][threading]") {
    test_support::ThreadCountGuard guard;
    diffuse::set_num_threads(3);
    const Index rows = 12, cols = 5000;
    std::vector<std::atomic<int>> visits(static_cast<std::size_t>(rows * cols));
    for (auto& v : visits) v = 0;
    diffuse::parallel_for(rows, 1, [&](Index row_begin, Index row_end) {
        for (Index r = row_begin; r < row_end; ++r) {
            diffuse::parallel_for(cols, 100, [&](Index begin, Index end) {
                for (Index c = begin; c < end; ++c) visits[static_cast<std::size_t>(r * cols + c)]++;
            });
        }
    });
    long wrong = 0;
    for (const auto& v : visits) wrong += v != 1;
    CHECK(wrong == 0);
}

TEST_CASE("parallel_for called again after the thread count changes uses the new count",
          "[core][threading]") {
    test_support::ThreadCountGuard guard;
    for (const int threads : {2, 4, 1, 3}) {
        diffuse::set_num_threads(threads);
        CHECK(diffuse::num_threads() == threads);
        CHECK(static_cast<int>(pieces_of(100000, 1).size()) == threads);
    }
}

TEST_CASE("set_num_threads rejects fewer than one thread, naming n", "[core][threading][errors]") {
    using Catch::Contains;
    test_support::ThreadCountGuard guard;
    const int before = diffuse::num_threads();
    REQUIRE_THROWS_AS(diffuse::set_num_threads(0), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::set_num_threads(0), Contains("set_num_threads") && Contains("n = 0"));
    REQUIRE_THROWS_WITH(diffuse::set_num_threads(-2), Contains("n = -2"));
    CHECK(diffuse::num_threads() == before);
}

TEST_CASE("parallel_for rethrows an exception from a piece after every piece has finished, and stays usable",
          "[core][threading][errors]") {
    test_support::ThreadCountGuard guard;
    diffuse::set_num_threads(3);
    for (const Index thrower : {Index{0}, Index{1}, Index{2}}) {
        INFO("piece " << thrower << " throws");
        std::atomic<int> finished{0};
        const Index n = 3000;
        REQUIRE_THROWS_WITH(diffuse::parallel_for(n, 1, [&](Index begin, Index) {
                                if (begin == n * thrower / 3) throw std::runtime_error("piece failed");
                                std::this_thread::sleep_for(std::chrono::milliseconds(5));
                                ++finished;
                            }),
                            "piece failed");
        CHECK(finished == 2);  // the other two pieces ran to their end before the call returned
        CHECK(pieces_of(n, 1).size() == 3);
    }
}

TEST_CASE("Many short regions in a row, with idle workers, visit every index once", "[core][threading]") {
    test_support::ThreadCountGuard guard;
    diffuse::set_num_threads(4);
    // Regions of 2 and 3 pieces leave workers without a piece, which may see a region late, while the
    // next is being published; each region must still run each piece exactly once.
    std::vector<int> visits(4, 0);
    long wrong = 0;
    for (int r = 0; r < 20000; ++r) {
        const Index n = 2 + r % 3;
        std::fill(visits.begin(), visits.end(), 0);
        diffuse::parallel_for(n, 1, [&](Index begin, Index end) {
            for (Index i = begin; i < end; ++i) ++visits[static_cast<std::size_t>(i)];
        });
        for (Index i = 0; i < 4; ++i) wrong += visits[static_cast<std::size_t>(i)] != (i < n ? 1 : 0);
    }
    CHECK(wrong == 0);
}

TEST_CASE("parallel_for called from two threads at once covers each call's indices once", "[core][threading]") {
    test_support::ThreadCountGuard guard;
    diffuse::set_num_threads(3);
    const Index n = 1000;
    std::vector<std::atomic<int>> visits(static_cast<std::size_t>(2 * n));
    for (auto& v : visits) v = 0;
    const auto caller = [&](Index offset) {
        for (int r = 0; r < 500; ++r) {
            diffuse::parallel_for(n, 1, [&](Index begin, Index end) {
                for (Index i = begin; i < end; ++i) visits[static_cast<std::size_t>(offset + i)]++;
            });
        }
    };
    std::thread other(caller, n);
    caller(0);
    other.join();
    long wrong = 0;
    for (const auto& v : visits) wrong += v != 500;
    CHECK(wrong == 0);
}
