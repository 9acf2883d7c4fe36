// Data-parallel training over MPI (diffuse/parallel/mpi.hpp, parallel/communicator.hpp), on the
// ranks CTest starts (2): the ordered sum against the same additions done here, and R ranks' steps
// against one process stepping on the global batch. Collective calls come before the assertions, so
// that a failing check on one rank cannot leave another waiting in a sum.

#include "../support/unet_configs.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/models/unet.hpp>
#include <diffuse/optim/trainer.hpp>
#include <diffuse/parallel/communicator.hpp>
#include <diffuse/parallel/mpi.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

using diffuse::Index;

// Rank r's value i: of very different sizes across ranks, so that the order of the additions shows
// in the last bits of the sum.
template <class T>
T rank_value(int r, Index i) {
    const double big = r == 0 ? 1.0 : 0.0;
    return static_cast<T>(big + std::ldexp(1.0 + 0.37 * static_cast<double>(i % 11), -20 - 3 * r) * (r % 2 == 0 ? 1 : -1));
}

template <class T>
std::vector<double> as_doubles(const std::vector<T>& v) {
    return std::vector<double>(v.begin(), v.end());
}

// Every parameter of a model, as doubles.
template <class Model>
std::vector<double> weights_of(Model& model) {
    std::vector<double> w;
    model.for_each_parameter("", [&w](auto p) { w.insert(w.end(), p.value, p.value + p.size); });
    return w;
}

template <class T>
void check_ordered_sum(diffuse::MpiCommunicator& world) {
    const int ranks = world.size();
    const std::vector<Index> sizes = {0, 1, 2, 7, 1000};
    std::vector<std::vector<T>> sums;           // [sizes][n], this rank's
    std::vector<std::vector<double>> gathered;  // [sizes][ranks * n], every rank's
    for (const Index n : sizes) {
        std::vector<T> data(static_cast<std::size_t>(n));
        for (Index i = 0; i < n; ++i) data[static_cast<std::size_t>(i)] = rank_value<T>(world.rank(), i);
        world.sum(data.data(), n);
        gathered.push_back(diffuse::all_gather(world, as_doubles(data)));
        sums.push_back(std::move(data));
    }
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        const Index n = sizes[k];
        for (Index i = 0; i < n; ++i) {
            T expected = rank_value<T>(0, i);  // ((x_0 + x_1) + x_2) + ...
            for (int r = 1; r < ranks; ++r) expected += rank_value<T>(r, i);
            REQUIRE(sums[k][static_cast<std::size_t>(i)] == expected);
            for (int r = 0; r < ranks; ++r) REQUIRE(gathered[k][static_cast<std::size_t>(r * n + i)] == static_cast<double>(expected));
        }
    }
}

// The trainer tests' U-Net with 3 classes, and 2 output channels for a learned variance.
diffuse::UNetConfig data_parallel_unet_config(bool learned_variance) {
    diffuse::UNetConfig c = diffuse::testing_support::trainer_unet_config();
    c.num_classes = 3;
    c.out_channels = learned_variance ? 2 : 1;
    return c;
}

struct StepsCompared {
    double largest_weight_difference = 0.0;  // max |w_ranks - w_one| over the parameters
    double largest_weight = 0.0;             // max |w_one|
    double largest_loss_difference = 0.0;    // max |loss_ranks - loss_one| / loss_one over the steps
    bool ranks_identical = true;             // every rank's weights the same bits
};

