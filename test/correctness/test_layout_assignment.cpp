// Layout assignment (ALT): anchors reading and writing channel-blocked and channels-last layouts,
// layouts flowing through elementwise operators, conversions only where choices meet, and the
// same outputs for every choice (against the reference interpreter on fresh random data).

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/graph/layouts.hpp"
#include "loom/loom.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

namespace loom {
namespace {

using testing::compile_and_run;
using testing::random_array;
using testing::reference_run;
using testing::require_close;

// conv -> bias -> relu -> conv -> + residual -> relu -> max pool, odd extents: a residual block's
// shape, its pooling taking the layout it reads.
struct Block {
  Graph g;
  std::vector<NDArray> inputs;
  int conv1 = -1, conv2 = -1;
};

Block residual_block(int64_t c, int64_t o, int64_t h, int64_t w, int stride) {
  Block b;
  Tensor x = b.g.input("x", {1, c, h, w});
  Tensor w1 = b.g.constant("w1", random_array(DType::f32(), {o, c, 3, 3}, -0.3, 0.3));
  Tensor w2 = b.g.constant("w2", random_array(DType::f32(), {o, o, 3, 3}, -0.1, 0.1));
  Tensor ws = b.g.constant("ws", random_array(DType::f32(), {o, c, 1, 1}, -0.3, 0.3));
  Tensor bias = b.g.constant("bias", random_array(DType::f32(), {o, 1, 1}));
  Tensor y1 = x.conv2d(w1, {.stride = stride, .padding = 1});
  b.conv1 = y1.id();
  Tensor r = (y1 + bias).relu();
  Tensor y2 = r.conv2d(w2, {.padding = 1});
  b.conv2 = y2.id();
  Tensor shortcut = x.conv2d(ws, {.stride = stride});
  b.g.output((y2 + shortcut).relu().max_pool2d({.kernel = 3, .stride = 2, .padding = 1}));
  b.inputs = {random_array(DType::f32(), {1, c, h, w})};
  return b;
}

TEST_CASE("layout assignment: every layout choice of every conv gives the reference output",
          "[layout][assign]") {
  const Target host = Target::host_cpu();
  const int64_t lanes = host.vector_lanes_f32();
  // Output channels: whole vectors plus a tail, so blocks pad; prime spatial extents.
  for (auto [c, o, h, stride] : {std::tuple<int64_t, int64_t, int64_t, int>{7, 2 * lanes + 3, 13, 1},
                                 {lanes, lanes, 11, 2}}) {
    Block b = residual_block(c, o, h, h + 2, stride);
    std::vector<NDArray> expected = reference_run(b.g, b.inputs);
    std::vector<layouts::AnchorLayouts> choices = layouts::options(b.g, b.conv1, host);
    REQUIRE(choices.size() == 4);  // row-major and NCHW{lanes}c, for input and output
    REQUIRE(choices[0] == layouts::AnchorLayouts{{{}, {}}, {}});
    for (const layouts::AnchorLayouts& first : choices)
      for (const layouts::AnchorLayouts& second : layouts::options(b.g, b.conv2, host)) {
        INFO("conv1 " << first.to_string() << ", conv2 " << second.to_string());
        absl::StatusOr<Graph> laid = layouts::apply(b.g, {{b.conv1, first}, {b.conv2, second}});
        REQUIRE(laid.ok());
        require_close(compile_and_run(*laid, b.inputs)[0], expected[0], 1e-4, 1e-4);
      }
  }
}

TEST_CASE("layout assignment: direct conv configs in blocked layouts, in place and through a tile",
          "[layout][assign][conv]") {
  const int64_t lanes = Target::host_cpu().vector_lanes_f32();
  // Whole channel blocks (partial sums in the output) or not (a scratch tile); one input-channel
  // chunk or several; pixel tiles with tails; padded copies of NCHW{lanes}c inputs.
  for (int64_t o : {2 * lanes, 3 * lanes}) {
    Block b = residual_block(19, o, 7, 11, 1);
    std::vector<NDArray> expected = reference_run(b.g, b.inputs);
    const layouts::AnchorLayouts blocked{{channels_blocked(lanes), {}}, channels_blocked(lanes)};
    absl::StatusOr<Graph> laid = layouts::apply(b.g, {{b.conv1, blocked}, {b.conv2, blocked}});
    REQUIRE(laid.ok());
    for (auto [owb, ocv, kc, tiles] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{4, 2, 64, 2},
                                       {3, 1, 2048, 1},
                                       {4, 3, 128, 4}}) {
      tune::Config c;
      c.set("ow_block", owb);
      c.set("oc_vectors", ocv);
      c.set("kc", kc);
      c.set("tiles", tiles);
      // Unfused, the first conv also reads its blocked input (19 channels: the last block
      // padded) from a conversion kernel rather than through a fused prologue.
      for (bool fuse : {true, false}) {
        INFO("O " << o << ", config " << c.to_string() << ", fused " << fuse);
        CompileOptions options;
        options.template_configs["conv2d_direct"] = c;
        options.fuse = fuse;
        require_close(compile_and_run(*laid, b.inputs, options)[0], expected[0], 1e-4, 1e-4);
      }
    }
  }
}

TEST_CASE("layout assignment: grouped direct convs in blocked layouts", "[layout][assign][conv]") {
  const int64_t lanes = Target::host_cpu().vector_lanes_f32();
  // Groups that start on a channel block (input channels per group a multiple of the block) and
  // groups that do not; prime spatial extents, padding and a stride.
  for (auto [c_per_group, stride] : {std::pair<int64_t, int>{lanes, 1}, {lanes + 3, 2}}) {
    const int64_t groups = 2, c = groups * c_per_group, o = groups * lanes;
    Graph g;
    Tensor x = g.input("x", {1, c, 11, 13});
    Tensor w = g.constant("w", random_array(DType::f32(), {o, c_per_group, 3, 3}, -0.3, 0.3));
    Tensor y = x.conv2d(w, {.stride = stride, .padding = 1, .groups = static_cast<int>(groups)});
    g.output(y.relu());
    const std::vector<NDArray> inputs = {random_array(DType::f32(), {1, c, 11, 13})};
    const std::vector<NDArray> expected = reference_run(g, inputs);
    const layouts::AnchorLayouts blocked{{channels_blocked(lanes), {}}, channels_blocked(lanes)};
    absl::StatusOr<Graph> laid = layouts::apply(g, {{y.id(), blocked}});
    REQUIRE(laid.ok());
    for (int64_t kc : {64, 2048}) {
      tune::Config cfg;
      cfg.set("ow_block", 4);
      cfg.set("oc_vectors", 1);
      cfg.set("kc", kc);
      cfg.set("tiles", 2);
      INFO("channels per group " << c_per_group << ", kc " << kc);
      CompileOptions options;
      options.template_configs["conv2d_direct"] = cfg;
      options.fuse = false;
      absl::StatusOr<CompiledGraph> compiled = Compiler().compile(*laid, options);
      REQUIRE(compiled.ok());
      bool direct = false;
      for (const KernelInfo& k : compiled->kernels())
        direct = direct || k.schedule.rfind("conv2d_direct", 0) == 0;
      REQUIRE(direct);
      absl::StatusOr<std::vector<NDArray>> out = compiled->run(inputs);
      REQUIRE(out.ok());
      require_close((*out)[0], expected[0], 1e-4, 1e-4);
    }
  }
}

TEST_CASE("layout assignment: fixed layouts for the whole graph, and joint tuning", "[layout][assign]") {
  Block b = residual_block(5, 24, 9, 10, 1);
  std::vector<NDArray> expected = reference_run(b.g, b.inputs);
  for (const std::vector<LayoutStep>& fixed :
       {channels_blocked(8), channels_blocked(16), channels_last(), channels_blocked(3)}) {
    INFO("fixed " << steps_to_string(fixed));
    CompileOptions o;
    o.layouts = LayoutPolicy::kFixed;
    o.fixed_layout = fixed;
    require_close(compile_and_run(b.g, b.inputs, o)[0], expected[0], 1e-4, 1e-4);
    // Constants are never converted at run time: the convs take their weights row-major (and
    // pack them at compile time), and the bias is read in its own layout by the addition.
    absl::StatusOr<CompiledGraph> c = Compiler().compile(b.g, o);
    REQUIRE(c.ok());
    int conversions = 0;
    for (const Node& n : c->graph().nodes()) {
      if (n.op != "layout_transform") continue;
      ++conversions;
      CHECK(c->graph().nodes()[n.inputs[0]].kind != Node::Kind::kConstant);
    }
    CHECK(conversions == 2);  // x in, the pooled output out
  }
  CompileOptions joint;
  joint.layouts = LayoutPolicy::kJoint;
  joint.use_cache = false;
  require_close(compile_and_run(b.g, b.inputs, joint)[0], expected[0], 1e-4, 1e-4);
}

TEST_CASE("layout assignment: a constant an anchor reads in another layout is converted at compile "
          "time",
          "[layout][assign]") {
  // A conv of a constant image (odd sizes), graph passes off so that it is not folded whole:
  // with NHWC or NCHW16c fixed the image is stored in it once, as a constant (NHWC by strides,
  // NCHW16c, which splits the channels, element by element; its padding lanes zero).
  Graph g;
  Tensor w = g.constant("w", random_array(DType::f32(), {24, 5, 3, 3}));
  Tensor image = g.constant("image", random_array(DType::f32(), {1, 5, 7, 9}));
  g.output(image.conv2d(w, {.padding = 1}).relu().add(g.input("x", {1, 24, 7, 9})));
  const std::vector<NDArray> inputs = {random_array(DType::f32(), {1, 24, 7, 9})};
  const std::vector<NDArray> expected = reference_run(g, inputs);
  for (const std::vector<LayoutStep>& fixed : {channels_last(), channels_blocked(16)}) {
    INFO("fixed " << steps_to_string(fixed));
    CompileOptions o;
    o.layouts = LayoutPolicy::kFixed;
    o.fixed_layout = fixed;
    o.graph_passes = false;
    absl::StatusOr<CompiledGraph> c = Compiler().compile(g, o);
    REQUIRE(c.ok());
    int conversions = 0, laid_constants = 0;
    for (const Node& n : c->graph().nodes()) {
      conversions += n.op == "layout_transform" &&
                     c->graph().nodes()[n.inputs[0]].kind == Node::Kind::kConstant;
      if (n.kind == Node::Kind::kConstant && !n.type.layout.empty()) {
        ++laid_constants;
        CHECK(n.type.layout == fixed);
        CHECK(n.name == "image_laid");
        // Its physical elements: NHWC's [1, 7, 9, 5], NCHW16c's [1, 1, 7, 9, 16]. In both,
        // element 1 is channel 1 of pixel (0, 0).
        const bool nhwc = fixed == channels_last();
        CHECK(n.value.numel() == (nhwc ? 5 : 16) * 7 * 9);
        const NDArray& logical = image.graph()->nodes[image.id()].value;
        CHECK(n.value.get(1) == logical.get(7 * 9));
        CHECK(n.value.get(nhwc ? 5 : 16) == logical.get(1));  // pixel (0, 1), channel 0
        if (!nhwc) CHECK(n.value.get(5) == 0.0);               // a padding lane
      }
    }
    CHECK(laid_constants == 1);
    CHECK(conversions == 0);
    std::vector<NDArray> got = loom::testing::run_ok(*c, inputs);
    require_close(got[0], expected[0], 1e-4, 1e-4);
  }
}

TEST_CASE("layout assignment: layouts flow through elementwise ops, conversions only where choices meet",
          "[layout][assign]") {
  Block b = residual_block(16, 32, 8, 8, 1);
  const layouts::AnchorLayouts plain{{{}, {}}, {}};
  const layouts::AnchorLayouts blocked{{channels_blocked(16), {}}, channels_blocked(16)};
  // Nothing chosen: nothing converted.
  absl::StatusOr<Graph> none = layouts::apply(b.g, {});
  REQUIRE(none.ok());
  CHECK(layouts::count_conversions(*none) == 0);
  // Both convs blocked: x is converted once (conv1 and the shortcut's row-major read share
  // nothing, the shortcut keeps row-major); bias and relu take conv1's layout, so conv2 reads
  // it as it is; the residual sum and the pool are blocked, and the pooled output goes back to
  // row-major once, as a graph output.
  absl::StatusOr<Graph> both = layouts::apply(b.g, {{b.conv1, blocked}, {b.conv2, blocked}});
  REQUIRE(both.ok());
  CHECK(layouts::count_conversions(*both) == 2);
  int blocked_nodes = 0;
  for (const Node& n : both->nodes()) {
    if (n.type.layout == channels_blocked(16)) ++blocked_nodes;
    if (n.op == "layout_transform") CHECK(n.type.shape != b.g.nodes()[b.conv2].type.shape);
  }
  // x's conversion, conv1, + bias, relu, conv2, + shortcut, relu, max pool.
  CHECK(blocked_nodes == 8);
  // Only conv2 blocked: relu's output is converted for it.
  absl::StatusOr<Graph> second = layouts::apply(b.g, {{b.conv1, plain}, {b.conv2, blocked}});
  REQUIRE(second.ok());
  CHECK(layouts::count_conversions(*second) == 2);
  // Graph outputs stay row-major.
  for (int o : both->outputs()) CHECK(both->nodes()[o].type.layout.empty());
  // The blocked convs (3x3, stride 1: Winograd) have their epilogues fused; the graph passes
  // keep the layouts, so both conversions are still there.
  absl::StatusOr<CompiledGraph> c = Compiler().compile(*both);
  REQUIRE(c.ok());
  int blocked_convs = 0, converting = 0;
  for (const KernelInfo& k : c->kernels()) {
    const bool blocked_conv = k.schedule.rfind("conv2d_direct", 0) == 0 ||
                              k.schedule.rfind("conv2d_winograd", 0) == 0;
    if (blocked_conv) blocked_convs += k.ops.size() >= 3 ? 1 : 0;
    for (const std::string& op : k.ops) converting += op.rfind("layout_transform", 0) == 0;
  }
  CHECK(blocked_convs == 2);  // conv1 + bias + relu, conv2 + shortcut sum + relu
  CHECK(converting == 2);
}

TEST_CASE("layout assignment: pooling keeps the layout it reads, between two blocked convs",
          "[layout][assign]") {
  const int64_t lanes = Target::host_cpu().vector_lanes_f32();
  // Channels not a multiple of the block (padded blocks), prime extents, padded windows.
  const int64_t c = lanes + 3;
  Graph g;
  Tensor x = g.input("x", {1, c, 17, 13});
  Tensor y1 = x.conv2d(g.constant("w1", random_array(DType::f32(), {c, c, 3, 3}, -0.3, 0.3)),
                       {.padding = 1});
  Tensor m = y1.relu().max_pool2d({.kernel = 3, .stride = 2, .padding = 1});
  Tensor a = m.avg_pool2d({.kernel = 2, .padding = {0, 1}});
  Tensor y2 = a.conv2d(g.constant("w2", random_array(DType::f32(), {c, c, 1, 1}, -0.3, 0.3)));
  g.output(y2);
  const std::vector<NDArray> inputs = {random_array(DType::f32(), {1, c, 17, 13})};
  const std::vector<NDArray> expected = reference_run(g, inputs);
  for (const std::vector<LayoutStep>& layout : {channels_blocked(lanes), channels_last()}) {
    INFO(steps_to_string(layout));
    const layouts::AnchorLayouts both{{layout, {}}, layout};
    absl::StatusOr<Graph> laid = layouts::apply(g, {{y1.id(), both}, {y2.id(), both}});
    REQUIRE(laid.ok());
    // Only x going in and y2 coming out are converted: relu and both pools keep the layout.
    CHECK(layouts::count_conversions(*laid) == 2);
    int pools = 0;
    for (const Node& n : laid->nodes())
      if (n.op == "max_pool2d" || n.op == "avg_pool2d") pools += n.type.layout == layout;
    CHECK(pools == 2);
    require_close(compile_and_run(*laid, inputs)[0], expected[0], 1e-4, 1e-4);
  }
}

TEST_CASE("layout assignment: joint tuning measures the convs at the graph's edges changing layout",
          "[layout][assign]") {
  namespace fs = std::filesystem;
  const int64_t lanes = Target::host_cpu().vector_lanes_f32();
  // A network's stem: three input channels, then a channel count with a partial block.
  const int64_t o = 2 * lanes + 3;
  Graph g;
  Tensor x = g.input("x", {1, 3, 19, 23});
  Tensor y1 = x.conv2d(g.constant("w1", random_array(DType::f32(), {o, 3, 3, 3}, -0.3, 0.3)),
                       {.stride = 2, .padding = 1});
  Tensor w2 = g.constant("w2", random_array(DType::f32(), {o, o, 3, 3}, -0.1, 0.1));
  Tensor y2 = y1.relu().conv2d(w2, {.padding = 1});
  g.output(y2);
  const std::vector<NDArray> inputs = {random_array(DType::f32(), {1, 3, 19, 23})};
  const std::vector<NDArray> expected = reference_run(g, inputs);
  testing::TempDir dump;
  CompileOptions joint;
  joint.layouts = LayoutPolicy::kJoint;
  joint.use_cache = false;
  ::setenv("LOOM_DUMP_IR", dump.path().c_str(), 1);
  const std::vector<NDArray> got = compile_and_run(g, inputs, joint);
  ::unsetenv("LOOM_DUMP_IR");
  require_close(got[0], expected[0], 1e-4, 1e-4);
  std::string report;
  for (const auto& e : fs::directory_iterator(dump.path() / "graph"))
    if (e.path().filename().string().find("layouts") != std::string::npos) {
      std::ifstream in(e.path());
      report += std::string(std::istreambuf_iterator<char>(in), {});
    }
  INFO(report);
  auto measured = [&](const Tensor& conv, const layouts::AnchorLayouts& choice) {
    const std::string line =
        "anchor " + g.nodes()[conv.id()].name + " " + choice.to_string() + ": ";
    return report.find(line) != std::string::npos;
  };
  const layouts::AnchorLayouts rows_to_blocks{{{}, {}}, channels_blocked(lanes)};
  const layouts::AnchorLayouts blocks_to_rows{{channels_blocked(lanes), {}}, {}};
  // The first conv reads x row-major and writes blocks (x's conversion gone), the last reads
  // blocks and writes the output row-major; each is timed in a graph of its own.
  CHECK(measured(y1, rows_to_blocks));
  CHECK(measured(y2, blocks_to_rows));
  // Inside, a changing choice would add a conversion: the first conv writing rows, read in
  // blocks by the second, is not measured.
  CHECK_FALSE(measured(y1, blocks_to_rows));
  CHECK(report.find("decision: ") != std::string::npos);
}

TEST_CASE("layout assignment: a warm joint compile measures and compiles nothing", "[layout][assign][cache]") {
  testing::TempDir dir;
  Block b = residual_block(6, 20, 7, 9, 1);
  std::vector<NDArray> expected = reference_run(b.g, b.inputs);
  CompileOptions o = testing::cold_cache_options(dir.path());
  o.layouts = LayoutPolicy::kJoint;
  require_close(compile_and_run(b.g, b.inputs, o)[0], expected[0], 1e-4, 1e-4);
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  require_close(compile_and_run(b.g, b.inputs, o)[0], expected[0], 1e-4, 1e-4);
  const Stats warm = stats() - before;
  INFO(warm.to_string());
  CHECK(warm.llvm_compiles == 0);
  CHECK(warm.cache_misses == 0);
  CHECK(warm.cache_disk_hits > 0);
}

TEST_CASE("layout assignment: a kernel whose epilogue stores in blocks is not a cached row-major one",
          "[layout][assign][cache]") {
  // The first conv's group (conv, bias, relu) is the same in both graphs but for where its last
  // store goes: row-major, or, once the second conv reads blocks, through the fused conversion
  // into blocks (whole blocks of channels: both outputs take the same bytes). The kernel cache
  // must tell the two apart, or the second graph would run the first's kernel and its second
  // conv would read row-major values as blocks. (The fused conversion's step in the epilogue's
  // text tells them apart today; the "output stored" line of that text is a second guard.)
  testing::TempDir dir;
  const int64_t lanes = Target::host_cpu().vector_lanes_f32();
  Block b = residual_block(5, 2 * lanes, 7, 11, 1);
  const std::vector<NDArray> expected = reference_run(b.g, b.inputs);
  absl::StatusOr<Graph> laid =
      layouts::apply(b.g, {{b.conv2, layouts::AnchorLayouts{{channels_blocked(lanes), {}}, {}}}});
  REQUIRE(laid.ok());
  const CompileOptions o = testing::cold_cache_options(dir.path());
  // The cache key of the kernel that computes the first conv, and the graph's output.
  const std::string conv1 = b.g.nodes()[b.conv1].name;
  auto compile = [&](const Graph& g) {
    absl::StatusOr<CompiledGraph> compiled = Compiler().compile(g, o);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    std::string key;
    for (const KernelInfo& k : compiled->kernels())
      if (std::find(k.ops.begin(), k.ops.end(), conv1) != k.ops.end()) key = k.cache_key;
    REQUIRE(!key.empty());
    require_close(testing::run_ok(*compiled, b.inputs)[0], expected[0], 1e-4, 1e-4);
    return key;
  };
  const std::string row_major_key = compile(b.g);
  runtime::KernelCache::global().clear_memory();
  CHECK(compile(*laid) != row_major_key);
}

TEST_CASE("layout assignment errors: a layout that does not fit its tensor", "[layout][assign]") {
  Block b = residual_block(4, 16, 6, 6, 1);
  // A rank-5 split on a rank-4 tensor.
  layouts::AnchorLayouts bad{{{}, {}}, Layout::row_major({1, 1, 1, 1, 1}).split(4, 2).steps()};
  absl::StatusOr<Graph> laid = layouts::apply(b.g, {{b.conv1, bad}});
  REQUIRE_FALSE(laid.ok());
  CHECK(laid.status().message().find("cannot be stored in layout") != std::string::npos);
}

}  // namespace
}  // namespace loom
