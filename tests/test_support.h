#pragma once

// Helpers shared by the tests: temporary directories, store factories, a start barrier.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <barrier>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "process_support.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace toolgate::testing {

// Instrumented builds (AddressSanitizer, ThreadSanitizer) run the binaries 5–20× slower; CI runs the
// whole suite under both.
// g++ defines __SANITIZE_*__; clang 14 says so through __has_feature.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TOOLGATE_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(TOOLGATE_TEST_SANITIZED)
inline constexpr bool kSanitizedBuild = true;
#else
inline constexpr bool kSanitizedBuild = false;
#endif

// How long a test waits for another instance to see a kill switch: the design's bound (S8, 2 s) in
// the plain build, more where every process runs instrumented.
inline constexpr std::chrono::seconds kKillSwitchPropagation{kSanitizedBuild ? 10 : 2};

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

// A free loopback TCP port (bound, read and released; the caller binds it again at once).
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// A DynamoDB-API server (dynalite, from npm; tests/node) started once per test process on a free
// loopback port and killed when the process exits. Tables are created per test.
class Dynalite {
 public:
  static Dynalite& Shared() {
    static Dynalite instance;
    return instance;
  }
  bool ok() const { return port_ > 0; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& error() const { return error_; }

 private:
  Dynalite() {
    const std::string cli = TOOLGATE_DYNALITE_CLI;
    if (access(cli.c_str(), R_OK) != 0) {
      error_ = "dynalite is not installed at " + cli + " (run scripts/install-deps.sh)";
      return;
    }
    for (int attempt = 0; attempt < 5 && port_ == 0; ++attempt) {
      const int port = FreeLoopbackPort();
      proc_ = std::make_unique<ChildProcess>(std::vector<std::string>{"/usr/bin/env", "node", cli, "--port",
                                                                      std::to_string(port), "--host", "127.0.0.1",
                                                                      "--createTableMs", "0", "--deleteTableMs", "0"});
      auto line = proc_->ReadLine(std::chrono::seconds(20));
      if (line && line->find("listening") != std::string::npos) {
        port_ = port;
      } else {
        error_ = "dynalite did not start" + (line ? ": " + *line : std::string());
        proc_.reset();
      }
    }
  }
  std::unique_ptr<ChildProcess> proc_;
  int port_ = 0;
  std::string error_;
};

// Fake but well-formed credentials: dynalite checks the Authorization header's shape, not the signature.
inline store::aws::Credentials TestCredentials() { return {"AKIDTOOLGATETEST", "toolgate-test-secret", ""}; }

// Opens `table` on the shared dynalite, creating it when needed.
inline std::unique_ptr<store::DynamoDbItemStore> OpenDynamo(const std::string& table, const Clock& clock,
                                                            const std::string& endpoint = "") {
  std::string url = endpoint;
  if (url.empty()) {
    Dynalite& d = Dynalite::Shared();
    if (!d.ok()) {
      ADD_FAILURE() << d.error();
      return nullptr;
    }
    url = d.endpoint();
  }
  store::DynamoDbItemStore::Options o;
  o.table = table;
  o.endpoint = url;
  o.credentials = TestCredentials();
  o.request_timeout_ms = 10000;  // sanitizer builds and 2 cores: dynalite can be slow under bursts
  auto s = store::DynamoDbItemStore::Open(o, clock);
  if (!s.ok()) {
    ADD_FAILURE() << "open dynamodb store: " << s.status();
    return nullptr;
  }
  auto init = (*s)->InitTable();
  if (!init.ok()) {
    ADD_FAILURE() << "init table " << table << ": " << init.status();
    return nullptr;
  }
  return std::move(*s);
}

// A table name unique to this test directory.
inline std::string TableFor(const TempDir& dir) {
  return "t_" + std::filesystem::path(dir.file("x")).parent_path().filename().string().substr(14);
}

// A store named by a locator: "dynamodb://host:port/table" or a SQLite file path. Worker processes
// receive the locator of the store their parent tests.
inline std::unique_ptr<store::ItemStore> OpenLocator(const std::string& locator, const Clock& clock) {
  constexpr std::string_view kScheme = "dynamodb://";
  if (locator.rfind(kScheme, 0) == 0) {
    const std::string rest = locator.substr(kScheme.size());
    const size_t slash = rest.find('/');
    return OpenDynamo(rest.substr(slash + 1), clock, "http://" + rest.substr(0, slash));
  }
  return OpenSqlite(locator, clock);
}

// The locator of a fresh store of `backend` ("sqlite" or "dynamodb") for the test directory `dir`.
inline std::string LocatorFor(const std::string& backend, const TempDir& dir) {
  if (backend == "dynamodb") {
    Dynalite& d = Dynalite::Shared();
    if (!d.ok()) {
      ADD_FAILURE() << d.error();
      return "";
    }
    return "dynamodb://127.0.0.1:" + d.endpoint().substr(d.endpoint().rfind(':') + 1) + "/" + TableFor(dir);
  }
  return dir.file("store.db");
}

// A backend under test, with the clock it reads and the files it needs.
struct Backend {
  std::string name;
  bool keeps_number_type = true;  // false: a whole double may come back as an integer (DynamoDB's N)
  std::function<std::unique_ptr<store::ItemStore>(const Clock&, TempDir&)> open;
};

inline std::vector<Backend> AllBackends() {
  return {
      {"memory", true, [](const Clock& c, TempDir&) { return std::make_unique<store::MemoryItemStore>(c); }},
      {"sqlite", true,
       [](const Clock& c, TempDir& dir) -> std::unique_ptr<store::ItemStore> {
         return OpenSqlite(dir.file("store.db"), c);
       }},
      {"dynamodb", false,
       [](const Clock& c, TempDir& dir) -> std::unique_ptr<store::ItemStore> { return OpenDynamo(TableFor(dir), c); }},
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
