#pragma once
// The Frechet distance between two Gaussians fitted to feature vectors (Dowson & Landau 1982; FID,
// Heusel et al. 2017, uses it on Inception features):
//     d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
// S_1 S_2 is not symmetric, and a general matrix square root of it (scipy's sqrtm, as the usual FID
// code does) can return complex parts from rounding alone. Here S_1 S_2 is similar to the symmetric
// PSD S_1^{1/2} S_2 S_1^{1/2} = A A^T with A = S_1^{1/2} S_2^{1/2}, so
//     tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(S_1^{1/2} S_2 S_1^{1/2})) = sum_i sigma_i(A),
// the square roots S^{1/2} from Eigen's SelfAdjointEigenSolver, the singular values sigma_i from its
// BDCSVD, all in double.
//
// Rounding leaves the eigenvalues of a singular PSD matrix (a covariance of fewer samples than
// dimensions, say) slightly negative: those no more negative than -psd_tolerance times the matrix's
// largest eigenvalue are taken as zero. Anything more negative means the matrix is not a covariance,
// and throws, naming the eigenvalue; nothing is silently clamped.

#include <diffuse/core/error.hpp>
#include <diffuse/core/tensor.hpp>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

namespace examples::eval {

using diffuse::Index;
using diffuse::Tensor2;

/// The mean and covariance of a set of feature vectors, in double.
struct FeatureStatistics {
    Eigen::VectorXd mean;        // mu, [D]
    Eigen::MatrixXd covariance;  // S, [D, D], unbiased (divided by count - 1)
    Index count = 0;             // the number of vectors they came from
};

/// Mean and unbiased covariance of the rows of `features` [N, D], N >= 2, computed in double with
/// the mean subtracted first (two passes, no E[x^2] - E[x]^2 cancellation).
inline FeatureStatistics feature_statistics(const Eigen::Ref<const Eigen::MatrixXd>& features) {
    constexpr const char* where = "examples::eval::feature_statistics";
    const Index n = features.rows(), d = features.cols();
    if (n < 2 || d < 1) {
        diffuse::detail::throw_invalid(where, "features.shape", "[" + std::to_string(n) + ", " + std::to_string(d) + "]",
                              "[N, D] with N >= 2 samples (the unbiased covariance divides by N - 1) and D >= 1");
    }
    if (!features.allFinite()) {
        Index row = 0, col = 0;
        (!features.array().isFinite()).cast<int>().maxCoeff(&row, &col);
        diffuse::detail::throw_invalid(where, "features(" + std::to_string(row) + ", " + std::to_string(col) + ")",
                              features(row, col), "a finite value");
    }
    FeatureStatistics s;
    s.count = n;
    s.mean = features.colwise().mean().transpose();
    const Eigen::MatrixXd centered = features.rowwise() - s.mean.transpose();  // [N, D]
    s.covariance = (centered.transpose() * centered) / static_cast<double>(n - 1);
    return s;
}

/// The same for a tensor of features [N, D] (a classifier's penultimate activations), any scalar type.
template <class T>
FeatureStatistics feature_statistics(const Tensor2<T>& features) {
    using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RowMajor> m(features.data(), features.dimension(0), features.dimension(1));
    return feature_statistics(Eigen::MatrixXd(m.template cast<double>()));
}

struct FrechetOptions {
    /// Negative eigenvalues down to -psd_tolerance times the scale of the matrix (its largest
    /// eigenvalue) are rounding and count as zero; below that the input is rejected. Eigen's
    /// symmetric eigensolver is accurate to about D * 2^-52 of that scale: 1e-9 leaves a wide margin
    /// up to D in the tens of thousands, while still catching any real indefiniteness.
    double psd_tolerance = 1e-9;
    /// Also the allowed asymmetry: |S - S^T| <= psd_tolerance * max|S|.
    bool check_symmetry = true;
};

namespace detail {

// The eigen-decomposition of a covariance, checked to be symmetric and PSD to the tolerance; the
// eigenvalues come back with rounding negatives set to zero.
inline Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> psd_eigen(std::string_view where, std::string_view name,
                                                               const Eigen::MatrixXd& s,
                                                               const FrechetOptions& options) {
    if (!s.allFinite()) diffuse::detail::throw_invalid(where, std::string(name) + " (a covariance)", "non-finite entries", "finite values");
    const double scale = s.cwiseAbs().maxCoeff();
    if (options.check_symmetry) {
        const double asymmetry = (s - s.transpose()).cwiseAbs().maxCoeff();
        if (asymmetry > options.psd_tolerance * scale) {
            diffuse::detail::throw_invalid(where, "max |" + std::string(name) + " - " + std::string(name) + "^T|",
                                           asymmetry, "a symmetric covariance (at most psd_tolerance * max|S| = " +
                                                          std::to_string(options.psd_tolerance * scale) + ")");
        }
    }
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(s);  // reads the lower triangle
    if (eigen.info() != Eigen::Success) {
        throw diffuse::numerical_error(std::string(where) + ": the eigen-decomposition of " + std::string(name) + " did not converge");
    }
    return eigen;
}

// Eigenvalues (ascending) with those in [-tolerance * largest, 0) set to zero; throws on a more
// negative one, naming it.
inline Eigen::VectorXd clamp_rounding(std::string_view where, std::string_view what, Eigen::VectorXd lambda,
                                      double bound) {
    const double smallest = lambda.minCoeff();
    if (smallest < -bound) {
        diffuse::detail::throw_invalid(where, "the smallest eigenvalue of " + std::string(what), smallest,
                                       "a positive semi-definite matrix (eigenvalues >= -" + std::to_string(bound) +
                                           ", the rounding tolerance)");
    }
    return lambda.cwiseMax(0.0);
}

}  // namespace detail

/// d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2}), for symmetric PSD S_1, S_2.
inline double frechet_distance(const Eigen::VectorXd& mu1, const Eigen::MatrixXd& sigma1, const Eigen::VectorXd& mu2,
                               const Eigen::MatrixXd& sigma2, const FrechetOptions& options = {}) {
    constexpr const char* where = "examples::eval::frechet_distance";
    const Index d = mu1.size();
    const auto square = [](Index n) { return "[" + std::to_string(n) + ", " + std::to_string(n) + "]"; };
    if (d < 1) diffuse::detail::throw_invalid(where, "mu1.size()", d, "at least 1");
    if (mu2.size() != d) diffuse::detail::throw_invalid(where, "mu2.size()", mu2.size(), "mu1.size() = " + std::to_string(d));
    if (sigma1.rows() != d || sigma1.cols() != d) {
        diffuse::detail::throw_invalid(where, "sigma1.shape", "[" + std::to_string(sigma1.rows()) + ", " + std::to_string(sigma1.cols()) + "]", square(d));
    }
    if (sigma2.rows() != d || sigma2.cols() != d) {
        diffuse::detail::throw_invalid(where, "sigma2.shape", "[" + std::to_string(sigma2.rows()) + ", " + std::to_string(sigma2.cols()) + "]", square(d));
    }
    if (!mu1.allFinite()) diffuse::detail::throw_invalid(where, "mu1", "non-finite entries", "finite values");
    if (!mu2.allFinite()) diffuse::detail::throw_invalid(where, "mu2", "non-finite entries", "finite values");
    if (!(options.psd_tolerance >= 0.0)) diffuse::detail::throw_invalid(where, "psd_tolerance", options.psd_tolerance, ">= 0");

    const auto e1 = detail::psd_eigen(where, "sigma1", sigma1, options);
    const auto e2 = detail::psd_eigen(where, "sigma2", sigma2, options);
    const double top1 = std::max(0.0, e1.eigenvalues().maxCoeff()), top2 = std::max(0.0, e2.eigenvalues().maxCoeff());
    const Eigen::VectorXd l1 = detail::clamp_rounding(where, "sigma1", e1.eigenvalues(), options.psd_tolerance * top1);
    const Eigen::VectorXd l2 = detail::clamp_rounding(where, "sigma2", e2.eigenvalues(), options.psd_tolerance * top2);

    // S^{1/2} = V diag(sqrt(lambda)) V^T for each; A = S_1^{1/2} S_2^{1/2}, [D, D].
    const auto root = [](const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>& e, const Eigen::VectorXd& lambda) {
        return Eigen::MatrixXd(e.eigenvectors() * lambda.cwiseSqrt().asDiagonal() * e.eigenvectors().transpose());
    };
    const Eigen::MatrixXd a = root(e1, l1) * root(e2, l2);
    // A A^T = S_1^{1/2} S_2 S_1^{1/2}, so tr((S_1 S_2)^{1/2}) = sum_i sigma_i(A), the nuclear norm of A.
    // The singular values come without squaring: no sqrt of a rounding-sized eigenvalue, which would
    // turn an error of 2^-52 into one of 2^-26 (the identical-distribution case then gives 0 to 1e-15).
    const Eigen::BDCSVD<Eigen::MatrixXd> svd(a);
    if (svd.info() != Eigen::Success) {
        throw diffuse::numerical_error(std::string(where) + ": the SVD of sigma1^{1/2} sigma2^{1/2} did not converge");
    }
    const double trace_sqrt = svd.singularValues().sum();
    const double trace1 = l1.sum(), trace2 = l2.sum();  // tr S = sum of its eigenvalues
    const double mean_term = (mu1 - mu2).squaredNorm();
    const double d2 = mean_term + trace1 + trace2 - 2.0 * trace_sqrt;
    // d^2 >= 0 for PSD S_1, S_2 (it is a squared Wasserstein-2 distance); a negative d^2 can only be
    // rounding, of the size of the terms times D 2^-52: within the tolerance it is 0, else an error.
    const double size = mean_term + trace1 + trace2;
    if (d2 < -options.psd_tolerance * size) {
        throw diffuse::numerical_error(std::string(where) + ": d^2 = " + std::to_string(d2) +
                              " is negative beyond rounding (terms of size " + std::to_string(size) + ")");
    }
    return std::max(0.0, d2);
}

/// The Frechet distance between the Gaussians fitted to two feature sets (FID when the features
/// are Inception's; here, the evaluation classifier's).
inline double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b, const FrechetOptions& options = {}) {
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance, options);
}

}  // namespace examples::eval
