// Post-scheduling fusion: the partition of graphs into anchor groups, and fused against unfused
// compilation of the same graph (and the reference interpreter) on random inputs.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "graph_reference.hpp"
#include "loom/compiler.hpp"
#include "loom/graph/partition.hpp"
#include "loom/ir/op.hpp"
#include "run_util.hpp"
#include "test_util.hpp"

using namespace loom;
using namespace loom::testing;

namespace {

// Compiles g fused and unfused (forced template configs if given), runs both on the inputs and
// checks them against each other and the reference interpreter. Returns the fused kernels.
std::vector<KernelInfo> check_fused(const Graph& g, const std::vector<NDArray>& inputs,
                                    std::map<std::string, tune::Config> configs = {},
                                    double rtol = 1e-4, double atol = 1e-4) {
  CompileOptions fused;
  fused.poison_buffers = true;
  fused.template_configs = configs;
  CompileOptions unfused = fused;
  unfused.fuse = false;
  absl::StatusOr<CompiledGraph> a = Compiler().compile(g, fused);
  absl::StatusOr<CompiledGraph> b = Compiler().compile(g, unfused);
  INFO(a.status().ToString() << " / " << b.status().ToString());
  REQUIRE((a.ok() && b.ok()));
  std::vector<NDArray> x = run_ok(*a, inputs), y = run_ok(*b, inputs);
  std::vector<NDArray> ref = reference_run(g, inputs);
  REQUIRE(x.size() == ref.size());
  for (size_t k = 0; k < x.size(); ++k) {
    require_close(x[k], y[k], rtol, atol);
    require_close(x[k], ref[k], rtol, atol);
  }
  CHECK(a->kernels().size() <= b->kernels().size());
  return a->kernels();
}

// The kernel that computes node `name`.
const KernelInfo* kernel_of(const std::vector<KernelInfo>& ks, const std::string& name) {
  for (const KernelInfo& k : ks)
    if (std::find(k.ops.begin(), k.ops.end(), name) != k.ops.end()) return &k;
  return nullptr;
}

tune::Config gemm_config(int64_t mr, int64_t kc) {
  return tune::Config({{"mr", mr},
                       {"nv", 1},
                       {"kc", kc},
                       {"mc_tiles", 1},
                       {"nc_panels", 1},
                       {"prefetch", 0},
                       {"stream_b", 0}});
}

}  // namespace

TEST_CASE("partition: anchors take bijective epilogues and private prologues", "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {2, 6, 8});
  Tensor w = g.constant("w", random_array(DType::f32(), {8, 12}));
  Tensor b = g.constant("b", random_array(DType::f32(), {12}));
  Tensor pre = x.mul(2.0).transpose({0, 1, 2});
  Tensor mm = pre.matmul(w);
  Tensor y = mm.add(b).gelu().reshape({2, 6, 3, 4}).transpose({0, 2, 1, 3});
  g.output(y);
  std::vector<FusedGroup> groups = partition(g);
  REQUIRE(groups.size() == 1);
  const FusedGroup& grp = groups[0];
  CHECK(g.nodes()[grp.anchor].op == "matmul");
  CHECK(grp.output == g.outputs()[0]);
  CHECK(grp.prologue().size() == 2);
  CHECK(grp.epilogue().size() == 4);
  CHECK(grp.to_string(g).find("anchor matmul") != std::string::npos);

  PartitionOptions off;
  off.fuse = false;
  CHECK(partition(g, off).size() == 7);

  // A templated anchor refuses prologues: they become a group of their own.
  PartitionOptions no_prologue;
  no_prologue.anchor_takes_prologue = [](int) { return false; };
  std::vector<FusedGroup> split = partition(g, no_prologue);
  REQUIRE(split.size() == 2);
  CHECK(split[0].anchor == -1);
  CHECK(split[0].nodes.size() == 2);
}

TEST_CASE("partition: a value read twice, a graph output or a broadcast stops the epilogue",
          "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {4, 5});
  Tensor s = x.sum({1}, true);                  // anchor [4, 1]
  Tensor e = s.exp();                           // epilogue
  Tensor wide = e.add(g.input("y", {4, 5}));    // broadcasts e: not bijective
  g.output(wide);
  std::vector<FusedGroup> groups = partition(g);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].output == e.id());
  CHECK(groups[1].anchor == -1);

  Graph h;
  Tensor a = h.input("a", {4, 5});
  Tensor m = a.softmax();
  Tensor r = m.relu();
  h.output(r);
  h.output(r.mul(m));  // m read twice (relu, mul): the epilogue must end where one value leaves
  std::vector<FusedGroup> hg = partition(h);
  for (const FusedGroup& grp : hg) {
    // Only each group's output may be read outside it.
    for (int n : grp.nodes)
      if (n != grp.output)
        for (const Node& other : h.nodes())
          for (int in : other.inputs)
            if (in == n) CHECK(std::find(grp.nodes.begin(), grp.nodes.end(), &other - &h.nodes()[0]) != grp.nodes.end());
  }
}

