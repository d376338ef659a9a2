// Generated kernels never read or write outside their buffers: graphs of every operator family,
// on odd and prime shapes, run in guard-page mode (each input, constant, intermediate, output and
// scratch block ends exactly at, or starts right after, an inaccessible page, so a stray access
// faults and fails the test run), with default and forced template configs, against the graph
// reference interpreter.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <random>

#include "graph_reference.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/guard_pages.hpp"
#include "loom/runtime/scratch.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::runtime::GuardPages;
using loom::testing::random_array;
using loom::testing::require_close;

namespace {

// Sets the process-wide guard mode for a scope.
struct GuardMode {
  explicit GuardMode(GuardPages mode) { runtime::set_guard_pages(mode); }
  ~GuardMode() { runtime::set_guard_pages(saved); }
  GuardPages saved = runtime::guard_pages();
};

// True when body(), run in a forked child, dies (a signal, or a sanitizer's error exit) instead
// of returning.
bool dies(const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

struct Case {
  const char* name;
  std::function<Graph(std::vector<NDArray>& inputs)> build;  // fills the runtime inputs
};

NDArray weights(std::vector<int64_t> shape) { return random_array(DType::f32(), std::move(shape)); }

std::vector<Case> cases() {
  return {
      {"matmul with bias and relu, constant weights",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {13, 37})};
         Tensor x = g.input("x", {13, 37});
         g.output(x.matmul(g.constant("w", weights({37, 29}))).add(g.constant("b", weights({29}))).relu());
         return g;
       }},
      {"batched matmul of two inputs",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {3, 7, 11}), random_array(DType::f32(), {3, 11, 5})};
         g.output(g.input("a", {3, 7, 11}).matmul(g.input("b", {3, 11, 5})));
         return g;
       }},
      {"conv2d, stride 2, asymmetric padding, then max and avg pooling",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {1, 5, 17, 13})};
         Tensor x = g.input("x", {1, 5, 17, 13});
         Tensor y = x.conv2d(g.constant("w", weights({7, 5, 3, 3})), {.stride = 2, .padding = {1, 2, 0, 1}});
         g.output(y.max_pool2d({.kernel = 3, .stride = 2, .padding = 1}));
         g.output(y.avg_pool2d({.kernel = {2, 3}, .stride = {1, 2}, .padding = {0, 1}}));
         return g;
       }},
      {"depthwise and 1x1 convolutions",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {2, 5, 11, 7})};
         Tensor x = g.input("x", {2, 5, 11, 7});
         Tensor d = x.conv2d(g.constant("dw", weights({5, 1, 3, 3})), {.padding = 1, .groups = 5});
         g.output(d.conv2d(g.constant("pw", weights({3, 5, 1, 1}))).relu());
         return g;
       }},
      {"softmax on both axes and layer norm",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {7, 31})};
         Tensor x = g.input("x", {7, 31});
         g.output(x.softmax(-1));
         g.output(x.softmax(0));
         g.output(x.layer_norm(g.constant("gamma", weights({31})), g.constant("beta", weights({31}))));
         return g;
       }},
      {"transpose, reshape and reductions",
       [](std::vector<NDArray>& in) {
         Graph g;
         in = {random_array(DType::f32(), {3, 5, 7})};
         Tensor x = g.input("x", {3, 5, 7});
         Tensor t = x.transpose({2, 0, 1}).reshape({7, 15});
         g.output(t.sum({1}));
         g.output(x.mean({0, 2}, true));
         g.output(x.max({1}));
         g.output(t.exp().mul(2.0));
         return g;
       }},
      {"broadcasts, concat, slice, pad and gather",
       [](std::vector<NDArray>& in) {
         Graph g;
         NDArray idx(DType::i64(), {4});
         for (int64_t i = 0; i < 4; ++i) idx.set(i, static_cast<double>((i * 5) % 7 - 2));
         in = {random_array(DType::f32(), {7, 1, 5}), random_array(DType::f32(), {1, 3, 5})};
         Tensor a = g.input("a", {7, 1, 5}), b = g.input("b", {1, 3, 5});
         Tensor s = a.add(b).mul(g.constant("c", weights({5})));
         Tensor c = concat({s, b.expand({7, 3, 5})}, 1);
         g.output(c.slice({1, 5}, {INT64_MAX, 0}, {0, 2}, {2, -2}));
         g.output(a.pad({{1, 2}, {0, 0}, {3, 1}}, PadMode::kReflect));
         g.output(a.gather(g.constant("idx", idx), 0));
         return g;
       }},
  };
}

