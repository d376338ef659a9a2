// The CPU thread pool and parallel loops in generated kernels: every iteration runs exactly once,
// captured variables and buffers reach the outlined body, and results match serial C++.

#include <catch2/catch.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "loom/ir/func.hpp"
#include "loom/ir/op.hpp"
#include "loom/runtime/cpu_jit.hpp"
#include "loom/runtime/scratch.hpp"
#include "loom/runtime/thread_pool.hpp"
#include "test_util.hpp"

namespace {

using loom::DType;
namespace ir = loom::ir;
namespace runtime = loom::runtime;

// Restores the process-wide thread count when a test changes it.
struct ThreadCountGuard {
  int saved = loom::num_threads();
  ~ThreadCountGuard() { loom::set_num_threads(saved); }
};

std::vector<int> run_counts(int64_t begin, int64_t end) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(end > 0 ? end : 0) + 1);
  // Catch2's assertions are not thread-safe (ThreadSanitizer reports them): workers only count.
  std::atomic<int> bad_ranges{0};
  runtime::ThreadPool::global().parallel_for(begin, end, [&](int64_t lo, int64_t hi) {
    if (!(begin <= lo && lo < hi && hi <= end)) {
      bad_ranges.fetch_add(1);
      return;
    }
    for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  });
  REQUIRE(bad_ranges.load() == 0);
  std::vector<int> out;
  for (auto& h : hits) out.push_back(h.load());
  return out;
}

}  // namespace

TEST_CASE("thread pool: every iteration runs once for any thread count and range",
          "[parallel]") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3, 8}) {
    loom::set_num_threads(threads);
    REQUIRE(loom::num_threads() == threads);
    for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{
             {0, 0}, {0, 1}, {0, 2}, {3, 7}, {0, 31}, {5, 257}, {0, 1000}}) {
      std::vector<int> hits = run_counts(begin, end);
      for (int64_t i = 0; i < static_cast<int64_t>(hits.size()); ++i) {
        INFO("threads " << threads << " range [" << begin << ", " << end << ") index " << i);
        REQUIRE(hits[static_cast<size_t>(i)] == (i >= begin && i < end ? 1 : 0));
      }
    }
  }
}

TEST_CASE("thread pool: a loop's chunks differ in size by at most one iteration", "[parallel]") {
  // 33 iterations on two threads once ran as chunks of 5, 5, 5, 5, 5, 5 and 3: one thread could
  // end with 18 while the other, done at 15, found nothing left to take.
  ThreadCountGuard guard;
  for (int threads : {2, 3, 8}) {
    loom::set_num_threads(threads);
    for (int64_t extent : {7, 33, 100, 257, 1000}) {
      std::mutex mu;
      std::vector<int64_t> sizes;
      runtime::ThreadPool::global().parallel_for(0, extent, [&](int64_t lo, int64_t hi) {
        std::lock_guard<std::mutex> lock(mu);
        sizes.push_back(hi - lo);
      });
      INFO("threads " << threads << ", " << extent << " iterations in " << sizes.size()
                      << " chunks");
      REQUIRE(sizes.size() > 1);
      auto [smallest, largest] = std::minmax_element(sizes.begin(), sizes.end());
      REQUIRE(*largest - *smallest <= 1);
    }
  }
}

