#pragma once
// A seeded, counter-based random number generator: Philox4x32-10 (Salmon et al., SC'11, the generator
// behind cuRAND, PyTorch's CUDA RNG and JAX). Each 128-bit block of output is a pure function of
// (seed, block index), so a fill gives the same numbers on every run, whatever the thread count, and
// the whole state is two integers (seed, offset) that a checkpoint can store.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <array>
#include <cmath>
#include <cstdint>

namespace diffuse {

/// Philox4x32 with 10 rounds: 128 random bits from a 128-bit counter and a 64-bit key.
inline std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                                  std::array<std::uint32_t, 2> key) {
    constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
    constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt 3)
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key[0] += W0;
            key[1] += W1;
        }
        const std::uint64_t p0 = std::uint64_t{M0} * counter[0];
        const std::uint64_t p1 = std::uint64_t{M1} * counter[2];
        counter = {static_cast<std::uint32_t>(p1 >> 32) ^ counter[1] ^ key[0],
                   static_cast<std::uint32_t>(p1),
                   static_cast<std::uint32_t>(p0 >> 32) ^ counter[3] ^ key[1],
                   static_cast<std::uint32_t>(p0)};
    }
    return counter;
}

/// A seed for an independent stream number `stream` of `seed` (two rounds of SplitMix64's mixer),
/// e.g. one stream of dropout masks per training step.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
    const auto mix = [](std::uint64_t z) {
        z += 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    };
    return mix(mix(seed) ^ stream);
}

namespace detail {

// u in (0, 1] from the top 24 bits of one word, for float.
inline float uniform_open0_24(std::uint32_t x) { return static_cast<float>((x >> 8) + 1) * 0x1p-24f; }

// u in (0, 1] from 53 bits of two words, for double.
inline double uniform_open0_53(std::uint32_t hi, std::uint32_t lo) {
    const std::uint64_t bits = ((std::uint64_t{hi} << 32) | lo) >> 11;
    return static_cast<double>(bits + 1) * 0x1p-53;
}

}  // namespace detail

/// A stream of random numbers: (seed, offset), where offset counts the 128-bit Philox blocks used so
/// far. Every fill starts at the current offset and advances it by the blocks it used.
class Generator {
  public:
    explicit Generator(std::uint64_t seed = 0, std::uint64_t offset = 0)
        : seed_(seed), offset_(offset) {}

    std::uint64_t seed() const { return seed_; }
    std::uint64_t offset() const { return offset_; }

    /// Block `index` of this seed's stream (the offset is not used or changed).
    std::array<std::uint32_t, 4> block(std::uint64_t index) const {
        return philox4x32_10({static_cast<std::uint32_t>(index),
                              static_cast<std::uint32_t>(index >> 32), 0u, 0u},
                             {static_cast<std::uint32_t>(seed_),
                              static_cast<std::uint32_t>(seed_ >> 32)});
    }

    /// Fills `out` with independent standard normal draws (Box-Muller on Philox uniforms).
    /// float: 4 draws per block, uniforms with 24 bits; double: 2 draws per block, 53 bits.
    template <class T>
    void normal(T* out, Index n) {
        static_assert(std::is_floating_point<T>::value, "normal draws are floating point");
        constexpr Index per_block = sizeof(T) <= 4 ? 4 : 2;
        fill_blocks<per_block>(out, n, [](const std::array<std::uint32_t, 4>& r, T* z) {
            if constexpr (per_block == 4) {
                box_muller(detail::uniform_open0_24(r[0]), detail::uniform_open0_24(r[1]), z);
                box_muller(detail::uniform_open0_24(r[2]), detail::uniform_open0_24(r[3]), z + 2);
            } else {
                box_muller(detail::uniform_open0_53(r[0], r[1]), detail::uniform_open0_53(r[2], r[3]),
                           z);
            }
        });
    }

    template <class T, int Rank>
    void normal(Tensor<T, Rank>& out) {
        normal(out.data(), out.size());
    }

    /// A tensor of standard normal draws with the given dimensions.
    template <class T, int Rank>
    Tensor<T, Rank> randn(const std::array<Index, Rank>& dims) {
        Tensor<T, Rank> out(dims);
        normal(out);
        return out;
    }

    /// Fills `out` with uniform draws in [0, 1).
    template <class T>
    void uniform(T* out, Index n) {
        static_assert(std::is_floating_point<T>::value, "uniform draws are floating point");
        constexpr Index per_block = sizeof(T) <= 4 ? 4 : 2;
        fill_blocks<per_block>(out, n, [](const std::array<std::uint32_t, 4>& r, T* u) {
            for (Index k = 0; k < per_block; ++k) {
                u[k] = per_block == 4
                           ? static_cast<T>(detail::uniform_open0_24(r[k]) - 0x1p-24f)
                           : static_cast<T>(detail::uniform_open0_53(r[2 * k], r[2 * k + 1]) - 0x1p-53);
            }
        });
    }

    /// n integers drawn uniformly from [0, high), two per block from 64 random bits each (the bias,
    /// high / 2^64, is far below anything measurable). Used to draw a timestep per sample.
    std::vector<int> randint(Index n, int high) {
        if (n < 0) detail::throw_invalid("diffuse::Generator::randint", "n", n, "n >= 0");
        if (high < 1) detail::throw_invalid("diffuse::Generator::randint", "high", high, "high >= 1");
        std::vector<int> out(static_cast<std::size_t>(n));
        fill_blocks<2>(out.data(), n, [high](const std::array<std::uint32_t, 4>& r, int* v) {
            for (int k = 0; k < 2; ++k) {
                // floor(bits * high / 2^64) for bits = hi 2^32 + lo, without a 128-bit type (not
                // standard C++, and absent from MSVC): (hi high + floor(lo high / 2^32)) / 2^32.
                const std::uint64_t h = static_cast<unsigned>(high);
                v[k] = static_cast<int>((r[2 * k] * h + ((r[2 * k + 1] * h) >> 32)) >> 32);
            }
        });
        return out;
    }

  private:
    template <class T>
    static void box_muller(T u1, T u2, T* z) {
        // z0 = sqrt(-2 ln u1) cos(2 pi u2), z1 = sqrt(-2 ln u1) sin(2 pi u2); u1 in (0, 1].
        const T r = std::sqrt(T(-2) * std::log(u1));
        const T theta = T(2 * 3.14159265358979323846) * u2;
        z[0] = r * std::cos(theta);
        z[1] = r * std::sin(theta);
    }

    // Fills n values, PerBlock from each block, blocks numbered from the current offset, in
    // parallel; the last block may be used in part. Advances the offset by the blocks used.
    template <Index PerBlock, class V, class Transform>
    void fill_blocks(V* out, Index n, Transform transform) {
        const Index blocks = (n + PerBlock - 1) / PerBlock;
        const std::uint64_t first = offset_;
        parallel_for(blocks, 2048, [&](Index begin, Index end) {
            V tail[PerBlock];
            for (Index b = begin; b < end; ++b) {
                const auto r = block(first + static_cast<std::uint64_t>(b));
                const Index at = b * PerBlock;
                if (at + PerBlock <= n) {
                    transform(r, out + at);
                } else {
                    transform(r, tail);
                    for (Index k = 0; at + k < n; ++k) out[at + k] = tail[k];
                }
            }
        });
        offset_ += static_cast<std::uint64_t>(blocks);
    }

    std::uint64_t seed_;
    std::uint64_t offset_;
};

}  // namespace diffuse
