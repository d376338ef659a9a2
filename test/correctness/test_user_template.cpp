// A schedule template written outside loom, for an operator written outside loom: the engine's
// way to extend loom. The template uses task mappings and a hardware-derived space; the compiler
// tunes it like a built-in one, and every config of its space computes the op's definition.

#include <random>

#include "cache_test_util.hpp"
#include "graph_reference.hpp"
#include "loom/ir/op.hpp"
#include "loom/loom.hpp"
#include "loom/schedule/task_mapping.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

constexpr const char* kOp = "test_row_axpy";
constexpr const char* kTemplate = "test_row_axpy_vectorized";

// row_axpy(x [R, L], b [L]) = x * 3 + b, each row.
absl::StatusOr<ScheduledKernel> build_row_axpy(const TemplateContext& ctx, const tune::Config& c) {
  const int64_t R = ctx.inputs[0].shape[0].value(), L = ctx.inputs[0].shape[1].value();
  const int64_t lanes = ctx.target.vector_lanes_f32();
  const int64_t vectors = c["vectors"], tasks = std::min<int64_t>(c["tasks"], R);
  ir::Buffer x = ir::Buffer::make("x", DType::f32(), {ir::Expr(R), ir::Expr(L)});
  ir::Buffer b = ir::Buffer::make("b", DType::f32(), {ir::Expr(L)});
  ir::Buffer y = ir::Buffer::make("y", DType::f32(), {ir::Expr(R), ir::Expr(L)});
  // Rows: spatial(tasks) * repeat(rows per task); the last task's extra rows are guarded.
  const int64_t per_task = (R + tasks - 1) / tasks;
  LOOM_ASSIGN_OR_RETURN(schedule::TaskMapping rows,
                        schedule::spatial(tasks) * schedule::repeat(per_task));
  ir::Var t("t"), j("j"), k("k");
  const int64_t step = vectors * lanes, full = L / step * step;
  ir::Stmt per_task_body = rows.on(t, [&](const std::vector<ir::Expr>& row) {
    // Whole blocks of `vectors` vectors, then the tail element by element.
    std::vector<ir::Stmt> block;
    for (int64_t v = 0; v < vectors; ++v) {
      ir::Expr col = ir::Ramp::make(j * step + v * lanes, ir::Expr(int64_t{1}), static_cast<int>(lanes));
      block.push_back(ir::Store::make(
          y, x.load({row[0], col}) * ir::Broadcast::make(ir::Expr(3.0f), static_cast<int>(lanes)) +
                 b.load({col}),
          {row[0], col}));
    }
    ir::Stmt tail = ir::For::make(k, full, L - full, ir::ForKind::kSerial,
                                  ir::Store::make(y, x.load({row[0], k}) * ir::Expr(3.0f) + b.load({k}),
                                                  {row[0], k}));
    ir::Stmt body = ir::Seq::make({ir::For::make(j, 0, full / step, ir::ForKind::kSerial,
                                                 ir::Seq::make(std::move(block))),
                                   tail});
    return ir::IfThenElse::make(row[0] < R, body);
  });
  ScheduledKernel out;
  out.func = ir::Func{ctx.name, {x, b, y},
                      ir::For::make(t, 0, rows.num_workers(), ir::ForKind::kParallel, per_task_body)};
  return out;
}

