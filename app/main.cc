// toolgate: the gateway server and the operator CLI (design §11).
// Exit codes: 0 ok, 1 refused or check failed (the message says why), 2 usage.

#include <utility>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "api/descriptor_limit.h"
#include "api/gateway.h"
#include "api/http.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/engine/slo_rules.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/item_json.h"
#include "toolgate/store/sqlite_item_store.h"
#include "toolgate/store_factory.h"

namespace {

using json = nlohmann::json;
using namespace toolgate;  // NOLINT: the program's own namespace

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;

// `toolgate slo status`: one line per connector and SLO.
int PrintSloStatus(const json& doc) {
  std::printf("evaluated at %s%s\n", doc.value("evaluated_at", json("never")).is_string() ? doc["evaluated_at"].get<std::string>().c_str() : "never",
              doc["error"].is_string() ? (" (last evaluation failed: " + doc["error"].get<std::string>() + ")").c_str() : "");
  std::printf("%-20s %-16s %8s %9s %8s %8s %8s %8s  %s\n", "CONNECTOR", "SLO", "TARGET", "BUDGET", "BURN 5m", "1h", "6h", "3d", "FIRING");
  for (const auto& s : doc["slos"]) {
    std::string firing;
    for (const auto& a : s["alarms"]) {
      if (a.value("firing", false)) firing += (firing.empty() ? "" : ", ") + a["severity"].get<std::string>() + " " + a["tier"].get<std::string>();
    }
    const auto& b = s["burn_rates"];
    std::printf("%-20s %-16s %7.3f%% %8.1f%% %8.2f %8.2f %8.2f %8.2f  %s\n", s["connector"].get<std::string>().c_str(),
                s["slo"].get<std::string>().c_str(), 100 * s["target"].get<double>(), 100 * s["error_budget_remaining"].get<double>(),
                b["5m"].get<double>(), b["1h"].get<double>(), b["6h"].get<double>(), b["3d"].get<double>(),
                firing.empty() ? "-" : firing.c_str());
  }
  return kExitOk;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "toolgate: %s\n", msg.c_str());
  return kExitRefused;
}

absl::StatusOr<Config> ReadConfig(const std::string& path) {
  if (path.empty()) return DefaultConfig();
  return LoadConfig(path);
}

// Calls the admin listener named in the config; prints the JSON answer or the error.
struct AdminClient {
  const Config& config;