// `steps` steps of R ranks, each on its share of a global batch of 4 R, against one process (this
// one) stepping on the whole global batch, both from the same weights and seed.
StepsCompared compare_steps(diffuse::MpiCommunicator& world, diffuse::optim::TrainerOptions options, bool learned_variance,
                            int steps) {
    const int ranks = world.size();
    const Index global = 4 * ranks;
    const diffuse::Share share = diffuse::share_of(global, world.rank(), ranks);
    const diffuse::NoiseSchedule<float> schedule(diffuse::linear_betas(100));
    diffuse::UNet<float> parallel_model(data_parallel_unet_config(learned_variance), 3);
    diffuse::UNet<float> one_model(data_parallel_unet_config(learned_variance), 3);
    diffuse::optim::Trainer<diffuse::UNet<float>> parallel(parallel_model, schedule, options);
    diffuse::optim::Trainer<diffuse::UNet<float>> one(one_model, schedule, options);
    parallel.set_communicator(world);
    StepsCompared out;
    for (int s = 0; s < steps; ++s) {
        diffuse::Generator data(static_cast<std::uint64_t>(100 + s));
        diffuse::Tensor4<float> x = data.randn<float, 4>({global, 1, 8, 8});  // [B, 1, 8, 8]
        for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::tanh(x.data()[i]);
        diffuse::Conditioning<float> labels;
        for (Index n = 0; n < global; ++n) labels.labels.push_back(static_cast<int>((n + s) % 3));
        const auto mine = parallel.step(diffuse::batch_slice(x, share.first, share.count),
                                        diffuse::slice_conditioning(labels, share.first, share.count));
        const auto whole = one.step(x, labels);
        out.largest_loss_difference = std::max(out.largest_loss_difference, std::abs(mine.loss - whole.loss) / whole.loss);
    }
    const std::vector<double> w = weights_of(parallel_model), w1 = weights_of(one_model);
    for (std::size_t i = 0; i < w.size(); ++i) {
        out.largest_weight_difference = std::max(out.largest_weight_difference, std::abs(w[i] - w1[i]));
        out.largest_weight = std::max(out.largest_weight, std::abs(w1[i]));
    }
    const std::vector<double> all = diffuse::all_gather(world, w);
    for (int r = 0; r < ranks; ++r) {
        out.ranks_identical = out.ranks_identical && std::equal(w.begin(), w.end(), all.begin() + static_cast<std::ptrdiff_t>(r * w.size()));
    }
    return out;
}

}  // namespace

TEST_CASE("The MPI sum adds the ranks' values in rank order and every rank gets the same bits", "[mpi]") {
    diffuse::MpiCommunicator world;
    REQUIRE(world.size() >= 2);  // CTest runs this program on 2 ranks
    check_ordered_sum<float>(world);
    check_ordered_sum<double>(world);
    REQUIRE(world.traffic().calls > 0);
}

TEST_CASE("R ranks' data-parallel steps end where one process stepping on the global batch does", "[mpi][trainer]") {
    // The draws (t, noise, label dropout) are the global batch's on every rank, so the two runs see the
    // same samples; they differ only in the order of float additions (the weight gradients' sums over
    // the batch, then over the ranks). Adam can turn a last-bit difference in a gradient near zero
    // into an update difference of up to 2 lr; measured on 2 ranks: 2e-5 after 4 steps at lr 1e-3
    // (losses 2e-8 apart). The bound: less than one step of lr over the 4 steps.
    diffuse::MpiCommunicator world;
    diffuse::optim::TrainerOptions options;
    options.adam.lr = 1e-3;
    options.seed = 11;
    options.label_dropout = 0.3;
    const StepsCompared c = compare_steps(world, options, false, 4);
    INFO("largest weight difference " << c.largest_weight_difference << " of weights up to " << c.largest_weight);
    REQUIRE(c.ranks_identical);
    REQUIRE(c.largest_loss_difference < 1e-6);
    REQUIRE(c.largest_weight_difference < options.adam.lr);
}

TEST_CASE("Data-parallel hybrid-loss steps with the loss-aware timestep sampler match one process too",
          "[mpi][trainer][hybrid]") {
    diffuse::MpiCommunicator world;
    diffuse::optim::TrainerOptions options;
    options.adam.lr = 1e-3;
    options.seed = 12;
    options.loss = diffuse::Loss::hybrid;
    options.variance = diffuse::ModelVariance::learned_range;
    options.timestep_sampling = diffuse::optim::TimestepSampling::loss_aware;
    const StepsCompared c = compare_steps(world, options, true, 4);
    INFO("largest weight difference " << c.largest_weight_difference << " of weights up to " << c.largest_weight);
    REQUIRE(c.ranks_identical);
    REQUIRE(c.largest_loss_difference < 1e-6);
    REQUIRE(c.largest_weight_difference < options.adam.lr);
}
