// The 28x28 example: trains the reference U-Net, class-conditional with classifier-free guidance
// (labels dropped 10% of the time), on Fashion-MNIST on the CPU for a wall-clock budget or a number
// of steps, then draws what it learned and scores it.
//
// Writes into --out:
//   checkpoint.safetensors      the whole training state (weights, EMA, Adam, step, generator, and the
//                               data order's epoch and position), atomically, every
//                               --checkpoint-every steps and at the end; --resume continues from it
//                               bit for bit
//   loss.csv, loss.png          the training loss per step (loss.png by gnuplot, examples/plots/loss.gp)
//   samples_by_class.png        one row per class, classifier-free guidance (see --guidance)
//   samples_unconditional.png   the "no class" label
//   denoising.png               a few samples from x_T (left) to x_0 (right)
//   inpainting.png              test images: original | bottom half masked | completed
//   metrics.json                class agreement, Frechet distance of classifier features, bits/dim
//
// --prompts trains a prompt-conditioned model instead (adds prompts.png), --autoencoder a latent model
// of that autoencoder's latents, --super-resolution SIDE a model that restores images from their
// SIDE x SIDE versions (writes superres.png in place of the class pictures; common/super_resolution.hpp).
//
//   diffuse_train --minutes 10 --out out/train
//
// Built with MPI (diffuse::mpi), it trains data-parallel when an MPI launcher starts it:
//   mpirun -np 2 diffuse_train --minutes 10 --out out/train
// Every rank holds the model and takes an equal share of each global batch of --batch-size images
// (diffuse/parallel/communicator.hpp); the gradients are summed over the ranks in rank order; rank 0
// alone prints, writes the checkpoints and the report. Each rank runs cores / (ranks on its machine)
// threads unless --threads or DIFFUSE_NUM_THREADS says otherwise. An error on any rank ends every rank.

#include "common/batches.hpp"
#include "common/classifier.hpp"
#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/progress.hpp"
#include "common/prompts.hpp"
#include "common/report.hpp"
#include "common/super_resolution.hpp"

#include <diffuse/core/memory.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/data/resize.hpp>
#include <diffuse/data/shuffle.hpp>
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/latent_diffusion.hpp>
#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/models/text_encoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/nn/parameter.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/parallel/communicator.hpp>
#ifdef DIFFUSE_EXAMPLES_MPI
#include <diffuse/parallel/mpi.hpp>
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#ifndef DIFFUSE_EXAMPLES_PLOTS_DIR
#define DIFFUSE_EXAMPLES_PLOTS_DIR "examples/plots"
#endif

namespace {

using diffuse::Index;
using Clock = std::chrono::steady_clock;


diffuse::UNetConfig model_config(const std::string& name) {
    diffuse::UNetConfig c = name == "reference" ? diffuse::UNetConfig::reference() : diffuse::UNetConfig::small();
    if (name == "tiny") {  // for tests: 2 levels, one block each, 8 base channels
        c.model_channels = 8;
        c.channel_mult = {1, 2};
        c.num_res_blocks = 1;
        c.attention_resolutions = {14};
    }
    c.num_classes = 10;
    return c;
}

std::string metadata_at(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
    const auto it = m.find(key);
    if (it == m.end()) throw std::runtime_error("\"" + path + "\" has no metadata " + key + ": not a diffuse_train checkpoint");
    return it->second;
}

/// loss.csv kept up to step `keep` (a resumed run continues the file of the run it resumes).
void truncate_loss_csv(const std::string& path, long keep) {
    std::ifstream in(path);
    if (!in) return;
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        if (lines.empty() || std::atol(line.c_str()) <= keep) lines.push_back(line);
    }
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const std::string& l : lines) out << l << '\n';
}

/// The command line, with its defaults.
struct Arguments {
    std::string data_dir = examples::default_data_dir;
    std::string out_dir = "out/train";
    std::string config_name = "reference";
    std::string resume;
    std::string classifier_path;
    std::string autoencoder_path;
    double minutes = 10.0;
    long steps = 0;
    Index batch_size = 16;
    Index max_images = 0;
    Index test_images = 10000;
    int threads = 0;
    long checkpoint_every = 100;
    long warmup = 50;
    double lr = 1e-3;
    std::string lr_schedule = "cosine";  // measured against constant: docs/improved-ddpm.md#the-10-minute-recipe
    double final_lr = 0.0;
    long lr_decay_steps = 0;  // 0: --steps, or predicted from the speed of a --minutes run every 100 steps
    double ema_decay = 0.999;
    double adam_beta2 = 0.999;
    double label_dropout = 0.1;
    double dropout = 0.0;  // a 10-minute run sees fewer images than one epoch: nothing to regularise (docs/example-28x28.md)
    std::vector<Index> channel_mult;  // empty: the --config's
    Index res_blocks = 0;             // ResBlocks per level on the way down; 0: the --config's
    Index model_channels = 0;         // the U-Net's base channels; 0: the --config's
    std::uint64_t seed = 0;
    std::string loss = "simple";
    std::string variance = "fixed_small";
    std::string prediction = "eps";
    double min_snr_gamma = 0.0;
    double vlb_lambda = 0.001;
    std::string timestep_sampler = "uniform";
    std::string schedule = "cosine";
    int timesteps = 1000;
    bool evaluate = true;
    bool prompts = false;
    examples::SuperResolutionOptions super_resolution = [] {
        examples::SuperResolutionOptions sr;
        sr.side = 0;  // 0: not a super-resolution model
        return sr;
    }();
    int classifier_epochs = 2;
    examples::ReportOptions report;
    examples::PromptReportOptions prompt_report = [] {
        examples::PromptReportOptions p;
        p.attribute_samples = 40;  // within the training budget; diffuse_evaluate measures 100
        return p;
    }();
    std::string plots_dir = DIFFUSE_EXAMPLES_PLOTS_DIR;
    double log_seconds = 10.0;
    diffuse::Communicator* ranks = nullptr;  // an MPI job's ranks (null: one process)
};

int rank_count(const Arguments& a) { return a.ranks ? a.ranks->size() : 1; }
bool is_root(const Arguments& a) { return !a.ranks || a.ranks->rank() == 0; }

/// The U-Net of --config with the command line's changes (--dropout, --model-channels, --channel-mult,
/// --res-blocks).
diffuse::UNetConfig model_config(const Arguments& a) {
    diffuse::UNetConfig c = model_config(a.config_name);
    c.dropout = a.dropout;
    if (a.model_channels > 0) c.model_channels = a.model_channels;
    if (!a.channel_mult.empty()) c.channel_mult = a.channel_mult;
    if (a.res_blocks > 0) c.num_res_blocks = a.res_blocks;
    return c;
}

