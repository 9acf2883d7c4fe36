// The 28x28 example: trains the reference U-Net, class-conditional with classifier-free guidance
// (labels dropped 10% of the time), on Fashion-MNIST on the CPU for a wall-clock budget or a number
// of steps, then draws what it learned and scores it.
//
// Writes into --out:
//   checkpoint.safetensors      the whole training state (weights, EMA, Adam, step, generator, and the
//                               data order's epoch and position), atomically, every
//                               --checkpoint-every steps and at the end; --resume continues from it
//                               bit for bit
//   loss.csv, loss.png          the training loss per step (loss.png by gnuplot, examples/plots/loss.gp)
//   samples_by_class.png        one row per class, classifier-free guidance (see --guidance)
//   samples_unconditional.png   the "no class" label
//   denoising.png               a few samples from x_T (left) to x_0 (right)
//   inpainting.png              test images: original | bottom half masked | completed
//   metrics.json                class agreement, Frechet distance of classifier features, bits/dim
//
//   diffuse_train --minutes 10 --out out/train

#include "common/cli.hpp"
#include "common/dataset.hpp"
#include "common/progress.hpp"
#include "common/report.hpp"

#include <diffuse/core/memory.hpp>
#include <diffuse/core/random.hpp>
#include <diffuse/core/threading.hpp>
#include <diffuse/io/checkpoint.hpp>
#include "common/classifier.hpp"
#include <diffuse/models/unet.hpp>
#include <diffuse/nn/parameter.hpp>
#include <diffuse/optim/trainer.hpp>

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
#include <sstream>
#include <string>
#include <vector>

#ifndef DIFFUSE_EXAMPLES_PLOTS_DIR
#define DIFFUSE_EXAMPLES_PLOTS_DIR "examples/plots"
#endif

namespace {

using diffuse::Index;
using Clock = std::chrono::steady_clock;

/// Exit code of a run that could not start because the data set is not installed (CTest skips).
constexpr int missing_data_exit_code = 77;

diffuse::UNetConfig model_config(const std::string& name) {
    diffuse::UNetConfig c = name == "reference" ? diffuse::UNetConfig::reference() : diffuse::UNetConfig::small();
    if (name == "tiny") {  // for tests: 2 levels, one block each, 8 base channels
        c.model_channels = 8;
        c.channel_mult = {1, 2};
        c.num_res_blocks = 1;
        c.attention_resolutions = {14};
    }
    c.num_classes = 10;
    return c;
}

/// The order of the training images in epoch `epoch`: a permutation of 0 .. n-1 drawn (Fisher-Yates)
/// from a stream of the data seed of its own, so epoch e's order is a function of (seed, e) alone.
std::vector<Index> epoch_order(std::uint64_t seed, std::uint64_t epoch, Index n) {
    diffuse::Generator generator(diffuse::derive_seed(diffuse::derive_seed(seed, 0x6461746131ULL), epoch));
    std::vector<double> u(static_cast<std::size_t>(n));
    generator.uniform(u.data(), n);
    std::vector<Index> order(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    for (Index i = n - 1; i > 0; --i) {
        const Index j = std::min(i, static_cast<Index>(u[static_cast<std::size_t>(i)] * static_cast<double>(i + 1)));
        std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    return order;
}

/// Where the data stream is: the epoch and the position in its order of the next image.
struct DataCursor {
    std::uint64_t epoch = 0;
    Index position = 0;
};

/// The next `batch` images and labels, crossing into the next epoch (and its new order) when needed.
class Batches {
  public:
    Batches(const diffuse::IdxImages& images, const std::vector<int>& labels, Index count, std::uint64_t seed,
            DataCursor cursor)
        : images_(images), labels_(labels), count_(count), seed_(seed), cursor_(cursor),
          order_(epoch_order(seed, cursor.epoch, count)) {}

    const DataCursor& cursor() const { return cursor_; }

    void next(Index batch, diffuse::Tensor4<float>& x, std::vector<int>& y) {
        const Index pixels = images_.rows * images_.cols;
        x = diffuse::Tensor4<float>(batch, 1, images_.rows, images_.cols);  // [B, 1, H, W]
        y.resize(static_cast<std::size_t>(batch));
        for (Index b = 0; b < batch; ++b) {
            if (cursor_.position == count_) {
                ++cursor_.epoch;
                cursor_.position = 0;
                order_ = epoch_order(seed_, cursor_.epoch, count_);
            }
            const Index i = order_[static_cast<std::size_t>(cursor_.position++)];
            const std::uint8_t* in = images_.pixels.data() + i * pixels;
            // p -> p / 127.5 - 1, as diffuse::images_to_tensor does
            for (Index k = 0; k < pixels; ++k) x.data()[b * pixels + k] = static_cast<float>(in[k]) / 127.5f - 1.0f;
            y[static_cast<std::size_t>(b)] = labels_[static_cast<std::size_t>(i)];
        }
    }

  private:
    const diffuse::IdxImages& images_;
    const std::vector<int>& labels_;
    Index count_;
    std::uint64_t seed_;
    DataCursor cursor_;
    std::vector<Index> order_;
};

std::string metadata_at(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
    const auto it = m.find(key);
    if (it == m.end()) throw std::runtime_error("\"" + path + "\" has no metadata " + key + ": not a diffuse_train checkpoint");
    return it->second;
}

/// loss.csv kept up to step `keep` (a resumed run continues the file of the run it resumes).
void truncate_loss_csv(const std::string& path, long keep) {
    std::ifstream in(path);
    if (!in) return;
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        if (lines.empty() || std::atol(line.c_str()) <= keep) lines.push_back(line);
    }
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const std::string& l : lines) out << l << '\n';
}

}  // namespace

