// The resumable data order: each epoch a permutation that depends on (seed, epoch) alone, the stream
// crossing epochs, and a stream rebuilt from a cursor going on exactly where the first one was.

#include <diffuse/data/shuffle.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

TEST_CASE("epoch_permutation is a permutation that depends on the seed and the epoch alone", "[data][shuffle]") {
    const std::vector<diffuse::Index> p = diffuse::epoch_permutation(7, 0, 1000);
    std::vector<diffuse::Index> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (diffuse::Index i = 0; i < 1000; ++i) REQUIRE(sorted[static_cast<std::size_t>(i)] == i);
    CHECK(diffuse::epoch_permutation(7, 0, 1000) == p);
    CHECK(diffuse::epoch_permutation(7, 1, 1000) != p);
    CHECK(diffuse::epoch_permutation(8, 0, 1000) != p);
    // every position is reached by every index about equally often: the first slot over many epochs
    std::vector<int> first(10, 0);
    for (std::uint64_t e = 0; e < 2000; ++e) ++first[static_cast<std::size_t>(diffuse::epoch_permutation(3, e, 10)[0])];
    for (const int count : first) CHECK(std::abs(count - 200) < 5 * 13.5);  // binomial(2000, 0.1): sd 13.4
    REQUIRE(diffuse::epoch_permutation(1, 0, 1) == std::vector<diffuse::Index>{0});
    REQUIRE_THROWS_WITH(diffuse::epoch_permutation(1, 0, 0), Catch::Contains("n = 0"));
}

TEST_CASE("ShuffledIndices crosses epochs and resumes from its cursor exactly", "[data][shuffle][resume]") {
    diffuse::ShuffledIndices stream(10, 42);
    const std::vector<diffuse::Index> a = stream.next(7), b = stream.next(7);  // 14 of 10: into epoch 1
    CHECK(stream.cursor().epoch == 1);
    CHECK(stream.cursor().position == 4);
    const auto e0 = diffuse::epoch_permutation(42, 0, 10), e1 = diffuse::epoch_permutation(42, 1, 10);
    std::vector<diffuse::Index> want(e0.begin(), e0.end());
    want.insert(want.end(), e1.begin(), e1.begin() + 4);
    std::vector<diffuse::Index> got = a;
    got.insert(got.end(), b.begin(), b.end());
    REQUIRE(got == want);

    diffuse::ShuffledIndices resumed(10, 42, stream.cursor());
    REQUIRE(resumed.next(9) == stream.next(9));
    REQUIRE(resumed.cursor().epoch == stream.cursor().epoch);
    REQUIRE(resumed.cursor().position == stream.cursor().position);
    REQUIRE_THROWS_WITH(diffuse::ShuffledIndices(10, 42, {0, 11}), Catch::Contains("cursor.position = 11"));
}
