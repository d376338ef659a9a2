// The packed-B GEMM template: every config of its pruned space and a random sample of its whole
// space, on shapes with tails in every blocked dimension, against plain C++ in double.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "cache_test_util.hpp"
#include "loom/loom.hpp"
#include "loom/tune/tuner.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;
using loom::testing::require_close;

namespace {

constexpr const char* kTemplate = "gemm_packed_b";

const ScheduleTemplate& gemm_template() {
  const OpDef* def = OpRegistry::global().find("matmul");
  REQUIRE(def);
  auto it = std::find_if(def->templates.begin(), def->templates.end(),
                         [](const ScheduleTemplate& t) { return t.name == kTemplate; });
  REQUIRE(it != def->templates.end());
  return *it;
}

Shape static_shape(const std::vector<int64_t>& s) { return Shape(s.begin(), s.end()); }

// The template's space for a shape (the same for every shape, by design; checked below).
tune::Space space_for(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  ctx.name = "gemm";
  ctx.inputs = {{static_shape(a), DType::f32()}, {static_shape(b), DType::f32()}};
  ctx.constant_inputs = {false, true};
  return gemm_template().space(ctx);
}

// C = A x B in double; B is unbatched or has A's batch dims.
NDArray naive_matmul(const NDArray& a, const NDArray& b) {
  const auto& as = a.shape();
  const auto& bs = b.shape();
  int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  int64_t batches = a.numel() / (M * K);
  bool b_batched = b.numel() != K * N;
  std::vector<int64_t> cs(as.begin(), as.end() - 1);
  cs.push_back(N);
  NDArray c(DType::f32(), cs);
  for (int64_t g = 0; g < batches; ++g)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += a.get((g * M + i) * K + k) * b.get(((b_batched ? g : 0) * K + k) * N + j);
        c.set((g * M + i) * N + j, s);
      }
  return c;
}

// Compiles a @ b with the given config (b constant or an input) and checks it.
void check_config(const std::vector<int64_t>& as, const std::vector<int64_t>& bs, bool b_constant,
                  const tune::Config& config) {
  NDArray a = random_array(DType::f32(), as), b = random_array(DType::f32(), bs);
  Graph g;
  Tensor x = g.input("a", static_shape(as));
  Tensor w = b_constant ? g.constant("b", b) : g.input("b", static_shape(bs));
  g.output(x.matmul(w));
  CompileOptions options;
  options.poison_buffers = true;
  options.template_configs[kTemplate] = config;
  auto compiled = Compiler().compile(g, options);
  INFO("config " << config.to_string() << ", A " << shape_to_string(as) << ", B "
                 << shape_to_string(bs) << (b_constant ? " (constant)" : ""));
  INFO(compiled.status().ToString());
  REQUIRE(compiled.ok());
  bool templated = false;
  for (const KernelInfo& k : compiled->kernels()) templated |= k.schedule.find(kTemplate) != std::string::npos;
  REQUIRE(templated);
  auto out = b_constant ? compiled->run({a}) : compiled->run({a, b});
  INFO(out.status().ToString());
  REQUIRE(out.ok());
  require_close((*out)[0], naive_matmul(a, b), 1e-5, 1e-4);
}

// Checks a @ b (b constant) with the given config, as check_config, and returns the assembly of
// the kernels compiled for it (LOOM_DUMP_IR).
std::string checked_assembly(const std::vector<int64_t>& as, const std::vector<int64_t>& bs,
                             const tune::Config& config, const std::string& tag) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() /
                 ("loom_gemm_" + tag + "_" + std::to_string(loom::testing::test_seed()));
  fs::remove_all(dir);
  ::setenv("LOOM_DUMP_IR", dir.c_str(), 1);
  check_config(as, bs, /*b_constant=*/true, config);
  ::unsetenv("LOOM_DUMP_IR");
  std::string assembly;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find("asm.s") != std::string::npos) {
      std::ifstream in(e.path());
      std::stringstream text;
      text << in.rdbuf();
      assembly += text.str();
    }
  fs::remove_all(dir);
  return assembly;
}

}  // namespace

