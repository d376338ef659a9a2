// The Catch2 main for loom_tests, compiled once. Each test process gets a kernel cache
// directory of its own (LOOM_CACHE_DIR), removed at exit: tests never read or fill the user's
// cache.
#define CATCH_CONFIG_RUNNER
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

int main(int argc, char* argv[]) {
  std::string dir = (std::filesystem::temp_directory_path() / "loom-tests-cache-XXXXXX").string();
  const bool own_dir = ::mkdtemp(dir.data()) != nullptr;
  if (own_dir) ::setenv("LOOM_CACHE_DIR", dir.c_str(), 1);
  int result = Catch::Session().run(argc, argv);
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return result;
}
