// toolgate: the gateway server and the operator CLI (design §11). Each command group lives in its
// own file (app/cli_*.cc); this file parses the command line and runs the chosen command.
// Exit codes: 0 ok, 1 refused or check failed (the message says why), 2 usage.

#include "app/cli.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  using namespace toolgate::cli;  // NOLINT: the program's own namespace
  spdlog::set_default_logger(spdlog::stderr_color_mt("toolgate"));
  CLI::App app{"toolgate: a reliability gateway for the tool calls of autonomous agents"};
  app.require_subcommand(1);
  app.fallthrough();
  Cli cli;
  app.add_option("--config", cli.config_path, "configuration file (TOML); default: the built-in configuration");
  RegisterServeCommands(app, cli);
  RegisterOperatorCommands(app, cli);
  RegisterReplayCommands(app, cli);
  RegisterLedgerCommands(app, cli);
  RegisterStoreCommands(app, cli);
  ShowGlobalOptionsInHelp(app);
  try {
    app.parse(argc, argv);  // runs the chosen command's callback
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  return cli.exit_code;
}
