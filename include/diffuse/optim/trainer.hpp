#pragma once
// One training step of a diffusion model, the six steps of Ho et al. 2020, Algorithm 1:
//   1. draw t ~ U{0, T-1} per sample      2. draw eps ~ N(0, I)
//   3. x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (closed form)
//   4. embed t (inside the model)         5. predict eps (or x0, or v)
//   6. MSE against the true target; backpropagate; clip; Adam update; EMA update.
// Or Improved DDPM's objectives (options.loss): the hybrid loss for a model with a learned-range
// variance (2C output channels), or L_vlb alone, with t drawn uniformly or by the loss-aware sampler
// (optim/timestep_sampler.hpp), whose histories are part of the state a checkpoint saves.
// For classifier-free guidance, labels are replaced by the "no class" index with probability
// label_dropout, and prompts (a PromptUNet's) by the empty prompt with the same probability. Every
// random draw comes from the trainer's Generator, so a run is reproducible and can be resumed bit for
// bit from (weights, optimizer, EMA, generator state, step).
// Data-parallel (set_communicator, diffuse/parallel/communicator.hpp): each rank steps on its share
// of the global batch, draws t, the noise and label dropout for the whole global batch and keeps its
// share's, and the gradients are summed over the ranks before clipping.

#include "diffuse/core/conditioning.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/optim/adam.hpp"
#include "diffuse/optim/clip.hpp"
#include "diffuse/optim/ema.hpp"
#include "diffuse/optim/lr_schedule.hpp"
#include "diffuse/optim/timestep_sampler.hpp"
#include "diffuse/parallel/communicator.hpp"
#include "diffuse/process/forward.hpp"
#include "diffuse/process/hybrid_loss.hpp"
#include "diffuse/process/losses.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/schedule/noise_schedule.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace diffuse::optim {

struct TrainerOptions {
    AdamOptions adam = {};
    long warmup_steps = 0;           // linear learning-rate warm-up
    long lr_decay_steps = 0;         // > 0: then a half cosine down to final_lr at this step (cosine_lr); 0: constant
    double final_lr = 0.0;           // the learning rate at and after lr_decay_steps
    double max_grad_norm = 1.0;      // 0 turns clipping off
    double ema_decay = 0.9999;
    bool ema_warmup = true;
    Prediction prediction = Prediction::epsilon;
    double min_snr_gamma = 0.0;      // 0: the plain simple loss; 5 is the paper's choice (weights the MSE part)
    Loss loss = Loss::simple;        // simple; hybrid (needs learned_range); vlb
    ModelVariance variance = ModelVariance::fixed_small;  // the model's: learned_range means 2C output channels
    double vlb_lambda = 0.001;       // the hybrid loss's lambda
    TimestepSampling timestep_sampling = TimestepSampling::uniform;
    double label_dropout = 0.1;      // for classifier-free guidance: labels and prompts dropped to their null
    std::uint64_t seed = 0;
};

/// What one step measured.
struct StepStats {
    double loss;
    double grad_norm;  // before clipping
    double lr;
    double mse = 0.0;  // the hybrid and vlb losses: the batch mean of the mean part's MSE
    double vb = 0.0;   // and of the bound's term at each sample's t, bits per dimension
};

