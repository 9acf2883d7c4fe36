#include "common/super_resolution.hpp"

#include "common/classifier_metrics.hpp"
#include "common/frechet.hpp"
#include "common/image_metrics.hpp"
#include "common/png_grid.hpp"
#include "common/progress.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/data/resize.hpp>
#include <diffuse/nn/resample.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace examples {

double super_resolution_forward_count(const ReportOptions& options, const SuperResolutionOptions& sr) {
    return static_cast<double>(sr.images) * options.sampler.steps;
}

namespace {

/// The low-resolution images [N, 1, side, side] shown at [N, 1, 28, 28]: each pixel a block.
diffuse::Tensor4<float> blocks(const diffuse::Tensor4<float>& low, Index factor) {
    diffuse::Tensor4<float> out(low.dimension(0), low.dimension(1), low.dimension(2) * factor, low.dimension(3) * factor);
    for (Index n = 0; n < low.dimension(0); ++n) {
        for (Index c = 0; c < low.dimension(1); ++c) {
            for (Index i = 0; i < out.dimension(2); ++i) {
                for (Index j = 0; j < out.dimension(3); ++j) out(n, c, i, j) = low(n, c, i / factor, j / factor);
            }
        }
    }
    return out;
}

/// What an upscaling measures against the originals x [N, 1, 28, 28] of labels y.
nlohmann::ordered_json scores(const diffuse::Tensor4<float>& upscaled, const diffuse::Tensor4<float>& x,
                              const std::vector<int>& y, Index factor, examples::eval::Classifier<float>& classifier,
                              const examples::eval::FeatureStatistics& real) {
    const Fidelity f = fidelity(upscaled, x);
    const Fidelity consistency = fidelity(diffuse::area_downsample(upscaled, factor), diffuse::area_downsample(x, factor));
    return {{"psnr_db", f.psnr},
            {"mse", f.mse},
            {"consistency_mse", consistency.mse},
            {"classifier_accuracy", examples::eval::sample_class_agreement(classifier.predict(upscaled), y)},
            {"frechet_distance", examples::eval::frechet_distance(
                                     examples::eval::feature_statistics(classifier.features(upscaled)), real)}};
}

}  // namespace

