// ONNX import: bad files and bad inputs give clear errors (never a crash), and a model from the
// ONNX test data imports, runs and matches its expected output.

#include <filesystem>
#include <fstream>
#include <sstream>

#include "loom/loom.hpp"
#include "loom/onnx/onnx.hpp"
#include "test_util.hpp"

using namespace loom;
namespace fs = std::filesystem;

namespace {

const fs::path kNodeTests = "/usr/share/libonnx-testdata/data/node";

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void require_error(const absl::Status& s, absl::StatusCode code, const std::string& fragment) {
  INFO(s.ToString());
  REQUIRE(!s.ok());
  CHECK(s.code() == code);
  CHECK(s.message().find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("onnx: truncated, corrupt and missing files are errors", "[onnx][error]") {
  require_error(onnx::import("no/such/model.onnx").status(), absl::StatusCode::kNotFound,
                "cannot open no/such/model.onnx");
  require_error(onnx::import_from_memory("this is not protobuf \xff\xff\xff").status(),
                absl::StatusCode::kDataLoss, "not a valid ONNX model");
  require_error(onnx::tensor_from_memory("\x0a\xff\xff\xff\xff").status(),
                absl::StatusCode::kDataLoss, "not a valid ONNX TensorProto");
  const fs::path relu = kNodeTests / "test_relu" / "model.onnx";
  if (!fs::exists(relu)) {
    WARN("libonnx-testdata is not installed; skipping the checks that need its models");
    return;
  }
  const std::string model = bytes_of(relu);
  REQUIRE(model.size() > 20);
  // Every proper prefix is truncated: each must fail cleanly (or, where protobuf happens to
  // accept a prefix, import into a graph that is still valid).
  for (size_t cut : {model.size() / 4, model.size() / 2, model.size() - 3}) {
    INFO("cut at " << cut << " of " << model.size());
    absl::StatusOr<Graph> g = onnx::import_from_memory(std::string_view(model).substr(0, cut));
    if (g.ok()) CHECK(g->status().ok());
    else CHECK(!g.status().message().empty());
  }
  std::string flipped = model;
  for (size_t i = 0; i < flipped.size(); i += 7) flipped[i] = static_cast<char>(~flipped[i]);
  absl::StatusOr<Graph> g = onnx::import_from_memory(flipped);
  if (!g.ok()) CHECK(!g.status().message().empty());
}

TEST_CASE("onnx: an unsupported operator names the node and the op", "[onnx][error]") {
  const fs::path acos = kNodeTests / "test_acos" / "model.onnx";
  if (!fs::exists(acos)) {
    WARN("libonnx-testdata is not installed; skipping");
    return;
  }
  require_error(onnx::import(acos.string()).status(), absl::StatusCode::kUnimplemented,
                "node 0 '' (Acos): operator Acos is not supported");
}

TEST_CASE("onnx: a test-data model runs, matches, and rejects a wrong input shape", "[onnx]") {
  const fs::path dir = kNodeTests / "test_conv_with_strides_and_asymmetric_padding";
  if (!fs::exists(dir)) {
    WARN("libonnx-testdata is not installed; skipping");
    return;
  }
  absl::StatusOr<Graph> g = onnx::import((dir / "model.onnx").string());
  INFO(g.status().ToString());
  REQUIRE(g.ok());
  auto compiled = Compiler().compile(*g);
  REQUIRE(compiled.ok());
  auto x = onnx::read_tensor((dir / "test_data_set_0" / "input_0.pb").string());
  auto w = onnx::read_tensor((dir / "test_data_set_0" / "input_1.pb").string());
  auto want = onnx::read_tensor((dir / "test_data_set_0" / "output_0.pb").string());
  REQUIRE((x.ok() && w.ok() && want.ok()));
  auto got = compiled->run({*x, *w});
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  loom::testing::require_close((*got)[0], *want, 1e-5, 1e-5);

  NDArray wrong(DType::f32(), {1, 1, 5});
  require_error(compiled->run({wrong, *w}).status(), absl::StatusCode::kInvalidArgument,
                "input 0 (x) has rank 3");
  // A model is no tensor: protobuf may parse it, but as a tensor of no known element type.
  absl::Status not_a_tensor = onnx::read_tensor((dir / "model.onnx").string()).status();
  INFO(not_a_tensor.ToString());
  CHECK(!not_a_tensor.ok());
}
