// CpuJit (LLVM ORC LLJIT + the new pass manager's O3 pipeline) and host CPU detection.
// With lib/codegen/emit_llvm.cpp, the only translation unit allowed to include LLVM headers.

#include "loom/runtime/cpu_jit.hpp"

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "codegen/emit_llvm.hpp"
#include "llvm/ADT/SmallString.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"
#include "llvm/Transforms/Utils/Cloning.h"
#include "loom/core/dump.hpp"
#include "loom/core/status.hpp"
#include "loom/runtime/stats.hpp"
#include "loom/runtime/scratch.hpp"
#include "loom/runtime/thread_pool.hpp"

namespace loom {

Target Target::host_cpu() {
  static const Target host = [] {
    std::vector<std::string> features;
    for (const auto& feature : llvm::sys::getHostCPUFeatures())
      if (feature.getValue()) features.push_back(feature.getKey().str());
    Target t = Target::cpu(llvm::sys::getProcessTriple(), llvm::sys::getHostCPUName().str(),
                           std::move(features));
    t.set_caches(sysconf(_SC_LEVEL1_DCACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE),
                 static_cast<int>(std::thread::hardware_concurrency()));
    return t;
  }();
  return host;
}

namespace runtime {
namespace {

void initialize_llvm_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

absl::Status error_status(llvm::Error error, const std::string& context) {
  return absl::InternalError(context + ": " + llvm::toString(std::move(error)));
}

std::string module_text(const llvm::Module& m) {
  std::string text;
  llvm::raw_string_ostream os(text);
  m.print(os, nullptr);
  os.flush();
  return text;
}

// The default O3 pipeline, built with the target's TargetMachine so that cost models (vector
// width, AVX-512 preference, gathers) are the target's, not a generic machine's.
void optimize(llvm::Module& m, llvm::TargetMachine& tm) {
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PipelineTuningOptions tuning;
  tuning.LoopVectorization = true;
  tuning.SLPVectorization = true;
  tuning.LoopUnrolling = true;
  tuning.LoopInterleaving = true;
  llvm::PassBuilder pb(&tm, tuning);
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  mpm.run(m, mam);
}

// Assembly for LOOM_DUMP_IR, from a clone: code generation rewrites the IR it is given.
std::string assembly_text(const llvm::Module& m, llvm::TargetMachine& tm) {
  std::unique_ptr<llvm::Module> clone = llvm::CloneModule(m);
  llvm::SmallString<0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager pm;
  if (tm.addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::AssemblyFile))
    return "; this target cannot print assembly\n";
  pm.run(*clone);
  return std::string(buffer.str());
}

}  // namespace

struct CpuJit::Impl {
  Target target;
  // Makes one TargetMachine per compile() for the O3 pipeline: TargetMachines cache subtargets
  // and are not safe to share between threads compiling at once.
  llvm::orc::JITTargetMachineBuilder machine_builder{llvm::Triple()};
  std::unique_ptr<llvm::orc::LLJIT> jit;
  codegen::EmitOptions options;
  // Numbers compiled modules (their symbols carry it, for readable dumps) and loaded objects
  // (each gets the JITDylib "object<N>", so symbols need only be unique within one object).
  std::atomic<uint64_t> next_module{0};
  std::atomic<uint64_t> next_object{0};
  // Serializes linking objects into this JIT. Compiling (the costly part) stays concurrent;
  // linking is short, and concurrent adds and lookups through the main JITDylib's generators
  // were seen to leave ORC with a defunct resource tracker once in many threaded test runs.
  std::mutex link_mutex;
};

namespace {
// LLJIT sessions are created and torn down one at a time in the process, for the same reason.
std::mutex& session_mutex() {
  static std::mutex mutex;
  return mutex;
}
}  // namespace

CpuJit::CpuJit(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuJit::~CpuJit() {
  std::lock_guard<std::mutex> lock(session_mutex());
  impl_.reset();
}

const Target& CpuJit::target() const {
  return impl_->target;
}

bool CpuJit::available() {
  return true;
}

std::string CpuJit::backend_version() {
  return "LLVM " LLVM_VERSION_STRING;
}

absl::StatusOr<std::unique_ptr<CpuJit>> CpuJit::create(const Target& target) {
  if (!target.is_cpu())
    return absl::InvalidArgumentError("CpuJit needs a CPU target, got " + target.to_string());
  initialize_llvm_once();

  llvm::Triple triple(target.triple());
  llvm::Triple process(llvm::sys::getProcessTriple());
  if (triple.getArch() != process.getArch())
    return absl::InvalidArgumentError(str_cat("CpuJit cannot run code for ", target.triple(),
                                              " on this ", process.str(), " machine"));

  auto impl = std::make_unique<Impl>();
  impl->target = target;
  if (target.fingerprint() == Target::host_cpu().fingerprint()) {
    // The host builder also lists the features this CPU lacks ("-avx512f"), which pins them
    // off even where the CPU name would imply them.
    auto host = llvm::orc::JITTargetMachineBuilder::detectHost();
    if (!host) return error_status(host.takeError(), "cannot describe the host CPU to LLVM");
    impl->machine_builder = std::move(*host);
  } else {
    impl->machine_builder = llvm::orc::JITTargetMachineBuilder(triple);
    impl->machine_builder.setCPU(target.cpu_name());
    std::vector<std::string> features;
    for (const std::string& f : target.features()) features.push_back("+" + f);
    impl->machine_builder.addFeatures(features);
  }
  impl->machine_builder.setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);

  // Checked up front: LLVM itself would only print a warning and fall back to a generic CPU.
  std::string lookup_error;
  const llvm::Target* llvm_target = llvm::TargetRegistry::lookupTarget(triple.str(), lookup_error);
  if (!llvm_target)
    return absl::InvalidArgumentError("LLVM has no target for " + triple.str() + ": " +
                                      lookup_error);
  std::unique_ptr<llvm::MCSubtargetInfo> subtarget(
      llvm_target->createMCSubtargetInfo(triple.str(), "", ""));
  if (subtarget && !impl->machine_builder.getCPU().empty() &&
      !subtarget->isCPUStringValid(impl->machine_builder.getCPU()))
    return absl::InvalidArgumentError(str_cat(
        "LLVM does not know the CPU '", impl->machine_builder.getCPU(), "' of ", target.triple()));
  auto tm = impl->machine_builder.createTargetMachine();
  if (!tm)
    return error_status(tm.takeError(),
                        "cannot create an LLVM TargetMachine for " + target.to_string());
  impl->options.triple = impl->machine_builder.getTargetTriple().str();
  impl->options.data_layout = (*tm)->createDataLayout().getStringRepresentation();
  impl->options.cpu_name = impl->machine_builder.getCPU();
  impl->options.features = impl->machine_builder.getFeatures().getString();
  impl->options.prefer_512_bit_vectors = target.has_feature("avx512f");

  std::lock_guard<std::mutex> session_lock(session_mutex());
  auto jit = llvm::orc::LLJITBuilder()
                 .setJITTargetMachineBuilder(impl->machine_builder)
                 .setSupportConcurrentCompilation(true)
                 .create();
  if (!jit) return error_status(jit.takeError(), "cannot create the LLVM ORC JIT");
  impl->jit = std::move(*jit);

  // Kernels call libm (expf, tanhf, fmodf, ...) and malloc/free: resolve them in this process.
  auto generator = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      impl->jit->getDataLayout().getGlobalPrefix());
  if (!generator)
    return error_status(generator.takeError(), "cannot expose this process's symbols to the JIT");
  impl->jit->getMainJITDylib().addGenerator(std::move(*generator));
  // loom's own runtime entry points are defined by address: a static libloom need not export them.
  llvm::orc::SymbolMap runtime_symbols;
  runtime_symbols[impl->jit->mangleAndIntern("loom_parallel_for")] = llvm::orc::ExecutorSymbolDef(
      llvm::orc::ExecutorAddr::fromPtr(&loom_parallel_for), llvm::JITSymbolFlags::Exported);
  runtime_symbols[impl->jit->mangleAndIntern("loom_scratch_alloc")] = llvm::orc::ExecutorSymbolDef(
      llvm::orc::ExecutorAddr::fromPtr(&loom_scratch_alloc), llvm::JITSymbolFlags::Exported);
  runtime_symbols[impl->jit->mangleAndIntern("loom_scratch_free")] = llvm::orc::ExecutorSymbolDef(
      llvm::orc::ExecutorAddr::fromPtr(&loom_scratch_free), llvm::JITSymbolFlags::Exported);
  if (llvm::Error err =
          impl->jit->getMainJITDylib().define(llvm::orc::absoluteSymbols(runtime_symbols)))
    return error_status(std::move(err), "cannot define loom's runtime symbols in the JIT");
  return std::unique_ptr<CpuJit>(new CpuJit(std::move(impl)));
}

