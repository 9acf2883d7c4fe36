// Shape and timestep checks: each throws diffuse::invalid_argument naming the argument, the value seen
// and what was expected.

#include <diffuse/core/error.hpp>
#include <diffuse/core/shape.hpp>
#include <diffuse/core/tensor.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <string>

TEST_CASE("shape_string writes dimensions as a bracketed list", "[core][shape]") {
    CHECK(diffuse::shape_string(std::array<diffuse::Index, 4>{2, 1, 28, 28}) == "[2, 1, 28, 28]");
    CHECK(diffuse::shape_string(std::array<diffuse::Index, 1>{7}) == "[7]");
    CHECK(diffuse::shape_string(std::array<diffuse::Index, 0>{}) == "[]");
    const diffuse::Tensor<float, 3> x(4, 0, 5);
    CHECK(diffuse::shape_string(x.dimensions()) == "[4, 0, 5]");
}

TEST_CASE("check_same_shape names the second tensor, its shape and the expected one",
          "[core][shape][errors]") {
    diffuse::Tensor2<double> a(2, 3), b(2, 4), c(2, 3);
    CHECK_NOTHROW(diffuse::check_same_shape("where", "x0", a, "noise", c));
    REQUIRE_THROWS_AS(diffuse::check_same_shape("where", "x0", a, "noise", b), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::check_same_shape("where", "x0", a, "noise", b),
                        "where: noise.shape = [2, 4], expected the shape of x0, [2, 3]");
}

TEST_CASE("check_timesteps wants one timestep per sample, each from 0 to T - 1", "[core][shape][errors]") {
    using Catch::Contains;
    CHECK_NOTHROW(diffuse::check_timesteps("f", {0, 999}, 2, 1000));
    REQUIRE_THROWS_AS(diffuse::check_timesteps("f", {0}, 2, 1000), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::check_timesteps("f", {0}, 2, 1000),
                        "f: t.size() = 1, expected one timestep per sample, 2");
    REQUIRE_THROWS_WITH(diffuse::check_timesteps("f", {0, 1000}, 2, 1000),
                        "f: t[1] = 1000, expected a timestep in [0, 1000)");
    REQUIRE_THROWS_WITH(diffuse::check_timesteps("f", {-1, 5}, 2, 1000), Contains("t[0] = -1"));
}

TEST_CASE("check_batch wants at least one sample", "[core][shape][errors]") {
    diffuse::Tensor<float, 3> empty(0, 2, 2), one(1, 2, 2);
    CHECK_NOTHROW(diffuse::check_batch("g", "x", one));
    REQUIRE_THROWS_AS(diffuse::check_batch("g", "x", empty), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::check_batch("g", "x", empty),
                        "g: x.shape = [0, 2, 2], expected at least one sample in dimension 0");
}
