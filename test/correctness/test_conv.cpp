// conv2d: the op and its CPU templates (1x1 GEMM, depthwise, Winograd, direct) on odd and prime shapes,
// strides, dilations, asymmetric padding and groups, against plain C++ in double and the te
// reference evaluator; every template's pruned space and a sample of its whole space.

#include <algorithm>
#include <optional>
#include <random>
#include <tuple>

#include "graph_reference.hpp"
#include "loom/graph/layouts.hpp"
#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

Shape static_shape(const std::vector<int64_t>& s) {
  return Shape(s.begin(), s.end());
}

int64_t out_extent(int64_t in, int lo, int hi, int64_t k, int dilation, int stride) {
  return (in + lo + hi - dilation * (k - 1) - 1) / stride + 1;
}

// The conv2d spec in plain C++, accumulated in double.
NDArray naive_conv(const NDArray& x, const NDArray& w, const Conv2dOptions& o) {
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const int64_t O = w.shape()[0], Cg = w.shape()[1], KH = w.shape()[2], KW = w.shape()[3];
  const int64_t OH = out_extent(H, o.padding.top, o.padding.bottom, KH, o.dilation.h, o.stride.h);
  const int64_t OW = out_extent(W, o.padding.left, o.padding.right, KW, o.dilation.w, o.stride.w);
  const int64_t Og = O / o.groups;
  NDArray y(DType::f32(), {N, O, OH, OW});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < O; ++oc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = 0;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t ih = oh * o.stride.h + kh * o.dilation.h - o.padding.top;
                int64_t iw = ow * o.stride.w + kw * o.dilation.w - o.padding.left;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                int64_t ic = oc / Og * Cg + c;
                s += x.get(((n * C + ic) * H + ih) * W + iw) *
                     w.get(((oc * Cg + c) * KH + kh) * KW + kw);
              }
          y.set(((n * O + oc) * OH + oh) * OW + ow, s);
        }
  return y;
}

struct ConvCase {
  std::vector<int64_t> x, w;
  Conv2dOptions options;
};

std::string describe(const ConvCase& c) {
  const Conv2dOptions& o = c.options;
  return str_cat("x ", shape_to_string(c.x), " w ", shape_to_string(c.w), " stride (", o.stride.h,
                 ", ", o.stride.w, ") pad (", o.padding.top, ", ", o.padding.left, ", ",
                 o.padding.bottom, ", ", o.padding.right, ") dilation (", o.dilation.h, ", ",
                 o.dilation.w, ") groups ", o.groups);
}

struct Checked {
  std::string schedule;  // of the conv kernel
};

// Compiles the case (weight constant or an input; a forced config for one template if given),
// runs it on random data and compares against plain C++ and, when asked, the te reference.
Checked check_conv(const ConvCase& c, bool w_constant, bool te_reference,
                   const std::string& template_name = "",
                   const std::optional<tune::Config>& config = std::nullopt) {
  NDArray x = random_array(DType::f32(), c.x), w = random_array(DType::f32(), c.w);
  Graph g;
  Tensor xt = g.input("x", static_shape(c.x));
  Tensor wt = w_constant ? g.constant("w", w) : g.input("w", static_shape(c.w));
  g.output(xt.conv2d(wt, c.options));
  CompileOptions options;
  options.poison_buffers = true;
  if (config) options.template_configs[template_name] = *config;
  INFO(describe(c) << (w_constant ? " (constant weight)" : " (weight input)")
                   << (config ? ", config " + config->to_string() : std::string()));
  auto compiled = Compiler().compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  Checked out;
  for (const KernelInfo& k : compiled->kernels()) out.schedule += k.schedule;
  INFO("schedule " << out.schedule);
  if (!template_name.empty()) REQUIRE(out.schedule.find(template_name) != std::string::npos);
  std::vector<NDArray> inputs = w_constant ? std::vector<NDArray>{x} : std::vector<NDArray>{x, w};
  auto got = compiled->run(inputs);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  require_close((*got)[0], naive_conv(x, w, c.options), 1e-4, 1e-4);
  if (te_reference) {
    std::vector<NDArray> want = reference_run(g, inputs);
    require_close((*got)[0], want[0], 1e-4, 1e-4);
  }
  return out;
}

