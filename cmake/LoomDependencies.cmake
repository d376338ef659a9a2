# Finds loom's dependencies from Debian 12 packages (scripts/install-deps.sh installs them).

# LLVM 19: ORC LLJIT and the X86/NVPTX targets. Its include dirs and definitions are added by
# hand; llvm-config --cxxflags would force C++17 and -fno-exceptions.
if(LOOM_WITH_LLVM)
  find_package(LLVM 19.1 REQUIRED CONFIG HINTS /usr/lib/llvm-19/lib/cmake/llvm)
  message(STATUS "loom: LLVM ${LLVM_PACKAGE_VERSION} from ${LLVM_DIR}")
else()
  message(STATUS "loom: built without LLVM (LOOM_WITH_LLVM=OFF): GPU targets only")
endif()

find_package(absl REQUIRED CONFIG)
find_package(Threads REQUIRED)
find_package(nlohmann_json 3 REQUIRED CONFIG)
# ONNX import (libonnx-dev, libprotobuf-dev): only lib/onnx/import.cpp includes their headers.
find_package(Protobuf REQUIRED)
find_package(ONNX REQUIRED CONFIG)

# CUDA toolkit (NVRTC) is optional: without it the CUDA back end is left out of the build.
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND AND TARGET CUDA::nvrtc)
  set(LOOM_HAVE_NVRTC ON)
  message(STATUS "loom: NVRTC ${CUDAToolkit_VERSION} from ${CUDAToolkit_LIBRARY_DIR}")
else()
  set(LOOM_HAVE_NVRTC OFF)
  message(STATUS "loom: CUDA toolkit not found; the CUDA back end is not built")
endif()

if(LOOM_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED CONFIG)
endif()
if(LOOM_BUILD_BENCH)
  find_package(benchmark REQUIRED CONFIG)
endif()