void register_row_axpy() {
  if (OpRegistry::global().find(kOp)) return;
  // snippet-begin: register (shown in README.md)
  OpDef def;
  def.name = kOp;
  def.num_inputs = 2;
  def.infer = [](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (in[0].shape.size() != 2 || in[1].shape.size() != 1 || !(in[0].shape[1] == in[1].shape[0]))
      return absl::InvalidArgumentError("row_axpy needs x [R, L] and b [L]");
    return in[0];
  };
  def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs&,
                   const std::vector<ir::Expr>& shape, const std::string& name) {
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      return in[0]({i[0], i[1]}) * ir::Expr(3.0f) + in[1]({i[1]});
    });
  };
  ScheduleTemplate t;
  t.name = kTemplate;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && ctx.inputs[0].dtype == DType::f32() &&
           ctx.inputs[0].shape[0].is_static() && ctx.inputs[0].shape[1].is_static();
  };
  t.space = [](const TemplateContext& ctx) {
    tune::Space s;
    s.param("vectors", {1, 2, 4}).param("tasks", {1, 2, 4, 8, 16});
    s.rule("tasks cover the cores at most 8 times", [cores = ctx.target.cores()](const tune::Config& c) {
      return c["tasks"] <= 8 * cores;
    });
    s.prefer("a task per core or two", [cores = ctx.target.cores()](const tune::Config& c) {
      return c["tasks"] >= cores && c["tasks"] <= 2 * cores;
    });
    tune::Config d;
    d.set("vectors", 2);
    d.set("tasks", 1);
    s.default_config(d);
    return s;
  };
  t.build = build_row_axpy;
  def.templates.push_back(std::move(t));
  REQUIRE(OpRegistry::global().add(std::move(def)).ok());
  // snippet-end: register
}

}  // namespace

TEST_CASE("a user-defined schedule template is tuned and every config computes the op",
          "[template][user]") {
  register_row_axpy();
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  ctx.inputs = {{Shape{5, 37}, DType::f32()}, {Shape{37}, DType::f32()}};
  tune::Space space = OpRegistry::global().find(kOp)->templates[0].space(ctx);
  for (auto [R, L] : {std::pair<int64_t, int64_t>{1, 1}, {5, 37}, {13, 64}, {31, 257}}) {
    Graph g;
    Tensor x = g.input("x", {R, L});
    // abs() before and relu() after: post-scheduling fusion puts both into the template's kernel.
    g.output(g.apply(kOp, {x.abs(), g.constant("b", random_array(DType::f32(), {L}))}).relu());
    NDArray in = random_array(DType::f32(), {R, L});
    std::vector<NDArray> want = reference_run(g, {in});
    for (const tune::Config& c : space.all()) {
      CompileOptions options;
      options.poison_buffers = true;
      options.template_configs[kTemplate] = c;
      auto compiled = Compiler().compile(g, options);
      INFO(R << "x" << L << " " << c.to_string() << ": " << compiled.status().ToString());
      REQUIRE(compiled.ok());
      REQUIRE(compiled->kernels().size() == 1);
      REQUIRE(compiled->kernels()[0].ops.size() == 3);
      REQUIRE(compiled->kernels()[0].schedule == std::string(kTemplate) + "[" + c.to_string() + "]");
      auto got = compiled->run({in});
      REQUIRE(got.ok());
      require_close((*got)[0], want[0]);
    }
    // Tuned like a built-in: kFast measures the pruned space and picks one of its configs.
    CompileOptions fast;
    fast.tune = TuneLevel::kFast;
    fast.use_cache = false;
    fast.report_progress = false;
    auto tuned = Compiler().compile(g, fast);
    REQUIRE(tuned.ok());
    REQUIRE(tuned->kernels()[0].schedule.rfind(kTemplate, 0) == 0);
    require_close((*tuned->run({in}))[0], want[0]);
  }
}