const ScheduleTemplate& conv_template(const std::string& name) {
  const OpDef* def = OpRegistry::global().find("conv2d");
  REQUIRE(def);
  auto it = std::find_if(def->templates.begin(), def->templates.end(),
                         [&](const ScheduleTemplate& t) { return t.name == name; });
  REQUIRE(it != def->templates.end());
  return *it;
}

tune::Space space_of(const std::string& name) {
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  return conv_template(name).space(ctx);
}

// The pruned space plus a fixed-seed sample of the whole space, each checked on every case.
void sweep(const std::string& name, const std::vector<ConvCase>& cases, int samples) {
  tune::Space space = space_of(name);
  std::vector<tune::Config> configs = space.pruned(), all = space.all();
  REQUIRE(!all.empty());
  std::mt19937_64 pick(20240607);
  for (int i = 0; i < samples; ++i) configs.push_back(all[pick() % all.size()]);
  for (const tune::Config& config : configs) {
    REQUIRE(space.broken_rules(config).empty());
    for (const ConvCase& c : cases) check_conv(c, /*w_constant=*/true, false, name, config);
  }
  // The non-constant weight path packs inside the kernel; a few configs suffice.
  for (size_t i = 0; i < configs.size(); i += 4)
    check_conv(cases[0], /*w_constant=*/false, false, name, configs[i]);
}

}  // namespace

TEST_CASE("conv2d: odd and prime shapes against naive C++ and the te reference",
          "[conv][correctness]") {
  std::vector<ConvCase> cases = {
      {{1, 3, 7, 7}, {7, 3, 3, 3}, {.padding = 1}},
      {{1, 5, 13, 17}, {19, 5, 3, 3}, {}},
      {{2, 13, 17, 13}, {7, 13, 3, 3}, {.stride = 2, .padding = 1}},
      {{1, 5, 13, 13}, {7, 5, 3, 3}, {.padding = 2, .dilation = 2}},
      {{1, 3, 17, 13}, {19, 3, 3, 5}, {.stride = {2, 1}, .padding = {0, 1, 2, 3}}},
      {{1, 1, 1, 1}, {1, 1, 1, 1}, {}},
      {{1, 3, 1, 1}, {7, 3, 3, 3}, {.padding = 1}},
      {{2, 6, 7, 9}, {4, 3, 3, 3}, {.padding = {1, 0, 1, 2}, .groups = 2}},
      {{1, 10, 13, 11}, {15, 2, 3, 1}, {.stride = {1, 2}, .padding = {1, 0}, .groups = 5}},
      {{1, 3, 23, 19}, {7, 3, 7, 7}, {.stride = 2, .padding = 3}},
      {{1, 13, 7, 7}, {19, 13, 1, 1}, {}},
      {{2, 5, 13, 17}, {7, 5, 1, 1}, {.stride = 2}},
      {{1, 5, 7, 7}, {3, 5, 1, 1}, {.padding = 1}},  // 1x1 that pads: the direct template
      {{2, 5, 13, 17}, {5, 1, 3, 3}, {.padding = 1, .groups = 5}},
      {{1, 7, 13, 13}, {7, 1, 3, 3}, {.stride = 2, .padding = {1, 0, 0, 1}, .groups = 7}},
      {{1, 3, 17, 19}, {3, 1, 5, 3}, {.padding = 2, .dilation = {2, 1}, .groups = 3}},
  };
  for (const ConvCase& c : cases) {
    check_conv(c, /*w_constant=*/true, /*te_reference=*/true);
    check_conv(c, /*w_constant=*/false, /*te_reference=*/true);
  }
}

