// The operator commands that go through the admin listener (status, queue status, breaker,
// kill-switch, limits, slo). `replay` and `executions` live in cli_replay.cc.

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "api/http.h"
#include "app/cli.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/engine/operator_status.h"
#include "toolgate/engine/slo_rules.h"

namespace toolgate::cli {

namespace {

// `toolgate slo status`: one line per connector and SLO.
int PrintSloStatus(const json& raw) {
  const json doc = ForTerminal(raw);
  std::printf(
      "evaluated at %s%s\n",
      doc.value("evaluated_at", json("never")).is_string() ? doc["evaluated_at"].get<std::string>().c_str() : "never",
      doc["error"].is_string() ? (" (last evaluation failed: " + doc["error"].get<std::string>() + ")").c_str() : "");
  std::printf("%-20s %-16s %8s %9s %8s %8s %8s %8s  %s\n", "CONNECTOR", "SLO", "TARGET", "BUDGET", "BURN 5m", "1h",
              "6h", "3d", "FIRING");
  for (const auto& s : doc["slos"]) {
    std::string firing;
    for (const auto& a : s["alarms"]) {
      if (a.value("firing", false))
        firing += (firing.empty() ? "" : ", ") + a["severity"].get<std::string>() + " " + a["tier"].get<std::string>();
    }
    const auto& b = s["burn_rates"];
    std::printf("%-20s %-16s %7.3f%% %8.1f%% %8.2f %8.2f %8.2f %8.2f  %s\n", s["connector"].get<std::string>().c_str(),
                s["slo"].get<std::string>().c_str(), 100 * s["target"].get<double>(),
                100 * s["error_budget_remaining"].get<double>(), b["5m"].get<double>(), b["1h"].get<double>(),
                b["6h"].get<double>(), b["3d"].get<double>(), firing.empty() ? "-" : firing.c_str());
  }
  return kExitOk;
}

// The fleet-wide status document (engine/operator_status.h), live or from the store.
absl::StatusOr<json> StatusDoc(const Config& config) {
  return ReadLiveOrStore(
      config, "/admin/status", [&config](Engine& engine, const Clock& clock) -> absl::StatusOr<json> {
        absl::StatusOr<json> doc = OperatorStatusJson(engine, clock);
        if (doc.ok()) return doc;
        // Which store, and its own words (a bare "disk I/O error" names neither).
        return absl::Status(doc.status().code(), absl::StrCat("the store at ", StoreLocation(config.store),
                                                              " cannot be read: ", doc.status().ToString()));
      });
}

int LimitsList(const Config& config, bool as_json) {
  auto r = StatusDoc(config);
  if (!r.ok()) return Fail(std::string(r.status().message()));
  json out = json::array();
  for (const auto& c : (*r)["connectors"]) {
    const json note = c.value("limit", json(nullptr));
    json l = {{"connector", c["id"]},
              {"max_in_flight", c["max_in_flight"]},
              {"config_max_in_flight", c.value("config_max_in_flight", json(nullptr))},
              {"set_by", c.value("limit_set_by_operator", false) ? "operator" : "config"},
              {"in_flight", c["in_flight"]}};
    if (note.is_object()) {  // an operator's limit: who, why, when
      l["requested_by"] = note.value("set_by", "");
      l["reason"] = note.value("reason", "");
      l["at"] = note.value("set_at", json(nullptr));
    }
    out.push_back(std::move(l));
  }
  if (as_json) {
    std::printf("%s\n", json{{"limits", out}}.dump(2).c_str());
    return kExitOk;
  }
  out = ForTerminal(std::move(out));
  std::printf("%-20s %8s %8s %-9s %9s  %-16s %-24s %s\n", "CONNECTOR", "LIMIT", "CONFIG", "SET BY", "IN FLIGHT", "BY",
              "SINCE", "REASON");
  for (const auto& l : out) {
    const json at = l.value("at", json(nullptr));
    std::printf("%-20s %8s %8s %-9s %9s  %-16s %-24s %s\n", l["connector"].get<std::string>().c_str(),
                l["max_in_flight"].dump().c_str(), l["config_max_in_flight"].dump().c_str(),
                l["set_by"].get<std::string>().c_str(), l["in_flight"].dump().c_str(),
                l.value("requested_by", "-").c_str(), at.is_string() ? at.get<std::string>().c_str() : "-",
                l.value("reason", "-").c_str());
  }
  return kExitOk;
}

int KillSwitchList(const Config& config, bool as_json) {
  auto r = ReadLiveOrStore(config, "/admin/kill-switches", [](Engine& engine, const Clock&) -> absl::StatusOr<json> {
    auto list = engine.kill_switches().List();
    if (!list.ok()) return list.status();
    json out = json::array();
    for (const auto& k : *list) {
      out.push_back(
          {{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}, {"requested_by", k.requested_by}, {"at", k.at}});
    }
    return json{{"kill_switches", out}};
  });
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (as_json) return PrintOr(std::move(r));
  *r = ForTerminal(std::move(*r));
  if ((*r)["kill_switches"].empty()) {
    std::printf("no kill switches are set\n");
    return kExitOk;
  }
  std::printf("%-14s %-24s %-16s %-24s %s\n", "SCOPE", "KEY", "BY", "SINCE", "REASON");
  for (const auto& k : (*r)["kill_switches"]) {
    std::printf("%-14s %-24s %-16s %-24s %s\n", k.value("scope", "").c_str(), k.value("key", "").c_str(),
                k.value("requested_by", "").c_str(), k.value("at", "").c_str(), k.value("reason", "").c_str());
  }
  return kExitOk;
}

// The status document's "store" line (engine/operator_status.h StoreHealthJson): the backend and
// whether the gateway that answered sees its writes fail, with the store's own message.
void PrintStoreHealth(const json& store) {
  if (!store.is_object()) return;
  const std::string backend = store.value("backend", "?");
  const json& failing = store["writes_failing"];
  const json& failure = store["last_write_failure"];
  if (failing.is_null()) {
    std::printf("store: %s; writes: not seen (no gateway answered: read from the store)\n", backend.c_str());
  } else if (failing.get<bool>()) {
    std::printf("store: %s; WRITES FAILING (/readyz answers 503 store_unwritable); last failed at %s: %s\n",
                backend.c_str(), failure.value("at", "?").c_str(), failure.value("message", "").c_str());
  } else {
    const json& ok_at = store["last_write_success_at"];
    std::printf("store: %s; writes ok (last at %s)\n", backend.c_str(),
                ok_at.is_string() ? ok_at.get<std::string>().c_str() : "?");
    if (failure.is_object()) {
      std::printf("  last write failure at %s: %s\n", failure.value("at", "?").c_str(),
                  failure.value("message", "").c_str());
    }
  }
}

// `toolgate status`: per connector what agents were answered over the last 5 minutes (every
// instance, from the store's counters), the breaker with who forced it, throttling, limits and the
// per-tenant share; then the kill switches in force.
int Status(const Config& config, bool as_json) {
  auto r = StatusDoc(config);
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (as_json) return PrintOr(std::move(r));
  *r = ForTerminal(std::move(*r));
  PrintStoreHealth(r->value("store", json(nullptr)));
  std::printf("last %d minutes, all instances\n", r->value("window_minutes", 5));
  std::printf("%-16s %-12s %9s %9s %11s %7s %7s %7s %8s %7s %7s %8s\n", "CONNECTOR", "BREAKER", "COOLDOWN", "THROTTLED",
              "IN FLIGHT", "CALLS", "OK", "FAILED", "DEFERRED", "BLOCKED", "QUEUED", "OLDEST");
  for (const auto& c : (*r)["connectors"]) {
    const json& b = c["breaker"];
    const json& o = c["last_5m"];
    const std::string limit = std::to_string(c["in_flight"].get<int64_t>()) + "/" +
                              std::to_string(c["max_in_flight"].get<int64_t>()) +
                              (c.value("limit_set_by_operator", false) ? "*" : "");
    std::printf(
        "%-16s %-12s %8llds %8llds %11s %7lld %7lld %7lld %8lld %7lld %7lld %7llds\n",
        c["id"].get<std::string>().c_str(), b["state"].get<std::string>().c_str(),
        static_cast<long long>(b["cooldown_remaining_s"].get<int64_t>()),
        static_cast<long long>(c.value("throttled_remaining_s", int64_t{0})), limit.c_str(),
        static_cast<long long>(o["calls"].get<int64_t>()), static_cast<long long>(o["succeeded"].get<int64_t>()),
        static_cast<long long>(o["failed"].get<int64_t>()), static_cast<long long>(o["deferred"].get<int64_t>()),
        static_cast<long long>(o["blocked"].get<int64_t>()), static_cast<long long>(c.value("queue_depth", int64_t{0})),
        static_cast<long long>(c.value("queue_oldest_age_s", int64_t{0})));
    std::string reasons;
    for (const auto& [reason, n] : o["deferred_by_reason"].items()) {
      reasons += (reasons.empty() ? "" : ", ") + reason + " " + n.dump();
    }
    if (!reasons.empty()) std::printf("  deferred: %s\n", reasons.c_str());
    // Under a per-tenant share, who holds the IN FLIGHT slots: how many tenants, and the most one holds.
    if (const int64_t share = c.value("max_in_flight_per_tenant", int64_t{0}); share > 0) {
      const int64_t busiest = c.value("busiest_tenant_in_flight", int64_t{0});
      std::printf("  per-tenant share %lld: %lld tenant(s) hold slots, the busiest %lld%s\n",
                  static_cast<long long>(share), static_cast<long long>(c.value("tenants_in_flight", int64_t{0})),
                  static_cast<long long>(busiest), busiest >= share ? " (at its share)" : "");
    }
    if (const int64_t expired = c.value("expired_leases", int64_t{0}); expired > 0) {
      std::printf(
          "  %lld of those in flight hold expired leases (an instance stopped without releasing them): a "
          "running instance reclaims them within 5 s, or the next call that finds the limit full\n",
          static_cast<long long>(expired));
    }
    if (c.contains("mcp") && c["mcp"].is_object()) {
      // An MCP connector's server as the fleet last saw it (design §17.7).
      const json& m = c["mcp"];
      auto text = [&m](const char* key, const char* unknown) {
        return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string(unknown);
      };
      std::printf("  %s server: %s %s (protocol %s), %lld tool(s), list refreshed %s\n", c.value("kind", "mcp").c_str(),
                  text("server_name", "(not reached yet)").c_str(), text("server_version", "").c_str(),
                  text("protocol_version", "?").c_str(), static_cast<long long>(m.value("tool_count", int64_t{0})),
                  text("tools_refreshed_at", "never").c_str());
    }
    if (b.contains("forced_by")) {
      std::printf("  forced open by %s at %s: %s\n", b.value("forced_by", "").c_str(),
                  b["forced_at"].is_string() ? b["forced_at"].get<std::string>().c_str() : "?",
                  b.value("forced_reason", "").c_str());
    }
    if (c.value("throttled_remaining_s", int64_t{0}) > 0) {
      std::printf("  throttled by the downstream until epoch %lld\n",
                  static_cast<long long>(c["throttled_until_epoch_sec"].get<int64_t>()));
    }
    if (c.value("limit_set_by_operator", false)) {
      const json note = c.value("limit", json::object());
      const json at = note.is_object() ? note.value("set_at", json(nullptr)) : json(nullptr);
      std::printf("  * limit %s set by %s at %s: %s (config: %s)\n", c["max_in_flight"].dump().c_str(),
                  note.is_object() ? note.value("set_by", "an operator").c_str() : "an operator",
                  at.is_string() ? at.get<std::string>().c_str() : "?",
                  note.is_object() ? note.value("reason", "").c_str() : "", c["config_max_in_flight"].dump().c_str());
    }
  }
  const json& kills = (*r)["kill_switches"];
  std::printf("\nkill switches: %s\n", kills.empty() ? "none" : "");
  for (const auto& k : kills) {
    std::printf("  %s %s by %s at %s: %s\n", k.value("scope", "").c_str(), k.value("key", "").c_str(),
                k.value("requested_by", "").c_str(), k.value("at", "").c_str(), k.value("reason", "").c_str());
  }
  return kExitOk;
}

// `toolgate queue status`: per connector the queued calls (fleet-wide), the oldest one's age and how
// many tenants have calls waiting — GET /admin/connectors, or the store's queues when the gateway is
// down.
int QueueStatus(const Config& config, bool as_json) {
  auto r = ReadLiveOrStore(config, "/admin/connectors", [](Engine& engine, const Clock& clock) -> absl::StatusOr<json> {
    json list = json::array();
    const int64_t now_ms = clock.now_epoch_ms();
    for (const auto& [id, c] : engine.config().connectors) {
      absl::StatusOr<QueueStats> q = engine.queue().Stats(id);
      if (!q.ok()) return q.status();
      list.push_back({{"id", id},
                      {"queue_depth", q->depth},
                      {"queue_oldest_age_s",
                       q->oldest_enqueued_ms == 0 ? 0 : std::max<int64_t>(0, (now_ms - q->oldest_enqueued_ms) / 1000)},
                      {"queue_tenants", q->tenants}});
    }
    return json{{"connectors", list}};
  });
  if (!r.ok()) return Fail(std::string(r.status().message()));
  json out = json::array();
  for (const auto& c : (*r)["connectors"]) {
    out.push_back({{"connector", c["id"]},
                   {"depth", c.value("queue_depth", int64_t{0})},
                   {"oldest_age_s", c.value("queue_oldest_age_s", int64_t{0})},
                   {"tenants", c.value("queue_tenants", int64_t{0})}});
  }
  if (as_json) {
    std::printf("%s\n", json{{"queues", out}}.dump(2).c_str());
    return kExitOk;
  }
  out = ForTerminal(std::move(out));
  std::printf("%-20s %9s %12s %8s\n", "CONNECTOR", "DEPTH", "OLDEST AGE", "TENANTS");
  for (const auto& q : out) {
    std::printf("%-20s %9lld %11llds %8lld\n", q["connector"].get<std::string>().c_str(),
                static_cast<long long>(q["depth"].get<int64_t>()),
                static_cast<long long>(q["oldest_age_s"].get<int64_t>()),
                static_cast<long long>(q["tenants"].get<int64_t>()));
  }
  return kExitOk;
}

std::string ConnectorPath(const std::string& connector, const std::string& action) {
  return "/admin/connectors/" + api::PercentEncode(connector) + "/" + action;
}

// What the operator commands parse. Shared by their callbacks; lives as long as the CLI::App.
struct OperatorOptions {
  std::string connector, reason, requested_by, scope, key, execution_id, token;
  bool force = false;
  bool as_json = false;
  int max_in_flight = 0;
  json Audit() const { return {{"reason", reason}, {"requested_by", requested_by}}; }
};

// --reason and --requested-by, required on every change (audited).
void AuditOptions(CLI::App* c, OperatorOptions& o) {
  c->add_option("--reason", o.reason, "why (audited)")->required();
  c->add_option("--requested-by", o.requested_by, "who asked (audited)")->required();
}

// Runs `f(admin)` with the admin client of the config; its exit code.
template <typename F>
void WithAdmin(Cli& cli, F f) {
  if (const Config* c = cli.config()) {
    AdminClient admin{*c};
    cli.exit_code = f(admin);
  }
}

void RegisterBreaker(CLI::App& app, Cli& cli, std::shared_ptr<OperatorOptions> o) {
  auto* breaker = app.add_subcommand("breaker", "open or close a connector's breaker");
  breaker->require_subcommand(1);
  auto* close = breaker->add_subcommand("close", "close after a health check (--force skips it)");
  auto* open = breaker->add_subcommand("open", "force the breaker open until closed by hand");
  for (auto* c : {close, open}) {
    c->add_option("connector", o->connector, "connector id")->required();
    AuditOptions(c, *o);
  }
  close->add_flag("--force", o->force, "close without the health check");
  close->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      json body = o->Audit();
      body["force"] = o->force;
      json refusal;
      auto r = admin.Call("POST", ConnectorPath(o->connector, "breaker/close"), body, &refusal);
      if (!r.ok() && refusal.value("error", "") == "connector_unhealthy") {
        // In the CLI's words: what was checked, what it answered, and the flag that skips it.
        const json& h = refusal.value("health", json::object());
        std::string result = h.value("error", "");
        if (result.empty()) result = "HTTP " + std::to_string(h.value("status", 0));
        return Fail("breaker of " + o->connector + " not closed: its health check GET " + h.value("target", "?") +
                    " failed (" + result + "). Fix the connector, or add --force to close without the check.");
      }
      return PrintOr(std::move(r));
    });
  });
  open->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      return PrintOr(admin.Call("POST", ConnectorPath(o->connector, "breaker/open"), o->Audit()));
    });
  });
}

