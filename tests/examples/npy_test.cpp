// The example programs' .npy writer (examples/common/npy.hpp): the exact bytes NumPy's format 1.0
// prescribes, checked against the layout written out by hand here.

#include "common/npy.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// magic, version 1.0, the header length 118 = 0x76 as little-endian uint16
const std::string preamble = std::string("\x93NUMPY\x01\x00\x76\x00", 10);

}  // namespace

TEST_CASE("The npy header of a uint8 2 by 3 array is NumPy's version 1.0 header padded to 128 bytes") {
    const std::string dict = "{'descr': '<u1', 'fortran_order': False, 'shape': (2, 3), }";
    const std::string expected = preamble + dict + std::string(58, ' ') + "\n";
    const std::string header = examples::npy_header<std::uint8_t>({2, 3});
    REQUIRE(header.size() == 128);
    CHECK(header == expected);
}

TEST_CASE("The npy header of a one-dimensional array writes the shape as a one-tuple") {
    const std::string dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
    CHECK(examples::npy_header<std::int64_t>({3}) == preamble + dict + std::string(60, ' ') + "\n");
}

TEST_CASE("Every npy header ends on a multiple of 64 bytes with a newline") {
    for (const std::vector<diffuse::Index>& shape :
         {std::vector<diffuse::Index>{}, {0}, {1}, {10000, 28, 28}, {123456789, 1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
        const std::string header = examples::npy_header<std::uint8_t>(shape);
        CHECK(header.size() % 64 == 0);
        CHECK(header.back() == '\n');
        const auto length = static_cast<std::size_t>(static_cast<unsigned char>(header[8])) +
                            256 * static_cast<std::size_t>(static_cast<unsigned char>(header[9]));
        CHECK(length == header.size() - 10);
    }
}

TEST_CASE("A written npy file is the header followed by the little-endian values") {
    const std::string path =
        (std::filesystem::temp_directory_path() / ("diffuse_npy_test_" + std::to_string(::getpid()) + ".npy")).string();
    const std::vector<std::int64_t> labels = {7, -1, std::int64_t{1} << 40};
    examples::write_npy(path, {3}, labels);
    const std::string bytes = read_file(path);
    std::remove(path.c_str());
    const std::string data("\x07\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\x01\0\0", 24);
    CHECK(bytes == examples::npy_header<std::int64_t>({3}) + data);
    // no temporary left beside it
    const std::string stem = std::filesystem::path(path).filename().string() + ".tmp";
    for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
        CHECK(entry.path().filename().string().rfind(stem, 0) != 0);
    }
}

TEST_CASE("write_npy rejects values that do not fill the shape") {
    CHECK_THROWS_AS(examples::write_npy("unused.npy", {2, 3}, std::vector<std::uint8_t>(5)), diffuse::invalid_argument);
}