  absl::StatusOr<json> Call(const std::string& method, const std::string& target, const json& body = nullptr) {
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
};

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

// Verifies every execution's chain (and that it still reaches the last event its record names)
// and every day's audit chain. Prints a summary; the first problem fails the check.
int LedgerVerify(const Config& config) {
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  store::ItemStore& store = **st;
  Ledger ledger(store, clock);
  ExecutionStore executions(store, clock);
  int64_t checked = 0, events = 0, expired = 0;
  std::string problem;
  absl::Status walk = executions.ForEach([&](const ExecutionRecord& r) -> absl::Status {
    auto chain = ledger.Read(Ledger::ExecutionChain(r.execution_id));
    if (!chain.ok()) return chain.status();
    std::string why;
    if (absl::Status s = Ledger::VerifyChain(*chain); !s.ok()) {
      why = std::string(s.message());
    } else if (!chain->empty() && chain->front().expires_at_s != r.expires_at_s) {
      why = "its events expire at " + std::to_string(chain->front().expires_at_s) + ", its record at " +
            std::to_string(r.expires_at_s);
    } else if (r.last_seq > 0 && static_cast<int64_t>(chain->size()) < r.last_seq) {
      why = "event " + std::to_string(r.last_seq) + " recorded as its last is missing";
    } else if (r.last_seq > 0 && (*chain)[static_cast<size_t>(r.last_seq - 1)].hash != r.last_hash) {
      why = "event " + std::to_string(r.last_seq) + " does not match the hash its record holds";
    }
    // A chain whose retention passed while it was being read is gone as a whole, not damaged.
    if (!why.empty() && r.expires_at_s > 0 && r.expires_at_s <= clock.now_epoch_sec()) {
      ++expired;
      return absl::OkStatus();
    }
    ++checked;
    events += static_cast<int64_t>(chain->size());
    if (!why.empty()) {
      problem = "execution " + r.execution_id + ": " + why;
      return absl::AbortedError("stop");
    }
    return absl::OkStatus();
  });
  if (!walk.ok() && problem.empty()) return Fail("ledger verify: " + std::string(walk.message()));
  if (problem.empty()) {
    // The audit chains, one per UTC day.
    auto days = ledger.AuditChains();
    if (!days.ok()) return Fail("ledger verify: " + std::string(days.status().message()));
    for (const auto& day : *days) {
      auto chain = ledger.Read(day);
      if (!chain.ok()) return Fail("ledger verify: " + std::string(chain.status().message()));
      if (absl::Status s = Ledger::VerifyChain(*chain); !s.ok()) {
        if (!chain->empty() && chain->front().expires_at_s > 0 && chain->front().expires_at_s <= clock.now_epoch_sec()) {
          ++expired;
          continue;
        }
        problem = day + ": " + std::string(s.message());
        break;
      }
      events += static_cast<int64_t>(chain->size());
    }
  }
  if (!problem.empty()) return Fail("ledger verify FAILED: " + problem);
  std::printf("ledger verify: ok (%lld executions, %lld events", static_cast<long long>(checked),
              static_cast<long long>(events));
  if (expired > 0) std::printf("; %lld chains reached their retention while being read", static_cast<long long>(expired));
  std::printf(")\n");
  return kExitOk;
}

json ExportedEvent(const LedgerEvent& e) {
  json data = json::parse(e.data, nullptr, false);
  if (data.is_discarded()) data = e.data;
  return {{"seq", e.seq},   {"type", e.type}, {"at", e.at},           {"actor", e.actor},
          {"data", data},   {"hash", e.hash}, {"prev_hash", e.prev_hash}};
}

// A UTC day "YYYY-MM-DD" as epoch ms at its start; nullopt when malformed.
std::optional<int64_t> ParseDay(const std::string& day) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (day.size() != 10 || std::sscanf(day.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 ||
      d < 1 || d > 31) {
    return std::nullopt;
  }
  // Days from the civil date (H. Hinnant's algorithm).
  y -= m <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * static_cast<unsigned>(m + (m > 2 ? -3 : 9)) + 2) / 5 + static_cast<unsigned>(d) - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const int64_t days = int64_t{era} * 146097 + static_cast<int64_t>(doe) - 719468;
  if (Rfc3339(days * 86'400'000).substr(0, 10) != day) return std::nullopt;  // e.g. 2026-02-30
  return days * 86'400'000;
}

