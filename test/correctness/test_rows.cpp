// Row-wise operators (sum, mean, max over trailing axes, softmax, layer_norm) on their CPU
// templates, against the te reference and plain C++ in double precision; every config of a
// sweep of each template's space; the vector exp and the bit casts it is built from; and the
// default schedule's parallel loops.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "graph_reference.hpp"
#include "loom/ir/fast_math.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/loom.hpp"
#include "loom/ops/attrs.hpp"
#include "loom/passes/passes.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "loom/te/task.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::run_ok;
using loom::testing::reference_run;
using loom::testing::require_close;

namespace {

const std::vector<int64_t> kRowLengths = {1, 7, 8, 9, 31, 257, 1000, 3072};
const std::vector<int64_t> kRowCounts = {1, 3, 128};

CompiledGraph compile(const Graph& g, CompileOptions options = {}) {
  options.poison_buffers = true;
  auto compiled = Compiler(Target::host_cpu()).compile(g, options);
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  return *std::move(compiled);
}

// True when some kernel of c was scheduled by the named template.
bool uses_template(const CompiledGraph& c, const std::string& name) {
  for (const KernelInfo& k : c.kernels())
    if (k.schedule.rfind(name + "[", 0) == 0) return true;
  return false;
}

// ---- Plain C++ references, in double precision, over rows of a row-major array ----------------

NDArray row_reduce_reference(const NDArray& x, int64_t rows, int64_t len, const std::string& op,
                             std::vector<int64_t> shape = {}) {
  NDArray out(DType::f32(), shape.empty() ? std::vector<int64_t>{rows} : shape);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = op == "max" ? -std::numeric_limits<double>::infinity() : 0.0;
    for (int64_t j = 0; j < len; ++j) {
      double v = x.get(r * len + j);
      acc = op == "max" ? std::max(acc, v) : acc + v;
    }
    out.set(r, op == "mean" ? acc / static_cast<double>(len) : acc);
  }
  return out;
}

NDArray softmax_reference(const NDArray& x, int64_t rows, int64_t len) {
  NDArray out(DType::f32(), x.shape());
  for (int64_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int64_t j = 0; j < len; ++j) m = std::max(m, x.get(r * len + j));
    for (int64_t j = 0; j < len; ++j) sum += std::exp(x.get(r * len + j) - m);
    for (int64_t j = 0; j < len; ++j) out.set(r * len + j, std::exp(x.get(r * len + j) - m) / sum);
  }
  return out;
}

NDArray layer_norm_reference(const NDArray& x, const NDArray& gamma, const NDArray& beta,
                             int64_t rows, int64_t len, double eps) {
  NDArray out(DType::f32(), x.shape());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < len; ++j) mean += x.get(r * len + j);
    mean /= static_cast<double>(len);
    for (int64_t j = 0; j < len; ++j) var += std::pow(x.get(r * len + j) - mean, 2);
    var /= static_cast<double>(len);
    for (int64_t j = 0; j < len; ++j)
      out.set(r * len + j,
              (x.get(r * len + j) - mean) / std::sqrt(var + eps) * gamma.get(j) + beta.get(j));
  }
  return out;
}

// Sums of n values in [-1, 1] in f32: the two orders of summation differ by up to about n ulps.
double sum_tolerance(int64_t len) {
  return 2e-7 * static_cast<double>(len) + 1e-6;
}

// ---- One check per operator, used for fixed shapes and for config sweeps -----------------------

void check_row_reductions(int64_t rows, int64_t len, const CompileOptions& options = {}) {
  INFO("rows " << rows << " x len " << len);
  Graph g;
  Tensor x = g.input("x", {rows, len});
  g.output(x.sum({-1}));
  g.output(x.mean({-1}));
  g.output(x.max({-1}, /*keepdims=*/true));
  CompiledGraph c = compile(g, options);
  CHECK(uses_template(c, "rows_sum"));
  CHECK(uses_template(c, "rows_mean"));
  CHECK(uses_template(c, "rows_max"));
  NDArray in = random_array(DType::f32(), {rows, len});
  std::vector<NDArray> got = run_ok(c, {in});
  std::vector<NDArray> want = reference_run(g, {in});
  require_close(got[0], want[0], 1e-5, sum_tolerance(len));
  require_close(got[1], want[1], 1e-5, sum_tolerance(len) / static_cast<double>(len));
  require_close(got[2], want[2], 0, 0);  // max is exact
  require_close(got[0], row_reduce_reference(in, rows, len, "sum"), 1e-5, sum_tolerance(len));
  require_close(got[1], row_reduce_reference(in, rows, len, "mean"), 1e-5,
                sum_tolerance(len) / static_cast<double>(len));
  require_close(got[2], row_reduce_reference(in, rows, len, "max", {rows, 1}), 0, 0);
}