/// The U-Net of a class-conditional model, of pixels or the pixel U-Net a latent model is cut from
/// (latent_unet_config drops its outer level): by default --config with channel multipliers 1,1,2, so
/// 32 channels at 28x28 and 14x14 and 64 at 7x7 for reference. Measured at equal wall clock against
/// 1,2,2 (64 channels at 14x14): for pixels 1.45x the steps and better samples on both scores, two seeds
/// (docs/improved-ddpm.md#the-u-nets-levels); for latents 1.5x the steps and a better score
/// (docs/latent-diffusion.md#the-latent-u-net). A model of pixels also has one ResBlock per level on
/// the way down (two on the way up) instead of two: 1.5x the steps again and better samples, two seeds
/// (same page); the latent model keeps --config's, not measured. Prompt and super-resolution models
/// keep --config's own.
diffuse::UNetConfig class_model_config(const Arguments& a, bool latent) {
    diffuse::UNetConfig c = model_config(a);
    if (a.config_name == "tiny") return c;
    if (a.channel_mult.empty()) c.channel_mult = {1, 1, 2};
    if (a.res_blocks == 0 && !latent) c.num_res_blocks = 1;
    return c;
}

/// The output channels for --variance: the data's, or twice them for a learned variance ([mean part, v]).
diffuse::UNetConfig with_variance(diffuse::UNetConfig c, const Arguments& a) {
    c.out_channels = diffuse::model_output_channels(c.in_channels, diffuse::model_variance_from_string(a.variance));
    return c;
}

/// The U-Net of a prompt model: the class model's without its class embedding, its attention blocks
/// transformer blocks of 4 heads attending to the prompt, and the prompt's pooled embedding added to
/// the time embedding where the class embedding was (context_pooling).
diffuse::UNetConfig prompt_model_config(const Arguments& a) {
    diffuse::UNetConfig c = model_config(a);
    c.num_classes = 0;
    c.heads = 4;
    c.context_pooling = true;
    return c;
}

void add_options(CLI::App& app, Arguments& a) {
    app.add_option("--data-dir", a.data_dir, "Directory of the IDX files (train-images-idx3-ubyte.gz, ...): "
                                             "Fashion-MNIST, MNIST or your own")->capture_default_str();
    app.add_option("--out", a.out_dir, "Output folder")->capture_default_str();
    app.add_option("--minutes", a.minutes, "Wall-clock budget of the whole run, final pictures and evaluation "
                                           "included (not counted: training a missing classifier)")->capture_default_str();
    app.add_option("--steps", a.steps, "Train until this many steps instead (counted from step 0, so a resumed run "
                                       "stops where an uninterrupted one would); 0: use --minutes")->capture_default_str();
    app.add_option("--batch-size", a.batch_size, "Images per step")->capture_default_str();
    app.add_option("--lr", a.lr, "Adam's learning rate after the warm-up")->capture_default_str();
    app.add_option("--warmup", a.warmup, "Steps of linear learning-rate warm-up")->capture_default_str();
    app.add_option("--lr-schedule", a.lr_schedule, "After the warm-up: constant, or cosine (a half cosine from --lr down to "
                                                   "--final-lr at the last step: --steps, or with --minutes the step the "
                                                   "speed so far predicts, every 100 steps)")
        ->check(CLI::IsMember({"constant", "cosine"}))->capture_default_str();
    app.add_option("--final-lr", a.final_lr, "The cosine schedule's last learning rate")->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--lr-decay-steps", a.lr_decay_steps, "The step at which the cosine reaches --final-lr; 0: --steps, or "
                                                         "with --minutes the step the speed so far predicts, every 100 "
                                                         "steps (a checkpoint keeps it for a resumed --steps run)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--ema-decay", a.ema_decay, "EMA decay, with warm-up: min(decay, (1 + n) / (10 + n)) at update n")
        ->capture_default_str();
    app.add_option("--adam-beta2", a.adam_beta2, "Adam's decay of the squared gradients' running mean")
        ->check(CLI::Range(0.0, 0.999999))->capture_default_str();
    app.add_option("--label-dropout", a.label_dropout, "Probability that a label or prompt is replaced by the null one "
                                                       "(classifier-free guidance)")
        ->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--dropout", a.dropout, "Dropout probability in the U-Net's ResBlocks (a resumed run keeps its "
                                           "checkpoint's)")->check(CLI::Range(0.0, 0.99))->capture_default_str();
    app.add_option("--model-channels", a.model_channels, "The U-Net's base channels, those of its outermost level "
                                                         "(a multiple of its 8 GroupNorm groups); default: the "
                                                         "--config's (reference 32, small 16)")
        ->check(CLI::PositiveNumber)
        ->check(CLI::Validator([](const std::string& v) {
            return std::stol(v) % 8 == 0 ? std::string() : v + " is not a multiple of 8, the U-Net's GroupNorm groups";
        }, "MULTIPLE OF 8"));
    app.add_option("--channel-mult", a.channel_mult, "The U-Net's channels per level as multiples of its base channels, "
                                                     "outermost first (a latent model drops the outer levels); "
                                                     "default: 1,1,2 for a class-conditional model (of pixels or "
                                                     "latents) of reference or small, else the --config's (1,2,2)")
        ->delimiter(',')->check(CLI::PositiveNumber);
    app.add_option("--res-blocks", a.res_blocks, "ResBlocks per level on the way down (the way up has one more); "
                                                 "default: 1 for a class-conditional model of pixels of reference "
                                                 "or small, else the --config's (2)")
        ->check(CLI::PositiveNumber);
    app.add_option("--seed", a.seed, "Seed of the weights, the data order, t, the noise and dropout")->capture_default_str();
    app.add_option("--loss", a.loss, "Objective: simple (MSE of the prediction), hybrid (simple + lambda L_vlb, Improved "
                                     "DDPM; needs --variance learned_range) or vlb (the bound alone)")
        ->check(CLI::IsMember({"simple", "hybrid", "vlb"}))->capture_default_str();
    app.add_option("--variance", a.variance, "The reverse step's variance: fixed_small (beta_tilde), fixed_large (beta) "
                                             "or learned_range (the U-Net outputs [mean part, v], Improved DDPM)")
        ->check(CLI::IsMember({"fixed_small", "fixed_large", "learned_range"}))->capture_default_str();
    app.add_option("--prediction", a.prediction, "What the U-Net predicts: eps, x0 or v")
        ->check(CLI::IsMember({"eps", "x0", "v"}))->capture_default_str();
    app.add_option("--min-snr-gamma", a.min_snr_gamma, "Min-SNR-gamma loss weighting of the MSE (Hang et al. 2023; 5 is "
                                                       "theirs); 0: none")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--vlb-lambda", a.vlb_lambda, "The hybrid loss's lambda")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--timestep-sampler", a.timestep_sampler, "How t is drawn: uniform, or loss-aware (Improved DDPM's "
                                                             "importance sampling by each t's recent losses)")
        ->check(CLI::IsMember({"uniform", "loss-aware"}))->capture_default_str();
    app.add_option("--threads", a.threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_option("--checkpoint-every", a.checkpoint_every, "Steps between checkpoints (one is also written at the end)")
        ->capture_default_str();
    app.add_option("--resume", a.resume, "Continue from this checkpoint (its configuration and options are used)");
    app.add_option("--schedule", a.schedule, "Noise schedule")->check(CLI::IsMember({"linear", "cosine"}))->capture_default_str();
    app.add_option("--timesteps", a.timesteps, "Diffusion steps T")->capture_default_str();
    app.add_option("--autoencoder", a.autoencoder_path, "Latent diffusion: train on the latents of this autoencoder "
                                                        "(autoencoder.safetensors of diffuse_train_autoencoder); the "
                                                        "U-Net is --config without its outer levels (see "
                                                        "diffuse/models/latent_diffusion.hpp)");
    app.add_flag("--prompts", a.prompts, "Train a prompt-conditioned model instead of a class-conditional one: a text "
                                         "encoder and a U-Net with cross-attention, on captions built from each image "
                                         "(its class's name or a synonym, dark/light, narrow/wide), drawn anew each step");
    app.add_option("--super-resolution", a.super_resolution.side,
                   "Train a super-resolution model instead of a class-conditional one: the U-Net is told each image "
                   "area-averaged to SIDE x SIDE and bicubic-upsampled back, concatenated to x_t (SR3); 7 (4x) or 14 "
                   "(2x) for 28x28 images; 0: off")->capture_default_str();
    app.add_option("--sr-images", a.super_resolution.images, "With --super-resolution: test images upscaled for "
                                                             "superres.png and the scores")->capture_default_str();
    app.add_option("--attribute-samples", a.prompt_report.attribute_samples,
                   "With --prompts: samples per attribute word (dark, light, narrow, wide) of the prompt-adherence "
                   "figures in metrics.json (0: none)")->capture_default_str();
    app.add_option("--config", a.config_name, "U-Net size: reference (1.6 M parameters), small, or tiny (for tests)")
        ->check(CLI::IsMember({"reference", "small", "tiny"}))->capture_default_str();
    app.add_option("--max-images", a.max_images, "Train on the first this many training images (0: all)")->capture_default_str();
    app.add_option("--test-images", a.test_images, "Test images for the scores (at most 10000)")->capture_default_str();
    app.add_option("--classifier", a.classifier_path, "Evaluation classifier weights (safetensors, from "
                                                      "diffuse_train_classifier); trained and saved here if missing "
                                                      "[default: <out>/../classifier.safetensors]");
    app.add_option("--classifier-epochs", a.classifier_epochs, "Epochs when the classifier must be trained")->capture_default_str();
    app.add_flag("!--no-eval", a.evaluate, "Pictures only: no classifier, no metrics.json figures");
    examples::add_report_options(app, a.report);
    app.add_option("--plots-dir", a.plots_dir, "Where loss.gp is")->capture_default_str();
    app.add_option("--log-seconds", a.log_seconds, "Seconds between progress lines when stderr is not a terminal")
        ->capture_default_str();
}

