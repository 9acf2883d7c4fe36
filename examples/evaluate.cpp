// Evaluates any diffuse_train checkpoint as the trainer does at its end: the pictures
// (samples_by_class.png, samples_unconditional.png, denoising.png, inpainting.png) and metrics.json
// with the share of class-conditional samples classified as their class, the Frechet distance of the
// evaluation classifier's features of generated and test images, and test-set bits/dim.
//
// Each phase shows its progress on stderr: redrawn in place on a terminal, a line every
// --log-seconds otherwise.
//
// A prompt model's checkpoint (diffuse_train --prompts) asks for each class by its prompt "a <noun>"
// and for "no class" by the empty prompt, and adds prompts.png (a row per prompt) and
// prompt_adherence: the attribute statistics of --attribute-samples samples per attribute word.
//
// A super-resolution model's checkpoint (diffuse_train --super-resolution) upscales --sr-images test
// images instead: superres.png and their PSNR, classifier accuracy and Frechet distance against
// bicubic upsampling and the originals.
//
// --image-to-image measures SDEdit instead: test images of a source class noised to each strength and
// denoised toward a target class (--pair 0:2, a T-shirt into a pullover), the classifier's shares of
// target and source and the pixel distance to the source, and sdedit.png (a row per strength).
//
//   diffuse_evaluate --checkpoint out/train/checkpoint.safetensors --out out/eval
//   diffuse_evaluate --checkpoint out/train/checkpoint.safetensors --image-to-image --pair 7:9

#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/image_to_image.hpp"
#include "common/prompts.hpp"
#include "common/report.hpp"
#include "common/super_resolution.hpp"