void RegisterKillSwitch(CLI::App& app, Cli& cli, std::shared_ptr<OperatorOptions> o) {
  auto* kill = app.add_subcommand("kill-switch", "stop execution for a scope");
  kill->require_subcommand(1);
  auto* set = kill->add_subcommand("set", "set a kill switch");
  auto* clear = kill->add_subcommand("clear", "clear a kill switch");
  auto* list = kill->add_subcommand("list", "list kill switches");
  for (auto* c : {set, clear}) {
    c->add_option("scope", o->scope, "global | connector | tenant | action_type | tenant_action")->required();
    c->add_option("key", o->key, "'*' for global; tenant/action_type for tenant_action")->required();
    AuditOptions(c, *o);
  }
  set->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      json body = o->Audit();
      body["scope"] = o->scope;
      body["key"] = o->key;
      return PrintOr(admin.Call("PUT", "/admin/kill-switches", body));
    });
  });
  clear->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      std::string path = "/admin/kill-switches/" + api::PercentEncode(o->scope) + "/";
      for (char c : o->key) path += c == '/' ? std::string("/") : api::PercentEncode(std::string(1, c));
      return PrintOr(admin.Call("DELETE", path, o->Audit()));
    });
  });
  list->add_flag("--json", o->as_json, "print JSON");
  list->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = KillSwitchList(*c, o->as_json);
  });
}

