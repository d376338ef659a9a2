// Pictures and the information behind them: the DOT text of a graph (nodes, types, layouts,
// edges) and of a compiled graph (one cluster per kernel), the candidates' times and cache keys
// that kernels() reports, and the SVG tuning report.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "loom/graph/dot.hpp"
#include "loom/loom.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/runtime/pictures.hpp"
#include "test_util.hpp"

using namespace loom;
using loom::testing::random_array;

namespace {

// The parts of DOT text the tests look at, parsed line by line (the writer puts one statement
// on each line).
struct ParsedDot {
  std::map<int, std::string> label;       // node id -> label, "\n" unescaped
  std::map<int, std::string> attributes;  // node id -> everything after the label
  std::set<std::pair<int, int>> edges;
  std::vector<std::string> cluster_labels;
  std::vector<std::set<int>> clusters;  // node ids in each cluster
};

std::string unescaped(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1];
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

ParsedDot parse_dot(const std::string& dot) {
  ParsedDot p;
  const std::regex node(R"re(^\s*n(\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$)re");
  const std::regex edge(R"re(^\s*n(\d+) -> n(\d+);$)re");
  const std::regex cluster(R"re(^\s*subgraph cluster_\d+ \{$)re");
  const std::regex cluster_label(R"re(^\s*label="((?:[^"\\]|\\.)*)";$)re");
  std::istringstream in(dot);
  std::string line;
  bool in_cluster = false;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, node)) {
      const int id = std::stoi(m[1]);
      REQUIRE(p.label.count(id) == 0);  // each node drawn once
      p.label[id] = unescaped(m[2]);
      p.attributes[id] = m[3];
      if (in_cluster) p.clusters.back().insert(id);
    } else if (std::regex_match(line, m, edge)) {
      p.edges.insert({std::stoi(m[1]), std::stoi(m[2])});
    } else if (std::regex_match(line, cluster)) {
      in_cluster = true;
      p.clusters.emplace_back();
    } else if (in_cluster && std::regex_match(line, m, cluster_label)) {
      p.cluster_labels.push_back(unescaped(m[1]));
    } else if (line == "  }") {
      in_cluster = false;
    }
  }
  return p;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// x [6, 32] -> relu -> stored blocked -> exp ; matmul with w, + b, relu: the output.
Graph small_graph() {
  Graph g;
  Tensor x = g.input("x", {6, 32});
  Tensor blocked = x.relu().layout_transform(
      Layout::row_major({ir::Expr(int64_t{6}), ir::Expr(int64_t{32})}).split(1, 8));
  Tensor w = g.constant("w", random_array(DType::f32(), {32, 16}));
  Tensor b = g.constant("b", random_array(DType::f32(), {16}));
  g.output(blocked.exp().matmul(w).add(b).relu());
  return g;
}

}  // namespace

TEST_CASE("dot: each node with its op, type and layout, each edge, the output double-bordered",
          "[dot]") {
  Graph g = small_graph();
  REQUIRE(g.status().ok());
  const std::string dot = to_dot(g, {.title = "a \"quoted\" title"});
  CHECK(dot.rfind("digraph loom {\n", 0) == 0);
  CHECK(dot.find("label=\"a \\\"quoted\\\" title\";") != std::string::npos);
  ParsedDot p = parse_dot(dot);
  REQUIRE(p.label.size() == g.nodes().size());
  std::set<std::pair<int, int>> want_edges;
  int layouts = 0;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = g.nodes()[i];
    const std::vector<std::string> label = lines_of(p.label.at(static_cast<int>(i)));
    REQUIRE(label.size() == 4);
    CHECK(label[0] == n.name);
    CHECK(label[1] == (n.kind == Node::Kind::kInput      ? "input"
                       : n.kind == Node::Kind::kConstant ? "constant"
                                                         : n.op));
    CHECK(label[2] == n.type.dtype.to_string() + shape_to_string(n.type.shape));
    if (n.type.layout.empty()) {
      CHECK(label[3] == "row-major");
    } else {
      CHECK(label[3] == ".split(1, 8)");
      ++layouts;
    }
    const bool is_output = i == static_cast<size_t>(g.outputs()[0]);
    CHECK((p.attributes.at(static_cast<int>(i)).find("peripheries=2") != std::string::npos) ==
          is_output);
    for (int in : n.inputs) want_edges.insert({in, static_cast<int>(i)});
  }
  CHECK(layouts == 1);
  CHECK(p.edges == want_edges);
  CHECK(p.clusters.empty());
}

