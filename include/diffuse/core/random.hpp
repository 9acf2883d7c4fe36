#pragma once
// A seeded, counter-based random number generator: Philox4x32-10 (Salmon et al., SC'11, the generator
// behind cuRAND, PyTorch's CUDA RNG and JAX). Each 128-bit block of output is a pure function of
// (seed, block index), so a fill gives the same numbers on every run, whatever the thread count, and
// the whole state is two integers (seed, offset) that a checkpoint can store.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace diffuse {

namespace detail {
constexpr std::uint32_t philox_m0 = 0xD2511F53u, philox_m1 = 0xCD9E8D57u;  // round multipliers
constexpr std::uint32_t philox_w0 = 0x9E3779B9u, philox_w1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt 3)
}  // namespace detail

/// Philox4x32 with 10 rounds: 128 random bits from a 128-bit counter and a 64-bit key.
inline std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                                  std::array<std::uint32_t, 2> key) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key[0] += detail::philox_w0;
            key[1] += detail::philox_w1;
        }
        const std::uint64_t p0 = std::uint64_t{detail::philox_m0} * counter[0];
        const std::uint64_t p1 = std::uint64_t{detail::philox_m1} * counter[2];
        counter = {static_cast<std::uint32_t>(p1 >> 32) ^ counter[1] ^ key[0],
                   static_cast<std::uint32_t>(p1),
                   static_cast<std::uint32_t>(p0 >> 32) ^ counter[3] ^ key[1],
                   static_cast<std::uint32_t>(p0)};
    }
    return counter;
}

namespace detail {

/// Philox blocks computed together, one counter per vector lane: 16 with AVX-512, 8 with AVX2, else
/// one (there the scalar 64-bit products were faster than SSE2's 32-bit ones). The same words as
/// philox4x32_10, 4.5x faster per block with AVX-512 on an AMD EPYC (Zen 5).
struct PhiloxLanes {
#if defined(__AVX512F__)
    static constexpr int count = 16;
#elif defined(__AVX2__)
    static constexpr int count = 8;
#else
    static constexpr int count = 1;
#endif

    /// out[l] = philox4x32_10({first + l as (low, high) words, 0, 0}, key) for l < count.
    static void blocks(std::uint64_t first, std::array<std::uint32_t, 2> key, std::array<std::uint32_t, 4>* out) {
#if !defined(__AVX512F__) && !defined(__AVX2__)
        out[0] = philox4x32_10({static_cast<std::uint32_t>(first), static_cast<std::uint32_t>(first >> 32), 0u, 0u}, key);
#else
        typedef std::uint32_t Words __attribute__((vector_size(4 * count)));  // a word per lane
        Words c0, c1, c2 = {}, c3 = {};
        for (int l = 0; l < count; ++l) {
            c0[l] = static_cast<std::uint32_t>(first + static_cast<std::uint64_t>(l));
            c1[l] = static_cast<std::uint32_t>((first + static_cast<std::uint64_t>(l)) >> 32);
        }
        for (int round = 0; round < 10; ++round) {
            if (round > 0) {
                key[0] += philox_w0;
                key[1] += philox_w1;
            }
            Words hi0, hi1;
            high_words(c0, philox_m0, hi0);
            high_words(c2, philox_m1, hi1);
            const Words lo0 = c0 * philox_m0, lo1 = c2 * philox_m1;
            c0 = hi1 ^ c1 ^ key[0];
            c1 = lo1;
            c2 = hi0 ^ c3 ^ key[1];
            c3 = lo0;
        }
        // out is c0[0] c1[0] c2[0] c3[0] c0[1] ...: interleave words, then pairs of words.
        typedef std::uint64_t Pairs __attribute__((vector_size(sizeof(Words))));
        Words words_lo, words_hi;  // 0 count 1 count+1 ..., and the same from count / 2
        Pairs pairs_lo, pairs_hi;  // the same for the count / 2 pairs
        for (int i = 0; i < count; ++i) {
            words_lo[i] = static_cast<std::uint32_t>(i % 2 * count + i / 2);
            words_hi[i] = words_lo[i] + count / 2;
        }
        for (int i = 0; i < count / 2; ++i) {
            pairs_lo[i] = static_cast<std::uint64_t>(i % 2 * (count / 2) + i / 2);
            pairs_hi[i] = pairs_lo[i] + count / 4;
        }
        const Words w01[2] = {__builtin_shuffle(c0, c1, words_lo), __builtin_shuffle(c0, c1, words_hi)};
        const Words w23[2] = {__builtin_shuffle(c2, c3, words_lo), __builtin_shuffle(c2, c3, words_hi)};
        for (int half = 0; half < 2; ++half) {
            Pairs p01, p23;
            std::memcpy(&p01, &w01[half], sizeof(p01));
            std::memcpy(&p23, &w23[half], sizeof(p23));
            const Pairs quarter[2] = {__builtin_shuffle(p01, p23, pairs_lo), __builtin_shuffle(p01, p23, pairs_hi)};
            std::memcpy(out + half * count / 2, quarter, sizeof(quarter));
        }
#endif
    }

