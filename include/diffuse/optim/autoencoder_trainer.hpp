#pragma once
// One training step of latent diffusion's autoencoder (Rombach et al. 2022, appendix G, without its
// perceptual and adversarial terms):
//   moments = E(x);  z = mean + exp(log_variance / 2) eps,  eps ~ N(0, I);  x_hat = D(z)
//   loss = rec(x_hat, x) + kl_weight mean_n KL(q(z | x_n) || N(0, I))
// rec is the mean absolute error (LDM's pixel loss, L1: sharper reconstructions than the MSE, which
// averages what it cannot tell apart into blur) or the mean squared error, over every pixel. KL_n is
// summed over sample n's latent entries, as LDM sums it. Then clip, Adam, and an EMA of the weights.
// Every random draw comes from the trainer's Generator.

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/models/autoencoder.hpp"
#include "diffuse/optim/adam.hpp"
#include "diffuse/optim/clip.hpp"
#include "diffuse/optim/ema.hpp"
#include "diffuse/optim/lr_schedule.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace diffuse::optim {

enum class Reconstruction { l1, mse };

struct AutoencoderTrainerOptions {
    AdamOptions adam = {};
    long warmup_steps = 0;          // linear learning-rate warm-up
    double max_grad_norm = 1.0;     // 0 turns clipping off
    double ema_decay = 0.999;
    bool ema_warmup = true;
    Reconstruction reconstruction = Reconstruction::l1;
    double kl_weight = 1e-6;        // beta; LDM's choice for its f = 4 and f = 8 models
    std::uint64_t seed = 0;
};

/// What one step measured.
struct AutoencoderStepStats {
    double loss;            // reconstruction + kl_weight kl
    double reconstruction;  // the mean absolute (or squared) error per pixel
    double kl;              // the batch mean of each sample's KL, nats
    double grad_norm;       // before clipping
    double lr;
};

template <class T = float>
class AutoencoderTrainer {
  public:
    /// Keeps a reference to the model: it must outlive the trainer.
    AutoencoderTrainer(Autoencoder<T>& model, AutoencoderTrainerOptions options = {})
        : model_(model), options_(options), adam_(options.adam), ema_(options.ema_decay, options.ema_warmup),
          generator_(options.seed) {
        constexpr const char* where = "diffuse::optim::AutoencoderTrainer";
        if (!(options.kl_weight >= 0.0)) detail::throw_invalid(where, "kl_weight", options.kl_weight, ">= 0");
        if (!(options.max_grad_norm >= 0.0)) detail::throw_invalid(where, "max_grad_norm", options.max_grad_norm, ">= 0");
    }

    /// One step on a batch of images x [N, C, H, W] scaled to [-1, 1].
    AutoencoderStepStats step(const Tensor4<T>& x) {
        model_.set_training(true);
        const Tensor4<T> moments = model_.encode(x);  // [N, 2z, h, w]
        const DiagonalGaussianPosterior<T> q = posterior_from_moments(moments);
        const Tensor4<T> eps = generator_.randn<T, 4>(q.mean.dimensions());
        const Tensor4<T> x_hat = model_.decode(posterior_sample(q, eps));  // [N, C, H, W]

        AutoencoderStepStats stats{};
        const Index batch = x.dimension(0);
        const double count = static_cast<double>(x.size());
        Tensor4<T> dx_hat(x.dimensions());
        double rec = 0.0;
        for (Index i = 0; i < x.size(); ++i) {
            const double d = static_cast<double>(x_hat.data()[i]) - static_cast<double>(x.data()[i]);
            if (options_.reconstruction == Reconstruction::l1) {
                rec += std::fabs(d);
                dx_hat.data()[i] = static_cast<T>((d > 0.0 ? 1.0 : d < 0.0 ? -1.0 : 0.0) / count);
            } else {
                rec += d * d;
                dx_hat.data()[i] = static_cast<T>(2.0 * d / count);
            }
        }
        stats.reconstruction = rec / count;
        for (const double k : posterior_kl(q)) stats.kl += k / static_cast<double>(batch);
        stats.loss = stats.reconstruction + options_.kl_weight * stats.kl;
        if (!std::isfinite(stats.loss)) {
            throw numerical_error("diffuse::optim::AutoencoderTrainer::step: the loss is " + std::to_string(stats.loss) +
                                  " at step " + std::to_string(step_ + 1));
        }

        nn::zero_grad(model_);
        const Tensor4<T> dz = model_.decode_backward(dx_hat);
        model_.encode_backward(posterior_backward(moments, eps, dz, options_.kl_weight / static_cast<double>(batch)));
        stats.grad_norm = options_.max_grad_norm > 0.0 ? clip_grad_norm(model_, options_.max_grad_norm) : grad_norm(model_);
        if (!std::isfinite(stats.grad_norm)) {
            throw numerical_error("diffuse::optim::AutoencoderTrainer::step: the gradient norm is " +
                                  std::to_string(stats.grad_norm) + " at step " + std::to_string(step_ + 1) +
                                  "; the weights were not updated");
        }
        ++step_;
        stats.lr = warmup_lr(options_.adam.lr, step_, options_.warmup_steps);
        adam_.set_lr(stats.lr);
        adam_.step(model_);
        ema_.update(model_);
        return stats;
    }

    long step_count() const { return step_; }
    void set_step_count(long step) { step_ = step; }  // for resuming (diffuse::load_checkpoint)
    Generator& generator() { return generator_; }
    Adam<T>& optimizer() { return adam_; }
    EMA<T>& ema() { return ema_; }
    Autoencoder<T>& model() { return model_; }
    const AutoencoderTrainerOptions& options() const { return options_; }

  private:
    Autoencoder<T>& model_;
    AutoencoderTrainerOptions options_;
    Adam<T> adam_;
    EMA<T> ema_;
    Generator generator_;
    long step_ = 0;
};

}  // namespace diffuse::optim
