// Tuning progress on stderr: on a terminal one line that updates as kernels finish (kernels done
// / total, elapsed seconds, the best time of the last kernel tuned); otherwise one summary line
// at the end. Silent when nothing was measured.
#pragma once

#include <chrono>
#include <string>

namespace loom::tune {

class Progress {
 public:
  // total: the kernels this compile schedules with templates. Disabled: prints nothing.
  Progress(int total, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // One templated kernel is ready. measured: it was tuned now (not from the cache or a forced
  // config); best_ms: the fastest candidate's median time.
  void kernel_done(const std::string& kernel, bool measured, double best_ms);

 private:
  double elapsed() const;

  int total_, done_ = 0, measured_ = 0;
  bool enabled_, terminal_;
  bool line_open_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loom::tune
