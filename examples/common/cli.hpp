#pragma once
// The example programs' main(): parse the command line, run, and turn the command line's and the
// library's errors into a message and an exit code. Not part of the library; needs CLI11.

#include <diffuse/core/error.hpp>

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

namespace examples {

/// Parses the command line, then runs body(). Exit codes: 0 on success and for --help; 2 for bad
/// input, a command-line error (CLI11's message) or a diffuse::invalid_argument (the library's
/// message, which names the argument, the value and what was expected); 1 for any other failure.
template <class Body>
int run(CLI::App& app, int argc, char** argv, Body&& body) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;  // prints the help, or the error and a hint to use --help
    }
    try {
        body();
        return 0;
    } catch (const diffuse::invalid_argument& e) {
        std::cerr << app.get_name() << ": " << e.what() << '\n';
        return 2;
    } catch (const std::exception& e) {
        std::cerr << app.get_name() << ": error: " << e.what() << '\n';
        return 1;
    }
}

}  // namespace examples