template <class Model, class T = float>
class Trainer {
  public:
    /// Keeps references to the model and the schedule: both must outlive the trainer.
    Trainer(Model& model, const NoiseSchedule<T>& schedule, TrainerOptions options = {})
        : model_(model), schedule_(schedule), options_(options), adam_(options.adam),
          ema_(options.ema_decay, options.ema_warmup), generator_(options.seed) {
        constexpr const char* where = "diffuse::optim::Trainer";
        if (!(options.label_dropout >= 0.0 && options.label_dropout <= 1.0)) {
            detail::throw_invalid(where, "label_dropout", options.label_dropout, "a probability in [0, 1]");
        }
        if (!(options.max_grad_norm >= 0.0)) detail::throw_invalid(where, "max_grad_norm", options.max_grad_norm, ">= 0");
        check_lr_decay(options.lr_decay_steps);
        if (!(options.vlb_lambda >= 0.0 && std::isfinite(options.vlb_lambda))) {
            detail::throw_invalid(where, "vlb_lambda", options.vlb_lambda, "a finite value >= 0 (Improved DDPM uses 0.001)");
        }
        const bool learned = options.variance == ModelVariance::learned_range;
        if (options.loss == Loss::hybrid && !learned) {
            detail::throw_invalid(where, "variance", to_string(options.variance),
                                  "learned_range for the hybrid loss (its VLB term trains the variance alone)");
        }
        if (options.loss == Loss::simple && learned) {
            detail::throw_invalid(where, "loss", to_string(options.loss),
                                  "hybrid or vlb for a learned variance (the simple loss gives its channels no gradient)");
        }
        if (options.loss == Loss::vlb && options.min_snr_gamma > 0.0) {
            detail::throw_invalid(where, "min_snr_gamma", options.min_snr_gamma,
                                  "0 with the vlb loss (min-SNR-gamma weights an MSE, which L_vlb has not)");
        }
        const UNetConfigOf& c = model.config();
        const Index want = model_output_channels(c.in_channels, options.variance);
        if (c.out_channels != want) {
            detail::throw_invalid(where, "the model's out_channels", c.out_channels,
                                  std::to_string(want) + " for " + std::to_string(c.in_channels) + " data channels and variance " +
                                      to_string(options.variance) + (learned ? " (mean part and v)" : ""));
        }
        if (options.timestep_sampling == TimestepSampling::loss_aware) sampler_.emplace(schedule.num_timesteps());
    }
    /// A temporary schedule would dangle once the constructor's full expression ends: refused at compile time.
    Trainer(Model& model, const NoiseSchedule<T>&& schedule, TrainerOptions options = {}) = delete;

    /// Data-parallel training: from now on step() takes this rank's share of each global batch
    /// (share_of: samples [rank B/R, (rank + 1) B/R) of a global batch of B), draws the randomness of
    /// the whole global batch, and sums the gradients over the ranks before clipping, so that every
    /// rank makes the same update. Dropout masks are drawn per rank (a stream of (seed, step, rank)).
    /// The communicator must outlive the trainer.
    void set_communicator(Communicator& communicator) { communicator_ = &communicator; }

