// The Frechet distance against its closed forms (identical Gaussians, diagonal and commuting
// covariances, 2x2 through tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))), against an independent matrix
// square root (Denman-Beavers) in long double, feature statistics against long double sums, and
// inputs that are not covariances.

#include <diffuse/core/random.hpp>
#include "common/frechet.hpp"

#include <catch2/catch.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <limits>

using examples::eval::frechet_distance;
using Eigen::MatrixXd;
using Eigen::VectorXd;

namespace {

MatrixXd random_matrix(diffuse::Generator& gen, Eigen::Index rows, Eigen::Index cols) {
    MatrixXd m(rows, cols);
    gen.normal(m.data(), m.size());
    return m;
}

VectorXd random_vector(diffuse::Generator& gen, Eigen::Index n) {
    VectorXd v(n);
    gen.normal(v.data(), n);
    return v;
}

// A random SPD matrix B B^T / cols + shift I.
MatrixXd random_spd(diffuse::Generator& gen, Eigen::Index d, double shift = 0.1) {
    const MatrixXd b = random_matrix(gen, d, d + 3);
    return b * b.transpose() / static_cast<double>(d + 3) + shift * MatrixXd::Identity(d, d);
}

// A random orthogonal matrix, the Q of a QR factorisation.
MatrixXd random_orthogonal(diffuse::Generator& gen, Eigen::Index d) {
    return Eigen::HouseholderQR<MatrixXd>(random_matrix(gen, d, d)).householderQ();
}

using MatrixL = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

// tr(sqrt(M)) by the Denman-Beavers iteration in long double: Y -> sqrt(M), Z -> sqrt(M)^{-1}.
// Independent of the eigen-decompositions under test; M = S1 S2 is not symmetric.
long double trace_sqrt_denman_beavers(const MatrixXd& s1, const MatrixXd& s2) {
    MatrixL y = s1.cast<long double>() * s2.cast<long double>();
    MatrixL z = MatrixL::Identity(y.rows(), y.cols());
    for (int i = 0; i < 60; ++i) {
        const MatrixL y_inv = y.partialPivLu().inverse();
        const MatrixL z_inv = z.partialPivLu().inverse();
        y = (y + z_inv) / 2.0L;
        z = (z + y_inv) / 2.0L;
    }
    return y.trace();
}

}  // namespace

TEST_CASE("The Frechet distance between identical Gaussians is zero", "[eval][frechet]") {
    diffuse::Generator gen(81);
    const MatrixXd s = random_spd(gen, 16);
    const VectorXd mu = random_vector(gen, 16);
    // Relative to the traces (about 16 here): rounding of D 2^-52, not the 2^-26 of a sqrt of rounding.
    REQUIRE(frechet_distance(mu, s, mu, s) <= 1e-12 * s.trace());
}

TEST_CASE("The Frechet distance of a singular covariance to itself is zero", "[eval][frechet]") {
    // 5 samples in 12 dimensions: rank 4, and rounding gives some eigenvalues like -1e-17.
    diffuse::Generator gen(82);
    const auto stats = examples::eval::feature_statistics(random_matrix(gen, 5, 12));
    REQUIRE(frechet_distance(stats, stats) <= 1e-12 * stats.covariance.trace());
}

TEST_CASE("The Frechet distance of diagonal covariances is the sum of (sqrt a - sqrt b)^2 plus the squared mean gap", "[eval][frechet]") {
    const VectorXd a = (VectorXd(4) << 1.0, 4.0, 0.25, 9.0).finished();
    const VectorXd b = (VectorXd(4) << 4.0, 1.0, 0.25, 0.0).finished();  // one variance exactly 0
    const VectorXd mu1 = (VectorXd(4) << 0.0, 1.0, 2.0, 3.0).finished();
    const VectorXd mu2 = (VectorXd(4) << 1.0, 1.0, 0.0, 3.5).finished();
    // (1 - 2)^2 + (2 - 1)^2 + 0 + (3 - 0)^2 = 11;  ||mu1 - mu2||^2 = 1 + 0 + 4 + 0.25 = 5.25
    const double d = frechet_distance(mu1, MatrixXd(a.asDiagonal()), mu2, MatrixXd(b.asDiagonal()));
    REQUIRE(d == Approx(16.25).epsilon(1e-14));
}

