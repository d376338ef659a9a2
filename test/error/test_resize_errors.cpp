// Bad input to resize gives a clear InvalidArgument status from the builder (kept by the graph
// and returned by compile()), never a crash or a wrong kernel.

#include "loom/loom.hpp"
#include "test_util.hpp"

using namespace loom;

namespace {

void require_resize_error(const Shape& shape, const ResizeOptions& o, const std::string& fragment,
                          DType dtype = DType::f32()) {
  Graph g;
  Tensor y = g.input("x", shape, dtype).resize(o);
  CHECK(!y.valid());
  absl::Status s = g.status();
  INFO("status: " << s.ToString());
  REQUIRE(!s.ok());
  REQUIRE(s.code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(std::string(s.message()).find(fragment) != std::string::npos);
  g.output(y);
  REQUIRE(Compiler().compile(g).status() == s);
}

}  // namespace

TEST_CASE("resize with sizes of the wrong rank or non-positive sizes", "[resize][error]") {
  require_resize_error(
      {1, 3, 8, 8}, {.sizes = {16, 16}},
      "resize sizes [16,16] must have one entry per dim of the input [1, 3, 8, 8]");
  require_resize_error({4, 5}, {.sizes = {0, 5}}, "resize sizes must be positive, got [0,5]");
  require_resize_error({4, 5}, {.sizes = {4, -3}}, "resize sizes must be positive, got [4,-3]");
}

TEST_CASE("resize of non-float or symbolic input", "[resize][error]") {
  require_resize_error({4, 5}, {.sizes = {8, 10}}, "resize needs a floating-point tensor, got i32",
                       DType::i32());
  require_resize_error({Dim("batch"), 5}, {.sizes = {2, 10}}, "every dim must be static");
  require_resize_error({0, 5}, {.sizes = {2, 10}}, "resize input [0, 5] is empty");
}

TEST_CASE("resize with bad scales", "[resize][error]") {
  require_resize_error({4, 5}, {.sizes = {8, 10}, .scales = {2.0f}},
                       "resize scales must be empty or have one entry per dim");
  require_resize_error({4, 5}, {.sizes = {8, 10}, .scales = {2.0f, 0.0f}},
                       "resize scales must be positive and finite, got 0 for dim 1");
  require_resize_error({4, 5}, {.sizes = {8, 10}, .scales = {-2.0f, 2.0f}},
                       "resize scales must be positive and finite, got -2 for dim 0");
}

TEST_CASE("resize with modes outside the enums", "[resize][error]") {
  require_resize_error({4, 5}, {.sizes = {8, 10}, .mode = static_cast<ResizeMode>(7)},
                       "resize: unknown mode 7");
  require_resize_error({4, 5}, {.sizes = {8, 10}, .coordinate = static_cast<CoordinateMode>(9)},
                       "resize: unknown coordinate mode 9");
  require_resize_error({4, 5}, {.sizes = {8, 10}, .nearest = static_cast<NearestRounding>(5)},
                       "resize: unknown nearest rounding 5");
}
