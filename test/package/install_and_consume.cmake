# CTest script: installs the built tree to a fresh prefix, then configures, builds and runs
# examples/embed as a project of its own against it (find_package(loom 0.1) and loom::loom),
# and checks that the package's version file refuses a version it is not.
#   cmake -DSOURCE_DIR=... -DBUILD_DIR=... -DWORK_DIR=... -DCXX=... -DBUILD_TYPE=... -P this
function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
run("install" ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(installed include/loom/loom.hpp include/loom/version.hpp bin/loom_run bin/loom_cache)
  if(NOT EXISTS "${prefix}/${installed}")
    message(FATAL_ERROR "install did not write ${installed}")
  endif()
endforeach()

set(configure_args -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX}
    -DCMAKE_BUILD_TYPE=${BUILD_TYPE} "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror")
run("configure examples/embed" ${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/embed"
    -B "${WORK_DIR}/embed" ${configure_args})
run("build examples/embed" ${CMAKE_COMMAND} --build "${WORK_DIR}/embed")
run("run examples/embed" "${WORK_DIR}/embed/embed")
if(NOT last_output MATCHES "matches")
  message(FATAL_ERROR "examples/embed printed: ${last_output}")
endif()
message(STATUS "${last_output}")

# The version file: a consumer asking for another major or minor version is refused.
file(WRITE "${WORK_DIR}/version/CMakeLists.txt" "cmake_minimum_required(VERSION 3.20)
project(loom_version_check LANGUAGES C CXX)
find_package(loom 99.0 QUIET)
if(loom_FOUND)
  message(FATAL_ERROR \"find_package(loom 99.0) accepted loom \${loom_VERSION}\")
endif()
find_package(loom \${EXPECTED} EXACT REQUIRED)
message(STATUS \"found loom \${loom_VERSION}\")
")
run("version check" ${CMAKE_COMMAND} -S "${WORK_DIR}/version" -B "${WORK_DIR}/version/build"
    -DEXPECTED=${VERSION} ${configure_args})
file(REMOVE_RECURSE "${WORK_DIR}")
