#pragma once
// Shape and range checks shared by every public function that takes user tensors.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace diffuse {

/// Throws unless `a` and `b` have the same dimensions.
template <class T, int Rank>
void check_same_shape(std::string_view where, std::string_view name_a, const Tensor<T, Rank>& a,
                      std::string_view name_b, const Tensor<T, Rank>& b) {
    if (a.dimensions() != b.dimensions()) {
        detail::throw_invalid(where, std::string(name_b) + ".shape", shape_string(b.dimensions()),
                              "the shape of " + std::string(name_a) + ", " +
                                  shape_string(a.dimensions()));
    }
}

/// True when x's dimensions are `shape` (a layer's record of its forward input, of any rank).
template <class T, int Rank>
bool has_shape(const Tensor<T, Rank>& x, const std::vector<Index>& shape) {
    if (shape.size() != static_cast<std::size_t>(Rank)) return false;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (x.dimension(static_cast<Index>(i)) != shape[i]) return false;
    }
    return true;
}

/// Throws unless there is one timestep per sample and each lies in [0, num_timesteps).
inline void check_timesteps(std::string_view where, const Timesteps& t, Index batch,
                            int num_timesteps) {
    if (static_cast<Index>(t.size()) != batch) {
        detail::throw_invalid(where, "t.size()", t.size(),
                              "one timestep per sample, " + std::to_string(batch));
    }
    for (std::size_t i = 0; i < t.size(); ++i) {
        if (t[i] < 0 || t[i] >= num_timesteps) {
            detail::throw_invalid(where, "t[" + std::to_string(i) + "]", t[i],
                                  "a timestep in [0, " + std::to_string(num_timesteps) + ")");
        }
    }
}

/// Throws unless the tensor has a batch dimension of at least one sample.
template <class T, int Rank>
void check_batch(std::string_view where, std::string_view name, const Tensor<T, Rank>& x) {
    static_assert(Rank >= 1, "a batch tensor has a batch dimension");
    if (x.dimension(0) < 1) {
        detail::throw_invalid(where, std::string(name) + ".shape", shape_string(x.dimensions()),
                              "at least one sample in dimension 0");
    }
}

}  // namespace diffuse