TEST_CASE("fusion: matmul with bias, gelu and a residual is one kernel", "[fusion]") {
  for (int64_t k : {64, 197}) {  // 197: a prime depth, several K blocks with kc 64
    Graph g;
    Tensor x = g.input("x", {2, 13, k});
    Tensor r = g.input("r", {2, 13, 96});
    Tensor w = g.constant("w", random_array(DType::f32(), {k, 96}));
    Tensor b = g.constant("b", random_array(DType::f32(), {96}));
    g.output(x.matmul(w).add(b).gelu().add(r));
    tune::Config small_kc = gemm_config(4, 64);
    for (auto configs : {std::map<std::string, tune::Config>{},
                         std::map<std::string, tune::Config>{{"gemm_packed_b", small_kc}}}) {
      std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {2, 13, k}),
                                                   random_array(DType::f32(), {2, 13, 96})},
                                               configs);
      CHECK(ks.size() == 1);
      CHECK(ks[0].ops.size() == 4);
    }
  }
}

TEST_CASE("fusion: transposed and reshaped epilogues, odd sizes", "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {17, 23});
  Tensor w = g.constant("w", random_array(DType::f32(), {23, 30}));
  Tensor y = x.matmul(w).relu().reshape({17, 5, 6}).transpose({1, 2, 0}).mul(0.5);
  g.output(y);
  std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {17, 23})});
  CHECK(ks.size() == 1);
}

TEST_CASE("fusion: convolutions take bias, relu and residual epilogues", "[fusion]") {
  struct Case {
    int64_t c, o, h, k, stride, pad, groups;
  };
  for (Case cs : {Case{8, 16, 11, 3, 1, 1, 1},     // direct
                  Case{37, 24, 9, 1, 1, 0, 1},     // 1x1 as GEMM, a prime channel count
                  Case{12, 12, 13, 3, 2, 1, 12}})  // depthwise, stride 2
  {
    Graph g;
    Tensor x = g.input("x", {1, cs.c, cs.h, cs.h});
    Tensor w = g.constant("w", random_array(DType::f32(), {cs.o, cs.c / cs.groups, cs.k, cs.k}));
    Tensor b = g.constant("b", random_array(DType::f32(), {1, cs.o, 1, 1}));
    Conv2dOptions opt;
    opt.stride = static_cast<int>(cs.stride);
    opt.padding = static_cast<int>(cs.pad);
    opt.groups = static_cast<int>(cs.groups);
    Tensor conv = x.conv2d(w, opt);
    int64_t oh = (cs.h + 2 * cs.pad - cs.k) / cs.stride + 1;
    Tensor res = g.input("res", {1, cs.o, oh, oh});
    g.output(conv.add(b).relu().add(res).relu());
    std::vector<KernelInfo> ks =
        check_fused(g, {random_array(DType::f32(), {1, cs.c, cs.h, cs.h}),
                        random_array(DType::f32(), {1, cs.o, oh, oh})});
    INFO("conv " << cs.c << "->" << cs.o << " k" << cs.k << " groups " << cs.groups);
    CHECK(ks.size() == 1);
  }
}

TEST_CASE("fusion: 1x1 convolution keeping partial sums across channel blocks", "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {1, 150, 7, 7});
  Tensor w = g.constant("w", random_array(DType::f32(), {32, 150, 1, 1}));
  g.output(x.conv2d(w).sigmoid().mul(2.0));
  // Force small channel blocks: every output element is stored partially, then finally.
  std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {1, 150, 7, 7})});
  CHECK(ks.size() == 1);
}