TEST_CASE("gemm template: pruned space and a sample of the whole space", "[gemm][template]") {
  // M = 13 leaves a row tail for every mr > 1; N = 37 a column tail for every panel width;
  // K = 71 a partial last kc block for every kc below 71 (and kc above K).
  const std::vector<int64_t> as = {13, 71}, bs = {71, 37};
  tune::Space space = space_for(as, bs);
  std::vector<tune::Config> configs = space.pruned();
  std::vector<tune::Config> all = space.all();
  REQUIRE(!all.empty());
  std::mt19937_64 pick(12345);
  for (int i = 0; i < 12; ++i) configs.push_back(all[pick() % all.size()]);
  for (const tune::Config& c : configs) {
    REQUIRE(space.broken_rules(c).empty());
    check_config(as, bs, /*b_constant=*/true, c);
  }
  // The non-constant B path packs B inside the kernel; a few configs suffice.
  for (size_t i = 0; i < configs.size(); i += 5) check_config(as, bs, /*b_constant=*/false, configs[i]);
}

TEST_CASE("gemm template: prefetching the next B panel, across K blocks, tiles and batches",
          "[gemm][template]") {
  // K = 200 in blocks of 64 (the last partial): the prefetch of a tile's last panel reaches into
  // the next K block, and in the last K block into the next tile's first panel (past B after
  // the last tile). N = 37 in panels of one or two vectors, 2 panels per tile: a next panel
  // within the tile, and a partial last one.
  // B batched (3 x 200 x 37) and not. Streaming B, each k step asks for the row 8 steps ahead:
  // into the next K block, and past K (into the next panel, or past the buffer); the row tail (M =
  // 13 in blocks of 3) has fewer rows than a panel row has vectors.
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> shapes = {
      {{13, 200}, {200, 37}}, {{3, 13, 200}, {3, 200, 37}}};
  for (const auto& [as, bs] : shapes) {
    tune::Space space = space_for(as, bs);
    for (int64_t prefetch : {0, 1})
      for (int64_t nv : {1, 2})
        for (int64_t stream_b : {0, 1}) {
          const tune::Config c({{"mr", 3},
                                {"nv", nv},
                                {"kc", 64},
                                {"mc_tiles", 2},
                                {"nc_panels", 2},
                                {"prefetch", prefetch},
                                {"stream_b", stream_b}});
          REQUIRE(space.broken_rules(c).empty());
          check_config(as, bs, /*b_constant=*/true, c);
          check_config(as, bs, /*b_constant=*/false, c);
        }
  }
}

TEST_CASE("gemm template: a streamed B panel is prefetched into L1, the next panel into L2",
          "[gemm][template][dump]") {
  // The assembly of the compiled kernel (LOOM_DUMP_IR): streaming B asks for lines with
  // prefetcht0 and not prefetcht1; the next-panel prefetch asks with prefetcht1 only.
  const std::vector<int64_t> as = {29, 300}, bs = {300, 70};
  tune::Space space = space_for(as, bs);
  for (int64_t stream_b : {0, 1}) {
    const tune::Config c({{"mr", 4},
                          {"nv", 2},
                          {"kc", stream_b ? 512 : 64},
                          {"mc_tiles", 4},
                          {"nc_panels", stream_b ? 1 : 2},
                          {"prefetch", 1 - stream_b},
                          {"stream_b", stream_b}});
    REQUIRE(space.broken_rules(c).empty());
    const std::string assembly =
        checked_assembly(as, bs, c, "prefetch_" + std::to_string(stream_b));
    INFO("stream_b " << stream_b);
    REQUIRE(!assembly.empty());
    CHECK((assembly.find("prefetcht0") != std::string::npos) == (stream_b == 1));
    CHECK((assembly.find("prefetcht1") != std::string::npos) == (stream_b == 0));
  }
}