int main(int argc, char** argv) {
    diffuse::keep_freed_memory();
    CLI::App app{"Trains the reference U-Net (class-conditional, classifier-free guidance) on Fashion-MNIST for a "
                 "wall-clock budget or a number of steps, then writes samples, the denoising process, an inpainting "
                 "demo, the loss curve and metrics.json into --out.",
                 "diffuse_train"};
    std::string data_dir = examples::default_data_dir;
    std::string out_dir = "out/train";
    std::string config_name = "reference";
    std::string resume;
    std::string classifier_path;
    double minutes = 10.0;
    long steps = 0;
    Index batch_size = 16;
    Index max_images = 0;
    Index test_images = 10000;
    int threads = 0;
    long checkpoint_every = 100;
    long warmup = 50;
    double lr = 1e-3;
    double ema_decay = 0.999;
    std::uint64_t seed = 0;
    std::string schedule = "cosine";
    int timesteps = 1000;
    bool evaluate = true;
    int classifier_epochs = 2;
    examples::ReportOptions report;
    std::string plots_dir = DIFFUSE_EXAMPLES_PLOTS_DIR;
    double log_seconds = 10.0;

    app.add_option("--data-dir", data_dir, "Directory of the IDX files (train-images-idx3-ubyte.gz, ...): "
                                           "Fashion-MNIST, MNIST or your own")->capture_default_str();
    app.add_option("--out", out_dir, "Output folder")->capture_default_str();
    app.add_option("--minutes", minutes, "Wall-clock budget of the whole run, final pictures and evaluation "
                                         "included (not counted: training a missing classifier)")->capture_default_str();
    app.add_option("--steps", steps, "Train until this many steps instead (counted from step 0, so a resumed run "
                                     "stops where an uninterrupted one would); 0: use --minutes")->capture_default_str();
    app.add_option("--batch-size", batch_size, "Images per step")->capture_default_str();
    app.add_option("--lr", lr, "Adam's learning rate after the warm-up")->capture_default_str();
    app.add_option("--warmup", warmup, "Steps of linear learning-rate warm-up")->capture_default_str();
    app.add_option("--ema-decay", ema_decay, "EMA decay, with warm-up: min(decay, (1 + n) / (10 + n)) at update n")
        ->capture_default_str();
    app.add_option("--seed", seed, "Seed of the weights, the data order, t, the noise and dropout")->capture_default_str();
    app.add_option("--threads", threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_option("--checkpoint-every", checkpoint_every, "Steps between checkpoints (one is also written at the end)")
        ->capture_default_str();
    app.add_option("--resume", resume, "Continue from this checkpoint (its configuration and options are used)");
    app.add_option("--schedule", schedule, "Noise schedule")->check(CLI::IsMember({"linear", "cosine"}))->capture_default_str();
    app.add_option("--timesteps", timesteps, "Diffusion steps T")->capture_default_str();
    app.add_option("--config", config_name, "U-Net size: reference (1.6 M parameters), small, or tiny (for tests)")
        ->check(CLI::IsMember({"reference", "small", "tiny"}))->capture_default_str();
    app.add_option("--max-images", max_images, "Train on the first this many training images (0: all)")->capture_default_str();
    app.add_option("--test-images", test_images, "Test images for the scores (at most 10000)")->capture_default_str();
    app.add_option("--classifier", classifier_path, "Evaluation classifier weights (safetensors, from "
                                                    "diffuse_train_classifier); trained and saved here if missing "
                                                    "[default: <out>/../classifier.safetensors]");
    app.add_option("--classifier-epochs", classifier_epochs, "Epochs when the classifier must be trained")->capture_default_str();
    app.add_flag("!--no-eval", evaluate, "Pictures only: no classifier, no metrics.json figures");
    examples::add_report_options(app, report);
    app.add_option("--plots-dir", plots_dir, "Where loss.gp is")->capture_default_str();
    app.add_option("--log-seconds", log_seconds, "Seconds between progress lines when stderr is not a terminal")
        ->capture_default_str();

    return examples::run(app, argc, argv, [&] {
        const auto run_start = Clock::now();
        if (threads > 0) diffuse::set_num_threads(threads);
        if (classifier_path.empty()) {
            const std::filesystem::path parent = std::filesystem::path(out_dir).parent_path();
            classifier_path = (parent.empty() ? std::filesystem::path(".") : parent).string() + "/classifier.safetensors";
        }
        std::filesystem::create_directories(out_dir);
        const std::string checkpoint_path = out_dir + "/checkpoint.safetensors";

        // Resuming takes the configuration, the trainer's options and the data settings from the file.
        DataCursor cursor;
        if (!resume.empty()) {
            const auto m = examples::file_metadata(resume);
            config_name = metadata_at(m, "diffuse_train.config", resume);
            batch_size = std::stol(metadata_at(m, "diffuse_train.batch_size", resume));
            max_images = std::stol(metadata_at(m, "diffuse_train.max_images", resume));
            seed = std::stoull(metadata_at(m, "diffuse_train.seed", resume));
            cursor.epoch = std::stoull(metadata_at(m, "diffuse_train.epoch", resume));
            cursor.position = std::stol(metadata_at(m, "diffuse_train.position", resume));
            const examples::DiffusionSetup setup = examples::DiffusionSetup::from_metadata(m, resume);
            schedule = setup.schedule;
            timesteps = setup.timesteps;
        }
        if (batch_size < 1) diffuse::detail::throw_invalid("diffuse_train", "--batch-size", batch_size, ">= 1");
        if (!(minutes > 0.0) && steps <= 0) diffuse::detail::throw_invalid("diffuse_train", "--minutes", minutes, "> 0, or --steps");

        // The data.
        examples::LabelledImages train, test;
        try {
            train = examples::read_labelled(data_dir, "train");
            test = examples::read_labelled(data_dir, "t10k");
        } catch (const examples::missing_dataset& e) {
            std::cerr << "diffuse_train: " << e.what() << '\n';
            std::exit(missing_data_exit_code);
        }
        const Index n_train = max_images > 0 ? std::min(max_images, train.images.count) : train.images.count;
        const Index n_test = std::min(test_images, test.images.count);
        examples::TestSet test_set{diffuse::images_to_tensor<float>(test.images, 0, n_test),
                                   std::vector<int>(test.labels.begin(), test.labels.begin() + n_test)};

        // The classifier first, so that training it (once) does not count against the budget.
        examples::eval::Classifier<float> classifier(examples::eval::ClassifierConfig::fashion_mnist());
        const auto classifier_start = Clock::now();
        const bool classifier_missing = evaluate && !std::filesystem::exists(classifier_path);
        if (evaluate) {
            const auto x = diffuse::images_to_tensor<float>(train.images, 0, n_train);
            examples::load_or_train_classifier(classifier_path, classifier, x,
                                               std::vector<int>(train.labels.begin(), train.labels.begin() + n_train),
                                               test_set.x, test_set.y, classifier_epochs);
        }
        // The budget runs from the start, less the time a missing classifier took to train.
        const auto budget_start = classifier_missing ? run_start + (Clock::now() - classifier_start) : run_start;
        const double budget_seconds = minutes * 60.0;

        // The model and its trainer.
        const examples::DiffusionSetup setup{schedule, timesteps};
        const diffuse::NoiseSchedule<float> noise_schedule = setup.make();
        diffuse::UNet<float> model(resume.empty() ? model_config(config_name) : diffuse::config_from_checkpoint(resume), seed);
        diffuse::optim::TrainerOptions options;
        options.adam.lr = lr;
        options.warmup_steps = warmup;
        options.ema_decay = ema_decay;
        options.label_dropout = 0.1;
        options.seed = seed;
        if (!resume.empty()) {
            options = diffuse::trainer_options_from_checkpoint(resume);
        }
        diffuse::optim::Trainer<diffuse::UNet<float>> trainer(model, noise_schedule, options);
        if (!resume.empty()) diffuse::load_checkpoint(resume, trainer);
        const long first_step = trainer.step_count();
        if (!resume.empty() && cursor.epoch * static_cast<std::uint64_t>(n_train) + static_cast<std::uint64_t>(cursor.position) !=
                                   static_cast<std::uint64_t>(first_step * batch_size)) {
            throw std::runtime_error("\"" + resume + "\": the data position (epoch " + std::to_string(cursor.epoch) +
                                     ", image " + std::to_string(cursor.position) + ") does not match step " +
                                     std::to_string(first_step) + " at batch " + std::to_string(batch_size) + " of " +
                                     std::to_string(n_train) + " images");
        }
        Batches batches(train.images, train.labels, n_train, seed, cursor);

        std::printf("diffuse_train: U-Net \"%s\", %lld parameters, %d classes; %lld training images from %s; %s "
                    "schedule, T = %d; batch %lld, lr %g (warm-up %ld), EMA %g; %d threads\n",
                    config_name.c_str(), static_cast<long long>(diffuse::nn::parameter_count(model)),
                    static_cast<int>(model.config().num_classes), static_cast<long long>(n_train), data_dir.c_str(),
                    schedule.c_str(), timesteps, static_cast<long long>(batch_size), options.adam.lr,
                    options.warmup_steps, options.ema_decay, diffuse::num_threads());
        if (!resume.empty()) std::printf("resumed from %s at step %ld\n", resume.c_str(), first_step);
        if (steps > 0) {
            std::printf("budget: until step %ld\n", steps);
        } else {
            std::printf("budget: %.1f minutes in all, pictures and evaluation included\n", minutes);
        }
        std::fflush(stdout);

        const auto save = [&](const std::string& path) {
            std::map<std::string, std::string> m;
            setup.add_to(m);
            m["diffuse_train.config"] = config_name;
            m["diffuse_train.batch_size"] = std::to_string(batch_size);
            m["diffuse_train.max_images"] = std::to_string(max_images);
            m["diffuse_train.seed"] = std::to_string(seed);
            m["diffuse_train.epoch"] = std::to_string(batches.cursor().epoch);
            m["diffuse_train.position"] = std::to_string(batches.cursor().position);
            m["diffuse_train.data_dir"] = data_dir;
            diffuse::save_checkpoint(path, trainer, m);
        };

        // Training.
        const std::string loss_path = out_dir + "/loss.csv";
        if (first_step == 0) {
            std::ofstream(loss_path, std::ios::trunc) << "step,loss,loss_smoothed,lr,grad_norm,seconds\n";
        } else {
            truncate_loss_csv(loss_path, first_step);
        }
        std::ofstream loss_csv(loss_path, std::ios::app);
        // Seconds the pictures and evaluation will take: their forward passes at the training's
        // measured cost per image-forward. A training step is a forward and a backward (about 3
        // forwards), but a sampling forward keeps no caches and has no dropout: measured, a step costs
        // about 4 sampling forwards per image.
        const double report_forwards =
            examples::report_forward_count(report, timesteps, model.config().num_classes > 0) +
            (evaluate ? static_cast<double>(n_test) * 0.05 : 0.0);  // classifier features, ~1/20 of a U-Net forward
        examples::ProgressBar bar(log_seconds);
        diffuse::Tensor4<float> x;
        std::vector<int> y;
        double loss_average = 0.0, smoothed = 0.0, step_seconds = 0.0;
        long last_checkpoint = first_step;
        long taken = 0;
        bool stopped_non_finite = false;
        const auto train_start = Clock::now();
        for (;;) {
            const long step = trainer.step_count();
            const double elapsed = std::chrono::duration<double>(Clock::now() - budget_start).count();
            const double per_forward = taken > 0 ? step_seconds / static_cast<double>(taken) / (4.0 * static_cast<double>(batch_size)) : 0.0;
            const double reserve = 1.15 * report_forwards * per_forward + 5.0;
            if (steps > 0) {
                if (step >= steps) break;
            } else if (taken > 0 && elapsed + step_seconds / static_cast<double>(taken) + reserve > budget_seconds) {
                break;
            }
            batches.next(batch_size, x, y);
            const auto t0 = Clock::now();
            diffuse::optim::StepStats stats;
            try {
                stats = trainer.step(x, y);
            } catch (const diffuse::numerical_error& e) {
                bar.finish();
                std::cerr << "diffuse_train: training stopped: " << e.what() << '\n';
                stopped_non_finite = true;
                break;
            }
            if (!std::isfinite(stats.loss)) {
                bar.finish();
                std::cerr << "diffuse_train: training stopped: the loss is " << stats.loss << " at step " << step + 1 << '\n';
                stopped_non_finite = true;
                break;
            }
            step_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
            ++taken;
            // the smoothed loss: an exponential average over about 50 steps of this run, divided by
            // 1 - 0.98^n as Adam corrects its moments, so the first steps are not pulled towards 0
            loss_average = 0.98 * loss_average + 0.02 * stats.loss;
            smoothed = loss_average / (1.0 - std::pow(0.98, static_cast<double>(taken)));
            const double shown = smoothed;
            loss_csv << trainer.step_count() << ',' << stats.loss << ',' << shown << ',' << stats.lr << ','
                     << stats.grad_norm << ',' << std::chrono::duration<double>(Clock::now() - train_start).count()
                     << '\n';
            const double per_step = step_seconds / static_cast<double>(taken);
            const double now = std::chrono::duration<double>(Clock::now() - budget_start).count();
            double fraction, left;
            if (steps > 0) {
                fraction = static_cast<double>(trainer.step_count() - first_step) / static_cast<double>(steps - first_step);
                left = per_step * static_cast<double>(steps - trainer.step_count());
            } else {
                fraction = now / budget_seconds;
                left = budget_seconds - now;
            }
            bar.update(trainer.step_count(), shown, static_cast<double>(batch_size) / per_step, fraction, left);
            if (checkpoint_every > 0 && trainer.step_count() % checkpoint_every == 0) {
                loss_csv.flush();
                save(checkpoint_path);
                last_checkpoint = trainer.step_count();
            }
        }
        loss_csv.close();
        bar.finish();
        if (stopped_non_finite) {
            std::cerr << "diffuse_train: the last good checkpoint is "
                      << (std::filesystem::exists(checkpoint_path) ? checkpoint_path + " (step " + std::to_string(last_checkpoint) + ")"
                                                                   : std::string("none (no checkpoint was written yet)"))
                      << "; lower --lr or raise --warmup and --resume from it\n";
            std::exit(1);
        }
        save(checkpoint_path);
        const double train_seconds = std::chrono::duration<double>(Clock::now() - train_start).count();
        const double images_per_second = taken > 0 ? static_cast<double>(taken * batch_size) / step_seconds : 0.0;
        std::printf("trained steps %ld to %ld (%ld steps, %lld images) in %.0f s: %.2f s/step, %.1f images/s; "
                    "smoothed loss %.4f\nwrote %s\n",
                    first_step, trainer.step_count(), taken, static_cast<long long>(taken * batch_size), train_seconds,
                    taken > 0 ? step_seconds / static_cast<double>(taken) : 0.0, images_per_second, smoothed,
                    checkpoint_path.c_str());

        // The loss curve, drawn by gnuplot when it is there.
        const std::string gp = plots_dir + "/loss.gp";
        const std::string command = "gnuplot -e \"data='" + loss_path + "'; out='" + out_dir + "/loss.png'\" '" + gp + "'";
        if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
            std::printf("gnuplot is not installed: no loss.png (apt-get install gnuplot-nox)\n");
        } else if (std::system(command.c_str()) != 0) {
            std::printf("gnuplot failed: %s\n", command.c_str());
        }

        // The pictures and figures, with the EMA's weights.
        const auto report_start = Clock::now();
        diffuse::UNet<float> ema_model(model.config(), seed);
        trainer.ema().copy_to(ema_model);
        report.seed = seed;
        report.evaluate = evaluate;
        report.log_seconds = log_seconds;
        const diffuse::Tensor4<float> real_x = diffuse::images_to_tensor<float>(
            train.images, 0, std::min<Index>(report.per_class * 10, train.images.count));
        nlohmann::ordered_json metrics;
        metrics["checkpoint"] = checkpoint_path;
        metrics["weights"] = "ema";
        metrics["step"] = trainer.step_count();
        metrics["images_seen"] = trainer.step_count() * batch_size;
        metrics["training"] = {{"config", config_name},
                               {"parameters", diffuse::nn::parameter_count(model)},
                               {"batch_size", batch_size},
                               {"lr", options.adam.lr},
                               {"warmup_steps", options.warmup_steps},
                               {"ema_decay", options.ema_decay},
                               {"schedule", schedule},
                               {"timesteps", timesteps},
                               {"training_images", n_train},
                               {"threads", diffuse::num_threads()},
                               {"seconds_this_run", train_seconds},
                               {"seconds_per_step", taken > 0 ? step_seconds / static_cast<double>(taken) : 0.0},
                               {"images_per_second", images_per_second},
                               {"smoothed_loss", smoothed}};
        if (evaluate) {
            const auto header = examples::file_metadata(classifier_path);
            const auto accuracy = header.find("diffuse.classifier.test_accuracy");
            metrics["classifier"] = {{"path", classifier_path},
                                     {"test_accuracy", accuracy == header.end() ? nlohmann::ordered_json() : nlohmann::ordered_json(std::stod(accuracy->second))}};
        }
        const auto figures = examples::write_report(ema_model, noise_schedule, test_set, real_x,
                                                    evaluate ? &classifier : nullptr, out_dir, report);
        for (const auto& [key, value] : figures.items()) metrics[key] = value;
        const double report_seconds = examples::seconds_since(report_start);
        metrics["report_seconds"] = report_seconds;
        metrics["report_seconds_predicted"] =
            report_forwards * (taken > 0 ? step_seconds / static_cast<double>(taken) / (4.0 * static_cast<double>(batch_size)) : 0.0);
        metrics["total_seconds"] = examples::seconds_since(run_start);
        examples::write_json(out_dir + "/metrics.json", metrics);

        std::printf("pictures and evaluation took %.0f s (%.0f s in all)\n", report_seconds, examples::seconds_since(run_start));
        if (evaluate) {
            std::printf("%s\n", examples::scores_line(metrics).c_str());
        }
        std::printf("wrote into %s: checkpoint.safetensors, loss.csv, loss.png, samples_by_class.png, "
                    "samples_unconditional.png, denoising.png, inpainting.png, metrics.json\n",
                    out_dir.c_str());
    });
}