TEST_CASE("thread pool: chunks a stalled thread owns are run by the others", "[parallel]") {
  ThreadCountGuard guard;
  for (int threads : {2, 3}) {
    loom::set_num_threads(threads);
    // The first chunk to start waits until every other chunk is done, which the other threads
    // reach only by taking the rest of the stalled thread's own run of chunks.
    constexpr int64_t kIterations = 64;  // as many chunks as the pool makes (a few per thread)
    std::atomic<int64_t> done{0};
    std::atomic<int> chunks{0};
    std::atomic<bool> stalled{false}, rest_done{false};
    runtime::ThreadPool::global().parallel_for(0, kIterations, [&](int64_t lo, int64_t hi) {
      chunks.fetch_add(1);
      if (!stalled.exchange(true)) {
        auto t0 = std::chrono::steady_clock::now();
        while (done.load() != kIterations - (hi - lo) &&
               std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
          std::this_thread::yield();
        rest_done = done.load() == kIterations - (hi - lo);
      }
      done.fetch_add(hi - lo);
    });
    INFO("threads " << threads << ", chunks " << chunks.load() << ", done " << done.load());
    REQUIRE(chunks.load() > threads);  // each thread owned more than the chunk it may stall in
    REQUIRE(rest_done.load());
    REQUIRE(done.load() == kIterations);
  }
}

TEST_CASE("thread pool: a lowered thread count keeps loops to that many threads, a raised one "
          "brings parked threads back",
          "[parallel]") {
  ThreadCountGuard guard;
  for (int threads : {4, 2, 1, 3, 2}) {
    loom::set_num_threads(threads);
    // Loops of chunks long enough that every thread allowed in takes some, until more than one
    // thread has run chunks (or 20 s, far beyond what a woken worker takes).
    std::mutex mu;
    std::set<std::thread::id> ran_on;
    std::atomic<int64_t> done{0};
    int64_t loops = 0;
    const auto t0 = std::chrono::steady_clock::now();
    do {
      runtime::ThreadPool::global().parallel_for(0, 64, [&](int64_t lo, int64_t hi) {
        {
          std::lock_guard<std::mutex> lock(mu);
          ran_on.insert(std::this_thread::get_id());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        done.fetch_add(hi - lo);
      });
      ++loops;
    } while (loops < 3 || (threads > 1 && ran_on.size() < 2 &&
                           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)));
    INFO("threads " << threads << ", loops " << loops);
    REQUIRE(done.load() == loops * 64);
    REQUIRE(static_cast<int>(ran_on.size()) <= threads);
    REQUIRE(static_cast<int>(ran_on.size()) >= std::min(threads, 2));
  }
}

TEST_CASE("thread pool: concurrent and nested loops complete correctly", "[parallel]") {
  ThreadCountGuard guard;
  loom::set_num_threads(3);
  // Several threads start loops at once: one gets the pool, the others run serially.
  std::vector<std::thread> callers;
  std::atomic<int64_t> total{0};
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        runtime::ThreadPool::global().parallel_for(0, 100, [&](int64_t lo, int64_t hi) {
          total.fetch_add(hi - lo);
        });
    });
  for (auto& c : callers) c.join();
  REQUIRE(total.load() == 4 * 50 * 100);

  // A loop inside a loop body runs on its caller.
  std::atomic<int64_t> inner{0};
  runtime::ThreadPool::global().parallel_for(0, 10, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      runtime::ThreadPool::global().parallel_for(0, i + 1, [&](int64_t a, int64_t b) {
        inner.fetch_add(b - a);
      });
  });
  REQUIRE(inner.load() == 55);
}

