#pragma once
// Image-to-image (SDEdit, Meng et al. 2022) measured on the 28x28 data: test images of one class noised
// to strength s and denoised toward another class, the article's domain adaptation and style transfer
// (a T-shirt into a pullover, a sneaker into an ankle boot). For each pair and strength: the share the
// evaluation classifier puts in the target class, the share it still puts in the source class, and
// the pixel distance to the source; sdedit.png shows them.

#include "common/classifier.hpp"
#include "common/dataset.hpp"
#include "common/report.hpp"

#include <diffuse/core/tensor.hpp>
#include <diffuse/models/latent_diffusion.hpp>
#include <diffuse/samplers/denoiser.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace examples {

/// Edit images of class `source` toward class `target`.
struct ClassPair {
    int source = 0, target = 0;
};

/// "0:2" -> {0, 2}; anything else, or a class outside [0, classes), is an error naming `option`.
ClassPair parse_class_pair(const std::string& text, int classes, const std::string& option);

struct ImageToImageOptions {
    std::vector<ClassPair> pairs = {{0, 2}, {7, 9}};         // T-shirt -> pullover, sneaker -> ankle boot
    std::vector<double> strengths = {0.2, 0.4, 0.6, 0.8, 1.0};
    Index images = 100;  // test images of each source class edited at each strength
    Index shown = 10;    // of them in sdedit.png
};

/// Runs every pair at every strength with `model` (called with the target labels; guidance inside),
/// the options' sampler over the steps SDEdit visits (samplers/sdedit.hpp), seed options.seed; writes
/// sdedit.png (per pair: a row of sources, then a row per strength) into out_dir and returns the table
/// for metrics.json. With `latent`, the sources are encoded (noise stream of the seed) and the edits
/// decoded. `classifier` scores the edits.
nlohmann::ordered_json write_image_to_image_report(const diffuse::ModelFn<float>& model,
                                                   const diffuse::NoiseSchedule<float>& schedule,
                                                   const LabelledImages& test, examples::eval::Classifier<float>& classifier,
                                                   const std::string& out_dir, const ReportOptions& options,
                                                   const ImageToImageOptions& edits, diffuse::LatentSpace<float>* latent);

/// The table in lines, as diffuse_evaluate prints it.
std::string image_to_image_lines(const nlohmann::ordered_json& metrics);

}  // namespace examples
