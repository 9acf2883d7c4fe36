// The forward process on a real image: one Fashion-MNIST image noised with q_sample,
//     x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps   (Ho et al. 2020, eq. 4),
// at ten evenly spaced t = round(linspace(0, T - 1, 10)) = 0, 111, ..., 999, under the linear schedule
// (top row) and the cosine schedule (bottom row). Every tile uses the same eps, so the only difference
// between two tiles is alphabar_t: the cosine schedule destroys the image more gradually, and the
// linear one is close to pure noise for the last third of the steps (Nichol & Dhariwal 2021, fig. 3).
//
//   diffuse_noising --index 0 --seed 0 --out noising.png

#include "common/cli.hpp"
#include "common/png_grid.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/io/idx.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/schedule/named.hpp>
#include <diffuse/schedule/noise_schedule.hpp>
#include <diffuse/schedule/respacing.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    CLI::App app{"Noises one Fashion-MNIST image at ten timesteps under the linear (top row) and cosine "
                 "(bottom row) schedules, with the same noise everywhere, and writes the grid as a PNG.",
                 "diffuse_noising"};
    std::string data_dir = "/usr/share/datasets/fashion-mnist";
    std::string split = "train";
    diffuse::Index index = 0;
    std::uint64_t seed = 0;
    int timesteps = 1000;
    std::string out = "noising.png";
    app.add_option("--data-dir", data_dir, "Directory of the Fashion-MNIST IDX files")->capture_default_str();
    app.add_option("--split", split, "Which file: train (60000 images) or t10k (10000)")
        ->check(CLI::IsMember({"train", "t10k"}))
        ->capture_default_str();
    app.add_option("--index", index, "Which image of the file")->capture_default_str();
    app.add_option("--seed", seed, "Seed of the noise eps")->capture_default_str();
    app.add_option("--timesteps", timesteps, "The number of diffusion steps T")->capture_default_str();
    app.add_option("--out", out, "The PNG to write")->capture_default_str();

    return examples::run(app, argc, argv, [&] {
        const std::string images_path = data_dir + "/" + split + "-images-idx3-ubyte.gz";
        const std::string labels_path = data_dir + "/" + split + "-labels-idx1-ubyte.gz";
        const diffuse::IdxImages images = diffuse::read_idx_images(images_path);
        const std::vector<std::uint8_t> labels = diffuse::read_idx_labels(labels_path);
        const diffuse::Tensor4<float> image = diffuse::images_to_tensor<float>(images, index, 1);  // [1, 1, H, W]

        // The ten columns' timesteps, both ends included: 0, 111, 222, ..., 999 for T = 1000.
        constexpr diffuse::Index columns = 10;
        const diffuse::Timesteps t = diffuse::spaced_timesteps(timesteps, columns, diffuse::Spacing::linspace);

        // One eps for every tile: a [1, 1, H, W] draw, repeated down the batch like the image.
        diffuse::Generator generator(seed);
        const auto noise_one = generator.randn<float, 4>({1, 1, images.rows, images.cols});  // [1, 1, H, W]
        const std::array<diffuse::Index, 4> repeat = {columns, 1, 1, 1};
        const diffuse::Tensor4<float> x0 = image.broadcast(repeat);       // [10, 1, H, W]
        const diffuse::Tensor4<float> noise = noise_one.broadcast(repeat);  // [10, 1, H, W]

        const std::array<std::string, 2> rows = {"linear", "cosine"};
        diffuse::Tensor4<float> grid(2 * columns, 1, images.rows, images.cols);  // [20, 1, H, W], row-major grid
        std::vector<diffuse::NoiseSchedule<float>> schedules;
        schedules.reserve(rows.size());
        for (std::size_t r = 0; r < rows.size(); ++r) {
            schedules.emplace_back(diffuse::make_betas(rows[r], timesteps));
            const diffuse::Tensor4<float> x_t = diffuse::q_sample(schedules.back(), x0, t, noise);  // [10, 1, H, W]
            const diffuse::Index at = static_cast<diffuse::Index>(r) * columns;
            grid.slice(std::array<diffuse::Index, 4>{at, 0, 0, 0}, x_t.dimensions()) = x_t;
        }
        // Pixels outside [-1, 1] are clamped by the PNG writer, for display only.
        examples::write_png_grid(out, grid, columns, /*scale=*/4, /*gap=*/2);

        static const char* const classes[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
        const int label = labels.at(static_cast<std::size_t>(index));
        std::cout << "image " << index << " of " << images_path << " (label " << label << ", "
                  << (label < 10 ? classes[label] : "?") << "), noise seed " << seed << ", T = " << timesteps
                  << "\nwrote " << out << ": columns t, rows " << rows[0] << " (top) and " << rows[1]
                  << " (bottom)\n";
        std::printf("%5s  %-22s %-22s\n", "t", "linear alphas_cumprod", "cosine alphas_cumprod");
        for (const int step : t) {
            std::printf("%5d  %-22.6g %-22.6g\n", step, static_cast<double>(schedules[0].alphas_cumprod()[step]),
                        static_cast<double>(schedules[1].alphas_cumprod()[step]));
        }
    });
}
