// NVRTC: CUDA C++ source -> cubin for one exact sm arch, with the PTX kept for readers.
// libnvrtc is opened with dlopen rather than linked: a GPU test binary then needs only the driver
// and libnvrtc beside it (found through its RUNPATH), and loom itself loads without either.

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/runtime/stats.hpp"

#ifndef LOOM_HAVE_NVRTC
#define LOOM_HAVE_NVRTC 0
#endif
#if LOOM_HAVE_NVRTC
// Only for the types and signatures (decltype); libnvrtc is not linked.
#include <nvrtc.h>
#endif

namespace loom::runtime::cuda {

#if LOOM_HAVE_NVRTC

namespace {

struct Nvrtc {
  void* library = nullptr;
  decltype(&::nvrtcGetErrorString) get_error_string = nullptr;
  decltype(&::nvrtcVersion) version = nullptr;
  decltype(&::nvrtcCreateProgram) create_program = nullptr;
  decltype(&::nvrtcDestroyProgram) destroy_program = nullptr;
  decltype(&::nvrtcCompileProgram) compile_program = nullptr;
  decltype(&::nvrtcGetProgramLogSize) get_log_size = nullptr;
  decltype(&::nvrtcGetProgramLog) get_log = nullptr;
  decltype(&::nvrtcGetPTXSize) get_ptx_size = nullptr;
  decltype(&::nvrtcGetPTX) get_ptx = nullptr;
  decltype(&::nvrtcGetCUBINSize) get_cubin_size = nullptr;
  decltype(&::nvrtcGetCUBIN) get_cubin = nullptr;

  absl::Status check(nvrtcResult r, const char* call) const {
    if (r == NVRTC_SUCCESS) return absl::OkStatus();
    return absl::InternalError(str_cat(get_error_string(r), " in ", call));
  }
};

// Where libnvrtc is looked for, in order: $LOOM_NVRTC_LIBRARY, the soname (the executable's
// RUNPATH, LD_LIBRARY_PATH, the system), then the toolkit found when loom was configured.
std::vector<std::string> nvrtc_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("LOOM_NVRTC_LIBRARY"); env && *env) out.push_back(env);
#ifdef LOOM_NVRTC_SONAME
  out.push_back(LOOM_NVRTC_SONAME);
#endif
  out.push_back("libnvrtc.so");
#ifdef LOOM_NVRTC_LIBRARY_DIR
#ifdef LOOM_NVRTC_SONAME
  out.push_back(std::string(LOOM_NVRTC_LIBRARY_DIR) + "/" + LOOM_NVRTC_SONAME);
#endif
#endif
  return out;
}

absl::StatusOr<const Nvrtc*> load_nvrtc() {
  static absl::StatusOr<const Nvrtc*>* loaded = [] {
    auto* api = new Nvrtc;
    std::string errors;
    for (const std::string& name : nvrtc_candidates()) {
      api->library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (api->library) break;
      const char* err = dlerror();
      errors += str_cat("\n  ", err ? err : name);
    }
    if (!api->library)
      return new absl::StatusOr<const Nvrtc*>(absl::UnavailableError(
          str_cat("NVRTC not found (set LOOM_NVRTC_LIBRARY to libnvrtc's path):", errors)));
    bool ok = true;
    auto resolve = [&](const char* symbol, auto& slot) {
      void* fn = dlsym(api->library, symbol);
      if (!fn) ok = false;
      slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(fn);
    };
    resolve("nvrtcGetErrorString", api->get_error_string);
    resolve("nvrtcVersion", api->version);
    resolve("nvrtcCreateProgram", api->create_program);
    resolve("nvrtcDestroyProgram", api->destroy_program);
    resolve("nvrtcCompileProgram", api->compile_program);
    resolve("nvrtcGetProgramLogSize", api->get_log_size);
    resolve("nvrtcGetProgramLog", api->get_log);
    resolve("nvrtcGetPTXSize", api->get_ptx_size);
    resolve("nvrtcGetPTX", api->get_ptx);
    resolve("nvrtcGetCUBINSize", api->get_cubin_size);
    resolve("nvrtcGetCUBIN", api->get_cubin);
    if (!ok)
      return new absl::StatusOr<const Nvrtc*>(
          absl::UnavailableError("the NVRTC library found lacks an entry point loom needs "
                                 "(nvrtcGetCUBIN needs CUDA 11.1+)"));
    return new absl::StatusOr<const Nvrtc*>(api);
  }();
  return *loaded;
}

// The toolkit's include directory (cuda_fp16.h, cuda_bf16.h): $LOOM_CUDA_INCLUDE_DIR, else the
// one found when loom was configured, when it exists on this machine.
std::string cuda_include_dir() {
  if (const char* env = std::getenv("LOOM_CUDA_INCLUDE_DIR"); env && *env) return env;
#ifdef LOOM_CUDA_INCLUDE_DIR
  if (access(LOOM_CUDA_INCLUDE_DIR "/cuda_fp16.h", R_OK) == 0) return LOOM_CUDA_INCLUDE_DIR;
#endif
  return "";
}

