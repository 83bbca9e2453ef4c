#include "api/admin_replays.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "api/api_support.h"
#include "api/invocation.h"
#include "api/views.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/replay_job_store.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate::api {

namespace {

constexpr std::string_view kExecutions = "/admin/executions";
constexpr std::string_view kReplays = "/admin/replays";
constexpr int64_t kMaxJobPollMs = 5000;  // how often (at least) an instance looks for jobs nobody holds
constexpr int kMaxRatePerSecond = 100;
constexpr size_t kMaxDryRunListed = 10000;

// Who did it, in the ledger and the audit: the operator named by requested_by.
std::string OperatorActor(const std::string& requested_by) { return "admin:" + requested_by; }

json AdminExecutionJson(const ExecutionRecord& r) {
  json j = ExecutionJson(r);
  j["tenant_id"] = r.tenant_id;
  if (!r.account_id.empty()) j["account_id"] = r.account_id;
  return j;
}

json JobJson(const ReplayJob& j) {
  json filter = ParseJsonWithin(j.filter_json);
  json out = {{"job_id", j.job_id},
              {"state", j.state},
              {"replay_reason", j.reason},
              {"requested_by", j.requested_by},
              {"force", j.force},
              {"rate_per_s", j.rate_per_s},
              {"filter", filter.is_discarded() ? json::object() : filter},
              {"created_at", Rfc3339(j.created_at_ms)},
              {"updated_at", Rfc3339(j.updated_at_ms)},
              {"counts",
               {{"planned", j.planned},
                {"replayed", j.replayed},
                {"deduped", j.deduped},
                {"refused", j.refused},
                {"failed", j.failed},
                {"interrupted", j.interrupted},
                {"done", j.next_index}}},
              {"cursor", {{"next_index", j.next_index}, {"last_execution_id", j.last_execution_id}}}};
  // The original whose replay has begun and is not recorded yet (a killed instance leaves it set).
  if (j.in_flight_index >= 0) out["cursor"]["in_flight_index"] = j.in_flight_index;
  if (j.finished_at_ms > 0) out["finished_at"] = Rfc3339(j.finished_at_ms);
  if (!j.owner.empty()) out["running_on"] = j.owner;
  if (!j.cancelled_by.empty()) out["cancelled_by"] = j.cancelled_by;
  return out;
}

// A filter field as text, from the query string or from a JSON body (numbers as digits, a list of
// outcomes joined with commas).
using FieldReader = std::function<std::optional<std::string>(const char*)>;

FieldReader QueryFields(const std::multimap<std::string, std::string>& query) {
  return [&query](const char* name) -> std::optional<std::string> {
    auto it = query.find(name);
    if (it == query.end()) return std::nullopt;
    return it->second;
  };
}

FieldReader BodyFields(const json& body) {
  return [&body](const char* name) -> std::optional<std::string> {
    if (!body.contains(name) || body[name].is_null()) return std::nullopt;
    const json& v = body[name];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_array()) {
      std::string joined;
      for (const json& e : v) joined += (joined.empty() ? "" : ",") + (e.is_string() ? e.get<std::string>() : e.dump());
      return joined;
    }
    return v.dump();  // refused below as not what the field takes
  };
}