// `ledger export`: every execution created in [since, until) with its whole chain, then every audit
// day in that range, one JSON object per line, hashes included so the archive can be verified
// without toolgate. Reads the store directly. Exit 1 (after exporting everything) if a chain fails
// verification.
int LedgerExport(const Config& config, const std::string& since, const std::string& until) {
  std::optional<int64_t> from = 0, to = std::numeric_limits<int64_t>::max();
  if (!since.empty() && !(from = ParseDay(since))) return Fail("--since must be a date YYYY-MM-DD (UTC)");
  if (!until.empty() && !(to = ParseDay(until))) return Fail("--until must be a date YYYY-MM-DD (UTC)");
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  store::ItemStore& store = **st;
  Ledger ledger(store, clock);
  int64_t executions = 0, days = 0, bad = 0;
  auto emit = [&](json line, const std::vector<LedgerEvent>& chain, const std::string& name) {
    line["events"] = json::array();
    for (const auto& e : chain) line["events"].push_back(ExportedEvent(e));
    if (absl::Status s = Ledger::VerifyChain(chain); !s.ok()) {
      ++bad;
      std::fprintf(stderr, "toolgate: %s: %s\n", name.c_str(), std::string(s.message()).c_str());
      line["verify_error"] = std::string(s.message());
    }
    std::printf("%s\n", line.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  };
  store::ScanRequest req{"TENANT#", "EXEC#", 500, std::nullopt};
  for (;;) {
    auto page = store.Scan(req);
    if (!page.ok()) return Fail("ledger export: " + std::string(page.status().message()));
    for (auto& [key, item] : page->items) {
      const int64_t created = store::GetInt(item, "created_at_ms").value_or(0);
      if (created < *from || created >= *to) continue;
      const std::string id = store::GetString(item, "execution_id").value_or("");
      auto chain = ledger.Read(Ledger::ExecutionChain(id));
      if (!chain.ok()) return Fail("ledger export: " + std::string(chain.status().message()));
      emit({{"kind", "execution"}, {"record", store::ItemToJson(item)}}, *chain, "execution " + id);
      ++executions;
    }
    if (!page->last_key) break;
    req.after = page->last_key;
  }
  auto chains = ledger.AuditChains();
  if (!chains.ok()) return Fail("ledger export: " + std::string(chains.status().message()));
  for (const auto& chain_name : *chains) {
    const std::optional<int64_t> day = ParseDay(chain_name.substr(6));
    if (!day || *day < *from || *day >= *to) continue;
    auto chain = ledger.Read(chain_name);
    if (!chain.ok()) return Fail("ledger export: " + std::string(chain.status().message()));
    emit({{"kind", "audit"}, {"day", chain_name.substr(6)}}, *chain, chain_name);
    ++days;
  }
  std::fprintf(stderr, "ledger export: %lld executions, %lld audit days%s\n", static_cast<long long>(executions),
               static_cast<long long>(days), bad > 0 ? (", " + std::to_string(bad) + " chains FAILED verification").c_str() : "");
  return bad > 0 ? kExitRefused : kExitOk;
}

int LedgerShow(const Config& config, const std::string& id) {
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  Ledger ledger(**st, clock);
  auto chain = ledger.Read(Ledger::ExecutionChain(id));
  if (!chain.ok()) return Fail(std::string(chain.status().message()));
  if (chain->empty()) return Fail("no ledger events for execution " + id);
  for (const auto& e : *chain) {
    std::printf("%4lld  %-24s %-20s %-28s %s\n", static_cast<long long>(e.seq), e.at.c_str(), e.type.c_str(),
                e.actor.c_str(), e.data.c_str());
  }
  absl::Status ok = Ledger::VerifyChain(*chain);
  std::printf("chain: %s\n", ok.ok() ? "ok" : std::string(ok.message()).c_str());
  return ok.ok() ? kExitOk : kExitRefused;
}

int Status(const Config& config) {
  AdminClient admin{config};
  auto r = admin.Call("GET", "/admin/connectors");
  if (!r.ok()) return Fail(std::string(r.status().message()));
  std::printf("%-20s %-12s %10s %14s %12s\n", "CONNECTOR", "BREAKER", "COOLDOWN", "IN FLIGHT", "ERRORS 5m");
  for (const auto& c : (*r)["connectors"]) {
    const json& b = c["breaker"];
    const std::string errors = c["error_ratio_5m"].is_number()
                                   ? std::to_string(static_cast<int>(c["error_ratio_5m"].get<double>() * 100)) + "%"
                                   : "-";
    std::printf("%-20s %-12s %9llds %7lld / %-5lld %12s\n", c["id"].get<std::string>().c_str(),
                b["state"].get<std::string>().c_str(), static_cast<long long>(b["cooldown_remaining_s"].get<int64_t>()),
                static_cast<long long>(c["in_flight"].get<int64_t>()),
                static_cast<long long>(c["max_in_flight"].get<int64_t>()), errors.c_str());
  }
  return kExitOk;
}

// Before the gateway settles its connection caps, which it derives from this limit.
void RaiseDescriptorLimit() {
  absl::StatusOr<api::DescriptorLimit> limit = api::RaiseDescriptorLimit();
  if (!limit.ok()) {
    spdlog::warn("descriptor limit (RLIMIT_NOFILE) left as it was: {}", limit.status().ToString());
  } else if (limit->soft != limit->soft_before) {
    spdlog::info("descriptor limit (RLIMIT_NOFILE): raised the soft limit from {} to {} (hard limit {})", limit->soft_before,
                 limit->soft, limit->hard);
  } else {
    spdlog::info("descriptor limit (RLIMIT_NOFILE): soft {}, hard {}", limit->soft, limit->hard);
  }
}

int Serve(const Config& config) {
  SystemClock clock;
  RaiseDescriptorLimit();
  auto gateway = api::Gateway::Create(config, clock);
  if (!gateway.ok()) return Fail(std::string(gateway.status().message()));
  if (absl::Status s = (*gateway)->Start(); !s.ok()) return Fail(std::string(s.message()));
  spdlog::info("toolgate serving ({}; store {} {})", config.source, config.store.backend, config.store.path);
  std::printf("toolgate: public API  http://%s:%d/v1\n", config.server.listen.host.c_str(), (*gateway)->public_port());
  std::printf("toolgate: admin       http://%s:%d/ (dashboard; metrics at /metrics)\n", config.admin.listen.host.c_str(),
              (*gateway)->admin_port());
  std::fflush(stdout);
  (*gateway)->Run();
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("toolgate"));
  CLI::App app{"toolgate: a reliability gateway for the tool calls of autonomous agents"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string config_path;
  app.add_option("--config", config_path, "configuration file (TOML); default: the built-in configuration");

  auto* serve = app.add_subcommand("serve", "run the gateway");
  auto* version = app.add_subcommand("version", "print the version");
  auto* status = app.add_subcommand("status", "connectors, breakers and in-flight calls (admin listener)");

  auto* breaker = app.add_subcommand("breaker", "open or close a connector's breaker");
  breaker->require_subcommand(1);
  std::string connector, reason, requested_by;
  bool force = false;
  auto* breaker_close = breaker->add_subcommand("close", "close after a health check (--force skips it)");
  auto* breaker_open = breaker->add_subcommand("open", "force the breaker open until closed by hand");
  for (auto* c : {breaker_close, breaker_open}) {
    c->add_option("connector", connector, "connector id")->required();
    c->add_option("--reason", reason, "why (audited)")->required();
    c->add_option("--requested-by", requested_by, "who asked (audited)")->required();
  }
  breaker_close->add_flag("--force", force, "close without the health check");

  auto* kill = app.add_subcommand("kill-switch", "stop execution for a scope");
  kill->require_subcommand(1);
  std::string scope, key;
  auto* kill_set = kill->add_subcommand("set", "set a kill switch");
  auto* kill_clear = kill->add_subcommand("clear", "clear a kill switch");
  auto* kill_list = kill->add_subcommand("list", "list kill switches");
  for (auto* c : {kill_set, kill_clear}) {
    c->add_option("scope", scope, "global | connector | tenant | action_type | tenant_action")->required();
    c->add_option("key", key, "'*' for global; tenant/action_type for tenant_action")->required();
    c->add_option("--reason", reason, "why (audited)")->required();
    c->add_option("--requested-by", requested_by, "who asked (audited)")->required();
  }

  auto* limits = app.add_subcommand("limits", "connector concurrency limits");
  limits->require_subcommand(1);
  auto* limits_set = limits->add_subcommand("set", "set a connector's max_in_flight");
  int max_in_flight = 0;
  limits_set->add_option("connector", connector)->required();
  limits_set->add_option("max_in_flight", max_in_flight)->required()->check(CLI::Range(1, 100000));
  limits_set->add_option("--reason", reason, "why (audited)")->required();
  limits_set->add_option("--requested-by", requested_by, "who asked (audited)")->required();

  auto* ledger = app.add_subcommand("ledger", "the execution ledger (reads the store directly)");
  ledger->require_subcommand(1);
  std::string execution_id;
  auto* ledger_show = ledger->add_subcommand("show", "an execution's events");
  ledger_show->add_option("execution_id", execution_id)->required();
  auto* ledger_verify = ledger->add_subcommand("verify", "check every hash chain; exit 1 naming the first bad event");
  std::string since, until;
  auto* ledger_export = ledger->add_subcommand(
      "export", "every execution and audit day as JSON lines with their hashes (archive before retention ends)");
  ledger_export->add_option("--since", since, "first UTC day to export, YYYY-MM-DD (default: the oldest kept)");
  ledger_export->add_option("--until", until, "UTC day to stop before, YYYY-MM-DD (default: no end)");

  auto* store_cmd = app.add_subcommand("store", "store maintenance");
  store_cmd->require_subcommand(1);
  auto* check = store_cmd->add_subcommand(
      "check", "SQLite: run the integrity check (read-only); DynamoDB: check the table answers");
  auto* store_init = store_cmd->add_subcommand(
      "init", "DynamoDB: create the table (pk, sk; on-demand) and enable TTL on `ttl`; SQLite: create the file");

  auto* replay = app.add_subcommand("replay", "replay an execution (public API, with an operator's token)");
  std::string replay_token;
  replay->add_option("execution_id", execution_id)->required();
  replay->add_option("--reason", reason, "replay_reason (audited)")->required();
  replay->add_option("--requested-by", requested_by, "who asked (audited)")->required();
  replay->add_option("--token", replay_token, "a JWT of the execution's tenant with the operator or admin role")->required();
  replay->add_flag("--force", force, "re-execute even if the intent already succeeded (admin role)");
  auto* slo = app.add_subcommand("slo", "SLO burn rates, error budgets and alarms");
  slo->require_subcommand(1);
  auto* slo_status = slo->add_subcommand("status", "every connector's SLOs as the fleet evaluates them (admin listener)");
  bool as_json = false;
  slo_status->add_flag("--json", as_json, "print the /admin/slo document");
  auto* slo_rules = slo->add_subcommand("rules", "Prometheus recording and alerting rules equivalent to the built-in alarms");

  auto* dev_token = app.add_subcommand("dev-token", "print an HS256 token signed with the configured secret (development)");
  std::string tenant, account, subject = "dev-user";
  std::vector<std::string> roles;
  int ttl_s = 3600;
  dev_token->add_option("--tenant", tenant, "custom:tenant_id")->required();
  dev_token->add_option("--account", account, "custom:account_id");
  dev_token->add_option("--sub", subject, "sub");
  dev_token->add_option("--role", roles, "role (repeatable): operator, admin");
  dev_token->add_option("--ttl", ttl_s, "seconds until exp")->check(CLI::Range(1, 7 * 86400));

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
  auto config = ReadConfig(config_path);
  if (!config.ok()) return Fail(std::string(config.status().message()));

  if (*serve) return Serve(*config);
  if (*status) return Status(*config);
  AdminClient admin{*config};
  const json audit = {{"reason", reason}, {"requested_by", requested_by}};
  if (*breaker_close) {
    json body = audit;
    body["force"] = force;
    return PrintOr(admin.Call("POST", "/admin/connectors/" + api::PercentEncode(connector) + "/breaker/close", body));
  }
  if (*breaker_open) return PrintOr(admin.Call("POST", "/admin/connectors/" + api::PercentEncode(connector) + "/breaker/open", audit));
  if (*kill_set) {
    json body = audit;
    body["scope"] = scope;
    body["key"] = key;
    return PrintOr(admin.Call("PUT", "/admin/kill-switches", body));
  }
  if (*kill_clear) {
    std::string path = "/admin/kill-switches/" + api::PercentEncode(scope) + "/";
    for (char c : key) path += c == '/' ? std::string("/") : api::PercentEncode(std::string(1, c));
    return PrintOr(admin.Call("DELETE", path, audit));
  }
  if (*kill_list) return PrintOr(admin.Call("GET", "/admin/kill-switches"));
  if (*limits_set) {
    json body = audit;
    body["max_in_flight"] = max_in_flight;
    return PrintOr(admin.Call("PUT", "/admin/connectors/" + api::PercentEncode(connector) + "/limits", body));
  }
  if (*ledger_verify) return LedgerVerify(*config);
  if (*ledger_show) return LedgerShow(*config, execution_id);
  if (*ledger_export) return LedgerExport(*config, since, until);
  if (*check) {
    SystemClock clock;
    if (config->store.backend == "dynamodb") {
      auto st = OpenStoreReadOnly(*config, clock);
      if (!st.ok()) return Fail(std::string(st.status().message()));
      auto probe = (*st)->Get({"TOOLGATE#CHECK", "CHECK"});
      if (!probe.ok()) return Fail(std::string(probe.status().message()));
      std::printf("store dynamodb table %s: answers\n", config->store.table.c_str());
      return kExitOk;
    }
    store::SqliteItemStore::Options o;
    o.path = config->store.path;
    o.read_only = true;
    o.sweep_interval_ms = 0;
    auto s = store::SqliteItemStore::Open(o, clock);
    if (!s.ok()) return Fail(std::string(s.status().message()));
    if (absl::Status ok = (*s)->CheckIntegrity(); !ok.ok()) return Fail(std::string(ok.message()));
    std::printf("store %s: ok\n", config->store.path.c_str());
    return kExitOk;
  }
  if (*store_init) {
    SystemClock clock;
    auto st = OpenConfiguredStore(config->store, clock);
    if (!st.ok()) return Fail(std::string(st.status().message()));
    if (auto* dynamo = dynamic_cast<store::DynamoDbItemStore*>(st->get()); dynamo != nullptr) {
      auto report = dynamo->InitTable();
      if (!report.ok()) return Fail(std::string(report.status().message()));
      std::printf("%s", report->c_str());
    } else {
      std::printf("store %s (%s): ready\n", config->store.backend.c_str(), config->store.path.c_str());
    }
    return kExitOk;
  }
  if (*dev_token) {
    const char* secret = std::getenv(config->auth.hs256_secret_env.c_str());
    if (secret == nullptr || *secret == '\0') return Fail("$" + config->auth.hs256_secret_env + " is not set");
    SystemClock clock;
    json claims = {{"sub", subject}, {"custom:tenant_id", tenant}, {"exp", clock.now_epoch_sec() + ttl_s},
                   {"iat", clock.now_epoch_sec()}};
    if (!account.empty()) claims["custom:account_id"] = account;
    if (!roles.empty()) claims["custom:roles"] = roles;
    std::printf("%s\n", auth::SignHs256(claims.dump(), secret).c_str());
    return kExitOk;
  }
  if (*replay) {
    api::ClientRequest r;
    r.address = config->server.listen;
    if (r.address.host == "0.0.0.0") r.address.host = "127.0.0.1";
    r.method = "POST";
    r.target = "/v1/executions/" + api::PercentEncode(execution_id) + "/replay";
    r.body = json{{"replay_reason", reason}, {"requested_by", requested_by}, {"force", force}}.dump();
    r.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + replay_token}};
    r.timeout = std::chrono::seconds(660);
    api::ClientResult res = api::HttpCall(r);
    if (!res.ok) return Fail("cannot reach the public listener at " + r.address.ToString() + " (" + res.error + ")");
    std::printf("%s\n", res.body.c_str());
    return res.status == 200 ? kExitOk : kExitRefused;
  }
  if (*slo_rules) {
    std::printf("%s", PrometheusSloRules(*config).c_str());
    return kExitOk;
  }
  if (*slo_status) {
    auto doc = admin.Call("GET", "/admin/slo");
    if (!doc.ok() || as_json) return PrintOr(std::move(doc));
    return PrintSloStatus(*doc);
  }
  return kExitUsage;
}
