#include "tune/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace loom::tune {

Progress::Progress(int total, bool enabled)
    : total_(total),
      enabled_(enabled && total > 0),
      terminal_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::kernel_done(const std::string& kernel, bool measured, double best_ms) {
  ++done_;
  if (measured) ++measured_;
  if (!enabled_ || !terminal_ || measured_ == 0) return;
  // \r and erase-line: the same line shows the latest state.
  std::fprintf(stderr, "\r\033[Kloom: tuning %d/%d kernels, %.1f s", done_, total_, elapsed());
  if (measured) std::fprintf(stderr, ", %s best %.3f ms", kernel.c_str(), best_ms);
  std::fflush(stderr);
  line_open_ = true;
}

Progress::~Progress() {
  if (!enabled_ || measured_ == 0) return;
  if (terminal_ && line_open_) std::fprintf(stderr, "\n");
  std::fprintf(stderr, "loom: %d kernels ready in %.1f s: %d tuned, %d from the cache\n", done_,
               elapsed(), measured_, done_ - measured_);
}

}  // namespace loom::tune
