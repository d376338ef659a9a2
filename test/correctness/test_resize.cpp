// resize (nearest and n-linear) against a plain C++ reference written from the ONNX Resize
// formulas in double: every mode, coordinate transformation and rounding, 2-D, 3-D and NCHW
// tensors with odd and prime extents, up- and down-sampling, given scales and output extents of 1.

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

// x_original of output index o, from the ONNX spec (s: the dim's scale, n: input extent, m:
// output extent).
double original_coordinate(CoordinateMode c, int64_t o, int64_t n, int64_t m, double s) {
  switch (c) {
    case CoordinateMode::kHalfPixel:
      return (o + 0.5) / s - 0.5;
    case CoordinateMode::kPytorchHalfPixel:
      return m > 1 ? (o + 0.5) / s - 0.5 : 0.0;
    case CoordinateMode::kAlignCorners:
      return s * n == 1 ? 0.0 : o * (n - 1) / (s * n - 1);
    case CoordinateMode::kAsymmetric:
      return o / s;
    case CoordinateMode::kTfHalfPixelForNearest:
      return (o + 0.5) / s;
  }
  return 0;
}

int64_t nearest_index(NearestRounding r, double x) {
  const bool tie = x - std::floor(x) == 0.5;
  switch (r) {
    case NearestRounding::kRoundPreferFloor:
      return static_cast<int64_t>(tie ? std::floor(x) : std::round(x));
    case NearestRounding::kRoundPreferCeil:
      return static_cast<int64_t>(tie ? std::ceil(x) : std::round(x));
    case NearestRounding::kFloor:
      return static_cast<int64_t>(std::floor(x));
    case NearestRounding::kCeil:
      return static_cast<int64_t>(std::ceil(x));
  }
  return 0;
}

int64_t clamp_index(int64_t i, int64_t n) {
  return std::min(std::max(i, int64_t{0}), n - 1);
}

// The whole operator: per output element, per dim the input positions and their weights (one
// position for nearest, two for linear), then the weighted sum over every combination.
NDArray naive_resize(const NDArray& x, const ResizeOptions& o) {
  const std::vector<int64_t>& in = x.shape();
  const size_t rank = in.size();
  NDArray out(x.dtype(), o.sizes);
  std::vector<int64_t> index(rank, 0);
  for (int64_t flat = 0; flat < out.numel(); ++flat) {
    int64_t rest = flat;
    for (size_t d = rank; d-- > 0;) index[d] = rest % o.sizes[d], rest /= o.sizes[d];
    std::vector<std::vector<std::pair<int64_t, double>>> taps(rank);
    for (size_t d = 0; d < rank; ++d) {
      const int64_t n = in[d], m = o.sizes[d];
      const double s = o.scales.empty() ? static_cast<double>(m) / static_cast<double>(n)
                                        : static_cast<double>(o.scales[d]);
      const double xo = original_coordinate(o.coordinate, index[d], n, m, s);
      if (o.mode == ResizeMode::kNearest) {
        taps[d] = {{clamp_index(nearest_index(o.nearest, xo), n), 1.0}};
      } else {
        const double lo = std::floor(xo);
        const auto i0 = static_cast<int64_t>(lo);
        taps[d] = {{clamp_index(i0, n), 1.0 - (xo - lo)}, {clamp_index(i0 + 1, n), xo - lo}};
      }
    }
    double total = 0;
    std::vector<size_t> pick(rank, 0);
    while (true) {
      double weight = 1;
      int64_t source = 0;
      for (size_t d = 0; d < rank; ++d) {
        weight *= taps[d][pick[d]].second;
        source = source * in[d] + taps[d][pick[d]].first;
      }
      total += weight * x.get(source);
      size_t d = rank;
      while (d > 0 && ++pick[d - 1] == taps[d - 1].size()) pick[--d] = 0;
      if (d == 0) break;
    }
    out.set(flat, total);
  }
  return out;
}

