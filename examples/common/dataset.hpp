#pragma once
// Fashion-MNIST (or any IDX pair of images and labels) for the example programs: where Debian's
// dataset-fashion-mnist package puts it, the class names, and a clear message when it is missing.
// Not part of the library; needs diffuse::io (zlib).

#include <diffuse/core/error.hpp>
#include <diffuse/io/idx.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples {

inline constexpr const char* default_data_dir = "/usr/share/datasets/fashion-mnist";

inline const char* const fashion_mnist_classes[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/// Thrown when a data file is not there, so a program can tell "install the data" from other errors.
class missing_dataset : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct LabelledImages {
    diffuse::IdxImages images;     // [N, H, W] bytes
    std::vector<int> labels;       // [N]
};

/// The path of <split>-images-idx3-ubyte.gz or <split>-labels-idx1-ubyte.gz under `data_dir`,
/// accepting the uncompressed name too.
inline std::string idx_path(const std::string& data_dir, const std::string& split, const std::string& kind) {
    const std::string base = data_dir + "/" + split + "-" + kind;
    if (std::filesystem::exists(base + ".gz")) return base + ".gz";
    if (std::filesystem::exists(base)) return base;
    throw missing_dataset(
        "no " + base + ".gz (nor " + base + "). Fashion-MNIST comes with Debian's package dataset-fashion-mnist "
        "(sudo apt-get install dataset-fashion-mnist, or bash scripts/install-deps.sh); for MNIST or your own "
        "IDX files, pass --data-dir");
}

/// Reads split "train" or "t10k" of the data set in `data_dir`; labels and images must be as many.
inline LabelledImages read_labelled(const std::string& data_dir, const std::string& split) {
    LabelledImages out;
    const std::string images_path = idx_path(data_dir, split, "images-idx3-ubyte");
    const std::string labels_path = idx_path(data_dir, split, "labels-idx1-ubyte");
    out.images = diffuse::read_idx_images(images_path);
    const std::vector<std::uint8_t> labels = diffuse::read_idx_labels(labels_path);
    if (static_cast<diffuse::Index>(labels.size()) != out.images.count) {
        throw std::runtime_error(labels_path + " has " + std::to_string(labels.size()) + " labels for the " +
                                 std::to_string(out.images.count) + " images of " + images_path);
    }
    out.labels.assign(labels.begin(), labels.end());
    return out;
}

/// The first `count` images of class `label` in `set`, as [count, 1, H, W] in [-1, 1]; fewer there is
/// an error naming how many there are.
inline diffuse::Tensor4<float> first_of_class(const LabelledImages& set, int label, diffuse::Index count, const char* program) {
    std::vector<diffuse::Index> found;
    for (std::size_t i = 0; i < set.labels.size() && static_cast<diffuse::Index>(found.size()) < count; ++i) {
        if (set.labels[i] == label) found.push_back(static_cast<diffuse::Index>(i));
    }
    if (static_cast<diffuse::Index>(found.size()) < count) {
        diffuse::detail::throw_invalid(program, "--source-class", label,
                                       "a class with at least " + std::to_string(count) + " images (it has " + std::to_string(found.size()) + ")");
    }
    const diffuse::Index h = set.images.rows, w = set.images.cols;
    diffuse::Tensor4<float> out(count, 1, h, w);  // [count, 1, H, W]
    for (diffuse::Index k = 0; k < count; ++k) {
        const diffuse::Tensor4<float> one = diffuse::images_to_tensor<float>(set.images, found[static_cast<std::size_t>(k)], 1);
        std::copy_n(one.data(), h * w, out.data() + k * h * w);
    }
    return out;
}

/// The training and test splits ("train", "t10k") of the data set in `data_dir`; when it is not
/// installed, `program`'s message and exit code 77 (what CTest counts as skipped).
struct Splits {
    LabelledImages train, test;
};
inline Splits read_splits_or_exit(const std::string& data_dir, const char* program) {
    try {
        return {read_labelled(data_dir, "train"), read_labelled(data_dir, "t10k")};
    } catch (const missing_dataset& e) {
        std::fprintf(stderr, "%s: %s\n", program, e.what());
        std::exit(77);
    }
}

/// Where a program writing into `out_dir` keeps the evaluation classifier: <out_dir>/../classifier.safetensors.
inline std::string default_classifier_path(const std::string& out_dir) {
    const std::filesystem::path parent = std::filesystem::path(out_dir).parent_path();
    return (parent.empty() ? std::filesystem::path(".") : parent).string() + "/classifier.safetensors";
}

}  // namespace examples