  private:
    // hi[l] = the high word of the 64-bit product a[l] m, from the products of the even lanes and
    // of the odd lanes (shifted down) as 64-bit lanes.
    template <class Words>
    static void high_words(const Words& a, std::uint32_t m, Words& hi) {
#if defined(__AVX512F__)
        // GCC 12's AVX-512 intrinsics warn under -Wuninitialized; vector extensions compile to the
        // same vpmuludq.
        typedef std::uint64_t Pairs __attribute__((vector_size(sizeof(Words))));
        Pairs wide;
        std::memcpy(&wide, &a, sizeof(a));
        const Pairs even = (wide & 0xffffffffull) * std::uint64_t{m}, odd = (wide >> 32) * std::uint64_t{m};
        const Pairs high = (even >> 32) | (odd & 0xffffffff00000000ull);
        std::memcpy(&hi, &high, sizeof(hi));
#elif defined(__AVX2__)
        __m256i v;
        std::memcpy(&v, &a, sizeof(a));
        const __m256i mm = _mm256_set1_epi32(static_cast<int>(m));
        const __m256i even = _mm256_mul_epu32(v, mm), odd = _mm256_mul_epu32(_mm256_srli_epi64(v, 32), mm);
        const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
        std::memcpy(&hi, &high, sizeof(hi));
#endif
    }
};

}  // namespace detail

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
        return philox4x32_10({static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32), 0u, 0u},
                             key());
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
    // Philox's key: the seed's low and high 32 bits.
    std::array<std::uint32_t, 2> key() const {
        return {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)};
    }

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
            constexpr Index lanes = detail::PhiloxLanes::count;
            std::array<std::uint32_t, 4> r[lanes];
            V tail[PerBlock];
            for (Index b0 = begin; b0 < end; b0 += lanes) {
                detail::PhiloxLanes::blocks(first + static_cast<std::uint64_t>(b0), key(), r);
                if (b0 + lanes <= end && (b0 + lanes) * PerBlock <= n) {  // every block whole: no branch
                    for (Index l = 0; l < lanes; ++l) transform(r[l], out + (b0 + l) * PerBlock);
                    continue;
                }
                for (Index b = b0; b < std::min(end, b0 + lanes); ++b) {
                    const Index at = b * PerBlock;
                    if (at + PerBlock <= n) {
                        transform(r[b - b0], out + at);
                    } else {
                        transform(r[b - b0], tail);
                        for (Index k = 0; at + k < n; ++k) out[at + k] = tail[k];
                    }
                }
            }
        });
        offset_ += static_cast<std::uint64_t>(blocks);
    }

    std::uint64_t seed_;
    std::uint64_t offset_;
};

}  // namespace diffuse
