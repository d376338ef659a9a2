// Compiling loop-IR modules for a CUDA GPU (emit_cuda + NVRTC) and launching their kernels with
// loom's calling convention: the func's params in order, buffers as device pointers, scalars i64.

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "codegen/emit_cuda.hpp"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/ir/op.hpp"
#include "loom/ir/printer.hpp"
#include "loom/ir/simplify.hpp"
#include "loom/ir/visitor.hpp"
#include "loom/runtime/compiled_graph.hpp"
#include "loom/runtime/cuda.hpp"

namespace loom::runtime::cuda {
namespace {

// Replaces variables by constants.
class SubstituteVars : public ir::IRMutator {
 public:
  explicit SubstituteVars(std::map<const ir::VarNode*, int64_t> values)
      : values_(std::move(values)) {}
  using ir::IRMutator::mutate;

 protected:
  ir::Expr mutate_var(const ir::VarNode* op, const ir::Expr& e) override {
    auto it = values_.find(op);
    return it == values_.end() ? e : ir::IntImm::make(op->type, it->second);
  }

 private:
  std::map<const ir::VarNode*, int64_t> values_;
};

// The substitution of a func's scalar params by their values for a launch (in
// Func::scalar_params order); an error when the count differs.
absl::StatusOr<SubstituteVars> scalar_values(const ir::Func& f, const std::string& kernel,
                                             const std::vector<int64_t>& scalars) {
  std::vector<ir::Var> params = f.scalar_params();
  if (params.size() != scalars.size())
    return absl::InvalidArgumentError(str_cat("kernel '", kernel, "' takes ", params.size(),
                                              " scalars; ", scalars.size(), " were given"));
  std::map<const ir::VarNode*, int64_t> values;
  for (size_t i = 0; i < params.size(); ++i) values[params[i].node()] = scalars[i];
  return SubstituteVars(std::move(values));
}

}  // namespace

absl::StatusOr<std::string> emit_cuda_source(const ir::Module& m,
                                             std::vector<KernelInfo>* kernels) {
  LOOM_ASSIGN_OR_RETURN(codegen::EmittedCuda emitted, codegen::emit_cuda(m));
  if (kernels) *kernels = std::move(emitted.kernels);
  return std::move(emitted.source);
}

absl::StatusOr<CompiledModule> compile_module(const ir::Module& m, int sm_arch) {
  if (sm_arch == 0) {
    if (!m.target.is_cuda())
      return absl::InvalidArgumentError(
          str_cat("module '", m.name, "' targets ", m.target.to_string(),
                  "; compile it for a CUDA target or give an sm arch"));
    sm_arch = m.target.sm_arch();
  }
  if (!built_with_cuda()) return compile_cuda_source("", sm_arch).status();
  CompiledModule out;
  out.sm_arch = sm_arch;
  LOOM_ASSIGN_OR_RETURN(out.source, emit_cuda_source(m, &out.kernels));
  std::string group = m.name.empty() ? "cuda" : m.name;
  dump_stage(group, "cuda-source", out.source, "cu");
  LOOM_ASSIGN_OR_RETURN(NvrtcOutput compiled,
                        compile_cuda_source(out.source, sm_arch, group + ".cu"));
  out.ptx = std::move(compiled.ptx);
  out.cubin = std::move(compiled.cubin);
  out.log = std::move(compiled.log);
  if (!out.ptx.empty()) dump_stage(group, "ptx", out.ptx, "ptx");
  if (!out.log.empty()) dump_stage(group, "nvrtc-log", out.log);
  return out;
}

absl::StatusOr<TensorMapShape> tensor_map_shape(const ir::Func& f, const TensorMapInfo& m,
                                                const std::vector<int64_t>& scalars) {
  const size_t rank = m.dims.size();
  if (rank < 1 || rank > 5 || m.box.size() != rank)
    return absl::InvalidArgumentError(str_cat("a tensor map of func '", f.name, "' has rank ",
                                              rank, " and a box of rank ", m.box.size()));
  LOOM_ASSIGN_OR_RETURN(SubstituteVars substitute, scalar_values(f, f.name, scalars));
  TensorMapShape out;
  switch (m.dtype.code()) {
    case DTypeCode::kF16: out.data_type = 6; break;
    case DTypeCode::kBF16: out.data_type = 9; break;
    case DTypeCode::kF32: out.data_type = 7; break;
    case DTypeCode::kI32: out.data_type = 3; break;
    case DTypeCode::kI64: out.data_type = 5; break;
    default: out.data_type = 0; break;  // 1-byte elements
  }
  out.element_bytes = m.dtype.bytes();
  out.rank = static_cast<uint32_t>(rank);
  out.swizzle = 3;
  uint64_t stride = static_cast<uint64_t>(out.element_bytes);
  for (size_t d = 0; d < rank; ++d) {  // innermost first
    const ir::Expr& e = m.dims[rank - 1 - d];
    std::optional<int64_t> v = ir::as_const_int(ir::simplify(substitute.mutate(e)));
    if (!v || *v < 1 || *v > (int64_t{1} << 32))
      return absl::InvalidArgumentError(
          str_cat("the extent ", ir::to_string(e), " of a tensor map of func '", f.name,
                  "' is not a constant in [1, 2^32] for the given scalars"));
    out.dims[d] = static_cast<uint64_t>(*v);
    out.box[d] = static_cast<uint32_t>(m.box[rank - 1 - d]);
    if (d > 0) {
      if (stride % 16 != 0)
        return absl::InvalidArgumentError(str_cat(
            "a tensor map of func '", f.name, "' has a stride of ", stride,
            " bytes; TMA needs multiples of 16 (the inner extent times the element size)"));
      out.strides[d - 1] = stride;
    }
    stride *= out.dims[d];
  }
  return out;
}

absl::StatusOr<std::pair<Dim3, Dim3>> launch_shape(const ir::Func& f, const KernelInfo& kernel,
                                                   const std::vector<int64_t>& scalars) {
  LOOM_ASSIGN_OR_RETURN(SubstituteVars substitute, scalar_values(f, kernel.symbol, scalars));
  auto extent = [&](const ir::Expr& e, int64_t limit,
                    const char* what) -> absl::StatusOr<unsigned> {
    std::optional<int64_t> v = ir::as_const_int(ir::simplify(substitute.mutate(e)));
    if (!v)
      return absl::InvalidArgumentError(str_cat("the ", what, " extent ", ir::to_string(e),
                                                " of kernel '", kernel.symbol,
                                                "' is not a constant for the given scalars"));
    if (*v < 0 || *v > limit)
      return absl::InvalidArgumentError(str_cat("the ", what, " extent ", ir::to_string(e), " = ",
                                                *v, " of kernel '", kernel.symbol,
                                                "' is outside [0, ", limit, "]"));
    return static_cast<unsigned>(*v);
  };
  Dim3 grid, block;
  LOOM_ASSIGN_OR_RETURN(grid.x, extent(kernel.grid[0], 2147483647, "grid x"));
  LOOM_ASSIGN_OR_RETURN(grid.y, extent(kernel.grid[1], 65535, "grid y"));
  LOOM_ASSIGN_OR_RETURN(grid.z, extent(kernel.grid[2], 65535, "grid z"));
  LOOM_ASSIGN_OR_RETURN(block.x, extent(kernel.block[0], 1024, "block x"));
  LOOM_ASSIGN_OR_RETURN(block.y, extent(kernel.block[1], 1024, "block y"));
  LOOM_ASSIGN_OR_RETURN(block.z, extent(kernel.block[2], 64, "block z"));
  if (int64_t{block.x} * block.y * block.z > 1024)
    return absl::InvalidArgumentError(str_cat("kernel '", kernel.symbol, "' needs ",
                                              int64_t{block.x} * block.y * block.z,
                                              " threads per block; CUDA allows 1024"));
  return std::make_pair(grid, block);
}

absl::StatusOr<std::unique_ptr<LoadedModule>> LoadedModule::load(const ir::Module& m,
                                                                 CompiledModule compiled,
                                                                 int ordinal) {
  if (compiled.kernels.size() != m.funcs.size())
    return absl::InvalidArgumentError(str_cat("the compiled module has ", compiled.kernels.size(),
                                              " kernels for ", m.funcs.size(), " funcs"));
  LOOM_ASSIGN_OR_RETURN(Driver * driver, Driver::get());
  std::unique_ptr<LoadedModule> out(new LoadedModule);
  out->driver_ = driver;
  out->ordinal_ = ordinal;
  LOOM_ASSIGN_OR_RETURN(out->context_, driver->retain_primary_context(ordinal));
  LOOM_RETURN_IF_ERROR(driver->set_current(out->context_));
  LOOM_ASSIGN_OR_RETURN(out->module_, driver->load_module(compiled.cubin));
  std::optional<int64_t> sms;  // the device's SMs, asked for once a persistent grid needs them
  for (const KernelInfo& k : compiled.kernels) {
    LOOM_ASSIGN_OR_RETURN(Function fn, driver->get_function(out->module_, k.symbol));
    if (k.dynamic_shared_bytes > 0) {
      absl::Status s = driver->set_dynamic_shared_limit(fn, k.dynamic_shared_bytes);
      if (!s.ok())
        return absl::Status(s.code(), str_cat("kernel '", k.symbol, "' needs ",
                                              k.dynamic_shared_bytes,
                                              " bytes of shared memory: ", s.message()));
    }
    int64_t resident = 0;
    if (k.min_blocks_per_sm > 0) {
      constexpr int kMostShared = 100;  // CU_SHAREDMEM_CARVEOUT_MAX_SHARED
      absl::Status s = driver->set_shared_carveout(fn, kMostShared);
      if (!s.ok())
        return absl::Status(s.code(), str_cat("kernel '", k.symbol, "' (", k.min_blocks_per_sm,
                                              " blocks an SM): ", s.message()));
      // The blocks the device really holds at once (the grid was sized by an estimate). Where
      // the driver cannot tell, or holds none (the launch will say why), the grid stays.
      const std::optional<int64_t> threads = ir::as_const_int(k.block[0]);
      if (!sms) {
        absl::StatusOr<DeviceProperties> props = driver->device_properties(ordinal);
        sms = props.ok() ? props->sm_count : 0;
      }
      if (threads && *sms > 0) {
        absl::StatusOr<int64_t> held =
            driver->resident_blocks(fn, *threads, k.dynamic_shared_bytes, k.cluster, *sms);
        if (held.ok() && *held > 0) resident = *held;
      }
    }
    out->resident_.push_back(resident);
    out->functions_.push_back(fn);
  }
  out->funcs_ = m.funcs;
  for (const ir::Func& f : m.funcs) out->buffer_counts_.push_back(f.buffer_params().size());
  out->shapes_.resize(m.funcs.size());
  out->compiled_ = std::move(compiled);
  return out;
}

LoadedModule::~LoadedModule() {
  if (!driver_) return;
  // Teardown errors (a context already destroyed at process exit) have nobody to go to.
  if (module_ && driver_->set_current(context_).ok()) (void)driver_->unload_module(module_);
  if (context_) (void)driver_->release_primary_context(ordinal_);
}

absl::Status LoadedModule::launch(size_t index, const std::vector<DevicePtr>& buffers,
                                  const std::vector<int64_t>& scalars, Stream stream) {
  if (index >= funcs_.size())
    return absl::InvalidArgumentError(
        str_cat("kernel index ", index, " of a module with ", funcs_.size(), " kernels"));
  const ir::Func& f = funcs_[index];
  const KernelInfo& kernel = compiled_.kernels[index];
  const size_t num_buffers = buffer_counts_[index];
  if (buffers.size() != num_buffers)
    return absl::InvalidArgumentError(str_cat("kernel '", kernel.symbol, "' takes ", num_buffers,
                                              " buffers; ", buffers.size(), " were given"));
  // Kernels access their buffers 16 bytes at a time (cp.async, vector loads and stores) from
  // addresses they assume kDeviceAlignment-aligned: an address off it would fault on the GPU.
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i] % kDeviceAlignment != 0)
      return absl::InvalidArgumentError(
          str_cat("buffer ", i, " of kernel '", kernel.symbol, "' has device address ", buffers[i],
                  ", not a multiple of ", kDeviceAlignment, " bytes (the GPU's allocations are)"));
  std::pair<Dim3, Dim3> shape;
  {
    std::lock_guard<std::mutex> lock(shapes_mu_);
    std::optional<LastShape>& last = shapes_[index];
    if (!last || last->scalars != scalars) {
      last.reset();
      LOOM_ASSIGN_OR_RETURN(auto computed, launch_shape(f, kernel, scalars));
      last = LastShape{scalars, computed};
    }
    shape = last->shape;
  }
  // cuLaunchKernel reads each parameter through a pointer to its value, in the func's order.
  std::vector<DevicePtr> buffer_values = buffers;
  std::vector<int64_t> scalar_values = scalars;
  std::vector<void*> args;
  size_t b = 0, s = 0;
  for (const ir::Param& p : f.params) {
    if (std::holds_alternative<ir::Buffer>(p))
      args.push_back(&buffer_values[b++]);
    else
      args.push_back(&scalar_values[s++]);
  }
  auto [grid, block] = shape;
  // A persistent grid larger than the device holds at once: as many blocks as it holds, whole
  // clusters (the kernel walks its work in steps of the grid launched).
  if (const int64_t held = resident_[index]; held > 0 && grid.x > held) {
    const int64_t cluster = std::max<int64_t>(1, kernel.cluster);
    grid.x = static_cast<unsigned>(std::max(cluster, held / cluster * cluster));
  }
  // An empty launch (a zero extent) has nothing to do; CUDA would reject it.
  if (int64_t{grid.x} * grid.y * grid.z * block.x * block.y * block.z == 0) return absl::OkStatus();
  LOOM_RETURN_IF_ERROR(driver_->set_current(context_));
  // Then the tensor maps, by value, over this launch's buffers (encoded again only where the
  // buffer or the scalars changed since the kernel's last launch).
  std::vector<TensorMap> maps(kernel.tensor_maps.size());
  if (!maps.empty()) {
    std::lock_guard<std::mutex> lock(maps_mu_);
    maps_.resize(funcs_.size());
    maps_[index].resize(maps.size());
    for (size_t i = 0; i < maps.size(); ++i) {
      const TensorMapInfo& info = kernel.tensor_maps[i];
      if (info.buffer >= buffers.size())
        return absl::InvalidArgumentError(str_cat("a tensor map of kernel '", kernel.symbol,
                                                  "' names buffer ", info.buffer));
      std::optional<EncodedMap>& last = maps_[index][i];
      if (!last || last->address != buffers[info.buffer] || last->scalars != scalars) {
        last.reset();
        LOOM_ASSIGN_OR_RETURN(TensorMapShape map_shape, tensor_map_shape(f, info, scalars));
        absl::StatusOr<TensorMap> map = driver_->encode_tensor_map(map_shape, buffers[info.buffer]);
        if (!map.ok())
          return absl::Status(map.status().code(),
                              str_cat("tensor map ", i, " of kernel '", kernel.symbol,
                                      "': ", map.status().message()));
        last = EncodedMap{buffers[info.buffer], scalars, *map};
      }
      maps[i] = last->map;
      args.push_back(&maps[i]);
    }
  }
  return driver_->launch(functions_[index], grid, block,
                         static_cast<unsigned>(kernel.dynamic_shared_bytes), stream, args.data());
}

}  // namespace loom::runtime::cuda
