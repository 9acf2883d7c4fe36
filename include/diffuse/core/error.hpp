#pragma once
// Errors: a user's mistake throws diffuse::invalid_argument naming the argument, the value seen and
// the value expected. Internal invariants use assert.

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace diffuse {

/// Thrown for bad input from a user: a wrong shape, a timestep out of range, an impossible setting.
class invalid_argument : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

/// Thrown when a computation meets a value it cannot go on from (a non-finite loss, say).
class numerical_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

namespace detail {

/// "where: argument = value, expected what"
template <class Value>
[[noreturn]] void throw_invalid(std::string_view where, std::string_view argument,
                                const Value& value, std::string_view expected) {
    std::ostringstream message;
    message.precision(17);
    message << where << ": " << argument << " = " << value << ", expected " << expected;
    throw invalid_argument(message.str());
}

/// A backward pass after a forward pass in evaluation mode, which cached nothing to go back through.
[[noreturn]] inline void throw_no_forward_cache(std::string_view where) {
    throw invalid_argument(std::string(where) +
                           ": no cached forward pass: backward needs a forward pass in training mode "
                           "(set_training(true)); evaluation mode caches nothing");
}

}  // namespace detail
}  // namespace diffuse
