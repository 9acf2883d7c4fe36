// Channel ranges: channel_slice copies the channels asked for and rejects a range outside the tensor.

#include <diffuse/core/channels.hpp>
#include <diffuse/core/random.hpp>

#include <catch2/catch.hpp>

#include <array>

TEST_CASE("channel_slice copies count channels from begin of every sample", "[core][channels]") {
    const auto x = diffuse::Generator(3).randn<double, 4>({2, 5, 3, 2});
    const auto y = diffuse::channel_slice(x, 1, 3);
    REQUIRE(y.dimensions() == std::array<diffuse::Index, 4>{2, 3, 3, 2});
    for (diffuse::Index n = 0; n < 2; ++n) {
        for (diffuse::Index c = 0; c < 3; ++c) {
            for (diffuse::Index h = 0; h < 3; ++h) {
                for (diffuse::Index w = 0; w < 2; ++w) REQUIRE(y(n, c, h, w) == x(n, c + 1, h, w));
            }
        }
    }
}

TEST_CASE("channel_slice rejects a channel range outside the tensor, naming begin or count", "[core][channels][errors]") {
    diffuse::Tensor4<float> x(2, 4, 3, 3);
    x.setZero();
    REQUIRE_THROWS_AS(diffuse::channel_slice(x, -1, 2), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::channel_slice(x, -1, 2), Catch::Contains("begin = -1") && Catch::Contains("[0, 4]"));
    REQUIRE_THROWS_WITH(diffuse::channel_slice(x, 5, 0), Catch::Contains("begin = 5"));
    REQUIRE_THROWS_WITH(diffuse::channel_slice(x, 2, 3), Catch::Contains("count = 3") && Catch::Contains("[0, 2]"));
    REQUIRE_THROWS_WITH(diffuse::channel_slice(x, 0, -1), Catch::Contains("count = -1"));
    REQUIRE(diffuse::channel_slice(x, 2, 2).dimension(1) == 2);
    REQUIRE(diffuse::channel_slice(x, 4, 0).dimension(1) == 0);
}