TEST_CASE("dot: a compiled graph draws one cluster per kernel, holding the nodes it computes",
          "[dot]") {
  for (bool fuse : {true, false}) {
    CompileOptions options;
    options.fuse = fuse;
    auto compiled = Compiler().compile(small_graph(), options);
    REQUIRE(compiled.ok());
    const Graph& g = compiled->graph();
    ParsedDot p = parse_dot(to_dot(*compiled, "compiled"));
    REQUIRE(p.label.size() == g.nodes().size());
    const std::vector<KernelInfo>& kernels = compiled->kernels();
    REQUIRE(p.clusters.size() == kernels.size());
    REQUIRE(p.cluster_labels.size() == kernels.size());
    std::map<std::string, int> clusters_of;  // node name -> clusters drawing it
    for (size_t k = 0; k < kernels.size(); ++k) {
      INFO("fuse " << fuse << ", kernel " << kernels[k].name);
      std::set<std::string> drawn, computed(kernels[k].ops.begin(), kernels[k].ops.end());
      for (int id : p.clusters[k]) drawn.insert(lines_of(p.label.at(id))[0]);
      CHECK(drawn == computed);
      for (const std::string& name : drawn) ++clusters_of[name];
      CHECK(lines_of(p.cluster_labels[k])[0] == kernels[k].name);
      CHECK(p.cluster_labels[k].find(kernels[k].schedule) != std::string::npos);
      CHECK(p.cluster_labels[k].find(kernels[k].cache_key) != std::string::npos);
    }
    // Every operator node is in exactly one kernel's cluster; inputs and constants in none.
    size_t ops = 0;
    for (const Node& n : g.nodes()) {
      CHECK(clusters_of[n.name] == (n.kind == Node::Kind::kOp ? 1 : 0));
      ops += n.kind == Node::Kind::kOp;
    }
    CHECK((fuse ? kernels.size() < ops : kernels.size() == ops));
  }
}

TEST_CASE("kernels() reports the candidates' times and the cache entry, also from the cache",
          "[tune][cache]") {
  Graph g;
  Tensor x = g.input("x", {23, 64});
  g.output(x.matmul(g.constant("w", random_array(DType::f32(), {64, 40}))).relu());
  CompileOptions options;
  options.tune = TuneLevel::kFast;
  options.report_progress = false;
  auto tuned_kernel = [](const CompiledGraph& c) -> const KernelInfo& {
    for (const KernelInfo& k : c.kernels())
      if (k.schedule != "default") return k;
    FAIL("no templated kernel");
    return c.kernels()[0];
  };

  auto cold = Compiler().compile(g, options);
  REQUIRE(cold.ok());
  const KernelInfo first = tuned_kernel(*cold);
  REQUIRE(first.candidates.size() > 1);
  int chosen = 0;
  for (const CandidateTime& c : first.candidates) {
    CHECK(c.median_ms > 0);
    const std::string tag = "[" + c.config.to_string() + "]";
    if (first.schedule.size() > tag.size() &&
        first.schedule.compare(first.schedule.size() - tag.size(), tag.size(), tag) == 0)
      ++chosen;
  }
  CHECK(chosen == 1);
  REQUIRE(std::regex_match(first.cache_key, std::regex("[0-9a-f]{32}")));
  const char* dir = std::getenv("LOOM_CACHE_DIR");
  REQUIRE(dir);
  CHECK(std::filesystem::exists(std::filesystem::path(dir) / first.cache_key));

  // From the disk level: the same entry, the same candidates, nothing measured.
  runtime::KernelCache::global().clear_memory();
  const Stats before = stats();
  auto warm = Compiler().compile(g, options);
  REQUIRE(warm.ok());
  CHECK((stats() - before).tune_measurements == 0);
  const KernelInfo& again = tuned_kernel(*warm);
  CHECK(again.cache_key == first.cache_key);
  REQUIRE(again.candidates.size() == first.candidates.size());
  for (size_t i = 0; i < again.candidates.size(); ++i) {
    CHECK(again.candidates[i].config == first.candidates[i].config);
    CHECK(again.candidates[i].median_ms == Approx(first.candidates[i].median_ms));
  }

  options.use_cache = false;
  auto uncached = Compiler().compile(g, options);
  REQUIRE(uncached.ok());
  CHECK(tuned_kernel(*uncached).cache_key.empty());
  CHECK(!tuned_kernel(*uncached).candidates.empty());
  options.tune = TuneLevel::kNone;
  auto untuned = Compiler().compile(g, options);
  REQUIRE(untuned.ok());
  CHECK(tuned_kernel(*untuned).candidates.empty());
}