// Frees the program on every path out of compile_cuda_source.
class Program {
 public:
  Program(const Nvrtc& api, nvrtcProgram p) : api_(api), p_(p) {}
  ~Program() { api_.destroy_program(&p_); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  nvrtcProgram get() const { return p_; }

 private:
  const Nvrtc& api_;
  nvrtcProgram p_;
};

}  // namespace

absl::StatusOr<std::string> nvrtc_version() {
  LOOM_ASSIGN_OR_RETURN(const Nvrtc* api, load_nvrtc());
  int major = 0, minor = 0;
  LOOM_RETURN_IF_ERROR(api->check(api->version(&major, &minor), "nvrtcVersion"));
  return str_cat("NVRTC ", major, ".", minor);
}

absl::StatusOr<NvrtcOutput> compile_cuda_source(const std::string& source, int sm_arch,
                                                const std::string& program_name) {
  if (sm_arch < 50 || sm_arch > 199)
    return absl::InvalidArgumentError(
        str_cat("sm arch ", sm_arch, " is not a CUDA compute capability (expected e.g. 80, 90)"));
  LOOM_ASSIGN_OR_RETURN(const Nvrtc* api, load_nvrtc());

  // sm_90 compiles for sm_90a: the same devices, plus the arch-specific warpgroup instructions
  // (wgmma) the Hopper templates use.
  std::vector<std::string> options = {str_cat("-arch=sm_", sm_arch, sm_arch == 90 ? "a" : ""),
                                      "--std=c++17", "-default-device"};
  if (std::string include = cuda_include_dir(); !include.empty()) options.push_back("-I" + include);
  // Under LOOM_DUMP_IR, ptxas also reports each kernel's registers, spills and shared memory in
  // the log (which the dump keeps); an NVRTC that does not know the option compiles without it.
  const bool verbose = dump_enabled();
  if (verbose) options.push_back("--ptxas-options=-v");
  std::optional<Program> program;
  auto compile = [&]() -> absl::StatusOr<nvrtcResult> {
    program.reset();
    nvrtcProgram raw = nullptr;
    LOOM_RETURN_IF_ERROR(api->check(
        api->create_program(&raw, source.c_str(), program_name.c_str(), 0, nullptr, nullptr),
        "nvrtcCreateProgram"));
    program.emplace(*api, raw);
    std::vector<const char*> option_ptrs;
    for (const std::string& o : options) option_ptrs.push_back(o.c_str());
    count(Counter::kNvrtcCompiles);
    return api->compile_program(program->get(), static_cast<int>(option_ptrs.size()),
                                option_ptrs.data());
  };
  LOOM_ASSIGN_OR_RETURN(nvrtcResult compiled, compile());
  if (verbose && compiled == NVRTC_ERROR_INVALID_OPTION) {
    options.pop_back();
    LOOM_ASSIGN_OR_RETURN(compiled, compile());
  }

  NvrtcOutput out;
  size_t log_size = 0;
  LOOM_RETURN_IF_ERROR(
      api->check(api->get_log_size(program->get(), &log_size), "nvrtcGetProgramLogSize"));
  if (log_size > 1) {
    out.log.resize(log_size);
    LOOM_RETURN_IF_ERROR(
        api->check(api->get_log(program->get(), out.log.data()), "nvrtcGetProgramLog"));
    out.log.resize(log_size - 1);  // the terminating NUL
  }
  if (compiled != NVRTC_SUCCESS) {
    std::string options_text;
    for (const std::string& o : options) options_text += " " + o;
    return absl::InvalidArgumentError(str_cat("NVRTC failed to compile '", program_name, "' (",
                                              api->get_error_string(compiled), ", options",
                                              options_text, "):\n", out.log));
  }

  size_t cubin_size = 0;
  LOOM_RETURN_IF_ERROR(
      api->check(api->get_cubin_size(program->get(), &cubin_size), "nvrtcGetCUBINSize"));
  out.cubin.resize(cubin_size);
  if (cubin_size > 0)
    LOOM_RETURN_IF_ERROR(
        api->check(api->get_cubin(program->get(), out.cubin.data()), "nvrtcGetCUBIN"));
  size_t ptx_size = 0;
  // For a real sm arch the PTX is an intermediate NVRTC still returns; readers want it.
  if (api->get_ptx_size(program->get(), &ptx_size) == NVRTC_SUCCESS && ptx_size > 1) {
    out.ptx.resize(ptx_size);
    LOOM_RETURN_IF_ERROR(api->check(api->get_ptx(program->get(), out.ptx.data()), "nvrtcGetPTX"));
    out.ptx.resize(ptx_size - 1);
  }
  if (out.cubin.empty())
    return absl::InternalError(str_cat("NVRTC produced no cubin for sm_", sm_arch));
  return out;
}

#else  // !LOOM_HAVE_NVRTC

absl::StatusOr<std::string> nvrtc_version() {
  return absl::UnimplementedError(
      "loom was built without CUDA (the CUDA toolkit was not found when it was configured)");
}

absl::StatusOr<NvrtcOutput> compile_cuda_source(const std::string&, int, const std::string&) {
  return absl::UnimplementedError(
      "loom was built without CUDA (the CUDA toolkit was not found when it was configured); "
      "NVRTC is not available");
}

#endif  // LOOM_HAVE_NVRTC

}  // namespace loom::runtime::cuda