void check_softmax(int64_t rows, int64_t len, double magnitude,
                   const CompileOptions& options = {}) {
  INFO("rows " << rows << " x len " << len << ", inputs in +-" << magnitude);
  Graph g;
  g.output(g.input("x", {rows, len}).softmax(-1));
  CompiledGraph c = compile(g, options);
  CHECK(uses_template(c, "rows_softmax"));
  NDArray in = random_array(DType::f32(), {rows, len}, -magnitude, magnitude);
  NDArray got = run_ok(c, {in})[0];
  require_close(got, reference_run(g, {in})[0], 1e-5, 1e-7);
  require_close(got, softmax_reference(in, rows, len), 1e-5, 1e-7);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t j = 0; j < len; ++j) sum += got.get(r * len + j);
    REQUIRE(std::fabs(sum - 1) < 1e-5);
  }
}

void check_layer_norm(int64_t rows, int64_t len, double offset,
                      const CompileOptions& options = {}) {
  INFO("rows " << rows << " x len " << len << ", inputs around " << offset);
  const double eps = 1e-5;
  Graph g;
  Tensor x = g.input("x", {rows, len});
  Tensor gamma = g.input("gamma", {len}), beta = g.input("beta", {len});
  g.output(x.layer_norm(gamma, beta, -1, eps));
  CompiledGraph c = compile(g, options);
  CHECK(uses_template(c, "rows_layer_norm"));
  NDArray in = random_array(DType::f32(), {rows, len}, offset - 1, offset + 1);
  NDArray ga = random_array(DType::f32(), {len}, 0.5, 1.5), be = random_array(DType::f32(), {len});
  NDArray got = run_ok(c, {in, ga, be})[0];
  // x - mean is exact only to the input's ulp at the offset, relative to the row's deviation.
  double atol = 1e-5 + 1e-6 * std::fabs(offset);
  require_close(got, layer_norm_reference(in, ga, be, rows, len, eps), 1e-5, atol);
  if (offset == 0) require_close(got, reference_run(g, {in, ga, be})[0], 1e-5, 1e-5);
}

}  // namespace

// ---- The bit casts and the vector exp ---------------------------------------------------------

namespace {

std::unique_ptr<runtime::CpuJit> make_jit() {
  auto jit = runtime::CpuJit::create(Target::host_cpu());
  INFO(jit.status().ToString());
  REQUIRE(jit.ok());
  return std::move(*jit);
}

// out[i] = f(in[i]) over n elements, `lanes` at a time (n a multiple of lanes).
runtime::KernelFn compile_map(runtime::CpuJit& jit, const std::string& name, DType in_type,
                              DType out_type, int64_t n, int lanes,
                              const std::function<ir::Expr(ir::Expr)>& f) {
  ir::Buffer in = ir::Buffer::make(name + "_in", in_type, {ir::Expr(n)});
  ir::Buffer out = ir::Buffer::make(name + "_out", out_type, {ir::Expr(n)});
  ir::Var i("i");
  ir::Expr index = lanes == 1 ? ir::Expr(i) : ir::Ramp::make(i * lanes, ir::Expr(1), lanes);
  ir::Stmt body = ir::For::make(i, 0, n / lanes, ir::ForKind::kSerial,
                                ir::Store::make(out, f(in.load({index})), {index}));
  ir::Func func{name, {in, out}, body};
  ir::Module m{name, jit.target(), {passes::lower_scheduled(func, jit.target())}};
  auto fns = jit.compile(m);
  INFO(fns.status().ToString());
  REQUIRE(fns.ok());
  return (*fns)[0];
}

}  // namespace

