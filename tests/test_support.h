#pragma once

// Helpers shared by the tests: temporary directories, store factories, a start barrier.

#include <unistd.h>

#include <barrier>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace toolgate::testing {

// A directory removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "toolgate-test-XXXXXX").string();
    char* made = mkdtemp(tmpl.data());
    if (made == nullptr) std::abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::unique_ptr<store::SqliteItemStore> OpenSqlite(const std::string& path, const Clock& clock,
                                                          bool read_only = false) {
  store::SqliteItemStore::Options o;
  o.path = path;
  o.read_only = read_only;
  o.synchronous_full = false;  // tests need crash safety, not power-loss durability
  o.sweep_interval_ms = 0;
  auto s = store::SqliteItemStore::Open(o, clock);
  if (!s.ok()) {
    ADD_FAILURE() << "open sqlite store: " << s.status();
    return nullptr;
  }
  return std::move(*s);
}

// A backend under test, with the clock it reads and the files it needs.
struct Backend {
  std::string name;
  std::function<std::unique_ptr<store::ItemStore>(const Clock&, TempDir&)> open;
};

inline std::vector<Backend> AllBackends() {
  return {
      {"memory", [](const Clock& c, TempDir&) { return std::make_unique<store::MemoryItemStore>(c); }},
      {"sqlite", [](const Clock& c, TempDir& dir) -> std::unique_ptr<store::ItemStore> {
         return OpenSqlite(dir.file("store.db"), c);
       }},
  };
}

inline void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }

inline std::string BackendName(const ::testing::TestParamInfo<Backend>& info) { return info.param.name; }

// Runs `body(i)` on `n` threads released together, and joins them.
inline void RunTogether(int n, const std::function<void(int)>& body) {
  std::barrier start(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      body(i);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace toolgate::testing
