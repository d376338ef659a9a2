// Target descriptions and fingerprints. Host detection lives in lib/runtime/cpu_jit.cpp, one of
// the few translation units allowed to include LLVM.

#include "loom/core/target.hpp"

#include <algorithm>

namespace loom {

Target Target::cpu(std::string triple, std::string cpu_name, std::vector<std::string> features) {
  Target t;
  t.kind_ = Kind::kCpu;
  t.triple_ = std::move(triple);
  t.cpu_name_ = std::move(cpu_name);
  std::sort(features.begin(), features.end());
  t.features_ = std::move(features);
  return t;
}

Target Target::cuda(int sm_arch, int device) {
  Target t;
  t.kind_ = Kind::kCuda;
  t.triple_ = "nvptx64-nvidia-cuda";
  t.cpu_name_ = "sm_" + std::to_string(sm_arch);
  t.sm_arch_ = sm_arch;
  t.device_ = device;
  return t;
}

bool Target::has_feature(const std::string& f) const {
  return std::binary_search(features_.begin(), features_.end(), f);
}

int Target::vector_bits() const {
  if (!is_cpu()) return 0;
  if (has_feature("avx512f")) return 512;
  if (has_feature("avx")) return 256;
  return 128;
}

int Target::vector_registers() const { return has_feature("avx512f") ? 32 : 16; }

Target& Target::set_caches(int64_t l1d_bytes, int64_t l2_bytes, int cores) {
  if (l1d_bytes > 0) l1d_bytes_ = l1d_bytes;
  if (l2_bytes > 0) l2_bytes_ = l2_bytes;
  if (cores > 0) cores_ = cores;
  return *this;
}

Target& Target::set_sm_count(int sm_count) {
  if (sm_count > 0) sm_count_ = sm_count;
  return *this;
}

std::string Target::fingerprint() const {
  if (is_cuda())
    return "cuda:sm_" + std::to_string(sm_arch_) +
           (sm_count_ > 0 ? ":sms=" + std::to_string(sm_count_) : std::string());
  std::string s = "cpu:" + triple_ + ":" + cpu_name_ + ":";
  for (size_t i = 0; i < features_.size(); ++i) s += (i ? ",+" : "+") + features_[i];
  return s;
}

std::string Target::to_string() const {
  if (is_cuda())
    return "cuda sm_" + std::to_string(sm_arch_) + " (device " + std::to_string(device_) +
           (sm_count_ > 0 ? ", " + std::to_string(sm_count_) + " SMs assumed" : std::string()) +
           ")";
  return "cpu " + cpu_name_ + " (" + triple_ + ", " + std::to_string(vector_bits()) + "-bit vectors)";
}

}  // namespace loom