TEST_CASE("reinterpret: f32 <-> i32 bit casts, scalar and vector", "[rows][fast_math]") {
  CHECK(ir::reinterpret(DType::i32(8), ir::Broadcast::make(ir::Expr(1.0f), 8)).type() ==
        DType::i32(8));
  CHECK(ir::reinterpret(DType::f32(), ir::cast(DType::i32(), ir::Expr(3))).type() == DType::f32());
  auto jit = make_jit();
  const int64_t n = 64;
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = static_cast<float>(i) * 0.37f - 9.5f;
  f[0] = -0.0f;
  f[1] = std::numeric_limits<float>::infinity();
  f[2] = std::numeric_limits<float>::denorm_min();
  for (int lanes : {1, 8}) {
    INFO("lanes " << lanes);
    auto to_bits =
        compile_map(*jit, "to_bits" + std::to_string(lanes), DType::f32(), DType::i32(), n, lanes,
                    [](ir::Expr x) { return ir::reinterpret(DType::i32(x.type().lanes()), x); });
    auto to_float = compile_map(
        *jit, "to_float" + std::to_string(lanes), DType::i32(), DType::f32(), n, lanes,
        [](ir::Expr x) { return ir::reinterpret(DType::f32(x.type().lanes()), x + 1); });
    std::vector<int32_t> bits(n, 0x5a5a5a5a);
    void* b1[] = {f.data(), bits.data()};
    to_bits(b1, nullptr);
    std::vector<float> back(n, std::nanf(""));
    void* b2[] = {bits.data(), back.data()};
    to_float(b2, nullptr);
    for (int64_t i = 0; i < n; ++i) {
      int32_t want;
      std::memcpy(&want, &f[i], sizeof want);
      REQUIRE(bits[i] == want);
      int32_t next = want + 1;
      float want_back;
      std::memcpy(&want_back, &next, sizeof want_back);
      REQUIRE(std::memcmp(&back[i], &want_back, sizeof(float)) == 0);
    }
  }
}

TEST_CASE("reinterpret: the te evaluator agrees with the bit pattern", "[rows][fast_math]") {
  te::Tensor x = te::placeholder("x", DType::f32(), {ir::Expr(int64_t{3})});
  te::Tensor y = te::compute("y", {ir::Expr(int64_t{3})}, [&](const std::vector<ir::Var>& i) {
    return ir::reinterpret(DType::f32(), ir::reinterpret(DType::i32(), x(i[0])) + 1);
  });
  auto task = te::Task::make("bits", {x}, {y});
  REQUIRE(task.ok());
  NDArray in(DType::f32(), {3});
  in.set(0, 1.0);
  in.set(1, -2.5);
  in.set(2, 0.0);
  auto out = te::evaluate(*task, {in});
  REQUIRE(out.ok());
  for (int64_t i = 0; i < 3; ++i) {
    float v = static_cast<float>(in.get(i));
    int32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    ++bits;
    float want;
    std::memcpy(&want, &bits, sizeof want);
    REQUIRE((*out)[0].get(i) == want);
  }
}

