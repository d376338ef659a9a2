// loom_cache: lists, shows and clears loom's on-disk kernel cache.
// The directory is the one compile() uses: $LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else
// ~/.cache/loom.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "loom/runtime/kernel_cache.hpp"

namespace {

namespace fs = std::filesystem;
using loom::runtime::disk_cache::EntryInfo;

int usage() {
  std::fprintf(stderr,
               "usage: loom_cache list        entries, least recently used first\n"
               "       loom_cache show KEY    an entry's record and generated source\n"
               "       loom_cache clear       remove every entry\n"
               "       loom_cache path        the cache directory\n");
  return 2;
}

std::string local_time(fs::file_time_type t) {
  auto system = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      t - fs::file_time_type::clock::now() + std::chrono::system_clock::now());
  std::time_t tt = std::chrono::system_clock::to_time_t(system);
  char buf[32];
  std::tm tm{};
  localtime_r(&tt, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  const fs::path dir = loom::runtime::CacheSettings::from_environment().dir;
  if (dir.empty()) {
    std::fprintf(stderr, "loom_cache: no cache directory (set LOOM_CACHE_DIR or HOME)\n");
    return 1;
  }
  if (command == "path" && argc == 2) {
    std::printf("%s\n", dir.c_str());
    return 0;
  }
  if (command == "list" && argc == 2) {
    std::vector<EntryInfo> entries = loom::runtime::disk_cache::list(dir);
    uint64_t total = 0;
    std::printf("%-32s  %10s  %-19s  %s\n", "key", "bytes", "last use", "kernel (schedule)");
    for (const EntryInfo& e : entries) {
      std::string kernel = e.kernel_name.empty() ? "<unreadable record>" : e.kernel_name;
      if (kernel.size() > 60) kernel = kernel.substr(0, 57) + "...";
      std::printf("%-32s  %10llu  %-19s  %s (%s)\n", e.key.c_str(),
                  static_cast<unsigned long long>(e.bytes), local_time(e.last_use).c_str(),
                  kernel.c_str(), e.schedule.c_str());
      total += e.bytes;
    }
    std::printf("%zu entries, %llu bytes in %s\n", entries.size(),
                static_cast<unsigned long long>(total), dir.c_str());
    return 0;
  }
  if (command == "show" && argc == 3) {
    absl::StatusOr<std::string> text = loom::runtime::disk_cache::describe(dir, argv[2]);
    if (!text.ok()) {
      std::fprintf(stderr, "loom_cache: no entry %s in %s\n", argv[2], dir.c_str());
      return 1;
    }
    std::printf("%s\n", text->c_str());
    return 0;
  }
  if (command == "clear" && argc == 2) {
    size_t n = loom::runtime::disk_cache::clear(dir);
    std::printf("removed %zu entries from %s\n", n, dir.c_str());
    return 0;
  }
  return usage();
}