TEST_CASE("The Frechet distance of one-dimensional Gaussians is (mu1 - mu2)^2 + (sigma1 - sigma2)^2", "[eval][frechet]") {
    const double d = frechet_distance(VectorXd::Constant(1, 0.5), MatrixXd::Constant(1, 1, 2.25),
                                      VectorXd::Constant(1, -1.5), MatrixXd::Constant(1, 1, 0.01));
    REQUIRE(d == Approx(4.0 + (1.5 - 0.1) * (1.5 - 0.1)).epsilon(1e-14));
}

TEST_CASE("The Frechet distance of commuting covariances is that of their eigenvalues in a rotated basis", "[eval][frechet]") {
    diffuse::Generator gen(83);
    const Eigen::Index d = 8;
    const MatrixXd q = random_orthogonal(gen, d);
    VectorXd a(d), b(d);
    gen.uniform(a.data(), d);
    gen.uniform(b.data(), d);
    a = a * 3.0 + VectorXd::Constant(d, 0.01);
    b = b * 3.0 + VectorXd::Constant(d, 0.01);
    const MatrixXd s1 = q * a.asDiagonal() * q.transpose();
    const MatrixXd s2 = q * b.asDiagonal() * q.transpose();
    const VectorXd mu1 = random_vector(gen, d), mu2 = random_vector(gen, d);
    long double expected = 0;
    for (Eigen::Index i = 0; i < d; ++i) {
        const long double r = std::sqrt(static_cast<long double>(a(i))) - std::sqrt(static_cast<long double>(b(i)));
        const long double m = static_cast<long double>(mu1(i)) - mu2(i);
        expected += r * r + m * m;
    }
    REQUIRE(frechet_distance(mu1, s1, mu2, s2) == Approx(static_cast<double>(expected)).epsilon(1e-12));
}

TEST_CASE("The Frechet distance of 2x2 covariances matches tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))", "[eval][frechet]") {
    // Non-commuting: S1 S2 is not symmetric. For a 2x2 M with positive eigenvalues l1, l2,
    // (sqrt l1 + sqrt l2)^2 = tr M + 2 sqrt(det M).
    MatrixXd s1(2, 2), s2(2, 2);
    s1 << 2.0, 0.7, 0.7, 1.0;
    s2 << 0.5, -0.2, -0.2, 3.0;
    const long double tr = (s1.cast<long double>() * s2.cast<long double>()).trace();
    const long double det = static_cast<long double>(s1.determinant()) * s2.determinant();
    const long double trace_sqrt = std::sqrt(tr + 2 * std::sqrt(det));
    const long double expected = s1.trace() + s2.trace() - 2 * trace_sqrt + 0.25L;  // + ||(0.5, 0)||^2
    const double d = frechet_distance(VectorXd::Zero(2), s1, (VectorXd(2) << 0.5, 0.0).finished(), s2);
    REQUIRE(d == Approx(static_cast<double>(expected)).epsilon(1e-13));
}

TEST_CASE("The Frechet distance matches a Denman-Beavers matrix square root in long double", "[eval][frechet]") {
    diffuse::Generator gen(84);
    const Eigen::Index d = 6;
    const MatrixXd s1 = random_spd(gen, d), s2 = random_spd(gen, d);
    const VectorXd mu1 = random_vector(gen, d), mu2 = random_vector(gen, d);
    const long double expected = static_cast<long double>((mu1 - mu2).squaredNorm()) + s1.trace() + s2.trace() -
                                 2 * trace_sqrt_denman_beavers(s1, s2);
    REQUIRE(frechet_distance(mu1, s1, mu2, s2) == Approx(static_cast<double>(expected)).epsilon(1e-12));
}

