#pragma once
// IDX files, the format of MNIST and Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/):
// a big-endian header, magic 0x0000TTDD (TT the element type, 0x08 = unsigned byte; DD the number of
// dimensions), then one uint32 per dimension, then the elements, row-major. Read gzip-compressed or
// plain through zlib's gzread, which passes a file that is not gzip through unchanged.
//
// Needs zlib: this header is not part of the Eigen-only core (diffuse/diffuse.hpp does not include
// it). Link the diffuse::io target, which brings ZLIB::ZLIB:
//     find_package(diffuse CONFIG REQUIRED COMPONENTS io)
//     target_link_libraries(app PRIVATE diffuse::io)
//
// A file is taken only if it is exactly what its header says: the magic, the dimensions, and a payload
// of exactly the product of the dimensions (a truncated file or trailing bytes are rejected; for a
// gzip file this is checked on the decompressed data, and the gzip stream itself must be complete;
// bytes after the end of the gzip stream are not part of it, and zlib skips them).
// Anything else throws diffuse::invalid_argument naming the file and what was wrong.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

/// A stack of 8-bit grayscale images as an IDX file stores them.
struct IdxImages {
    Index count = 0;                  // N
    Index rows = 0;                   // H
    Index cols = 0;                   // W
    std::vector<std::uint8_t> pixels; // [N, H, W], 0 = background, 255 = ink (MNIST's convention)
};

namespace detail {

[[noreturn]] inline void throw_idx(const char* where, const std::string& path, const std::string& what) {
    throw invalid_argument(std::string(where) + ": \"" + path + "\": " + what);
}

inline std::string idx_hex32(std::uint32_t v) {
    char text[11];
    std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(v));
    return text;
}

/// An open IDX file, gzip or plain; closed when it goes out of scope.
class IdxFile {
  public:
    IdxFile(const char* where, std::string path) : where_(where), path_(std::move(path)) {
        errno = 0;
        file_ = gzopen(path_.c_str(), "rb");
        if (file_ == nullptr) {
            std::string what = "cannot open the file";
            if (errno != 0) what += std::string(" (") + std::strerror(errno) + ")";
            if (path_.rfind("/usr/share/datasets/", 0) == 0) {
                what += "; the datasets under /usr/share/datasets/ come from Debian packages: "
                        "apt-get install dataset-fashion-mnist";
            }
            throw_idx(where_, path_, what);
        }
    }
    IdxFile(const IdxFile&) = delete;
    IdxFile& operator=(const IdxFile&) = delete;
    ~IdxFile() { gzclose(file_); }

    /// Reads up to n bytes into out and returns how many it read (fewer only at the end of the file).
    std::size_t read(std::uint8_t* out, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
            const int r = gzread(file_, out + got, chunk);
            if (r < 0) fail("cannot read the file");
            if (r == 0) break;
            got += static_cast<std::size_t>(r);
        }
        return got;
    }

    /// The header: magic, then `dims` big-endian uint32 sizes. Checks the magic is 0x0000 08 dims.
    std::vector<std::uint64_t> header(int dims, const char* expected_what) {
        std::array<std::uint8_t, 4> magic{};
        if (read(magic.data(), 4) != 4) {
            throw_idx(where_, path_, "the file ends inside the 4-byte magic number; expected an IDX file of " +
                                         std::string(expected_what));
        }
        const std::uint32_t value = big_endian(magic.data());
        const std::string seen = "magic number " + idx_hex32(value);
        const std::string expected = idx_hex32(0x0800u + static_cast<std::uint32_t>(dims)) + " (" +
                                     expected_what + ")";
        if (magic[0] != 0 || magic[1] != 0) {
            throw_idx(where_, path_, seen + " is not an IDX header (its first two bytes must be zero), expected " +
                                         expected);
        }
        if (magic[2] != 0x08) {
            throw_idx(where_, path_, seen + " has element type code 0x" + idx_hex32(magic[2]).substr(8) +
                                         ", expected 0x08 (unsigned byte): " + expected);
        }
        if (magic[3] != dims) {
            throw_idx(where_, path_, seen + " says " + std::to_string(magic[3]) +
                                         (magic[3] == 1 ? " dimension" : " dimensions") + ", expected " +
                                         std::to_string(dims) + ": " + expected);
        }
        std::vector<std::uint64_t> sizes(static_cast<std::size_t>(dims));
        for (int d = 0; d < dims; ++d) {
            std::array<std::uint8_t, 4> word{};
            if (read(word.data(), 4) != 4) {
                throw_idx(where_, path_, "the file ends inside the header, in the size of dimension " +
                                             std::to_string(d) + " of " + std::to_string(dims));
            }
            sizes[static_cast<std::size_t>(d)] = big_endian(word.data());
        }
        return sizes;
    }

    /// Exactly `expected` payload bytes, then the end of the file (and, for gzip, of a complete stream).
    std::vector<std::uint8_t> payload(std::uint64_t expected, const std::string& shape) {
        if (expected > static_cast<std::uint64_t>(std::numeric_limits<Index>::max())) {
            throw_idx(where_, path_, "the header's shape " + shape + " is too large to hold in memory");
        }
        // Grown as the data arrive, so a corrupt header claiming terabytes fails as truncated, not
        // as an allocation of terabytes.
        constexpr std::size_t step = std::size_t{1} << 24;
        std::vector<std::uint8_t> data;
        std::size_t got = 0;
        while (got < expected) {
            data.resize(static_cast<std::size_t>(std::min<std::uint64_t>(expected, got + step)));
            const std::size_t r = read(data.data() + got, data.size() - got);
            got += r;
            if (got < data.size()) break;
        }
        if (got < expected) {
            throw_idx(where_, path_, "truncated: the data end after " + std::to_string(got) + " bytes, expected " +
                                         std::to_string(expected) + " for the header's shape " + shape);
        }
        std::uint8_t extra[4096];
        std::size_t trailing = 0;
        for (std::size_t r; (r = read(extra, sizeof extra)) > 0;) trailing += r;
        if (trailing > 0) {
            throw_idx(where_, path_, std::to_string(trailing) + " trailing bytes after the " +
                                         std::to_string(expected) + " bytes of the header's shape " + shape +
                                         ", expected the file to end there");
        }
        int code = Z_OK;
        const char* message = gzerror(file_, &code);
        if (code == Z_BUF_ERROR) {
            throw_idx(where_, path_, "truncated: the gzip stream ends early (" + std::string(message) + ")");
        }
        if (code != Z_OK) fail("cannot read the file");
        return data;
    }

  private:
    static std::uint32_t big_endian(const std::uint8_t* b) {
        return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
    }

    [[noreturn]] void fail(const std::string& what) {
        int code = Z_OK;
        const char* message = gzerror(file_, &code);
        throw_idx(where_, path_, what + " (" + (code == Z_ERRNO ? std::strerror(errno) : message) + ")");
    }

    const char* where_;
    std::string path_;
    gzFile file_ = nullptr;
};

}  // namespace detail