void RegisterLimits(CLI::App& app, Cli& cli, std::shared_ptr<OperatorOptions> o) {
  auto* limits = app.add_subcommand("limits", "connector concurrency limits");
  limits->require_subcommand(1);
  auto* set = limits->add_subcommand("set", "set a connector's max_in_flight");
  set->add_option("connector", o->connector)->required();
  set->add_option("max_in_flight", o->max_in_flight)->required()->check(CLI::Range(1, 100000));
  AuditOptions(set, *o);
  set->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      json body = o->Audit();
      body["max_in_flight"] = o->max_in_flight;
      return PrintOr(admin.Call("PUT", ConnectorPath(o->connector, "limits"), body));
    });
  });
  auto* reset = limits->add_subcommand("reset", "hand a connector's limit back to the config");
  reset->add_option("connector", o->connector)->required();
  AuditOptions(reset, *o);
  reset->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      return PrintOr(admin.Call("DELETE", ConnectorPath(o->connector, "limits"), o->Audit()));
    });
  });
  auto* list = limits->add_subcommand("list", "every connector's limit, its config value and who set it");
  list->add_flag("--json", o->as_json, "print JSON");
  list->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = LimitsList(*c, o->as_json);
  });
}

void RegisterSlo(CLI::App& app, Cli& cli, std::shared_ptr<OperatorOptions> o) {
  auto* slo = app.add_subcommand("slo", "SLO burn rates, error budgets and alarms");
  slo->require_subcommand(1);
  auto* status = slo->add_subcommand("status", "every connector's SLOs as the fleet evaluates them (admin listener)");
  status->add_flag("--json", o->as_json, "print the /admin/slo document");
  status->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      auto doc = admin.Call("GET", "/admin/slo");
      if (!doc.ok() || o->as_json) return PrintOr(std::move(doc));
      return PrintSloStatus(*doc);
    });
  });
  auto* rules =
      slo->add_subcommand("rules", "Prometheus recording and alerting rules equivalent to the built-in alarms");
  rules->callback([&cli] {
    if (const Config* c = cli.config()) {
      std::printf("%s", PrometheusSloRules(*c).c_str());
      cli.exit_code = kExitOk;
    }
  });
}

}  // namespace

