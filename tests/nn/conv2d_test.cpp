// Conv2d: forward against the convolution sum evaluated naively in long double, the backward pass
// by finite differences, thread-count independence and bad input.

#include "../support/layers.hpp"

#include <diffuse/core/threading.hpp>
#include <diffuse/nn/conv2d.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>

using diffuse::Generator;
using diffuse::Index;
using diffuse::Tensor4;

namespace {

// y[n, o, py, px] = b[o] + sum_{c,i,j} w[o, c, i, j] x[n, c, s py + i - k/2, s px + j - k/2]
template <class T>
long double naive_conv(const diffuse::nn::Conv2d<T>& conv, const Tensor4<T>& x, Index n, Index o, Index py, Index px) {
    const Index k = conv.kernel_size(), s = conv.stride(), pad = k / 2;
    long double sum = conv.bias.data()[o];
    for (Index c = 0; c < x.dimension(1); ++c) {
        for (Index i = 0; i < k; ++i) {
            for (Index j = 0; j < k; ++j) {
                const Index iy = s * py + i - pad, ix = s * px + j - pad;
                if (iy < 0 || iy >= x.dimension(2) || ix < 0 || ix >= x.dimension(3)) continue;
                sum += static_cast<long double>(conv.weight.data()[((o * x.dimension(1) + c) * k + i) * k + j]) *
                       x(n, c, iy, ix);
            }
        }
    }
    return sum;
}

}  // namespace

TEST_CASE("Conv2d computes the convolution sum with zero padding for every kernel and stride", "[nn][conv2d]") {
    for (const auto& [k, s] : {std::pair<Index, Index>{1, 1}, {3, 1}, {3, 2}}) {
        Generator gen(11);
        diffuse::nn::Conv2d<double> conv(3, 5, k, s, gen);
        const auto x = gen.randn<double, 4>({2, 3, 7, 6});
        const Tensor4<double> y = conv.forward(x);
        REQUIRE(y.dimension(1) == 5);
        REQUIRE(y.dimension(2) == (7 - 1) / s + 1);
        REQUIRE(y.dimension(3) == (6 - 1) / s + 1);
        for (Index n = 0; n < 2; ++n)
            for (Index o = 0; o < 5; ++o)
                for (Index py = 0; py < y.dimension(2); ++py)
                    for (Index px = 0; px < y.dimension(3); ++px)
                        REQUIRE(y(n, o, py, px) == Approx(static_cast<double>(naive_conv(conv, x, n, o, py, px))).epsilon(1e-12));
    }
}

TEST_CASE("Conv2d adds a per-channel shift and a residual as it writes the output, and a moved input gives the same", "[nn][conv2d]") {
    for (const auto& [k, s] : {std::pair<Index, Index>{1, 1}, {3, 1}, {3, 2}}) {
        Generator gen(12);
        diffuse::nn::Conv2d<double> conv(3, 5, k, s, gen);
        const auto x = gen.randn<double, 4>({2, 3, 7, 6});
        const Tensor4<double> y = conv.forward(x);
        const auto shift = gen.randn<double, 2>({2, 5});
        const auto residual = gen.randn<double, 4>({2, 5, y.dimension(2), y.dimension(3)});
        Tensor4<double> moved = x;
        const Tensor4<double> z = conv.forward(std::move(moved), &shift, &residual);
        for (Index n = 0; n < 2; ++n)
            for (Index o = 0; o < 5; ++o)
                for (Index py = 0; py < y.dimension(2); ++py)
                    for (Index px = 0; px < y.dimension(3); ++px)
                        REQUIRE(z(n, o, py, px) == Approx(y(n, o, py, px) + shift(n, o) + residual(n, o, py, px)).epsilon(1e-12));
        const Tensor4<double> dx = conv.backward(residual);  // the moved input was kept for backward
        REQUIRE(dx.dimensions() == x.dimensions());
    }
}