TEST_CASE("conv2d: each shape picks the template meant for it", "[conv][correctness]") {
  auto schedule = [](const ConvCase& c) { return check_conv(c, true, false).schedule; };
  CHECK(schedule({{1, 16, 9, 9}, {32, 16, 1, 1}, {}}).find("conv2d_1x1_gemm") == 0);
  CHECK(schedule({{1, 16, 9, 9}, {32, 16, 1, 1}, {.stride = 2}}).find("conv2d_1x1_gemm") == 0);
  CHECK(schedule({{1, 16, 9, 9}, {16, 1, 3, 3}, {.padding = 1, .groups = 16}})
            .find("conv2d_depthwise") == 0);
  CHECK(schedule({{1, 16, 9, 9}, {32, 16, 3, 3}, {.padding = 1}}).find("conv2d_direct") == 0);
  CHECK(schedule({{1, 16, 9, 9}, {32, 8, 1, 1}, {.groups = 2}}).find("conv2d_direct") == 0);
}

TEST_CASE("conv2d: a symbolic batch uses the default schedule", "[conv][correctness]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), 3, 7, 6});
  NDArray w = random_array(DType::f32(), {5, 3, 3, 3});
  g.output(x.conv2d(g.constant("w", w), {.stride = {1, 2}, .padding = {1, 2, 0, 1}}));
  CompileOptions options;
  options.poison_buffers = true;
  options.specialize_shapes = false;  // generic kernels, the batch a runtime argument
  auto compiled = Compiler().compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  for (int64_t batch : {1, 3}) {
    NDArray xv = random_array(DType::f32(), {batch, 3, 7, 6});
    auto got = compiled->run({xv});
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    require_close((*got)[0], naive_conv(xv, w, {.stride = {1, 2}, .padding = {1, 2, 0, 1}}), 1e-4,
                  1e-4);
    require_close((*got)[0], reference_run(g, {xv})[0], 1e-4, 1e-4);
  }
}

TEST_CASE("conv2d: half-precision tensors use the default schedule", "[conv][correctness]") {
  for (DType t : {DType::f16(), DType::bf16()}) {
    INFO(t.to_string());
    Graph g;
    g.output(
        g.input("x", {1, 3, 6, 7}, t)
            .conv2d(g.input("w", {4, 3, 3, 2}, t), {.padding = {1, 0, 0, 1}, .dilation = {1, 2}}));
    CompileOptions options;
    options.poison_buffers = true;
    auto compiled = Compiler().compile(g, options);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    REQUIRE(compiled->kernels()[0].schedule == "default");
    std::vector<NDArray> inputs = {random_array(t, {1, 3, 6, 7}), random_array(t, {4, 3, 3, 2})};
    auto got = compiled->run(inputs);
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    require_close((*got)[0], reference_run(g, inputs)[0], 1e-2, 1e-2);
  }
}

TEST_CASE("conv2d direct template: pruned space and a sample of the whole space",
          "[conv][template]") {
  // 19 output channels leave a partial oc block for every block width; 13 x 11 = 143 output
  // pixels (prime factors 11, 13) a partial tile for every ow_block > 1 and a partial pixel block;
  // 13 input channels x 9 taps = 117 a partial kc block for kc = 64.
  sweep("conv2d_direct",
        {{{2, 13, 13, 11}, {19, 13, 3, 3}, {.padding = {1, 1, 1, 1}}},
         {{1, 10, 11, 9}, {14, 5, 3, 3}, {.stride = 2, .padding = {2, 1, 0, 1}, .groups = 2}}},
        8);
}