TEST_CASE("gemm template: tiles of few rows add up several accumulator sets",
          "[gemm][template][dump]") {
  // M = 1 (a matrix-vector product) and M = 2 and 5 (a row tail under mr = 3) keep one
  // accumulator set per k step in turn; K = 1, 3, 5, 67 and 131 in blocks of 64 leave every
  // remainder of the k loop over the sets, in the first, a middle and the last K block.
  for (int64_t m : {1, 2, 5})
    for (int64_t k : {1, 3, 5, 67, 131})
      for (int64_t stream_b : {0, 1}) {
        const std::vector<int64_t> as = {m, k}, bs = {k, 29};
        tune::Space space = space_for(as, bs);
        const tune::Config c({{"mr", 3},
                              {"nv", 3},
                              {"kc", 64},
                              {"mc_tiles", 1},
                              {"nc_panels", 1},
                              {"prefetch", 1 - stream_b},
                              {"stream_b", stream_b}});
        REQUIRE(space.broken_rules(c).empty());
        check_config(as, bs, /*b_constant=*/true, c);
        check_config(as, bs, /*b_constant=*/false, c);
      }
  // The sets are added up before C is stored: vector adds, which a GEMM of full tiles lacks
  // (FMAs only).
  const std::vector<int64_t> bs = {300, 70};
  tune::Space space = space_for({1, 300}, bs);
  for (int64_t m : {1, 12}) {
    const tune::Config c({{"mr", 4},
                          {"nv", 3},
                          {"kc", 128},
                          {"mc_tiles", 1},
                          {"nc_panels", 1},
                          {"prefetch", 1},
                          {"stream_b", 0}});
    REQUIRE(space.broken_rules(c).empty());
    const std::string assembly = checked_assembly({m, 300}, bs, c, "sets_" + std::to_string(m));
    INFO("M = " << m);
    REQUIRE(!assembly.empty());
    CHECK((assembly.find("vaddps") != std::string::npos) == (m == 1));
  }
}

TEST_CASE("gemm template: odd, prime and degenerate shapes with the default config",
          "[gemm][template]") {
  struct Case {
    std::vector<int64_t> a, b;
  };
  tune::Config def = space_for({1, 1}, {1, 1}).default_config();
  for (Case c : {Case{{1, 1}, {1, 1}}, Case{{1, 2048}, {2048, 7}}, Case{{7, 3}, {3, 1}},
                 Case{{257, 511}, {511, 129}}, Case{{31, 1}, {1, 33}},
                 Case{{2, 3, 5, 17}, {17, 9}},          // batch dims fold into M
                 Case{{3, 19, 23}, {3, 23, 11}}}) {     // batched B
    check_config(c.a, c.b, /*b_constant=*/true, def);
    check_config(c.a, c.b, /*b_constant=*/false, def);
  }
}

TEST_CASE("gemm template: the space does not depend on the input size", "[gemm][template]") {
  tune::Space small = space_for({1, 1}, {1, 1}), large = space_for({1024, 1024}, {1024, 1024});
  REQUIRE(small.all().size() == large.all().size());
  REQUIRE(small.default_config() == large.default_config());
  REQUIRE(small.pruned().size() < small.all().size());
}