TEST_CASE("Conv2d with a borrowed input (std::cref) gives the bits of a copied one, forward and backward", "[nn][conv2d]") {
    for (const auto& [k, s] : {std::pair<Index, Index>{1, 1}, {3, 1}, {3, 2}}) {
        Generator gen(13);
        diffuse::nn::Conv2d<float> copied(4, 6, k, s, gen);
        diffuse::nn::Conv2d<float> borrowed = copied;
        const auto x = gen.randn<float, 4>({3, 4, 9, 8});
        const Tensor4<float> y = copied.forward(x);
        const Tensor4<float> y_borrowed = borrowed.forward(std::cref(x));
        REQUIRE(std::equal(y.data(), y.data() + y.size(), y_borrowed.data()));
        const auto dy = gen.randn<float, 4>({3, 6, y.dimension(2), y.dimension(3)});
        const Tensor4<float> dx = copied.backward(dy), dx_borrowed = borrowed.backward(dy);
        CHECK(std::equal(dx.data(), dx.data() + dx.size(), dx_borrowed.data()));
        CHECK(std::equal(copied.weight.grad(), copied.weight.grad() + copied.weight.size(), borrowed.weight.grad()));
        CHECK(std::equal(copied.bias.grad(), copied.bias.grad() + copied.bias.size(), borrowed.bias.grad()));
    }
}

TEST_CASE("Conv2d is exact on shapes that leave partial GEMM tiles, blocks and strips", "[nn][conv2d]") {
    // Channel counts that are not multiples of the 6 x 16 register tile, more than 384 rows of X_col
    // (two K blocks), images wider than one strip of columns, batch 1 (split into column tiles) and 9
    // (one task per sample). The backward pass is checked through the adjoint identities of the
    // bilinear map (x, w) -> y - b:  <y - b, dy> = <x, dx> = <w, dw>.
    struct Case { Index cin, cout, k, s, n, h, w; };
    for (const Case c : {Case{13, 19, 3, 1, 1, 9, 17}, Case{50, 7, 3, 1, 9, 5, 11}, Case{7, 33, 3, 2, 2, 13, 10},
                         Case{45, 17, 1, 1, 3, 6, 19}, Case{2, 3, 3, 1, 2, 1, 1}, Case{3, 2, 3, 1, 1, 4, 1},
                         Case{4, 6, 3, 2, 1, 3, 1}, Case{5, 3, 1, 2, 2, 5, 4}}) {
        Generator gen(17);
        diffuse::nn::Conv2d<double> conv(c.cin, c.cout, c.k, c.s, gen);
        const auto x = gen.randn<double, 4>({c.n, c.cin, c.h, c.w});
        const Tensor4<double> y = conv.forward(x);
        for (Index n = 0; n < c.n; ++n)
            for (Index o = 0; o < c.cout; ++o)
                for (Index py = 0; py < y.dimension(2); ++py)
                    for (Index px = 0; px < y.dimension(3); ++px)
                        REQUIRE(y(n, o, py, px) == Approx(static_cast<double>(naive_conv(conv, x, n, o, py, px))).epsilon(1e-12));
        const auto dy = gen.randn<double, 4>(y.dimensions());
        diffuse::nn::zero_grad(conv);
        const Tensor4<double> dx = conv.backward(dy);
        long double y_dy = 0, x_dx = 0, w_dw = 0, db_sum = 0, dy_sum = 0;
        for (Index i = 0; i < y.size(); ++i) {
            const Index o = (i / (y.dimension(2) * y.dimension(3))) % c.cout;
            y_dy += static_cast<long double>(y.data()[i] - conv.bias.data()[o]) * dy.data()[i];
            dy_sum += dy.data()[i];
        }
        for (Index i = 0; i < x.size(); ++i) x_dx += static_cast<long double>(x.data()[i]) * dx.data()[i];
        for (Index i = 0; i < conv.weight.size(); ++i) w_dw += static_cast<long double>(conv.weight.data()[i]) * conv.weight.grad()[i];
        for (Index o = 0; o < c.cout; ++o) db_sum += conv.bias.grad()[o];
        const double scale = 1e-12 * static_cast<double>(y.size() * c.cin * c.k * c.k);
        REQUIRE(static_cast<double>(x_dx) == Approx(static_cast<double>(y_dy)).margin(scale));
        REQUIRE(static_cast<double>(w_dw) == Approx(static_cast<double>(y_dy)).margin(scale));
        REQUIRE(static_cast<double>(db_sum) == Approx(static_cast<double>(dy_sum)).margin(1e-12 * static_cast<double>(y.size())));
    }
}