void check_resize(const std::vector<int64_t>& shape, const ResizeOptions& o, DType dtype,
                  double tolerance) {
  Graph g;
  Shape s(shape.begin(), shape.end());
  g.output(g.input("x", s, dtype).resize(o));
  CompileOptions options;
  options.poison_buffers = true;
  auto compiled = Compiler().compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  NDArray in = random_array(dtype, shape, -4, 4);
  auto got = compiled->run({in});
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  NDArray want = naive_resize(in, o);
  require_close((*got)[0], want, tolerance, tolerance);
  require_close(reference_run(g, {in})[0], want, tolerance, tolerance);
}

struct Case {
  std::vector<int64_t> shape, sizes;
  std::vector<float> scales;
};

const Case kCases[] = {
    {{7, 5}, {11, 3}, {}},  // 2-D: up one dim, down the other
    {{13, 17}, {5, 23}, {}},
    {{3, 5, 7}, {5, 2, 11}, {}},         // every dim resized, rank 3
    {{2, 3, 7, 11}, {2, 3, 13, 5}, {}},  // NCHW
    {{1, 2, 5, 3}, {1, 2, 2, 9}, {}},
    {{1, 3, 5, 4}, {1, 3, 1, 7}, {}},                  // an output extent of 1
    {{2, 1, 1, 5}, {2, 1, 3, 5}, {}},                  // an input extent of 1
    {{1, 2, 4, 5}, {1, 2, 2, 8}, {1, 1, 0.6f, 1.7f}},  // scales: sizes are floor(n * s)
    {{1, 1, 7, 3}, {1, 1, 17, 2}, {1, 1, 2.5f, 0.8f}},
};

const CoordinateMode kCoordinates[] = {
    CoordinateMode::kHalfPixel, CoordinateMode::kPytorchHalfPixel, CoordinateMode::kAlignCorners,
    CoordinateMode::kAsymmetric, CoordinateMode::kTfHalfPixelForNearest};

}  // namespace

TEST_CASE("resize nearest: every coordinate mode and rounding", "[resize]") {
  const NearestRounding roundings[] = {NearestRounding::kRoundPreferFloor,
                                       NearestRounding::kRoundPreferCeil, NearestRounding::kFloor,
                                       NearestRounding::kCeil};
  for (const Case& c : kCases)
    for (CoordinateMode coordinate : kCoordinates)
      for (NearestRounding rounding : roundings) {
        INFO(shape_to_string(Shape(c.shape.begin(), c.shape.end()))
             << " -> " << shape_to_string(Shape(c.sizes.begin(), c.sizes.end())) << " coordinate "
             << static_cast<int>(coordinate) << " rounding " << static_cast<int>(rounding));
        check_resize(c.shape,
                     {.sizes = c.sizes,
                      .mode = ResizeMode::kNearest,
                      .coordinate = coordinate,
                      .nearest = rounding,
                      .scales = c.scales},
                     DType::f32(), 0);
      }
}

TEST_CASE("resize linear: every coordinate mode", "[resize]") {
  for (const Case& c : kCases)
    for (CoordinateMode coordinate : kCoordinates) {
      INFO(shape_to_string(Shape(c.shape.begin(), c.shape.end()))
           << " -> " << shape_to_string(Shape(c.sizes.begin(), c.sizes.end())) << " coordinate "
           << static_cast<int>(coordinate));
      check_resize(c.shape,
                   {.sizes = c.sizes,
                    .mode = ResizeMode::kLinear,
                    .coordinate = coordinate,
                    .scales = c.scales},
                   DType::f32(), 1e-5);
    }
}