/// A resumed run takes the configuration and the data settings from its checkpoint (the trainer's
/// options too, later); returns where the data order was.
diffuse::DataCursor take_settings_from_checkpoint(Arguments& a) {
    const auto m = examples::file_metadata(a.resume);
    a.config_name = metadata_at(m, "diffuse_train.config", a.resume);
    a.prompts = m.count("diffuse.text_encoder_config") != 0;
    const auto sr = m.find(examples::super_resolution_key);
    a.super_resolution.side = sr == m.end() ? 0 : std::stol(sr->second);
    const std::optional<diffuse::LatentReference> latent = diffuse::latent_reference_from_checkpoint(a.resume);
    if (!latent && !a.autoencoder_path.empty()) {
        diffuse::detail::throw_invalid("diffuse_train", "--autoencoder", a.autoencoder_path,
                                       "none: \"" + a.resume + "\" is a checkpoint of a pixel model");
    }
    if (latent && a.autoencoder_path.empty()) a.autoencoder_path = latent->autoencoder;
    if (latent) diffuse::check_latent_autoencoder(*latent, a.autoencoder_path);
    a.batch_size = std::stol(metadata_at(m, "diffuse_train.batch_size", a.resume));
    a.max_images = std::stol(metadata_at(m, "diffuse_train.max_images", a.resume));
    a.seed = std::stoull(metadata_at(m, "diffuse_train.seed", a.resume));
    const auto lr_schedule = m.find("diffuse_train.lr_schedule");  // absent before the cosine schedule: constant
    a.lr_schedule = lr_schedule == m.end() ? "constant" : lr_schedule->second;
    const auto lr_decay_steps = m.find("diffuse_train.lr_decay_steps");  // 0: predicted from the speed
    if (lr_decay_steps != m.end()) a.lr_decay_steps = std::stol(lr_decay_steps->second);
    const diffuse::StoredSchedule stored = examples::checkpoint_schedule(m, a.resume);
    a.schedule = stored.name;
    a.timesteps = static_cast<int>(stored.betas.size());
    diffuse::DataCursor cursor;
    cursor.epoch = std::stoull(metadata_at(m, "diffuse_train.epoch", a.resume));
    cursor.position = std::stol(metadata_at(m, "diffuse_train.position", a.resume));
    return cursor;
}

/// Where a cosine schedule reaches --final-lr, when it is known before training: --lr-decay-steps, or
/// --steps past the warm-up (a run that ends within its warm-up has nothing to decay); 0 otherwise.
long known_lr_decay_steps(const Arguments& a, long warmup_steps) {
    if (a.lr_decay_steps > 0) return a.lr_decay_steps;
    return a.steps > warmup_steps ? a.steps : 0;
}

/// The trainer's options: from the command line, or from the checkpoint a run resumes.
diffuse::optim::TrainerOptions trainer_options(const Arguments& a) {
    if (!a.resume.empty()) {
        diffuse::optim::TrainerOptions options = diffuse::trainer_options_from_checkpoint(a.resume);
        // a cosine run saved before its length was known: --steps fixes it now, --minutes every 100 steps
        if (a.lr_schedule == "cosine" && options.lr_decay_steps == 0) options.lr_decay_steps = known_lr_decay_steps(a, options.warmup_steps);
        return options;
    }
    diffuse::optim::TrainerOptions options;
    options.adam.lr = a.lr;
    options.adam.beta2 = a.adam_beta2;
    options.warmup_steps = a.warmup;
    if (a.lr_schedule == "cosine") {
        options.final_lr = a.final_lr;
        options.lr_decay_steps = known_lr_decay_steps(a, a.warmup);  // 0 with --minutes: predicted from the speed
    }
    options.ema_decay = a.ema_decay;
    options.label_dropout = a.label_dropout;
    options.seed = a.seed;
    options.loss = diffuse::loss_from_string(a.loss);
    options.variance = diffuse::model_variance_from_string(a.variance);
    options.prediction = diffuse::prediction_from_string(a.prediction);
    options.min_snr_gamma = a.min_snr_gamma;
    options.vlb_lambda = a.vlb_lambda;
    options.timestep_sampling = diffuse::optim::timestep_sampling_from_string(a.timestep_sampler);
    return options;
}