TEST_CASE("fusion: softmax and layer norm carry their neighbours' elementwise work", "[fusion]") {
  Graph g;
  Tensor s = g.input("s", {3, 4, 29});
  Tensor mask = g.input("mask", {3, 1, 29});
  Tensor gamma = g.constant("gamma", random_array(DType::f32(), {29}));
  Tensor beta = g.constant("beta", random_array(DType::f32(), {29}));
  Tensor p = s.mul(0.125).add(mask).softmax();  // scale and (broadcast) mask: the prologue
  Tensor ln = p.mul(3.0).layer_norm(gamma, beta).relu();
  g.output(ln);
  std::vector<KernelInfo> ks = check_fused(
      g, {random_array(DType::f32(), {3, 4, 29}), random_array(DType::f32(), {3, 1, 29})});
  // scale, mask, softmax and mul(3) in one kernel (mul(3) as softmax's epilogue), layer norm and
  // relu in another.
  CHECK(ks.size() == 2);
}

TEST_CASE("fusion: default-scheduled anchors inline prologue and epilogue", "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {5, 7, 11});
  Tensor y = x.exp().mul(0.5).max({2}).sqrt().add(1.0);
  Tensor z = x.abs().sum({0, 2}, true).mul(2.0);
  g.output(y);
  g.output(z);
  std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {5, 7, 11})});
  CHECK(ks.size() == 2);
}

TEST_CASE("fusion: injective chains become one kernel and several consumers stay correct", "[fusion]") {
  Graph g;
  Tensor a = g.input("a", {7, 3, 5});
  Tensor b = g.input("b", {5});
  Tensor t = a.transpose({2, 0, 1}).relu();       // [5, 7, 3]
  Tensor u = t.add(t.mul(2.0)).reshape({35, 3});  // t read by two consumers: materialized
  Tensor w = g.constant("w", random_array(DType::f32(), {3, 9}));
  Tensor mm = u.matmul(w);
  g.output(mm.add(b.reshape({5, 1}).expand({5, 9}).reshape({1, 45}).reshape({5, 9}).sum({0}, true).reshape({9})));
  g.output(mm.tanh());  // the matmul's value leaves through two consumers
  std::vector<KernelInfo> ks = check_fused(
      g, {random_array(DType::f32(), {7, 3, 5}), random_array(DType::f32(), {5})});
  CHECK(ks.size() < 10);
}

TEST_CASE("fusion: a cast epilogue after partial sums keeps them in scratch", "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {6, 200});
  Tensor w = g.constant("w", random_array(DType::f32(), {200, 16}));
  g.output(x.matmul(w).mul(4.0).cast(DType::i32()));
  tune::Config small_kc = gemm_config(2, 64);
  std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {6, 200})},
                                           {{"gemm_packed_b", small_kc}}, 0, 1.0);
  // The matmul keeps partial sums across K blocks; an i32 output cannot hold them, so they go to
  // scratch memory and the whole chain stays one kernel.
  CHECK(ks.size() == 1);
  const KernelInfo* mm = kernel_of(ks, g.nodes()[g.nodes().size() - 3].name);
  REQUIRE(mm != nullptr);
  CHECK(mm->ops.size() == 3);
}

TEST_CASE("fusion: attention-style head split after a deep matmul (partial sums in scratch)",
          "[fusion]") {
  // [2, 7, 160] x [160, 64] + bias -> [2, 7, 2, 32] -> [2, 2, 7, 32]: the last dim stays last, so
  // aligned vector stores stay contiguous; K = 160 with kc = 64 keeps partial sums across blocks.
  Graph g;
  Tensor x = g.input("x", {2, 7, 160});
  Tensor w = g.constant("w", random_array(DType::f32(), {160, 64}));
  Tensor b = g.constant("b", random_array(DType::f32(), {64}));
  g.output(x.matmul(w).add(b).reshape({2, 7, 2, 32}).transpose({0, 2, 1, 3}));
  for (auto configs : {std::map<std::string, tune::Config>{},
                       std::map<std::string, tune::Config>{{"gemm_packed_b", gemm_config(3, 64)}}}) {
    std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {2, 7, 160})}, configs);
    CHECK(ks.size() == 1);
  }
  // Keys transposed the other way ([2, 2, 32, 7]): the last dim moves, stores scatter.
  Graph h;
  Tensor y = h.input("y", {2, 7, 160});
  h.output(y.matmul(h.constant("w", random_array(DType::f32(), {160, 64})))
               .reshape({2, 7, 2, 32})
               .transpose({0, 2, 3, 1}));
  std::vector<KernelInfo> ks = check_fused(h, {random_array(DType::f32(), {2, 7, 160})},
                                           {{"gemm_packed_b", gemm_config(3, 64)}});
  CHECK(ks.size() == 1);
}