TEST_CASE("gemm template: a forced config that breaks a rule is refused", "[gemm][template][error]") {
  tune::Config bad = space_for({4, 4}, {4, 4}).default_config();
  bad.set("mr", 8);
  bad.set("nv", 4);  // 8 x 4 accumulators cannot fit 16 (or 32) vector registers
  Graph g;
  g.output(g.input("a", {4, 4}).matmul(g.constant("b", random_array(DType::f32(), {4, 4}))));
  CompileOptions options;
  options.template_configs[kTemplate] = bad;
  auto compiled = Compiler().compile(g, options);
  REQUIRE(!compiled.ok());
  REQUIRE(compiled.status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(compiled.status().message().find("register") != std::string_view::npos);

  tune::Config missing;
  missing.set("mr", 4);
  options.template_configs[kTemplate] = missing;
  compiled = Compiler().compile(g, options);
  REQUIRE(!compiled.ok());
  REQUIRE(compiled.status().message().find("lacks parameter") != std::string_view::npos);
}

TEST_CASE("tuner: kFast measures the pruned space and picks among its fastest", "[gemm][template][tune]") {
  const ScheduleTemplate& t = gemm_template();
  TemplateContext ctx;
  ctx.target = Target::host_cpu();
  ctx.name = "gemm_tuned";
  ctx.inputs = {{static_shape({33, 65}), DType::f32()}, {static_shape({65, 47}), DType::f32()}};
  ctx.output = {static_shape({33, 47}), DType::f32()};
  ctx.constant_inputs = {false, true};
  NDArray b = random_array(DType::f32(), {65, 47});
  auto jit = runtime::CpuJit::create(ctx.target);
  REQUIRE(jit.ok());
  auto tuned = tune::tune_kernel(t, ctx, {nullptr, &b}, TuneLevel::kFast, **jit);
  INFO(tuned.status().ToString());
  REQUIRE(tuned.ok());
  tune::Space space = t.space(ctx);
  REQUIRE(tuned->measurements.size() == space.pruned().size());
  std::vector<double> times;
  for (const auto& m : tuned->measurements) {
    REQUIRE(m.median_ms > 0);
    times.push_back(m.median_ms);
  }
  std::sort(times.begin(), times.end());
  auto chosen = std::find_if(tuned->measurements.begin(), tuned->measurements.end(),
                             [&](const tune::Measurement& m) { return m.config == tuned->config; });
  REQUIRE(chosen != tuned->measurements.end());
  // The winner of the final round is one of the three fastest of the first.
  REQUIRE(chosen->median_ms <= times[std::min<size_t>(2, times.size() - 1)]);
  // The chosen kernel computes the product, with B in its packed form.
  REQUIRE(tuned->packed_inputs.size() == 1);
  NDArray a = random_array(DType::f32(), {33, 65}), c(DType::f32(), {33, 47});
  void* buffers[] = {a.data(), tuned->packed_inputs[0].second.data(), c.data()};
  tuned->fn(buffers, nullptr);
  require_close(c, naive_matmul(a, b), 1e-5, 1e-4);
}

// a @ b (a: [m, k], b: [k, n], any float dtype) summed in f32 over k in the given order of k,
// rounded to the output dtype: two correct schedules of one matmul differ this way.
NDArray matmul_in_order(const NDArray& a, const NDArray& b, const std::vector<int64_t>& ks) {
  const int64_t m = a.shape()[0], n = b.shape()[1];
  NDArray c(a.dtype(), {m, n});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float sum = 0;
      for (int64_t k : ks)
        sum +=
            static_cast<float>(a.get(i * a.shape()[1] + k)) * static_cast<float>(b.get(k * n + j));
      c.set(i * n + j, sum);
    }
  return c;
}

