// Atomic writes: the file appears whole or not at all, replaces the previous one, leaves no temporary
// behind, and a write that fails leaves the previous file as it was.

#include <diffuse/io/atomic_file.hpp>

#include "../support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace {

std::string contents_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

int files_in(const std::filesystem::path& directory) {
    int n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
        (void)entry;
        ++n;
    }
    return n;
}

}  // namespace

TEST_CASE("write_string_atomically writes and replaces a file and leaves no temporary", "[io][atomic_file]") {
    diffuse::testing_support::TempDir dir("atomic");
    const std::string path = dir.file("metrics.json");
    diffuse::write_string_atomically(path, "{\"a\": 1}\n");
    REQUIRE(contents_of(path) == "{\"a\": 1}\n");
    diffuse::write_string_atomically(path, std::string("\0binary\xff", 8));
    REQUIRE(contents_of(path) == std::string("\0binary\xff", 8));
    CHECK(files_in(std::filesystem::path(path).parent_path()) == 1);
}

TEST_CASE("a fill that throws midway leaves the previous file intact and no temporary", "[io][atomic_file]") {
    diffuse::testing_support::TempDir dir("atomic_fail");
    const std::string path = dir.file("samples.npy");
    diffuse::write_string_atomically(path, "previous");
    REQUIRE_THROWS_WITH(diffuse::write_file_atomically(path, [](auto&& write) {
                            write("half", 4);
                            throw std::runtime_error("the producer failed");
                        }),
                        "the producer failed");
    CHECK(contents_of(path) == "previous");
    CHECK(files_in(std::filesystem::path(path).parent_path()) == 1);
    // a directory that does not exist: the operating system's refusal, naming the file and the caller
    const std::string nowhere = dir.file("missing/dir/file.json");
    REQUIRE_THROWS_AS(diffuse::write_string_atomically(nowhere, "x", "examples::write_json"), std::system_error);
    REQUIRE_THROWS_WITH(diffuse::write_string_atomically(nowhere, "x", "examples::write_json"),
                        Catch::Contains("examples::write_json") && Catch::Contains("missing/dir/file.json"));
}
