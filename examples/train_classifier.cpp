// The evaluation classifier: trains common/classifier.hpp on the Fashion-MNIST training set with the
// library's own layers (softmax cross-entropy, Adam, a warm-up and a cosine decay), reports its
// accuracy on the 10,000 test images, overall and per class, and writes its weights as safetensors
// under the parameters' dotted names, with its configuration and test accuracy in the metadata.
// It also prints the Frechet distance between the classifier features of 10,000 training images and
// of the test images: the distance two samples of the real distribution are apart, the floor against
// which the distance of generated images reads.
//
//   diffuse_train_classifier --epochs 2 --out classifier.safetensors

#include "common/cli.hpp"

#include <diffuse/core/threading.hpp>
#include "common/classifier_metrics.hpp"
#include "common/frechet.hpp"
#include "common/train_classifier.hpp"
#include <diffuse/io/idx.hpp>
#include <diffuse/io/safetensors.hpp>
#include "common/classifier.hpp"
#include <diffuse/version.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

const char* const class_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

std::vector<int> to_int(const std::vector<std::uint8_t>& labels, std::size_t count) {
    return std::vector<int>(labels.begin(), labels.begin() + static_cast<std::ptrdiff_t>(count));
}

std::string join(const std::vector<diffuse::Index>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Trains the evaluation classifier (a small CNN of diffuse's own layers) on Fashion-MNIST, "
                 "reports its test accuracy and writes its weights as safetensors.",
                 "diffuse_train_classifier"};
    std::string data_dir = "/usr/share/datasets/fashion-mnist";
    std::string out = "classifier.safetensors";
    examples::eval::ClassifierTrainingOptions options;
    diffuse::Index train_count = 60000;
    std::uint64_t init_seed = 0;
    int threads = 0;
    bool baseline = true;
    app.add_option("--data-dir", data_dir, "Directory of the Fashion-MNIST IDX files")->capture_default_str();
    app.add_option("--out", out, "The safetensors file to write the weights to (empty: do not write)")
        ->capture_default_str();
    app.add_option("--epochs", options.epochs, "Passes over the training images")->capture_default_str();
    app.add_option("--batch-size", options.batch_size, "Images per step")->capture_default_str();
    app.add_option("--lr", options.lr, "Adam's peak learning rate")->capture_default_str();
    app.add_option("--warmup", options.warmup_steps, "Steps of linear learning-rate warm-up")->capture_default_str();
    app.add_option("--seed", options.seed, "Seed of the minibatch order")->capture_default_str();
    app.add_option("--init-seed", init_seed, "Seed of the initial weights")->capture_default_str();
    app.add_option("--train-count", train_count, "Train on the first this many images (at most 60000)")
        ->capture_default_str();
    app.add_option("--report-every", options.report_every, "Steps between progress lines")->capture_default_str();
    app.add_option("--threads", threads, "Threads (0: DIFFUSE_NUM_THREADS, else all cores)")->capture_default_str();
    app.add_flag("!--no-baseline", baseline,
                 "Skip the Frechet distance between training and test features (the real-vs-real floor)");

    return examples::run(app, argc, argv, [&] {
        if (threads > 0) diffuse::set_num_threads(threads);
        const auto load_start = std::chrono::steady_clock::now();
        const diffuse::IdxImages train_images = diffuse::read_idx_images(data_dir + "/train-images-idx3-ubyte.gz");
        const auto train_labels_raw = diffuse::read_idx_labels(data_dir + "/train-labels-idx1-ubyte.gz");
        const diffuse::IdxImages test_images = diffuse::read_idx_images(data_dir + "/t10k-images-idx3-ubyte.gz");
        const auto test_labels_raw = diffuse::read_idx_labels(data_dir + "/t10k-labels-idx1-ubyte.gz");
        if (train_count < 1 || train_count > train_images.count) {
            diffuse::detail::throw_invalid("diffuse_train_classifier", "--train-count", train_count,
                                           "from 1 to the " + std::to_string(train_images.count) + " training images");
        }
        // Pixels p -> p / 127.5 - 1 in [-1, 1], as the diffusion model sees them.
        const auto x_train = diffuse::images_to_tensor<float>(train_images, 0, train_count);  // [N, 1, 28, 28]
        const auto y_train = to_int(train_labels_raw, static_cast<std::size_t>(train_count));
        const auto x_test = diffuse::images_to_tensor<float>(test_images, 0, test_images.count);  // [10000, 1, 28, 28]
        const auto y_test = to_int(test_labels_raw, test_labels_raw.size());

        const examples::eval::ClassifierConfig config = examples::eval::ClassifierConfig::fashion_mnist();
        examples::eval::Classifier<float> model(config, init_seed);
        std::printf("classifier: channels %s, %lld features, %lld parameters; %lld training images, %d threads "
                    "(data read in %.1f s)\n",
                    join(config.channels).c_str(), static_cast<long long>(config.feature_dim),
                    static_cast<long long>(diffuse::nn::parameter_count(model)), static_cast<long long>(train_count),
                    diffuse::num_threads(), seconds_since(load_start));
        std::printf("training: %d epochs, batch %lld, lr %g (warm-up %ld steps, cosine decay)\n", options.epochs,
                    static_cast<long long>(options.batch_size), options.lr, options.warmup_steps);

        const auto last = examples::eval::train_classifier(
            model, x_train, y_train, options, [](const examples::eval::ClassifierTrainingProgress& p) {
                std::printf("epoch %d  step %5ld/%ld  loss %.4f  train accuracy %.4f  lr %.2e  %6.1f s%s\n", p.epoch,
                            p.step, p.total_steps, p.loss, p.accuracy, p.lr, p.seconds,
                            p.end_of_epoch ? "  (end of epoch)" : "");
                std::fflush(stdout);
            });
        const double train_seconds = last.seconds;

        const auto eval_start = std::chrono::steady_clock::now();
        const std::vector<int> predicted = model.predict(x_test);
        const double test_accuracy = examples::eval::accuracy(predicted, y_test);
        const auto per_class = examples::eval::per_class_accuracy(predicted, y_test, config.num_classes);
        std::printf("\ntest accuracy %.4f (%lld images, %.1f s); training took %.1f s\n", test_accuracy,
                    static_cast<long long>(y_test.size()), seconds_since(eval_start), train_seconds);
        for (std::size_t k = 0; k < per_class.size(); ++k) {
            std::printf("  %-12s %.4f\n", class_names[k], per_class[k]);
        }

        if (baseline) {
            // Two samples of the real distribution: the first 10,000 training images against the test set.
            const auto fd_start = std::chrono::steady_clock::now();
            const diffuse::Index n = std::min<diffuse::Index>(10000, train_images.count);
            const auto real_a = examples::eval::feature_statistics(
                model.features(diffuse::images_to_tensor<float>(train_images, 0, n)));
            const auto real_b = examples::eval::feature_statistics(model.features(x_test));
            std::printf("Frechet distance, %lld training vs %lld test images' features: %.4f (%.1f s)\n",
                        static_cast<long long>(n), static_cast<long long>(y_test.size()),
                        examples::eval::frechet_distance(real_a, real_b), seconds_since(fd_start));
        }

        if (!out.empty()) {
            diffuse::SafeTensors file(out);
            model.for_each_parameter("", [&file](diffuse::nn::ParameterView<float> p) {
                file.add(p.name, p.shape, p.value);
            });
            file.metadata()["format"] = "pt";
            file.metadata()["diffuse.version"] = DIFFUSE_VERSION_STRING;
            file.metadata()["diffuse.model"] = "classifier";
            file.metadata()["diffuse.classifier.image_size"] = std::to_string(config.image_size);
            file.metadata()["diffuse.classifier.pooling"] =
                config.pooling == examples::eval::ClassifierPooling::flatten ? "flatten" : "global_average";
            file.metadata()["diffuse.classifier.channels"] = join(config.channels);
            file.metadata()["diffuse.classifier.groups"] = std::to_string(config.groups);
            file.metadata()["diffuse.classifier.feature_dim"] = std::to_string(config.feature_dim);
            file.metadata()["diffuse.classifier.num_classes"] = std::to_string(config.num_classes);
            file.metadata()["diffuse.classifier.test_accuracy"] = std::to_string(test_accuracy);
            diffuse::save_safetensors(out, file);
            std::cout << "wrote " << out << " (" << file.size() << " tensors)\n";
        }
    });
}