TEST_CASE("resize at rounding ties: 0.5 positions go the way the rounding says", "[resize]") {
  // Asymmetric 4 -> 8 maps o to o / 2: every odd o lands on a tie.
  for (NearestRounding rounding :
       {NearestRounding::kRoundPreferFloor, NearestRounding::kRoundPreferCeil}) {
    Graph g;
    g.output(g.input("x", {4}).resize(
        {.sizes = {8}, .coordinate = CoordinateMode::kAsymmetric, .nearest = rounding}));
    auto compiled = Compiler().compile(g);
    REQUIRE(compiled.ok());
    NDArray in(DType::f32(), {4});
    for (int k = 0; k < 4; ++k) in.set(k, 10 * (k + 1));
    auto got = compiled->run({in});
    REQUIRE(got.ok());
    const bool ceil = rounding == NearestRounding::kRoundPreferCeil;
    const double want[] = {10, ceil ? 20.0 : 10.0, 20, ceil ? 30.0 : 20.0,
                           30, ceil ? 40.0 : 30.0, 40, 40};
    for (int k = 0; k < 8; ++k) {
      INFO("element " << k);
      REQUIRE((*got)[0].get(k) == want[k]);
    }
  }
}

TEST_CASE("resize keeps f16 and bf16 (computed in f32)", "[resize]") {
  for (DType dtype : {DType::f16(), DType::bf16()})
    check_resize({1, 2, 5, 7}, {.sizes = {1, 2, 9, 4}, .mode = ResizeMode::kLinear}, dtype, 2e-2);
}