// The Winograd template takes NCHW{v}c in and out (v the vector width): each case's conv is laid
// out so (conversions in and out), compiled with one config, run and compared with plain C++.
void check_winograd(const ConvCase& c, const tune::Config& config, bool w_constant = true) {
  const std::vector<LayoutStep> blocked = channels_blocked(Target::host_cpu().vector_lanes_f32());
  NDArray x = random_array(DType::f32(), c.x), w = random_array(DType::f32(), c.w);
  Graph g;
  Tensor wt = w_constant ? g.constant("w", w) : g.input("w", static_shape(c.w));
  Tensor y = g.input("x", static_shape(c.x)).conv2d(wt, c.options);
  g.output(y);
  absl::StatusOr<Graph> laid = layouts::apply(g, {{y.id(), {{blocked, {}}, blocked}}});
  REQUIRE(laid.ok());
  CompileOptions options;
  options.poison_buffers = true;
  options.template_configs["conv2d_winograd"] = config;
  INFO(describe(c) << ", config " << config.to_string()
                   << (w_constant ? " (constant weight)" : " (weight input)"));
  absl::StatusOr<CompiledGraph> compiled = Compiler().compile(*laid, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  std::string schedules;
  for (const KernelInfo& k : compiled->kernels()) schedules += k.schedule + " ";
  INFO("schedules " << schedules);
  REQUIRE(schedules.find("conv2d_winograd") != std::string::npos);
  const std::vector<NDArray> inputs = w_constant ? std::vector<NDArray>{x} : std::vector<NDArray>{w, x};
  require_close(loom::testing::run_ok(*compiled, inputs)[0], naive_conv(x, w, c.options), 1e-4,
                1e-4);
}

TEST_CASE("conv2d Winograd template: pruned space and register tiles of every shape, blocked",
          "[conv][template]") {
  const int v = static_cast<int>(Target::host_cpu().vector_lanes_f32());
  // 13 x 13 with padding 1: 7 x 7 tiles, the last row and column half outside the output; two
  // images of 7 x 11 unpadded: 5 x 9 outputs, odd both ways; asymmetric padding; 4 x 3 tiles.
  const std::vector<ConvCase> cases = {
      {{1, v, 13, 13}, {4 * v, v, 3, 3}, {.padding = 1}},
      {{2, 2 * v, 7, 11}, {4 * v, 2 * v, 3, 3}, {}},
      {{1, v, 5, 4}, {4 * v, v, 3, 3}, {.padding = {2, 1, 1, 0}}},
  };
  // The space of the first case (the output channels rule the valid configs; all three cases
  // have 4v of them).
  const std::vector<LayoutStep> blocked = channels_blocked(v);
  ops::Conv2dAttrs attrs;
  attrs.pad_top = attrs.pad_left = attrs.pad_bottom = attrs.pad_right = 1;
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  ctx.name = "conv";
  ctx.inputs = {TensorType{static_shape(cases[0].x), DType::f32(), blocked},
                TensorType{static_shape(cases[0].w), DType::f32(), {}}};
  ctx.output = TensorType{static_shape({1, 4 * v, 13, 13}), DType::f32(), blocked};
  ctx.attrs = &attrs;
  ctx.constant_inputs = {false, true};
  const ScheduleTemplate& t = conv_template("conv2d_winograd");
  REQUIRE(t.applies(ctx));
  tune::Space space = t.space(ctx);
  std::vector<tune::Config> configs = space.pruned();
  REQUIRE(!configs.empty());
  // Register tiles of 1 to 14 rows (partial tile blocks), 1 to 4 vectors, several task shapes.
  for (int64_t mr : {1, 3, 5, 14})
    for (int64_t nv : {1, 2, 4})
      for (int64_t rows_and_panels : {1, 2}) {
        tune::Config c;
        c.set("mr", mr);
        c.set("nv", nv);
        c.set("tile_rows", rows_and_panels);
        c.set("o_panels", 4 / nv >= rows_and_panels ? rows_and_panels : 1);
        if (space.broken_rules(c).empty()) configs.push_back(c);
      }
  for (const tune::Config& c : configs)
    for (const ConvCase& cc : cases) check_winograd(cc, c);
  // Weights that are an input: transformed inside the kernel, before the multiply.
  check_winograd(cases[1], configs.back(), /*w_constant=*/false);
}

TEST_CASE("conv2d Winograd template: epilogues fused in, against the te reference",
          "[conv][template]") {
  // conv + bias + relu, then a second conv + the first's output (a residual sum) + relu, both
  // blocked; 9 x 9 images, two of them.
  const int v = static_cast<int>(Target::host_cpu().vector_lanes_f32());
  Graph g;
  Tensor x = g.input("x", {2, v, 9, 9});
  Tensor b = g.constant("b", random_array(DType::f32(), {1, 2 * v, 1, 1}));
  Tensor c1 = x.conv2d(g.constant("w1", random_array(DType::f32(), {2 * v, v, 3, 3})),
                       {.padding = 1});
  Tensor h = (c1 + b).relu();
  Tensor c2 = h.conv2d(g.constant("w2", random_array(DType::f32(), {2 * v, 2 * v, 3, 3})),
                       {.padding = 1});
  g.output((c2 + h).relu());
  const std::vector<LayoutStep> blocked = channels_blocked(v);
  absl::StatusOr<Graph> laid = layouts::apply(
      g, {{c1.id(), {{blocked, {}}, blocked}}, {c2.id(), {{blocked, {}}, blocked}}});
  REQUIRE(laid.ok());
  absl::StatusOr<CompiledGraph> compiled = Compiler().compile(*laid);
  REQUIRE(compiled.ok());
  int winograd = 0;
  for (const KernelInfo& k : compiled->kernels())
    winograd += k.schedule.rfind("conv2d_winograd", 0) == 0 && k.ops.size() >= 3;
  CHECK(winograd == 2);  // each conv with its sum and relu
  std::vector<NDArray> inputs = {random_array(DType::f32(), {2, v, 9, 9})};
  require_close(loom::testing::run_ok(*compiled, inputs)[0], reference_run(g, inputs)[0], 1e-4,
                1e-4);
}

TEST_CASE("conv2d 1x1 GEMM template: pruned space and a sample of the whole space",
          "[conv][template]") {
  // 19 output channels: a row tail for every mr > 1; 7 x 9 = 63 pixels: a partial pixel vector
  // for every panel width; 131 input channels: a partial K block for every kc.
  sweep("conv2d_1x1_gemm",
        {{{2, 131, 7, 9}, {19, 131, 1, 1}, {}}, {{1, 13, 13, 17}, {7, 13, 1, 1}, {.stride = 2}}},
        8);
}

TEST_CASE("conv2d 1x1 GEMM template: every way of reading the pixel panels", "[conv][template]") {
  // Packed per task (1), read in place (0) or packed by the first row block (2), each with and
  // without prefetching the next panel's rows. In tiles of 3 rows, 19 and 7 output channels
  // leave a last tile of only the row tail (which then packs, for pack 2); in tiles of 4 rows, a
  // full block and a tail. kc = 64 < 131 channels gives several K blocks (prefetch crosses into
  // the next one); two images (it crosses into the next image at the end of the first and points
  // past the end of the input at the end of the second). Register tiles of 3x3 and 2x2 vectors fit every target.
  tune::Space space = space_of("conv2d_1x1_gemm");
  const std::vector<ConvCase> cases = {{{2, 131, 7, 9}, {19, 131, 1, 1}, {}},
                                       {{2, 13, 13, 17}, {7, 13, 1, 1}, {.stride = 2}}};
  for (int64_t pack : {0, 1, 2})
    for (int64_t prefetch : {0, 1})
      for (auto [mr, nv, mc_tiles] : {std::tuple{3, 3, 1}, std::tuple{2, 2, 2}}) {
        const tune::Config config({{"pack", pack},
                                   {"prefetch", prefetch},
                                   {"mr", mr},
                                   {"nv", nv},
                                   {"mc_tiles", mc_tiles},
                                   {"kc", 64},
                                   {"nc_panels", 1}});
        REQUIRE(space.broken_rules(config).empty());
        for (const ConvCase& c : cases)
          check_conv(c, /*w_constant=*/true, false, "conv2d_1x1_gemm", config);
      }
}

TEST_CASE("conv2d depthwise template: pruned space and a sample of the whole space",
          "[conv][template]") {
  // 13 x 19 output: partial row blocks and a partial last vector; stride 2 goes through the
  // de-interleaved rows.
  sweep("conv2d_depthwise",
        {{{2, 5, 13, 19}, {5, 1, 3, 3}, {.padding = 1, .groups = 5}},
         {{1, 3, 15, 37}, {3, 1, 3, 5}, {.stride = 2, .padding = {1, 2, 0, 1}, .groups = 3}}},
        8);
}

TEST_CASE("conv2d templates: the space does not depend on the input size", "[conv][template]") {
  for (const char* name : {"conv2d_direct", "conv2d_1x1_gemm", "conv2d_depthwise", "conv2d_winograd"}) {
    INFO(name);
    tune::Space space = space_of(name);
    REQUIRE(space.broken_rules(space.default_config()).empty());
    REQUIRE(space.pruned().size() < space.all().size());
    REQUIRE(space.pruned().size() <= 30);
  }
}