// The listing filter of both GET /admin/executions and POST /admin/replays; the error to answer.
std::variant<HttpResponse, ExecutionStore::AdminListFilter> ParseFilter(const FieldReader& field, bool paged) {
  ExecutionStore::AdminListFilter f;
  for (auto [name, target] :
       {std::pair{"connector", &f.connector}, std::pair{"tenant", &f.tenant}, std::pair{"tool", &f.tool}}) {
    if (auto v = field(name)) {
      if (!IsValidToolName(*v) && !(std::string(name) == "tenant" && !v->empty() && v->size() <= 256)) {
        return Error(400, "invalid_request", absl::StrCat(name, " is not a valid ", name, " name"));
      }
      *target = *v;
    }
  }
  if (auto v = field("outcome")) {
    for (absl::string_view o : absl::StrSplit(*v, ',', absl::SkipEmpty())) {
      if (!ParseOutcome(std::string_view(o.data(), o.size()))) {
        return Error(400, "invalid_request",
                     absl::StrCat("outcome: unknown outcome '", std::string(o),
                                  "' (SUCCEEDED, FAILED, DEFERRED, BLOCKED, ...; comma-separated)"));
      }
      f.outcomes.emplace_back(o);
    }
  }
  for (auto [name, target] : {std::pair{"since", &f.since_ms}, std::pair{"until", &f.until_ms}}) {
    if (auto v = field(name)) {
      *target = ParseTimeMs(*v);
      if (!*target) {
        return Error(400, "invalid_request",
                     absl::StrCat(name, " must be epoch milliseconds or RFC 3339 (e.g. 2026-11-30T10:00Z)"));
      }
    }
  }
  if (!paged) return f;
  if (auto v = field("limit")) {
    if (v->empty() || v->size() > 4 || v->find_first_not_of("0123456789") != std::string::npos || std::stoi(*v) < 1 ||
        std::stoi(*v) > 1000) {
      return Error(400, "invalid_request", "limit must be 1..1000");
    }
    f.limit = std::stoi(*v);
  }
  // `cursor` (§17.9) or `after` (§6): the `next` of the previous page.
  if (auto v = field("cursor")) f.cursor = *v;
  if (auto v = field("after")) f.cursor = *v;
  return f;
}

bool FilterIsEmpty(const ExecutionStore::AdminListFilter& f) {
  return f.connector.empty() && f.tenant.empty() && f.tool.empty() && f.outcomes.empty() && !f.since_ms && !f.until_ms;
}

json FilterJson(const ExecutionStore::AdminListFilter& f) {
  json j = json::object();
  if (!f.connector.empty()) j["connector"] = f.connector;
  if (!f.tenant.empty()) j["tenant"] = f.tenant;
  if (!f.tool.empty()) j["tool"] = f.tool;
  if (!f.outcomes.empty()) j["outcome"] = f.outcomes;
  if (f.since_ms) j["since"] = Rfc3339(*f.since_ms);
  if (f.until_ms) j["until"] = Rfc3339(*f.until_ms);
  return j;
}

// What one replay asked of the admin side, and what became of it.
struct ReplayAsk {
  std::string execution_id;
  std::string tenant_id;  // known (a job's entry) or empty: found from the execution
  std::string reason;
  std::string requested_by;
  bool force = false;
  std::string job_id;  // a server job's id, or a CLI run's id (its resume looks for it)
};

struct ReplayDone {
  HttpResponse answer;
  std::string kind;  // replayed | deduped | refused | failed (ReplayJob's counts)
  std::string original_id;
};

std::string KindOf(const InvokeResult& answer) {
  if (answer.refused() || answer.outcome != Outcome::kSucceeded) return "failed";
  return answer.details.value("deduplicated", false) ? "deduped" : "replayed";
}

}  // namespace

HttpResponse ListExecutionsFromStore(Engine& engine, const std::multimap<std::string, std::string>& query) {
  auto parsed = ParseFilter(QueryFields(query), /*paged=*/true);
  if (auto* bad = std::get_if<HttpResponse>(&parsed)) return *bad;
  auto page = engine.executions().ListAll(std::get<ExecutionStore::AdminListFilter>(parsed));
  if (!page.ok()) {
    if (absl::IsInvalidArgument(page.status()))
      return Error(400, "invalid_request", std::string(page.status().message()));
    return Error(503, "store_unavailable", "the store cannot be read right now");
  }
  json list = json::array();
  for (const auto& r : page->executions) list.push_back(AdminExecutionJson(r));
  return Json(200, {{"executions", list}, {"next", page->next ? json(*page->next) : json(nullptr)}});
}

