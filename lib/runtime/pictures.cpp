// The compiled graph's DOT picture (a cluster per kernel) and the tuning report (hand-written SVG).

#include "loom/runtime/pictures.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "loom/core/status.hpp"

namespace loom {
namespace {

std::string xml_escaped(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

// "0.42 us", "12.5 us", "3.14 ms": three significant digits, whatever the kernel's size.
std::string duration_text(double ms) {
  char buf[64];
  if (ms < 0.1)
    std::snprintf(buf, sizeof(buf), "%.3g us", ms * 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.3g ms", ms);
  return buf;
}

bool is_chosen(const KernelInfo& k, const CandidateTime& c) {
  const std::string tag = "[" + c.config.to_string() + "]";
  return k.schedule.size() >= tag.size() &&
         k.schedule.compare(k.schedule.size() - tag.size(), tag.size(), tag) == 0;
}

double fastest_ms(const KernelInfo& k) {
  double best = k.candidates.front().median_ms;
  for (const CandidateTime& c : k.candidates) best = std::min(best, c.median_ms);
  return best;
}

// The plot's geometry: candidates' ratios to their kernel's fastest, on a log axis from 1 to
// `top` (a round number at least as large as every ratio).
struct Axis {
  double left = 320, right = 800, top = 2;
  double x(double ratio) const {
    const double r = std::clamp(ratio, 1.0, top);
    return left + (right - left) * std::log(r) / std::log(top);
  }
};

double round_up_ratio(double ratio) {
  for (double r : {2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0})
    if (ratio <= r) return r;
  return 1e4;
}

}  // namespace

std::string to_dot(const CompiledGraph& compiled, const std::string& title) {
  DotOptions options;
  options.title = title;
  for (const KernelInfo& k : compiled.kernels()) {
    std::string label = k.name + "\n" + k.schedule;
    if (!k.cache_key.empty()) label += "\ncache " + k.cache_key;
    options.clusters.push_back({label, k.ops});
  }
  return to_dot(compiled.graph(), options);
}

std::string tuning_report_svg(const std::vector<KernelInfo>& kernels, const std::string& title) {
  std::vector<const KernelInfo*> rows;
  Axis axis;
  double worst = 1;
  for (const KernelInfo& k : kernels) {
    if (k.candidates.empty()) continue;
    rows.push_back(&k);
    const double best = fastest_ms(k);
    for (const CandidateTime& c : k.candidates)
      if (best > 0) worst = std::max(worst, c.median_ms / best);
  }
  axis.top = round_up_ratio(worst);
  const double row_height = 22, header = 70, width = 1040;
  const double height = header + row_height * static_cast<double>(rows.size()) + 50;

  std::string svg = str_cat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height,
      "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      "<text x=\"10\" y=\"22\" font-size=\"16\">",
      xml_escaped(title.empty() ? "loom tuning report" : title), "</text>\n",
      "<text x=\"10\" y=\"42\" fill=\"#555\">each dot: one candidate config, its median time "
      "relative to the kernel's fastest (log scale); red: the chosen config</text>\n");
  // Grid lines and their labels at round ratios.
  double last_x = -1e9;
  for (double r : {1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0, 1e4}) {
    if (r > axis.top) break;
    if (axis.x(r) - last_x < 30) continue;  // labels of a wide axis would overlap
    last_x = axis.x(r);
    const std::string x = fixed(last_x, 1);
    svg += str_cat("<line class=\"grid\" x1=\"", x, "\" y1=\"", header - 8, "\" x2=\"", x,
                   "\" y2=\"", height - 40, "\" stroke=\"#ddd\"/>\n<text x=\"", x, "\" y=\"",
                   height - 25, "\" text-anchor=\"middle\" fill=\"#555\">", r, "x</text>\n");
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const KernelInfo& k = *rows[i];
    const double y = header + row_height * (static_cast<double>(i) + 0.5);
    const double best = fastest_ms(k);
    svg += str_cat("<g class=\"kernel\">\n<text x=\"10\" y=\"", y + 4, "\">", xml_escaped(k.name),
                   "</text>\n");
    for (const CandidateTime& c : k.candidates) {
      const bool chosen = is_chosen(k, c);
      const double ratio = best > 0 ? c.median_ms / best : 1;
      svg += str_cat("<circle", chosen ? " class=\"chosen\"" : "", " cx=\"",
                     fixed(axis.x(ratio), 1), "\" cy=\"", y, "\" r=\"", chosen ? 5 : 3.5,
                     "\" fill=\"", chosen ? "#d62728" : "#4a7ebb", "\" fill-opacity=\"",
                     chosen ? 1 : 0.5, "\"><title>", xml_escaped(c.config.to_string()), ": ",
                     duration_text(c.median_ms), "</title></circle>\n");
    }
    svg += str_cat("<text x=\"", axis.right + 15, "\" y=\"", y + 4, "\">", "fastest ",
                   duration_text(best), ", ", k.candidates.size(), " candidates</text>\n</g>\n");
  }
  const size_t untimed = kernels.size() - rows.size();
  svg += str_cat("<text x=\"10\" y=\"", height - 8, "\" fill=\"#555\">", rows.size(),
                 " kernels tuned; ", untimed,
                 " not measured (default schedule, TuneLevel::kNone or a forced config)</text>\n");
  return svg + "</svg>\n";
}

}  // namespace loom
