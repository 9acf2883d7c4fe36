// The training loss: the weighted MSE and its gradient, min-SNR-gamma weights, and the targets.

#include <diffuse/core/random.hpp>
#include <diffuse/process/losses.hpp>
#include <diffuse/schedule/betas.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

TEST_CASE("mse_loss is the weighted mean of squared errors, and its gradient is 2 w (o - y) / (N D)", "[process][losses]") {
    diffuse::Generator gen(1);
    const auto o = gen.randn<double, 2>({3, 4});
    const auto y = gen.randn<double, 2>({3, 4});
    const std::vector<double> w = {0.5, 1.0, 2.0};
    diffuse::Tensor2<double> grad;
    const double loss = diffuse::mse_loss(o, y, w, grad);
    long double expected = 0;
    for (int n = 0; n < 3; ++n)
        for (int i = 0; i < 4; ++i) {
            const long double d = static_cast<long double>(o(n, i)) - y(n, i);
            expected += w[n] * d * d / 12;
            REQUIRE(grad(n, i) == Approx(static_cast<double>(2 * w[n] * d / 12)).epsilon(1e-14));
        }
    REQUIRE(loss == Approx(static_cast<double>(expected)).epsilon(1e-14));
}

TEST_CASE("min-SNR-gamma weights the x0 error by min(SNR, gamma) whatever the target", "[process][losses]") {
    const diffuse::NoiseSchedule<double> s(diffuse::linear_betas(1000));
    const diffuse::Timesteps t = {0, 100, 500, 999};
    const double gamma = 5.0;
    const auto eps = diffuse::min_snr_weights(s, diffuse::Prediction::epsilon, t, gamma);
    const auto x0 = diffuse::min_snr_weights(s, diffuse::Prediction::x0, t, gamma);
    const auto v = diffuse::min_snr_weights(s, diffuse::Prediction::v, t, gamma);
    for (std::size_t n = 0; n < t.size(); ++n) {
        long double ab = 1;
        for (int i = 0; i <= t[n]; ++i) ab *= 1 - (1e-4L + (0.02L - 1e-4L) * i / 999);
        const long double snr = ab / (1 - ab), clipped = std::min<long double>(snr, gamma);
        // ||eps error||^2 = SNR ||x0 error||^2 and ||v error||^2 = (SNR + 1) ||x0 error||^2
        REQUIRE(x0[n] == Approx(static_cast<double>(clipped)).epsilon(1e-10));
        REQUIRE(eps[n] == Approx(static_cast<double>(clipped / snr)).epsilon(1e-10));
        REQUIRE(v[n] == Approx(static_cast<double>(clipped / (snr + 1))).epsilon(1e-10));
    }
    REQUIRE(diffuse::min_snr_weights(s, diffuse::Prediction::v, t, 0.0) == std::vector<double>(4, 1.0));
}

TEST_CASE("mse_loss throws a numerical_error for a non-finite loss and names bad weights", "[process][losses][errors]") {
    diffuse::Tensor2<float> o(2, 2), y(2, 2), grad;
    o.setZero();
    y.setZero();
    o(1, 1) = std::numeric_limits<float>::infinity();
    REQUIRE_THROWS_AS(diffuse::mse_loss(o, y, {}, grad), diffuse::numerical_error);
    REQUIRE_THROWS_WITH(diffuse::mse_loss(y, y, {1.0}, grad), Catch::Contains("weights.size() = 1"));
}

TEST_CASE("min_snr_weights rejects a timestep outside the schedule, naming it", "[process][losses][errors]") {
    const diffuse::NoiseSchedule<double> s(diffuse::linear_betas(100));
    REQUIRE_THROWS_AS(diffuse::min_snr_weights(s, diffuse::Prediction::epsilon, {0, 100}, 5.0), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::min_snr_weights(s, diffuse::Prediction::epsilon, {0, 100}, 5.0),
                        Catch::Contains("t[1] = 100") && Catch::Contains("[0, 100)"));
    REQUIRE_THROWS_WITH(diffuse::min_snr_weights(s, diffuse::Prediction::x0, {-1}, 5.0), Catch::Contains("t[0] = -1"));
    // checked with the weighting off too: a bad timestep is a bad timestep
    REQUIRE_THROWS_WITH(diffuse::min_snr_weights(s, diffuse::Prediction::v, {7, 250}, 0.0), Catch::Contains("t[1] = 250"));
}
