#pragma once
// Super-resolution on the 28x28 data (SR3, Saharia et al. 2021): a U-Net told the low-resolution image
// (the image area-averaged to side x side, bicubic-upsampled back to 28 x 28; diffuse/data/resize.hpp)
// through its concatenated input channel restores the full-resolution image from noise. Its report
// upscales test images and measures them against bicubic upsampling and against the originals.

#include "common/classifier.hpp"
#include "common/report.hpp"

#include <diffuse/core/tensor.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace examples {

struct SuperResolutionOptions {
    Index side = 7;       // the low resolution: side x side, 28 / side pixels averaged into one
    Index images = 1000;  // test images upscaled for the scores
};

/// The checkpoint metadata key holding the low-resolution side of a super-resolution model.
inline constexpr const char* super_resolution_key = "diffuse_train.super_resolution";

/// Forward passes of one image that write_super_resolution_report makes.
double super_resolution_forward_count(const ReportOptions& options, const SuperResolutionOptions& sr);

/// Upscales the first sr.images test images (one sampler run each, noise stream by chunk of `seed`)
/// and writes superres.png (rows low resolution, bicubic, diffusion, original; a column per class, the
/// first test image of each) into out_dir; with a classifier, returns for metrics.json the PSNR and MSE of
/// bicubic and diffusion against the originals, their consistency with the low-resolution input (the
/// MSE of their own area average against it), the classifier's accuracy on each and on the
/// originals, and their Frechet distances to `real_x` (as many real training images as upscaled).
nlohmann::ordered_json write_super_resolution_report(diffuse::UNet<float>& model,
                                                     const diffuse::NoiseSchedule<float>& schedule, const ImageSet& test,
                                                     const diffuse::Tensor4<float>& real_x,
                                                     examples::eval::Classifier<float>* classifier,
                                                     const std::string& out_dir, const ReportOptions& options,
                                                     const SuperResolutionOptions& sr);

/// The report's scores in one line, as diffuse_train and diffuse_evaluate print them.
std::string super_resolution_line(const nlohmann::ordered_json& metrics);

}  // namespace examples
