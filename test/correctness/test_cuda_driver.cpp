// The CUDA driver loader: without a driver or GPU it reports that cleanly (no crash, a clear
// status); with a GPU the device's properties are sane and memory, streams and events work.

#include <catch2/catch.hpp>
#include <cstdio>
#include <vector>

#include "loom/runtime/cuda.hpp"

namespace {

namespace cuda = loom::runtime::cuda;

// The driver when a GPU is usable; otherwise prints why and returns nullptr.
cuda::Driver* driver_with_device(const char* test) {
  auto driver = cuda::Driver::get();
  if (!driver.ok()) {
    std::printf("[cuda] %s: no GPU, skipped: %s\n", test, driver.status().ToString().c_str());
    return nullptr;
  }
  auto count = (*driver)->device_count();
  if (!count.ok() || *count == 0) {
    std::printf("[cuda] %s: no CUDA device, skipped\n", test);
    return nullptr;
  }
  return *driver;
}

}  // namespace

TEST_CASE("CUDA driver: a missing driver or device is a clear status, asked twice", "[cuda]") {
  auto first = cuda::Driver::get();
  auto second = cuda::Driver::get();
  REQUIRE(first.ok() == second.ok());
  if (!cuda::built_with_cuda()) {
    REQUIRE(first.status().code() == absl::StatusCode::kUnimplemented);
    REQUIRE_THAT(std::string(first.status().message()), Catch::Contains("built without CUDA"));
    return;
  }
  if (first.ok()) {
    REQUIRE(*first == *second);
    auto version = (*first)->version();
    REQUIRE(version.ok());
    REQUIRE(*version >= 12000);
    return;
  }
  // No libcuda.so.1 at all, or a driver that finds no device (cuInit fails).
  INFO(first.status().ToString());
  REQUIRE(first.status().code() == absl::StatusCode::kUnavailable);
  REQUIRE(first.status() == second.status());
  std::string message(first.status().message());
  bool no_library = message.find("no CUDA driver (libcuda.so.1 not found): ") == 0;
  bool no_device = message.find("CUDA_ERROR") != std::string::npos;
  REQUIRE((no_library || no_device));
  std::printf("[cuda] no usable CUDA driver here (%s); GPU tests skip\n", message.c_str());
}

TEST_CASE("CUDA driver: device properties are sane", "[cuda]") {
  cuda::Driver* driver = driver_with_device("device properties");
  if (!driver) return;
  auto count = driver->device_count();
  REQUIRE(count.ok());
  for (int d = 0; d < *count; ++d) {
    auto p = driver->device_properties(d);
    INFO(p.status().ToString());
    REQUIRE(p.ok());
    std::printf(
        "[cuda] device %d: %s sm_%d, %d SMs, %lld B shared/block (%lld opt-in), "
        "%lld B shared/SM, %d regs/block, %lld MiB\n",
        d, p->name.c_str(), p->sm_arch, p->sm_count,
        static_cast<long long>(p->shared_memory_per_block),
        static_cast<long long>(p->shared_memory_per_block_optin),
        static_cast<long long>(p->shared_memory_per_sm), p->registers_per_block,
        static_cast<long long>(p->total_memory_bytes >> 20));
    CHECK(p->ordinal == d);
    CHECK(!p->name.empty());
    CHECK(p->sm_arch >= 50);
    CHECK(p->sm_count > 0);
    CHECK(p->warp_size == 32);
    CHECK(p->max_threads_per_block >= 1024);
    CHECK(p->shared_memory_per_block >= 48 * 1024);
    CHECK(p->shared_memory_per_block_optin >= p->shared_memory_per_block);
    CHECK(p->shared_memory_per_sm >= p->shared_memory_per_block);
    CHECK(p->registers_per_block >= 32 * 1024);
    CHECK(p->registers_per_sm >= p->registers_per_block);
    CHECK(p->total_memory_bytes > (int64_t{1} << 30));
  }
  auto bad = driver->device_properties(*count);
  REQUIRE(!bad.ok());
}

TEST_CASE("CUDA driver: memory, copies, streams and events", "[cuda]") {
  cuda::Driver* driver = driver_with_device("memory and events");
  if (!driver) return;
  auto context = driver->retain_primary_context(0);
  REQUIRE(context.ok());
  REQUIRE(driver->set_current(*context).ok());
  {
    auto stream = driver->create_stream();
    REQUIRE(stream.ok());
    auto start = driver->create_event();
    auto end = driver->create_event();
    REQUIRE((start.ok() && end.ok()));
    std::vector<float> host(1009), back(1009, -1.0f);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f;
    size_t bytes = host.size() * sizeof(float);
    auto ptr = driver->allocate(bytes);
    REQUIRE(ptr.ok());
    REQUIRE(driver->record_event(*start, *stream).ok());
    REQUIRE(driver->copy_to_device_async(*ptr, host.data(), bytes, *stream).ok());
    REQUIRE(driver->copy_to_host_async(back.data(), *ptr, bytes, *stream).ok());
    REQUIRE(driver->record_event(*end, *stream).ok());
    REQUIRE(driver->synchronize(*stream).ok());
    REQUIRE(back == host);
    auto ms = driver->elapsed_ms(*start, *end);
    REQUIRE(ms.ok());
    CHECK(*ms >= 0.0f);
    std::fill(back.begin(), back.end(), -1.0f);
    REQUIRE(driver->copy_to_device(*ptr, host.data(), bytes).ok());
    REQUIRE(driver->copy_to_host(back.data(), *ptr, bytes).ok());
    REQUIRE(back == host);
    REQUIRE(driver->free(*ptr).ok());
    REQUIRE(driver->destroy_event(*start).ok());
    REQUIRE(driver->destroy_event(*end).ok());
    REQUIRE(driver->destroy_stream(*stream).ok());
    // A bad module image is an error with the driver's error name, not a crash.
    auto module = driver->load_module("not a cubin");
    REQUIRE(!module.ok());
    REQUIRE_THAT(std::string(module.status().message()), Catch::Contains("CUDA_ERROR"));
  }
  REQUIRE(driver->release_primary_context(0).ok());
}