absl::StatusOr<std::vector<KernelFn>> CpuJit::compile(const ir::Module& m) {
  LOOM_ASSIGN_OR_RETURN(ObjectCode object, compile_object(m));
  return load_object(object);
}

absl::StatusOr<ObjectCode> CpuJit::compile_object(const ir::Module& m) {
  if (!m.target.is_cpu())
    return absl::InvalidArgumentError(str_cat("module '", m.name, "' is for ", m.target.to_string(),
                                              "; CpuJit compiles CPU modules"));
  auto context = std::make_unique<llvm::LLVMContext>();
  codegen::EmitOptions options = impl_->options;
  options.symbol_suffix = ".loom" + std::to_string(impl_->next_module++);
  options.full_unroll_limit = m.llvm_full_unroll_limit;
  LOOM_ASSIGN_OR_RETURN(codegen::EmittedModule emitted, codegen::emit_llvm(m, *context, options));

  auto tm = impl_->machine_builder.createTargetMachine();
  if (!tm) return error_status(tm.takeError(), "cannot create an LLVM TargetMachine");
  const std::string group = m.name.empty() ? "module" : m.name;
  if (dump_enabled()) dump_stage(group, "llvm", module_text(*emitted.module), "ll");
  optimize(*emitted.module, **tm);
  if (dump_enabled()) {
    dump_stage(group, "llvm-opt", module_text(*emitted.module), "ll");
    dump_stage(group, "asm", assembly_text(*emitted.module, **tm), "s");
  }

  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager pm;
  if ((*tm)->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::ObjectFile))
    return absl::InternalError("LLVM cannot emit object files for " + impl_->target.to_string());
  pm.run(*emitted.module);
  count(Counter::kLlvmCompiles);
  ObjectCode object;
  object.bytes.assign(buffer.begin(), buffer.end());
  object.symbols = std::move(emitted.entry_symbols);
  return object;
}

