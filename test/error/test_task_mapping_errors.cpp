// Bad task mappings give a clear absl::Status naming the problem: zero or negative extents, rank
// 0, mismatched ranks, int64 overflow, and worker counts auto_map cannot distribute.

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "loom/schedule/task_mapping.hpp"

namespace {

using loom::schedule::auto_map;
using loom::schedule::MappingKind;
using loom::schedule::repeat;
using loom::schedule::spatial;
using loom::schedule::TaskMapping;

void require_error(const absl::StatusOr<TaskMapping>& m, const std::string& fragment) {
  INFO("status: " << m.status().ToString());
  REQUIRE(!m.ok());
  CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(m.status().message()).find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("task mapping error: extents below 1 and rank 0", "[task_mapping][error]") {
  require_error(spatial(4, 0), "spatial(4, 0) has extent 0 in dim 1; every extent must be >= 1");
  require_error(repeat(-3), "repeat(-3) has extent -3 in dim 0");
  require_error(spatial(1, 7, 0), "extent 0 in dim 2");
  require_error(spatial(std::vector<int64_t>{}), "spatial() needs rank >= 1");
  require_error(repeat(), "repeat() needs rank >= 1");
  require_error(TaskMapping::make({}), "at least one level");
}

TEST_CASE("task mapping error: composing different ranks", "[task_mapping][error]") {
  require_error(spatial(4, 8) * repeat(2),
                "cannot compose task mappings of different ranks: spatial(4, 8) has rank 2, "
                "repeat(2) has rank 1");
  require_error(spatial(3) * repeat(3) * spatial(1, 1, 1), "spatial(1, 1, 1) has rank 3");
  auto a = spatial(2, 2), b = repeat(2, 2, 2);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  require_error(loom::schedule::compose(*a, *b), "different ranks");
  require_error(TaskMapping::make({{MappingKind::kSpatial, {2}}, {MappingKind::kRepeat, {2, 2}}}),
                "different ranks");
}

TEST_CASE("task mapping error: the first error of a composition is kept", "[task_mapping][error]") {
  require_error(spatial(0) * repeat(2), "spatial(0) has extent 0");
  require_error(spatial(2) * repeat(0), "repeat(0) has extent 0");
  require_error(spatial(2) * repeat(0) * spatial(2, 2), "repeat(0) has extent 0");
}

TEST_CASE("task mapping error: more tasks than int64 can count", "[task_mapping][error]") {
  const int64_t big = int64_t{1} << 40;
  require_error(spatial(big) * repeat(big), "more tasks than int64 can count");
  require_error(spatial(big, big), "more tasks than int64 can count");
  // Just below the limit is fine.
  auto fits = spatial(int64_t{1} << 31) * repeat(int64_t{1} << 31);
  REQUIRE(fits.ok());
  CHECK(fits->num_workers() == int64_t{1} << 31);
}

TEST_CASE("task mapping error: auto_map that cannot distribute its workers",
          "[task_mapping][error]") {
  require_error(auto_map({4, 8}, 5),
                "auto_map cannot distribute 5 workers over task shape (4, 8): the worker count "
                "must be a product of one divisor of each extent");
  // More workers than tasks.
  require_error(auto_map({4, 8}, 64), "at most 32 of them fit");
  // Enough tasks, but the extents lack the third factor of 2.
  require_error(auto_map({6, 6}, 8), "at most 4 of them fit");
  require_error(auto_map({31}, 2), "cannot distribute 2 workers over task shape (31)");
  require_error(auto_map({4, 8}, 0), "at least 1 worker, got 0");
  require_error(auto_map({4, 0}, 4), "auto_map task shape (4, 0) has extent 0 in dim 1");
  require_error(auto_map({}, 1), "needs rank >= 1");
}