/// When to stop: at a step count, or before the wall-clock budget, keeping time for the pictures and
/// evaluation that follow.
struct Budget {
    long steps = 0;                   // > 0: stop there
    Clock::time_point start;          // the budget runs from here
    double seconds = 0.0;             // the whole run's, when steps is 0
    double report_forwards = 0.0;     // image-forwards of the report after training
};

/// What the training loop did.
struct TrainingRun {
    long taken = 0;              // steps taken in this run
    double step_seconds = 0.0;   // their time, steps alone
    double smoothed = 0.0;       // the smoothed loss at the end
    long last_checkpoint = 0;    // the step of the last checkpoint written
    bool stopped_non_finite = false;
    double seconds = 0.0;        // the loop's wall-clock time

    double seconds_per_step() const { return taken > 0 ? step_seconds / static_cast<double>(taken) : 0.0; }
    /// One image's sampling forward pass, from the training's cost: a step (forward and backward,
    /// caches, dropout) costs about 4 sampling forwards per image, as measured.
    double seconds_per_forward(Index batch) const { return seconds_per_step() / (4.0 * static_cast<double>(batch)); }
};

/// Trains until the budget says stop, one batch a step, appending to loss.csv, drawing the progress
/// bar and saving a checkpoint every `checkpoint_every` steps; stops early, without saving, when a
/// step is not finite. conditioning_of(labels, indices, step) is what the model is told of the batch
/// of images `indices` (in the data set) at step `step` (0 for the first).
template <class Trainer, class ConditioningOf, class Save>
TrainingRun train(Trainer& trainer, examples::Batches& batches, const Arguments& a, const Budget& budget,
                  std::ofstream& loss_csv, ConditioningOf&& conditioning_of, Save&& save) {
    TrainingRun run;
    run.last_checkpoint = trainer.step_count();
    const long first_step = trainer.step_count();
    const bool root = is_root(a);
    examples::ProgressBar bar(a.log_seconds);
    diffuse::Tensor4<float> x;
    std::vector<int> y;
    double loss_average = 0.0;
    const auto train_start = Clock::now();
    for (;;) {
        const long step = trainer.step_count();
        const double elapsed = std::chrono::duration<double>(Clock::now() - budget.start).count();
        const double reserve = 1.15 * budget.report_forwards * run.seconds_per_forward(a.batch_size) + 5.0;
        if (budget.steps > 0) {
            if (step >= budget.steps) break;
        } else {
            // rank 0's clock decides for every rank
            double stop = root && run.taken > 0 && elapsed + run.seconds_per_step() + reserve > budget.seconds ? 1.0 : 0.0;
            if (a.ranks) a.ranks->sum(&stop, 1);
            if (stop > 0.0) break;
        }
        // the global batch, and this rank's share of it (all of it in one process)
        batches.next(a.batch_size, x, y);
        diffuse::Conditioning<float> conditioning = conditioning_of(y, batches.last_indices(), step);
        if (rank_count(a) > 1) {
            const diffuse::Share share = diffuse::share_of(a.batch_size, a.ranks->rank(), a.ranks->size());
            x = diffuse::batch_slice(x, share.first, share.count);
            conditioning = diffuse::slice_conditioning(conditioning, share.first, share.count);
        }
        const auto t0 = Clock::now();
        diffuse::optim::StepStats stats;
        try {
            stats = trainer.step(x, conditioning);
        } catch (const diffuse::numerical_error& e) {
            bar.finish();
            std::cerr << "diffuse_train: training stopped: " << e.what() << '\n';
            run.stopped_non_finite = true;
            break;
        }
        if (!std::isfinite(stats.loss)) {
            bar.finish();
            std::cerr << "diffuse_train: training stopped: the loss is " << stats.loss << " at step " << step + 1 << '\n';
            run.stopped_non_finite = true;
            break;
        }
        run.step_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        ++run.taken;
        if (a.lr_schedule == "cosine" && budget.steps == 0 && a.lr_decay_steps == 0 && run.taken % 100 == 0) {
            // a wall-clock budget: the cosine ends at the step this run's speed so far predicts as its
            // last, predicted again every 100 steps (a machine's speed changes as other work comes and goes)
            double last = 0.0;
            if (root) {
                const double left = budget.seconds - std::chrono::duration<double>(Clock::now() - budget.start).count() - reserve;
                last = static_cast<double>(trainer.step_count()) + std::floor(std::max(0.0, left) / run.seconds_per_step());
            }
            if (a.ranks) a.ranks->sum(&last, 1);  // rank 0's estimate for every rank
            trainer.set_lr_decay_steps(std::max({static_cast<long>(last), trainer.step_count() + 1, trainer.options().warmup_steps + 1}));
            if (root && run.taken == 100) {
                std::fprintf(stderr, "learning rate: cosine decay to %g at step %ld (predicted again every 100 steps)\n",
                             trainer.options().final_lr, trainer.options().lr_decay_steps);
            }
        }
        // the smoothed loss: an exponential average over about 50 steps of this run, divided by
        // 1 - 0.98^n as Adam corrects its moments, so the first steps are not pulled towards 0
        loss_average = 0.98 * loss_average + 0.02 * stats.loss;
        run.smoothed = loss_average / (1.0 - std::pow(0.98, static_cast<double>(run.taken)));
        if (root) {
            loss_csv << trainer.step_count() << ',' << stats.loss << ',' << run.smoothed << ',' << stats.lr << ','
                     << stats.grad_norm << ',' << std::chrono::duration<double>(Clock::now() - train_start).count() << '\n';
        }
        const double now = std::chrono::duration<double>(Clock::now() - budget.start).count();
        double fraction, left;
        if (budget.steps > 0) {
            fraction = static_cast<double>(trainer.step_count() - first_step) / static_cast<double>(budget.steps - first_step);
            left = run.seconds_per_step() * static_cast<double>(budget.steps - trainer.step_count());
        } else {
            fraction = now / budget.seconds;
            left = budget.seconds - now;
        }
        if (root) bar.update(trainer.step_count(), run.smoothed, static_cast<double>(a.batch_size) / run.seconds_per_step(), fraction, left);
        if (root && a.checkpoint_every > 0 && trainer.step_count() % a.checkpoint_every == 0) {
            loss_csv.flush();
            save();
            run.last_checkpoint = trainer.step_count();
        }
    }
    if (root) bar.finish();
    run.seconds = std::chrono::duration<double>(Clock::now() - train_start).count();
    return run;
}

/// loss.png from loss.csv, by gnuplot when it is there.
void draw_loss_curve(const Arguments& a, const std::string& loss_path) {
    const std::string gp = a.plots_dir + "/loss.gp";
    const std::string command = "gnuplot -e \"data='" + loss_path + "'; out='" + a.out_dir + "/loss.png'\" '" + gp + "'";
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
        std::printf("gnuplot is not installed: no loss.png (apt-get install gnuplot-nox)\n");
    } else if (std::system(command.c_str()) != 0) {
        std::printf("gnuplot failed: %s\n", command.c_str());
    }
}

