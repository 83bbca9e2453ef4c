// `toolgate store check | init`: the store's health, and setting up a DynamoDB table.

#include <cstdio>

#include "app/cli.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/sqlite_item_store.h"
#include "toolgate/store_factory.h"

namespace toolgate::cli {

namespace {

// SQLite: the integrity check (read-only), and whether this user could write it (nothing written).
// DynamoDB: the table answers.
int Check(const Config& config) {
  SystemClock clock;
  if (config.store.backend == "dynamodb") {
    auto st = OpenStoreReadOnly(config, clock);
    if (!st.ok()) return Fail(std::string(st.status().message()));
    auto probe = (*st)->Get({"TOOLGATE#CHECK", "CHECK"});
    if (!probe.ok()) return Fail(std::string(probe.status().message()));
    std::printf("store dynamodb table %s: answers\n", config.store.table.c_str());
    return kExitOk;
  }
  store::SqliteItemStore::Options o;
  o.path = config.store.path;
  o.read_only = true;
  o.sweep_interval_ms = 0;
  {
    auto s = store::SqliteItemStore::Open(o, clock);
    if (!s.ok()) return Fail(std::string(ExplainStoreOpenFailure(config.store, s.status()).message()));
    if (absl::Status ok = (*s)->CheckIntegrity(); !ok.ok()) return Fail(std::string(ok.message()));
  }  // closed first: the connection that can write is then the last, and tidies the -wal and -shm files
  // A store `serve` would refuse (the file, its directory or the volume read-only for this user) is
  // not ok, though it reads well.
  if (absl::Status ok = store::SqliteItemStore::CheckWritable(config.store.path, o.busy_timeout_ms); !ok.ok()) {
    return Fail(absl::StrCat(std::string(ok.message()), ": serve would refuse it"));
  }
  std::printf("store %s: ok (intact, and writable by this user)\n", config.store.path.c_str());
  return kExitOk;
}

// DynamoDB: create the table and enable TTL. SQLite: create the file — whatever
// store.create_if_missing says: that guards serve against a volume that did not mount, and this is
// the command an operator runs to make a store on purpose.
int Init(const Config& config) {
  SystemClock clock;
  StoreConfig store = config.store;
  store.create_if_missing = true;
  auto st = OpenConfiguredStore(store, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  if (auto* dynamo = dynamic_cast<store::DynamoDbItemStore*>(st->get()); dynamo != nullptr) {
    auto report = dynamo->InitTable();
    if (!report.ok()) return Fail(std::string(report.status().message()));
    std::printf("%s", report->c_str());
  } else {
    std::printf("store %s (%s): ready\n", config.store.backend.c_str(), config.store.path.c_str());
  }
  return kExitOk;
}

}  // namespace

void RegisterStoreCommands(CLI::App& app, Cli& cli) {
  auto* store_cmd = app.add_subcommand("store", "store maintenance");
  store_cmd->require_subcommand(1);
  store_cmd->add_subcommand("check", "SQLite: run the integrity check (read-only); DynamoDB: check the table answers")
      ->callback([&cli] {
        if (const Config* c = cli.config()) cli.exit_code = Check(*c);
      });
  store_cmd
      ->add_subcommand(
          "init", "DynamoDB: create the table (pk, sk; on-demand) and enable TTL on `ttl`; SQLite: create the file")
      ->callback([&cli] {
        if (const Config* c = cli.config()) cli.exit_code = Init(*c);
      });
}

}  // namespace toolgate::cli
