#include "app/cli.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
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
    exit_code = Fail(std::string(loaded_->status().message()));
    return nullptr;
  }
  return &**loaded_;
}

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
    if (error_body != nullptr && !j.is_discarded()) *error_body = j;
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