nlohmann::ordered_json write_super_resolution_report(diffuse::UNet<float>& model,
                                                     const diffuse::NoiseSchedule<float>& schedule, const ImageSet& test,
                                                     const diffuse::Tensor4<float>& real_x,
                                                     examples::eval::Classifier<float>* classifier,
                                                     const std::string& out_dir, const ReportOptions& o,
                                                     const SuperResolutionOptions& sr) {
    const auto start = std::chrono::steady_clock::now();
    const diffuse::UNetConfig& c = model.config();
    if (c.concat_channels != c.in_channels) {
        diffuse::detail::throw_invalid("examples::write_super_resolution_report", "model.config().concat_channels",
                                       c.concat_channels, "the image's channels, " + std::to_string(c.in_channels) +
                                                              ": a super-resolution model is told the upsampled image");
    }
    const Index side = c.image_size, channels = c.in_channels;
    const Index n = std::min(sr.images, test.x.dimension(0));
    const diffuse::Tensor4<float> x = diffuse::batch_slice(test.x, 0, n);  // [n, 1, 28, 28]
    const std::vector<int> y(test.y.begin(), test.y.begin() + n);
    const diffuse::Tensor4<float> bicubic = diffuse::upsampled_low_resolution(x, sr.side);  // [n, 1, 28, 28]
    const Index factor = side / sr.side;

    // diffusion: each chunk sampled from its own noise stream, told its bicubic upsampling
    const diffuse::ModelFn<float> plain = guided_model(model, 1.0);
    diffuse::Tensor4<float> restored(n, channels, side, side);
    Phase phase("super-resolution of test images", n, o.sampler.steps, (n + o.chunk - 1) / o.chunk * o.sampler.steps,
                o.log_seconds);
    for (Index first = 0, chunk = 0; first < n; first += o.chunk, ++chunk) {
        const Index count = std::min(o.chunk, n - first);
        diffuse::Conditioning<float> conditioning;
        conditioning.concat = diffuse::batch_slice(bicubic, first, count);
        const diffuse::Samples<float> s =
            run_sampler(schedule, plain, o.sampler, {count, channels, side, side},
                        diffuse::derive_seed(o.seed, static_cast<std::uint64_t>(chunk)), conditioning, false,
                        count_steps(phase, count));
        copy_images(s.x, 0, count, restored, first);
    }
    phase.finish();

    // superres.png: rows low resolution, bicubic, diffusion, original; a column per class (its first test image)
    std::vector<Index> columns;
    for (int k = 0; k < 10; ++k) {
        const auto it = std::find(y.begin(), y.end(), k);
        if (it != y.end()) columns.push_back(static_cast<Index>(it - y.begin()));
    }
    const Index cols = static_cast<Index>(columns.size());
    const diffuse::Tensor4<float> low = diffuse::area_downsample(x, factor);
    diffuse::Tensor4<float> figure(4 * cols, channels, side, side);
    for (Index k = 0; k < cols; ++k) {
        const Index i = columns[static_cast<std::size_t>(k)];
        copy_images(blocks(diffuse::batch_slice(low, i, 1), factor), 0, 1, figure, k);
        copy_images(bicubic, i, 1, figure, cols + k);
        copy_images(restored, i, 1, figure, 2 * cols + k);
        copy_images(x, i, 1, figure, 3 * cols + k);
    }
    write_png_grid(out_dir + "/superres.png", figure, cols, 3, 2);

    nlohmann::ordered_json metrics;
    metrics["sampler"] = sampler_metrics(o.sampler);
    metrics["sampler"]["seed"] = o.seed;
    metrics["super_resolution"] = {
        {"low_resolution", {sr.side, sr.side}},
        {"factor", factor},
        {"test_images", n},
        {"figure", "superres.png: rows low resolution, bicubic, diffusion, original; a column per class (its first test image)"},
        {"low_resolution_what", "the image averaged over " + std::to_string(factor) + "x" + std::to_string(factor) +
                                    " blocks; the model is told it bicubic-upsampled (Keys, A = -0.75) to the full size"}};
    metrics["pictures_seconds"] = seconds_since(start);
    if (!o.evaluate || classifier == nullptr) return metrics;

    const auto eval_start = std::chrono::steady_clock::now();
    const auto real = examples::eval::feature_statistics(classifier->features(real_x));
    nlohmann::ordered_json& m = metrics["super_resolution"];
    m["bicubic"] = scores(bicubic, x, y, factor, *classifier, real);
    m["diffusion"] = scores(restored, x, y, factor, *classifier, real);
    m["originals"] = {{"classifier_accuracy", examples::eval::sample_class_agreement(classifier->predict(x), y)},
                      {"frechet_distance", examples::eval::frechet_distance(
                                               examples::eval::feature_statistics(classifier->features(x)), real)}};
    m["real_images"] = real_x.dimension(0);
    m["what"] = "PSNR (dB, mean over the images, peak 1) and MSE per pixel on [0, 1] against the originals; "
                "consistency_mse: the upscaled image's own area average against the low-resolution input; "
                "classifier_accuracy: the share the evaluation classifier labels with the original's class; "
                "frechet_distance: classifier features against as many real training images (the originals' "
                "distance is the floor at this sample size)";
    metrics["evaluation_seconds"] = seconds_since(eval_start);
    return metrics;
}

std::string super_resolution_line(const nlohmann::ordered_json& metrics) {
    const nlohmann::ordered_json& m = metrics["super_resolution"];
    const auto part = [&](const char* name) {
        const nlohmann::ordered_json& p = m[name];
        char text[200];
        std::snprintf(text, sizeof text, "%s %.2f dB, classifier %.3f, Frechet %.1f", name, p["psnr_db"].get<double>(),
                      p["classifier_accuracy"].get<double>(), p["frechet_distance"].get<double>());
        return std::string(text);
    };
    char originals[160];
    std::snprintf(originals, sizeof originals, "originals: classifier %.3f, Frechet %.1f (%lld test images, %lldx%lld)",
                  m["originals"]["classifier_accuracy"].get<double>(), m["originals"]["frechet_distance"].get<double>(),
                  static_cast<long long>(m["test_images"].get<Index>()), static_cast<long long>(m["low_resolution"][0].get<Index>()),
                  static_cast<long long>(m["low_resolution"][1].get<Index>()));
    return part("bicubic") + "; " + part("diffusion") + "; " + originals;
}

}  // namespace examples