/// metrics.json's account of the training, before the report's figures join it.
nlohmann::ordered_json training_metrics(const Arguments& a, Index parameters,
                                        const diffuse::optim::TrainerOptions& options, long step, Index n_train,
                                        const TrainingRun& run, const std::string& checkpoint_path) {
    const double images_per_second =
        run.taken > 0 ? static_cast<double>(run.taken * a.batch_size) / run.step_seconds : 0.0;
    nlohmann::ordered_json metrics;
    metrics["checkpoint"] = checkpoint_path;
    metrics["weights"] = "ema";
    metrics["step"] = step;
    metrics["images_seen"] = step * a.batch_size;
    metrics["training"] = {{"config", a.config_name},
                           {"conditioning", a.prompts ? "prompts (captions drawn per image per step)" : "class labels"},
                           {"parameters", parameters},
                           {"batch_size", a.batch_size},
                           {"lr", options.adam.lr},
                           {"adam_beta2", options.adam.beta2},
                           {"label_dropout", options.label_dropout},
                           {"warmup_steps", options.warmup_steps},
                           {"lr_schedule", a.lr_schedule},
                           {"lr_decay_steps", options.lr_decay_steps},
                           {"final_lr", options.final_lr},
                           {"ema_decay", options.ema_decay},
                           {"loss", diffuse::to_string(options.loss)},
                           {"variance", diffuse::to_string(options.variance)},
                           {"prediction", diffuse::to_string(options.prediction)},
                           {"min_snr_gamma", options.min_snr_gamma},
                           {"vlb_lambda", options.vlb_lambda},
                           {"timestep_sampler", diffuse::optim::to_string(options.timestep_sampling)},
                           {"schedule", a.schedule},
                           {"timesteps", a.timesteps},
                           {"training_images", n_train},
                           {"threads", diffuse::num_threads()},
                           {"seconds_this_run", run.seconds},
                           {"seconds_per_step", run.seconds_per_step()},
                           {"images_per_second", images_per_second},
                           {"smoothed_loss", run.smoothed}};
    if (a.evaluate) {
        const auto header = examples::file_metadata(a.classifier_path);
        const auto accuracy = header.find("diffuse.classifier.test_accuracy");
        metrics["classifier"] = {{"path", a.classifier_path},
                                 {"test_accuracy", accuracy == header.end() ? nlohmann::ordered_json()
                                                                            : nlohmann::ordered_json(std::stod(accuracy->second))}};
    }
    return metrics;
}

/// The data-parallel run's figures for metrics.json: ranks, threads, and what summing the gradients
/// cost per step (the traffic of an MPI run's sums; zero in one process).
nlohmann::ordered_json data_parallel_figures(const Arguments& a, Index parameters, const TrainingRun& run) {
    double bytes = 0.0, seconds = 0.0;
#ifdef DIFFUSE_EXAMPLES_MPI
    if (const auto* mpi = dynamic_cast<const diffuse::MpiCommunicator*>(a.ranks); mpi && mpi->size() > 1 && run.taken > 0) {
        seconds = mpi->traffic().seconds / static_cast<double>(run.taken);  // the gradients' and the loss's sums
        bytes = static_cast<double>(parameters) * sizeof(float);
    }
#endif
    (void)parameters;
    return {{"ranks", rank_count(a)},
            {"threads_per_rank", diffuse::num_threads()},
            {"gradient_bytes_per_step", bytes},
            {"sum_seconds_per_step", seconds},
            {"what", "gradients summed over the ranks in rank order (MPI_Alltoallv, then MPI_Allgatherv), once per step; "
                     "seconds include waiting for the slowest rank"}};
}

}  // namespace