TEST_CASE("Conv2d's backward pass matches finite differences for input, weight and bias", "[nn][conv2d][gradient]") {
    for (const auto& [k, s] : {std::pair<Index, Index>{1, 1}, {3, 1}, {3, 2}}) {
        Generator gen(12);
        diffuse::nn::Conv2d<double> conv(3, 4, k, s, gen);
        REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(conv, gen.randn<double, 4>({3, 3, 6, 5})));
    }
}

TEST_CASE("Conv2d gives the same bits with one thread or two", "[nn][conv2d][threads]") {
    const int saved = diffuse::num_threads();
    for (const auto algorithm : {diffuse::nn::ConvAlgorithm::winograd, diffuse::nn::ConvAlgorithm::direct}) {
        Generator gen(13);
        diffuse::nn::Conv2d<float> conv(8, 8, 3, 1, gen);
        conv.set_algorithm(algorithm);
        const auto x = gen.randn<float, 4>({5, 8, 28, 28});
        Tensor4<float> y[2], dx[2];
        std::vector<float> dw[2];
        for (int threads = 1; threads <= 2; ++threads) {
            diffuse::set_num_threads(threads);
            diffuse::nn::zero_grad(conv);
            y[threads - 1] = conv.forward(x);
            dx[threads - 1] = conv.backward(y[threads - 1]);
            dw[threads - 1].assign(conv.weight.grad(), conv.weight.grad() + conv.weight.size());
        }
        diffuse::set_num_threads(saved);
        REQUIRE(std::equal(y[0].data(), y[0].data() + y[0].size(), y[1].data()));
        REQUIRE(std::equal(dx[0].data(), dx[0].data() + dx[0].size(), dx[1].data()));
        REQUIRE(dw[0] == dw[1]);
    }
}

TEST_CASE("Conv2d's dot-product weight gradient gives the same bits with one thread or two, and the GEMM's sums", "[nn][conv2d][threads]") {
    // Few output channels or small planes take the dot-product form (several groups of samples,
    // input channels split over tasks by the thread count); it must agree with the GEMM form, which
    // the same layer takes at a larger plane, on each sample's contribution.
    const int saved = diffuse::num_threads();
    struct Case { Index cin, cout, n, side; };
    for (const Case c : {Case{8, 4, 37, 7}, Case{5, 64, 30, 7}, Case{32, 1, 9, 28}}) {
        Generator gen(31);
        diffuse::nn::Conv2d<double> conv(c.cin, c.cout, 3, 1, gen);
        const auto x = gen.randn<double, 4>({c.n, c.cin, c.side, c.side});
        const auto dy = gen.randn<double, 4>({c.n, c.cout, c.side, c.side});
        std::vector<double> dw[2];
        for (int threads = 1; threads <= 2; ++threads) {
            diffuse::set_num_threads(threads);
            diffuse::nn::zero_grad(conv);
            conv.forward(x);
            conv.backward(dy);
            dw[threads - 1].assign(conv.weight.grad(), conv.weight.grad() + conv.weight.size());
        }
        diffuse::set_num_threads(saved);
        REQUIRE(dw[0] == dw[1]);
        // The same gradient summed sample by sample from a plane 29 wide (zero beyond the image), where
        // the layer takes the GEMM form whatever its channels: equal up to rounding.
        Tensor4<double> wide_x(c.n, c.cin, c.side, 29), wide_dy(c.n, c.cout, c.side, 29);
        wide_x.setZero();
        wide_dy.setZero();
        for (Index n = 0; n < c.n; ++n)
            for (Index y = 0; y < c.side; ++y)
                for (Index col = 0; col < c.side; ++col) {
                    for (Index ch = 0; ch < c.cin; ++ch) wide_x(n, ch, y, col) = x(n, ch, y, col);
                    for (Index o = 0; o < c.cout; ++o) wide_dy(n, o, y, col) = dy(n, o, y, col);
                }
        if (c.cout > diffuse::nn::Conv2d<double>::dot_wgrad_max_out_channels) {
            diffuse::nn::zero_grad(conv);
            conv.forward(wide_x);
            conv.backward(wide_dy);
            for (Index i = 0; i < conv.weight.size(); ++i) REQUIRE(conv.weight.grad()[i] == Approx(dw[0][i]).margin(1e-10));
        }
    }
}

