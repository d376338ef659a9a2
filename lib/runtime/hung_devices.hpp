// Kernels that never finish (private to lib/): waiting for the device with a time limit, and the
// devices on which something hung, which every later tuning and run there fails on at once
// rather than queue behind it.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/core/status.hpp"
#include "loom/runtime/cuda.hpp"

namespace loom::runtime::cuda {

// Whether the work recorded before `event` finished within `timeout_s` seconds, polling (never
// blocking in the driver, where a hung kernel would hold the caller for good): false when the
// time ran out; the error of a kernel that failed.
absl::StatusOr<bool> finished_within(Driver& driver, Event event, double timeout_s);

// The devices on which a kernel hung: an event recorded after it, and the error that named it.
// A kernel that never finishes holds up everything queued after it on the device, so every later
// tuning or run there fails at once with that error, until the event completes (a fresh device).
// The events are never recorded again or destroyed: destroying one would wait for the kernel.
class HungDevices {
 public:
  static HungDevices& global() {
    static HungDevices* h = new HungDevices;  // never destroyed: events outlive exit
    return *h;
  }
  void add(int device, Event after, absl::Status error) {
    std::lock_guard<std::mutex> lock(mu_);
    hung_[device] = {after, std::move(error)};
    any_.store(true, std::memory_order_release);
  }
  // OK where nothing hung on `device`, or what hung there has since finished; else the error
  // that named it.
  absl::Status check(int device, Driver& driver) {
    // Every run asks: without a lock while nothing ever hung (runs of many graphs at once).
    if (!any_.load(std::memory_order_acquire)) return absl::OkStatus();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = hung_.find(device);
    if (it == hung_.end()) return absl::OkStatus();
    absl::StatusOr<bool> done = driver.event_done(it->second.after);
    if (done.ok() && !*done)
      return absl::Status(
          it->second.error.code(),
          str_cat("the device still runs a kernel that hung: ", it->second.error.message()));
    hung_.erase(it);
    if (hung_.empty()) any_.store(false, std::memory_order_release);
    return absl::OkStatus();
  }

 private:
  struct Hung {
    Event after;
    absl::Status error;
  };
  std::mutex mu_;
  std::map<int, Hung> hung_;
  std::atomic<bool> any_{false};  // hung_ is not empty
};

}  // namespace loom::runtime::cuda
