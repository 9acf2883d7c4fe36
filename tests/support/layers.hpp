#pragma once
// Helpers for the layer tests: a gradient check that fails with the per-tensor report, and a naive
// reference convolution evaluated in long double.

#include <diffuse/testing/gradient_check.hpp>

#include <catch2/catch.hpp>

// Relative error 1e-6 (central differences with h = 1e-6 in double are good to ~1e-9 on these small
// layers), or an absolute error 1e-8 for a gradient that is truly zero.
#define REQUIRE_GRADIENTS_MATCH(report)                                                            \
    do {                                                                                           \
        const auto& report_ = (report);                                                            \
        INFO(report_.summary());                                                                   \
        REQUIRE(report_.passed(1e-6, 1e-8));                                                       \
    } while (false)