void RegisterOperatorCommands(CLI::App& app, Cli& cli) {
  auto o = std::make_shared<OperatorOptions>();
  auto* status = app.add_subcommand(
      "status", "per connector: the last 5 minutes' outcomes (all instances), breaker, limits; kill switches");
  status->add_flag("--json", o->as_json, "print the /admin/status document");
  status->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = Status(*c, o->as_json);
  });
  auto* queue = app.add_subcommand("queue", "queued calls (design §15)");
  queue->require_subcommand(1);
  auto* queue_status = queue->add_subcommand(
      "status", "per connector: queued calls (all instances), the oldest one's age, tenants waiting");
  queue_status->add_flag("--json", o->as_json, "print JSON");
  queue_status->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = QueueStatus(*c, o->as_json);
  });
  auto* queue_purge = queue->add_subcommand(
      "purge", "end every queued call of a connector not yet running (EXPIRED, reason purged); audited");
  queue_purge->add_option("connector", o->connector, "connector id")->required();
  AuditOptions(queue_purge, *o);
  queue_purge->callback([&cli, o] {
    WithAdmin(cli, [&](AdminClient& admin) {
      return PrintOr(admin.Call("DELETE", ConnectorPath(o->connector, "queue"), o->Audit()));
    });
  });
  RegisterBreaker(app, cli, o);
  RegisterKillSwitch(app, cli, o);
  RegisterLimits(app, cli, o);
  RegisterSlo(app, cli, o);
}

}  // namespace toolgate::cli