namespace {

constexpr const char* kDoubleOp = "test_double";
constexpr const char* kDoubleTemplate = "test_double_with_bugs";

// double(x [R, L]) = 2 x, by a template whose `bug` configs are wrong (and faster): bug 1 skips
// the second half of the rows, bug 2 adds 1 to every element.
void register_double_with_bugs() {
  if (OpRegistry::global().find(kDoubleOp)) return;
  OpDef def;
  def.name = kDoubleOp;
  def.num_inputs = 1;
  def.infer = [](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    if (in[0].shape.size() != 2) return absl::InvalidArgumentError("double needs x [R, L]");
    return in[0];
  };
  def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs&,
                   const std::vector<ir::Expr>& shape, const std::string& name) {
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      return in[0]({i[0], i[1]}) * ir::Expr(2.0f);
    });
  };
  ScheduleTemplate t;
  t.name = kDoubleTemplate;
  t.applies = [](const TemplateContext& ctx) {
    return ctx.target.is_cpu() && ctx.inputs[0].dtype == DType::f32() &&
           ctx.inputs[0].shape[0].is_static() && ctx.inputs[0].shape[1].is_static();
  };
  t.space = [](const TemplateContext&) {
    tune::Space s;
    s.param("bug", {0, 1, 2});
    s.default_config(tune::Config({{"bug", 0}}));
    return s;
  };
  t.build = [](const TemplateContext& ctx,
               const tune::Config& c) -> absl::StatusOr<ScheduledKernel> {
    const int64_t R = ctx.inputs[0].shape[0].value(), L = ctx.inputs[0].shape[1].value();
    ir::Buffer x = ir::Buffer::make("x", DType::f32(), {ir::Expr(R), ir::Expr(L)});
    ir::Buffer y = ir::Buffer::make("y", DType::f32(), {ir::Expr(R), ir::Expr(L)});
    ir::Var r("r"), l("l");
    const int64_t rows = c["bug"] == 1 ? R / 2 : R;
    ir::Expr value = x.load({r, l}) * ir::Expr(2.0f);
    if (c["bug"] == 2) value = value + ir::Expr(1.0f);
    ScheduledKernel out;
    out.func = ir::Func{ctx.name,
                        {x, y},
                        ir::For::make(r, 0, rows, ir::ForKind::kSerial,
                                      ir::For::make(l, 0, L, ir::ForKind::kSerial,
                                                    ir::Store::make(y, value, {r, l})))};
    return out;
  };
  def.templates.push_back(std::move(t));
  REQUIRE(OpRegistry::global().add(std::move(def)).ok());
}

}  // namespace

TEST_CASE(
    "tuning refuses the configs of a user template whose output disagrees with the "
    "default config's, and says why",
    "[template][user][tune]") {
  register_double_with_bugs();
  Graph g;
  g.output(g.apply(kDoubleOp, {g.input("x", {23, 41})}));
  const NDArray in = random_array(DType::f32(), {23, 41});
  loom::testing::TempDir dir;
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.cache_dir = dir.path().string();
  options.report_progress = false;
  runtime::KernelCache::global().clear_memory();
  for (const bool warm : {false, true}) {
    INFO((warm ? "warm" : "cold"));
    if (warm) runtime::KernelCache::global().clear_memory();  // from the disk cache
    auto compiled = Compiler().compile(g, options);
    INFO(compiled.status().ToString());
    REQUIRE(compiled.ok());
    const KernelInfo& k = compiled->kernels()[0];
    CHECK(k.schedule == std::string(kDoubleTemplate) + "[bug=0]");
    REQUIRE(k.candidates.size() == 1);
    CHECK(k.candidates[0].config == tune::Config({{"bug", 0}}));
    REQUIRE(k.refused.size() == 2);
    CHECK(k.refused[0].config == tune::Config({{"bug", 1}}));
    // Rows 11 to 22 left as the poison found them: 12 x 41 elements.
    CHECK_THAT(k.refused[0].reason,
               Catch::Contains("its output disagrees with that of test_double_with_bugs[bug=0]") &&
                   Catch::Contains(std::to_string(12 * 41) + " of " + std::to_string(23 * 41) +
                                   " elements differ"));
    CHECK(k.refused[1].config == tune::Config({{"bug", 2}}));
    CHECK_THAT(k.refused[1].reason,
               Catch::Contains(std::to_string(23 * 41) + " of " + std::to_string(23 * 41)));
    auto got = compiled->run({in});
    REQUIRE(got.ok());
    require_close((*got)[0], reference_run(g, {in})[0]);
  }
}
