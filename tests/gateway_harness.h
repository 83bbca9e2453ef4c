#pragma once

// Runs the real `toolgate serve` binary for integration tests: a config in a temp dir, ports chosen
// by the kernel (port 0) and read from its first lines of output, HS256 tokens, HTTP helpers.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "api/http.h"
#include "nlohmann/json.hpp"
#include "process_support.h"
#include "test_support.h"
#include "toolgate/auth/jwt_verifier.h"

namespace toolgate::testing {

inline constexpr char kJwtSecret[] = "integration-test-secret-0123456789";

// The config every test starts from: loopback listeners on free ports, SQLite at `db`.
inline std::string BaseConfig(const std::string& db) {
  return "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"" + db +
         "\"\nsqlite_synchronous = \"normal\"\n[kill_switches]\nrefresh_ms = 200\n";
}

// The same on a DynamoDB-API table (the caller creates it); credentials come from the environment.
inline std::string BaseConfigDynamo(const std::string& endpoint, const std::string& table) {
  setenv("AWS_ACCESS_KEY_ID", "AKIDTOOLGATETEST", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "toolgate-test-secret", 1);
  return "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"dynamodb\"\n"
         "table = \"" +
         table + "\"\nendpoint = \"" + endpoint +
         "\"\nrequest_timeout_ms = 10000\n"
         "[kill_switches]\nrefresh_ms = 200\n";
}

// A connection to 127.0.0.1:`port` whose receives time out after 10 s, or -1. `receive_buffer` > 0:
// that small a receive buffer (a client that reads little).
inline int ConnectLoopback(int port, int receive_buffer = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (receive_buffer > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// `config` with `keys` (whole lines, each ending in a newline) added at the end of its table `header`,
// say "[admin]", which must begin a line of it: a test naming a table its config lacks fails here,
// saying so, instead of an exception from std::string or keys landing where they mean something else.
// (At the end: GatewayProcess::CliConfigPath finds the admin listener on the line after "[admin]".)
inline std::string WithKeys(std::string config, const std::string& header, const std::string& keys) {
  const std::string line = header + "\n";
  size_t at = config.starts_with(line) ? 0 : config.find("\n" + line);
  if (at == std::string::npos) {
    ADD_FAILURE() << "the test's config has no " << header << " table:\n" << config;
    return config;
  }
  if (at != 0) ++at;  // past the newline that ends the line before
  const size_t next_table = config.find("\n[", at + line.size() - 1);
  if (next_table == std::string::npos) {
    if (!config.ends_with('\n')) config += '\n';
    config += keys;
  } else {
    config.insert(next_table + 1, keys);
  }
  return config;
}

// `config` with its one occurrence of `from` replaced by `to`; a test failure when there is none.
inline std::string Replaced(std::string config, const std::string& from, const std::string& to) {
  const size_t at = config.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "the test's config has no '" << from << "' to replace:\n" << config;
    return config;
  }
  config.replace(at, from.size(), to);
  return config;
}

// One HTTP call to a gateway on 127.0.0.1:`port` (a JSON body, an optional bearer token): what
// GatewayProcess and InProcessGateway both send.
inline api::ClientResult LoopbackCall(int port, const std::string& method, const std::string& target,
                                      const std::string& body = "", const std::string& token = "",
                                      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  api::ClientRequest r;
  r.address = {"127.0.0.1", port};
  r.method = method;
  r.target = target;
  r.body = body;
  r.timeout = timeout;
  if (!body.empty()) r.headers.emplace_back("Content-Type", "application/json");
  if (!token.empty()) r.headers.emplace_back("Authorization", "Bearer " + token);
  return api::HttpCall(std::move(r));
}

// MCP as a 2025-06-18 client sends it to a gateway's /mcp: JSON and SSE accepted, a bearer token, no
// session (sessions are optional). The body of a JSON-RPC request:
inline std::string McpRpcBody(const std::string& method, const nlohmann::json& params, int id = 1) {
  return nlohmann::json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}.dump();
}
// tools/call's: `name`, `arguments` and, when given, `_meta`.
inline std::string McpToolsCallBody(const std::string& name, const nlohmann::json& arguments,
                                    const nlohmann::json& meta = nullptr, int id = 1) {
  nlohmann::json params = {{"name", name}, {"arguments", arguments}};
  if (!meta.is_null()) params["_meta"] = meta;
  return McpRpcBody("tools/call", params, id);
}
// POSTs `body` to /mcp on 127.0.0.1:`port`, in `session` when one is given; the raw answer.
inline api::ClientResult McpPost(int port, const std::string& token, std::string body,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(30),
                                 const std::string& session = {}) {
  api::ClientRequest r;
  r.address = {"127.0.0.1", port};
  r.method = "POST";
  r.target = "/mcp";
  r.body = std::move(body);
  r.timeout = timeout;
  r.headers = {{"Content-Type", "application/json"},
               {"Accept", "application/json, text/event-stream"},
               {"MCP-Protocol-Version", "2025-06-18"},
               {"Authorization", "Bearer " + token}};
  if (!session.empty()) r.headers.emplace_back("Mcp-Session-Id", session);
  return api::HttpCall(std::move(r));
}
// The same request as the bytes of HTTP/`version` ("1.1" or "1.0"), for a raw socket.
inline std::string McpPostBytes(const std::string& version, const std::string& token, const std::string& body) {
  return "POST /mcp HTTP/" + version +
         "\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
         "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n"
         "Authorization: Bearer " +
         token + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The HTTP helpers of a gateway under test over LoopbackCall, for a `Gateway` that knows its
// public_port() and admin_port() (GatewayProcess, InProcessGateway).
template <typename Gateway>
class LoopbackGatewayClient {
 public:
  api::ClientResult Call(int port, const std::string& method, const std::string& target, const std::string& body = "",
                         const std::string& token = "", std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return LoopbackCall(port, method, target, body, token, timeout);
  }
  api::ClientResult Public(const std::string& method, const std::string& target, const std::string& body = "",
                           const std::string& token = "") {
    return Call(self().public_port(), method, target, body, token);
  }
  api::ClientResult Admin(const std::string& method, const std::string& target, const std::string& body = "") {
    return Call(self().admin_port(), method, target, body);
  }
  api::ClientResult Invoke(const std::string& tool, const nlohmann::json& body, const std::string& token) {
    return Public("POST", "/v1/tools/" + tool + "/invoke", body.dump(), token);
  }

 private:
  const Gateway& self() const { return static_cast<const Gateway&>(*this); }
};

inline std::string Token(const std::string& tenant, const std::vector<std::string>& roles = {},
                         int64_t exp_offset_s = 3600, const std::string& sub = "user-1") {
  nlohmann::json claims = {{"sub", sub}, {"custom:tenant_id", tenant}, {"exp", time(nullptr) + exp_offset_s}};
  if (!roles.empty()) claims["custom:roles"] = roles;
  return auth::SignHs256(claims.dump(), kJwtSecret);
}

class GatewayProcess : public LoopbackGatewayClient<GatewayProcess> {
 public:
  GatewayProcess(const std::string& config_text, const TempDir& dir, const std::string& name = "gw")
      : config_text_(config_text),
        config_path_(dir.file(name + ".toml")),
        cli_config_path_(dir.file(name + "-cli.toml")),
        log_path_(dir.file(name + ".log")) {
    FILE* f = fopen(config_path_.c_str(), "w");
    fputs(config_text.c_str(), f);
    fclose(f);
  }

  // The config with the admin listener's real port in place of 0: what the operator CLI needs.
  // REQUIRES: Start() succeeded.
  std::string CliConfigPath() const {
    std::string text = config_text_;
    const std::string any_port = "[admin]\nlisten = \"127.0.0.1:0\"";
    if (auto at = text.find(any_port); at != std::string::npos) {
      text.replace(at, any_port.size(), "[admin]\nlisten = \"127.0.0.1:" + std::to_string(admin_port_) + "\"");
    }
    FILE* f = fopen(cli_config_path_.c_str(), "w");
    fputs(text.c_str(), f);
    fclose(f);
    return cli_config_path_;
  }
  ~GatewayProcess() {
    if (proc_) Kill();
  }

  const std::string& config_path() const { return config_path_; }

  // Start() runs the binary through `launcher`, a command that ends by running its arguments (say
  // `setpriv --reuid=65534 ...`, to run toolgate as another user).
  void SetLauncher(std::vector<std::string> launcher) { launcher_ = std::move(launcher); }

  // Starts the binary and waits for its two listeners. False (with the log) when it does not start.
  bool Start() {
    setenv("TOOLGATE_JWT_SECRET", kJwtSecret, 1);
    std::vector<std::string> argv = launcher_;
    for (const char* a : {TOOLGATE_BINARY, "serve", "--config"}) argv.emplace_back(a);
    argv.push_back(config_path_);
    proc_ = std::make_unique<ChildProcess>(argv, log_path_);
    for (int i = 0; i < 2; ++i) {
      auto line = proc_->ReadLine(std::chrono::seconds(20));
      if (!line) {
        ADD_FAILURE() << "toolgate did not start; its log:\n" << Log();
        return false;
      }
      const auto colon = line->rfind(':');
      const int port = std::atoi(line->c_str() + colon + 1);
      if (line->find("public API") != std::string::npos) public_port_ = port;
      if (line->find("admin") != std::string::npos) admin_port_ = port;
    }
    return public_port_ > 0 && admin_port_ > 0;
  }

  // SIGTERM and wait: a graceful stop.
  int Terminate() {
    SendTerminate();
    return AwaitExit();
  }
  // The two halves of Terminate, to stop several instances at once.
  void SendTerminate() { proc_->Kill(SIGTERM); }
  // Bounded: a gateway still running two minutes after SIGTERM is a failure (with its log), not a
  // hang of the suite; it is killed.
  int AwaitExit() {
    std::optional<int> status = proc_->WaitFor(std::chrono::seconds(120));
    if (!status) {
      ADD_FAILURE() << "toolgate did not stop within 120 s of SIGTERM; its log:\n" << Log();
      proc_->Kill(SIGKILL);
      status = proc_->Wait();
    }
    proc_.reset();
    return *status;
  }
  void Kill() {
    proc_->Kill(SIGKILL);
    proc_->Wait();
    proc_.reset();
  }
  pid_t pid() const { return proc_->pid(); }

  std::string Log() const {
    FILE* f = fopen(log_path_.c_str(), "r");
    if (!f) return "";
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    fclose(f);
    return out;
  }

  int public_port() const { return public_port_; }
  int admin_port() const { return admin_port_; }

 private:
  std::string config_text_;
  std::string config_path_;
  std::string cli_config_path_;
  std::string log_path_;
  std::vector<std::string> launcher_;
  std::unique_ptr<ChildProcess> proc_;
  int public_port_ = 0;
  int admin_port_ = 0;
};

inline nlohmann::json Body(const api::ClientResult& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  return j.is_discarded() ? nlohmann::json() : j;
}

inline std::string HeaderOf(const api::ClientResult& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

// Runs the toolgate CLI with `args`; its exit code and stdout+stderr.
// Runs a program (absolute path) to completion: its exit code and its output (stdout, then stderr).
inline std::pair<int, std::string> RunProgram(const std::vector<std::string>& argv, const TempDir& dir) {
  const std::string err = dir.file("program.err");
  unlink(err.c_str());
  ChildProcess p(argv, err);
  if (!p.started()) return {-1, "cannot start " + argv.front()};
  std::string out;
  while (auto line = p.ReadLine(std::chrono::seconds(60))) out += *line + "\n";
  const int status = p.Wait();
  FILE* f = fopen(err.c_str(), "r");
  if (f) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    fclose(f);
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline std::pair<int, std::string> RunCli(const std::vector<std::string>& args, const TempDir& dir) {
  std::vector<std::string> argv = {TOOLGATE_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv, dir);
}

}  // namespace toolgate::testing