// Templates that schedule some node of g, each with a few configs from its pruned space: the
// default config alone misses the tails other configs leave.
std::vector<CompileOptions> forced_configs(const Graph& g) {
  std::vector<CompileOptions> out;
  std::mt19937_64 pick(loom::testing::test_seed());
  for (const Node& n : g.nodes()) {
    if (n.kind != Node::Kind::kOp) continue;
    const OpDef* def = OpRegistry::global().find(n.op);
    if (!def) continue;
    TemplateContext ctx;
    ctx.target = Target::host_cpu();
    ctx.name = n.name;
    ctx.output = n.type;
    ctx.attrs = n.attrs.get();
    for (int i : n.inputs) {
      ctx.inputs.push_back(g.nodes()[i].type);
      ctx.constant_inputs.push_back(g.nodes()[i].kind == Node::Kind::kConstant);
    }
    for (const ScheduleTemplate& t : def->templates) {
      if (t.target_kind != Target::Kind::kCpu || !t.applies(ctx)) continue;
      std::vector<tune::Config> configs = t.space(ctx).pruned();
      for (int k = 0; k < 3 && !configs.empty(); ++k) {
        CompileOptions o;
        o.template_configs[t.name] = configs[pick() % configs.size()];
        out.push_back(o);
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("guard pages: a block ends at (or starts after) an inaccessible page", "[guard]") {
  for (int64_t bytes : {int64_t{1}, int64_t{13}, static_cast<int64_t>(kPage), int64_t{3 * 4099}}) {
    INFO(bytes << " bytes");
    std::shared_ptr<void> after = runtime::allocate_guarded(bytes, GuardPages::kAfter);
    std::shared_ptr<void> before = runtime::allocate_guarded(bytes, GuardPages::kBefore);
    REQUIRE(after);
    REQUIRE(before);
    volatile char* a = static_cast<char*>(after.get());
    volatile char* b = static_cast<char*>(before.get());
    CHECK(reinterpret_cast<uintptr_t>(a + bytes) % kPage == 0);
    CHECK(reinterpret_cast<uintptr_t>(b) % kPage == 0);
    CHECK_FALSE(dies([&] { a[0] = 1; a[bytes - 1] = 1; b[0] = 1; b[bytes - 1] = 1; }));
    CHECK(dies([&] { a[bytes] = 1; }));
    CHECK(dies([&] { (void)b[-1]; }));
  }
  // Scratch blocks that generated kernels allocate are guarded the same way.
  GuardMode mode(GuardPages::kAfter);
  void* s = loom_scratch_alloc(44);
  REQUIRE(s);
  CHECK(reinterpret_cast<uintptr_t>(static_cast<char*>(s) + 44) % kPage == 0);
  CHECK(dies([&] { static_cast<volatile char*>(s)[44] = 1; }));
  loom_scratch_free(s);
  runtime::set_guard_pages(GuardPages::kBefore);
  s = loom_scratch_alloc(44);
  REQUIRE(s);
  CHECK(reinterpret_cast<uintptr_t>(s) % kPage == 0);
  loom_scratch_free(s);
}

TEST_CASE("guard pages: kernels stay inside their buffers on odd and prime shapes", "[guard]") {
  for (const Case& c : cases()) {
    SECTION(c.name) {
      std::vector<NDArray> inputs;
      Graph g = c.build(inputs);
      REQUIRE(g.status().ok());
      const std::vector<NDArray> expected = loom::testing::reference_run(g, inputs);
      std::vector<CompileOptions> configs = forced_configs(g);
      configs.insert(configs.begin(), CompileOptions{});  // TuneLevel::kNone, default configs
      for (CompileOptions& options : configs) {
        options.poison_buffers = true;
        options.use_disk_cache = false;
        auto compiled = Compiler().compile(g, options);
        INFO(compiled.status().ToString());
        REQUIRE(compiled.ok());
        for (GuardPages where : {GuardPages::kAfter, GuardPages::kBefore}) {
          std::string configs_text;
          for (const auto& [name, config] : options.template_configs)
            configs_text += name + " " + config.to_string();
          INFO((where == GuardPages::kAfter ? "ending at" : "starting after")
               << " a guard page; forced: " << (configs_text.empty() ? "none" : configs_text));
          GuardMode mode(where);
          auto out = compiled->run(inputs);
          INFO(out.status().ToString());
          REQUIRE(out.ok());
          REQUIRE(out->size() == expected.size());
          for (size_t i = 0; i < expected.size(); ++i) require_close((*out)[i], expected[i], 1e-4, 1e-5);
        }
      }
    }
  }
}