TEST_CASE("tuner: a candidate's output agrees with the reference's as correct schedules do",
          "[tune]") {
  for (DType t : {DType::f32(), DType::f16(), DType::bf16()}) {
    INFO(t.to_string());
    const int64_t m = 13, k = 509, n = 31;  // prime k: no summation order is special
    const NDArray a = random_array(t, {m, k}), b = random_array(t, {k, n});
    std::vector<int64_t> forward(static_cast<size_t>(k)), shuffled;
    for (int64_t i = 0; i < k; ++i) forward[static_cast<size_t>(i)] = i;
    shuffled = forward;
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(static_cast<unsigned>(k)));
    const NDArray want = matmul_in_order(a, b, forward);
    const NDArray got = matmul_in_order(a, b, shuffled);
    CHECK(tune::outputs_agree(want, got).ok());

    // A wrong element (off by half the output's typical magnitude), a wrong tile (two 4 x 4 tiles
    // swapped, as a wrong swizzle does), an unwritten element (the poison left): refused.
    double rms = 0;
    for (int64_t i = 0; i < want.numel(); ++i) rms += want.get(i) * want.get(i);
    rms = std::sqrt(rms / static_cast<double>(want.numel()));
    NDArray one = got.copy();
    one.set(5 * n + 7, one.get(5 * n + 7) + 0.5 * rms);
    absl::Status s = tune::outputs_agree(want, one);
    CHECK(s.code() == absl::StatusCode::kAborted);
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("1 of " + std::to_string(m * n) + " elements differ") &&
                   Catch::Contains("element " + std::to_string(5 * n + 7)));
    NDArray tiles = got.copy();
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        tiles.set(i * n + j, got.get((i + 4) * n + j + 8));
        tiles.set((i + 4) * n + j + 8, got.get(i * n + j));
      }
    CHECK(!tune::outputs_agree(want, tiles).ok());
    NDArray unwritten = got.copy();
    unwritten.set(m * n - 1, std::nan(""));
    CHECK(!tune::outputs_agree(want, unwritten).ok());
    // Where the reference left NaN (an unwritten element in both, a NaN computed by both), NaN
    // agrees; a value does not.
    NDArray nan_want = want.copy(), nan_got = got.copy();
    nan_want.set(3, std::nan(""));
    nan_got.set(3, std::nan(""));
    CHECK(tune::outputs_agree(nan_want, nan_got).ok());
    CHECK(!tune::outputs_agree(nan_want, got).ok());
  }
  // Integers agree exactly; other dtypes or shapes never.
  NDArray i = random_array(DType::i32(), {7, 3}, -50, 50), j = i.copy();
  CHECK(tune::outputs_agree(i, j).ok());
  j.set(20, j.get(20) + 1);
  CHECK(!tune::outputs_agree(i, j).ok());
  CHECK(tune::outputs_agree(i, NDArray(DType::i32(), {3, 7})).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(tune::outputs_agree(i, NDArray(DType::i64(), {7, 3})).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("tune::Space::limit keeps the allowed choices and moves a default that breaks them",
          "[tune]") {
  auto space = [] {
    tune::Space s;
    s.param("a", {1, 2, 4}).param("b", {1, 2}).rule("a * b <= 4", [](const tune::Config& c) {
      return c["a"] * c["b"] <= 4;
    });
    s.default_config(tune::Config({{"a", 4}, {"b", 1}}));
    return s;
  };
  tune::Space s = space();
  REQUIRE(s.limit("a", {2, 1, 8}).ok());
  // The space's order is kept, values it never had are ignored.
  CHECK(s.params()[0].second == std::vector<int64_t>{1, 2});
  CHECK(s.all().size() == 4);
  // {a=4, b=1} broke the limit; of the valid configs, {1, 1} and {2, 1} change one parameter.
  CHECK(s.default_config() == tune::Config({{"a", 1}, {"b", 1}}));
  CHECK(s.broken_rules(s.default_config()).empty());
  // A default that keeps the limit stays.
  tune::Space kept = space();
  REQUIRE(kept.limit("b", {1}).ok());
  CHECK(kept.default_config() == tune::Config({{"a", 4}, {"b", 1}}));
  CHECK(kept.all().size() == 3);

  tune::Space bad = space();
  absl::Status s1 = bad.limit("c", {1});
  CHECK(s1.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s1.message()), Catch::Contains("no parameter c"));
  absl::Status s2 = bad.limit("b", {3});
  CHECK(s2.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s2.message()), Catch::Contains("none of parameter b's choices {1,2}"));
  tune::Space none = space();
  REQUIRE(none.limit("a", {4}).ok());      // {4, 1} stays valid
  absl::Status s3 = none.limit("b", {2});  // {4, 2} breaks the rule: nothing is left
  CHECK(s3.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s3.message()), Catch::Contains("no config keeps the space's rules"));
}

TEST_CASE(
    "tune::Space::prefer_choice leaves a config out only where its twin with the preferred "
    "choice is valid",
    "[tune]") {
  // b = 2 is preferred where a > 1; a * b <= 4 rules out {4, 2}.
  auto space = [] {
    tune::Space s;
    s.param("a", {1, 2, 4}).param("b", {1, 2}).rule("a * b <= 4", [](const tune::Config& c) {
      return c["a"] * c["b"] <= 4;
    });
    s.prefer_choice("b = 2 where a > 1", "b", 2, [](const tune::Config& c) { return c["a"] > 1; });
    s.default_config(tune::Config({{"a", 1}, {"b", 1}}));
    return s;
  };
  auto has = [](const std::vector<tune::Config>& cs, int64_t a, int64_t b) {
    return std::find(cs.begin(), cs.end(), tune::Config({{"a", a}, {"b", b}})) != cs.end();
  };
  const std::vector<tune::Config> pruned = space().pruned();
  CHECK(pruned.size() == 4);
  CHECK(has(pruned, 1, 1));  // a = 1: not picked
  CHECK(has(pruned, 1, 2));
  CHECK(!has(pruned, 2, 1));  // its twin {2, 2} is valid
  CHECK(has(pruned, 2, 2));
  CHECK(has(pruned, 4, 1));  // its twin {4, 2} breaks the rule
  // Limited to b = 1, the preferred choice is gone: every config stays.
  tune::Space limited = space();
  REQUIRE(limited.limit("b", {1}).ok());
  const std::vector<tune::Config> kept = limited.pruned();
  CHECK(kept.size() == 3);
  CHECK(has(kept, 2, 1));
}