/// Reads an IDX file of 8-bit images: magic 0x00000803, dimensions [N, H, W], N*H*W bytes.
inline IdxImages read_idx_images(const std::string& path) {
    constexpr const char* where = "diffuse::read_idx_images";
    detail::IdxFile file(where, path);
    const auto dims = file.header(3, "3-D unsigned-byte images [N, H, W]");
    const std::string shape =
        "[" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + ", " + std::to_string(dims[2]) + "]";
    if (dims[1] == 0 || dims[2] == 0) {
        detail::throw_idx(where, path, "the header's image shape " + shape + " has an empty image, expected H, W > 0");
    }
    // dims are below 2^32 each: H*W fits in 64 bits, and N*H*W is checked before it is formed.
    const std::uint64_t per_image = dims[1] * dims[2];
    const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
    if (dims[0] > limit / per_image) {
        detail::throw_idx(where, path, "the header's shape " + shape + " is too large to hold in memory");
    }
    IdxImages images;
    images.pixels = file.payload(dims[0] * per_image, shape);
    images.count = static_cast<Index>(dims[0]);
    images.rows = static_cast<Index>(dims[1]);
    images.cols = static_cast<Index>(dims[2]);
    return images;
}

/// Reads an IDX file of 8-bit labels: magic 0x00000801, dimension [N], N bytes.
inline std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
    detail::IdxFile file("diffuse::read_idx_labels", path);
    const auto dims = file.header(1, "1-D unsigned-byte labels [N]");
    return file.payload(dims[0], "[" + std::to_string(dims[0]) + "]");
}

/// Images first .. first+count-1 as a batch [count, 1, H, W], each pixel p mapped to p / 127.5 - 1,
/// so 0 -> -1 and 255 -> 1 (the same value as DDPM's 2p / 255 - 1; both are correctly rounded).
template <class T = float>
Tensor4<T> images_to_tensor(const IdxImages& images, Index first, Index count) {
    constexpr const char* where = "diffuse::images_to_tensor";
    if (images.pixels.size() != static_cast<std::size_t>(images.count * images.rows * images.cols)) {
        detail::throw_invalid(where, "images.pixels.size()", images.pixels.size(),
                              "count * rows * cols = " + std::to_string(images.count * images.rows * images.cols));
    }
    if (count < 0 || count > images.count) {
        detail::throw_invalid(where, "count", count, "from 0 to the " + std::to_string(images.count) + " images");
    }
    if (first < 0 || first > images.count - count) {
        const std::string n = std::to_string(images.count);
        detail::throw_invalid(where, "first", first,
                              count == 1 ? "an image index in [0, " + n + ")"
                                         : "an index from 0 to " + std::to_string(images.count - count) +
                                               ", so that count = " + std::to_string(count) + " images fit in " + n);
    }
    Tensor4<T> out(count, 1, images.rows, images.cols);  // [N, 1, H, W]
    const std::uint8_t* in = images.pixels.data() + first * images.rows * images.cols;
    for (Index i = 0; i < out.size(); ++i) out.data()[i] = static_cast<T>(in[i]) / T(127.5) - T(1);
    return out;
}

}  // namespace diffuse
