#include "common/image_to_image.hpp"

#include "common/classifier_metrics.hpp"
#include "common/image_metrics.hpp"
#include "common/png_grid.hpp"
#include "common/progress.hpp"

#include <diffuse/core/error.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/samplers/sdedit.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace examples {

ClassPair parse_class_pair(const std::string& text, int classes, const std::string& option) {
    const std::size_t colon = text.find(':');
    ClassPair p;
    std::size_t used_source = 0, used_target = 0;
    try {
        if (colon == std::string::npos) throw std::invalid_argument("no colon");
        p.source = std::stoi(text.substr(0, colon), &used_source);
        p.target = std::stoi(text.substr(colon + 1), &used_target);
    } catch (const std::exception&) {
        used_source = 0;
    }
    if (colon == std::string::npos || used_source != colon || used_target != text.size() - colon - 1 || p.source < 0 ||
        p.source >= classes || p.target < 0 || p.target >= classes) {
        diffuse::detail::throw_invalid("diffuse", option, "\"" + text + "\"",
                                       "SOURCE:TARGET, two classes in [0, " + std::to_string(classes) + "), e.g. 0:2");
    }
    return p;
}

nlohmann::ordered_json write_image_to_image_report(const diffuse::ModelFn<float>& model,
                                                   const diffuse::NoiseSchedule<float>& schedule,
                                                   const LabelledImages& test, examples::eval::Classifier<float>& classifier,
                                                   const std::string& out_dir, const ReportOptions& o,
                                                   const ImageToImageOptions& edits, diffuse::LatentSpace<float>* latent) {
    const auto start = std::chrono::steady_clock::now();
    for (const double s : edits.strengths) {
        if (!(s > 0.0 && s <= 1.0)) diffuse::detail::throw_invalid("diffuse_evaluate", "--strengths", s, "strengths in (0, 1]");
    }
    const Index n = edits.images, shown = std::min(edits.shown, edits.images), rows_per_pair = 1 + static_cast<Index>(edits.strengths.size());
    const int T = schedule.num_timesteps();
    long evaluations = 0;
    for (const double s : edits.strengths) evaluations += static_cast<long>(diffuse::sdedit_timesteps(T, o.sampler.steps, s).size());
    Phase phase("image-to-image", n * static_cast<long>(edits.pairs.size()), 1,
                evaluations * static_cast<long>(edits.pairs.size()) * ((n + o.chunk - 1) / o.chunk), o.log_seconds);

    diffuse::Tensor4<float> figure(static_cast<Index>(edits.pairs.size()) * rows_per_pair * shown, 1, test.images.rows,
                                   test.images.cols);  // per pair: sources, then a row per strength
    nlohmann::ordered_json table = nlohmann::ordered_json::array();
    for (std::size_t p = 0; p < edits.pairs.size(); ++p) {
        const ClassPair pair = edits.pairs[p];
        const diffuse::Tensor4<float> sources = first_of_class(test, pair.source, n, "diffuse_evaluate");  // [n, 1, H, W]
        const diffuse::Tensor4<float> x0 = latent != nullptr ? latent->encode(sources, diffuse::derive_seed(o.seed, 0x736465ULL)) : sources;
        const Index first_row = static_cast<Index>(p) * rows_per_pair * shown;
        copy_images(sources, 0, shown, figure, first_row);
        for (std::size_t k = 0; k < edits.strengths.size(); ++k) {
            const double s = edits.strengths[k];
            diffuse::Tensor4<float> edited(x0.dimension(0), x0.dimension(1), x0.dimension(2), x0.dimension(3));
            for (Index first = 0, chunk = 0; first < n; first += o.chunk, ++chunk) {
                const Index count = std::min(o.chunk, n - first);
                const std::vector<int> labels(static_cast<std::size_t>(count), pair.target);
                const diffuse::Samples<float> e =
                    run_sdedit(schedule, model, o.sampler, diffuse::batch_slice(x0, first, count), s,
                               diffuse::derive_seed(o.seed, static_cast<std::uint64_t>(chunk)), labels, count_steps(phase, count));
                copy_images(e.x, 0, count, edited, first);
            }
            const diffuse::Tensor4<float> images = latent != nullptr ? latent->decode(edited, o.chunk) : edited;  // [n, 1, H, W]
            copy_images(images, 0, shown, figure, first_row + (1 + static_cast<Index>(k)) * shown);
            const std::vector<int> predicted = classifier.predict(images);
            const Fidelity f = fidelity(images, sources);
            table.push_back({{"source", pair.source},
                             {"target", pair.target},
                             {"strength", s},
                             {"t_start", diffuse::sdedit_start(T, s)},
                             {"model_steps", diffuse::sdedit_timesteps(T, o.sampler.steps, s).size()},
                             {"target_agreement", examples::eval::sample_class_agreement(predicted, std::vector<int>(predicted.size(), pair.target))},
                             {"still_source", examples::eval::sample_class_agreement(predicted, std::vector<int>(predicted.size(), pair.source))},
                             {"rmse_to_source", std::sqrt(f.mse)},
                             {"psnr_to_source_db", f.psnr}});
        }
    }
    phase.finish();
    write_png_grid(out_dir + "/sdedit.png", figure, shown, 3, 2);
    nlohmann::ordered_json metrics;
    metrics["image_to_image"] = {
        {"figure", "sdedit.png: per pair, a row of the first " + std::to_string(shown) + " source test images, then a row per strength"},
        {"images_per_pair", n},
        {"sampler", o.sampler.name},
        {"sampler_steps", o.sampler.steps},
        {"guidance_scale", o.guidance_scale},
        {"guidance_interval", guidance_interval_metrics(o.guidance_sigmas, schedule)},
        {"seed", o.seed},
        {"what", "SDEdit: the first images of the source class in the test set noised to t_start = ceil(s T) - 1, denoised "
                 "toward the target class by the sampler over model_steps timesteps of trailing spacing within [0, t_start]; target_agreement and still_source: shares the "
                 "evaluation classifier assigns to the target and the source class; rmse_to_source and "
                 "psnr_to_source_db on [0, 1] pixels"},
        {"table", table},
        {"seconds", seconds_since(start)}};
    return metrics;
}

std::string image_to_image_lines(const nlohmann::ordered_json& metrics) {
    std::string out = "source -> target  strength  t_start  steps  target  still source  RMSE to source\n";
    for (const auto& row : metrics["image_to_image"]["table"]) {
        char line[200];
        std::snprintf(line, sizeof line, "%6d -> %-6d  %8.2f  %7d  %5zu  %6.3f  %12.3f  %14.3f\n", row["source"].get<int>(),
                      row["target"].get<int>(), row["strength"].get<double>(), row["t_start"].get<int>(),
                      row["model_steps"].get<std::size_t>(), row["target_agreement"].get<double>(),
                      row["still_source"].get<double>(), row["rmse_to_source"].get<double>());
        out += line;
    }
    return out;
}

}  // namespace examples
