#pragma once
// What the example trainer shows at its end and diffuse_evaluate shows for any checkpoint: the
// pictures (samples by class, unconditional samples, the denoising process, inpainting) and the
// figures that say whether the model learned (metrics.json), each phase with its progress on stderr.
// Not part of the library; needs stb (png_grid.hpp), zlib (the IDX reader) and nlohmann-json.
// Declared here, defined in report.cpp, which is compiled once (the diffuse_examples_report library)
// for the three programs that use it.
//
// Sampling:
//   - class-conditional samples use classifier-free guidance, eps = eps_u + s (eps_c - eps_u): s = 1 is
//     the conditional model alone, s = 0 the unconditional one, s > 1 sharper classes, less variety;
//   - "unconditional" samples give the model the "no class" label (index num_classes), which it
//     learned from the 10% of training batches whose labels were dropped.
// Samplers: "ddpm" (ancestral, on the schedule respaced to `steps` timesteps), "ddim" (eta = 0),
// "dpm++2m" (DPM-Solver++(2M)), "euler", "euler_a" and "heun" (Karras et al.'s, in sigma space), over
// `steps` timesteps of trailing spacing (which starts at t = T - 1) or, with --spacing karras, at
// Karras et al.'s noise levels (rho = 7).

#include "common/captions.hpp"
#include "common/classifier.hpp"
#include "common/dataset.hpp"
#include "common/progress.hpp"

#include <CLI/CLI.hpp>

#include <diffuse/core/conditioning.hpp>
#include <diffuse/core/tensor.hpp>
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/latent_diffusion.hpp>
#include <diffuse/models/prompt_unet.hpp>
#include <diffuse/models/text_encoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/process/thresholding.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/samplers/options.hpp>
#include <diffuse/schedule/named.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

using diffuse::Index;

inline double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- the diffusion process a checkpoint was trained with -------------------------------------------

/// The noise schedule a diffuse_train checkpoint was trained on and its name: the library's
/// diffuse.schedule entry (diffuse::schedule_from_checkpoint), or in a file an earlier diffuse_train
/// wrote, its diffuse_train.schedule and diffuse_train.timesteps. Sampling and evaluation rebuild the
/// same tables from the file alone.
diffuse::StoredSchedule checkpoint_schedule(const std::map<std::string, std::string>& metadata, const std::string& path);

/// The metadata strings of a safetensors file (its header only is read).
std::map<std::string, std::string> file_metadata(const std::string& path);

// ---- latent diffusion ----------------------------------------------------------------------------------

/// An autoencoder loaded from its weights file, with its scale factor: the latent space of a model.
struct Latent {
    diffuse::LatentReference reference;                    // the file (absolute), its configuration, its scale factor
    std::unique_ptr<diffuse::Autoencoder<float>> autoencoder;
    std::unique_ptr<diffuse::LatentSpace<float>> space;     // null: a model of pixels
};

/// Loads an autoencoder weights file (diffuse_train_autoencoder's autoencoder.safetensors).
Latent load_autoencoder(const std::string& path);

/// The latent space a checkpoint's U-Net works in: none (space null) for a model of pixels, else its
/// autoencoder, from `autoencoder_path` if given, else from where the checkpoint says it was, checked
/// against the configuration and scale factor the checkpoint stored and against the U-Net. An
/// autoencoder given for a pixel model's checkpoint is refused (`program` names the caller).
Latent checkpoint_latent(const std::string& checkpoint, const std::string& autoencoder_path,
                         const diffuse::UNetConfig& unet, const char* program);

// ---- the model of a checkpoint -------------------------------------------------------------------------

/// The model a diffuse_train checkpoint holds: a U-Net (class-conditional, unconditional or of latents)
/// or a prompt model (diffuse_train --prompts), with its weights, the EMA's where asked and the file
/// has them.
struct CheckpointModel {
    std::unique_ptr<diffuse::UNet<float>> unet;                 // or null
    std::unique_ptr<diffuse::PromptUNet<float>> prompt_model;   // or null
    bool ema = false;                                           // the EMA's weights were loaded

    const diffuse::UNetConfig& config() const { return unet ? unet->config() : prompt_model->config(); }
};

/// Loads the model of `checkpoint`; `ema`: the EMA's weights of a training checkpoint (a weights file
/// has one set).
CheckpointModel load_checkpoint_model(const std::string& checkpoint, bool ema);

// ---- sampling ----------------------------------------------------------------------------------------

/// The model as the samplers call it, in evaluation mode (no dropout). For a class-conditional model
/// and labels in [0, K): guidance scale 1 calls it as it is, 0 replaces every label by "no class",
/// anything else wraps it in classifier-free guidance (one call on the doubled batch) at the timesteps
/// of `interval`.
diffuse::ModelFn<float> guided_model(diffuse::UNet<float>& model, double guidance_scale,
                                     diffuse::GuidanceInterval interval = {});

