// Where kernels run: the host CPU (name and ISA features detected through LLVM) or a CUDA GPU.
// A Target also yields a fingerprint string that identifies the hardware for caches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

class Target {
 public:
  enum class Kind { kCpu, kCuda };

  // The machine this process runs on, detected once through LLVM (cpu name, features).
  static Target host_cpu();
  // A CPU described explicitly (for cross-compiling tests and reproducible dumps).
  static Target cpu(std::string triple, std::string cpu_name, std::vector<std::string> features);
  // An NVIDIA GPU of compute capability sm_<sm_arch> (for example 90 for H100).
  static Target cuda(int sm_arch, int device = 0);

  Kind kind() const { return kind_; }
  bool is_cpu() const { return kind_ == Kind::kCpu; }
  bool is_cuda() const { return kind_ == Kind::kCuda; }

  const std::string& triple() const { return triple_; }
  const std::string& cpu_name() const { return cpu_name_; }
  // LLVM feature names without sign, only enabled ones: "avx2", "fma", "avx512f", ...
  const std::vector<std::string>& features() const { return features_; }
  bool has_feature(const std::string& f) const;
  // Widest native float vector in bits: 512 with AVX-512, 256 with AVX, else 128.
  int vector_bits() const;
  // f32 lanes of the widest native vector.
  int vector_lanes_f32() const { return vector_bits() / 32; }
  // Architectural vector registers: 32 with AVX-512, else 16.
  int vector_registers() const;
  // Per-core data cache sizes and core count, which size the schedule spaces. The host's are read
  // from the OS; an explicit cpu() target gets typical values (32 KiB, 512 KiB, 1 core) until
  // set_caches() says otherwise.
  int64_t l1d_bytes() const { return l1d_bytes_; }
  int64_t l2_bytes() const { return l2_bytes_; }
  int cores() const { return cores_; }
  Target& set_caches(int64_t l1d_bytes, int64_t l2_bytes, int cores);

  int sm_arch() const { return sm_arch_; }
  int device() const { return device_; }
  // The number of SMs a CUDA target's schedule spaces assume: the device's when it is present
  // and of the target's arch, else the arch's typical count (132 for sm_90), unless
  // set_sm_count() says otherwise (another part, such as a 114-SM H100 PCIe compiled for
  // without it, or a test); 0 when not set. A set count is part of the fingerprint.
  int sm_count() const { return sm_count_; }
  Target& set_sm_count(int sm_count);

  // Stable text identifying the hardware: "cpu:x86_64-pc-linux-gnu:znver3:+avx2,+fma,..." or
  // "cuda:sm_90" ("cuda:sm_90:sms=114" with a set SM count).
  std::string fingerprint() const;
  std::string to_string() const;

 private:
  Kind kind_ = Kind::kCpu;
  std::string triple_;
  std::string cpu_name_;
  std::vector<std::string> features_;
  int sm_arch_ = 0;
  int device_ = 0;
  int sm_count_ = 0;
  int64_t l1d_bytes_ = 32 * 1024;
  int64_t l2_bytes_ = 512 * 1024;
  int cores_ = 1;
};

}  // namespace loom