    /// One step on a batch x0 [N, C, H, W] scaled to [-1, 1] (with a communicator: this rank's share
    /// of the global batch), with its conditioning: class labels [N] for a class-conditional model
    /// (none for an unconditional one), a prompt per image for a PromptUNet, a concatenated image per
    /// image for a model that takes one.
    StepStats step(const Tensor4<T>& x0, const Conditioning<T>& conditioning = {}) {
        const std::vector<int>& labels = conditioning.labels;
        const int ranks = communicator_ ? communicator_->size() : 1;
        const Index batch = x0.dimension(0);  // this rank's share
        // before any draw is indexed by sample: one label, prompt or image per sample
        check_conditioning("diffuse::optim::Trainer::step", conditioning, batch, x0.dimension(2), x0.dimension(3));
        const Index global = batch * ranks;
        const Share share = share_of(global, communicator_ ? communicator_->rank() : 0, ranks);
        TimestepDraw all;                                                          // 1
        if (sampler_) {
            all = sampler_->draw(generator_, global);
        } else {
            all.t = generator_.randint(global, schedule_.num_timesteps());
        }
        TimestepDraw draw = ranks == 1 ? all : share_of_draw(all, share);
        const Timesteps& t = draw.t;
        Tensor4<T> eps(global, x0.dimension(1), x0.dimension(2), x0.dimension(3));  // [B, C, H, W]
        generator_.normal(eps);
        if (ranks > 1) eps = batch_slice(eps, share.first, share.count);           // [N, C, H, W]
        const Tensor4<T> x_t = q_sample(schedule_, x0, t, eps);                     // 2, 3
        Conditioning<T> c = conditioning;
        std::vector<int>& y = c.labels;
        const Index classes = model_.config().num_classes;
        if (classes > 0 && !labels.empty() && options_.label_dropout > 0.0) {
            std::vector<double> u(static_cast<std::size_t>(global));
            generator_.uniform(u.data(), global);
            for (std::size_t n = 0; n < y.size(); ++n) {
                if (u[static_cast<std::size_t>(share.first) + n] < options_.label_dropout) y[n] = static_cast<int>(classes);
            }
        }
        if (c.has_prompt() && options_.label_dropout > 0.0) {  // the empty prompt: <start>, then padding
            Tokens& p = c.prompt;
            if (p.mask.empty()) p.mask.assign(p.ids.size(), 1);
            std::vector<double> u(static_cast<std::size_t>(global));
            generator_.uniform(u.data(), global);
            for (Index n = 0; n < p.batch; ++n) {
                if (u[static_cast<std::size_t>(share.first + n)] >= options_.label_dropout) continue;
                std::fill_n(p.ids.begin() + n * p.length, p.length, 0);
                std::fill_n(p.mask.begin() + n * p.length, p.length, std::uint8_t{0});
                p.mask[static_cast<std::size_t>(n * p.length)] = 1;
            }
        }
        // the dropout masks: a stream of their own, a new one each step (and rank). Derived from the
        // generator's seed (equal to options.seed unless a checkpoint restored another), so that
        // (generator, step) is the whole of a step's randomness.
        const std::uint64_t step_seed = derive_seed(generator_.seed(), static_cast<std::uint64_t>(step_));
        const Generator dropout(ranks == 1 ? step_seed : derive_seed(step_seed, 0x72616e6bULL + static_cast<std::uint64_t>(share.first)));
        model_.set_training(true);
        const Tensor4<T> output = model_.forward(x_t, t, c, dropout);              // 4, 5
        StepStats stats{};
        Tensor4<T> grad;                 // [N, C or 2C, H, W]
        std::vector<double> per_sample;  // [N], each sample's loss, for the loss-aware sampler
        const std::vector<double> snr = min_snr_weights(schedule_, options_.prediction, t, options_.min_snr_gamma);
        if (options_.loss == Loss::simple) {                                       // 6
            std::vector<double> w = snr;
            for (std::size_t n = 0; n < draw.weights.size(); ++n) w[n] *= draw.weights[n];
            const Tensor4<T> target = training_target(schedule_, options_.prediction, x0, eps, t);
            stats.loss = mse_loss(output, target, w, grad);
            if (sampler_) per_sample = per_sample_mse(output, target, snr);
        } else {
            HybridLoss<T> l = options_.loss == Loss::hybrid
                                  ? hybrid_loss(schedule_, output, x0, eps, x_t, t, options_.prediction,
                                                options_.vlb_lambda, draw.weights, snr)
                                  : vlb_loss(schedule_, output, x0, eps, x_t, t, options_.prediction, options_.variance,
                                             draw.weights);
            per_sample = std::move(l.per_sample);
            stats.loss = l.loss;
            stats.mse = l.mse;
            stats.vb = l.vb;
            grad = std::move(l.grad);
        }
        if (ranks > 1) {  // the global batch's mean: each share's mean over 1/R of it
            const T scale = T(1) / static_cast<T>(ranks);
            Eigen::Map<Table<T>>(grad.data(), grad.size()) *= scale;
            double summed[3] = {stats.loss / ranks, stats.mse / ranks, stats.vb / ranks};
            communicator_->sum(summed, 3);
            stats.loss = summed[0];
            stats.mse = summed[1];
            stats.vb = summed[2];
            if (sampler_) per_sample = all_gather(*communicator_, per_sample);
        }
        nn::zero_grad(model_);
        model_.backward(grad);
        if (ranks > 1) sum_gradients(*communicator_, model_, gradient_buffer_);
        const double norm = options_.max_grad_norm > 0.0 ? clip_grad_norm(model_, options_.max_grad_norm)
                                                         : grad_norm(model_);
        if (!std::isfinite(norm)) {
            throw numerical_error("diffuse::optim::Trainer::step: the gradient norm is " + std::to_string(norm) +
                                  " at step " + std::to_string(step_ + 1) + "; the weights were not updated");
        }
        if (sampler_) sampler_->update(all.t, per_sample);  // only a step that updates the weights is recorded
        ++step_;
        const double lr = cosine_lr(options_.adam.lr, step_, options_.warmup_steps, options_.lr_decay_steps, options_.final_lr);
        adam_.set_lr(lr);
        adam_.step(model_);
        ema_.update(model_);
        stats.grad_norm = norm;
        stats.lr = lr;
        return stats;
    }

