#include "app/cli.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/http.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/store_factory.h"

namespace toolgate::cli {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "toolgate: %s\n", Printable(msg).c_str());
  return kExitRefused;
}

json ForTerminal(json doc) {
  if (doc.is_string()) return Printable(doc.get_ref<const std::string&>());
  if (doc.is_array()) {
    for (json& v : doc) v = ForTerminal(std::move(v));
  } else if (doc.is_object()) {
    json out = json::object();
    for (auto& [k, v] : doc.items()) out[Printable(k)] = ForTerminal(std::move(v));
    return out;
  }
  return doc;
}

const Config* Cli::config() {
  if (!loaded_) {
    std::string path = config_path;
    if (const char* env = std::getenv("TOOLGATE_CONFIG"); path.empty() && env != nullptr) path = env;
    loaded_ = path.empty() ? absl::StatusOr<Config>(DefaultConfig()) : LoadConfig(path);
  }
  if (!loaded_->ok()) {
    // A config error lists its problems one a line (LoadConfig makes each line Printable): printed
    // as lines, each still escaped, where Fail would show one line with a literal \n between them.
    const std::vector<std::string> lines = absl::StrSplit(loaded_->status().message(), '\n');
    exit_code = Fail(lines.front());
    for (size_t i = 1; i < lines.size(); ++i) std::fprintf(stderr, "%s\n", Printable(lines[i]).c_str());
    return nullptr;
  }
  return &**loaded_;
}

namespace {

// After a 401: where this CLI took the admin token from, so that the operator knows what to set.
std::string TokenHint(const std::string& env) {
  if (env.empty()) return "this config names no admin.admin_token_env, so no token was sent";
  const char* value = std::getenv(env.c_str());
  if (value == nullptr)
    return "the CLI reads the admin token from $" + env + " (admin.admin_token_env), which is not set";
  return "the CLI sent the admin token from $" + env + " (admin.admin_token_env): is it the server's?";
}

}  // namespace

std::string AdminClient::address() const {
  HostPort a = config.admin.listen;
  if (a.host == "0.0.0.0") a.host = "127.0.0.1";
  return a.ToString();
}

absl::StatusOr<json> AdminClient::Call(const std::string& method, const std::string& target, const json& body,
                                       json* error_body) {
  api::ClientRequest r;
  r.address = config.admin.listen;
  if (r.address.host == "0.0.0.0") r.address.host = "127.0.0.1";
  r.method = method;
  r.target = target;
  r.timeout = std::chrono::seconds(15);
  if (!body.is_null()) {
    r.body = body.dump();
    r.headers.emplace_back("Content-Type", "application/json");
  }
  if (!config.admin.admin_token_env.empty()) {
    if (const char* t = std::getenv(config.admin.admin_token_env.c_str()))
      r.headers.emplace_back("Authorization", std::string("Bearer ") + t);
  }
  api::ClientResult res = api::HttpCall(r);
  if (!res.ok) {
    return absl::UnavailableError("cannot reach the admin listener at " + r.address.ToString() + " (" + res.error +
                                  "); is toolgate serve running with this config?");
  }
  json j = json::parse(res.body, nullptr, false);
  if (res.status < 200 || res.status >= 300) {
    std::string msg = "admin listener answered " + std::to_string(res.status);
    if (!j.is_discarded() && j.is_object())
      msg += ": " + j.value("error", std::string()) + ": " + j.value("message", std::string());
    if (res.status == 401) msg += "; " + TokenHint(config.admin.admin_token_env);
    if (error_body != nullptr && !j.is_discarded()) *error_body = j;
    return absl::FailedPreconditionError(msg);
  }
  if (j.is_discarded()) return absl::InternalError("admin listener answered with non-JSON");
  return j;
}

void ShowGlobalOptionsInHelp(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    sub->footer(
        "Global options (before or after the command):\n"
        "  --config TEXT               configuration file (TOML); default: the built-in configuration");
    ShowGlobalOptionsInHelp(*sub);
  }
}

int PrintOr(absl::StatusOr<json> r) {
  if (!r.ok()) return Fail(std::string(r.status().message()));
  std::printf("%s\n", r->dump(2).c_str());
  return kExitOk;
}

absl::StatusOr<std::unique_ptr<store::ItemStore>> OpenStoreReadOnly(const Config& config, const Clock& clock) {
  if (config.store.backend == "memory") {
    return absl::FailedPreconditionError("the memory store lives inside the server; there is nothing to read here");
  }
  StoreOpenOptions o;
  o.read_only = true;
  auto st = OpenConfiguredStore(config.store, clock, o);
  if (!st.ok()) return ExplainStoreOpenFailure(config.store, st.status());
  return st;
}

absl::Status ExplainStoreOpenFailure(const StoreConfig& store, absl::Status failure) {
  // A damaged file says so itself (SqliteItemStore), and a store that is not there is another matter.
  std::error_code ec;
  if (store.backend != "sqlite" || absl::IsDataLoss(failure) || !std::filesystem::exists(store.path, ec)) {
    return failure;
  }
  // SQLite cannot read a WAL store whose -shm it may not create, and says only "unable to open
  // database file": name what this user may not write, which is what serve would refuse too.
  auto not_writable = [](const std::string& path, const char* what) -> std::string {
    if (access(path.c_str(), W_OK) == 0) return "";
    return errno == EROFS ? "its volume is mounted read-only" : what;
  };
  std::string dir = std::filesystem::path(store.path).parent_path().string();
  if (dir.empty()) dir = ".";
  std::string why = not_writable(store.path, "the file");
  if (why.empty()) why = not_writable(dir, "its directory");
  if (why.empty()) return failure;
  return absl::FailedPreconditionError(
      absl::StrCat("sqlite store '", store.path, "' is read-only for this user (", why,
                   "): serve would refuse it; reading it failed too: ", failure.message()));
}

std::string StoreLocation(const StoreConfig& store) {
  if (store.backend == "sqlite") return "sqlite " + store.path;
  if (store.backend == "dynamodb") {
    return "dynamodb table " + store.table + (store.endpoint.empty() ? " in " + store.region : " at " + store.endpoint);
  }
  return store.backend;
}

absl::StatusOr<json> ReadLiveOrStore(const Config& config, const std::string& admin_path,
                                     const std::function<absl::StatusOr<json>(Engine&, const Clock&)>& from_store) {
  AdminClient admin{config};
  absl::StatusOr<json> live = admin.Call("GET", admin_path);
  if (live.ok() || !absl::IsUnavailable(live.status())) return live;
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) {
    return absl::UnavailableError(absl::StrCat("admin listener not answering at ", admin.address(),
                                               ", and the store cannot be read either: ", st.status().message()));
  }
  std::fprintf(stderr, "toolgate: admin listener not answering at %s; read from the store at %s\n",
               admin.address().c_str(), StoreLocation(config.store).c_str());
  std::unique_ptr<Engine> engine = Engine::Over(**st, config, clock);
  return from_store(*engine, clock);
}

}  // namespace toolgate::cli
