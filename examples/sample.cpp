// Samples from a checkpoint of diffuse_train: rebuilds the U-Net from the configuration stored in the
// file, loads its weights (the EMA's by default), and writes a PNG grid, one row per class, and
// optionally the raw samples and labels as NumPy .npy files for Python tools:
//     samples.npy   uint8 [N, 28, 28], pixels 0..255 (x in [-1, 1] mapped to round((x + 1) * 127.5))
//     labels.npy    int64 [N], the class of each sample (10 = "no class" for unconditional ones)
//
// Guidance: eps = eps_u + s (eps_c - eps_u), s = --guidance. s = 1 is the conditional model alone,
// s = 0 the unconditional one (the "no class" label), s > 1 trades variety for class fidelity.
//
//   diffuse_sample --checkpoint out/train/checkpoint.safetensors --classes 0,7,9 --count 8
//                  --sampler dpm++2m --steps 20 --guidance 3 --out samples.png --npy samples.npy
//
// Progress (step, images per second, time left) goes to stderr: redrawn in place on a terminal, a
// line every --log-seconds otherwise.
//
// --dump-io <prefix> also writes a fixed input and the model's output on it (<prefix>_x.npy,
// _t.npy, _labels.npy, _out.npy), which scripts/pytorch_load.py compares with PyTorch's; for a latent
// model also its autoencoder's (<prefix>_ae_x.npy, _ae_moments.npy, _ae_z.npy, _ae_decoded.npy).
//
// A latent diffusion checkpoint (diffuse_train --autoencoder) samples latents, which its autoencoder
// (found where the checkpoint says, or --autoencoder) decodes to images.
//
// Image-to-image (SDEdit): --source-class K takes the first --count test images of class K, noises
// them to --strength s and denoises them toward each row's class or prompt; the grid's first row is
// the source images:
//   diffuse_sample --checkpoint out/train/checkpoint.safetensors --source-class 0 --classes 2,6 --strength 0.6
//
// A prompt model's checkpoint (diffuse_train --prompts) samples a row per --prompt, guided against the
// empty prompt; labels.npy then holds each sample's row (the index of its prompt):
//   diffuse_sample --checkpoint out/prompts/checkpoint.safetensors --prompt "a dark ankle boot"
//                  --prompt "a light ankle boot" --count 8 --out boots.png

#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/npy.hpp"
#include "common/png_grid.hpp"
#include "common/progress.hpp"
#include "common/prompts.hpp"
#include "common/report.hpp"
#include "common/super_resolution.hpp"

#include <diffuse/core/memory.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/core/channels.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/samplers/named.hpp>
#include <diffuse/samplers/sdedit.hpp>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

using diffuse::Index;

/// Writes a fixed input (x ~ N(0, I) from seed 1234, four timesteps, four labels including "no class")
/// and the model's output on it, in evaluation mode, as .npy files.
void dump_io(diffuse::UNet<float>& model, const std::string& prefix) {
    model.set_training(false);
    const Index side = model.config().image_size, channels = model.config().in_channels;
    diffuse::Generator generator(1234);
    const diffuse::Tensor4<float> x = generator.randn<float, 4>({4, channels, side, side});  // [4, C, H, W]
    const diffuse::Timesteps t = {0, 250, 500, 999};
    const int no_class = static_cast<int>(model.config().num_classes);
    const std::vector<int> labels = no_class > 0 ? std::vector<int>{0, 3, 7, no_class} : std::vector<int>{};
    const diffuse::Tensor4<float> out = model.forward(x, t, labels);  // [4, Cout, H, W]
    const std::vector<Index> shape = {4, channels, side, side};
    examples::write_npy(prefix + "_x.npy", shape, x.data());
    examples::write_npy(prefix + "_out.npy", {4, out.dimension(1), side, side}, out.data());
    examples::write_npy(prefix + "_t.npy", {4}, std::vector<std::int64_t>(t.begin(), t.end()));
    examples::write_npy(prefix + "_labels.npy", {static_cast<Index>(labels.size())},
                        std::vector<std::int64_t>(labels.begin(), labels.end()));
    std::printf("wrote %s_x.npy, %s_t.npy, %s_labels.npy and %s_out.npy\n", prefix.c_str(), prefix.c_str(),
                prefix.c_str(), prefix.c_str());
}