absl::StatusOr<std::vector<KernelFn>> CpuJit::load_object(const ObjectCode& object) {
  std::lock_guard<std::mutex> lock(impl_->link_mutex);
  llvm::orc::LLJIT& jit = *impl_->jit;
  const std::string name = "object" + std::to_string(impl_->next_object++);
  auto dylib = jit.getExecutionSession().createJITDylib(name);
  if (!dylib) return error_status(dylib.takeError(), "cannot create JITDylib " + name);
  // Runtime entry points and this process's libraries (libm) resolve through the main JITDylib.
  dylib->addToLinkOrder(jit.getMainJITDylib());
  std::unique_ptr<llvm::MemoryBuffer> buffer = llvm::MemoryBuffer::getMemBufferCopy(
      llvm::StringRef(object.bytes.data(), object.bytes.size()), name);
  if (llvm::Error error = jit.addObjectFile(*dylib, std::move(buffer)))
    return error_status(std::move(error), "cannot add object " + name + " to the JIT");
  std::vector<KernelFn> kernels;
  for (const std::string& symbol : object.symbols) {
    auto address = jit.lookup(*dylib, symbol);
    if (!address)
      return error_status(address.takeError(), "cannot link '" + symbol + "' of object " + name);
    kernels.push_back(address->toPtr<KernelFn>());
  }
  return kernels;
}

}  // namespace runtime
}  // namespace loom
