// Conversions between what a network predicts (epsilon, x0, v) against their definitions in long double:
//   x_t = sqrt(alphabar) x_0 + sqrt(1 - alphabar) eps      (Ho et al. 2020, eq. 4)
//   v   = sqrt(alphabar) eps - sqrt(1 - alphabar) x_0      (Salimans & Ho 2022, section 4)
// and their round trips.

#include "../support/reference.hpp"

#include <diffuse/core/random.hpp>
#include <diffuse/process/forward.hpp>
#include <diffuse/process/parameterization.hpp>
#include <diffuse/schedule/betas.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using diffuse::Index;
using ref::LD;

// A batch of x0 and eps, and the long-double x_t and v they define, at one timestep per sample.
template <class T>
struct Fixture {
    std::vector<LD> alphabar;
    diffuse::NoiseSchedule<T> schedule;
    diffuse::Timesteps t;
    diffuse::Tensor2<T> x0, eps, x_t, v;  // x_t and v: the long-double values rounded to T
    std::vector<LD> x_t_exact, v_exact;
    LD u = LD(std::numeric_limits<T>::epsilon()) / 2;

    explicit Fixture(const diffuse::Betas& betas)
        : alphabar(ref::alphas_cumprod(ref::to_ld(betas))), schedule(betas) {
        const int T_steps = static_cast<int>(betas.size());
        t = {0, 1, T_steps / 2, T_steps - 2, T_steps - 1};
        diffuse::Generator generator(17);
        x0 = generator.randn<T, 2>({5, 8});
        eps = generator.randn<T, 2>({5, 8});
        x_t = diffuse::Tensor2<T>(5, 8);
        v = diffuse::Tensor2<T>(5, 8);
        for (Index n = 0; n < 5; ++n) {
            for (Index i = 0; i < 8; ++i) {
                const LD xt = a(n) * x0(n, i) + b(n) * eps(n, i);
                const LD vv = a(n) * eps(n, i) - b(n) * x0(n, i);
                x_t_exact.push_back(xt);
                v_exact.push_back(vv);
                x_t(n, i) = static_cast<T>(xt);
                v(n, i) = static_cast<T>(vv);
            }
        }
    }
    LD ab(Index n) const { return alphabar[static_cast<std::size_t>(t[static_cast<std::size_t>(n)])]; }
    LD a(Index n) const { return std::sqrt(ab(n)); }
    LD b(Index n) const { return std::sqrt(1 - ab(n)); }
};

// Checks got(n, i) against want(n, i) = p(n) x(n, i) + q(n) y(n, i) evaluated in long double from
// the same T inputs. A two-term combination with coefficients rounded once to T (double tables add
// 2e-12) and two more roundings: |error| <= (4 u + 2e-12) (|p x| + |q y|).
template <class T, class P, class Q>
void check_combination(const char* what, const diffuse::Tensor2<T>& got, const Fixture<T>& f, P p,
                       const diffuse::Tensor2<T>& x, Q q, const diffuse::Tensor2<T>& y) {
    for (Index n = 0; n < got.dimension(0); ++n) {
        for (Index i = 0; i < got.dimension(1); ++i) {
            const LD px = p(n) * x(n, i), qy = q(n) * y(n, i);
            INFO(what << ": t = " << f.t[static_cast<std::size_t>(n)] << ", coordinate " << i << ": got "
                      << double(got(n, i)) << ", expected " << double(px + qy));
            REQUIRE(std::fabs(got(n, i) - (px + qy)) <= (4 * f.u + 2e-12L) * (std::fabs(px) + std::fabs(qy)));
        }
    }
}

}  // namespace

TEMPLATE_TEST_CASE("Each conversion is its definition evaluated in long double",
                   "[process][parameterization]", float, double) {
    using T = TestType;
    const bool cosine = GENERATE(false, true);
    INFO((cosine ? "cosine" : "linear"));
    const Fixture<T> f(cosine ? diffuse::cosine_betas(1000) : diffuse::linear_betas(1000));
    // Each function's own formula, applied to its T-valued inputs.
    check_combination(
        "predict_x0_from_eps", diffuse::predict_x0_from_eps(f.schedule, f.x_t, f.t, f.eps), f,
        [&](Index n) { return 1 / f.a(n); }, f.x_t, [&](Index n) { return -f.b(n) / f.a(n); }, f.eps);
    check_combination(
        "predict_eps_from_x0", diffuse::predict_eps_from_x0(f.schedule, f.x_t, f.t, f.x0), f,
        [&](Index n) { return 1 / f.b(n); }, f.x_t, [&](Index n) { return -f.a(n) / f.b(n); }, f.x0);
    check_combination(
        "v_from_x0_eps", diffuse::v_from_x0_eps(f.schedule, f.x0, f.t, f.eps), f,
        [&](Index n) { return f.a(n); }, f.eps, [&](Index n) { return -f.b(n); }, f.x0);
    check_combination(
        "predict_x0_from_v", diffuse::predict_x0_from_v(f.schedule, f.x_t, f.t, f.v), f,
        [&](Index n) { return f.a(n); }, f.x_t, [&](Index n) { return -f.b(n); }, f.v);
    check_combination(
        "predict_eps_from_v", diffuse::predict_eps_from_v(f.schedule, f.x_t, f.t, f.v), f,
        [&](Index n) { return f.b(n); }, f.x_t, [&](Index n) { return f.a(n); }, f.v);
}

