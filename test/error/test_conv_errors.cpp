// conv2d with bad input: every shape rule gives a non-ok status whose message names the problem.

#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;

namespace {

// The compile() status of x.conv2d(w, options) for inputs of the given shapes and dtypes.
absl::Status conv_status(const Shape& x, const Shape& w, const Conv2dOptions& options,
                         DType xt = DType::f32(), DType wt = DType::f32()) {
  Graph g;
  Tensor y = g.input("x", x, xt).conv2d(g.input("w", w, wt), options);
  CHECK(!y.valid());
  g.output(y);
  return Compiler().compile(g).status();
}

void require_error(const absl::Status& s, const std::string& fragment) {
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  REQUIRE(s.code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(std::string(s.message()).find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("conv2d with wrong ranks", "[conv][error]") {
  require_error(conv_status({3, 8, 8}, {4, 3, 3, 3}, {}), "input must have rank 4");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3}, {}), "weight must have rank 4");
}

TEST_CASE("conv2d with mismatched or non-float dtypes", "[conv][error]") {
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {}, DType::f32(), DType::f16()),
                "dtypes differ: f32 vs f16");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {}, DType::i32(), DType::i32()),
                "floating-point");
}

TEST_CASE("conv2d with channels that do not match the groups", "[conv][error]") {
  require_error(conv_status({1, 3, 8, 8}, {4, 5, 3, 3}, {}), "channel mismatch");
  require_error(conv_status({1, 6, 8, 8}, {4, 6, 3, 3}, {.groups = 2}), "channel mismatch");
  require_error(conv_status({1, 6, 8, 8}, {4, 2, 3, 3}, {.groups = 4}),
                "input channels 6 are not divisible by groups 4");
  require_error(conv_status({1, 6, 8, 8}, {5, 3, 3, 3}, {.groups = 2}),
                "output channels 5 are not divisible by groups 2");
  require_error(conv_status({1, 6, 8, 8}, {4, 3, 3, 3}, {.groups = 0}), "groups must be positive");
}

TEST_CASE("conv2d with a non-positive stride or dilation, or negative padding", "[conv][error]") {
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {.stride = 0}), "stride must be positive");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {.stride = {1, -2}}),
                "stride must be positive");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {.dilation = {0, 1}}),
                "dilation must be positive");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {.padding = {0, 0, -1, 0}}),
                "padding must be non-negative");
}

TEST_CASE("conv2d whose output would be empty", "[conv][error]") {
  require_error(conv_status({1, 3, 2, 8}, {4, 3, 3, 3}, {}), "output would be empty");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 3, 3}, {.dilation = 4}), "output would be empty");
  require_error(conv_status({0, 3, 8, 8}, {4, 3, 3, 3}, {}), "output would be empty");
  require_error(conv_status({1, 3, 8, 8}, {0, 3, 3, 3}, {}), "output would be empty");
  require_error(conv_status({1, 3, 8, 8}, {4, 3, 0, 3}, {}), "empty kernel");
}

TEST_CASE("conv2d with symbolic channel or spatial dims", "[conv][error]") {
  require_error(conv_status({1, Dim("c"), 8, 8}, {4, 3, 3, 3}, {}), "only the batch dim");
  require_error(conv_status({1, 3, 8, 8}, {Dim("o"), 3, 3, 3}, {}), "static shape");
}