TEST_CASE("tuning report: a row per tuned kernel, a dot per candidate placed by relative time",
          "[pictures]") {
  auto config = [](const std::string& name, int64_t v) {
    tune::Config c;
    c.set(name, v);
    return c;
  };
  std::vector<KernelInfo> kernels(3);
  kernels[0].name = "gemm<1>&";
  kernels[0].schedule = "t[a=2]";
  kernels[0].candidates = {{config("a", 1), 2.0}, {config("a", 2), 1.0}, {config("a", 3), 4.0}};
  kernels[1].name = "fused_default";
  kernels[1].schedule = "default";
  kernels[2].name = "rows";
  kernels[2].schedule = "r[b=1]";
  kernels[2].candidates = {{config("b", 1), 0.5}, {config("b", 2), 15.0}};
  const std::string svg = tuning_report_svg(kernels, "report <title>");

  CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  CHECK(svg.find("report &lt;title&gt;") != std::string::npos);
  CHECK(svg.find("gemm&lt;1&gt;&amp;") != std::string::npos);
  CHECK(svg.find("gemm<1>") == std::string::npos);
  CHECK(svg.find("fused_default") == std::string::npos);  // no candidates: no row
  CHECK(svg.find("2 kernels tuned; 1 not measured") != std::string::npos);
  CHECK(svg.find("<title>a=2: 1 ms</title>") != std::string::npos);  // hover text: config, time
  CHECK(svg.find("fastest 0.5 ms, 2 candidates") != std::string::npos);
  CHECK(svg.find("50x</text>") != std::string::npos);  // the axis reaches the worst ratio, 30
  CHECK(svg.find("100x</text>") == std::string::npos);

  // Circles in order: kernel 0's three candidates, then kernel 2's two.
  const std::regex circle(R"re(<circle( class="chosen")? cx="([0-9.]+)" cy="([0-9.]+)")re");
  std::vector<double> cx, cy;
  std::vector<bool> chosen;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator();
       ++it) {
    chosen.push_back((*it)[1].matched);
    cx.push_back(std::stod((*it)[2]));
    cy.push_back(std::stod((*it)[3]));
  }
  REQUIRE(cx.size() == 5);
  CHECK(chosen == std::vector<bool>{false, true, false, true, false});
  CHECK(cx[1] < cx[0]);
  CHECK(cx[0] < cx[2]);
  CHECK(cx[1] == cx[3]);  // each kernel's fastest at ratio 1
  CHECK(cx[2] < cx[4]);   // 4x left of 30x on the shared axis
  CHECK((cy[0] == cy[1] && cy[1] == cy[2] && cy[3] == cy[4] && cy[0] < cy[3]));
}

namespace {

// Runs render_svg with PATH holding only dir (and the shell's own tools), then restores PATH.
absl::Status render_with_path(const std::string& dir, const std::string& dot,
                              const std::string& svg) {
  const char* path = std::getenv("PATH");
  const std::string saved = path ? path : "";
  ::setenv("PATH", (dir + ":/bin:/usr/bin").c_str(), 1);
  absl::Status s = render_svg(dot, svg);
  ::setenv("PATH", saved.c_str(), 1);
  return s;
}

void write_script(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

}  // namespace

TEST_CASE("render_svg: runs Graphviz's dot, or says it is missing or failed", "[dot]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("loom-fake-dot-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "bin");
  const std::string text = "digraph loom {\n  n0 [label=\"x\"];\n}\n";
  const std::string svg = (dir / "g.svg").string();

  // No dot on PATH: Unavailable, nothing written, no temporary file left.
  absl::Status missing = render_with_path((dir / "bin").string(), text, svg);
  CHECK(absl::IsUnavailable(missing));
  CHECK(missing.message().find("dot") != std::string::npos);
  CHECK(!fs::exists(svg));

  // A stand-in dot that checks its arguments (-Tsvg -o OUT IN) and copies IN to OUT.
  write_script(dir / "bin" / "dot",
               "#!/bin/sh\n[ \"$1\" = -Tsvg ] && [ \"$2\" = -o ] && cp \"$4\" \"$3\"\n");
  REQUIRE(render_with_path((dir / "bin").string(), text, svg).ok());
  std::ifstream in(svg);
  const std::string drawn((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(drawn == text);

  write_script(dir / "bin" / "dot", "#!/bin/sh\nexit 3\n");
  absl::Status failed = render_with_path((dir / "bin").string(), text, svg);
  CHECK(failed.code() == absl::StatusCode::kInternal);
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().string().find(".dot.tmp") == std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("pictures: the calls README.md shows", "[dot][pictures]") {
  Graph graph = small_graph();
  auto compiled = Compiler().compile(graph);
  REQUIRE(compiled.ok());
  const std::string out_dir = std::filesystem::temp_directory_path().string();
  // snippet-begin: pictures (shown in README.md)
  std::string before = loom::to_dot(graph);                          // loom/graph/dot.hpp
  std::string after = loom::to_dot(*compiled, "my model");           // a cluster per kernel
  absl::Status s = loom::render_svg(after, out_dir + "/after.svg");  // Unavailable: no Graphviz
  std::string svg = loom::tuning_report_svg(compiled->kernels(), "my model");
  // snippet-end: pictures
  CHECK(parse_dot(before).clusters.empty());
  CHECK(parse_dot(after).clusters.size() == compiled->kernels().size());
  CHECK((s.ok() || absl::IsUnavailable(s)));
  CHECK(svg.find("0 kernels tuned") != std::string::npos);  // TuneLevel::kNone measures nothing
}
