// Latent diffusion's first stage for the 28x28 example: trains the KL-regularised autoencoder
// (diffuse/models/autoencoder.hpp) on Fashion-MNIST on the CPU for a wall-clock budget or a number of
// steps, computes the latents' scale factor, and says how well it reconstructs the test images.
//
// Writes into --out:
//   autoencoder.safetensors     the EMA's weights with the configuration and the latent scale factor:
//                               what diffuse_train --autoencoder reads
//   checkpoint.safetensors      the whole training state (weights, EMA, Adam, step, generator, the data
//                               order), atomically, every --checkpoint-every steps and at the end;
//                               --resume continues from it bit for bit
//   loss.csv                    reconstruction loss and KL per step
//   reconstructions.png         one test image per class (row 1), its reconstruction (row 2) and its
//                               latent channels, each scaled up to 28x28 (the rows after)
//   metrics.json                test MSE and PSNR, the classifier's accuracy on the test images and on
//                               their reconstructions, the scale factor, the training speed
//
//   diffuse_train_autoencoder --minutes 3 --out out/autoencoder

#include "common/batches.hpp"
#include "common/classifier.hpp"
#include "common/classifier_metrics.hpp"
#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/frechet.hpp"
#include "common/image_metrics.hpp"
#include "common/png_grid.hpp"
#include "common/progress.hpp"
#include "common/report.hpp"

#include <diffuse/core/memory.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/io/checkpoint.hpp>
#include <diffuse/models/autoencoder.hpp>
#include <diffuse/nn/parameter.hpp>
#include <diffuse/optim/autoencoder_trainer.hpp>

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
#include <string>
#include <vector>