namespace {

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A length-delimited protobuf field: the tag of (field, wire type 2), the length, the bytes.
std::string varint(uint64_t n) {
  std::string out;
  for (; n >= 0x80; n >>= 7) out += static_cast<char>((n & 0x7f) | 0x80);
  return out + static_cast<char>(n);
}
std::string length_delimited(int field, const std::string& bytes) {
  return varint(static_cast<uint64_t>(field) << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string varint_field(int field, int64_t v) {
  return varint(static_cast<uint64_t>(field) << 3) + varint(static_cast<uint64_t>(v));
}

// An AttributeProto: name (1), type (20: INT 2, STRING 3, INTS 7), i (3), s (4), ints (8).
std::string int_attribute(const std::string& name, int64_t v) {
  return length_delimited(5, length_delimited(1, name) + varint_field(20, 2) + varint_field(3, v));
}
std::string string_attribute(const std::string& name, const std::string& v) {
  return length_delimited(5,
                          length_delimited(1, name) + varint_field(20, 3) + length_delimited(4, v));
}
std::string ints_attribute(const std::string& name, const std::vector<int64_t>& v) {
  std::string a = length_delimited(1, name) + varint_field(20, 7);
  for (int64_t x : v) a += varint_field(8, x);
  return length_delimited(5, a);
}

// An opset-18 model: y = Resize(x [f32, shape], roi "", scales "", sizes (an int64 initializer))
// with the given encoded attributes.
std::string resize_model(const std::vector<int64_t>& shape, const std::vector<int64_t>& sizes,
                         const std::string& attributes) {
  std::string node = length_delimited(1, "x") + length_delimited(1, "") + length_delimited(1, "") +
                     length_delimited(1, "sizes") + length_delimited(2, "y") +
                     length_delimited(4, "Resize") + attributes;
  std::string tensor = varint_field(1, static_cast<int64_t>(sizes.size())) + varint_field(2, 7);
  for (int64_t v : sizes) tensor += varint_field(7, v);
  tensor += length_delimited(8, "sizes");
  std::string dims;
  for (int64_t d : shape) dims += length_delimited(1, varint_field(1, d));
  const std::string type =
      length_delimited(1, varint_field(1, 1) + length_delimited(2, dims));  // tensor_type
  const std::string graph =
      length_delimited(1, node) + length_delimited(2, "g") + length_delimited(5, tensor) +
      length_delimited(11, length_delimited(1, "x") + length_delimited(2, type)) +
      length_delimited(12, length_delimited(1, "y"));
  return varint_field(1, 8) + length_delimited(8, varint_field(2, 18)) + length_delimited(7, graph);
}

}  // namespace

// The ONNX backend node tests pass scales and sizes as graph inputs, which the importer needs as
// constants. Protobuf merges a repeated message field, so appending a second ModelProto.graph
// (field 7) holding them as GraphProto.initializer (field 5) turns them into initializers.
TEST_CASE("onnx Resize and Upsample node tests with scales and sizes as initializers",
          "[resize][onnx]") {
  const std::filesystem::path root = "/usr/share/libonnx-testdata/data/node";
  if (!std::filesystem::exists(root / "test_upsample_nearest")) {
    WARN("libonnx-testdata is not installed; skipping");
    return;
  }
  int passed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string test = entry.path().filename().string();
    if (test.rfind("test_resize", 0) != 0 && test.rfind("test_upsample", 0) != 0) continue;
    INFO(test);
    const std::filesystem::path set = entry.path() / "test_data_set_0";
    std::string initializers;
    for (int k = 1; std::filesystem::exists(set / ("input_" + std::to_string(k) + ".pb")); ++k)
      initializers += length_delimited(5, file_bytes(set / ("input_" + std::to_string(k) + ".pb")));
    auto g = onnx::import_from_memory(file_bytes(entry.path() / "model.onnx") +
                                      length_delimited(7, initializers));
    const bool supported = test.find("cubic") == std::string::npos &&
                           test.find("tf_crop_and_resize") == std::string::npos;
    if (!supported) {
      INFO(g.status().ToString());
      REQUIRE(g.status().code() == absl::StatusCode::kUnimplemented);
      continue;
    }
    INFO(g.status().ToString());
    REQUIRE(g.ok());
    auto compiled = Compiler().compile(*g);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    auto x = onnx::read_tensor((set / "input_0.pb").string());
    auto want = onnx::read_tensor((set / "output_0.pb").string());
    REQUIRE(x.ok());
    REQUIRE(want.ok());
    auto got = compiled->run({*x});
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    require_close((*got)[0], *want, 1e-5, 1e-5);
    ++passed;
  }
  CHECK(passed == 14);
}

TEST_CASE("onnx Resize: axes, and unsupported attributes are UNIMPLEMENTED", "[resize][onnx]") {
  // axes [3, 2] with sizes [5, 3]: W becomes 5, H becomes 3; N and C stay.
  auto g = onnx::import_from_memory(resize_model(
      {2, 3, 7, 4}, {5, 3}, ints_attribute("axes", {3, 2}) + string_attribute("mode", "linear")));
  INFO(g.status().ToString());
  REQUIRE(g.ok());
  auto compiled = Compiler().compile(*g);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  NDArray x = random_array(DType::f32(), {2, 3, 7, 4});
  auto got = compiled->run({x});
  REQUIRE(got.ok());
  require_close((*got)[0], naive_resize(x, {.sizes = {2, 3, 3, 5}, .mode = ResizeMode::kLinear}),
                1e-5, 1e-5);

  const std::pair<std::string, std::string> unsupported[] = {
      {int_attribute("antialias", 1), "antialias=1"},
      {int_attribute("exclude_outside", 1), "exclude_outside=1"},
      {string_attribute("keep_aspect_ratio_policy", "not_larger"), "keep_aspect_ratio_policy"},
      {string_attribute("mode", "cubic"), "Resize mode cubic"},
      {string_attribute("coordinate_transformation_mode", "tf_crop_and_resize"),
       "tf_crop_and_resize"},
      {string_attribute("nearest_mode", "nearest_even"), "nearest_mode nearest_even"},
  };
  for (const auto& [attribute, message] : unsupported) {
    auto bad = onnx::import_from_memory(resize_model({1, 1, 4, 4}, {1, 1, 8, 8}, attribute));
    INFO(bad.status().ToString());
    REQUIRE(bad.status().code() == absl::StatusCode::kUnimplemented);
    REQUIRE(bad.status().message().find(message) != std::string::npos);
  }
}