#include <diffuse/core/memory.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/io/checkpoint.hpp>
#include "common/classifier.hpp"
#include <diffuse/models/unet.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    diffuse::keep_freed_memory();
    CLI::App app{"Scores a diffuse_train checkpoint: samples and their pictures, class agreement, the Frechet distance "
                 "of classifier features and test bits/dim, written as metrics.json into --out.",
                 "diffuse_evaluate"};
    std::string checkpoint, out_dir, classifier_path, autoencoder_path;
    std::string data_dir = examples::default_data_dir;
    bool ema = true;
    diffuse::Index test_images = 10000;
    int classifier_epochs = 2;
    int threads = 0;
    examples::ReportOptions report;
    examples::PromptReportOptions prompt_report;
    examples::SuperResolutionOptions super_resolution;
    examples::ImageToImageOptions image_to_image;
    bool edit = false;
    std::vector<std::string> pairs;
    prompt_report.prompts = examples::default_figure_prompts();
    app.add_option("--checkpoint", checkpoint, "A checkpoint of diffuse_train")->required();
    app.add_option("--autoencoder", autoencoder_path, "A latent model's autoencoder weights file [default: where "
                                                      "the checkpoint says it was]");
    app.add_option("--out", out_dir, "Output folder [default: the checkpoint's folder]");
    app.add_option("--data-dir", data_dir, "Directory of the IDX files")->capture_default_str();
    app.add_option("--classifier", classifier_path, "Evaluation classifier weights; trained and saved here if "
                                                    "missing [default: <checkpoint folder>/../classifier.safetensors]");
    app.add_option("--classifier-epochs", classifier_epochs, "Epochs when the classifier must be trained")->capture_default_str();
    app.add_flag("--ema,!--no-ema", ema, "Use the EMA's weights")->capture_default_str();
    app.add_option("--test-images", test_images, "Test images for the scores (at most 10000)")->capture_default_str();
    examples::add_report_options(app, report);
    app.add_option("--prompt", prompt_report.prompts, "A prompt model: a row of prompts.png (repeat for more rows)")
        ->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->default_str("12 prompts, attribute pairs and synonyms");
    app.add_option("--attribute-samples", prompt_report.attribute_samples,
                   "A prompt model: samples per attribute word (dark, light, narrow, wide) of the adherence figures")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--sr-images", super_resolution.images, "A super-resolution model: test images upscaled")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_flag("--image-to-image", edit, "Measure SDEdit instead of sampling from noise: for each --pair and "
                                           "--strengths, the classifier's shares of target and source class and the "
                                           "distance to the source; sdedit.png");
    app.add_option("--pair", pairs, "With --image-to-image: SOURCE:TARGET classes (repeat for more)")
        ->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->default_str("0:2 (T-shirt to pullover), 7:9 (sneaker to ankle boot)");
    app.add_option("--strengths", image_to_image.strengths, "With --image-to-image: SDEdit strengths s in (0, 1]")
        ->delimiter(',')->default_str("0.2,0.4,0.6,0.8,1.0");
    app.add_option("--edit-images", image_to_image.images, "With --image-to-image: test images of each source class edited")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--seed", report.seed, "Seed of the samples")->capture_default_str();
    app.add_option("--threads", threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_option("--log-seconds", report.log_seconds, "Seconds between progress lines when stderr is not a terminal")
        ->capture_default_str();

    return examples::run(app, argc, argv, [&] {
        const auto start = std::chrono::steady_clock::now();
        if (threads > 0) diffuse::set_num_threads(threads);
        const std::filesystem::path folder = std::filesystem::path(checkpoint).parent_path();
        if (out_dir.empty()) out_dir = folder.empty() ? "." : folder.string();
        if (classifier_path.empty()) {
            const std::filesystem::path parent = folder.parent_path();
            classifier_path = (parent.empty() ? std::filesystem::path(".") : parent).string() + "/classifier.safetensors";
        }
        std::filesystem::create_directories(out_dir);

        const auto metadata = examples::file_metadata(checkpoint);
        examples::CheckpointModel loaded = examples::load_checkpoint_model(checkpoint, ema);
        report.sampler = report.sampler.for_checkpoint(checkpoint);
        const diffuse::NoiseSchedule<float> schedule(examples::checkpoint_schedule(metadata, checkpoint).betas);
        const examples::Latent latent = examples::checkpoint_latent(checkpoint, autoencoder_path,
                                                                    loaded.config(),
                                                                    "diffuse_evaluate");

        const examples::Splits splits = examples::read_splits_or_exit(data_dir, "diffuse_evaluate");
        const examples::LabelledImages& train = splits.train;
        const examples::LabelledImages& test = splits.test;
        const diffuse::Index n_test = std::min(test_images, test.images.count);
        const examples::ImageSet test_set = examples::first_images(test, n_test);
        examples::eval::Classifier<float> classifier(examples::eval::ClassifierConfig::fashion_mnist());
        examples::load_or_train_classifier(classifier_path, classifier,
                                           diffuse::images_to_tensor<float>(train.images, 0, train.images.count),
                                           train.labels, test_set.x, test_set.y, classifier_epochs);
        const examples::ImageSet real = examples::first_images(train, report.per_class * 10);

        nlohmann::ordered_json metrics;
        metrics["checkpoint"] = checkpoint;
        metrics["weights"] = loaded.ema ? "ema" : "model";
        const auto step = diffuse::load_safetensors(checkpoint);
        if (step.contains("trainer.step")) metrics["step"] = step.scalar<std::int64_t>("trainer.step");
        const auto header = examples::file_metadata(classifier_path);
        const auto accuracy = header.find("diffuse.classifier.test_accuracy");
        metrics["classifier"] = {{"path", classifier_path},
                                 {"test_accuracy", accuracy == header.end() ? nlohmann::ordered_json()
                                                                            : nlohmann::ordered_json(std::stod(accuracy->second))}};
        if (latent.space) metrics["latent"] = {{"autoencoder", latent.reference.autoencoder}, {"scale_factor", latent.reference.scale_factor}};
        nlohmann::ordered_json figures;
        if (edit) {
            const diffuse::Index classes = loaded.prompt_model ? 10 : loaded.config().num_classes;
            if (classes == 0) {
                diffuse::detail::throw_invalid("diffuse_evaluate", "--image-to-image", checkpoint,
                                               "a class-conditional or prompt model's checkpoint: this model is told no class");
            }
            if (!pairs.empty()) image_to_image.pairs.clear();
            for (const std::string& p : pairs) image_to_image.pairs.push_back(examples::parse_class_pair(p, static_cast<int>(classes), "--pair"));
            report.sampler = latent.space ? report.sampler.for_latents(latent.reference.clip_range) : report.sampler;
            examples::apply_guidance_defaults(
                report.guidance_scale, report.guidance_sigmas,
                examples::class_model_of_pixels(loaded.config(), loaded.prompt_model != nullptr, latent.space != nullptr));
            const diffuse::GuidanceInterval interval = examples::guidance_interval(report.guidance_sigmas, schedule);
            const diffuse::ModelFn<float> model =
                loaded.prompt_model ? examples::labels_as_prompts(examples::guided_prompt_model(*loaded.prompt_model, report.guidance_scale, interval),
                                                                  diffuse::tokenizer_from_checkpoint(checkpoint), examples::class_prompts())
                                    : examples::guided_model(*loaded.unet, report.guidance_scale, interval);
            figures = examples::write_image_to_image_report(model, schedule, test, classifier, out_dir, report, image_to_image,
                                                            latent.space.get());
            for (const auto& [key, value] : figures.items()) metrics[key] = value;
            metrics["total_seconds"] = examples::seconds_since(start);
            examples::write_json(out_dir + "/metrics.json", metrics);
            std::printf("%swrote %s/metrics.json and sdedit.png (%.0f s)\n", examples::image_to_image_lines(metrics).c_str(),
                        out_dir.c_str(), examples::seconds_since(start));
            return;
        }
        const auto sr = metadata.find(examples::super_resolution_key);
        if (sr != metadata.end()) {
            super_resolution.side = std::stol(sr->second);
            const diffuse::Index n = std::min(super_resolution.images, train.images.count);
            figures = examples::write_super_resolution_report(*loaded.unet, schedule, test_set,
                                                              diffuse::images_to_tensor<float>(train.images, 0, n), &classifier,
                                                              out_dir, report, super_resolution);
            for (const auto& [key, value] : figures.items()) metrics[key] = value;
            metrics["total_seconds"] = examples::seconds_since(start);
            examples::write_json(out_dir + "/metrics.json", metrics);
            std::printf("%s; %.0f s\nwrote %s/metrics.json and superres.png\n", examples::super_resolution_line(metrics).c_str(),
                        examples::seconds_since(start), out_dir.c_str());
            return;
        }
        if (loaded.prompt_model) {
            // the attribute thirds of the captions the model was trained on, from all training images
            const examples::CaptionDrawer captions(diffuse::images_to_tensor<float>(train.images, 0, train.images.count), train.labels, 0);
            prompt_report.thirds = captions.thirds();
            prompt_report.training_attributes = captions.attributes();
            prompt_report.training_labels = train.labels;
            figures = examples::write_prompt_report(*loaded.prompt_model, diffuse::tokenizer_from_checkpoint(checkpoint), schedule, test_set,
                                                    real, &classifier, out_dir, report, prompt_report);
        } else {
            figures = examples::write_report(*loaded.unet, schedule, test_set, real, &classifier, out_dir, report, latent.space.get(),
                                             latent.reference.clip_range);
        }
        for (const auto& [key, value] : figures.items()) metrics[key] = value;
        metrics["total_seconds"] = examples::seconds_since(start);
        examples::write_json(out_dir + "/metrics.json", metrics);
        std::printf("%s; %.0f s\n", examples::scores_line(metrics).c_str(), examples::seconds_since(start));
        if (metrics.contains("prompt_adherence")) std::printf("%s\n", examples::adherence_line(metrics).c_str());
        std::printf("wrote %s/metrics.json and the pictures\n", out_dir.c_str());
    });
}
