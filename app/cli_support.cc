#include "app/cli.h"

#include <cstdio>
#include <cstdlib>

#include "api/http.h"
#include "toolgate/store_factory.h"

namespace toolgate::cli {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "toolgate: %s\n", msg.c_str());
  return kExitRefused;
}

const Config* Cli::config() {
  if (!loaded_) loaded_ = config_path.empty() ? absl::StatusOr<Config>(DefaultConfig()) : LoadConfig(config_path);
  if (!loaded_->ok()) {
    exit_code = Fail(std::string(loaded_->status().message()));
    return nullptr;
  }
  return &**loaded_;
}

absl::StatusOr<json> AdminClient::Call(const std::string& method, const std::string& target, const json& body) {
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
    if (const char* t = std::getenv(config.admin.admin_token_env.c_str())) r.headers.emplace_back("Authorization", std::string("Bearer ") + t);
  }
  api::ClientResult res = api::HttpCall(r);
  if (!res.ok) {
    return absl::UnavailableError("cannot reach the admin listener at " + r.address.ToString() + " (" + res.error +
                                  "); is toolgate serve running with this config?");
  }
  json j = json::parse(res.body, nullptr, false);
  if (res.status < 200 || res.status >= 300) {
    std::string msg = "admin listener answered " + std::to_string(res.status);
    if (!j.is_discarded() && j.is_object()) msg += ": " + j.value("error", std::string()) + ": " + j.value("message", std::string());
    return absl::FailedPreconditionError(msg);
  }
  if (j.is_discarded()) return absl::InternalError("admin listener answered with non-JSON");
  return j;
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
  return OpenConfiguredStore(config.store, clock, o);
}

// Verifies every execution's chain against its record and every day's audit chain against its head
// (LedgerVerifier). Prints a summary; the first problem fails the check.

}  // namespace toolgate::cli