/// --guidance-interval SIGMA_LOW SIGMA_HIGH: guidance only where the noise level sigma_t is in
/// (SIGMA_LOW, SIGMA_HIGH]; `sigmas` stays empty without it (the model's default,
/// apply_guidance_defaults).
void add_guidance_interval_option(CLI::App& app, std::vector<double>& sigmas);

/// --guidance: the scale stays NaN without it (the model's default, apply_guidance_defaults).
void add_guidance_option(CLI::App& app, double& scale);

/// The guidance interval of a class-label model of pixels when --guidance-interval is not given:
/// (0, 5.42], no guidance at the first, noisiest steps (measured: docs/improved-ddpm.md#guidance-in-a-limited-interval-and-the-sampler).
inline const std::vector<double> class_model_guidance_sigmas = {0.0, 5.42};

/// Whether a model is told class labels and diffuses pixels: not a prompt model, not a latent one,
/// not one given a concatenated image (super-resolution).
inline bool class_model_of_pixels(const diffuse::UNetConfig& config, bool prompt_model, bool latent) {
    return !prompt_model && !latent && config.num_classes > 0 && config.concat_channels == 0;
}

/// The guidance scale of a class-label model of pixels when --guidance is not given: 2.5, the scale that
/// keeps 92% class agreement at the lowest Frechet distance (measured with the interval above:
/// docs/improved-ddpm.md#the-u-nets-levels); the rest 3 (a prompt model's class agreement, 0.82, has
/// no margin to give: docs/conditioning.md).
inline constexpr double class_model_guidance_scale = 2.5;
inline constexpr double other_model_guidance_scale = 3.0;


/// --guidance and --guidance-interval made the model's defaults where not given (a NaN scale, no
/// sigmas): for a class-label model of pixels class_model_guidance_scale in class_model_guidance_sigmas,
/// for the rest other_model_guidance_scale at every step (a prompt model lost class agreement and
/// Frechet distance with that interval; a latent model was not measured with it).
void apply_guidance_defaults(double& scale, std::vector<double>& sigmas, bool class_model_of_pixels);

/// Whether `sigmas` guide every step: none given, or (0, inf].
bool guides_every_step(const std::vector<double>& sigmas);

/// The timesteps of `schedule` that --guidance-interval's `sigmas` name; every timestep when empty.
diffuse::GuidanceInterval guidance_interval(const std::vector<double>& sigmas, const diffuse::NoiseSchedule<float>& schedule);

/// metrics.json's account of the interval: its sigmas and the timesteps they name, or "every step".
nlohmann::ordered_json guidance_interval_metrics(const std::vector<double>& sigmas, const diffuse::NoiseSchedule<float>& schedule);

struct SamplerChoice {
    std::string name = "dpm++2m";
    int steps = 20;
    // x0 predictions clipped to the data's [-1, 1], as DDPM's code samples (clip_denoised). Without it a
    // few-step sampler that starts at t = T - 1 of the cosine schedule, where sqrt(alphabar) ~ 5e-5, turns
    // the model's small eps error there into an x0 of +-1000 that it never recovers from.
    diffuse::Thresholding thresholding = diffuse::Thresholding::clip;
    double clip_range = 1.0;          // clip's bound: x0 in [-r, r]
    bool karras = false;              // --spacing karras: Karras et al.'s levels (rho = 7), else trailing spacing
    bool thresholding_given = false;  // --thresholding was on the command line
    bool clip_range_given = false;    // --clip-range was on the command line
    // the model's, from its checkpoint (for_checkpoint): what it predicts, and a learned variance
    // (2C output channels, [mean part, v]) or not
    diffuse::Prediction prediction = diffuse::Prediction::epsilon;
    diffuse::ModelVariance model_variance = diffuse::ModelVariance::fixed_small;
    std::string ddpm_variance = "";   // --ddpm-variance: DDPM's step variance; empty: the model's learned one, else fixed_small

    /// The sampler for the model of a checkpoint: its prediction (diffuse.trainer_options) and variance
    /// (2C output channels: learned).
    SamplerChoice for_checkpoint(const std::string& path) const;
    /// The variance the samplers are told (SamplerOptions::variance).
    diffuse::ModelVariance step_variance() const;
    /// The model as the samplers call it: without its variance channels when DDPM is asked for a fixed
    /// variance of a learned-variance model.
    diffuse::ModelFn<float> model_for(const diffuse::ModelFn<float>& model) const;
    /// Sets a sampler's options as this choice says: thresholding, clip range, prediction, variance.
    template <class Options>
    void apply(Options& options) const {
        options.thresholding = thresholding;
        options.clip_range = clip_range;
        options.prediction = prediction;
        options.variance = step_variance();
    }

