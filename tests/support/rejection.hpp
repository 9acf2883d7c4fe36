#pragma once
// The message of the diffuse::invalid_argument a call must throw; the test fails if it returns.

#include <diffuse/core/error.hpp>

#include <catch2/catch.hpp>

#include <string>

namespace diffuse::testing_support {

template <class Call>
std::string rejection(Call&& call) {
    try {
        call();
    } catch (const diffuse::invalid_argument& e) {
        return e.what();
    }
    FAIL("the call was accepted");
    return {};
}

}  // namespace diffuse::testing_support