int main(int argc, char** argv) {
    diffuse::keep_freed_memory();
    CLI::App app{"Trains the reference U-Net (class-conditional, classifier-free guidance) on Fashion-MNIST for a "
                 "wall-clock budget or a number of steps, then writes samples, the denoising process, an inpainting "
                 "demo, the loss curve and metrics.json into --out.",
                 "diffuse_train"};
    Arguments a;
    add_options(app, a);

#ifdef DIFFUSE_EXAMPLES_MPI
    // Data-parallel when an MPI launcher started this process; alone otherwise, without MPI.
    std::optional<diffuse::MpiSession> mpi;
    std::optional<diffuse::MpiCommunicator> world;
    if (diffuse::launched_by_mpi()) {
        mpi.emplace(argc, argv);
        world.emplace();
        a.ranks = &*world;
    }
#endif
    const int code = examples::run(app, argc, argv, [&] {
        const auto run_start = Clock::now();
        const int ranks = rank_count(a);
        if (a.threads > 0) {
            diffuse::set_num_threads(a.threads);
        } else if (ranks > 1 && std::getenv("DIFFUSE_NUM_THREADS") == nullptr) {
#ifdef DIFFUSE_EXAMPLES_MPI
            const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
            diffuse::set_num_threads(std::max(1, cores / diffuse::local_rank_count()));
#endif
        }
        if (!is_root(a) && !std::freopen("/dev/null", "w", stdout)) {  // rank 0 alone reports
            throw std::runtime_error("cannot silence the standard output of rank " + std::to_string(a.ranks->rank()));
        }
        if (a.classifier_path.empty()) a.classifier_path = examples::default_classifier_path(a.out_dir);
        std::filesystem::create_directories(a.out_dir);
        const std::string checkpoint_path = a.out_dir + "/checkpoint.safetensors";
        const diffuse::DataCursor cursor = a.resume.empty() ? diffuse::DataCursor{} : take_settings_from_checkpoint(a);
        if (a.batch_size < 1) diffuse::detail::throw_invalid("diffuse_train", "--batch-size", a.batch_size, ">= 1");
        if (a.batch_size % ranks != 0) {
            diffuse::detail::throw_invalid("diffuse_train", "--batch-size", a.batch_size,
                                           "a multiple of the " + std::to_string(ranks) + " ranks: each takes an equal share of a batch");
        }
        a.evaluate = a.evaluate && is_root(a);  // the classifier, the scores and the pictures are rank 0's
        if (a.prompts && !a.autoencoder_path.empty()) {
            diffuse::detail::throw_invalid("diffuse_train", "--prompts with --autoencoder", a.autoencoder_path,
                                           "one of them: a prompt-conditioned latent model is not built yet");
        }
        if (a.super_resolution.side != 0 && (a.prompts || !a.autoencoder_path.empty())) {
            diffuse::detail::throw_invalid("diffuse_train", "--super-resolution with " + std::string(a.prompts ? "--prompts" : "--autoencoder"),
                                           a.super_resolution.side, "one of them: a super-resolution model of pixels is told no class or prompt");
        }
        if (a.super_resolution.side < 0 || a.super_resolution.images < 1) {
            diffuse::detail::throw_invalid("diffuse_train", a.super_resolution.side < 0 ? "--super-resolution" : "--sr-images",
                                           a.super_resolution.side < 0 ? a.super_resolution.side : a.super_resolution.images,
                                           a.super_resolution.side < 0 ? "a low-resolution side, or 0 for off" : "at least 1");
        }
        if (!(a.minutes > 0.0) && a.steps <= 0) diffuse::detail::throw_invalid("diffuse_train", "--minutes", a.minutes, "> 0, or --steps");
        if (a.resume.empty() && !a.autoencoder_path.empty() && a.loss != "simple") {
            diffuse::detail::throw_invalid("diffuse_train", "--loss with --autoencoder", a.loss,
                                           "simple: the bound's decoder term is a likelihood of 8-bit pixels, not of latents");
        }

        // The data.
        const examples::Splits splits = examples::read_splits_or_exit(a.data_dir, "diffuse_train");
        const examples::LabelledImages& train_data = splits.train;
        const examples::LabelledImages& test = splits.test;
        const Index n_train = a.max_images > 0 ? std::min(a.max_images, train_data.images.count) : train_data.images.count;
        const Index n_test = std::min(a.test_images, test.images.count);
        examples::ImageSet test_set = examples::first_images(test, n_test);

        // The classifier first, so that training it (once) does not count against the budget.
        examples::eval::Classifier<float> classifier(examples::eval::ClassifierConfig::fashion_mnist());
        const auto classifier_start = Clock::now();
        const bool classifier_missing = a.evaluate && !std::filesystem::exists(a.classifier_path);
        const diffuse::Tensor4<float> train_x = diffuse::images_to_tensor<float>(train_data.images, 0, n_train);  // [N, 1, 28, 28]
        const Index sr_side = a.super_resolution.side;
        if (sr_side > 0 && (train_x.dimension(2) % sr_side != 0 || train_x.dimension(3) != train_x.dimension(2))) {
            diffuse::detail::throw_invalid("diffuse_train", "--super-resolution", sr_side,
                                           "a side that the square images' " + std::to_string(train_x.dimension(2)) +
                                               " is a whole multiple of (for 28: 7 or 14)");
        }
        if (a.evaluate) {
            examples::load_or_train_classifier(a.classifier_path, classifier, train_x,
                                               std::vector<int>(train_data.labels.begin(), train_data.labels.begin() + n_train),
                                               test_set.x, test_set.y, a.classifier_epochs);
        }

        // Latent diffusion: the autoencoder, and the training images' latents, encoded once (in the budget).
        examples::Latent loaded;
        diffuse::Tensor4<float> train_latents;  // [N, z, H/f, W/f], times the scale factor
        double encode_seconds = 0.0;
        if (!a.autoencoder_path.empty()) loaded = examples::load_autoencoder(a.autoencoder_path);
        diffuse::LatentSpace<float>* const latent = loaded.space.get();  // null: pixels
        const diffuse::LatentReference& latent_reference = loaded.reference;
        if (latent) {
            if (latent_reference.config.image_size != train_x.dimension(2) || latent_reference.config.in_channels != train_x.dimension(1)) {
                diffuse::detail::throw_invalid("diffuse_train", "--autoencoder", a.autoencoder_path,
                                               "an autoencoder of " + std::to_string(train_x.dimension(1)) + "-channel " +
                                                   std::to_string(train_x.dimension(2)) + "x" + std::to_string(train_x.dimension(3)) +
                                                   " images, the data's (it takes " + std::to_string(latent_reference.config.image_size) + "x" +
                                                   std::to_string(latent_reference.config.image_size) + ")");
            }
            const auto encode_start = Clock::now();
            train_latents = diffuse::Tensor4<float>(n_train, latent->latent_channels(), latent->latent_size(), latent->latent_size());
            const Index chunk = 1000;
            examples::Phase phase("encoding the training images", n_train, 1, (n_train + chunk - 1) / chunk, a.log_seconds);
            for (Index first = 0; first < n_train; first += chunk) {
                const Index m = std::min(chunk, n_train - first);
                diffuse::batch_assign(train_latents, first, latent->encode(diffuse::batch_slice(train_x, first, m),
                    diffuse::derive_seed(a.seed, 0x6c6174656e74ULL + static_cast<std::uint64_t>(first))));
                phase.step(m);
            }
            phase.finish();
            loaded.reference.clip_range = diffuse::latent_clip_range(train_latents);
            encode_seconds = examples::seconds_since(encode_start);
        }

        // The model and its trainer: run_model trains either kind of model and writes its report.
        const diffuse::NoiseSchedule<float> noise_schedule(diffuse::make_betas(a.schedule, a.timesteps));
        const diffuse::optim::TrainerOptions options = trainer_options(a);
        if (a.report.sampler.ddpm_variance.empty() || options.variance == diffuse::ModelVariance::learned_range) {
            a.report.sampler.model_variance = options.variance;  // the report samples the model as it was trained
        }
        a.report.sampler.prediction = options.prediction;
        const auto run_model = [&](auto& model, auto&& conditioning_of, const std::map<std::string, std::string>& model_metadata,
                                   auto&& make_ema_model, auto&& write_figures) {
            using Model = std::decay_t<decltype(model)>;
            diffuse::optim::Trainer<Model> trainer(model, noise_schedule, options);
            if (!a.resume.empty()) diffuse::load_checkpoint(a.resume, trainer);
            if (ranks > 1) trainer.set_communicator(*a.ranks);
            const long first_step = trainer.step_count();
            if (!a.resume.empty() && cursor.epoch * static_cast<std::uint64_t>(n_train) + static_cast<std::uint64_t>(cursor.position) !=
                                         static_cast<std::uint64_t>(first_step * a.batch_size)) {
                throw std::runtime_error("\"" + a.resume + "\": the data position (epoch " + std::to_string(cursor.epoch) +
                                         ", image " + std::to_string(cursor.position) + ") does not match step " +
                                         std::to_string(first_step) + " at batch " + std::to_string(a.batch_size) + " of " +
                                         std::to_string(n_train) + " images");
            }
            examples::Batches batches(latent ? train_latents : train_x, train_data.labels, n_train, a.seed, cursor);

            char lr_schedule_text[64] = "";
            if (a.lr_schedule == "cosine") std::snprintf(lr_schedule_text, sizeof lr_schedule_text, ", then cosine to %g", trainer.options().final_lr);
            std::string levels;  // channels per level, outermost first
            for (const Index m : model.config().channel_mult) {
                levels += (levels.empty() ? "" : ",") + std::to_string(m * model.config().model_channels);
            }
            std::printf("diffuse_train: U-Net \"%s\" (channels %s; ResBlocks per level: %lld down, %lld up), %lld "
                        "parameters, %s; %lld training images from %s; %s schedule, T = %d; batch %lld, lr %g "
                        "(warm-up %ld%s), EMA %g; %d threads%s\n",
                        a.config_name.c_str(), levels.c_str(), static_cast<long long>(model.config().num_res_blocks),
                        static_cast<long long>(model.config().num_res_blocks + 1),
                        static_cast<long long>(diffuse::nn::parameter_count(model)),
                        a.prompts ? "prompt-conditioned (text encoder and cross-attention)"
                        : sr_side > 0 ? ("super-resolution from " + std::to_string(sr_side) + "x" + std::to_string(sr_side)).c_str()
                                      : (std::to_string(model.config().num_classes) + " classes").c_str(),
                        static_cast<long long>(n_train), a.data_dir.c_str(), a.schedule.c_str(), a.timesteps,
                        static_cast<long long>(a.batch_size), options.adam.lr, options.warmup_steps,
                        lr_schedule_text,
                        options.ema_decay,
                        diffuse::num_threads(),
                        ranks > 1 ? (" on each of " + std::to_string(ranks) + " ranks (data-parallel, " +
                                     std::to_string(a.batch_size / ranks) + " images each per step)").c_str()
                                  : "");
            if (latent) {
                std::printf("latent diffusion: %lldx%lldx%lld latents of %s (scale factor %.5f), encoded in %.1f s; x0 "
                            "clipped to +-%.3f\n",
                            static_cast<long long>(latent->latent_channels()), static_cast<long long>(latent->latent_size()),
                            static_cast<long long>(latent->latent_size()), latent_reference.autoencoder.c_str(),
                            latent_reference.scale_factor, encode_seconds, latent_reference.clip_range);
            }
            if (!a.resume.empty()) std::printf("resumed from %s at step %ld\n", a.resume.c_str(), first_step);
            if (a.steps > 0) {
                std::printf("budget: until step %ld\n", a.steps);
            } else {
                std::printf("budget: %.1f minutes in all, pictures and evaluation included\n", a.minutes);
            }
            std::fflush(stdout);

            const auto save = [&] {
                std::map<std::string, std::string> m = diffuse::schedule_metadata(noise_schedule, a.schedule);
                m["diffuse_train.config"] = a.config_name;
                m["diffuse_train.batch_size"] = std::to_string(a.batch_size);
                m["diffuse_train.max_images"] = std::to_string(a.max_images);
                m["diffuse_train.seed"] = std::to_string(a.seed);
                m["diffuse_train.lr_schedule"] = a.lr_schedule;
                m["diffuse_train.lr_decay_steps"] = std::to_string(a.lr_decay_steps);
                m["diffuse_train.epoch"] = std::to_string(batches.cursor().epoch);
                m["diffuse_train.position"] = std::to_string(batches.cursor().position);
                m["diffuse_train.data_dir"] = a.data_dir;
                m["diffuse_train.ranks"] = std::to_string(ranks);  // for the record: a resume may use another count
                if (latent) m.merge(diffuse::latent_metadata(latent_reference));
                if (sr_side > 0) m[examples::super_resolution_key] = std::to_string(sr_side);
                for (const auto& [key, value] : model_metadata) m[key] = value;
                diffuse::save_checkpoint(checkpoint_path, trainer, m);
            };

            // Training. The budget runs from the start, less the time a missing classifier took to train,
            // and keeps time for the pictures and evaluation: their forward passes at the training's cost.
            const std::string loss_path = a.out_dir + "/loss.csv";
            std::ofstream loss_csv;  // rank 0's
            if (is_root(a)) {
                if (first_step == 0) {
                    std::ofstream(loss_path, std::ios::trunc) << "step,loss,loss_smoothed,lr,grad_norm,seconds\n";
                } else {
                    truncate_loss_csv(loss_path, first_step);
                }
                loss_csv.open(loss_path, std::ios::app);
            }
            // what the report will guide with, counted in its cost: the model kind's default unless given
            examples::apply_guidance_defaults(
                a.report.guidance_scale, a.report.guidance_sigmas,
                examples::class_model_of_pixels(model.config(), a.prompts, !a.autoencoder_path.empty()));
            Budget budget;
            budget.steps = a.steps;
            budget.start = classifier_missing ? run_start + (Clock::now() - classifier_start) : run_start;
            budget.seconds = a.minutes * 60.0;
            budget.report_forwards =
                (sr_side > 0 ? examples::super_resolution_forward_count(a.report, a.super_resolution)
                             : examples::report_forward_count(a.report, noise_schedule, a.prompts || model.config().num_classes > 0)) +
                (a.prompts ? examples::prompt_report_forward_count(a.report, noise_schedule, a.prompt_report) : 0.0) +
                (a.evaluate ? static_cast<double>(n_test) * 0.05 : 0.0);  // classifier features, ~1/20 of a U-Net forward
            const TrainingRun run = train(trainer, batches, a, budget, loss_csv, conditioning_of, save);
            loss_csv.close();
            if (run.stopped_non_finite) {
                std::cerr << "diffuse_train: the last good checkpoint is "
                          << (std::filesystem::exists(checkpoint_path) ? checkpoint_path + " (step " + std::to_string(run.last_checkpoint) + ")"
                                                                       : std::string("none (no checkpoint was written yet)"))
                          << "; lower --lr or raise --warmup and --resume from it\n";
                std::exit(1);
            }
            if (!is_root(a)) return;  // rank 0 writes the checkpoint and the report
            save();
            std::printf("trained steps %ld to %ld (%ld steps, %lld images) in %.0f s: %.2f s/step, %.1f images/s; "
                        "smoothed loss %.4f\nwrote %s\n",
                        first_step, trainer.step_count(), run.taken, static_cast<long long>(run.taken * a.batch_size),
                        run.seconds, run.seconds_per_step(),
                        run.taken > 0 ? static_cast<double>(run.taken * a.batch_size) / run.step_seconds : 0.0, run.smoothed,
                        checkpoint_path.c_str());
            const nlohmann::ordered_json parallel = data_parallel_figures(a, diffuse::nn::parameter_count(model), run);
            if (ranks > 1) {
                std::printf("data-parallel: %d ranks of %d threads; gradients %.2f MB per step, summed over the ranks in "
                            "%.1f ms per step (%.1f%% of a step)\n",
                            ranks, diffuse::num_threads(), parallel["gradient_bytes_per_step"].get<double>() / 1e6,
                            1e3 * parallel["sum_seconds_per_step"].get<double>(),
                            100.0 * parallel["sum_seconds_per_step"].get<double>() / run.seconds_per_step());
            }
            draw_loss_curve(a, loss_path);

            // The pictures and figures, with the EMA's weights.
            const auto report_start = Clock::now();
            Model ema_model = make_ema_model();
            trainer.ema().copy_to(ema_model);
            a.report.seed = a.seed;
            a.report.evaluate = a.evaluate;
            a.report.log_seconds = a.log_seconds;
            const examples::ImageSet real = examples::first_images(train_data, a.report.per_class * 10);
            nlohmann::ordered_json metrics = training_metrics(a, diffuse::nn::parameter_count(model), trainer.options(), trainer.step_count(), n_train, run, checkpoint_path);
            metrics["training"]["dropout"] = model.config().dropout;
            metrics["training"]["model_channels"] = model.config().model_channels;
            metrics["training"]["channel_mult"] = model.config().channel_mult;
            metrics["training"]["num_res_blocks"] = model.config().num_res_blocks;
            metrics["training"]["data_parallel"] = parallel;
            const nlohmann::ordered_json figures = write_figures(ema_model, real);
            if (latent) {
                metrics["latent"] = {{"autoencoder", latent_reference.autoencoder},
                                     {"scale_factor", latent_reference.scale_factor},
                                     {"clip_range", latent_reference.clip_range},
                                     {"clip_range_what", "x0 predictions clipped to [-r, r]: the 0.9 quantile of |z_0| "
                                                         "over the training latents (latent_clip_range)"},
                                     {"latent_shape", {latent->latent_channels(), latent->latent_size(), latent->latent_size()}},
                                     {"encode_seconds", encode_seconds}};
            }
            for (const auto& [key, value] : figures.items()) metrics[key] = value;
            const double report_seconds = examples::seconds_since(report_start);
            metrics["report_seconds"] = report_seconds;
            metrics["report_seconds_predicted"] = budget.report_forwards * run.seconds_per_forward(a.batch_size);
            metrics["total_seconds"] = examples::seconds_since(run_start);
            examples::write_json(a.out_dir + "/metrics.json", metrics);

            std::printf("pictures and evaluation took %.0f s (%.0f s in all)\n", report_seconds, examples::seconds_since(run_start));
            if (sr_side > 0) {
                if (a.evaluate) std::printf("%s\n", examples::super_resolution_line(metrics).c_str());
                std::printf("wrote into %s: checkpoint.safetensors, loss.csv, loss.png, superres.png, metrics.json\n",
                            a.out_dir.c_str());
                return;
            }
            if (a.evaluate) std::printf("%s\n", examples::scores_line(metrics).c_str());
            if (a.evaluate && metrics.contains("prompt_adherence")) std::printf("%s\n", examples::adherence_line(metrics).c_str());
            std::printf("wrote into %s: checkpoint.safetensors, loss.csv, loss.png, samples_by_class.png, "
                        "samples_unconditional.png, denoising.png, inpainting.png, %smetrics.json\n",
                        a.out_dir.c_str(), a.prompts ? "prompts.png, " : "");
        };

        if (a.prompts) {
            // A text encoder and a U-Net with cross-attention at the attention resolutions, trained as one
            // model on captions drawn per image per step; the "no class" of guidance is the empty prompt.
            const diffuse::Tokenizer tokenizer = a.resume.empty() ? examples::caption_tokenizer() : diffuse::tokenizer_from_checkpoint(a.resume);
            const diffuse::TextEncoderConfig text = a.resume.empty() ? examples::caption_text_encoder(tokenizer)
                                                                     : diffuse::text_encoder_config_from_checkpoint(a.resume);
            const diffuse::UNetConfig unet = a.resume.empty() ? with_variance(prompt_model_config(a), a) : diffuse::config_from_checkpoint(a.resume);
            diffuse::PromptUNet<float> model(text, unet, a.seed);
            const examples::CaptionDrawer captions(train_x, train_data.labels, a.seed);
            a.prompt_report.thirds = captions.thirds();
            a.prompt_report.training_attributes = captions.attributes();
            a.prompt_report.training_labels.assign(train_data.labels.begin(), train_data.labels.begin() + n_train);
            if (a.prompt_report.prompts.empty()) a.prompt_report.prompts = examples::default_figure_prompts();
            run_model(
                model,
                [&](const std::vector<int>&, const std::vector<Index>& indices, long step) {
                    diffuse::Conditioning<float> c;
                    c.prompt = tokenizer.batch(captions.draw(indices, step));
                    return c;
                },
                diffuse::tokenizer_metadata(tokenizer), [&] { return diffuse::PromptUNet<float>(text, model.config(), a.seed); },
                [&](diffuse::PromptUNet<float>& ema_model, const examples::ImageSet& real) {
                    return examples::write_prompt_report(ema_model, tokenizer, noise_schedule, test_set, real,
                                                         a.evaluate ? &classifier : nullptr, a.out_dir, a.report, a.prompt_report);
                });
        } else if (sr_side > 0) {
            // Super-resolution (SR3): an unconditional U-Net told each image's low-resolution version,
            // bicubic-upsampled back to the full size, through one more input channel.
            diffuse::UNetConfig config = model_config(a);
            config.num_classes = 0;
            config.concat_channels = config.in_channels;
            config = with_variance(config, a);
            diffuse::UNet<float> model(a.resume.empty() ? config : diffuse::config_from_checkpoint(a.resume), a.seed);
            const Index real_n = std::min(a.super_resolution.images, n_train);
            run_model(
                model,
                [&](const std::vector<int>&, const std::vector<Index>& indices, long) {
                    diffuse::Tensor4<float> x(static_cast<Index>(indices.size()), train_x.dimension(1), train_x.dimension(2),
                                              train_x.dimension(3));  // [B, 1, 28, 28], the batch's images
                    for (std::size_t i = 0; i < indices.size(); ++i) examples::copy_images(train_x, indices[i], 1, x, static_cast<Index>(i));
                    diffuse::Conditioning<float> c;
                    c.concat = diffuse::upsampled_low_resolution(x, sr_side);
                    return c;
                },
                {}, [&] { return diffuse::UNet<float>(model.config(), a.seed); },
                [&](diffuse::UNet<float>& ema_model, const examples::ImageSet&) {
                    return examples::write_super_resolution_report(ema_model, noise_schedule, test_set,
                                                                   diffuse::batch_slice(train_x, 0, real_n),
                                                                   a.evaluate ? &classifier : nullptr, a.out_dir, a.report,
                                                                   a.super_resolution);
                });
        } else {
            diffuse::UNet<float> model(!a.resume.empty() ? diffuse::config_from_checkpoint(a.resume)
                                       : latent ? with_variance(diffuse::latent_unet_config(class_model_config(a, true), latent_reference.config), a)
                                                : with_variance(class_model_config(a, false), a),
                                       a.seed);
            if (latent) diffuse::check_latent_unet(model.config(), latent_reference.config);
            run_model(
                model,
                [](const std::vector<int>& labels, const std::vector<Index>&, long) {
                    diffuse::Conditioning<float> c;
                    c.labels = labels;
                    return c;
                },
                {}, [&] { return diffuse::UNet<float>(model.config(), a.seed); },
                [&](diffuse::UNet<float>& ema_model, const examples::ImageSet& real) {
                    return examples::write_report(ema_model, noise_schedule, test_set, real, a.evaluate ? &classifier : nullptr,
                                                  a.out_dir, a.report, latent, latent_reference.clip_range);
                });
        }
    });
#ifdef DIFFUSE_EXAMPLES_MPI
    // an error on one rank ends them all (its message is printed above); no rank waits for it
    if (world && world->size() > 1 && code != 0) diffuse::MpiSession::abort_job("diffuse_train: stopped", code);
#endif
    return code;
}