    /// What a model of latents samples with: x0 clipped to the latents' range r (the checkpoint's
    /// diffuse.latent clip_range) instead of the images' [-1, 1], unless --thresholding or
    /// --clip-range said otherwise.
    SamplerChoice for_latents(double range) const {
        SamplerChoice out = *this;
        if (!thresholding_given) out.thresholding = diffuse::Thresholding::clip;
        if (!clip_range_given) out.clip_range = range;
        return out;
    }
};

/// metrics.json's account of a sampler choice: name, steps, thresholding, clip range and spacing.
nlohmann::ordered_json sampler_metrics(const SamplerChoice& sampler);

/// --thresholding {none, clip, dynamic} and --clip-range: what the samplers do to each x0 prediction.
void add_thresholding_option(CLI::App& app, SamplerChoice& sampler);

/// The timesteps, ascending, that the sampler's steps visit on `schedule`: trailing spacing (which
/// starts at t = T - 1), or Karras et al.'s levels with --spacing karras.
std::vector<int> visited_timesteps(const diffuse::NoiseSchedule<float>& schedule, const SamplerChoice& sampler);

/// --spacing {trailing, karras}: which timesteps the sampler visits.
void add_spacing_option(CLI::App& app, SamplerChoice& sampler);

/// --ddpm-variance {fixed_small, fixed_large, learned_range}: DDPM's step variance.
void add_ddpm_variance_option(CLI::App& app, SamplerChoice& sampler);

/// Samples of shape [N, C, H, W] from noise stream 0 of `seed`, told `conditioning` (class labels [N],
/// a concatenated image, ..., or nothing); `progress` is called after each of the sampler.steps steps.
diffuse::Samples<float> run_sampler(const diffuse::NoiseSchedule<float>& schedule,
                                    const diffuse::ModelFn<float>& model, const SamplerChoice& sampler,
                                    const diffuse::Shape4& shape, std::uint64_t seed,
                                    const diffuse::Conditioning<float>& conditioning, bool keep_intermediates = false,
                                    const diffuse::ProgressFn<float>& progress = {});

/// SDEdit (diffuse/samplers/sdedit.hpp): x0 [N, C, H, W] noised to strength s, then denoised by the
/// sampler's steps within [0, ceil(s T) - 1] toward `conditioning` (labels [N], ..., or nothing);
/// `progress` after each step.
diffuse::Samples<float> run_sdedit(const diffuse::NoiseSchedule<float>& schedule, const diffuse::ModelFn<float>& model,
                                   const SamplerChoice& sampler, const diffuse::Tensor4<float>& x0, double strength,
                                   std::uint64_t seed, const diffuse::Conditioning<float>& conditioning,
                                   const diffuse::ProgressFn<float>& progress = {});

/// A sampler's progress callback that counts each step as one model evaluation of `batch` images of
/// `phase`.
diffuse::ProgressFn<float> count_steps(Phase& phase, Index batch);

/// Copies images [first, first + count) of `from` into `to` at `at` (both [N, C, H, W]).
void copy_images(const diffuse::Tensor4<float>& from, Index first, Index count, diffuse::Tensor4<float>& to,
                 Index at);

// ---- the classifier that scores samples -------------------------------------------------------------

/// Loads the evaluation classifier's weights from `path`; if there is no such file, trains one on the
/// training images (as diffuse_train_classifier would, with `epochs` passes) and saves it there.
void load_or_train_classifier(const std::string& path, examples::eval::Classifier<float>& classifier,
                              const diffuse::Tensor4<float>& train_x, const std::vector<int>& train_y,
                              const diffuse::Tensor4<float>& test_x, const std::vector<int>& test_y,
                              int epochs);

// ---- pictures and figures ------------------------------------------------------------------------------

struct ReportOptions {
    SamplerChoice sampler = {"dpm++2m", 20};
    double guidance_scale = std::numeric_limits<double>::quiet_NaN();  // --guidance; NaN: the model's default
    std::vector<double> guidance_sigmas;  // --guidance-interval (sigma_low, sigma_high]; empty: the model's default
    std::uint64_t seed = 0;
    Index per_class = 6;          // class-conditional samples per class: the grid and the scores
    Index unconditional = 20;     // unconditional samples (the second grid)
    Index denoising_rows = 5;     // images shown from x_T to x_0
    Index denoising_columns = 11;
    Index inpaint_count = 6;      // test images completed
    int inpaint_steps = 25;       // RePaint over this many respaced steps
    int inpaint_jump = 5;
    int inpaint_resample = 3;
    Index bpd_images = 64;        // test images in the bits/dim estimate
    int bpd_stride = 50;          // KL terms in blocks of this many steps, one drawn per block and image
    bool bpd_tanh_cdf = false;    // the decoder term with Improved DDPM's tanh approximation of Phi
    Index chunk = 50;             // images per sampling batch (CFG doubles it)
    bool evaluate = true;         // the figures of metrics.json (needs the classifier)
    double log_seconds = 10.0;    // seconds between progress lines when stderr is not a terminal
};