    /// The state a checkpoint saves and restores: with the model's weights, these make the next
    /// step the same, bit for bit, as in a run that never stopped.
    long step_count() const { return step_; }
    void set_step_count(long step) { step_ = step; }
    Generator& generator() { return generator_; }
    const Generator& generator() const { return generator_; }
    Adam<T>& optimizer() { return adam_; }
    const Adam<T>& optimizer() const { return adam_; }
    EMA<T>& ema() { return ema_; }
    const EMA<T>& ema() const { return ema_; }
    Model& model() { return model_; }
    const Model& model() const { return model_; }
    const NoiseSchedule<T>& schedule() const { return schedule_; }
    const TrainerOptions& options() const { return options_; }
    /// Sets the step at which the cosine decay reaches final_lr, for a run whose length is known only
    /// once its speed is (a wall-clock budget); a checkpoint saves it with the other options.
    void set_lr_decay_steps(long decay_steps) {
        check_lr_decay(decay_steps);
        options_.lr_decay_steps = decay_steps;
    }
    /// The loss-aware timestep sampler, when options.timestep_sampling asks for it (else null).
    LossAwareSampler* timestep_sampler() { return sampler_ ? &*sampler_ : nullptr; }
    const LossAwareSampler* timestep_sampler() const { return sampler_ ? &*sampler_ : nullptr; }

  private:
    void check_lr_decay(long decay_steps) const {
        check_cosine_decay("diffuse::optim::Trainer", "lr_decay_steps", options_.adam.lr, options_.warmup_steps, decay_steps,
                           options_.final_lr);
    }

    using UNetConfigOf = std::decay_t<decltype(std::declval<const Model&>().config())>;

    /// The draws of samples [share.first, share.first + share.count) of the global batch's.
    static TimestepDraw share_of_draw(const TimestepDraw& all, const Share& share) {
        TimestepDraw out;
        const auto first = static_cast<std::ptrdiff_t>(share.first), end = first + static_cast<std::ptrdiff_t>(share.count);
        out.t.assign(all.t.begin() + first, all.t.begin() + end);
        if (!all.weights.empty()) out.weights.assign(all.weights.begin() + first, all.weights.begin() + end);
        return out;
    }

    /// Each sample's min-SNR-weighted squared error, [N]: what the loss-aware sampler records.
    static std::vector<double> per_sample_mse(const Tensor4<T>& output, const Tensor4<T>& target,
                                              const std::vector<double>& snr) {
        const Index batch = output.dimension(0), per_sample = output.size() / batch;
        std::vector<double> out(static_cast<std::size_t>(batch));
        for (Index n = 0; n < batch; ++n) {
            double sum = 0.0;
            for (Index i = n * per_sample; i < (n + 1) * per_sample; ++i) {
                const double d = static_cast<double>(output.data()[i]) - static_cast<double>(target.data()[i]);
                sum += d * d;
            }
            out[static_cast<std::size_t>(n)] = snr[static_cast<std::size_t>(n)] * sum / static_cast<double>(per_sample);
        }
        return out;
    }

    Model& model_;
    const NoiseSchedule<T>& schedule_;
    TrainerOptions options_;
    Adam<T> adam_;
    EMA<T> ema_;
    Generator generator_;
    std::optional<LossAwareSampler> sampler_;
    long step_ = 0;
    Communicator* communicator_ = nullptr;  // data-parallel: the ranks (null: one process)
    std::vector<T> gradient_buffer_;        // [parameters], the gradients packed for the sum over ranks
};

}  // namespace diffuse::optim