namespace {

// A user operator whose template keeps a partial result in its output without marking the final
// store: y = x, then y = y + x. Fusion cannot know which store is final and must leave it alone.
void register_unmarked_accumulate() {
  constexpr const char* kName = "test_unmarked_double";
  if (OpRegistry::global().find(kName)) return;
  OpDef def;
  def.name = kName;
  def.num_inputs = 1;
  def.infer = [](const std::vector<TensorType>& in, const OpAttrs&) -> absl::StatusOr<TensorType> {
    return in[0];
  };
  def.compute = [](const std::vector<te::Tensor>& in, const OpAttrs&,
                   const std::vector<ir::Expr>& shape, const std::string& name) {
    return te::compute(name, shape, [&](const std::vector<ir::Var>& i) {
      return in[0]({i[0], i[1]}) * ir::Expr(2.0f);
    });
  };
  ScheduleTemplate t;
  t.name = "test_unmarked_double_cpu";
  t.applies = [](const TemplateContext& ctx) { return ctx.target.is_cpu() && is_static(ctx.output.shape); };
  t.space = [](const TemplateContext&) {
    tune::Space s;
    s.param("unused", {1});
    tune::Config d;
    d.set("unused", 1);
    s.default_config(d);
    return s;
  };
  t.build = [](const TemplateContext& ctx, const tune::Config&) -> absl::StatusOr<ScheduledKernel> {
    const ir::Expr r(ctx.output.shape[0].value()), c(ctx.output.shape[1].value());
    ir::Buffer x = ir::Buffer::make("x", DType::f32(), {r, c});
    ir::Buffer y = ir::Buffer::make("y", DType::f32(), {r, c});
    ir::Var i("i"), j("j");
    ir::Stmt copy = ir::Store::make(y, x.load({i, j}), {i, j});
    ir::Stmt add = ir::Store::make(y, y.load({i, j}) + x.load({i, j}), {i, j});
    ir::Stmt body = ir::For::make(
        i, 0, r, ir::ForKind::kSerial,
        ir::For::make(j, 0, c, ir::ForKind::kSerial, ir::Seq::make({copy, add})));
    ScheduledKernel k;
    k.func = ir::Func{ctx.name, {x, y}, body};
    return k;
  };
  def.templates.push_back(std::move(t));
  REQUIRE(OpRegistry::global().add(std::move(def)).ok());
}

}  // namespace

TEST_CASE("fusion: a kernel that reads its output without final marks runs unfused (and says so)",
          "[fusion]") {
  register_unmarked_accumulate();
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("loom_fusion_dump_" + std::to_string(test_seed()));
  fs::remove_all(dir);
  Graph g;
  Tensor x = g.input("x", {5, 13});
  g.output(g.apply("test_unmarked_double", {x}).relu().mul(3.0));
  ::setenv("LOOM_DUMP_IR", dir.c_str(), 1);
  std::vector<KernelInfo> ks = check_fused(g, {random_array(DType::f32(), {5, 13})});
  ::unsetenv("LOOM_DUMP_IR");
  // The operator alone, then relu and mul together.
  CHECK(ks.size() == 2);
  std::string notes;
  for (const auto& e : fs::directory_iterator(dir / "graph"))
    if (e.path().filename().string().find("fusion") != std::string::npos) {
      std::ifstream in(e.path());
      notes += std::string(std::istreambuf_iterator<char>(in), {});
    }
  CHECK(notes.find("marks none of its stores final") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("fusion: a transposed and scaled operand is the prologue of a matmul with packed weights",
          "[fusion]") {
  Graph g;
  Tensor x = g.input("x", {13, 11});
  Tensor w = g.constant("w", random_array(DType::f32(), {13, 9}));
  Tensor v = g.input("v", {11, 9});
  // A = 0.5 * x^T (prologue of input 0), B packed at compile time, relu epilogue; and a second
  // matmul whose B (not constant) is computed by a prologue too (packed at run time).
  Tensor y = x.transpose({1, 0}).mul(0.5).matmul(w).relu();
  Tensor z = y.matmul(v.abs().transpose({1, 0}));
  g.output(z);
  std::vector<KernelInfo> ks = check_fused(
      g, {random_array(DType::f32(), {13, 11}), random_array(DType::f32(), {11, 9})});
  CHECK(ks.size() == 2);
  for (const KernelInfo& k : ks) CHECK(k.ops.size() >= 3);
}