HttpResponse ListReplayJobsFromStore(ReplayJobStore& jobs, const std::multimap<std::string, std::string>& query) {
  int limit = 50;
  if (auto it = query.find("limit"); it != query.end()) {
    if (it->second.empty() || it->second.size() > 4 ||
        it->second.find_first_not_of("0123456789") != std::string::npos || std::stoi(it->second) < 1 ||
        std::stoi(it->second) > 1000) {
      return Error(400, "invalid_request", "limit must be 1..1000");
    }
    limit = std::stoi(it->second);
  }
  auto list = jobs.List(limit);
  if (!list.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
  json out = json::array();
  for (const auto& j : *list) out.push_back(JobJson(j));
  return Json(200, {{"jobs", out}});
}

HttpResponse GetReplayJobFromStore(ReplayJobStore& jobs, const std::string& job_id) {
  if (!LooksLikeUuid(job_id)) return Error(404, "not_found", "no such replay job");
  auto job = jobs.Get(job_id);
  if (!job.ok()) {
    return absl::IsNotFound(job.status()) ? Error(404, "not_found", "no such replay job")
                                          : Error(503, "store_unavailable", "the store cannot be read right now");
  }
  return Json(200, JobJson(*job));
}

struct AdminReplays::Impl : GatewayContext {
  explicit Impl(GatewayContext& g)
      : GatewayContext(g),
        jobs(g.engine.store(), g.clock, g.config.LargestClockSkewS()),
        lease_ms(int64_t{g.config.admin.replay_job_lease_s} * 1000),
        skew_ms(int64_t{g.config.LargestClockSkewS()} * 1000),
        poll_ms(std::min(kMaxJobPollMs, lease_ms / 2)) {}

  ReplayJobStore jobs;
  const int64_t lease_ms;  // [admin] replay_job_lease_s: a job's claim lapses this long after its last step
  const int64_t skew_ms;   // ...and is taken over this much later still (the fleet's largest clock skew)
  const int64_t poll_ms;   // how often RunJobsForever looks for jobs nobody holds (a lapsed claim too)
  absl::Mutex mu;
  std::set<std::string> running ABSL_GUARDED_BY(mu);  // jobs this instance is running
  std::optional<asio::any_io_executor> executor ABSL_GUARDED_BY(mu);

  // --- routing ---

  asio::awaitable<HttpResponse> Route(const HttpRequest& req) {
    if (req.path == kExecutions) {
      if (req.method != "GET") co_return Error(405, "method_not_allowed", "use GET");
      co_return co_await RunBlocking(pool, [&] { return ListExecutions(req); });
    }
    if (req.path.rfind(std::string(kExecutions) + "/", 0) == 0) {
      const std::string rest = req.path.substr(kExecutions.size() + 1);
      constexpr std::string_view kReplaySuffix = "/replay";
      if (rest.size() > kReplaySuffix.size() &&
          rest.compare(rest.size() - kReplaySuffix.size(), kReplaySuffix.size(), kReplaySuffix) == 0) {
        if (req.method != "POST") co_return Error(405, "method_not_allowed", "use POST");
        auto replay_op = ReplayRoute(req, rest.substr(0, rest.size() - kReplaySuffix.size()));
        co_return co_await std::move(replay_op);
      }
      if (req.method != "GET") co_return Error(405, "method_not_allowed", "use GET");
      co_return co_await RunBlocking(pool, [&] { return GetExecution(rest); });
    }
    if (req.path == kReplays) {
      if (req.method == "GET") co_return co_await RunBlocking(pool, [&] { return ListJobs(req); });
      if (req.method == "POST") {
        auto create_op = CreateJob(req);
        co_return co_await std::move(create_op);
      }
      co_return Error(405, "method_not_allowed", "use GET or POST");
    }
    const std::string job_id = req.path.substr(kReplays.size() + 1);
    if (req.method == "GET") co_return co_await RunBlocking(pool, [&] { return GetJob(job_id); });
    if (req.method == "DELETE") co_return co_await RunBlocking(pool, [&] { return CancelJob(req, job_id); });
    co_return Error(405, "method_not_allowed", "use GET or DELETE");
  }

  // --- listing ---

  HttpResponse ListExecutions(const HttpRequest& req) {
    if (HasTenantFields(req, nullptr)) {
      return Error(400, "invalid_request", "filter by tenant with `tenant=`; tenant_id/account_id are not parameters");
    }
    return ListExecutionsFromStore(engine, req.query);
  }

  HttpResponse GetExecution(const std::string& id) {
    if (!LooksLikeUuid(id)) return Error(404, "not_found", "execution not found");
    auto rec = engine.executions().Locate(id);
    if (!rec.ok()) {
      if (absl::IsNotFound(rec.status())) return Error(404, "not_found", "execution not found");
      return Error(503, "store_unavailable", "the store cannot be read right now");
    }
    auto events = engine.ledger().ReadExecution(*rec);
    if (absl::IsDataLoss(events.status())) {
      return Error(500, "internal", "this execution's ledger cannot be read: run `toolgate ledger verify`");
    }
    if (!events.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    json j = AdminExecutionJson(*rec);
    j["events"] = json::array();
    j["replays"] = json::array();
    for (const auto& e : *events) {
      j["events"].push_back(EventJson(e));
      if (e.type == "REPLAY_REQUESTED") j["replays"].push_back(j["events"].back()["data"]["execution_id"]);
    }
    return Json(200, j);
  }

  // --- one replay: the path the single route and every job share ---

  asio::awaitable<ReplayDone> Replay(ReplayAsk ask) {
    auto prepare = [&]() -> std::variant<InvokeResult, InvokeRequest> {
      if (!LooksLikeUuid(ask.execution_id)) return InvokeResult::Refused(InvokeError::kNotFound, "execution not found");
      absl::StatusOr<ExecutionRecord> original = ask.tenant_id.empty()
                                                     ? engine.executions().Locate(ask.execution_id)
                                                     : engine.executions().Get(ask.tenant_id, ask.execution_id);
      if (!original.ok()) {
        return absl::IsNotFound(original.status())
                   ? InvokeResult::Refused(InvokeError::kNotFound, "execution not found")
                   : InvokeResult::Refused(InvokeError::kStoreUnavailable, "the store cannot be read right now");
      }
      // The tenant is the original's (S11): the operator acts inside it, as its admin.
      Principal who{OperatorActor(ask.requested_by), original->tenant_id, original->account_id, {"admin"}};
      ReplayOrder order{who, ask.execution_id, ask.reason, ask.requested_by, ask.force, ask.job_id};
      return engine.replayer().Prepare(order);
    };
    auto prepared = co_await RunBlocking(pool, prepare);
    if (auto* refusal = std::get_if<InvokeResult>(&prepared)) {
      co_return ReplayDone{ToHttp(*refusal), "refused", ask.execution_id};
    }
    InvokeRequest ir = std::move(std::get<InvokeRequest>(prepared));
    auto run = RunInvocation(*this, ir);
    InvokeResult answer = co_await std::move(run);
    const std::string original_id = ir.replay->original_id;
    const std::string kind = KindOf(answer);
    const std::string outcome = answer.refused() ? "" : std::string(ToString(answer.outcome));
    const bool reached_tool = answer.reached_tool;
    auto finish = [&] {
      if (!reached_tool) engine.replayer().Finish(ir, reached_tool);
      json data = {{"execution_id", original_id},
                   {"replay_execution_id", ir.execution_id},
                   {"tenant_id", ir.principal.tenant_id},
                   {"tool_name", ir.tool_name},
                   {"outcome", outcome},
                   {"result", kind},
                   {"force", ask.force},
                   {"reason", ask.reason},
                   {"requested_by", ask.requested_by}};
      if (!ask.job_id.empty()) data["job_id"] = ask.job_id;
      return engine.ledger().Audit("EXECUTION_REPLAYED", OperatorActor(ask.requested_by), Dump(data)).status();
    };
    absl::Status audited = co_await RunBlocking(pool, finish);
    HttpResponse http = ToHttp(answer);
    if (!audited.ok()) {
      spdlog::error("audit EXECUTION_REPLAYED of {} not written: {}", ir.execution_id, audited.ToString());
      http = Error(503, "store_unavailable",
                   absl::StrCat("replay ", ir.execution_id, " ran but its audit event could not be written"));
    }
    co_return ReplayDone{std::move(http), kind, original_id};
  }

  // POST /admin/executions/{id}/replay
  asio::awaitable<HttpResponse> ReplayRoute(const HttpRequest& req, std::string id) {  // id by value: a coroutine
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/false);
    if (parsed.error) co_return *parsed.error;
    const json& b = parsed.value;
    if (HasTenantFields(req, &b)) {
      co_return Error(
          400, "tenant_from_execution_only",
          "an operator's replay runs in its original's tenant; tenant_id and account_id are not parameters");
    }
    if (auto bad = CheckReplayBody(b)) co_return *bad;
    ReplayAsk ask{id, "", b["replay_reason"], b["requested_by"], b.value("force", false), ""};
    if (b.contains("run_id")) {
      if (!b["run_id"].is_string() || !IsValidToolName(b["run_id"].get<std::string>())) {
        co_return Error(400, "invalid_request", "run_id must match [A-Za-z0-9_.-]{1,200}");
      }
      ask.job_id = b["run_id"];
    }
    auto replay_op = Replay(std::move(ask));
    ReplayDone done = co_await std::move(replay_op);
    co_return std::move(done.answer);
  }

  // --- jobs ---

  // What a POST /admin/replays asks for, checked: the job to store and how to find its originals.
  struct JobRequest {
    ReplayJob job;
    std::optional<std::vector<std::string>> ids;  // execution_ids given, or
    ExecutionStore::AdminListFilter filter;       // the filter (originals only, until the job's creation)
    json filter_json;
    bool dry_run = false;
  };

  // The body of POST /admin/replays checked into a JobRequest, or the 400 that names what is wrong.
  std::variant<HttpResponse, JobRequest> ParseJobRequest(const HttpRequest& req) {
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/false);
    if (parsed.error) return *parsed.error;
    const json& b = parsed.value;
    if (HasTenantFields(req, &b)) {
      return Error(400, "tenant_from_execution_only",
                   "each replay runs in its original's tenant; select tenants with \"tenant\", not tenant_id");
    }
    if (auto bad = CheckReplayBody(b)) return *bad;
    JobRequest ask;
    ask.job.rate_per_s = 5;
    if (b.contains("rate_per_s")) {
      if (!b["rate_per_s"].is_number_integer() || b["rate_per_s"].get<int64_t>() < 1 ||
          b["rate_per_s"].get<int64_t>() > kMaxRatePerSecond) {
        return Error(400, "invalid_request", absl::StrCat("rate_per_s must be an integer in 1..", kMaxRatePerSecond));
      }
      ask.job.rate_per_s = static_cast<int>(b["rate_per_s"].get<int64_t>());
    }
    if (b.contains("dry_run") && !b["dry_run"].is_boolean())
      return Error(400, "invalid_request", "dry_run must be a boolean");
    ask.dry_run = b.value("dry_run", false);
    if (b.contains("execution_ids")) {
      if (!b["execution_ids"].is_array() || b["execution_ids"].empty()) {
        return Error(400, "invalid_request", "execution_ids must be a non-empty list of execution ids");
      }
      ask.ids.emplace();
      for (const json& e : b["execution_ids"]) {
        if (!e.is_string() || !LooksLikeUuid(e.get<std::string>())) {
          return Error(400, "invalid_request", "execution_ids must hold execution ids (UUIDs)");
        }
        ask.ids->push_back(e.get<std::string>());
      }
    }
    auto filter_or = ParseFilter(BodyFields(b), /*paged=*/false);
    if (auto* bad = std::get_if<HttpResponse>(&filter_or)) return *bad;
    ask.filter = std::get<ExecutionStore::AdminListFilter>(filter_or);
    if (ask.ids && !FilterIsEmpty(ask.filter))
      return Error(400, "invalid_request", "give execution_ids or a filter, not both");
    if (!ask.ids && FilterIsEmpty(ask.filter)) {
      return Error(400, "invalid_request",
                   "say what to replay: execution_ids, or a filter (connector, tenant, tool, outcome, since, until)");
    }
    ask.job.job_id = NewUuidV7(clock);
    ask.job.reason = b["replay_reason"];
    ask.job.requested_by = b["requested_by"];
    ask.job.force = b.value("force", false);
    ask.job.created_at_ms = clock.now_epoch_ms();
    // A job replays originals that exist now: never its own replays, never later calls. `until` is
    // exclusive and a call takes about a millisecond: a call answered in the job's own millisecond
    // existed before it, and is in.
    ask.filter.originals_only = true;
    if (!ask.filter.until_ms) ask.filter.until_ms = ask.job.created_at_ms + 1;
    ask.filter_json = ask.ids ? json{{"execution_ids", ask.ids->size()}} : FilterJson(ask.filter);
    ask.job.filter_json = Dump(ask.filter_json);
    return ask;
  }

  // The originals a job will replay (blocking: run on the pool). An id that names no execution is kept
  // without a tenant, to be counted as refused (not found).
  std::variant<HttpResponse, std::vector<ExecutionRecord>> FindOriginals(const JobRequest& ask) {
    std::vector<ExecutionRecord> found;
    if (ask.ids) {
      for (const std::string& id : *ask.ids) {
        auto r = engine.executions().Locate(id);
        if (r.ok()) {
          found.push_back(std::move(*r));
        } else if (absl::IsNotFound(r.status())) {
          ExecutionRecord missing;
          missing.execution_id = id;
          found.push_back(std::move(missing));
        } else {
          return Error(503, "store_unavailable", "the store cannot be read right now");
        }
      }
      return found;
    }
    ExecutionStore::AdminListFilter f = ask.filter;
    f.limit = 1000;
    for (;;) {
      auto page = engine.executions().ListAll(f);
      if (!page.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      for (auto& r : page->executions) found.push_back(std::move(r));
      if (static_cast<int64_t>(found.size()) > ReplayJobStore::kMaxEntries) {
        return Error(409, "too_many_matches",
                     absl::StrCat("more than ", ReplayJobStore::kMaxEntries,
                                  " executions match; narrow the filter (since/until, connector, tenant)"));
      }
      if (!page->next) return found;
      f.cursor = *page->next;
    }
  }

  // A dry run's answer: what would be replayed (the first kMaxDryRunListed).
  static HttpResponse DryRunAnswer(const JobRequest& ask, const std::vector<ExecutionRecord>& originals) {
    json list = json::array();
    for (const auto& r : originals) {
      if (list.size() == kMaxDryRunListed) break;
      list.push_back(r.tenant_id.empty() ? json{{"execution_id", r.execution_id}, {"error", "not_found"}}
                                         : AdminExecutionJson(r));
    }
    return Json(200, {{"dry_run", true},
                      {"matched", originals.size()},
                      {"filter", ask.filter_json},
                      {"executions", list},
                      {"truncated", originals.size() > kMaxDryRunListed}});
  }

  // Stores the job and its entries and audits REPLAY_JOB_CREATED (blocking: run on the pool).
  HttpResponse StoreJob(const JobRequest& ask, const std::vector<ReplayJobEntry>& entries) {
    const ReplayJob& job = ask.job;
    if (absl::Status s = jobs.Create(job, entries); !s.ok()) {
      return Error(503, "store_unavailable", "the store cannot be written right now");
    }
    json data = {{"job_id", job.job_id},
                 {"matched", entries.size()},
                 {"filter", ask.filter_json},
                 {"rate_per_s", job.rate_per_s},
                 {"force", job.force},
                 {"reason", job.reason},
                 {"requested_by", job.requested_by}};
    if (auto e = engine.ledger().Audit("REPLAY_JOB_CREATED", OperatorActor(job.requested_by), Dump(data)); !e.ok()) {
      spdlog::error("audit REPLAY_JOB_CREATED not written: {}", e.status().ToString());
    }
    return Json(202,
                {{"job_id", job.job_id}, {"matched", entries.size()}, {"state", entries.empty() ? "DONE" : "RUNNING"}});
  }

  // POST /admin/replays: the originals are fixed now (the filter, or the ids), then replayed by a job.
  asio::awaitable<HttpResponse> CreateJob(const HttpRequest& req) {
    auto parsed = ParseJobRequest(req);
    if (auto* bad = std::get_if<HttpResponse>(&parsed)) co_return *bad;
    const JobRequest& ask = std::get<JobRequest>(parsed);
    auto planned = co_await RunBlocking(pool, [&] { return FindOriginals(ask); });
    if (auto* bad = std::get_if<HttpResponse>(&planned)) co_return *bad;
    const std::vector<ExecutionRecord>& originals = std::get<std::vector<ExecutionRecord>>(planned);
    if (ask.dry_run) co_return DryRunAnswer(ask, originals);
    std::vector<ReplayJobEntry> entries;
    entries.reserve(originals.size());
    for (const auto& r : originals) entries.emplace_back(r.tenant_id, r.execution_id);  // no tenant: not found
    HttpResponse answer = co_await RunBlocking(pool, [&] { return StoreJob(ask, entries); });
    if (answer.status == 202 && !entries.empty()) Launch(ask.job.job_id);
    co_return answer;
  }

  HttpResponse ListJobs(const HttpRequest& req) { return ListReplayJobsFromStore(jobs, req.query); }

  HttpResponse GetJob(const std::string& job_id) { return GetReplayJobFromStore(jobs, job_id); }

  // DELETE /admin/replays/{job_id}, body {reason, requested_by}: no replay starts after it.
  HttpResponse CancelJob(const HttpRequest& req, const std::string& job_id) {
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/true);
    if (parsed.error) return *parsed.error;
    const json& body = parsed.value;
    if (auto bad = CheckAudit(body)) return *bad;
    if (!LooksLikeUuid(job_id)) return Error(404, "not_found", "no such replay job");
    auto cancelled = jobs.Cancel(job_id, OperatorActor(body["requested_by"]));
    if (!cancelled.ok()) {
      return absl::IsNotFound(cancelled.status())
                 ? Error(404, "not_found", "no such replay job")
                 : Error(503, "store_unavailable", "the store cannot be written right now");
    }
    auto job = jobs.Get(job_id);
    if (!job.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    if (!*cancelled)
      return Json(409, {{"error", "job_finished"}, {"message", "the job has already ended"}, {"job", JobJson(*job)}});
    json data = {{"job_id", job_id},
                 {"done", job->next_index},
                 {"planned", job->planned},
                 {"reason", body["reason"]},
                 {"requested_by", body["requested_by"]}};
    if (auto e = engine.ledger().Audit("REPLAY_JOB_CANCELLED", OperatorActor(body["requested_by"]), Dump(data));
        !e.ok()) {
      return Error(503, "store_unavailable", "the job was cancelled but its audit event could not be written");
    }
    return Json(200, JobJson(*job));
  }

  void Launch(const std::string& job_id) {
    std::optional<asio::any_io_executor> ex;
    {
      absl::MutexLock lock(&mu);
      ex = executor;
    }
    if (ex) asio::co_spawn(*ex, RunJob(job_id), asio::detached);  // else RunJobsForever takes it up
  }

  asio::awaitable<void> RunJobsForever() {
    {
      auto ex = co_await asio::this_coro::executor;
      absl::MutexLock lock(&mu);
      executor = ex;
    }
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!draining) {
      auto list = co_await RunBlocking(pool, [this] { return jobs.List(100); });
      if (list.ok()) {
        const int64_t now = clock.now_epoch_ms();
        for (const ReplayJob& j : *list) {
          if (j.state == "RUNNING" &&
              (j.owner.empty() || j.owner == engine.instance_id() || j.lease_until_ms < now - skew_ms)) {
            Launch(j.job_id);
          }
        }
      } else {
        spdlog::warn("replay jobs: cannot list: {}", list.status().ToString());
      }
      timer.expires_after(std::chrono::milliseconds(poll_ms));
      co_await timer.async_wait(asio::use_awaitable);
    }
  }

  // Whether `id`'s chain names a replay by `job_id` (blocking): an entry begun before a restart.
  absl::StatusOr<bool> WasReplayedByJob(const std::string& id, const std::string& job_id) {
    auto events = engine.ledger().Read(Ledger::ExecutionChain(id));
    if (!events.ok()) return events.status();
    for (const auto& e : *events) {
      const json d = ParseJsonWithin(e.data);
      if (e.type == "REPLAY_REQUESTED" && d.is_object() && d.value("job_id", "") == job_id) return true;
    }
    return false;
  }

  // Audits REPLAY_JOB_FINISHED with the job's final counts (blocking). Returns 0 (RunBlocking wants a value).
  int AuditJobFinished(const std::string& job_id) {
    auto final_state = jobs.Get(job_id);
    if (!final_state.ok()) return 0;
    json data = JobJson(*final_state)["counts"];
    data["job_id"] = job_id;
    if (auto e = engine.ledger().Audit("REPLAY_JOB_FINISHED", "system", Dump(data)); !e.ok()) {
      spdlog::error("audit REPLAY_JOB_FINISHED not written: {}", e.status().ToString());
    }
    return 0;
  }

  // Replays a job's originals from its cursor at its rate while this instance holds its claim.
  asio::awaitable<void> RunJob(std::string job_id) {
    {
      absl::MutexLock lock(&mu);
      if (!running.insert(job_id).second) co_return;
    }
    struct Leave {
      Impl& impl;
      const std::string& id;
      ~Leave() {
        absl::MutexLock lock(&impl.mu);
        impl.running.erase(id);
      }
    } leave{*this, job_id};
    const std::string owner = engine.instance_id();
    auto claimed = co_await RunBlocking(pool, [&] { return jobs.Claim(job_id, owner, lease_ms); });
    if (!claimed.ok() || !claimed->has_value()) co_return;
    ReplayJob job = **claimed;
    spdlog::info("replay job {}: running from {} of {} at {}/s", job_id, job.next_index, job.planned, job.rate_per_s);
    asio::steady_timer pace(co_await asio::this_coro::executor);
    const auto interval = std::chrono::microseconds(1000000 / std::max(1, job.rate_per_s));
    auto next_at = std::chrono::steady_clock::now();
    std::vector<ReplayJobEntry> batch;
    int64_t batch_from = 0;
    while (!draining && job.next_index < job.planned) {
      const int64_t index = job.next_index;
      if (batch.empty() || index < batch_from || index >= batch_from + static_cast<int64_t>(batch.size())) {
        auto read = co_await RunBlocking(pool, [&] { return jobs.Entries(job_id, index, 100); });
        if (!read.ok() || read->empty()) {
          spdlog::warn("replay job {}: cannot read its executions at {}", job_id, index);
          break;
        }
        batch = std::move(*read);
        batch_from = index;
      }
      // Named copies, not a structured binding: clang 14 cannot capture a binding in the lambdas below.
      const std::string tenant = batch[static_cast<size_t>(index - batch_from)].first;
      const std::string id = batch[static_cast<size_t>(index - batch_from)].second;
      std::string result;
      if (job.in_flight_index == index) {
        // Begun before a restart: replayed already if its original's chain names this job.
        auto seen = co_await RunBlocking(pool, [&] { return WasReplayedByJob(id, job_id); });
        if (!seen.ok()) break;
        if (*seen) result = "interrupted";
      }
      if (result.empty()) {
        if (std::chrono::steady_clock::now() < next_at) {
          pace.expires_at(next_at);
          co_await pace.async_wait(asio::use_awaitable);
        }
        next_at = std::max(next_at + interval, std::chrono::steady_clock::now());
        auto began = co_await RunBlocking(pool, [&] { return jobs.Begin(job_id, owner, index, lease_ms); });
        if (!began.ok() || !*began) break;  // cancelled, taken over, or the store is away
        if (tenant.empty()) {
          result = "refused";  // not found when the job was made
        } else {
          auto replay_op = Replay(ReplayAsk{id, tenant, job.reason, job.requested_by, job.force, job_id});
          ReplayDone done = co_await std::move(replay_op);
          result = done.kind;
        }
      }
      auto recorded = co_await RunBlocking(pool, [&] { return jobs.Record(job_id, owner, index, id, result); });
      if (!recorded.ok() || !*recorded) break;
      job.next_index = index + 1;
      job.in_flight_index = -1;
    }
    if (job.next_index >= job.planned) {
      co_await RunBlocking(pool, [&] { return AuditJobFinished(job_id); });
      spdlog::info("replay job {}: done", job_id);
    }
  }

  void ReleaseClaims() {
    std::set<std::string> mine;
    {
      absl::MutexLock lock(&mu);
      mine = running;
    }
    for (const std::string& id : mine) {
      if (absl::Status s = jobs.Release(id, engine.instance_id()); !s.ok()) {
        spdlog::warn("replay job {}: claim not given back ({}); another instance takes it when it lapses", id,
                     s.ToString());
      }
    }
  }
};

AdminReplays::AdminReplays(GatewayContext& context) : impl_(std::make_unique<Impl>(context)) {}
AdminReplays::~AdminReplays() = default;

bool AdminReplays::Serves(const std::string& path) {
  return path == kExecutions || path.rfind(std::string(kExecutions) + "/", 0) == 0 || path == kReplays ||
         (path.rfind(std::string(kReplays) + "/", 0) == 0 && path.size() > kReplays.size() + 1);
}

asio::awaitable<HttpResponse> AdminReplays::Handle(HttpRequest request) {
  auto op = impl_->Route(request);  // `request` lives in this frame until the route has answered
  co_return co_await std::move(op);
}

asio::awaitable<void> AdminReplays::RunJobsForever() {
  auto op = impl_->RunJobsForever();
  co_await std::move(op);
}

void AdminReplays::ReleaseClaims() { impl_->ReleaseClaims(); }

}  // namespace toolgate::api
