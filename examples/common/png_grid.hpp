#pragma once
// A grid of images as one PNG, for the example programs (the noising figure, a trainer's samples).
// Not part of the library; needs stb_image_write (Debian's libstb-dev, pkg-config "stb").

#include <diffuse/core/error.hpp>
#include <diffuse/core/tensor.hpp>

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

/// A value of data scaled to [-1, 1] as an 8-bit level: [-1, 1] -> [0, 255], rounded. Values outside
/// [-1, 1] (x_t is Gaussian and has tails) are clamped here, for display only: the tensors are never
/// clamped. NaN shows as 0.
inline std::uint8_t to_display_level(double x) {
    const double v = (x + 1.0) * 127.5;
    return static_cast<std::uint8_t>(std::lround(v >= 0.0 ? (v <= 255.0 ? v : 255.0) : 0.0));
}

/// Writes images [N, C, H, W] (C = 1 gray or 3 RGB, values in [-1, 1]) to one PNG: a grid of
/// `cols` columns and ceil(N / cols) rows in batch order, each image scaled up `scale` times
/// (nearest neighbour), with `gap` pixels of white between neighbouring tiles.
template <class T>
void write_png_grid(const std::string& path, const diffuse::Tensor4<T>& images, diffuse::Index cols,
                    int scale = 4, int gap = 2) {
    using diffuse::Index;
    constexpr const char* where = "examples::write_png_grid";
    const Index n = images.dimension(0), channels = images.dimension(1);
    const Index h = images.dimension(2), w = images.dimension(3);
    if (n < 1) diffuse::detail::throw_invalid(where, "images.dimension(0)", n, "at least one image");
    if (channels != 1 && channels != 3) {
        diffuse::detail::throw_invalid(where, "images.dimension(1)", channels, "1 (gray) or 3 (RGB) channels");
    }
    if (cols < 1) diffuse::detail::throw_invalid(where, "cols", cols, "cols >= 1");
    if (scale < 1) diffuse::detail::throw_invalid(where, "scale", scale, "scale >= 1");
    if (gap < 0) diffuse::detail::throw_invalid(where, "gap", gap, "gap >= 0");
    cols = std::min(cols, n);
    const Index rows = (n + cols - 1) / cols;
    const Index tile_h = h * scale, tile_w = w * scale;
    const Index height = rows * tile_h + (rows - 1) * gap, width = cols * tile_w + (cols - 1) * gap;
    std::vector<std::uint8_t> png(static_cast<std::size_t>(height * width * channels), 255);  // [height, width, C]
    for (Index i = 0; i < n; ++i) {
        const Index top = (i / cols) * (tile_h + gap), left = (i % cols) * (tile_w + gap);
        for (Index y = 0; y < tile_h; ++y) {
            for (Index x = 0; x < tile_w; ++x) {
                for (Index c = 0; c < channels; ++c) {
                    png[static_cast<std::size_t>(((top + y) * width + left + x) * channels + c)] =
                        to_display_level(static_cast<double>(images(i, c, y / scale, x / scale)));
                }
            }
        }
    }
    const int stride = static_cast<int>(width * channels);
    if (!stbi_write_png(path.c_str(), static_cast<int>(width), static_cast<int>(height),
                        static_cast<int>(channels), png.data(), stride)) {
        throw std::runtime_error("cannot write the PNG file \"" + path + "\"");
    }
}

}  // namespace examples