namespace {

using diffuse::Index;
using Clock = std::chrono::steady_clock;

constexpr const char* prefix = "diffuse_train_autoencoder.";

struct Arguments {
    std::string data_dir = examples::default_data_dir;
    std::string out_dir = "out/autoencoder";
    std::string resume;
    std::string classifier_path;
    double minutes = 3.0;
    long steps = 0;
    Index batch_size = 32;
    Index max_images = 0;
    Index test_images = 10000;
    Index scale_images = 10000;
    int threads = 0;
    long checkpoint_every = 200;
    long warmup = 50;
    double lr = 1e-3;
    double ema_decay = 0.999;
    double kl_weight = 1e-6;
    std::string reconstruction = "l1";
    Index factor = 2;
    Index z_channels = 2;
    Index ch = 16;
    Index num_res_blocks = 1;
    std::uint64_t seed = 0;
    bool evaluate = true;
    int classifier_epochs = 2;
    double log_seconds = 10.0;
};

void add_options(CLI::App& app, Arguments& a) {
    app.add_option("--data-dir", a.data_dir, "Directory of the IDX files")->capture_default_str();
    app.add_option("--out", a.out_dir, "Output folder")->capture_default_str();
    app.add_option("--minutes", a.minutes, "Wall-clock budget of the whole run, the scale factor and the test "
                                           "figures included (not counted: training a missing classifier)")
        ->capture_default_str();
    app.add_option("--steps", a.steps, "Train until this many steps instead (counted from step 0); 0: use --minutes")
        ->capture_default_str();
    app.add_option("--batch-size", a.batch_size, "Images per step")->capture_default_str();
    app.add_option("--lr", a.lr, "Adam's learning rate after the warm-up")->capture_default_str();
    app.add_option("--warmup", a.warmup, "Steps of linear learning-rate warm-up")->capture_default_str();
    app.add_option("--ema-decay", a.ema_decay, "EMA decay (with warm-up); the EMA's weights are the ones saved")
        ->capture_default_str();
    app.add_option("--kl-weight", a.kl_weight, "beta, the weight of the KL term against the per-pixel reconstruction "
                                               "loss")->capture_default_str();
    app.add_option("--reconstruction", a.reconstruction, "Reconstruction loss: l1 (LDM's) or mse")
        ->check(CLI::IsMember({"l1", "mse"}))->capture_default_str();
    app.add_option("--factor", a.factor, "Downsampling factor f: 28x28 images to 28/f x 28/f latents")
        ->check(CLI::IsMember({1, 2, 4}))->capture_default_str();
    app.add_option("--z-channels", a.z_channels, "Latent channels")->capture_default_str();
    app.add_option("--ch", a.ch, "Channels at the first level (doubled at the next)")->capture_default_str();
    app.add_option("--num-res-blocks", a.num_res_blocks, "ResBlocks per level")->capture_default_str();
    app.add_option("--seed", a.seed, "Seed of the weights, the data order and the posterior's noise")->capture_default_str();
    app.add_option("--threads", a.threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_option("--checkpoint-every", a.checkpoint_every, "Steps between checkpoints (one is also written at the end)")
        ->capture_default_str();
    app.add_option("--resume", a.resume, "Continue from this checkpoint (its configuration and options are used)");
    app.add_option("--max-images", a.max_images, "Train on the first this many training images (0: all)")->capture_default_str();
    app.add_option("--test-images", a.test_images, "Test images for the figures (at most 10000)")->capture_default_str();
    app.add_option("--scale-images", a.scale_images, "Training images the scale factor is computed from")->capture_default_str();
    app.add_option("--classifier", a.classifier_path, "Evaluation classifier weights; trained and saved here if missing "
                                                      "[default: <out>/../classifier.safetensors]");
    app.add_option("--classifier-epochs", a.classifier_epochs, "Epochs when the classifier must be trained")->capture_default_str();
    app.add_flag("!--no-eval", a.evaluate, "No classifier: reconstruction figures only");
    app.add_option("--log-seconds", a.log_seconds, "Seconds between progress lines when stderr is not a terminal")
        ->capture_default_str();
}

/// The autoencoder of the command line: f = 2^(levels - 1), channels ch, 2 ch, 2 ch, ...
diffuse::AutoencoderConfig autoencoder_config(const Arguments& a, Index image_size) {
    diffuse::AutoencoderConfig c;
    c.ch = a.ch;
    c.ch_mult = {1};
    for (Index f = a.factor; f > 1; f /= 2) c.ch_mult.push_back(2);
    c.num_res_blocks = a.num_res_blocks;
    c.z_channels = a.z_channels;
    c.image_size = image_size;
    return c;
}

std::string metadata_at(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
    const auto it = m.find(key);
    if (it == m.end()) throw std::runtime_error("\"" + path + "\" has no metadata " + key + ": not a diffuse_train_autoencoder checkpoint");
    return it->second;
}

/// What the reconstructions of the test images measure.
struct Reconstructions {
    diffuse::Tensor4<float> x_hat;   // [N, 1, H, W], D(mean of q(z | x))
    diffuse::Tensor4<float> latent;  // [N, z, h, w], that mean
    double mse = 0.0;                // per pixel, on [0, 1] pixel values
    double psnr = 0.0;               // the images' mean PSNR, dB, peak 1 on [0, 1]
};

/// Reconstructs test images from their posterior means, `batch` at a time. MSE and PSNR on [0, 1]
/// pixel values (the [-1, 1] data halved), the decoder's output as it is (not clipped).
Reconstructions reconstruct(diffuse::Autoencoder<float>& model, const diffuse::Tensor4<float>& x, Index batch = 100) {
    model.set_training(false);
    const Index n = x.dimension(0);
    const diffuse::AutoencoderConfig& c = model.config();
    Reconstructions r;
    r.latent = diffuse::Tensor4<float>(n, c.z_channels, c.latent_size(), c.latent_size());
    for (Index first = 0; first < n; first += batch) {
        const auto q = diffuse::posterior_from_moments(model.encode(diffuse::batch_slice(x, first, std::min(batch, n - first))));
        diffuse::batch_assign(r.latent, first, q.mean);
    }
    r.x_hat = diffuse::decode_latents(model, r.latent, batch);
    const examples::Fidelity f = examples::fidelity(r.x_hat, x);
    r.mse = f.mse;
    r.psnr = f.psnr;
    return r;
}

/// reconstructions.png: per class the first test image of it, its reconstruction, then each latent
/// channel (times the scale factor, so of unit variance; shown as z / 2.5 in [-1, 1]) scaled up to the
/// image's size by nearest neighbour.
void write_figure(const std::string& path, const diffuse::Tensor4<float>& x, const std::vector<int>& labels,
                  const Reconstructions& r, double scale) {
    const Index side = x.dimension(2), z = r.latent.dimension(1), latent = r.latent.dimension(2), f = side / latent;
    std::vector<Index> chosen;
    for (int k = 0; k < 10; ++k) {
        for (std::size_t i = 0; i < labels.size(); ++i) {
            if (labels[i] == k) {
                chosen.push_back(static_cast<Index>(i));
                break;
            }
        }
    }
    const Index columns = static_cast<Index>(chosen.size());
    if (columns == 0) return;
    diffuse::Tensor4<float> figure((2 + z) * columns, 1, side, side);
    for (Index c = 0; c < columns; ++c) {
        const Index i = chosen[static_cast<std::size_t>(c)];
        for (Index y = 0; y < side; ++y) {
            for (Index xx = 0; xx < side; ++xx) {
                figure(c, 0, y, xx) = x(i, 0, y, xx);
                figure(columns + c, 0, y, xx) = r.x_hat(i, 0, y, xx);
                for (Index ch = 0; ch < z; ++ch) {
                    figure((2 + ch) * columns + c, 0, y, xx) =
                        static_cast<float>(scale * r.latent(i, ch, y / f, xx / f) / 2.5);
                }
            }
        }
    }
    examples::write_png_grid(path, figure, columns, 3, 2);
}

}  // namespace

int main(int argc, char** argv) {
    diffuse::keep_freed_memory();
    CLI::App app{"Trains latent diffusion's KL-regularised autoencoder on Fashion-MNIST for a wall-clock budget or a "
                 "number of steps; writes its weights with the latent scale factor (autoencoder.safetensors, for "
                 "diffuse_train --autoencoder), the test reconstruction figures and a picture into --out.",
                 "diffuse_train_autoencoder"};
    Arguments a;
    add_options(app, a);

    return examples::run(app, argc, argv, [&] {
        const auto run_start = Clock::now();
        if (a.threads > 0) diffuse::set_num_threads(a.threads);
        if (a.classifier_path.empty()) a.classifier_path = examples::default_classifier_path(a.out_dir);
        std::filesystem::create_directories(a.out_dir);
        const std::string checkpoint_path = a.out_dir + "/checkpoint.safetensors";
        const std::string weights_path = a.out_dir + "/autoencoder.safetensors";
        diffuse::DataCursor cursor;
        if (!a.resume.empty()) {
            const auto m = examples::file_metadata(a.resume);
            a.batch_size = std::stol(metadata_at(m, std::string(prefix) + "batch_size", a.resume));
            a.max_images = std::stol(metadata_at(m, std::string(prefix) + "max_images", a.resume));
            a.seed = std::stoull(metadata_at(m, std::string(prefix) + "seed", a.resume));
            cursor.epoch = std::stoull(metadata_at(m, std::string(prefix) + "epoch", a.resume));
            cursor.position = std::stol(metadata_at(m, std::string(prefix) + "position", a.resume));
        }
        if (a.batch_size < 1) diffuse::detail::throw_invalid("diffuse_train_autoencoder", "--batch-size", a.batch_size, ">= 1");
        if (!(a.minutes > 0.0) && a.steps <= 0) {
            diffuse::detail::throw_invalid("diffuse_train_autoencoder", "--minutes", a.minutes, "> 0, or --steps");
        }

        const examples::Splits splits = examples::read_splits_or_exit(a.data_dir, "diffuse_train_autoencoder");
        const examples::LabelledImages& train_data = splits.train;
        const examples::LabelledImages& test = splits.test;
        const Index n_train = a.max_images > 0 ? std::min(a.max_images, train_data.images.count) : train_data.images.count;
        const Index n_test = std::min(a.test_images, test.images.count);
        const diffuse::Tensor4<float> train_x = diffuse::images_to_tensor<float>(train_data.images, 0, n_train);  // [N, 1, H, W]
        const diffuse::Tensor4<float> test_x = diffuse::images_to_tensor<float>(test.images, 0, n_test);
        const std::vector<int> test_y(test.labels.begin(), test.labels.begin() + n_test);

        examples::eval::Classifier<float> classifier(examples::eval::ClassifierConfig::fashion_mnist());
        const auto classifier_start = Clock::now();
        const bool classifier_missing = a.evaluate && !std::filesystem::exists(a.classifier_path);
        if (a.evaluate) {
            examples::load_or_train_classifier(a.classifier_path, classifier, train_x,
                                               std::vector<int>(train_data.labels.begin(), train_data.labels.begin() + n_train),
                                               test_x, test_y, a.classifier_epochs);
        }

        diffuse::Autoencoder<float> model(a.resume.empty() ? autoencoder_config(a, train_data.images.rows)
                                                           : diffuse::autoencoder_config_from_checkpoint(a.resume),
                                          a.seed);
        diffuse::optim::AutoencoderTrainerOptions options;
        if (a.resume.empty()) {
            options.adam.lr = a.lr;
            options.warmup_steps = a.warmup;
            options.ema_decay = a.ema_decay;
            options.kl_weight = a.kl_weight;
            options.reconstruction = a.reconstruction == "l1" ? diffuse::optim::Reconstruction::l1 : diffuse::optim::Reconstruction::mse;
            options.seed = a.seed;
        } else {
            options = diffuse::autoencoder_trainer_options_from_checkpoint(a.resume);
        }
        diffuse::optim::AutoencoderTrainer<float> trainer(model, options);
        if (!a.resume.empty()) diffuse::load_checkpoint(a.resume, trainer);
        const long first_step = trainer.step_count();
        if (cursor.epoch * static_cast<std::uint64_t>(n_train) + static_cast<std::uint64_t>(cursor.position) !=
            static_cast<std::uint64_t>(first_step * a.batch_size)) {
            throw std::runtime_error("\"" + a.resume + "\": the data position does not match step " + std::to_string(first_step));
        }
        examples::Batches batches(train_x, train_data.labels, n_train, a.seed, cursor);
        const diffuse::AutoencoderConfig& c = model.config();
        std::printf("diffuse_train_autoencoder: f = %lld (%lldx%lld -> %lldx%lldx%lld), ch %lld, %lld parameters; %lld "
                    "training images; batch %lld, lr %g, %s + %g KL; %d threads\n",
                    static_cast<long long>(c.downsampling_factor()), static_cast<long long>(c.image_size),
                    static_cast<long long>(c.image_size), static_cast<long long>(c.latent_size()),
                    static_cast<long long>(c.latent_size()), static_cast<long long>(c.z_channels),
                    static_cast<long long>(c.ch), static_cast<long long>(diffuse::nn::parameter_count(model)),
                    static_cast<long long>(n_train), static_cast<long long>(a.batch_size), options.adam.lr,
                    options.reconstruction == diffuse::optim::Reconstruction::l1 ? "L1" : "MSE", options.kl_weight,
                    diffuse::num_threads());
        std::fflush(stdout);

        const auto save = [&] {
            std::map<std::string, std::string> m;
            m[std::string(prefix) + "batch_size"] = std::to_string(a.batch_size);
            m[std::string(prefix) + "max_images"] = std::to_string(a.max_images);
            m[std::string(prefix) + "seed"] = std::to_string(a.seed);
            m[std::string(prefix) + "epoch"] = std::to_string(batches.cursor().epoch);
            m[std::string(prefix) + "position"] = std::to_string(batches.cursor().position);
            diffuse::save_checkpoint(checkpoint_path, trainer, m);
        };

        // Training, keeping time for the scale factor and the test figures: encoder and decoder
        // passes, each image's about a third of a training step's.
        const std::string loss_path = a.out_dir + "/loss.csv";
        if (first_step == 0) std::ofstream(loss_path, std::ios::trunc) << "step,loss,reconstruction,kl,lr,grad_norm\n";
        std::ofstream loss_csv(loss_path, std::ios::app);
        const auto budget_start = classifier_missing ? run_start + (Clock::now() - classifier_start) : run_start;
        const double budget = a.minutes * 60.0;
        const double final_images = 0.5 * static_cast<double>(std::min(a.scale_images, n_train)) + static_cast<double>(n_test);
        examples::ProgressBar bar(a.log_seconds);
        diffuse::Tensor4<float> x;
        std::vector<int> y;
        double step_seconds = 0.0, smoothed = 0.0, average = 0.0;
        long taken = 0;
        for (;;) {
            const double per_step = taken > 0 ? step_seconds / static_cast<double>(taken) : 0.0;
            const double elapsed = std::chrono::duration<double>(Clock::now() - budget_start).count();
            const double reserve = 1.2 * final_images * per_step / (3.0 * static_cast<double>(a.batch_size)) + 5.0;
            if (a.steps > 0 ? trainer.step_count() >= a.steps : taken > 0 && elapsed + per_step + reserve > budget) break;
            batches.next(a.batch_size, x, y);
            const auto t0 = Clock::now();
            const diffuse::optim::AutoencoderStepStats stats = trainer.step(x);
            step_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
            ++taken;
            average = 0.98 * average + 0.02 * stats.reconstruction;
            smoothed = average / (1.0 - std::pow(0.98, static_cast<double>(taken)));
            loss_csv << trainer.step_count() << ',' << stats.loss << ',' << stats.reconstruction << ',' << stats.kl << ','
                     << stats.lr << ',' << stats.grad_norm << '\n';
            const double rate = static_cast<double>(a.batch_size) * static_cast<double>(taken) / step_seconds;
            const double now = std::chrono::duration<double>(Clock::now() - budget_start).count();
            if (a.steps > 0) {
                bar.update(trainer.step_count(), smoothed, rate,
                           static_cast<double>(trainer.step_count() - first_step) / static_cast<double>(a.steps - first_step),
                           step_seconds / static_cast<double>(taken) * static_cast<double>(a.steps - trainer.step_count()));
            } else {
                bar.update(trainer.step_count(), smoothed, rate, now / budget, budget - now);
            }
            if (a.checkpoint_every > 0 && trainer.step_count() % a.checkpoint_every == 0) {
                loss_csv.flush();
                save();
            }
        }
        bar.finish();
        loss_csv.close();
        save();
        const double images_per_second = taken > 0 ? static_cast<double>(taken * a.batch_size) / step_seconds : 0.0;
        std::printf("trained steps %ld to %ld in %.0f s: %.1f images/s; smoothed reconstruction loss %.4f\n", first_step,
                    trainer.step_count(), step_seconds, images_per_second, smoothed);

        // The EMA's weights: the scale factor from training images, then the test figures.
        const auto final_start = Clock::now();
        diffuse::Autoencoder<float> ema_model(model.config(), a.seed);
        trainer.ema().copy_to(ema_model);
        const Index n_scale = std::min(a.scale_images, n_train);
        diffuse::Tensor4<float> scale_x(n_scale, 1, train_x.dimension(2), train_x.dimension(3));
        std::copy_n(train_x.data(), scale_x.size(), scale_x.data());
        const double scale = diffuse::latent_scale_factor(ema_model, scale_x, diffuse::derive_seed(a.seed, 0x7363616c65ULL));
        std::map<std::string, std::string> weights_metadata = diffuse::latent_scale_factor_metadata(scale);
        weights_metadata[std::string(prefix) + "step"] = std::to_string(trainer.step_count());
        weights_metadata[std::string(prefix) + "data_dir"] = a.data_dir;
        diffuse::save_weights(weights_path, model, trainer.ema(), weights_metadata);

        const Reconstructions r = reconstruct(ema_model, test_x);
        write_figure(a.out_dir + "/reconstructions.png", test_x, test_y, r, scale);
        nlohmann::ordered_json metrics;
        metrics["autoencoder"] = weights_path;
        metrics["weights"] = "ema";
        metrics["config"] = nlohmann::ordered_json::parse(diffuse::autoencoder_config_to_json(model.config()));
        metrics["parameters"] = diffuse::nn::parameter_count(model);
        metrics["step"] = trainer.step_count();
        metrics["training"] = {{"batch_size", a.batch_size},
                               {"lr", options.adam.lr},
                               {"reconstruction", options.reconstruction == diffuse::optim::Reconstruction::l1 ? "l1" : "mse"},
                               {"kl_weight", options.kl_weight},
                               {"training_images", n_train},
                               {"threads", diffuse::num_threads()},
                               {"seconds_this_run", step_seconds},
                               {"images_per_second", images_per_second}};
        metrics["latent_scale_factor"] = {{"value", scale},
                                          {"images", n_scale},
                                          {"what", "1 / the standard deviation of the posterior samples of the first "
                                                   "training images' latents"}};
        metrics["test"] = {{"images", n_test},
                           {"mse", r.mse},
                           {"psnr_db", r.psnr},
                           {"what", "reconstructions D(mean of q(z | x)); MSE per pixel and the images' mean PSNR on "
                                    "[0, 1] pixel values, the decoder's output not clipped"}};
        if (a.evaluate) {
            const std::vector<int> on_images = classifier.predict(test_x);
            const std::vector<int> on_reconstructions = classifier.predict(r.x_hat);
            double same = 0.0;
            for (std::size_t i = 0; i < on_images.size(); ++i) same += on_images[i] == on_reconstructions[i] ? 1.0 : 0.0;
            // the Frechet distance of 1000 training images' reconstructions to the test images, against
            // that of the images themselves: the floor the latent pipeline's samples can reach
            const Index n_real = std::min<Index>(1000, n_train);
            diffuse::Tensor4<float> real(n_real, 1, train_x.dimension(2), train_x.dimension(3));
            std::copy_n(train_x.data(), real.size(), real.data());
            const Reconstructions real_r = reconstruct(ema_model, real);
            const auto test_stats = examples::eval::feature_statistics(classifier.features(test_x));
            const double real_fd = examples::eval::frechet_distance(examples::eval::feature_statistics(classifier.features(real)), test_stats);
            const double reconstructed_fd =
                examples::eval::frechet_distance(examples::eval::feature_statistics(classifier.features(real_r.x_hat)), test_stats);
            metrics["frechet_distance"] = {{"reconstructions_vs_test", reconstructed_fd},
                                           {"real_vs_test", real_fd},
                                           {"images", n_real},
                                           {"test_images", n_test},
                                           {"what", "the classifier features' Frechet distance of the first training images' "
                                                    "reconstructions, and of the images, to the test images: the floor "
                                                    "of the latent pipeline's samples at this sample size"}};
            metrics["classifier"] = {
                {"path", a.classifier_path},
                {"accuracy_on_test_images", examples::eval::accuracy(on_images, test_y)},
                {"accuracy_on_reconstructions", examples::eval::accuracy(on_reconstructions, test_y)},
                {"same_class_as_the_image", same / static_cast<double>(on_images.size())},
                {"what", "accuracy_on_reconstructions is the ceiling of the latent pipeline's class agreement"}};
        }
        metrics["final_seconds"] = examples::seconds_since(final_start);
        metrics["total_seconds"] = examples::seconds_since(run_start);
        examples::write_json(a.out_dir + "/metrics.json", metrics);
        std::printf("scale factor %.5f; test MSE %.5f, PSNR %.2f dB", scale, r.mse, r.psnr);
        if (a.evaluate) {
            std::printf("; classifier accuracy %.4f on the test images, %.4f on their reconstructions; Frechet distance "
                        "of reconstructions %.2f (of the images: %.2f)",
                        metrics["classifier"]["accuracy_on_test_images"].get<double>(),
                        metrics["classifier"]["accuracy_on_reconstructions"].get<double>(),
                        metrics["frechet_distance"]["reconstructions_vs_test"].get<double>(),
                        metrics["frechet_distance"]["real_vs_test"].get<double>());
        }
        std::printf("\nwrote into %s: autoencoder.safetensors, checkpoint.safetensors, loss.csv, reconstructions.png, "
                    "metrics.json (%.0f s in all)\n",
                    a.out_dir.c_str(), examples::seconds_since(run_start));
    });
}