TEST_CASE(
    "CompileOptions::template_limits: the default and every candidate keep them, tunings "
    "under other limits are cached apart, and bad limits are clear errors",
    "[gemm][template][tune]") {
  const NDArray b = random_array(DType::f32(), {65, 47}), a = random_array(DType::f32(), {33, 65});
  Graph g;
  g.output(g.input("a", {33, 65}).matmul(g.constant("b", b)));
  const tune::Space space = space_for({33, 65}, {65, 47});
  const tune::Config def = space.default_config();
  // An nv the default does not have, and that some valid config has.
  int64_t other_nv = 0;
  for (const tune::Config& c : space.all())
    if (c["nv"] != def["nv"]) other_nv = c["nv"];
  REQUIRE(other_nv != 0);
  const std::string kept = "nv=" + std::to_string(other_nv);
  loom::testing::TempDir dir;
  CompileOptions options;
  options.cache_dir = dir.path().string();
  options.report_progress = false;
  runtime::KernelCache::global().clear_memory();

  // kNone: the default moves to a config with that nv, and computes a @ b.
  options.template_limits[kTemplate] = {{"nv", {other_nv}}};
  absl::StatusOr<CompiledGraph> limited = Compiler().compile(g, options);
  INFO(limited.status().ToString());
  REQUIRE(limited.ok());
  CHECK_THAT(limited->kernels()[0].schedule, Catch::Contains(kept));
  absl::StatusOr<std::vector<NDArray>> out = limited->run({a});
  REQUIRE(out.ok());
  require_close((*out)[0], naive_matmul(a, b), 1e-4, 1e-4);

  // kFast, first without limits (cached), then limited: the limited tuning is not the cached
  // one; each of its candidates keeps the limit.
  options.tune = TuneLevel::kFast;
  options.template_limits.clear();
  absl::StatusOr<CompiledGraph> free = Compiler().compile(g, options);
  REQUIRE(free.ok());
  std::set<int64_t> nvs;
  for (const CandidateTime& c : free->kernels()[0].candidates) nvs.insert(c.config["nv"]);
  CHECK(nvs.size() > 1);
  options.template_limits[kTemplate] = {{"nv", {other_nv}}};
  limited = Compiler().compile(g, options);
  REQUIRE(limited.ok());
  REQUIRE(!limited->kernels()[0].candidates.empty());
  for (const CandidateTime& c : limited->kernels()[0].candidates) CHECK(c.config["nv"] == other_nv);
  CHECK_THAT(limited->kernels()[0].schedule, Catch::Contains(kept));
  CHECK(limited->kernels()[0].cache_key != free->kernels()[0].cache_key);
  out = limited->run({a});
  REQUIRE(out.ok());
  require_close((*out)[0], naive_matmul(a, b), 1e-4, 1e-4);

  // A forced config must keep the limits; a parameter the template lacks, or no choice left.
  options.template_configs[kTemplate] = def;
  absl::StatusOr<CompiledGraph> forced = Compiler().compile(g, options);
  REQUIRE(!forced.ok());
  CHECK(forced.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(forced.status().message()),
             Catch::Contains("breaks rule 'choices of nv'"));
  options.template_configs.clear();
  options.template_limits[kTemplate] = {{"no_such", {1}}};
  absl::StatusOr<CompiledGraph> unknown = Compiler().compile(g, options);
  REQUIRE(!unknown.ok());
  CHECK(unknown.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(unknown.status().message()),
             Catch::Contains("template_limits of template gemm_packed_b: the space has no "
                             "parameter no_such"));
  options.template_limits[kTemplate] = {{"nv", {97}}};
  absl::StatusOr<CompiledGraph> nothing = Compiler().compile(g, options);
  REQUIRE(!nothing.ok());
  CHECK_THAT(std::string(nothing.status().message()), Catch::Contains("none of parameter nv's"));
}