/// A latent model's autoencoder on a fixed input (x ~ N(0, I) from seed 4321, two images): the
/// posterior's moments and the decoder's output on their mean, as <prefix>_ae_x.npy, _ae_moments.npy,
/// _ae_z.npy and _ae_decoded.npy.
void dump_autoencoder_io(diffuse::Autoencoder<float>& autoencoder, const std::string& prefix) {
    autoencoder.set_training(false);
    const diffuse::AutoencoderConfig& c = autoencoder.config();
    const diffuse::Tensor4<float> x = diffuse::Generator(4321).randn<float, 4>({2, c.in_channels, c.image_size, c.image_size});
    const diffuse::Tensor4<float> moments = autoencoder.encode(x);  // [2, 2z, h, w]
    const diffuse::Tensor4<float> z = diffuse::channel_slice(moments, 0, c.z_channels);  // the mean
    const diffuse::Tensor4<float> decoded = autoencoder.decode(z);  // [2, C, H, W]
    const auto shape = [](const diffuse::Tensor4<float>& t) {
        return std::vector<Index>{t.dimension(0), t.dimension(1), t.dimension(2), t.dimension(3)};
    };
    examples::write_npy(prefix + "_ae_x.npy", shape(x), x.data());
    examples::write_npy(prefix + "_ae_moments.npy", shape(moments), moments.data());
    examples::write_npy(prefix + "_ae_z.npy", shape(z), z.data());
    examples::write_npy(prefix + "_ae_decoded.npy", shape(decoded), decoded.data());
    std::printf("wrote %s_ae_x.npy, %s_ae_moments.npy, %s_ae_z.npy and %s_ae_decoded.npy\n", prefix.c_str(),
                prefix.c_str(), prefix.c_str(), prefix.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    diffuse::keep_freed_memory();  // a large batch's activations stay with the process between steps
    CLI::App app{"Samples images from a diffuse_train checkpoint and writes them as a PNG grid (one row per class) "
                 "and, optionally, as NumPy .npy files.",
                 "diffuse_sample"};
    std::string checkpoint, autoencoder_path;
    bool ema = true;
    std::vector<int> classes;
    std::vector<std::string> prompts;
    bool unconditional = false;
    Index count = 8;
    examples::SamplerChoice sampler;
    double guidance = std::numeric_limits<double>::quiet_NaN();  // NaN: the model's default
    std::vector<double> guidance_sigmas;  // --guidance-interval; empty: the model's default
    std::uint64_t seed = 0;
    std::string out = "samples.png";
    std::string npy, npy_labels, dump;
    std::string schedule;
    int timesteps = 0;
    int threads = 0;
    Index chunk = diffuse::UNet<float>::default_evaluation_chunk;
    double log_seconds = 10.0;
    int source_class = -1;
    double strength = 0.6;
    std::string data_dir = examples::default_data_dir;
    app.add_option("--checkpoint", checkpoint, "A checkpoint of diffuse_train (or a weights file)")->required();
    app.add_option("--autoencoder", autoencoder_path, "A latent model's autoencoder weights file [default: where "
                                                      "the checkpoint says it was]");
    app.add_flag("--ema,!--no-ema", ema, "Sample with the EMA's weights (a training checkpoint holds both)")
        ->capture_default_str();
    app.add_option("--classes", classes, "Classes to sample, one row each (default: all)")->delimiter(',');
    app.add_option("--prompt", prompts, "A prompt model's prompt, one row each (repeat the option for more rows)")
        ->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    app.add_flag("--unconditional", unconditional, "One row of unconditional samples (the \"no class\" label, or the "
                                                   "empty prompt) instead");
    app.add_option("--count", count, "Samples per class")->capture_default_str();
    app.add_option("--sampler", sampler.name, "Sampler")->check(CLI::IsMember(diffuse::sampler_names()))
        ->capture_default_str();
    app.add_option("--steps", sampler.steps, "Sampler steps (ddpm: the schedule respaced to this many; heun: noise "
                                             "levels, 2 steps - 2 model calls)")
        ->capture_default_str();
    examples::add_spacing_option(app, sampler);
    examples::add_thresholding_option(app, sampler);
    examples::add_ddpm_variance_option(app, sampler);
    examples::add_guidance_option(app, guidance);
    examples::add_guidance_interval_option(app, guidance_sigmas);
    app.add_option("--seed", seed, "Seed of the noise")->capture_default_str();
    app.add_option("--source-class", source_class, "Image-to-image (SDEdit): start from the first --count test images of "
                                                   "this class, noised to --strength, instead of pure noise");
    app.add_option("--strength", strength, "SDEdit's strength s in (0, 1]: noised to t = ceil(s T) - 1; 1 keeps nothing "
                                           "of the source but its noise, small values keep more")->capture_default_str();
    app.add_option("--data-dir", data_dir, "Directory of the IDX files, for --source-class")->capture_default_str();
    app.add_option("--out", out, "The PNG grid to write (empty: none)")->capture_default_str();
    app.add_option("--npy", npy, "Also write the samples as uint8 [N, H, W] to this .npy file");
    app.add_option("--npy-labels", npy_labels, "Where the labels go, int64 [N] [default: <--npy>_labels.npy]");
    app.add_option("--dump-io", dump, "Also write a fixed input and the model's output as <prefix>_*.npy (for "
                                      "scripts/pytorch_load.py)");
    app.add_option("--schedule", schedule, "Noise schedule, if the file does not say")
        ->check(CLI::IsMember({"linear", "cosine"}));
    app.add_option("--timesteps", timesteps, "T, if the file does not say");
    app.add_option("--threads", threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_option("--chunk", chunk, "Samples per U-Net pass: a larger batch runs in chunks of this many, so its "
                                     "activations stay in cache (the same bits for any chunk; 0: the whole batch at once)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--log-seconds", log_seconds, "Seconds between progress lines when stderr is not a terminal")
        ->capture_default_str();

    return examples::run(app, argc, argv, [&] {
        if (threads > 0) diffuse::set_num_threads(threads);
        const auto metadata = examples::file_metadata(checkpoint);
        if (metadata.count(examples::super_resolution_key) != 0) {
            diffuse::detail::throw_invalid("diffuse_sample", "--checkpoint", checkpoint,
                                           "a model that samples from noise alone; this super-resolution model needs a "
                                           "low-resolution image: upscale test images with diffuse_evaluate --checkpoint " + checkpoint);
        }
        const diffuse::Betas betas = !schedule.empty() && timesteps > 0 ? diffuse::make_betas(schedule, timesteps)
                                                                        : examples::checkpoint_schedule(metadata, checkpoint).betas;
        examples::CheckpointModel loaded = examples::load_checkpoint_model(checkpoint, ema);
        sampler = sampler.for_checkpoint(checkpoint);
        const bool prompt_model = loaded.prompt_model != nullptr;
        if (count < 1) diffuse::detail::throw_invalid("diffuse_sample", "--count", count, ">= 1");
        if (prompt_model) {
            // a row per prompt, guided against the empty prompt
            if (!classes.empty()) {
                diffuse::detail::throw_invalid("diffuse_sample", "--classes", "given", "--prompt: \"" + checkpoint + "\" is a prompt model's");
            }
            if (!dump.empty()) diffuse::detail::throw_invalid("diffuse_sample", "--dump-io", dump, "none: it is for U-Nets and autoencoders");
            if (unconditional) prompts = {""};
            if (prompts.empty()) {
                const diffuse::Tokenizer tokenizer = diffuse::tokenizer_from_checkpoint(checkpoint);
                std::string words;
                for (const std::string& w : tokenizer.words()) words += (words.empty() ? "" : " ") + w;
                diffuse::detail::throw_invalid("diffuse_sample", "--prompt", "none",
                                               "a prompt (or --unconditional): \"" + checkpoint + "\" is a prompt model's, of the words: " + words);
            }
        } else if (!prompts.empty()) {
            diffuse::detail::throw_invalid("diffuse_sample", "--prompt", "\"" + prompts.front() + "\"",
                                           "none: \"" + checkpoint + "\" is not a prompt model's (diffuse_train --prompts trains one)");
        }
        if (loaded.unet) loaded.unet->set_evaluation_chunk(chunk);
        const diffuse::UNetConfig& config = loaded.config();
        const examples::Latent latent = examples::checkpoint_latent(checkpoint, autoencoder_path, config, "diffuse_sample");
        const diffuse::NoiseSchedule<float> noise_schedule(betas);
        const Index num_classes = config.num_classes;

        if (!dump.empty()) {
            dump_io(*loaded.unet, dump);
            if (latent.space) dump_autoencoder_io(*latent.autoencoder, dump);
        }

        std::vector<int> rows;
        if (prompt_model) {
            for (std::size_t k = 0; k < prompts.size(); ++k) rows.push_back(static_cast<int>(k));
        } else if (unconditional || num_classes == 0) {
            rows = {static_cast<int>(num_classes)};
        } else if (classes.empty()) {
            for (int k = 0; k < num_classes; ++k) rows.push_back(k);
        } else {
            for (const int k : classes) {
                if (k < 0 || k >= num_classes) {
                    diffuse::detail::throw_invalid("diffuse_sample", "--classes", k,
                                                   "a class in [0, " + std::to_string(num_classes) + ")");
                }
            }
            rows = classes;
        }
        std::vector<int> labels;
        for (const int k : rows) labels.insert(labels.end(), static_cast<std::size_t>(count), k);
        const Index n = static_cast<Index>(labels.size());
        const Index side = config.image_size, channels = config.in_channels;

        const bool conditional = (prompt_model || num_classes > 0) && !unconditional;
        // a prompt model reads label k as its k-th prompt
        examples::apply_guidance_defaults(guidance, guidance_sigmas,
                                          examples::class_model_of_pixels(config, prompt_model, latent.space != nullptr));
        const diffuse::GuidanceInterval interval = examples::guidance_interval(guidance_sigmas, noise_schedule);
        const diffuse::ModelFn<float> fn =
            prompt_model ? examples::labels_as_prompts(examples::guided_prompt_model(*loaded.prompt_model, conditional ? guidance : 1.0, interval),
                                                       diffuse::tokenizer_from_checkpoint(checkpoint), prompts)
                         : examples::guided_model(*loaded.unet, conditional ? guidance : 1.0, interval);
        if (latent.space) sampler = sampler.for_latents(latent.reference.clip_range);
        const auto start = std::chrono::steady_clock::now();
        const std::vector<int> told = prompt_model || num_classes > 0 ? labels : std::vector<int>();
        diffuse::Tensor4<float> source;  // [count, C, H, W] test images, for SDEdit
        diffuse::Samples<float> sampled;
        if (source_class >= 0) {
            const examples::Splits splits = examples::read_splits_or_exit(data_dir, "diffuse_sample");
            source = examples::first_of_class(splits.test, source_class, count, "diffuse_sample");
            diffuse::Tensor4<float> x0(n, source.dimension(1), source.dimension(2), source.dimension(3));  // the sources, a copy per row
            for (Index r = 0; r < static_cast<Index>(rows.size()); ++r) examples::copy_images(source, 0, count, x0, r * count);
            if (latent.space) x0 = latent.space->encode(x0, diffuse::derive_seed(seed, 0x736465ULL));
            const int visited = static_cast<int>(diffuse::sdedit_timesteps(noise_schedule.num_timesteps(), sampler.steps, strength).size());
            examples::Phase phase("image-to-image", n, visited, visited, log_seconds);
            sampled = examples::run_sdedit(noise_schedule, fn, sampler, x0, strength, seed, told, examples::count_steps(phase, n));
            phase.finish();
        } else {
            examples::Phase phase("sampling", n, sampler.steps, sampler.steps, log_seconds);
            sampled = examples::run_sampler(noise_schedule, fn, sampler, {n, channels, side, side}, seed, told, false,
                                            examples::count_steps(phase, n));
            phase.finish();
        }
        // a latent model's samples are latents: the decoder makes them images
        diffuse::Tensor4<float> images = latent.space ? latent.space->decode(sampled.x) : sampled.x;  // [N, C, H, W]
        if (latent.space) {
            std::printf("decoded %lldx%lldx%lld latents with %s\n", static_cast<long long>(channels),
                        static_cast<long long>(side), static_cast<long long>(side), latent.reference.autoencoder.c_str());
        }
        std::printf("%lld samples (%zu row(s) of %lld) with %s, %d steps, x0 %s, guidance %g, seed %llu, %s weights: %.1f s\n",
                    static_cast<long long>(n), rows.size(), static_cast<long long>(count), sampler.name.c_str(),
                    sampler.steps, diffuse::to_string(sampler.thresholding), conditional ? guidance : 1.0, static_cast<unsigned long long>(seed),
                    loaded.ema ? "EMA" : "model", examples::seconds_since(start));

        if (conditional && guidance != 1.0 && guidance != 0.0 && !examples::guides_every_step(guidance_sigmas)) {
            std::printf("guided at timesteps [%d, %d] only, where sigma_t is in (%g, %g]\n", interval.first, interval.last,
                        guidance_sigmas[0], guidance_sigmas[1]);
        }
        if (source_class >= 0) {
            std::printf("image-to-image from the first %lld test images of class %d at strength %g (t = %d)\n",
                        static_cast<long long>(count), source_class, strength,
                        diffuse::sdedit_start(noise_schedule.num_timesteps(), strength));
        }
        if (!out.empty()) {
            diffuse::Tensor4<float> grid = images;  // with SDEdit, the source images as the first row
            if (source_class >= 0) {
                grid = diffuse::Tensor4<float>(n + count, images.dimension(1), images.dimension(2), images.dimension(3));
                examples::copy_images(source, 0, count, grid, 0);
                examples::copy_images(images, 0, n, grid, count);
            }
            examples::write_png_grid(out, grid, count, 4, 2);
            std::printf("wrote %s\n", out.c_str());
        }
        if (!npy.empty()) {
            std::vector<std::uint8_t> pixels(static_cast<std::size_t>(images.size()));
            for (Index i = 0; i < images.size(); ++i) {
                pixels[static_cast<std::size_t>(i)] = examples::to_display_level(static_cast<double>(images.data()[i]));
            }
            if (npy_labels.empty()) {
                const std::string stem = npy.size() > 4 && npy.compare(npy.size() - 4, 4, ".npy") == 0
                                             ? npy.substr(0, npy.size() - 4) : npy;
                npy_labels = stem + "_labels.npy";
            }
            // [N, H, W] for one channel, as MNIST tools expect; [N, C, H, W] otherwise
            const Index c = images.dimension(1), h = images.dimension(2), w = images.dimension(3);
            const std::vector<Index> shape = c == 1 ? std::vector<Index>{n, h, w} : std::vector<Index>{n, c, h, w};
            examples::write_npy(npy, shape, pixels);
            examples::write_npy(npy_labels, {n}, std::vector<std::int64_t>(labels.begin(), labels.end()));
            std::printf("wrote %s and %s\n", npy.c_str(), npy_labels.c_str());
        }
    });
}
