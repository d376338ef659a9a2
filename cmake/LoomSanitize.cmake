# Sanitizer and fuzzing builds (scripts/test_sanitizers.sh makes them in build-asan, build-tsan).
# LOOM_SANITIZE is a -fsanitize= list ("address,undefined" or "thread") applied to the library,
# the tests and the fuzzers alike; LOOM_FUZZ adds libFuzzer's coverage instrumentation (clang),
# so one ASan+UBSan build serves both the tests and the fuzz targets.

set(LOOM_SANITIZE "" CACHE STRING "Sanitizers for every target: address,undefined or thread")
option(LOOM_FUZZ "Build the libFuzzer targets under test/fuzz (needs clang)" OFF)

if(LOOM_SANITIZE)
  # -O1 compiles fast and keeps reports readable; line tables are enough for symbolized stacks.
  add_compile_options(-fsanitize=${LOOM_SANITIZE} -fno-omit-frame-pointer -O1 -g1)
  add_link_options(-fsanitize=${LOOM_SANITIZE})
  if(LOOM_SANITIZE MATCHES "undefined")
    # Every report fails the run. vptr checks need RTTI, which LLVM's classes are built without.
    add_compile_options(-fno-sanitize-recover=all -fno-sanitize=vptr)
  endif()
endif()

if(LOOM_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "LOOM_FUZZ needs clang (libFuzzer): configure with CMAKE_CXX_COMPILER=clang++")
  endif()
  # Coverage feedback for the fuzzers in the library too; other programs link without libFuzzer.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
