// ThreadPool: persistent workers that wait for a parallel loop, run contiguous chunks of its
// iterations (a few per thread: their own run of chunks first, then the others', so that a slower
// core takes fewer), and go back to waiting. Workers spin briefly before sleeping: kernels come
// in bursts.

#include "loom/runtime/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOOM_CPU_RELAX() _mm_pause()
#else
#define LOOM_CPU_RELAX() std::this_thread::yield()
#endif

namespace loom {
namespace runtime {
namespace {

int default_num_threads() {
  if (const char* env = std::getenv("LOOM_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// True on pool workers and on a caller inside parallel_for: nested loops run serially.
thread_local bool in_parallel_region = false;

constexpr int kSpinIterations = 1 << 14;

// Chunks of a loop per thread, claimed in turn: a thread whose core is slower (another guest
// on the core, a lower clock: measured 20% apart on a 2-core VM) takes fewer, where one
// contiguous chunk each would leave the loop waiting for the slowest. GEMM 1024^3 on two
// threads: 11.0 ms at best against 12.6 ms with one chunk each.
constexpr int kChunksPerThread = 4;

}  // namespace

struct ThreadPool::Impl {
  // One parallel loop. Each thread owns a contiguous run of the chunks and claims them in order;
  // a thread whose run is done takes chunks from the others' (the next one each has not begun).
  // In a balanced loop every thread thus runs the same iterations run after run, and finds the
  // data it touched last time still in its own L2; a slower core still takes fewer. Against one
  // shared queue of chunks, interleaved in one process on the 2-core Xeon VM: the 1x1 conv
  // 256->64 at 56x56 on two threads, medians 0.300 against 0.318 ms (8x3 tiles) and 0.314
  // against 0.329 (12x2); GEMM 128x768x3072 at best 1.61 against 1.69 ms, 1024^3 even.
  struct alignas(64) Run {
    std::atomic<int> next{0};
    int end = 0;
  };
  struct Job {
    ParallelBody body = nullptr;
    void* context = nullptr;
    int64_t begin = 0, end = 0;
    int num_chunks = 0;
    int num_runs = 0;
    std::unique_ptr<Run[]> runs;
    std::atomic<int> remaining{0};
    // Where chunk c begins: the iterations split as evenly as whole iterations allow. Chunks of
    // one size with a short last one left a 2-thread loop of 33 iterations (a 1x1 conv's tiles)
    // chunks of 5, 5, 5 | 5, 5, 5, 3: one thread ran 18 while the other, done at 15, found no
    // chunk left to take.
    int64_t chunk_begin(int c) const { return begin + (end - begin) * c / num_chunks; }
  };

  std::mutex run_mu;  // one parallel loop at a time (try_lock: busy means run serially)
  std::mutex mu;      // guards generation/stop for sleeping workers
  std::condition_variable wake;  // loops posted, for active workers
  std::condition_variable park;  // the thread count changed, for workers past it
  std::atomic<uint64_t> generation{0};
  uint64_t resized_at = 0;  // the generation when the count last changed (guarded by mu)
  bool stop = false;
  std::shared_ptr<Job> current;  // the latest job; workers keep their own reference to it
  std::vector<std::thread> workers;
  std::atomic<int> threads{1};

  // Runs chunks of a job until none is left: thread `self`'s own first, then the others'.
  static void work(Job& job, int self) {
    for (int r = 0; r < job.num_runs; ++r) {
      Run& run = job.runs[(self + r) % job.num_runs];
      for (;;) {
        int c = run.next.fetch_add(1, std::memory_order_relaxed);
        if (c >= run.end) break;
        int64_t lo = job.chunk_begin(c), hi = job.chunk_begin(c + 1);
        job.body(lo, hi, job.context);
        job.remaining.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  // Worker `self` takes part in loops while the thread count is above it; past it (after
  // set_num_threads lowered the count) it sleeps until the count rises again. Lowering the count
  // keeps the threads: a new thread (the OS first places it beside its creator) slowed a 2-thread
  // GEMM 512^3 by 6-8% in a benchmark that switched between 1 and 2 threads.
  bool active(int self) const { return self < threads.load(std::memory_order_acquire); }

  // `seen` is the generation when the worker was started: a loop posted before the new thread
  // first runs is still its to join.
  void worker_loop(int self, uint64_t seen) {
    in_parallel_region = true;
    for (;;) {
      if (!active(self)) {  // parked: loops do not wake it, only a count that includes it
        std::unique_lock<std::mutex> lock(mu);
        park.wait(lock, [&] { return stop || active(self); });
        if (stop) return;
        seen = resized_at;  // a loop posted since the count rose is still its to join
      }
      // Spin a little for the next job, then sleep.
      int spins = 0;
      while (active(self) && generation.load(std::memory_order_acquire) == seen &&
             spins < kSpinIterations) {
        LOOM_CPU_RELAX();
        ++spins;
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] {
          return stop || !active(self) || generation.load(std::memory_order_acquire) != seen;
        });
        if (stop) return;
        if (!active(self)) continue;
        seen = generation.load(std::memory_order_acquire);
        job = current;
      }
      work(*job, self);
    }
  }

  // Sets the thread count to n, starting the workers it lacks (under run_mu).
  void resize(int n) {
    uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      threads.store(n, std::memory_order_release);
      seen = resized_at = generation.load(std::memory_order_acquire);
    }
    wake.notify_all();  // workers the count no longer includes go to park
    park.notify_all();  // parked workers it includes again come back
    for (int i = static_cast<int>(workers.size()) + 1; i < n; ++i)
      workers.emplace_back([this, i, seen] { worker_loop(i, seen); });
  }
  // Stops and joins every worker (the pool's destructor).
  void join_all() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    wake.notify_all();
    park.notify_all();
    for (std::thread& t : workers) t.join();
    workers.clear();
  }
};

ThreadPool& ThreadPool::global() {
  // Never destroyed: kernels may run from static destructors of an engine.
  static ThreadPool* pool = new ThreadPool();
  return *pool;
}

ThreadPool::ThreadPool() : impl_(std::make_unique<Impl>()) { impl_->resize(default_num_threads()); }

ThreadPool::~ThreadPool() { impl_->join_all(); }

int ThreadPool::num_threads() const { return impl_->threads.load(); }

void ThreadPool::set_num_threads(int n) {
  n = std::max(1, n);
  std::lock_guard<std::mutex> lock(impl_->run_mu);
  if (n != impl_->threads.load()) impl_->resize(n);
}

void ThreadPool::parallel_for(int64_t begin, int64_t end, ParallelBody body, void* context) {
  if (end <= begin) return;
  Impl& p = *impl_;
  int64_t extent = end - begin;
  if (in_parallel_region || p.threads.load(std::memory_order_relaxed) == 1 || extent == 1 ||
      !p.run_mu.try_lock()) {
    body(begin, end, context);
    return;
  }
  std::lock_guard<std::mutex> lock(p.run_mu, std::adopt_lock);
  int n = static_cast<int>(std::min<int64_t>(p.threads.load(), extent));
  auto shared = std::make_shared<Impl::Job>();
  Impl::Job& job = *shared;
  job.body = body;
  job.context = context;
  job.begin = begin;
  job.end = end;
  job.num_chunks = static_cast<int>(std::min<int64_t>(extent, int64_t{n} * kChunksPerThread));
  job.num_runs = std::min(n, job.num_chunks);
  job.runs = std::make_unique<Impl::Run[]>(static_cast<size_t>(job.num_runs));
  for (int r = 0; r < job.num_runs; ++r) {
    job.runs[r].next.store(static_cast<int>(int64_t{job.num_chunks} * r / job.num_runs),
                           std::memory_order_relaxed);
    job.runs[r].end = static_cast<int>(int64_t{job.num_chunks} * (r + 1) / job.num_runs);
  }
  job.remaining.store(job.num_chunks, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> wake_lock(p.mu);
    p.current = shared;
    p.generation.fetch_add(1, std::memory_order_acq_rel);
  }
  p.wake.notify_all();
  in_parallel_region = true;
  Impl::work(job, 0);
  in_parallel_region = false;
  // Wait for the other chunks: spin first, then yield so that an oversubscribed machine still
  // lets the workers run.
  for (int spins = 0; job.remaining.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kSpinIterations)
      LOOM_CPU_RELAX();
    else
      std::this_thread::yield();
  }
}

void on_threads(size_t count, size_t threads, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < count;) work(i);
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < std::min(threads, count); ++t) helpers.emplace_back(worker);
  worker();
  for (std::thread& t : helpers) t.join();
}

void ThreadPool::parallel_for(int64_t begin, int64_t end,
                              const std::function<void(int64_t, int64_t)>& body) {
  auto trampoline = [](int64_t lo, int64_t hi, void* ctx) {
    (*static_cast<const std::function<void(int64_t, int64_t)>*>(ctx))(lo, hi);
  };
  parallel_for(begin, end, trampoline,
               const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace runtime

int num_threads() { return runtime::ThreadPool::global().num_threads(); }
void set_num_threads(int n) { runtime::ThreadPool::global().set_num_threads(n); }

}  // namespace loom

extern "C" void loom_parallel_for(loom::runtime::ParallelBody body, void* context, int64_t begin,
                                  int64_t end) {
  loom::runtime::ThreadPool::global().parallel_for(begin, end, body, context);
}
