// ThreadPool: the persistent worker threads that run the iterations of parallel loops in CPU
// kernels. One process-wide pool; the engine sets its size (LOOM_NUM_THREADS is the default).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace loom {

// Threads used by parallel loops of CPU kernels, the calling thread included. Defaults to
// $LOOM_NUM_THREADS, else the number of hardware threads.
int num_threads();
// Sets the thread count (n >= 1; larger than the hardware's is allowed). Takes effect for the
// next parallel loop; safe to call while kernels run on other threads. Lowering the count keeps
// the threads past it, asleep, for when it rises again.
void set_num_threads(int n);

namespace runtime {

// Runs work(i) for every i in [0, count) on up to `threads` threads of its own (the caller one
// of them), each taking the next i in turn; returns when all are done. For host work that runs
// apart from the kernels' pool and may take it meanwhile: compiles of tuning candidates, NVRTC.
void on_threads(size_t count, size_t threads, const std::function<void(size_t)>& work);

// The body of a parallel loop: runs iterations [begin, end) with the captured context.
using ParallelBody = void (*)(int64_t begin, int64_t end, void* context);

class ThreadPool {
 public:
  static ThreadPool& global();

  int num_threads() const;
  void set_num_threads(int n);

  // Runs body over [begin, end) split into contiguous chunks, a few per thread. Each thread owns
  // a contiguous run of them (the caller the first) and, done with its own, takes the next
  // chunks of the others'. Returns when every chunk is done. A loop started
  // while the pool is busy (from another thread, or nested inside a parallel loop) runs serially
  // on its caller: correct, never blocked.
  void parallel_for(int64_t begin, int64_t end, ParallelBody body, void* context);
  // The same for C++ callables (tests, host-side work).
  void parallel_for(int64_t begin, int64_t end, const std::function<void(int64_t, int64_t)>& body);

  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  ThreadPool();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace runtime
}  // namespace loom

// The entry point generated CPU kernels call for a parallel loop (C linkage, resolved by the JIT).
extern "C" void loom_parallel_for(loom::runtime::ParallelBody body, void* context, int64_t begin,
                                  int64_t end);
