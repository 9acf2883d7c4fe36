#pragma once
// NumPy's .npy format, version 1.0, for the example programs' raw outputs (samples as uint8
// [N, H, W], labels as int64 [N]), so Python tools read them with numpy.load. Not part of the library.
//
// The layout (numpy/lib/format.py): the magic "\x93NUMPY", the version bytes 1 and 0, the header's
// length as a little-endian uint16, then the header, a Python dict literal
//     {'descr': '<u1', 'fortran_order': False, 'shape': (3, 2), }
// padded with spaces and ended by '\n' so that magic + version + length + header is a multiple of 64
// bytes; then the data, row-major, little-endian. Files are written atomically (a temporary in the
// same directory, fsync'd, then a rename), so a reader never sees half a file.

#include <diffuse/core/error.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/io/atomic_file.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace examples {

namespace detail {

/// NumPy's type string of T: '<u1' for uint8, '<i8' for int64 ('<' little-endian; '|' would also do
/// for one byte, but numpy reads '<u1' as the same type).
template <class T>
constexpr const char* npy_descr() {
    if constexpr (std::is_same_v<T, std::uint8_t>) {
        return "<u1";
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
        return "<i8";
    } else if constexpr (std::is_same_v<T, float>) {
        return "<f4";
    } else {
        static_assert(std::is_same_v<T, std::uint8_t>, "npy: uint8, int64 or float32 only");
        return "";
    }
}

inline bool little_endian_host() {
    const std::uint16_t one = 1;
    unsigned char first;
    std::memcpy(&first, &one, 1);
    return first == 1;
}

}  // namespace detail

/// The bytes before the data of a version 1.0 .npy file of T with the given shape: magic, version,
/// header length and the header, padded to a multiple of 64 bytes.
template <class T>
std::string npy_header(const std::vector<diffuse::Index>& shape) {
    std::string dict = std::string("{'descr': '") + detail::npy_descr<T>() + "', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] < 0) diffuse::detail::throw_invalid("examples::npy_header", "shape", shape[i], "sizes >= 0");
        dict += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
    }
    if (shape.size() == 1) dict.pop_back();  // "(3,)": a one-tuple keeps its comma, loses the space
    dict += "), }";
    constexpr std::size_t preamble = 6 + 2 + 2;  // magic, version, uint16 length
    std::size_t total = preamble + dict.size() + 1;  // + '\n'
    total = (total + 63) / 64 * 64;
    const std::size_t header_len = total - preamble;
    if (header_len > 65535) {
        diffuse::detail::throw_invalid("examples::npy_header", "shape", shape.size(), "a header under 64 KiB");
    }
    dict.append(header_len - dict.size() - 1, ' ');
    dict += '\n';
    std::string out = "\x93NUMPY";
    out += '\x01';
    out += '\x00';
    out += static_cast<char>(header_len & 0xff);
    out += static_cast<char>((header_len >> 8) & 0xff);
    return out + dict;
}

/// Writes values (row-major, product(shape) of them) as a .npy file at `path`, atomically
/// (diffuse::write_file_atomically: a temporary beside it, fsync'd and renamed over it).
template <class T>
void write_npy(const std::string& path, const std::vector<diffuse::Index>& shape, const T* values) {
    diffuse::Index count = 1;
    for (const diffuse::Index s : shape) count *= s;
    const std::string header = npy_header<T>(shape);
    diffuse::write_file_atomically(path, [&](auto&& write) {
        write(header.data(), header.size());
        if (detail::little_endian_host() || sizeof(T) == 1) {
            write(values, static_cast<std::size_t>(count) * sizeof(T));
            return;
        }
        for (diffuse::Index i = 0; i < count; ++i) {
            char bytes[sizeof(T)], swapped[sizeof(T)];
            std::memcpy(bytes, values + i, sizeof(T));
            for (std::size_t b = 0; b < sizeof(T); ++b) swapped[b] = bytes[sizeof(T) - 1 - b];
            write(swapped, sizeof(T));
        }
    }, "examples::write_npy");
}

template <class T>
void write_npy(const std::string& path, const std::vector<diffuse::Index>& shape, const std::vector<T>& values) {
    diffuse::Index count = 1;
    for (const diffuse::Index s : shape) count *= s;
    if (static_cast<diffuse::Index>(values.size()) != count) {
        diffuse::detail::throw_invalid("examples::write_npy", "values.size()", values.size(),
                                       "the product of the shape, " + std::to_string(count));
    }
    write_npy(path, shape, values.data());
}

}  // namespace examples
