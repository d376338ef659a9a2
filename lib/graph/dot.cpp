// Graphviz DOT text for a graph, and its SVG rendering through the `dot` program.

#include "loom/graph/dot.hpp"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "loom/core/status.hpp"

extern char** environ;

namespace loom {
namespace {

// A DOT double-quoted string: quotes and backslashes escaped, lines joined by "\n".
std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string node_label(const Node& n) {
  const std::string what = n.kind == Node::Kind::kInput      ? "input"
                           : n.kind == Node::Kind::kConstant ? "constant"
                                                             : n.op;
  const std::string layout = n.type.layout.empty() ? "row-major" : steps_to_string(n.type.layout);
  return str_cat(n.name, "\n", what, "\n", n.type.dtype.to_string(), shape_to_string(n.type.shape),
                 "\n", layout);
}

std::string node_attributes(const Node& n, bool is_output) {
  std::string style = n.kind == Node::Kind::kInput      ? "shape=ellipse"
                      : n.kind == Node::Kind::kConstant ? "shape=box, style=dashed"
                                                        : "shape=box, style=rounded";
  if (is_output) style += ", peripheries=2";
  return str_cat("[label=", quoted(node_label(n)), ", ", style, "]");
}

}  // namespace

std::string to_dot(const Graph& graph, const DotOptions& options) {
  const std::vector<Node>& nodes = graph.nodes();
  const std::set<int> outputs(graph.outputs().begin(), graph.outputs().end());
  std::map<std::string, int> id_of;
  for (size_t i = 0; i < nodes.size(); ++i) id_of.emplace(nodes[i].name, static_cast<int>(i));

  std::string out =
      "digraph loom {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
  if (!options.title.empty()) out += "  labelloc=t;\n  label=" + quoted(options.title) + ";\n";
  std::vector<bool> drawn(nodes.size(), false);
  for (size_t c = 0; c < options.clusters.size(); ++c) {
    const DotCluster& cluster = options.clusters[c];
    out += str_cat("  subgraph cluster_", c, " {\n    label=", quoted(cluster.label),
                   ";\n    style=filled;\n    color=lightgrey;\n");
    for (const std::string& name : cluster.nodes) {
      auto it = id_of.find(name);
      if (it == id_of.end() || drawn[static_cast<size_t>(it->second)]) continue;
      drawn[static_cast<size_t>(it->second)] = true;
      out += str_cat(
          "    n", it->second, " ",
          node_attributes(nodes[static_cast<size_t>(it->second)], outputs.count(it->second) > 0),
          ";\n");
    }
    out += "  }\n";
  }
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!drawn[i])
      out += str_cat("  n", i, " ",
                     node_attributes(nodes[i], outputs.count(static_cast<int>(i)) > 0), ";\n");
  for (size_t i = 0; i < nodes.size(); ++i)
    for (int in : nodes[i].inputs) out += str_cat("  n", in, " -> n", i, ";\n");
  return out + "}\n";
}

absl::Status render_svg(const std::string& dot_text, const std::string& svg_path) {
  const std::string dot_path = svg_path + ".dot.tmp";
  {
    std::ofstream f(dot_path, std::ios::binary);
    if (!(f << dot_text))
      return absl::InternalError("cannot write " + dot_path + ": " + std::strerror(errno));
  }
  std::string program = "dot", type = "-Tsvg", flag = "-o", out = svg_path, in = dot_path;
  char* argv[] = {program.data(), type.data(), flag.data(), out.data(), in.data(), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, "dot", nullptr, nullptr, argv, environ);
  int status = 0;
  const bool waited = spawned == 0 && waitpid(pid, &status, 0) == pid;
  std::remove(dot_path.c_str());
  if (spawned == ENOENT)
    return absl::UnavailableError("Graphviz `dot` is not on PATH: no SVG drawn for " + svg_path);
  if (spawned != 0) return absl::InternalError(str_cat("cannot run dot: ", std::strerror(spawned)));
  if (!waited || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return absl::InternalError(str_cat("dot failed drawing ", svg_path));
  return absl::OkStatus();
}

}  // namespace loom