TEST_CASE("fast_exp: relative error within 1e-6 on [-87, 88], clamped outside",
          "[rows][fast_math]") {
  auto jit = make_jit();
  const int64_t n = 1 << 18;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(-87.0 + 175.0 * i / (n - 1));
  std::vector<float> special = {0.0f,  -0.0f,  1.0f,  -1.0f,  0.5f,  -0.34657359f, 0.34657359f,
                                88.0f, -87.0f, 1e-8f, -1e-8f, 20.5f, -20.5f};
  std::copy(special.begin(), special.end(), x.begin());
  for (bool use_fma : {true, false}) {
    for (int lanes : {1, 8}) {
      INFO("lanes " << lanes << (use_fma ? ", fma" : ", no fma"));
      auto fn = compile_map(*jit, str_cat("exp", lanes, use_fma), DType::f32(), DType::f32(), n,
                            lanes, [&](ir::Expr v) { return ir::fast_exp(v, use_fma); });
      std::vector<float> y(n, std::nanf(""));
      void* buffers[] = {x.data(), y.data()};
      fn(buffers, nullptr);
      for (int64_t i = 0; i < n; ++i) {
        double want = std::exp(static_cast<double>(x[i]));
        double rel = std::fabs(y[i] - want) / want;
        if (!(rel <= 1e-6)) {
          INFO("exp(" << x[i] << ") = " << y[i] << ", want " << want);
          REQUIRE(rel <= 1e-6);
        }
      }
      CHECK(y[0] == 1.0f);
    }
  }
  // Outside the range: flush to zero below, saturate above, never NaN or inf.
  std::vector<float> edge = {-88.0f, -100.0f, -std::numeric_limits<float>::infinity(),
                             89.0f,  1000.0f, std::numeric_limits<float>::infinity(),
                             -87.5f, 88.37f};
  edge.resize(8);
  auto fn = compile_map(*jit, "exp_edge", DType::f32(), DType::f32(), 8, 8,
                        [](ir::Expr v) { return ir::fast_exp(v); });
  std::vector<float> y(8, std::nanf(""));
  void* buffers[] = {edge.data(), y.data()};
  fn(buffers, nullptr);
  CHECK(y[0] == 0.0f);
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == 0.0f);
  for (int i = 3; i < 6; ++i) {
    CHECK(std::isfinite(y[i]));
    CHECK(y[i] > 2e38f);
  }
  CHECK(y[6] >= 0.0f);
  CHECK(y[6] < 1.2e-38f);
  const double top = std::exp(static_cast<double>(88.37f));
  CHECK(std::fabs(y[7] - top) / top < 1e-6);
}

// ---- The templates on the row grid ------------------------------------------------------------

TEST_CASE("rows: sum, mean and max over the last axis match both references", "[rows]") {
  for (int64_t rows : kRowCounts)
    for (int64_t len : kRowLengths) check_row_reductions(rows, len);
}

TEST_CASE("rows: reductions over several trailing axes, keepdims and all axes", "[rows]") {
  Graph g;
  Tensor x = g.input("x", {3, 5, 7, 9});
  g.output(x.sum({2, 3}));
  g.output(x.mean({-1, -2, -3}, /*keepdims=*/true));
  g.output(x.max());
  g.output(x.sum({1}));  // not trailing: the default schedule
  CompiledGraph c = compile(g);
  CHECK(uses_template(c, "rows_sum"));
  CHECK(uses_template(c, "rows_mean"));
  CHECK(uses_template(c, "rows_max"));
  NDArray in = random_array(DType::f32(), {3, 5, 7, 9});
  std::vector<NDArray> got = run_ok(c, {in});
  std::vector<NDArray> want = reference_run(g, {in});
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) require_close(got[i], want[i], 1e-5, 1e-5);
}

TEST_CASE("rows: softmax over the last axis matches both references", "[rows]") {
  for (int64_t rows : kRowCounts)
    for (int64_t len : kRowLengths) check_softmax(rows, len, 5);
}

TEST_CASE("rows: softmax is stable for large-magnitude inputs", "[rows]") {
  for (int64_t len : {7, 257, 1000}) check_softmax(3, len, 80);
  // Rows of one huge value and many tiny ones, and rows of equal values.
  Graph g;
  g.output(g.input("x", {2, 33}).softmax(-1));
  CompiledGraph c = compile(g);
  NDArray in(DType::f32(), {2, 33});
  for (int64_t j = 0; j < 33; ++j) {
    in.set(j, j == 17 ? 85.0 : -85.0);
    in.set(33 + j, 80.0);
  }
  NDArray got = run_ok(c, {in})[0];
  require_close(got, softmax_reference(in, 2, 33), 1e-5, 1e-7);
  CHECK(got.get(17) == 1.0);
  CHECK(got.get(33) == Approx(1.0 / 33).epsilon(1e-6));
}

