// A module loom generated for a CUDA target, run in the CUDA emulator (cuda_emulator.hpp) the way
// loom's runtime launches it on a GPU.
#pragma once

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "cuda_emulator.hpp"
#include "loom/ir/func.hpp"
#include "loom/runtime/cuda.hpp"
#include "loom/te/evaluate.hpp"
#include "loom/tune/tuner.hpp"
#include "test_util.hpp"

namespace loom::testing {

// Whether the host compiler the emulator needs is here (it is where loom was built; a test
// binary carried to another machine may have none), saying so when not.
inline bool have_host_compiler(const std::string& cxx) {
  if (std::filesystem::exists(cxx)) return true;
  std::printf("[cuda] no host compiler %s here: kernels not emulated\n", cxx.c_str());
  return false;
}

// A module loom generated for a CUDA target, emulated: each func runs as loom's runtime launches
// it (its launch shape for the scalars, its params in order).
class EmulatedModule {
 public:
  static absl::StatusOr<std::unique_ptr<EmulatedModule>> compile(const ir::Module& m,
                                                                 const std::string& cxx) {
    auto e = std::unique_ptr<EmulatedModule>(new EmulatedModule);
    e->module_ = &m;
    absl::StatusOr<std::string> source = runtime::cuda::emit_cuda_source(m, &e->kernels_);
    if (!source.ok()) return source.status();
    std::string error;
    e->emulator_ = CudaEmulator::compile(*source, cxx, &error);
    if (!e->emulator_) return absl::InternalError(error);
    return e;
  }

  // Runs func k: buffers (host addresses) in Func::buffer_params() order, scalars in
  // Func::scalar_params() order.
  absl::Status run(size_t k, const std::vector<const void*>& buffers,
                   const std::vector<int64_t>& scalars) {
    const ir::Func& f = module_->funcs[k];
    absl::StatusOr<std::pair<runtime::cuda::Dim3, runtime::cuda::Dim3>> shape =
        runtime::cuda::launch_shape(f, kernels_[k], scalars);
    if (!shape.ok()) return shape.status();
    std::vector<uint64_t> args;
    size_t b = 0, s = 0;
    for (const ir::Param& p : f.params) {
      if (std::holds_alternative<ir::Buffer>(p)) {
        if (b == buffers.size()) return absl::InvalidArgumentError("too few buffers");
        args.push_back(reinterpret_cast<uint64_t>(buffers[b++]));
      } else {
        if (s == scalars.size()) return absl::InvalidArgumentError("too few scalars");
        args.push_back(static_cast<uint64_t>(scalars[s++]));
      }
    }
    // Then the tensor maps (runtime::cuda::TensorMapInfo), each passed as its address.
    std::vector<runtime::cuda::TensorMap> maps(kernels_[k].tensor_maps.size());
    for (size_t i = 0; i < maps.size(); ++i) {
      const runtime::cuda::TensorMapInfo& info = kernels_[k].tensor_maps[i];
      if (info.buffer >= buffers.size()) return absl::InvalidArgumentError("too few buffers");
      absl::StatusOr<runtime::cuda::TensorMapShape> m =
          runtime::cuda::tensor_map_shape(f, info, scalars);
      if (!m.ok()) return m.status();
      emulator_detail::encode_emulated_tensor_map(maps[i].bytes.data(), buffers[info.buffer],
                                                  m->rank, static_cast<uint32_t>(m->element_bytes),
                                                  m->dims.data(), m->strides.data(),
                                                  m->box.data(), static_cast<uint32_t>(m->swizzle));
      args.push_back(reinterpret_cast<uint64_t>(maps[i].bytes.data()));
    }
    const auto& [grid, block] = *shape;
    std::string error = emulator_->launch(kernels_[k].symbol, {grid.x, grid.y, grid.z},
                                          {block.x, block.y, block.z}, args);
    return error.empty() ? absl::OkStatus() : absl::InternalError(error);
  }

 private:
  EmulatedModule() = default;
  const ir::Module* module_ = nullptr;
  std::vector<runtime::cuda::KernelInfo> kernels_;
  std::unique_ptr<CudaEmulator> emulator_;
};

// m compiled for the emulator with the host compiler loom was built with (LOOM_TEST_CXX); null,
// after saying so, where that compiler is missing.
inline std::unique_ptr<EmulatedModule> emulated_or_null(const ir::Module& m) {
  if (!have_host_compiler(LOOM_TEST_CXX)) return nullptr;
  absl::StatusOr<std::unique_ptr<EmulatedModule>> emulated = EmulatedModule::compile(m, LOOM_TEST_CXX);
  INFO(emulated.status().ToString());
  REQUIRE(emulated.ok());
  return *std::move(emulated);
}

// Runs func k of an emulated module on inputs (then its outputs, poisoned) with scalars, and
// compares the outputs with the te task's reference values.
inline void check_emulated(EmulatedModule& module, size_t k, const te::Task& task,
                           const std::vector<NDArray>& inputs, const std::vector<int64_t>& scalars,
                           double rtol, double atol) {
  INFO("kernel " << task.name() << " (emulated)");
  absl::StatusOr<std::vector<NDArray>> expected = te::evaluate(task, inputs);
  REQUIRE(expected.ok());
  std::vector<const void*> buffers;
  for (const NDArray& in : inputs) buffers.push_back(in.data());
  std::vector<NDArray> outputs;
  for (const NDArray& e : *expected) {
    outputs.emplace_back(e.dtype(), e.shape());
    outputs.back().poison();
    buffers.push_back(outputs.back().data());
  }
  absl::Status run = module.run(k, buffers, scalars);
  INFO(run.ToString());
  REQUIRE(run.ok());
  for (size_t o = 0; o < outputs.size(); ++o) {
    require_close(outputs[o], (*expected)[o], rtol, atol);
    // The tuner's check of a candidate against the reference candidate takes a correct kernel's
    // output against the exact one too (its tolerance is not so tight that it would refuse one).
    absl::Status agree = tune::outputs_agree((*expected)[o], outputs[o]);
    INFO(agree.ToString());
    CHECK(agree.ok());
  }
}

}  // namespace loom::testing
