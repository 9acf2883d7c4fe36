// The gradient checker itself must fail on the mistakes it exists to catch.

#include <diffuse/nn/linear.hpp>
#include <diffuse/testing/gradient_check.hpp>

#include <catch2/catch.hpp>

namespace {

// A Linear layer whose backward assigns the weight gradient (=) instead of accumulating it (+=).
struct AssigningLinear : diffuse::nn::Linear<double> {
    using Linear::Linear;
    diffuse::Tensor2<double> backward(const diffuse::Tensor2<double>& dy) {
        std::fill(weight.grad(), weight.grad() + weight.size(), 0.0);
        return Linear::backward(dy);
    }
};

// A layer y = x^2 whose backward forgets the factor 2.
struct WrongSquare {
    diffuse::Tensor2<double> x;
    diffuse::Tensor2<double> forward(const diffuse::Tensor2<double>& in) { x = in; return in * in; }
    diffuse::Tensor2<double> backward(const diffuse::Tensor2<double>& dy) { return dy * x; }
    template <class Fn>
    void for_each_parameter(const std::string&, Fn&&) {}
};

}  // namespace

TEST_CASE("The gradient checker passes a correct layer and fails an assigning or a wrong one", "[testing][gradient]") {
    diffuse::Generator gen(1);
    const auto x = gen.randn<double, 2>({3, 4});
    diffuse::nn::Linear<double> good(4, 2, gen);
    REQUIRE(diffuse::testing::check_layer(good, x).passed());
    AssigningLinear assigning(4, 2, gen);
    const auto report = diffuse::testing::check_layer(assigning, x);
    REQUIRE(!report.passed());
    WrongSquare wrong;
    REQUIRE(!diffuse::testing::check_layer(wrong, x).passed());
}