TEST_CASE("codegen: parallel loops capture variables and buffers, nest, and allocate locally",
          "[parallel][codegen]") {
  ThreadCountGuard guard;
  auto jit_or = runtime::CpuJit::create();
  REQUIRE(jit_or.ok());
  auto& jit = **jit_or;

  // out[r, c] = a[r, c] * scale + sum_k a[r, k]   (rows parallel; row sum in a local buffer)
  // flag[r * cols + c] = (r + c) % 3 with a parallel inner loop nested in a parallel outer one.
  ir::Var rows("rows"), cols("cols"), r("r"), c("c"), k("k"), r2("r2"), c2("c2");
  ir::Buffer a = ir::Buffer::make("a", DType::f32(), {rows * cols});
  ir::Buffer out = ir::Buffer::make("out", DType::f32(), {rows * cols});
  ir::Buffer flag = ir::Buffer::make("flag", DType::i32(), {rows * cols});
  ir::Buffer acc = ir::Buffer::make("acc", DType::f32(), {ir::Expr(1)}, ir::MemoryScope::kLocal);
  ir::Var scale("scale_bits");  // an i64 scalar captured by the body
  ir::Expr fscale = ir::cast(DType::f32(), scale) * 0.5f;
  ir::Stmt row_body = ir::Allocate::make(
      acc, ir::Seq::make({
               ir::Store::make(acc, ir::Expr(0.0f), {ir::Expr(0)}),
               ir::For::make(k, 0, cols, ir::ForKind::kSerial,
                             ir::Store::make(acc, acc(0) + a(r * cols + k), {ir::Expr(0)})),
               ir::For::make(c, 0, cols, ir::ForKind::kSerial,
                             ir::Store::make(out, a(r * cols + c) * fscale + acc(0),
                                             {r * cols + c})),
           }));
  ir::Stmt body = ir::Seq::make({
      ir::For::make(r, 0, rows, ir::ForKind::kParallel, row_body),
      ir::For::make(r2, 0, rows, ir::ForKind::kParallel,
                    ir::For::make(c2, 0, cols, ir::ForKind::kParallel,
                                  ir::Store::make(flag, ir::cast(DType::i32(), (r2 + c2) % 3),
                                                  {r2 * cols + c2}))),
  });
  ir::Func f{"par", {rows, cols, scale, a, out, flag}, body};
  auto kernels = jit.compile(ir::Module{"par", jit.target(), {f}});
  INFO(kernels.status().ToString());
  REQUIRE(kernels.ok());

  for (int threads : {1, 2, 5}) {
    loom::set_num_threads(threads);
    for (auto [nr, nc] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 31}, {257, 3}}) {
      std::vector<float> va(static_cast<size_t>(nr * nc));
      std::uniform_real_distribution<float> dist(-1, 1);
      for (float& x : va) x = dist(loom::testing::rng());
      std::vector<float> vout(va.size(), std::numeric_limits<float>::quiet_NaN());
      std::vector<int32_t> vflag(va.size(), -1);
      void* buffers[] = {va.data(), vout.data(), vflag.data()};
      int64_t scalars[] = {nr, nc, 3};
      (*kernels)[0](buffers, scalars);
      for (int64_t i = 0; i < nr; ++i) {
        float sum = 0;
        for (int64_t j = 0; j < nc; ++j) sum += va[static_cast<size_t>(i * nc + j)];
        for (int64_t j = 0; j < nc; ++j) {
          size_t at = static_cast<size_t>(i * nc + j);
          INFO("threads " << threads << " at " << i << ", " << j);
          REQUIRE(vout[at] == Approx(va[at] * 1.5f + sum).epsilon(1e-6).margin(1e-6));
          REQUIRE(vflag[at] == (i + j) % 3);
        }
      }
    }
  }
}

TEST_CASE("scratch blocks: aligned, writable, reused per thread, freed past the bound",
          "[parallel][scratch]") {
  std::vector<void*> live;
  for (int64_t bytes : {int64_t{1}, int64_t{63}, int64_t{4097}, int64_t{300000}, int64_t{1} << 20}) {
    void* p = loom_scratch_alloc(bytes);
    REQUIRE(p);
    REQUIRE(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    std::memset(p, 0x5a, static_cast<size_t>(bytes));
    live.push_back(p);
  }
  // A freed block serves the next request that fits it on this thread.
  void* big = live[3];
  loom_scratch_free(big);
  void* again = loom_scratch_alloc(299999);
  REQUIRE(again == big);
  live[3] = again;
  for (void* p : live) loom_scratch_free(p);
  loom_scratch_free(nullptr);
  // Blocks over the per-thread bound are returned to the system, and later requests still work.
  void* huge = loom_scratch_alloc(int64_t{100} << 20);
  REQUIRE(huge);
  loom_scratch_free(huge);
  // Each thread has its own cache: allocating and freeing from several threads at once is safe.
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        int64_t bytes = 1000 + 997 * ((i * 7 + t) % 300);
        auto* p = static_cast<unsigned char*>(loom_scratch_alloc(bytes));
        if (!p) { ++bad; continue; }
        std::memset(p, t, static_cast<size_t>(bytes));
        if (p[bytes - 1] != t) ++bad;
        loom_scratch_free(p);
      }
    });
  for (std::thread& th : threads) th.join();
  REQUIRE(bad == 0);
}