TEST_CASE("The Frechet distance is symmetric, unchanged by a common shift and scales with the square of the features", "[eval][frechet]") {
    diffuse::Generator gen(85);
    const MatrixXd x = random_matrix(gen, 40, 5);
    MatrixXd y = random_matrix(gen, 30, 5) * 1.5;
    y.col(0).array() += 1.0;
    const auto sx = examples::eval::feature_statistics(x), sy = examples::eval::feature_statistics(y);
    const double d = frechet_distance(sx, sy);
    REQUIRE(d > 0.5);
    REQUIRE(frechet_distance(sy, sx) == Approx(d).epsilon(1e-12));
    const VectorXd shift = random_vector(gen, 5);
    const auto shifted_x = examples::eval::feature_statistics(MatrixXd(x.rowwise() + shift.transpose()));
    const auto shifted_y = examples::eval::feature_statistics(MatrixXd(y.rowwise() + shift.transpose()));
    REQUIRE(frechet_distance(shifted_x, shifted_y) == Approx(d).epsilon(1e-12));
    const auto scaled_x = examples::eval::feature_statistics(MatrixXd(3.0 * x));
    const auto scaled_y = examples::eval::feature_statistics(MatrixXd(3.0 * y));
    REQUIRE(frechet_distance(scaled_x, scaled_y) == Approx(9.0 * d).epsilon(1e-12));
}

TEST_CASE("Feature statistics are the mean and the unbiased covariance, as in long double", "[eval][frechet]") {
    diffuse::Generator gen(86);
    const auto f = gen.randn<float, 2>({7, 3});  // [N, D], float as a classifier gives them
    const auto s = examples::eval::feature_statistics(f);
    REQUIRE(s.count == 7);
    long double mean[3] = {0, 0, 0};
    for (int n = 0; n < 7; ++n)
        for (int j = 0; j < 3; ++j) mean[j] += f(n, j) / 7.0L;
    for (int i = 0; i < 3; ++i) {
        REQUIRE(s.mean(i) == Approx(static_cast<double>(mean[i])).epsilon(1e-14).margin(1e-15));
        for (int j = 0; j < 3; ++j) {
            long double c = 0;
            for (int n = 0; n < 7; ++n) c += (f(n, i) - mean[i]) * (f(n, j) - mean[j]);
            REQUIRE(s.covariance(i, j) == Approx(static_cast<double>(c / 6)).epsilon(1e-13).margin(1e-15));
        }
    }
}

TEST_CASE("The Frechet distance rejects a matrix that is not a covariance and mismatched sizes", "[eval][frechet]") {
    const VectorXd mu = VectorXd::Zero(3);
    const MatrixXd good = MatrixXd::Identity(3, 3);
    MatrixXd indefinite = MatrixXd::Identity(3, 3);
    indefinite(2, 2) = -0.5;
    REQUIRE_THROWS_AS(frechet_distance(mu, good, mu, indefinite), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(frechet_distance(mu, good, mu, indefinite),
                        Catch::Contains("smallest eigenvalue of sigma2 = -0.5") && Catch::Contains("positive semi-definite"));
    MatrixXd asymmetric = good;
    asymmetric(0, 1) = 0.3;
    REQUIRE_THROWS_WITH(frechet_distance(mu, asymmetric, mu, good), Catch::Contains("sigma1") && Catch::Contains("symmetric"));
    REQUIRE_THROWS_WITH(frechet_distance(mu, good, VectorXd::Zero(4), good), Catch::Contains("mu2.size() = 4"));
    REQUIRE_THROWS_WITH(frechet_distance(mu, MatrixXd::Identity(2, 2), mu, good), Catch::Contains("sigma1.shape = [2, 2]"));
    MatrixXd with_nan = good;
    with_nan(1, 1) = std::nan("");
    REQUIRE_THROWS_WITH(frechet_distance(mu, good, mu, with_nan), Catch::Contains("sigma2"));
}

TEST_CASE("Feature statistics reject fewer than two samples and non-finite features", "[eval][frechet]") {
    REQUIRE_THROWS_WITH(examples::eval::feature_statistics(MatrixXd::Zero(1, 4)), Catch::Contains("features.shape = [1, 4]"));
    MatrixXd f = MatrixXd::Zero(3, 2);
    f(2, 1) = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_WITH(examples::eval::feature_statistics(f), Catch::Contains("features(2, 1) = inf"));
}
