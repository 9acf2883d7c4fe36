#pragma once
// The time-embedding MLP of the DDPM U-Net: sinusoidal(t, ch) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch).
// Its input, the timestep, has no gradient; backward only accumulates the parameter gradients.

#include "diffuse/core/tensor.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/nn/silu.hpp"
#include "diffuse/nn/timestep_embedding.hpp"

#include <string>
#include <vector>

namespace diffuse::nn {

template <class T = float>
class TimeMLP {
  public:
    TimeMLP() = default;
    TimeMLP(Index channels, Index embedding_channels, Generator& init,
                  TimestepEmbeddingOptions options = {})
        : dense0(channels, embedding_channels, init), dense1(embedding_channels, embedding_channels, init),
          channels_(channels), options_(options) {}

    Index channels() const { return channels_; }
    Index embedding_channels() const { return dense1.out_features(); }

    /// t: [N] -> [N, embedding_channels]
    template <class Time>
    Tensor2<T> forward(const std::vector<Time>& t) {
        return dense1.forward(silu.forward(dense0.forward(timestep_embedding<T>(t, channels_, options_))));
    }

    /// demb: [N, embedding_channels]; accumulates the parameter gradients and returns nothing, the
    /// timesteps having no gradient.
    void backward(const Tensor2<T>& demb) { dense0.backward(silu.backward(dense1.backward(demb))); }

    template <class Fn>
    void for_each_parameter(const std::string& prefix, Fn&& fn) {
        dense0.for_each_parameter(join_name(prefix, "dense.0"), fn);
        dense1.for_each_parameter(join_name(prefix, "dense.1"), fn);
    }

    Linear<T> dense0, dense1;

  private:
    SiLU<T> silu;
    Index channels_ = 0;
    TimestepEmbeddingOptions options_;
};

}  // namespace diffuse::nn