TEST_CASE("Conv2d's Winograd F(2x2, 3x3) path is exact in double against the direct sum and the naive one", "[nn][conv2d][winograd]") {
    // Odd and even planes, a plane smaller than one tile, a sample whose tiles straddle two blocks, and
    // the shift and residual added as the output is written.
    struct Case { Index cin, cout, n, h, w; };
    for (const Case c : {Case{8, 8, 3, 7, 7}, Case{9, 17, 2, 6, 5}, Case{8, 11, 2, 1, 1}, Case{10, 8, 4, 28, 28},
                         Case{33, 9, 1, 3, 14}}) {
        Generator gen(19);
        diffuse::nn::Conv2d<double> direct(c.cin, c.cout, 3, 1, gen);
        REQUIRE_FALSE(direct.uses_winograd());  // the default
        diffuse::nn::Conv2d<double> winograd = direct;
        winograd.set_algorithm(diffuse::nn::ConvAlgorithm::winograd);
        REQUIRE(winograd.uses_winograd());
        const auto x = gen.randn<double, 4>({c.n, c.cin, c.h, c.w});
        const auto shift = gen.randn<double, 2>({c.n, c.cout});
        const auto residual = gen.randn<double, 4>({c.n, c.cout, c.h, c.w});
        const Tensor4<double> y = winograd.forward(x, &shift, &residual);
        const Tensor4<double> y_direct = direct.forward(x, &shift, &residual);
        for (Index n = 0; n < c.n; ++n)
            for (Index o = 0; o < c.cout; ++o)
                for (Index py = 0; py < c.h; ++py)
                    for (Index px = 0; px < c.w; ++px) {
                        const double naive = static_cast<double>(naive_conv(winograd, x, n, o, py, px)) + shift(n, o) +
                                             residual(n, o, py, px);
                        REQUIRE(y(n, o, py, px) == Approx(naive).epsilon(1e-12).margin(1e-12));
                        REQUIRE(y(n, o, py, px) == Approx(y_direct(n, o, py, px)).epsilon(1e-12).margin(1e-12));
                    }
        const auto dy = gen.randn<double, 4>(y.dimensions());
        diffuse::nn::zero_grad(winograd);
        diffuse::nn::zero_grad(direct);
        const Tensor4<double> dx = winograd.backward(dy);
        const Tensor4<double> dx_direct = direct.backward(dy);
        for (Index i = 0; i < dx.size(); ++i) REQUIRE(dx.data()[i] == Approx(dx_direct.data()[i]).epsilon(1e-12).margin(1e-12));
        for (Index i = 0; i < winograd.weight.size(); ++i)
            REQUIRE(winograd.weight.grad()[i] == Approx(direct.weight.grad()[i]).epsilon(1e-12).margin(1e-11));
        for (Index o = 0; o < c.cout; ++o) REQUIRE(winograd.bias.grad()[o] == Approx(direct.bias.grad()[o]).epsilon(1e-12).margin(1e-11));
    }
}

TEST_CASE("Conv2d's Winograd path matches finite differences", "[nn][conv2d][winograd][gradient]") {
    Generator gen(20);
    diffuse::nn::Conv2d<double> conv(8, 9, 3, 1, gen);
    conv.set_algorithm(diffuse::nn::ConvAlgorithm::winograd);
    REQUIRE(conv.uses_winograd());
    REQUIRE_GRADIENTS_MATCH(diffuse::testing::check_layer(conv, gen.randn<double, 4>({2, 8, 5, 4})));
}

