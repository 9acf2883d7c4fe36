// The example programs' report (report.hpp): sampler choice, the evaluation classifier, pictures
// and figures. One translation unit, so that the samplers, the bound and the metrics are compiled
// once for diffuse_train, diffuse_sample and diffuse_evaluate.

#include "common/report.hpp"

#include "common/classifier_metrics.hpp"
#include "common/frechet.hpp"
#include "common/png_grid.hpp"
#include "common/prompts.hpp"
#include "common/train_classifier.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/io/atomic_file.hpp>
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/io/safetensors.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/process/vlb.hpp>
#include <diffuse/samplers/ddim.hpp>
#include <diffuse/samplers/ddpm.hpp>
#include <diffuse/samplers/dpm_solver.hpp>
#include <diffuse/samplers/guidance.hpp>
#include <diffuse/samplers/inpainting.hpp>
#include <diffuse/samplers/named.hpp>
#include <diffuse/samplers/sdedit.hpp>
#include <diffuse/schedule/karras.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <fstream>

namespace examples {

std::map<std::string, std::string> file_metadata(const std::string& path) {
    return diffuse::read_safetensors_header(path).metadata;
}

diffuse::StoredSchedule checkpoint_schedule(const std::map<std::string, std::string>& metadata, const std::string& path) {
    if (metadata.count("diffuse.schedule") > 0) return diffuse::schedule_from_checkpoint(path);
    const auto schedule = metadata.find("diffuse_train.schedule");
    const auto timesteps = metadata.find("diffuse_train.timesteps");
    if (schedule == metadata.end() || timesteps == metadata.end()) {
        throw std::runtime_error("\"" + path + "\" has no diffuse.schedule (nor an earlier diffuse_train's schedule) in its "
                                 "metadata; pass --schedule and --timesteps");
    }
    return {schedule->second, diffuse::make_betas(schedule->second, std::stoi(timesteps->second))};
}

Latent load_autoencoder(const std::string& path) {
    Latent latent;
    latent.reference.autoencoder = std::filesystem::absolute(path).lexically_normal().string();
    latent.reference.config = diffuse::autoencoder_config_from_checkpoint(path);
    latent.reference.scale_factor = diffuse::latent_scale_factor_from_checkpoint(path);
    latent.autoencoder = std::make_unique<diffuse::Autoencoder<float>>(latent.reference.config);
    diffuse::load_weights(path, *latent.autoencoder);
    latent.space = std::make_unique<diffuse::LatentSpace<float>>(*latent.autoencoder, latent.reference.scale_factor);
    return latent;
}

Latent checkpoint_latent(const std::string& checkpoint, const std::string& autoencoder_path,
                         const diffuse::UNetConfig& unet, const char* program) {
    const std::optional<diffuse::LatentReference> stored = diffuse::latent_reference_from_checkpoint(checkpoint);
    if (!stored) {
        if (!autoencoder_path.empty()) {
            diffuse::detail::throw_invalid(program, "--autoencoder", autoencoder_path,
                                           "none: \"" + checkpoint + "\" is a checkpoint of a pixel model");
        }
        return {};
    }
    const std::string path = autoencoder_path.empty() ? stored->autoencoder : autoencoder_path;
    if (!std::filesystem::exists(path)) {
        throw std::runtime_error("\"" + checkpoint + "\" is a latent diffusion model of the autoencoder " + path +
                                 ", which is not there; pass its weights file with --autoencoder");
    }
    diffuse::check_latent_autoencoder(*stored, path);
    Latent latent = load_autoencoder(path);
    latent.reference.clip_range = stored->clip_range;
    diffuse::check_latent_unet(unet, latent.reference.config);
    return latent;
}

CheckpointModel load_checkpoint_model(const std::string& checkpoint, bool ema) {
    const auto metadata = file_metadata(checkpoint);
    const auto kind = metadata.find("diffuse.checkpoint");
    CheckpointModel out;
    out.ema = ema && kind != metadata.end() && kind->second == "training_state";
    const diffuse::Weights which = out.ema ? diffuse::Weights::ema : diffuse::Weights::model;
    if (metadata.count("diffuse.text_encoder_config") != 0) {
        out.prompt_model = std::make_unique<diffuse::PromptUNet<float>>(diffuse::text_encoder_config_from_checkpoint(checkpoint),
                                                                        diffuse::config_from_checkpoint(checkpoint));
        diffuse::load_weights(checkpoint, *out.prompt_model, which);
        out.prompt_model->set_training(false);
    } else {
        out.unet = std::make_unique<diffuse::UNet<float>>(diffuse::config_from_checkpoint(checkpoint));
        diffuse::load_weights(checkpoint, *out.unet, which);
        out.unet->set_training(false);
    }
    return out;
}

diffuse::ModelFn<float> guided_model(diffuse::UNet<float>& model, double guidance_scale, diffuse::GuidanceInterval interval) {
    model.set_training(false);
    diffuse::ModelFn<float> plain = diffuse::model_fn<float>(model);
    const int classes = static_cast<int>(model.config().num_classes);
    if (classes == 0 || guidance_scale == 1.0) return plain;
    if (guidance_scale == 0.0) {
        return [plain, classes](const diffuse::Tensor4<float>& x, const diffuse::Timesteps& t, const std::vector<int>&) {
            return plain(x, t, std::vector<int>(static_cast<std::size_t>(x.dimension(0)), classes));
        };
    }
    return diffuse::classifier_free_guidance<float>(plain, classes, guidance_scale, interval);
}

void add_guidance_interval_option(CLI::App& app, std::vector<double>& sigmas) {
    app.add_option("--guidance-interval", sigmas, "Guidance only where the noise level sigma_t = sqrt((1 - alphabar_t) / "
                                                  "alphabar_t) is in (SIGMA_LOW, SIGMA_HIGH] (Kynkaanniemi et al. 2024), the "
                                                  "conditional model alone elsewhere (0 inf: every step) [default: 0 5.42 for a "
                                                  "class-label model of pixels, every step for the rest]")
        ->expected(2)->type_name("SIGMA_LOW SIGMA_HIGH");
}


void add_guidance_option(CLI::App& app, double& scale) {
    app.add_option("--guidance", scale, "Guidance scale s of eps_u + s (eps_c - eps_u): 1 conditional only, 0 "
                                        "unconditional [default: 2.5 for a class-label model of pixels, 3 for the rest]")
        ->check(CLI::Validator([](const std::string& text) {
            double value = 0.0;
            if (!CLI::detail::lexical_cast(text, value)) return std::string();  // the option's own parse says why
            return std::isfinite(value) ? std::string() : "expected a finite scale, got " + text;
        }, "FINITE"));
}

void apply_guidance_defaults(double& scale, std::vector<double>& sigmas, bool class_model_of_pixels) {
    if (std::isnan(scale)) scale = class_model_of_pixels ? class_model_guidance_scale : other_model_guidance_scale;
    if (sigmas.empty() && class_model_of_pixels) sigmas = class_model_guidance_sigmas;
}

bool guides_every_step(const std::vector<double>& sigmas) {
    return sigmas.empty() || (sigmas.at(0) == 0.0 && std::isinf(sigmas.at(1)) && sigmas.at(1) > 0.0);
}

diffuse::GuidanceInterval guidance_interval(const std::vector<double>& sigmas, const diffuse::NoiseSchedule<float>& schedule) {
    if (guides_every_step(sigmas)) return {};
    return diffuse::guidance_interval(schedule, sigmas.at(0), sigmas.at(1));
}

nlohmann::ordered_json guidance_interval_metrics(const std::vector<double>& sigmas, const diffuse::NoiseSchedule<float>& schedule) {
    if (guides_every_step(sigmas)) return "every step";
    const diffuse::GuidanceInterval interval = guidance_interval(sigmas, schedule);
    return {{"sigma_low", sigmas.at(0)}, {"sigma_high", sigmas.at(1)}, {"first_timestep", interval.first}, {"last_timestep", interval.last}};
}

nlohmann::ordered_json sampler_metrics(const SamplerChoice& sampler) {
    return {{"name", sampler.name},
            {"steps", sampler.steps},
            {"thresholding", diffuse::to_string(sampler.thresholding)},
            {"clip_range", sampler.clip_range},
            {"spacing", sampler.karras ? "karras (rho = 7)" : "trailing"},
            {"prediction", diffuse::to_string(sampler.prediction)},
            {"variance", diffuse::to_string(sampler.step_variance())}};
}

SamplerChoice SamplerChoice::for_checkpoint(const std::string& path) const {
    SamplerChoice out = *this;
    const auto metadata = file_metadata(path);
    const auto options = metadata.find("diffuse.trainer_options");
    const diffuse::UNetConfig c = diffuse::config_from_checkpoint(path);
    out.model_variance = c.out_channels == 2 * c.in_channels ? diffuse::ModelVariance::learned_range
                                                             : diffuse::ModelVariance::fixed_small;
    if (options != metadata.end()) {  // a training state: what it was trained with (fixed_large, say)
        const diffuse::optim::TrainerOptions trained = diffuse::trainer_options_from_json(options->second, path);
        out.prediction = trained.prediction;
        out.model_variance = trained.variance;
    }
    if (out.model_variance != diffuse::ModelVariance::learned_range && !out.ddpm_variance.empty() &&
        diffuse::model_variance_from_string(out.ddpm_variance) == diffuse::ModelVariance::learned_range) {
        throw std::invalid_argument("--ddpm-variance learned_range: the model of \"" + path +
                                    "\" has a fixed variance (" + std::to_string(c.out_channels) +
                                    " output channels for " + std::to_string(c.in_channels) + " data channels)");
    }
    return out;
}

diffuse::ModelVariance SamplerChoice::step_variance() const {
    if (!ddpm_variance.empty()) return diffuse::model_variance_from_string(ddpm_variance);
    return model_variance;
}

diffuse::ModelFn<float> SamplerChoice::model_for(const diffuse::ModelFn<float>& model) const {
    const bool learned_model = model_variance == diffuse::ModelVariance::learned_range;
    return learned_model && step_variance() != diffuse::ModelVariance::learned_range ? diffuse::without_variance(model)
                                                                                      : model;
}

void add_ddpm_variance_option(CLI::App& app, SamplerChoice& sampler) {
    app.add_option("--ddpm-variance", sampler.ddpm_variance,
                   "DDPM's step variance: fixed_small (beta_tilde), fixed_large (beta) or learned_range (a model trained "
                   "with a learned variance); default: the model's learned variance, else fixed_small")
        ->check(CLI::IsMember({"fixed_small", "fixed_large", "learned_range"}));
}

void add_thresholding_option(CLI::App& app, SamplerChoice& sampler) {
    const std::map<std::string, diffuse::Thresholding> kinds = {
        {"none", diffuse::Thresholding::none}, {"clip", diffuse::Thresholding::clip},
        {"dynamic", diffuse::Thresholding::dynamic}};
    app.add_option("--thresholding", sampler.thresholding,
                   "x0 predictions: clip to [-r, r] (--clip-range), dynamic (Imagen's, p = 0.995) or none")
        ->transform(CLI::CheckedTransformer(kinds, CLI::ignore_case))
        ->type_name("TEXT:{none,clip,dynamic}")
        ->default_str(std::string(diffuse::to_string(sampler.thresholding)))
        ->each([&sampler](const std::string&) { sampler.thresholding_given = true; });
    app.add_option("--clip-range", sampler.clip_range, "clip's bound r, x0 in [-r, r]")
        ->check(CLI::PositiveNumber)
        ->default_str("1, the images' range; a latent model's checkpoint says its latents' range")
        ->each([&sampler](const std::string&) { sampler.clip_range_given = true; });
}

namespace {

/// What every sampler of the examples is told: the seed, the labels, the choice's x0 thresholding and
/// the progress callback.
diffuse::SamplerOptions<float> sampler_options(const SamplerChoice& sampler, std::uint64_t seed,
                                               const diffuse::Conditioning<float>& conditioning,
                                               const diffuse::ProgressFn<float>& progress) {
    diffuse::SamplerOptions<float> options;
    options.seed = seed;
    options.conditioning = conditioning;
    sampler.apply(options);
    options.progress = progress;
    return options;
}

}  // namespace

diffuse::Samples<float> run_sampler(const diffuse::NoiseSchedule<float>& schedule,
                                    const diffuse::ModelFn<float>& model, const SamplerChoice& sampler,
                                    const diffuse::Shape4& shape, std::uint64_t seed,
                                    const diffuse::Conditioning<float>& conditioning, bool keep_intermediates,
                                    const diffuse::ProgressFn<float>& progress) {
    diffuse::SamplerOptions<float> options = sampler_options(sampler, seed, conditioning, progress);
    options.keep_intermediates = keep_intermediates;
    diffuse::StepSelection selection;
    selection.spacing = diffuse::Spacing::trailing;
    if (sampler.karras) selection.timesteps = visited_timesteps(schedule, sampler);
    return diffuse::sample(sampler.name, schedule, sampler.model_for(model), sampler.steps, shape, options, selection);
}

diffuse::Samples<float> run_sdedit(const diffuse::NoiseSchedule<float>& schedule, const diffuse::ModelFn<float>& model,
                                   const SamplerChoice& sampler, const diffuse::Tensor4<float>& x0, double strength,
                                   std::uint64_t seed, const diffuse::Conditioning<float>& conditioning,
                                   const diffuse::ProgressFn<float>& progress) {
    return diffuse::sdedit(sampler.name, schedule, sampler.model_for(model), sampler.steps, x0, strength,
                           sampler_options(sampler, seed, conditioning, progress));
}

std::vector<int> visited_timesteps(const diffuse::NoiseSchedule<float>& schedule, const SamplerChoice& sampler) {
    return sampler.karras ? diffuse::karras_timesteps(schedule, sampler.steps)
                          : diffuse::spaced_timesteps(schedule.num_timesteps(), sampler.steps, diffuse::Spacing::trailing);
}

void add_spacing_option(CLI::App& app, SamplerChoice& sampler) {
    app.add_option_function<std::string>(
           "--spacing", [&sampler](const std::string& spacing) { sampler.karras = spacing == "karras"; },
           "Timesteps the sampler visits: trailing (from T - 1, evenly) or karras (Karras et al.'s levels, rho = 7)")
        ->check(CLI::IsMember({"trailing", "karras"}))
        ->default_str("trailing");
}

diffuse::ProgressFn<float> count_steps(Phase& phase, Index batch) {
    return [&phase, batch](int, int, const diffuse::Tensor4<float>&) { phase.step(batch); };
}

void copy_images(const diffuse::Tensor4<float>& from, Index first, Index count, diffuse::Tensor4<float>& to,
                 Index at) {
    const Index per = from.dimension(1) * from.dimension(2) * from.dimension(3);
    std::copy_n(from.data() + first * per, count * per, to.data() + at * per);
}

void load_or_train_classifier(const std::string& path, examples::eval::Classifier<float>& classifier,
                              const diffuse::Tensor4<float>& train_x, const std::vector<int>& train_y,
                              const diffuse::Tensor4<float>& test_x, const std::vector<int>& test_y,
                              int epochs) {
    if (std::filesystem::exists(path)) {
        diffuse::load_weights(path, classifier);
        return;
    }
    std::fprintf(stderr,
                 "no classifier at %s: training one (%d epoch(s) over %lld images; diffuse_train_classifier does "
                 "the same once and for all)\n",
                 path.c_str(), epochs, static_cast<long long>(train_x.dimension(0)));
    examples::eval::ClassifierTrainingOptions options;
    options.epochs = epochs;
    options.warmup_steps = std::min<long>(100, std::max<long>(1, train_x.dimension(0) / options.batch_size));
    const auto start = std::chrono::steady_clock::now();
    examples::eval::train_classifier(classifier, train_x, train_y, options,
                                    [](const examples::eval::ClassifierTrainingProgress& p) {
                                        std::fprintf(stderr, "  classifier step %ld/%ld  loss %.4f  accuracy %.4f\n",
                                                     p.step, p.total_steps, p.loss, p.accuracy);
                                    });
    const double accuracy = examples::eval::accuracy(classifier.predict(test_x), test_y);
    std::fprintf(stderr, "classifier trained in %.0f s: test accuracy %.4f on %lld images\n", seconds_since(start),
                 accuracy, static_cast<long long>(test_x.dimension(0)));
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    std::map<std::string, std::string> metadata = {{"diffuse.model", "classifier"},
                                                   {"diffuse.classifier.test_accuracy", std::to_string(accuracy)}};
    diffuse::save_weights(path, classifier, metadata);
}

std::string scores_line(const nlohmann::ordered_json& metrics) {
    const auto& bpd = metrics["bits_per_dim"];
    char line[400];
    const int written = std::snprintf(line, sizeof line, "class agreement %.3f (%lld samples; real images: %.3f), Frechet distance %.3f (real images: %.3f)",
                                      metrics["class_agreement"]["value"].get<double>(),
                                      static_cast<long long>(metrics["class_agreement"]["samples"].get<Index>()),
                                      metrics["class_agreement"]["real_images"].get<double>(),
                                      metrics["frechet_distance"]["generated_vs_test"].get<double>(),
                                      metrics["frechet_distance"]["real_vs_test"].get<double>());
    if (bpd["value"].is_number() && written > 0 && static_cast<std::size_t>(written) < sizeof line) {
        std::snprintf(line + written, sizeof line - static_cast<std::size_t>(written),
                      ", %.3f +- %.3f bits/dim (%lld test images, blocks of %d steps)", bpd["value"].get<double>(),
                      bpd["standard_error"].get<double>(), static_cast<long long>(bpd["test_images"].get<Index>()),
                      bpd["stride"].get<int>());
    }
    return line;
}

void add_report_options(CLI::App& app, ReportOptions& report) {
    app.add_option("--sampler", report.sampler.name, "Sampler of the pictures and scores")
        ->check(CLI::IsMember(diffuse::sampler_names()))->capture_default_str();
    app.add_option("--sample-steps", report.sampler.steps, "Sampler steps")->capture_default_str();
    add_spacing_option(app, report.sampler);
    add_thresholding_option(app, report.sampler);
    add_ddpm_variance_option(app, report.sampler);
    app.add_flag("--bpd-tanh-cdf", report.bpd_tanh_cdf, "The bound's decoder term with Improved DDPM's tanh approximation "
                                                        "of the normal CDF (its papers' numbers), not the exact CDF");
    add_guidance_option(app, report.guidance_scale);
    add_guidance_interval_option(app, report.guidance_sigmas);
    app.add_option("--per-class", report.per_class, "Samples per class (the grid and the scores)")->capture_default_str();
    app.add_option("--unconditional", report.unconditional, "Unconditional samples (0: none)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--bpd-images", report.bpd_images, "Test images of the bits/dim estimate (0: none)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--bpd-stride", report.bpd_stride, "KL terms of the bound in blocks of this many steps, each image "
                                                      "evaluating one step drawn in each block (1: every term)")
        ->capture_default_str();
    app.add_option("--inpaint-steps", report.inpaint_steps, "RePaint steps of the inpainting demo (0: no demo)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
}

namespace {

/// Model calls per image of a guided sampling run: one per step, two at the steps whose timestep is
/// in --guidance-interval (with a guidance scale other than 1, or 0 for a class model).
double guided_sampling_calls(const ReportOptions& o, const diffuse::NoiseSchedule<float>& schedule, bool guided) {
    const double steps = o.sampler.steps;
    if (!guided) return steps;
    const diffuse::GuidanceInterval interval = guidance_interval(o.guidance_sigmas, schedule);
    const std::vector<int> visited = visited_timesteps(schedule, o.sampler);
    return steps + static_cast<double>(std::count_if(visited.begin(), visited.end(), [&](int t) { return interval.contains(t); }));
}

}  // namespace

double report_forward_count(const ReportOptions& o, const diffuse::NoiseSchedule<float>& schedule, bool conditional) {
    const bool guided = conditional && o.guidance_scale != 1.0 && o.guidance_scale != 0.0;
    const double inpaint_levels =
        o.inpaint_steps > 0 ? static_cast<double>(diffuse::repaint_levels(o.inpaint_steps, o.inpaint_jump, o.inpaint_resample).size())
                            : 0.0;
    double count = static_cast<double>(o.per_class) * 10.0 * guided_sampling_calls(o, schedule, guided);  // class grid
    count += static_cast<double>(o.unconditional) * o.sampler.steps;                                     // unconditional
    count += static_cast<double>(o.inpaint_count) * (guided ? 2.0 : 1.0) * inpaint_levels * 0.5;          // about half denoise
    if (o.evaluate) {
        count += static_cast<double>(o.bpd_images) * (std::ceil((schedule.num_timesteps() - 1.0) / o.bpd_stride) + 1.0);
    }
    return count;
}

double prompt_report_forward_count(const ReportOptions& o, const diffuse::NoiseSchedule<float>& schedule,
                                   const PromptReportOptions& p) {
    const double figure = static_cast<double>(p.prompts.empty() ? default_figure_prompts().size() : p.prompts.size()) *
                          static_cast<double>(p.per_prompt);
    const double adherence = o.evaluate ? 4.0 * static_cast<double>(p.attribute_samples) : 0.0;
    return (figure + adherence) * guided_sampling_calls(o, schedule, o.guidance_scale != 1.0);
}

std::string adherence_line(const nlohmann::ordered_json& metrics) {
    const auto& a = metrics["prompt_adherence"];
    const auto part = [&a](const char* word) {
        char text[160];
        std::snprintf(text, sizeof text, "%s %.3f +- %.3f (%.0f%% in its third)", word,
                      a[word]["samples"]["mean"].get<double>(), a[word]["samples"]["standard_error"].get<double>(),
                      100.0 * a[word]["share_in_third"]["mean"].get<double>());
        return std::string(text);
    };
    return "prompt adherence, " + std::to_string(a["samples_per_word"].get<Index>()) + " samples a word: intensity " +
           part("dark") + " vs " + part("light") + "; width " + part("narrow") + " vs " + part("wide");
}

namespace {

/// What the report needs of the run, shared by its parts.
struct ReportContext {
    const diffuse::NoiseSchedule<float>& schedule;
    const ReportOptions& options;
    const std::string& out_dir;
    Index classes, side, channels;   // what the model diffuses: images, or latents
    diffuse::ModelFn<float> guided;  // with the options' guidance scale
    diffuse::ModelFn<float> plain;   // the model as it is
    diffuse::LatentSpace<float>* latent;  // null for a model of pixels

    /// Images [N, C, H, W] of what the model diffuses: decoded latents, or the pixels themselves.
    diffuse::Tensor4<float> to_pixels(const diffuse::Tensor4<float>& x) const {
        return latent != nullptr ? latent->decode(x, options.chunk) : x;
    }
};

/// Class-conditional samples and the labels asked for, class-major: per_class of class 0, then of class 1, ...
struct ClassSamples {
    diffuse::Tensor4<float> x;    // [K per_class, C, H, W]
    std::vector<int> requested;   // [K per_class]
};

/// 1. samples_by_class.png, and denoising.png from the first chunk's intermediate states.
ClassSamples sample_by_class(const ReportContext& r, nlohmann::ordered_json& metrics) {
    const ReportOptions& o = r.options;
    const diffuse::NoiseSchedule<float>& schedule = r.schedule;
    const Index classes = r.classes, side = r.side, channels = r.channels;
    const Index n = classes * o.per_class;
    ClassSamples out;
    diffuse::Tensor4<float>& by_class = out.x;
    std::vector<int>& requested = out.requested;
    diffuse::Tensor4<float> denoising;  // [rows * columns, C, H, W]
    std::vector<int> denoising_t;       // the timestep of each column, -1 for x0
    by_class = diffuse::Tensor4<float>(n, channels, side, side);  // [K per_class, C, H, W]
    for (Index k = 0; k < classes; ++k) requested.insert(requested.end(), static_cast<std::size_t>(o.per_class), static_cast<int>(k));
    Phase phase("samples by class", n, o.sampler.steps, (n + o.chunk - 1) / o.chunk * o.sampler.steps, o.log_seconds);
    for (Index first = 0, chunk_index = 0; first < n; first += o.chunk, ++chunk_index) {
        const Index count = std::min(o.chunk, n - first);
        const std::vector<int> labels(requested.begin() + first, requested.begin() + first + count);
        const bool keep = chunk_index == 0;  // the denoising figure comes from the first chunk
        const diffuse::Samples<float> s =
            run_sampler(schedule, r.guided, o.sampler, {count, channels, side, side},
                        diffuse::derive_seed(o.seed, static_cast<std::uint64_t>(chunk_index)), labels, keep,
                        count_steps(phase, count));
        copy_images(s.x, 0, count, by_class, first);
        if (keep) {
            // rows: the first sample of each class in the chunk, up to denoising_rows of them;
            // columns: evenly spaced states from x_T (state 0) to x_0 (the last state)
            std::vector<Index> rows;
            for (Index i = 0; i < count && static_cast<Index>(rows.size()) < o.denoising_rows; i += o.per_class) rows.push_back(i);
            const Index states = static_cast<Index>(s.intermediates.size());
            const Index columns = std::min(o.denoising_columns, states);
            denoising = diffuse::Tensor4<float>(static_cast<Index>(rows.size()) * columns, channels, side, side);
            const std::vector<int> visited = visited_timesteps(schedule, o.sampler);
            for (Index c = 0; c < columns; ++c) {
                const Index state = columns == 1 ? states - 1 : static_cast<Index>(std::lround(static_cast<double>(c) * (states - 1) / (columns - 1)));
                // state k holds x at the (k+1)-th noisiest visited timestep; the last state is x_0
                denoising_t.push_back(state + 1 < states ? visited[visited.size() - 1 - static_cast<std::size_t>(state)] : -1);
                for (std::size_t row = 0; row < rows.size(); ++row) {
                    copy_images(s.intermediates[static_cast<std::size_t>(state)], rows[row], 1, denoising,
                                static_cast<Index>(row) * columns + c);
                }
            }
        }
    }
    phase.finish();
    by_class = r.to_pixels(by_class);
    write_png_grid(r.out_dir + "/samples_by_class.png", by_class, o.per_class, 3, 2);
    write_png_grid(r.out_dir + "/denoising.png", r.to_pixels(denoising), static_cast<Index>(denoising_t.size()), 3, 2);
    metrics["samples_by_class"] = {{"file", "samples_by_class.png"},
                                   {"rows", "one per class, 0 (T-shirt/top) to 9 (Ankle boot)"},
                                   {"per_class", o.per_class}};
    nlohmann::ordered_json columns = nlohmann::ordered_json::array();
    const std::string x = r.latent != nullptr ? "D(z" : "x";
    const std::string close = r.latent != nullptr ? " / s)" : "";
    for (const int t : denoising_t) {
        if (t < 0) columns.push_back(x + "_0" + close); else columns.push_back(x + "_t" + close + " at t = " + std::to_string(t));
    }
    metrics["denoising"] = {{"file", "denoising.png"}, {"columns", columns}};
    return out;
}

/// 2. samples_unconditional.png: the "no class" label (or an unconditional model).
void sample_unconditional(const ReportContext& r, nlohmann::ordered_json& metrics) {
    const ReportOptions& o = r.options;
    const diffuse::NoiseSchedule<float>& schedule = r.schedule;
    const Index classes = r.classes, side = r.side, channels = r.channels;
    const std::vector<int> labels = classes > 0 ? std::vector<int>(static_cast<std::size_t>(o.unconditional), static_cast<int>(classes))
                                                : std::vector<int>();
    Phase phase("unconditional samples", o.unconditional, o.sampler.steps, o.sampler.steps, o.log_seconds);
    const diffuse::Samples<float> s = run_sampler(schedule, r.plain, o.sampler, {o.unconditional, channels, side, side},
                                                  diffuse::derive_seed(o.seed, 1000), labels, false,
                                                  count_steps(phase, o.unconditional));
    phase.finish();
    write_png_grid(r.out_dir + "/samples_unconditional.png", r.to_pixels(s.x), 10, 3, 2);
    metrics["samples_unconditional"] = {{"file", "samples_unconditional.png"}, {"count", o.unconditional}};
}

/// 3. inpainting.png: the top half of test images kept, the bottom half generated (RePaint), each for
/// its true class with the same guidance. Rows: original, masked, completed.
void inpainting_demo(const ReportContext& r, const ImageSet& test, nlohmann::ordered_json& metrics) {
    const ReportOptions& o = r.options;
    const diffuse::NoiseSchedule<float>& schedule = r.schedule;
    const Index classes = r.classes, side = r.side;
    const Index n = std::min(o.inpaint_count, test.x.dimension(0));
    const Index pixel_channels = test.x.dimension(1), pixel_side = test.x.dimension(2);
    diffuse::Tensor4<float> original(n, pixel_channels, pixel_side, pixel_side);  // [N, C, H, W]
    copy_images(test.x, 0, n, original, 0);
    // a latent model completes the latents of the images, the top half of their rows kept: with
    // f dividing H / 2, exactly the latent rows of the top half of the image
    const diffuse::Tensor4<float> known =
        r.latent != nullptr ? r.latent->encode(original, diffuse::derive_seed(o.seed, 2001), o.chunk) : original;  // [N, C, H, W]
    diffuse::Tensor4<float> mask(n, 1, side, side);  // [N, 1, H, W], 1 = known
    for (Index i = 0; i < n; ++i)
        for (Index y = 0; y < side; ++y)
            for (Index x = 0; x < side; ++x) mask(i, 0, y, x) = y < side / 2 ? 1.0f : 0.0f;
    diffuse::InpaintOptions<float> options;
    options.seed = diffuse::derive_seed(o.seed, 2000);
    options.jump_length = o.inpaint_jump;
    options.resample_count = o.inpaint_resample;
    o.sampler.apply(options);
    if (classes > 0) options.conditioning.labels.assign(test.y.begin(), test.y.begin() + n);
    const diffuse::NoiseSchedule<float> respaced = diffuse::respace(
        schedule, diffuse::spaced_timesteps(schedule.num_timesteps(), o.inpaint_steps, diffuse::Spacing::trailing));
    // the model is called on every denoising move of RePaint's schedule (a fall in level)
    const std::vector<int> levels = diffuse::repaint_levels(o.inpaint_steps, o.inpaint_jump, o.inpaint_resample);
    long denoising_moves = 0;
    for (std::size_t k = 0; k + 1 < levels.size(); ++k) denoising_moves += levels[k + 1] < levels[k] ? 1 : 0;
    Phase phase("inpainting", n, denoising_moves, denoising_moves, o.log_seconds);
    options.progress = count_steps(phase, n);
    const diffuse::Samples<float> s = diffuse::inpaint(respaced, o.sampler.model_for(classes > 0 ? r.guided : r.plain), known, mask, options);
    phase.finish();
    diffuse::Tensor4<float> figure(3 * n, pixel_channels, pixel_side, pixel_side);
    copy_images(original, 0, n, figure, 0);
    diffuse::Tensor4<float> masked = original;
    for (Index i = 0; i < n; ++i)
        for (Index c = 0; c < pixel_channels; ++c)
            for (Index y = pixel_side / 2; y < pixel_side; ++y)
                for (Index x = 0; x < pixel_side; ++x) masked(i, c, y, x) = 0.0f;  // mid-gray: unknown
    copy_images(masked, 0, n, figure, n);
    copy_images(r.to_pixels(s.x), 0, n, figure, 2 * n);
    write_png_grid(r.out_dir + "/inpainting.png", figure, n, 3, 2);
    metrics["inpainting"] = {{"file", "inpainting.png"},
                             {"rows", "original | top half kept, bottom half masked | completed"},
                             {"images", "the first " + std::to_string(n) + " test images, each with its class"},
                             {"repaint", {{"steps", o.inpaint_steps}, {"jump_length", o.inpaint_jump}, {"resample_count", o.inpaint_resample}}}};
}

/// 3b. latent_pipeline.png, for a latent model: per test image (a row) the image, E: its latent (channel
/// 0, times the scale factor, shown as z / 2.5 and scaled up to the image's size), the forward process
/// noising it to t = 0.2 T, 0.4 T and 0.6 T, DDIM denoising it from there back to t = 0 (SDEdit: 10
/// steps, the image's class, the report's guidance), the states after steps 3 and 6 and the last, and
/// D: the decoded image.
void latent_pipeline_figure(const ReportContext& r, const ImageSet& test, nlohmann::ordered_json& metrics) {
    const ReportOptions& o = r.options;
    const Index n = std::min<Index>(std::min(o.inpaint_count, test.x.dimension(0)), 6);
    const Index pixel_side = test.x.dimension(2), pixel_channels = test.x.dimension(1);
    diffuse::Tensor4<float> images(n, pixel_channels, pixel_side, pixel_side);
    copy_images(test.x, 0, n, images, 0);
    const diffuse::Tensor4<float> z0 = r.latent->encode(images, diffuse::derive_seed(o.seed, 2500), o.chunk);  // [n, z, h, w]
    const int T = r.schedule.num_timesteps();
    const std::vector<int> shown_t = {T / 5, 2 * T / 5, 3 * T / 5};
    std::vector<diffuse::Tensor4<float>> noised;
    diffuse::Tensor4<float> start;
    for (std::size_t k = 0; k < shown_t.size(); ++k) {
        diffuse::Generator generator(diffuse::derive_seed(o.seed, 2600 + k));
        diffuse::Tensor4<float> eps;
        noised.push_back(diffuse::q_sample(r.schedule, z0, diffuse::Timesteps(static_cast<std::size_t>(n), shown_t[k]), generator, eps));
    }
    const int steps = 10, t_start = shown_t.back();
    diffuse::DDIMOptions<float> options;
    options.seed = diffuse::derive_seed(o.seed, 2700);
    o.sampler.apply(options);
    options.keep_intermediates = true;
    if (r.classes > 0) options.conditioning.labels.assign(test.y.begin(), test.y.begin() + n);
    for (int k = 0; k < steps; ++k) options.steps.timesteps.push_back(t_start * k / (steps - 1));
    Phase phase("latent pipeline figure", n, steps, steps, o.log_seconds);
    options.progress = count_steps(phase, n);
    const diffuse::Samples<float> s = diffuse::ddim_sample_from(r.schedule, o.sampler.model_for(r.classes > 0 ? r.guided : r.plain), steps,
                                                                noised.back(), options);
    phase.finish();
    // columns: image, latent, three noised latents, three denoising states, the decoded image
    const std::vector<const diffuse::Tensor4<float>*> latents = {&z0, &noised[0], &noised[1], &noised[2], &s.intermediates[3],
                                                                 &s.intermediates[6], &s.x};
    const Index columns = 2 + static_cast<Index>(latents.size());
    const diffuse::Tensor4<float> decoded = r.to_pixels(s.x);
    const Index f = pixel_side / z0.dimension(2);
    diffuse::Tensor4<float> figure(n * columns, 1, pixel_side, pixel_side);
    for (Index i = 0; i < n; ++i) {
        for (Index y = 0; y < pixel_side; ++y) {
            for (Index x = 0; x < pixel_side; ++x) {
                figure(i * columns, 0, y, x) = images(i, 0, y, x);
                for (std::size_t c = 0; c < latents.size(); ++c) {
                    figure(i * columns + 1 + static_cast<Index>(c), 0, y, x) = (*latents[c])(i, 0, y / f, x / f) / 2.5f;
                }
                figure(i * columns + columns - 1, 0, y, x) = decoded(i, 0, y, x);
            }
        }
    }
    write_png_grid(r.out_dir + "/latent_pipeline.png", figure, columns, 3, 2);
    nlohmann::ordered_json names = nlohmann::ordered_json::array({"x (test image)", "z_0 = s E(x), channel 0"});
    for (const int t : shown_t) names.push_back("z_t at t = " + std::to_string(t) + " (forward process)");
    names.push_back("DDIM from t = " + std::to_string(t_start) + ", after 3 steps: t = " +
                    std::to_string(options.steps.timesteps[static_cast<std::size_t>(steps - 4)]));
    names.push_back("after 6 steps: t = " + std::to_string(options.steps.timesteps[static_cast<std::size_t>(steps - 7)]));
    names.push_back("denoised z_0");
    names.push_back("D(z_0 / s) (decoded image)");
    metrics["latent_pipeline"] = {{"file", "latent_pipeline.png"}, {"columns", names},
                                  {"rows", "the first " + std::to_string(n) + " test images, each with its class"}};
}

/// 4. Class agreement (the classifier's class of each class-conditional sample) and the Frechet
/// distance between classifier features (its penultimate layer) of the generated samples and of the
/// test images; the same for as many real training images, the floors at this sample size: their
/// distance, and the classifier's agreement with their labels (what a model of the training distribution would score).
void classifier_scores(const ReportContext& r, const ClassSamples& samples, const ImageSet& test,
                       const ImageSet& real, examples::eval::Classifier<float>& classifier,
                       nlohmann::ordered_json& metrics) {
    const Index classes = r.classes;
    const diffuse::Tensor4<float>& by_class = samples.x;  // [N, C, H, W] images
    const std::vector<int>& requested = samples.requested;
    const Index real_n = std::min(by_class.dimension(0), real.x.dimension(0));
    Phase scoring("classifier features", 2 * (by_class.dimension(0) + real_n) + test.x.dimension(0), 1, 5, r.options.log_seconds);
    const std::vector<int> predicted = classifier.predict(by_class);
    scoring.step(by_class.dimension(0));
    diffuse::Tensor4<float> real_x(real_n, real.x.dimension(1), real.x.dimension(2), real.x.dimension(3));  // [n, C, H, W]
    copy_images(real.x, 0, real_n, real_x, 0);
    const std::vector<int> real_y(real.y.begin(), real.y.begin() + real_n);  // [n]
    const double real_agreement = examples::eval::accuracy(classifier.predict(real_x), real_y);
    scoring.step(real_n);
    const std::vector<double> per_class = examples::eval::per_class_accuracy(predicted, requested, static_cast<int>(classes));
    metrics["class_agreement"] = {{"value", examples::eval::sample_class_agreement(predicted, requested)},
                                  {"samples", by_class.dimension(0)},
                                  {"per_class", per_class},
                                  {"real_images", real_agreement},
                                  {"what", "share of the class-conditional samples the classifier assigns to the class they were "
                                           "generated for; real_images: the same share for as many real training images "
                                           "and their labels"}};

    const auto test_stats = examples::eval::feature_statistics(classifier.features(test.x));
    scoring.step(test.x.dimension(0));
    const auto generated_stats = examples::eval::feature_statistics(classifier.features(by_class));
    scoring.step(by_class.dimension(0));
    const auto real_stats = examples::eval::feature_statistics(classifier.features(real_x));
    scoring.step(real_n);
    scoring.finish();
    metrics["frechet_distance"] = {
        {"generated_vs_test", examples::eval::frechet_distance(generated_stats, test_stats)},
        {"real_vs_test", examples::eval::frechet_distance(real_stats, test_stats)},
        {"generated_samples", by_class.dimension(0)},
        {"real_samples", real_n},
        {"test_images", test.x.dimension(0)},
        {"features", "the evaluation classifier's penultimate activations, " +
                         std::to_string(classifier.config().feature_dim) + " dimensions"},
        {"what", "real_vs_test is the distance of as many real training images: the floor at this sample size"}};
}

/// 5. Bits per dimension of the variational bound on the first bpd_images test images, with the "no
/// class" label (the unconditional model): the T - 1 KL terms in blocks of bpd_stride steps, each
/// image evaluating one step drawn in each block (an unbiased stratified estimate of their sum).
void bits_per_dim(const ReportContext& r, const ImageSet& test, nlohmann::ordered_json& metrics) {
    const ReportOptions& o = r.options;
    const diffuse::NoiseSchedule<float>& schedule = r.schedule;
    const Index classes = r.classes, side = r.side, channels = r.channels;
    const Index n = std::min(o.bpd_images, test.x.dimension(0));
    diffuse::VlbOptions vlb;
    vlb.reverse.thresholding = o.sampler.thresholding;  // as the samplers
    vlb.reverse.clip_range = o.sampler.clip_range;
    vlb.reverse.prediction = o.sampler.prediction;
    vlb.reverse.variance = o.sampler.model_variance == diffuse::ModelVariance::learned_range
                               ? diffuse::ModelVariance::learned_range
                               : o.sampler.step_variance();
    vlb.decoder_cdf = o.bpd_tanh_cdf ? diffuse::NormalCdf::tanh_approximation : diffuse::NormalCdf::exact;
    const auto bound_start = std::chrono::steady_clock::now();
    vlb.stride = o.bpd_stride;
    vlb.stratified = true;
    std::vector<double> totals;  // [n] bits/dim of each image
    std::size_t terms = 0;
    // a model call per term and batch: ceil((T - 1) / stride) blocks of KL terms and the decoder term
    const int stride = std::max(1, o.bpd_stride);
    const long per_image = (schedule.num_timesteps() - 1 + stride - 1) / stride + 1;
    Phase phase("bits/dim", n, per_image, (n + o.chunk - 1) / o.chunk * per_image, o.log_seconds);
    const auto counted = [&r, &phase](const diffuse::Tensor4<float>& x, const diffuse::Timesteps& t,
                                      const std::vector<int>& labels) {
        diffuse::Tensor4<float> out = r.plain(x, t, labels);  // [N, C, H, W]
        phase.step(x.dimension(0));
        return out;
    };
    for (Index first = 0; first < n; first += o.chunk) {
        vlb.seed = diffuse::derive_seed(o.seed, 3000 + static_cast<std::uint64_t>(first));
        const Index count = std::min(o.chunk, n - first);
        diffuse::Tensor4<float> x0(count, channels, side, side);
        copy_images(test.x, first, count, x0, 0);
        const std::vector<int> labels = classes > 0 ? std::vector<int>(static_cast<std::size_t>(count), static_cast<int>(classes))
                                                    : std::vector<int>();
        const diffuse::VariationalBound vb = diffuse::variational_bound(schedule, counted, x0, labels, vlb);
        totals.insert(totals.end(), vb.total_bpd.begin(), vb.total_bpd.end());
        terms = vb.timesteps.size();
    }
    phase.finish();
    double mean = 0.0, squares = 0.0;
    for (const double v : totals) mean += v / static_cast<double>(n);
    for (const double v : totals) squares += (v - mean) * (v - mean);
    const double standard_error = n > 1 ? std::sqrt(squares / static_cast<double>(n - 1) / static_cast<double>(n)) : 0.0;
    metrics["bits_per_dim"] = {{"value", mean},
                               {"standard_error", standard_error},
                               {"test_images", n},
                               {"stride", o.bpd_stride},
                               {"timesteps_evaluated", terms},
                               {"estimate", "each image: the prior, the decoder term, and per block of stride KL terms "
                                            "the term at one step drawn uniformly in the block, times the block's size"},
                               {"labels", "none (the no-class label): the unconditional model"},
                               {"variance", diffuse::to_string(vlb.reverse.variance)},
                               {"decoder_cdf", o.bpd_tanh_cdf ? "tanh approximation (Improved DDPM's code)" : "exact"},
                               {"seconds", seconds_since(bound_start)},
                               {"what", "variational bound, prior + sum of KL terms + decoder NLL"}};
}


/// The report of any model the ReportContext calls: the pictures, and with a classifier the scores.
nlohmann::ordered_json report(const ReportContext& r, const ImageSet& test, const ImageSet& real,
                              examples::eval::Classifier<float>* classifier, ClassSamples* samples_out) {
    const auto start = std::chrono::steady_clock::now();
    const ReportOptions& o = r.options;
    const diffuse::LatentSpace<float>* latent = r.latent;
    nlohmann::ordered_json metrics;
    metrics["sampler"] = sampler_metrics(o.sampler);
    metrics["sampler"]["guidance_scale"] = o.guidance_scale;
    metrics["sampler"]["guidance_convention"] = "eps_u + s * (eps_c - eps_u); s = 1 conditional only, s = 0 unconditional";
    metrics["sampler"]["guidance_interval"] = guidance_interval_metrics(o.guidance_sigmas, r.schedule);
    metrics["sampler"]["seed"] = o.seed;
    const ClassSamples samples = r.classes > 0 ? sample_by_class(r, metrics) : ClassSamples{};
    if (o.unconditional > 0) sample_unconditional(r, metrics);
    if (o.inpaint_steps > 0 && o.inpaint_count > 0) inpainting_demo(r, test, metrics);
    if (latent != nullptr) latent_pipeline_figure(r, test, metrics);
    metrics["pictures_seconds"] = seconds_since(start);
    if (samples_out != nullptr) *samples_out = samples;
    if (!o.evaluate || r.classes == 0 || classifier == nullptr) return metrics;

    const auto eval_start = std::chrono::steady_clock::now();
    classifier_scores(r, samples, test, real, *classifier, metrics);
    if (latent == nullptr && o.bpd_images > 0) {
        bits_per_dim(r, test, metrics);
    } else if (latent == nullptr) {
        metrics["bits_per_dim"] = {{"value", nullptr}, {"what", "not computed: --bpd-images 0"}};
    } else {
        metrics["bits_per_dim"] = {{"value", nullptr},
                                   {"what", "not computed: a latent model's bound is on its latents, not on the "
                                            "pixels, and is not comparable with a pixel model's"}};
    }
    metrics["evaluation_seconds"] = seconds_since(eval_start);
    return metrics;
}

}  // namespace

nlohmann::ordered_json write_report(diffuse::UNet<float>& model, const diffuse::NoiseSchedule<float>& schedule,
                                    const ImageSet& test, const ImageSet& real,
                                    examples::eval::Classifier<float>* classifier, const std::string& out_dir,
                                    const ReportOptions& given, diffuse::LatentSpace<float>* latent,
                                    double latent_clip) {
    ReportOptions o = given;
    if (latent != nullptr) o.sampler = given.sampler.for_latents(latent_clip);
    apply_guidance_defaults(o.guidance_scale, o.guidance_sigmas, class_model_of_pixels(model.config(), false, latent != nullptr));
    if (latent != nullptr) diffuse::check_latent_unet(model.config(), latent->autoencoder().config());
    const ReportContext r{schedule, o, out_dir, model.config().num_classes, model.config().image_size,
                          model.config().in_channels,
                          guided_model(model, o.guidance_scale, guidance_interval(o.guidance_sigmas, schedule)), guided_model(model, 1.0),
                          latent};
    return report(r, test, real, classifier, nullptr);
}

namespace {

/// Samples [N, C, H, W], one per prompt, in chunks of options.chunk, each chunk from its own seed.
diffuse::Tensor4<float> sample_prompts(const ReportContext& r, const diffuse::ModelFn<float>& guided,
                                       const diffuse::Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                                       std::uint64_t seed, const char* what) {
    const ReportOptions& o = r.options;
    const Index n = static_cast<Index>(prompts.size());
    diffuse::Tensor4<float> out(n, r.channels, r.side, r.side);  // [N, C, H, W]
    Phase phase(what, n, o.sampler.steps, (n + o.chunk - 1) / o.chunk * o.sampler.steps, o.log_seconds);
    for (Index first = 0, k = 0; first < n; first += o.chunk, ++k) {
        const Index count = std::min(o.chunk, n - first);
        // sample i of the chunk is "class" i of a model that reads class i as its prompt
        const std::vector<std::string> chunk(prompts.begin() + first, prompts.begin() + first + count);
        std::vector<int> labels(static_cast<std::size_t>(count));
        for (Index i = 0; i < count; ++i) labels[static_cast<std::size_t>(i)] = static_cast<int>(i);
        const diffuse::Samples<float> s =
            run_sampler(r.schedule, labels_as_prompts(guided, tokenizer, chunk), o.sampler, {count, r.channels, r.side, r.side},
                        diffuse::derive_seed(seed, static_cast<std::uint64_t>(k)), labels, false, count_steps(phase, count));
        copy_images(s.x, 0, count, out, first);
    }
    phase.finish();
    return r.to_pixels(out);
}

/// The mean of values and its standard error.
nlohmann::ordered_json mean_and_error(const std::vector<double>& v) {
    const double n = static_cast<double>(v.size());
    double mean = 0.0, squares = 0.0;
    for (const double x : v) mean += x / n;
    for (const double x : v) squares += (x - mean) * (x - mean);
    return {{"mean", mean}, {"standard_error", v.size() > 1 ? std::sqrt(squares / (n - 1.0) / n) : 0.0}};
}

/// Prompt adherence, measured in the pixels: for each attribute word, attribute_samples samples (an
/// equal share per class) of "a <word> <noun>"; their statistic (mean garment intensity for dark and
/// light, silhouette width for narrow and wide), and the share of them in the word's third of their
/// class (chance: 1/3); beside it the same of the class prompts' samples and of the captioned
/// training images.
nlohmann::ordered_json prompt_adherence(const ReportContext& r, const diffuse::ModelFn<float>& guided,
                                        const diffuse::Tokenizer& tokenizer, const PromptReportOptions& p,
                                        const ClassSamples& class_samples) {
    const std::vector<std::string> class_names = class_prompts();
    const Index classes = static_cast<Index>(class_names.size());
    const Index per_class = std::max<Index>(1, p.attribute_samples / classes);
    const AttributeThirds& thirds = p.thirds;
    struct Word {
        const char* word;
        bool intensity;  // else width
        bool low;        // the lower third, else the upper
    };
    const Word words[] = {{"dark", true, true}, {"light", true, false}, {"narrow", false, true}, {"wide", false, false}};
    const auto statistic = [](const ImageAttributes& a, bool intensity) { return intensity ? a.intensity : a.width; };
    const auto in_third = [&thirds](const ImageAttributes& a, int k, const Word& w) {
        const auto& t = w.intensity ? thirds.intensity[static_cast<std::size_t>(k)] : thirds.width[static_cast<std::size_t>(k)];
        const double v = w.intensity ? a.intensity : a.width;
        return w.low ? v < t[0] : v > t[1];
    };
    const Index side = r.side;  // a model of pixels
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    out["samples_per_word"] = per_class * classes;
    out["what"] = "per attribute word, the samples of \"a <word> <noun>\" (an equal share per class): their statistic "
                  "(intensity: the garment pixels' mean on [0, 1]; width: the silhouette's mean width in pixels) and the "
                  "share in the word's third of their class (chance 1/3). class_prompts: the samples of \"a <noun>\"; "
                  "training_images: the training images whose captions can carry the word";
    std::uint64_t seed = 5000;
    for (const Word& w : words) {
        std::vector<std::string> prompts;
        std::vector<int> label;
        for (Index k = 0; k < classes; ++k) {
            for (Index i = 0; i < per_class; ++i) {
                prompts.push_back(std::string("a ") + w.word + " " + fashion_mnist_nouns()[static_cast<std::size_t>(k)].front());
                label.push_back(static_cast<int>(k));
            }
        }
        const diffuse::Tensor4<float> x = sample_prompts(r, guided, tokenizer, prompts, diffuse::derive_seed(r.options.seed, seed++),
                                                         (std::string("prompts with \"") + w.word + "\"").c_str());
        std::vector<double> values, hits;
        for (Index i = 0; i < x.dimension(0); ++i) {
            const ImageAttributes a = measure_attributes(x.data() + i * side * side, side);
            values.push_back(statistic(a, w.intensity));
            hits.push_back(in_third(a, label[static_cast<std::size_t>(i)], w) ? 1.0 : 0.0);
        }
        std::vector<double> class_values, class_hits;
        for (Index i = 0; i < class_samples.x.dimension(0); ++i) {
            const ImageAttributes a = measure_attributes(class_samples.x.data() + i * side * side, side);
            class_values.push_back(statistic(a, w.intensity));
            class_hits.push_back(in_third(a, class_samples.requested[static_cast<std::size_t>(i)], w) ? 1.0 : 0.0);
        }
        std::vector<double> real_values;
        for (std::size_t i = 0; i < p.training_attributes.size(); ++i) {
            if (in_third(p.training_attributes[i], p.training_labels[i], w)) real_values.push_back(statistic(p.training_attributes[i], w.intensity));
        }
        out[w.word] = {{"statistic", w.intensity ? "intensity" : "width"},
                       {"samples", mean_and_error(values)},
                       {"share_in_third", mean_and_error(hits)},
                       {"class_prompts", mean_and_error(class_values)},
                       {"class_prompts_share_in_third", mean_and_error(class_hits)},
                       {"training_images", mean_and_error(real_values)}};
    }
    return out;
}

}  // namespace

nlohmann::ordered_json write_prompt_report(diffuse::PromptUNet<float>& model, const diffuse::Tokenizer& tokenizer,
                                           const diffuse::NoiseSchedule<float>& schedule, const ImageSet& test,
                                           const ImageSet& real,
                                           examples::eval::Classifier<float>* classifier, const std::string& out_dir,
                                           const ReportOptions& given, const PromptReportOptions& p) {
    const auto start = std::chrono::steady_clock::now();
    ReportOptions o = given;
    apply_guidance_defaults(o.guidance_scale, o.guidance_sigmas, false);
    const std::vector<std::string> names = class_prompts();
    const diffuse::ModelFn<float> guided = guided_prompt_model(model, o.guidance_scale, guidance_interval(o.guidance_sigmas, schedule));
    const diffuse::ModelFn<float> plain = guided_prompt_model(model, 1.0);
    const ReportContext r{schedule, o, out_dir, static_cast<Index>(names.size()), model.config().image_size,
                          model.config().in_channels, labels_as_prompts(guided, tokenizer, names),
                          labels_as_prompts(plain, tokenizer, names), nullptr};
    ClassSamples samples;
    nlohmann::ordered_json metrics = report(r, test, real, classifier, &samples);
    metrics["class_prompts"] = names;
    metrics["samples_by_class"]["rows"] = "one per class, its prompt \"a <noun>\" (class_prompts)";
    metrics["samples_unconditional"]["prompt"] = "the empty prompt";

    // prompts.png: a row per prompt
    const auto figure_start = std::chrono::steady_clock::now();
    std::vector<std::string> rows;
    for (const std::string& prompt : p.prompts) rows.insert(rows.end(), static_cast<std::size_t>(p.per_prompt), prompt);
    if (!rows.empty()) {
        write_png_grid(out_dir + "/prompts.png", sample_prompts(r, guided, tokenizer, rows, diffuse::derive_seed(o.seed, 4000), "prompts figure"),
                       p.per_prompt, 3, 2);
        metrics["prompts_figure"] = {{"file", "prompts.png"}, {"rows", p.prompts}, {"per_prompt", p.per_prompt}};
    }
    metrics["pictures_seconds"] = metrics["pictures_seconds"].get<double>() + seconds_since(figure_start);
    if (o.evaluate && p.attribute_samples > 0 && !p.training_attributes.empty()) {
        const auto adherence_start = std::chrono::steady_clock::now();
        metrics["prompt_adherence"] = prompt_adherence(r, guided, tokenizer, p, samples);
        metrics["prompt_adherence"]["seconds"] = seconds_since(adherence_start);
    }
    metrics["report_seconds"] = seconds_since(start);
    return metrics;
}

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
    diffuse::write_string_atomically(path, j.dump(2) + "\n", "examples::write_json");
}

}  // namespace examples