TEST_CASE("rows: softmax of a higher-rank tensor over its last axis", "[rows]") {
  Graph g;
  g.output(g.input("x", {2, 3, 5, 31}).softmax(3));
  CompiledGraph c = compile(g);
  CHECK(uses_template(c, "rows_softmax"));
  NDArray in = random_array(DType::f32(), {2, 3, 5, 31}, -4, 4);
  require_close(run_ok(c, {in})[0], reference_run(g, {in})[0], 1e-5, 1e-7);
}

TEST_CASE("rows: layer_norm matches both references", "[rows]") {
  for (int64_t rows : kRowCounts)
    for (int64_t len : kRowLengths) check_layer_norm(rows, len, 0);
}

TEST_CASE("rows: layer_norm stays accurate when the mean is large", "[rows]") {
  for (int64_t len : {31, 768, 3072}) check_layer_norm(5, len, 100);
}

TEST_CASE("rows: layer_norm over several trailing axes, constant weights", "[rows]") {
  Graph g;
  Tensor x = g.input("x", {4, 6, 40});
  NDArray ga = random_array(DType::f32(), {6, 40}), be = random_array(DType::f32(), {6, 40});
  g.output(x.layer_norm(g.constant("gamma", ga), g.constant("beta", be), 1, 1e-3));
  CompiledGraph c = compile(g);
  CHECK(uses_template(c, "rows_layer_norm"));
  NDArray in = random_array(DType::f32(), {4, 6, 40}, -3, 3);
  require_close(run_ok(c, {in})[0], reference_run(g, {in})[0], 1e-5, 1e-5);
}

TEST_CASE("rows: layer_norm with symbolic dims runs on the default schedule", "[rows]") {
  Graph g;
  Tensor x = g.input("x", {Dim("batch"), 37});
  Tensor gamma = g.input("gamma", {37}), beta = g.input("beta", {37});
  g.output(x.layer_norm(gamma, beta));
  CompiledGraph c = compile(g, {.specialize_shapes = false});  // generic kernels
  REQUIRE(!c.kernels().empty());
  CHECK(!uses_template(c, "rows_layer_norm"));
  for (int64_t batch : {1, 5}) {
    NDArray in = random_array(DType::f32(), {batch, 37}), ga = random_array(DType::f32(), {37}),
            be = random_array(DType::f32(), {37});
    NDArray got = run_ok(c, {in, ga, be})[0];
    require_close(got, reference_run(g, {in, ga, be})[0], 1e-5, 1e-6);
    require_close(got, layer_norm_reference(in, ga, be, batch, 37, 1e-5), 1e-5, 1e-5);
  }
}

// ---- Sweeps over each template's space --------------------------------------------------------

namespace {

// The pruned configs and a few more drawn from the whole space (fixed seed).
std::vector<tune::Config> sweep_configs(const std::string& op, const TemplateContext& ctx) {
  const OpDef* def = OpRegistry::global().find(op);
  REQUIRE(def);
  REQUIRE(!def->templates.empty());
  REQUIRE(def->templates[0].applies(ctx));
  tune::Space space = def->templates[0].space(ctx);
  std::vector<tune::Config> configs = space.pruned();
  std::vector<tune::Config> all = space.all();
  std::mt19937 pick(1234);
  for (int k = 0; k < 4; ++k)
    configs.push_back(all[std::uniform_int_distribution<size_t>(0, all.size() - 1)(pick)]);
  configs.push_back(space.default_config());
  return configs;
}

TemplateContext context(const std::vector<TensorType>& inputs, const TensorType& output,
                        const OpAttrs& attrs) {
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  ctx.name = "sweep";
  ctx.inputs = inputs;
  ctx.output = output;
  ctx.attrs = &attrs;
  ctx.constant_inputs.assign(inputs.size(), false);
  return ctx;
}

}  // namespace

