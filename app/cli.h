#pragma once

// The operator CLI's shared pieces (design §11): exit codes, the config, the admin listener client,
// the store opened for reading, and one Register function per command group.
// Exit codes: 0 ok, 1 refused or check failed (the message says why), 2 usage.

#include <utility>

#include <functional>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/engine/engine.h"
#include "toolgate/store/item_store.h"

namespace toolgate::cli {

using json = nlohmann::json;

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;

// Prints "toolgate: <msg>" to stderr; returns kExitRefused.
int Fail(const std::string& msg);

// What every command shares: the --config path, the config read once, and the command's exit code.
struct Cli {
  std::string config_path;
  int exit_code = kExitUsage;
  // The config --config names, else the one $TOOLGATE_CONFIG names, else the built-in one; nullptr
  // after printing why it failed.
  const Config* config();

 private:
  std::optional<absl::StatusOr<Config>> loaded_;
};

// Calls the admin listener named in the config; the JSON answer, or an error saying why:
// kUnavailable when the listener does not answer at all, kFailedPrecondition for an HTTP error
// (its JSON body, when any, in *error_body).
struct AdminClient {
  const Config& config;
  absl::StatusOr<json> Call(const std::string& method, const std::string& target, const json& body = nullptr,
                            json* error_body = nullptr);
  std::string address() const;
};

// What a read command shows: the admin listener's answer to GET `admin_path`, or — when the
// listener does not answer — `from_store` over the configured store opened read-only, saying so on
// stderr ("admin listener not answering at X; read from the store at Y").
absl::StatusOr<json> ReadLiveOrStore(const Config& config, const std::string& admin_path,
                                     const std::function<absl::StatusOr<json>(Engine&, const Clock&)>& from_store);

// Where the configured store is, for messages ("sqlite ./toolgate-data/toolgate.db").
std::string StoreLocation(const StoreConfig& store);

// Prints the JSON (indented) or the error; the exit code.
int PrintOr(absl::StatusOr<json> r);

// `doc` with every string in it (keys too) made Printable, for the text views: what a terminal shows
// of a server's name, a tool's, an operator's reason is what they are, never a command to the
// terminal (a colour, a cleared screen, a title, a line put back to its start and written over).
json ForTerminal(json doc);

// The configured store, opened for reading (SQLite read-only; DynamoDB as configured). A failure is
// explained as ExplainStoreOpenFailure does.
absl::StatusOr<std::unique_ptr<store::ItemStore>> OpenStoreReadOnly(const Config& config, const Clock& clock);

// `failure` to open the configured store, or, when it is a SQLite file this user may not write (the
// file, its directory, or a read-only volume), a FailedPrecondition that says so and that serve would
// refuse it: SQLite's own word for that, when it cannot read the store either, is "unable to open
// database file".
absl::Status ExplainStoreOpenFailure(const StoreConfig& store, absl::Status failure);

// Command groups. Each adds its subcommands to `app`; the chosen one sets cli.exit_code when it runs.
void RegisterServeCommands(CLI::App& app, Cli& cli);     // serve, version, dev-token
void RegisterOperatorCommands(CLI::App& app, Cli& cli);  // status, breaker, kill-switch, limits, slo
void RegisterReplayCommands(CLI::App& app, Cli& cli);    // executions list, replay, replays list | show | cancel
void RegisterLedgerCommands(CLI::App& app, Cli& cli);    // ledger show | verify | export
void RegisterStoreCommands(CLI::App& app, Cli& cli);     // store check | init

// Every subcommand's --help names the global --config (taken before or after the subcommand): CLI11
// lists only a command's own options, so `toolgate status --help` would not say how to pick the file.
void ShowGlobalOptionsInHelp(CLI::App& app);

}  // namespace toolgate::cli