TEST_CASE("Conv2d's Winograd path in float stays within 5e-6 of the largest output at the U-Net's shapes", "[nn][conv2d][winograd]") {
    // The transforms add a few roundings per value: on these shapes the largest difference from the
    // direct path (both in float), over the largest value of the direct one, measured 7.1e-7 to
    // 1.4e-6 for y and 6.4e-7 to 1.1e-6 for dx in SSE2, AVX2 and AVX-512 builds (float's epsilon is
    // 1.2e-7).
    struct Case { Index cin, cout, side; };
    for (const Case c : {Case{32, 32, 28}, Case{64, 64, 14}, Case{64, 64, 7}, Case{96, 32, 28}}) {
        Generator gen(21);
        diffuse::nn::Conv2d<float> direct(c.cin, c.cout, 3, 1, gen);
        diffuse::nn::Conv2d<float> winograd = direct;
        winograd.set_algorithm(diffuse::nn::ConvAlgorithm::winograd);
        const auto x = gen.randn<float, 4>({4, c.cin, c.side, c.side});
        const auto dy = gen.randn<float, 4>({4, c.cout, c.side, c.side});
        const Tensor4<float> y = winograd.forward(x), y_direct = direct.forward(x);
        const Tensor4<float> dx = winograd.backward(dy), dx_direct = direct.backward(dy);
        const auto relative = [](const float* a, const float* b, Index size) {  // max |a - b| / max |b|
            double diff = 0, scale = 0;
            for (Index i = 0; i < size; ++i) {
                diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
                scale = std::max(scale, std::abs(static_cast<double>(b[i])));
            }
            return diff / scale;
        };
        const double ey = relative(y.data(), y_direct.data(), y.size());
        const double edx = relative(dx.data(), dx_direct.data(), dx.size());
        INFO("cin " << c.cin << " cout " << c.cout << " side " << c.side << ": y " << ey << ", dx " << edx);
        REQUIRE(ey < 5e-6);
        REQUIRE(edx < 5e-6);
        REQUIRE(ey > 0);  // the two paths did differ: the Winograd one ran
    }
}

TEST_CASE("Conv2d gives a sample the same bits alone or in a batch", "[nn][conv2d][winograd]") {
    for (const auto algorithm : {diffuse::nn::ConvAlgorithm::winograd, diffuse::nn::ConvAlgorithm::direct}) {
        Generator gen(22);
        diffuse::nn::Conv2d<float> conv(16, 16, 3, 1, gen);
        conv.set_algorithm(algorithm);
        const auto x = gen.randn<float, 4>({7, 16, 14, 14});
        const Tensor4<float> y = conv.forward(x);
        const Index per_sample = 16 * 14 * 14;
        for (const Index n : {Index{0}, Index{3}, Index{6}}) {
            Tensor4<float> one(1, 16, 14, 14);
            std::copy_n(x.data() + n * per_sample, per_sample, one.data());
            const Tensor4<float> alone = conv.forward(one);
            REQUIRE(std::equal(alone.data(), alone.data() + per_sample, y.data() + n * per_sample));
        }
    }
}

TEST_CASE("Conv2d rejects a wrong channel count, kernel or stride, naming it", "[nn][conv2d][errors]") {
    Generator gen(14);
    REQUIRE_THROWS_WITH((diffuse::nn::Conv2d<float>(3, 4, 5, 1, gen)), Catch::Contains("kernel_size = 5"));
    REQUIRE_THROWS_WITH((diffuse::nn::Conv2d<float>(3, 4, 3, 3, gen)), Catch::Contains("stride = 3"));
    REQUIRE_THROWS_WITH((diffuse::nn::Conv2d<float>(0, 4, 3, 1, gen)), Catch::Contains("in_channels = 0"));
    diffuse::nn::Conv2d<float> conv(3, 4, 3, 1, gen);
    REQUIRE_THROWS_AS(conv.forward(Tensor4<float>(1, 2, 5, 5)), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(conv.forward(Tensor4<float>(1, 2, 5, 5)), Catch::Contains("3 channels"));
    const Tensor4<float> x(2, 3, 5, 5);
    const diffuse::Tensor2<float> shift(2, 3);
    REQUIRE_THROWS_WITH(conv.forward(x, &shift), Catch::Contains("shift.shape = [2, 3]") && Catch::Contains("[2, 4]"));
    const Tensor4<float> residual(2, 4, 5, 4);
    REQUIRE_THROWS_WITH(conv.forward(x, nullptr, &residual),
                        Catch::Contains("residual.shape = [2, 4, 5, 4]") && Catch::Contains("[2, 4, 5, 5]"));
}
