// Error handling: absl::Status at API boundaries, LOOM_CHECK for internal invariants.
// Bad user input never aborts; a broken invariant of loom itself does, naming the invariant.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

// Builds a message from streamable parts: str_cat("shape ", 3, " != ", 4).
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

namespace internal {
[[noreturn]] inline void check_failed(const char* file, int line, const char* cond,
                                      const std::string& msg) {
  std::fprintf(stderr, "loom internal invariant broken at %s:%d: %s %s\n", file, line, cond,
               msg.c_str());
  std::abort();
}
}  // namespace internal

}  // namespace loom

// Internal invariant: aborts with the condition and a message. Never used on user input.
#define LOOM_CHECK(cond, ...)                                                      \
  do {                                                                             \
    if (!(cond)) ::loom::internal::check_failed(__FILE__, __LINE__, #cond,         \
                                                ::loom::str_cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)

#define LOOM_STATUS_CONCAT_INNER(a, b) a##b
#define LOOM_STATUS_CONCAT(a, b) LOOM_STATUS_CONCAT_INNER(a, b)

#define LOOM_RETURN_IF_ERROR(expr)             \
  do {                                         \
    ::absl::Status loom_status_ = (expr);      \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

#define LOOM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define LOOM_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_ASSIGN_OR_RETURN_IMPL(LOOM_STATUS_CONCAT(loom_statusor_, __LINE__), lhs, expr)