TEST_CASE("rows: every swept config of every row template is correct", "[rows][sweep]") {
  struct Shape2 {
    int64_t rows, len;
  };
  for (Shape2 s : {Shape2{3, 257}, Shape2{67, 31}}) {
    TensorType x{{s.rows, s.len}, DType::f32()};
    TensorType row{{s.len}, DType::f32()};
    TensorType per_row{{s.rows}, DType::f32()};
    ops::ReduceAttrs reduce;
    reduce.axes = {-1};
    for (const char* op : {"sum", "mean", "max"}) {
      for (const tune::Config& c : sweep_configs(op, context({x}, per_row, reduce))) {
        INFO(op << " config " << c.to_string());
        CompileOptions options;
        options.template_configs[std::string("rows_") + op] = c;
        check_row_reductions(s.rows, s.len, options);
      }
    }
    ops::SoftmaxAttrs softmax;
    for (const tune::Config& c : sweep_configs("softmax", context({x}, x, softmax))) {
      INFO("softmax config " << c.to_string());
      CompileOptions options;
      options.template_configs["rows_softmax"] = c;
      check_softmax(s.rows, s.len, 10, options);
    }
    ops::LayerNormAttrs norm;
    for (const tune::Config& c : sweep_configs("layer_norm", context({x, row, row}, x, norm))) {
      INFO("layer_norm config " << c.to_string());
      CompileOptions options;
      options.template_configs["rows_layer_norm"] = c;
      check_layer_norm(s.rows, s.len, 0, options);
    }
  }
}

TEST_CASE("rows: results do not depend on the thread count", "[rows]") {
  int saved = num_threads();
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    check_softmax(128, 1000, 5);
    check_layer_norm(128, 257, 0);
    check_row_reductions(128, 1000);
  }
  set_num_threads(saved);
}

// ---- The default schedule's parallel loops ----------------------------------------------------

namespace {

std::string lowered_text(const te::Task& task) {
  return ir::to_string(passes::lower(task, Target::host_cpu()));
}

}  // namespace

TEST_CASE("default schedule: large loop nests run in parallel, small ones and reductions not",
          "[rows][parallel]") {
  auto reduce_task = [](int64_t rows, int64_t len, bool all) {
    te::Tensor x = te::placeholder("x", DType::f32(), {ir::Expr(rows), ir::Expr(len)});
    ir::IterVar j = te::reduce_axis(ir::Expr(len), "j");
    ir::IterVar i = te::reduce_axis(ir::Expr(rows), "i");
    te::Tensor y = all ? te::compute("y", {},
                                     [&](const std::vector<ir::Var>&) {
                                       return te::sum(x(i.var, j.var), {i, j});
                                     })
                       : te::compute("y", {ir::Expr(rows)}, [&](const std::vector<ir::Var>& r) {
                           return te::sum(x(r[0], j.var), {j});
                         });
    return *te::Task::make("reduce", {x}, {y});
  };
  CHECK(lowered_text(reduce_task(256, 256, false)).find("parallel for") != std::string::npos);
  CHECK(lowered_text(reduce_task(16, 16, false)).find("parallel for") == std::string::npos);
  // A reduction of everything has no spatial loop: its outer loop accumulates, so stays serial.
  CHECK(lowered_text(reduce_task(512, 512, true)).find("parallel for") == std::string::npos);

  // Softmax over the first axis (no template applies): every stage's nest is parallel.
  Graph g;
  g.output(g.input("x", {300, 257}).softmax(0));
  CompiledGraph c = compile(g);
  CHECK(!uses_template(c, "rows_softmax"));
  NDArray in = random_array(DType::f32(), {300, 257}, -3, 3);
  for (int threads : {1, 2, 3}) {
    int saved = num_threads();
    set_num_threads(threads);
    require_close(run_ok(c, {in})[0], reference_run(g, {in})[0], 1e-5, 1e-7);
    set_num_threads(saved);
  }
}

TEST_CASE("default schedule: a loop of one iteration passes parallelism to the loop inside",
          "[rows][parallel]") {
  te::Tensor x = te::placeholder(
      "x", DType::f32(), {ir::Expr(int64_t{1}), ir::Expr(int64_t{300}), ir::Expr(int64_t{200})});
  te::Tensor y = te::compute(
      "y", x.shape(), [&](const std::vector<ir::Var>& i) { return x(i[0], i[1], i[2]) * 2.0f; });
  std::string text = lowered_text(*te::Task::make("scale", {x}, {y}));
  INFO(text);
  CHECK(text.find("parallel for") != std::string::npos);
}