TEMPLATE_TEST_CASE("Conversions recover x0 and eps from the x_t and v they define",
                   "[process][parameterization]", float, double) {
    // x_t and v are the long-double definitions rounded to T. Their rounding (u relative) is amplified
    // by the conversion's coefficients, so the error bound is (4 u + 2e-12) (|p x_t| + |q y|) as above
    // plus u (|p x_t| + |q y|) for the rounded inputs: 6 u + 2e-12 relative to |p x_t| + |q y|.
    using T = TestType;
    const bool cosine = GENERATE(false, true);
    INFO((cosine ? "cosine" : "linear"));
    const Fixture<T> f(cosine ? diffuse::cosine_betas(1000) : diffuse::linear_betas(1000));
    const auto check = [&](const char* what, const diffuse::Tensor2<T>& got, const diffuse::Tensor2<T>& want,
                           auto p, const diffuse::Tensor2<T>& x, auto q, const diffuse::Tensor2<T>& y) {
        for (Index n = 0; n < 5; ++n) {
            for (Index i = 0; i < 8; ++i) {
                const LD scale = std::fabs(p(n) * x(n, i)) + std::fabs(q(n) * y(n, i));
                INFO(what << ": t = " << f.t[static_cast<std::size_t>(n)] << ", coordinate " << i);
                REQUIRE(std::fabs(got(n, i) - want(n, i)) <= (6 * f.u + 2e-12L) * scale);
            }
        }
    };
    const auto one_over_a = [&](Index n) { return 1 / f.a(n); };
    const auto b_over_a = [&](Index n) { return f.b(n) / f.a(n); };
    const auto one_over_b = [&](Index n) { return 1 / f.b(n); };
    const auto a_over_b = [&](Index n) { return f.a(n) / f.b(n); };
    const auto a = [&](Index n) { return f.a(n); };
    const auto b = [&](Index n) { return f.b(n); };
    check("x0 from (x_t, eps)", diffuse::predict_x0_from_eps(f.schedule, f.x_t, f.t, f.eps), f.x0, one_over_a,
          f.x_t, b_over_a, f.eps);
    check("eps from (x_t, x0)", diffuse::predict_eps_from_x0(f.schedule, f.x_t, f.t, f.x0), f.eps, one_over_b,
          f.x_t, a_over_b, f.x0);
    check("x0 from (x_t, v)", diffuse::predict_x0_from_v(f.schedule, f.x_t, f.t, f.v), f.x0, a, f.x_t, b,
          f.v);
    check("eps from (x_t, v)", diffuse::predict_eps_from_v(f.schedule, f.x_t, f.t, f.v), f.eps, b, f.x_t, a,
          f.v);
    check("v from (x0, eps)", diffuse::v_from_x0_eps(f.schedule, f.x0, f.t, f.eps), f.v, a, f.eps, b, f.x0);
}

TEMPLATE_TEST_CASE("eps -> x0 -> eps and x0 -> v -> x0 round trips return the start",
                   "[process][parameterization]", float, double) {
    // Library only, start to finish: x_t from q_sample, then two conversions. The first conversion's
    // error, (4 u + 2e-12) (|x0| + (b / a) |eps|), passes through the second's coefficient; the bound
    // below sums the terms' magnitudes through both steps with 8 u + 4e-12.
    using T = TestType;
    const Fixture<T> f(diffuse::linear_betas(1000));
    const auto x_t = diffuse::q_sample(f.schedule, f.x0, f.t, f.eps);
    const auto x0_hat = diffuse::predict_x0_from_eps(f.schedule, x_t, f.t, f.eps);
    const auto eps_back = diffuse::predict_eps_from_x0(f.schedule, x_t, f.t, x0_hat);
    const auto v = diffuse::v_from_x0_eps(f.schedule, f.x0, f.t, f.eps);
    const auto x0_from_v = diffuse::predict_x0_from_v(f.schedule, x_t, f.t, v);
    const auto eps_from_v = diffuse::predict_eps_from_v(f.schedule, x_t, f.t, v);
    for (Index n = 0; n < 5; ++n) {
        const LD a = f.a(n), b = f.b(n);
        for (Index i = 0; i < 8; ++i) {
            INFO("t = " << f.t[static_cast<std::size_t>(n)] << ", coordinate " << i);
            const LD x = std::fabs(f.x0(n, i)), e = std::fabs(f.eps(n, i));
            const LD tol = 8 * f.u + 4e-12L;
            // x0 -> (x_t, eps) -> x0: terms (1/a)|x_t| ~ |x0| + (b/a)|eps| and (b/a)|eps|.
            CHECK(std::fabs(x0_hat(n, i) - f.x0(n, i)) <= tol * (x + 2 * b / a * e));
            // -> eps: (1/b)|x_t| + (a/b)|x0_hat|, with x0_hat's error times a/b.
            CHECK(std::fabs(eps_back(n, i) - f.eps(n, i)) <= tol * (3 * a / b * x + 3 * e));
            // v route: every coefficient is at most 1.
            CHECK(std::fabs(x0_from_v(n, i) - f.x0(n, i)) <= tol * 2 * (x + e));
            CHECK(std::fabs(eps_from_v(n, i) - f.eps(n, i)) <= tol * 2 * (x + e));
        }
    }
}

