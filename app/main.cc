// toolgate: the gateway server and operator CLI.

#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "toolgate/clock.h"
#include "toolgate/store/sqlite_item_store.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;

int NotYet(const std::string& what) {
  std::fprintf(stderr,
               "toolgate: '%s' is not implemented yet.\n"
               "What works today: the toolgate_core library (store port on memory and SQLite, shared\n"
               "circuit breakers, connector concurrency limits) and 'toolgate store check'.\n",
               what.c_str());
  return kExitRefused;
}

// Opens the SQLite store read-only and runs SQLite's integrity check.
int StoreCheck(const std::string& path) {
  toolgate::SystemClock clock;
  toolgate::store::SqliteItemStore::Options options;
  options.path = path;
  options.read_only = true;
  options.sweep_interval_ms = 0;
  auto store = toolgate::store::SqliteItemStore::Open(options, clock);
  if (!store.ok()) {
    std::fprintf(stderr, "toolgate: store %s: %s\n", path.c_str(), store.status().ToString().c_str());
    return kExitRefused;
  }
  if (absl::Status s = (*store)->CheckIntegrity(); !s.ok()) {
    std::fprintf(stderr, "toolgate: store %s: %s\n", path.c_str(), s.ToString().c_str());
    return kExitRefused;
  }
  std::printf("store %s: ok\n", path.c_str());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"toolgate: a reliability gateway for the tool calls of autonomous agents"};
  app.require_subcommand(1);
  std::string config;
  app.add_option("--config", config, "configuration file (TOML)");

  auto* serve = app.add_subcommand("serve", "run the gateway");
  auto* version = app.add_subcommand("version", "print the version");
  auto* store = app.add_subcommand("store", "store maintenance");
  store->require_subcommand(1);
  auto* check = store->add_subcommand("check", "run an integrity check on a SQLite store (read-only)");
  std::string path = "./toolgate-data/toolgate.db";
  check->add_option("--path", path, "the SQLite store file");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (*version) {
    std::printf("toolgate 0.1.0\n");
    return kExitOk;
  }
  if (*check) return StoreCheck(path);
  if (*serve) return NotYet("serve");
  return kExitUsage;
}