/// The scores of metrics.json in one line, as diffuse_train and diffuse_evaluate print them.
std::string scores_line(const nlohmann::ordered_json& metrics);

/// The command-line options of the pictures and scores, shared by diffuse_train and diffuse_evaluate.
void add_report_options(CLI::App& app, ReportOptions& report);

/// Forward passes of one image through the U-Net that write_report will make: what the trainer
/// multiplies by its measured time per image-forward to know when to stop training.
double report_forward_count(const ReportOptions& o, const diffuse::NoiseSchedule<float>& schedule, bool conditional);

/// Images [N, 1, H, W] in [-1, 1] with their labels [N]: the test images a report scores against, or
/// the real training images of its floors.
struct ImageSet {
    diffuse::Tensor4<float> x;
    std::vector<int> y;
};

/// The first n images of `data` (all of them if it has fewer) and their labels.
inline ImageSet first_images(const LabelledImages& data, Index n) {
    const Index count = std::min(n, data.images.count);
    return {diffuse::images_to_tensor<float>(data.images, 0, count),
            std::vector<int>(data.labels.begin(), data.labels.begin() + count)};
}

/// Writes samples_by_class.png, samples_unconditional.png, denoising.png and inpainting.png into
/// out_dir and, when options.evaluate, returns the figures for metrics.json (class agreement, the
/// Frechet distance of classifier features, bits/dim on the test subset). `model` holds the weights
/// to sample with (the EMA's, typically); `classifier` may be null when !options.evaluate.
/// `real` are training images for the floors: the real-vs-test Frechet distance and the classifier's
/// agreement with their labels. With `latent`, the model is a latent diffusion model of its latents:
/// every sample is decoded before it is shown or scored, the inpainting completes the test images'
/// latents, the samplers clip x0 to [-latent_clip, latent_clip] (SamplerChoice::for_latents), and
/// there is no bits/dim (a bound on latents).
nlohmann::ordered_json write_report(diffuse::UNet<float>& model, const diffuse::NoiseSchedule<float>& schedule,
                                    const ImageSet& test, const ImageSet& real,
                                    examples::eval::Classifier<float>* classifier, const std::string& out_dir,
                                    const ReportOptions& o, diffuse::LatentSpace<float>* latent = nullptr,
                                    double latent_clip = 1.0);

/// What a prompt model's report adds to the class-conditional one.
struct PromptReportOptions {
    std::vector<std::string> prompts;  // prompts.png: a row per prompt
    Index per_prompt = 8;
    Index attribute_samples = 100;     // samples per attribute word (dark, light, narrow, wide), an equal share per class
    AttributeThirds thirds;            // the training images' attribute thirds per class (CaptionDrawer::thirds)
    std::vector<ImageAttributes> training_attributes;  // [N] of the training images, for the reference figures
    std::vector<int> training_labels;                  // [N]
};

/// Forward passes of one image through the U-Net that write_prompt_report makes beyond write_report's.
double prompt_report_forward_count(const ReportOptions& options, const diffuse::NoiseSchedule<float>& schedule,
                                   const PromptReportOptions& prompts);

/// The prompt-adherence figures of metrics.json in one line.
std::string adherence_line(const nlohmann::ordered_json& metrics);

/// The prompts of prompts.png by default: attribute pairs and synonyms.
inline std::vector<std::string> default_figure_prompts() {
    return {"a dark ankle boot", "a light ankle boot", "a narrow dress",  "a wide dress",
            "a dark t-shirt",    "a light t-shirt",    "a narrow bag",    "a wide bag",
            "a sneaker",         "a trainer",          "a dark coat",     "a light coat"};
}

/// The report of a prompt model (PromptUNet over pixels): write_report's pictures and scores with each
/// class asked for by its prompt "a <noun>" (class_prompts) and the empty prompt for "no class";
/// prompts.png, a row per prompt; and with options.evaluate, prompt_adherence (see report.cpp).
nlohmann::ordered_json write_prompt_report(diffuse::PromptUNet<float>& model, const diffuse::Tokenizer& tokenizer,
                                           const diffuse::NoiseSchedule<float>& schedule, const ImageSet& test,
                                           const ImageSet& real,
                                           examples::eval::Classifier<float>* classifier, const std::string& out_dir,
                                           const ReportOptions& options, const PromptReportOptions& prompts);

/// Writes `j` to `path` atomically (a temporary, then a rename).
void write_json(const std::string& path, const nlohmann::ordered_json& j);

}  // namespace examples