TEMPLATE_TEST_CASE("predict_x0 and predict_eps convert from every kind of model output",
                   "[process][parameterization]", float, double) {
    using T = TestType;
    const Fixture<T> f(diffuse::cosine_betas(100));
    const LD tol = 8 * f.u + 4e-12L;
    struct Kind {
        diffuse::Prediction prediction;
        const diffuse::Tensor2<T>* output;
    };
    for (const Kind& kind : {Kind{diffuse::Prediction::epsilon, &f.eps}, Kind{diffuse::Prediction::x0, &f.x0},
                             Kind{diffuse::Prediction::v, &f.v}}) {
        INFO("model output " << diffuse::to_string(kind.prediction));
        const auto x0 = diffuse::predict_x0(f.schedule, f.x_t, f.t, *kind.output, kind.prediction);
        const auto eps = diffuse::predict_eps(f.schedule, f.x_t, f.t, *kind.output, kind.prediction);
        for (Index n = 0; n < 5; ++n) {
            const LD a = f.a(n), b = f.b(n);
            for (Index i = 0; i < 8; ++i) {
                INFO("t = " << f.t[static_cast<std::size_t>(n)] << ", coordinate " << i);
                const LD x = std::fabs(f.x0(n, i)), e = std::fabs(f.eps(n, i));
                // The worst coefficient pair: x0 from eps (1/a, b/a), eps from x0 (1/b, a/b).
                CHECK(std::fabs(x0(n, i) - f.x0(n, i)) <= tol * 2 * (x + b / a * e + e));
                CHECK(std::fabs(eps(n, i) - f.eps(n, i)) <= tol * 2 * (e + a / b * x + x));
            }
        }
    }
    // An x0 model output is x0 itself, an eps output eps itself: returned unchanged.
    const auto same_x0 = diffuse::predict_x0(f.schedule, f.x_t, f.t, f.x0, diffuse::Prediction::x0);
    const auto same_eps = diffuse::predict_eps(f.schedule, f.x_t, f.t, f.eps, diffuse::Prediction::epsilon);
    for (Index k = 0; k < f.x0.size(); ++k) {
        REQUIRE(same_x0.data()[k] == f.x0.data()[k]);
        REQUIRE(same_eps.data()[k] == f.eps.data()[k]);
    }
}

TEST_CASE("Prediction kinds convert to and from their names", "[process][parameterization]") {
    using diffuse::Prediction;
    CHECK(diffuse::prediction_from_string("epsilon") == Prediction::epsilon);
    CHECK(diffuse::prediction_from_string("eps") == Prediction::epsilon);
    CHECK(diffuse::prediction_from_string("x0") == Prediction::x0);
    CHECK(diffuse::prediction_from_string("v") == Prediction::v);
    for (const Prediction p : {Prediction::epsilon, Prediction::x0, Prediction::v}) {
        CHECK(diffuse::prediction_from_string(diffuse::to_string(p)) == p);
    }
    REQUIRE_THROWS_AS(diffuse::prediction_from_string("sample"), diffuse::invalid_argument);
    REQUIRE_THROWS_WITH(diffuse::prediction_from_string("sample"), Catch::Contains("name = \"sample\""));
}

TEST_CASE("Conversions reject mismatched shapes and bad timesteps, for every kind",
          "[process][parameterization][errors]") {
    using Catch::Contains;
    using diffuse::Prediction;
    const diffuse::NoiseSchedule<double> schedule(diffuse::linear_betas(10));
    diffuse::Tensor2<double> x_t(2, 3), out(2, 3), wide(2, 4);
    x_t.setZero();
    out.setZero();
    wide.setZero();
    for (const Prediction p : {Prediction::epsilon, Prediction::x0, Prediction::v}) {
        INFO(diffuse::to_string(p));
        REQUIRE_THROWS_AS(diffuse::predict_x0(schedule, x_t, {0, 1}, wide, p), diffuse::invalid_argument);
        REQUIRE_THROWS_WITH(diffuse::predict_x0(schedule, x_t, {0, 1}, wide, p), Contains(".shape = [2, 4]"));
        REQUIRE_THROWS_WITH(diffuse::predict_eps(schedule, x_t, {0, 1}, wide, p),
                            Contains(".shape = [2, 4]"));
        REQUIRE_THROWS_WITH(diffuse::predict_x0(schedule, x_t, {0, 10}, out, p), Contains("t[1] = 10"));
        REQUIRE_THROWS_WITH(diffuse::predict_eps(schedule, x_t, {0}, out, p), Contains("t.size() = 1"));
    }
}
