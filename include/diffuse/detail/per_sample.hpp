#pragma once
// The shape of most forward-process formulas: out = a[t_n] * x + b[t_n] * y, with per-timestep scalars
// a and b looked up once per sample and applied to all of its elements. Not for direct use.

#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include <string_view>

namespace diffuse::detail {

/// out[n, ...] = a[t[n]] * x[n, ...] + b[t[n]] * y[n, ...]; x and y have the same shape; t is checked.
template <class T, int Rank>
Tensor<T, Rank> per_sample_combine(std::string_view where, const Table<T>& a, std::string_view x_name,
                                   const Tensor<T, Rank>& x, const Table<T>& b, std::string_view y_name,
                                   const Tensor<T, Rank>& y, const Timesteps& t) {
    check_batch(where, x_name, x);
    check_same_shape(where, x_name, x, y_name, y);
    check_timesteps(where, t, x.dimension(0), static_cast<int>(a.size()));
    Tensor<T, Rank> out(x.dimensions());
    const Index batch = x.dimension(0), per_sample = x.size() / batch;
    const T* xp = x.data();
    const T* yp = y.data();
    T* op = out.data();
    // Parallel over samples once a sample's worth of work pays for a thread hand-off.
    const Index grain = std::max<Index>(1, Index{1 << 15} / std::max<Index>(per_sample, 1));
    parallel_for(batch, grain, [&](Index begin, Index end) {
        for (Index n = begin; n < end; ++n) {
            const T an = a[t[n]], bn = b[t[n]];
            const Index off = n * per_sample;
            for (Index i = 0; i < per_sample; ++i) op[off + i] = an * xp[off + i] + bn * yp[off + i];
        }
    });
    return out;
}

/// out[n, ...] = a[t[n]] * x[n, ...]; t is checked.
template <class T, int Rank>
Tensor<T, Rank> per_sample_scale(std::string_view where, const Table<T>& a, std::string_view x_name,
                                 const Tensor<T, Rank>& x, const Timesteps& t) {
    check_batch(where, x_name, x);
    check_timesteps(where, t, x.dimension(0), static_cast<int>(a.size()));
    Tensor<T, Rank> out(x.dimensions());
    const Index batch = x.dimension(0), per_sample = x.size() / batch;
    for (Index n = 0; n < batch; ++n) {
        const T an = a[t[n]];
        for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) out.data()[i] = an * x.data()[i];
    }
    return out;
}

/// out[n, ...] = a[t[n]], broadcast to the shape of `like`.
template <class T, int Rank>
Tensor<T, Rank> per_sample_broadcast(const Table<T>& a, const Tensor<T, Rank>& like,
                                     const Timesteps& t) {
    Tensor<T, Rank> out(like.dimensions());
    const Index batch = like.dimension(0), per_sample = like.size() / batch;
    for (Index n = 0; n < batch; ++n) {
        std::fill(out.data() + n * per_sample, out.data() + (n + 1) * per_sample, a[t[n]]);
    }
    return out;
}

}  // namespace diffuse::detail
