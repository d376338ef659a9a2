// Helpers for the kernel cache tests: private cache directories, stderr capture, file edits.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "loom/compiler.hpp"
#include "loom/runtime/kernel_cache.hpp"
#include "loom/runtime/stats.hpp"

namespace loom::testing {

namespace fs = std::filesystem;

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "loom-cache-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Options that use dir as the disk level, after emptying the process-wide memory level so that
// nothing an earlier test compiled is found there.
inline CompileOptions cold_cache_options(const fs::path& dir, TuneLevel tune = TuneLevel::kNone) {
  runtime::KernelCache::global().clear_memory();
  CompileOptions options;
  options.tune = tune;
  options.poison_buffers = true;
  options.cache_dir = dir.string();
  return options;
}

// Everything written to stderr (file descriptor 2) between construction and text().
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(file_.path().c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    return read_text(file_.path());
  }
  static std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  struct File {
    File() {
      std::string pattern = (fs::temp_directory_path() / "loom-stderr-XXXXXX").string();
      int fd = ::mkstemp(pattern.data());
      REQUIRE(fd >= 0);
      ::close(fd);
      path_ = pattern;
    }
    ~File() { std::remove(path_.c_str()); }
    const fs::path& path() const { return path_; }
    fs::path path_;
  } file_;
  int saved_ = -1;
};

inline void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace loom::testing
