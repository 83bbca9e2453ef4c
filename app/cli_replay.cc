// Replays by operators (admin listener): `executions list` (the store when the listener is down), `replay ID`, `replay
// --from-list FILE|-` (client-side, paced, resumable), `replays list|show|cancel` (server-side bulk jobs; list and show
// read the store when the listener is down), and the tenant-token form `replay ID --token JWT` (public API).
//
// `replay --from-list` keeps a progress file (FILE.progress, or --progress; required with `-`):
// "run <id>" once, then "begin <execution_id>" before each replay and "done <execution_id> <result>
// <replay_id>" after it, each flushed to disk. The run id goes with every replay (REPLAY_REQUESTED
// names it), so `--resume` skips what is done and, for an id begun but not done (an interruption
// mid-request), asks the admin listener whether the original's ledger already holds this run's
// replay: nothing is replayed twice.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/status/statusor.h"
#include "api/admin_replays.h"
#include "api/http.h"
#include "app/cli.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/services/replay_job_store.h"
#include "toolgate/domain/ids.h"

namespace toolgate::cli {

namespace {

struct ReplayOptions {
  std::string execution_id;
  std::string from_list;
  std::string progress;
  std::string reason;
  std::string requested_by;
  std::string token;
  std::string rate = "5";
  bool dry_run = false;
  bool force = false;
  bool resume = false;
  // executions list / replays
  std::string connector, tenant, tool, outcome, since, until, cursor;
  int limit = 50;
  bool all_pages = false;
  bool as_json = false;
  std::string job_id;
};

// The listing's query parameters (GET /admin/executions), and the same as a query string.
std::multimap<std::string, std::string> QueryFields(const ReplayOptions& o, const std::string& cursor) {
  std::multimap<std::string, std::string> q;
  for (auto [k, v] : {std::pair{"connector", &o.connector}, std::pair{"tenant", &o.tenant}, std::pair{"tool", &o.tool},
                      std::pair{"outcome", &o.outcome}, std::pair{"since", &o.since}, std::pair{"until", &o.until},
                      std::pair{"cursor", &cursor}}) {
    if (!v->empty()) q.emplace(k, *v);
  }
  q.emplace("limit", std::to_string(o.limit));
  return q;
}

std::string QueryString(const std::multimap<std::string, std::string>& fields) {
  std::string q;
  for (const auto& [k, v] : fields) q += (q.empty() ? "?" : "&") + k + "=" + api::PercentEncode(v);
  return q;
}

// An admin read's answer as the CLI's result: the JSON of a 200, else an error naming it.
absl::StatusOr<json> Answered(const api::HttpResponse& r) {
  json j = json::parse(r.body, nullptr, false);
  if (r.status == 200 && !j.is_discarded()) return j;
  std::string msg = "answered " + std::to_string(r.status);
  if (j.is_object()) msg += ": " + j.value("error", std::string()) + ": " + j.value("message", std::string());
  return absl::FailedPreconditionError(msg);
}

// A field for the text views, Printable (ForTerminal).
std::string Text(const json& j, const char* key) {
  return Printable(j.contains(key) && j[key].is_string() ? j[key].get<std::string>()
                                                         : (j.contains(key) ? j[key].dump() : "-"));
}

int ExecutionsList(const Config& config, const ReplayOptions& o) {
  json all = json::array();
  std::string cursor = o.cursor;
  json next = nullptr;
  for (int page = 0; page < 100000; ++page) {
    const auto fields = QueryFields(o, cursor);
    // With the server stopped, the same page from the store (and a note on stderr saying so).
    auto r = ReadLiveOrStore(
        config, "/admin/executions" + QueryString(fields),
        [&fields](Engine& engine, const Clock&) { return Answered(api::ListExecutionsFromStore(engine, fields)); });
    if (!r.ok()) return Fail(std::string(r.status().message()));
    for (auto& e : (*r)["executions"]) all.push_back(e);
    next = (*r)["next"];
    // One page unless --all (a page may come back short with `next` set: the scan is bounded).
    if (!o.all_pages || !next.is_string()) break;
    cursor = next.get<std::string>();
  }
  if (o.as_json) {
    std::printf("%s\n", json{{"executions", all}, {"next", next}}.dump(2).c_str());
    return kExitOk;
  }
  std::printf("%-36s  %-16s %-24s %-10s %-20s %-24s %s\n", "EXECUTION", "TENANT", "TOOL", "OUTCOME", "REASON",
              "CREATED", "REPLAY OF");
  for (const auto& e : all) {
    std::printf("%-36s  %-16s %-24s %-10s %-20s %-24s %s\n", Text(e, "execution_id").c_str(),
                Text(e, "tenant_id").c_str(), Text(e, "tool_name").c_str(), Text(e, "outcome").c_str(),
                Text(e, "reason").c_str(), Text(e, "created_at").c_str(),
                e.contains("replay_of") ? Text(e, "replay_of").c_str() : "-");
  }
  if (next.is_string()) std::printf("more: --cursor %s (or --all)\n", next.get<std::string>().c_str());
  return kExitOk;
}

// "5", "5/s", "0.5/s" → calls per second.
std::optional<double> ParseRate(std::string text) {
  if (text.size() > 2 && text.compare(text.size() - 2, 2, "/s") == 0) text.resize(text.size() - 2);
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used != text.size() || !(v > 0) || v > 100) return std::nullopt;
    return v;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Execution ids from a list: one per line (anything after the id ignored; '#' comments), or the
// JSON of `executions list --json`.
std::vector<std::string> ReadIds(std::istream& in) {
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> ids;
  const std::string all = text.str();
  const json doc = json::parse(all, nullptr, false);
  if (!doc.is_discarded() && (doc.is_object() || doc.is_array())) {
    const json& list = doc.is_object() ? doc.value("executions", json::array()) : doc;
    for (const auto& e : list) {
      if (e.is_string()) ids.push_back(e.get<std::string>());
      if (e.is_object() && e.contains("execution_id") && e["execution_id"].is_string())
        ids.push_back(e["execution_id"]);
    }
    return ids;
  }
  std::istringstream lines(all);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string id;
    if (words >> id && id[0] != '#' && id != "EXECUTION") ids.push_back(id);
  }
  return ids;
}

// The replay's answer as one line: original, outcome (or refusal), new execution.
void PrintResult(const std::string& id, const absl::StatusOr<json>& r, int status_code, const json& body,
                 bool as_json) {
  if (as_json) {
    std::printf("%s\n", json{{"execution_id", id}, {"status", status_code}, {"answer", body}}.dump().c_str());
  } else if (body.contains("error")) {
    std::printf("%s  REFUSED %d %s: %s\n", id.c_str(), status_code, Text(body, "error").c_str(),
                Text(body, "message").c_str());
  } else {
    std::printf("%s  %-9s%s -> %s%s\n", id.c_str(), Text(body, "outcome").c_str(),
                body.value("deduplicated", false) ? " (deduplicated)" : "", Text(body, "execution_id").c_str(),
                body.contains("reason") ? (" reason=" + Text(body, "reason")).c_str() : "");
  }
  (void)r;
  std::fflush(stdout);
}

struct AdminAnswer {
  int status = 0;
  json body;
  std::string error;  // transport
};

AdminAnswer AdminRaw(const Config& config, const std::string& method, const std::string& target, const json& body) {
  api::ClientRequest r;
  r.address = config.admin.listen;
  if (r.address.host == "0.0.0.0") r.address.host = "127.0.0.1";
  r.method = method;
  r.target = target;
  r.timeout = std::chrono::seconds(660);
  if (!body.is_null()) {
    r.body = body.dump();
    r.headers.emplace_back("Content-Type", "application/json");
  }
  if (!config.admin.admin_token_env.empty()) {
    if (const char* t = std::getenv(config.admin.admin_token_env.c_str()))
      r.headers.emplace_back("Authorization", std::string("Bearer ") + t);
  }
  api::ClientResult res = api::HttpCall(r);
  if (!res.ok)
    return {0, nullptr, "cannot reach the admin listener at " + r.address.ToString() + " (" + res.error + ")"};
  json j = json::parse(res.body, nullptr, false);
  return {res.status, j.is_discarded() ? json::object() : j, ""};
}

json ReplayBody(const ReplayOptions& o, const std::string& run_id) {
  json b = {{"replay_reason", o.reason}, {"requested_by", o.requested_by}};
  if (o.force) b["force"] = true;
  if (!run_id.empty()) b["run_id"] = run_id;
  return b;
}

// `replay ID --token JWT`: the public API, in the token's tenant (S11).
int ReplayWithToken(const Config& config, const ReplayOptions& o) {
  api::ClientRequest r;
  r.address = config.server.listen;
  if (r.address.host == "0.0.0.0") r.address.host = "127.0.0.1";
  r.method = "POST";
  r.target = "/v1/executions/" + api::PercentEncode(o.execution_id) + "/replay";
  r.body = json{{"replay_reason", o.reason}, {"requested_by", o.requested_by}, {"force", o.force}}.dump();
  r.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + o.token}};
  r.timeout = std::chrono::seconds(660);
  api::ClientResult res = api::HttpCall(r);
  if (!res.ok) return Fail("cannot reach the public listener at " + r.address.ToString() + " (" + res.error + ")");
  std::printf("%s\n", Printable(res.body).c_str());  // JSON stays JSON: only controls are written as escapes
  return res.status == 200 ? kExitOk : kExitRefused;
}

int ReplayOne(const Config& config, const ReplayOptions& o) {
  if (!o.token.empty()) return ReplayWithToken(config, o);
  AdminAnswer a = AdminRaw(config, "POST", "/admin/executions/" + api::PercentEncode(o.execution_id) + "/replay",
                           ReplayBody(o, ""));
  if (!a.error.empty()) return Fail(a.error);
  if (o.as_json) {
    std::printf("%s\n", a.body.dump(2).c_str());
  } else {
    PrintResult(o.execution_id, json(), a.status, a.body, false);
  }
  return a.status == 200 ? kExitOk : kExitRefused;
}

class ProgressFile {
 public:
  explicit ProgressFile(std::string path) : path_(std::move(path)) {}
  // Reads what an earlier run recorded.
  void Load() {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream w(line);
      std::string what, id;
      w >> what >> id;
      if (what == "run") run_id_ = id;
      if (what == "begin") begun_.insert(id);
      if (what == "done") done_.insert(id);
    }
  }
  bool exists() const { return access(path_.c_str(), F_OK) == 0; }
  bool Open() {
    f_ = std::fopen(path_.c_str(), "a");
    return f_ != nullptr;
  }
  ~ProgressFile() {
    if (f_) std::fclose(f_);
  }
  void Write(const std::string& line) {
    std::fprintf(f_, "%s\n", line.c_str());
    std::fflush(f_);
    fsync(fileno(f_));
  }
  const std::string& path() const { return path_; }
  std::string run_id_;
  std::set<std::string> begun_, done_;

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

// The execution ids of --from-list (a file, or - for stdin), each checked to be one.
absl::StatusOr<std::vector<std::string>> ReadIdList(const std::string& from_list) {
  std::vector<std::string> ids;
  if (from_list == "-") {
    ids = ReadIds(std::cin);
  } else {
    std::ifstream in(from_list);
    if (!in) return absl::InvalidArgumentError("cannot read --from-list " + from_list);
    ids = ReadIds(in);
  }
  for (const auto& id : ids) {
    if (!LooksLikeUuid(id)) return absl::InvalidArgumentError("--from-list: '" + id + "' is not an execution id");
  }
  return ids;
}

// After an interruption mid-request: whether the original's ledger shows a replay by this run.
absl::StatusOr<bool> ReplayedByRun(const Config& config, const std::string& id, const std::string& run_id) {
  AdminAnswer look = AdminRaw(config, "GET", "/admin/executions/" + api::PercentEncode(id), nullptr);
  if (!look.error.empty()) return absl::UnavailableError(look.error);
  for (const auto& e : look.body.value("events", json::array())) {
    if (e.value("type", "") == "REPLAY_REQUESTED" && e.contains("data") && e["data"].value("job_id", "") == run_id) {
      return true;
    }
  }
  return false;
}

int ReplayFromList(const Config& config, const ReplayOptions& o) {
  const std::optional<double> rate = ParseRate(o.rate);
  if (!rate) return Fail("--rate must be calls per second, more than 0 and at most 100 (e.g. 5 or 5/s)");
  absl::StatusOr<std::vector<std::string>> listed = ReadIdList(o.from_list);
  if (!listed.ok()) return Fail(std::string(listed.status().message()));
  const std::vector<std::string>& ids = *listed;
  if (o.dry_run) {
    for (const auto& id : ids) std::printf("%s  would be replayed\n", id.c_str());
    std::printf("dry run: %zu execution(s); nothing replayed\n", ids.size());
    return kExitOk;
  }
  std::string progress_path = o.progress;
  if (progress_path.empty()) {
    if (o.from_list == "-") return Fail("reading the list from stdin: name a progress file with --progress FILE");
    progress_path = o.from_list + ".progress";
  }
  ProgressFile progress(progress_path);
  if (progress.exists() && !o.resume) {
    return Fail("progress file " + progress_path +
                " exists: an earlier run of this list; add --resume to go on with it "
                "(or remove the file to start over)");
  }
  if (o.resume) progress.Load();
  if (!progress.Open()) return Fail("cannot write the progress file " + progress_path);
  if (progress.run_id_.empty()) {
    const SystemClock clock;
    progress.run_id_ = "cli-" + NewUuidV7(clock);
    progress.Write("run " + progress.run_id_);
  }
  const auto interval = std::chrono::microseconds(static_cast<int64_t>(1e6 / *rate));
  auto next_at = std::chrono::steady_clock::now();
  int refused = 0, skipped = 0;
  for (const std::string& id : ids) {
    if (progress.done_.count(id)) {
      ++skipped;
      continue;
    }
    if (progress.begun_.count(id)) {
      absl::StatusOr<bool> seen = ReplayedByRun(config, id, progress.run_id_);
      if (!seen.ok()) return Fail(std::string(seen.status().message()));
      if (*seen) {
        progress.Write("done " + id + " interrupted -");
        std::printf("%s  replayed before the interruption (see its ledger)\n", id.c_str());
        continue;
      }
    }
    std::this_thread::sleep_until(next_at);  // the pace the operator asked for
    next_at = std::max(next_at + interval, std::chrono::steady_clock::now());
    progress.Write("begin " + id);
    AdminAnswer a = AdminRaw(config, "POST", "/admin/executions/" + api::PercentEncode(id) + "/replay",
                             ReplayBody(o, progress.run_id_));
    if (!a.error.empty()) return Fail(a.error + "; run again with --resume to go on");
    if (a.status == 503 && a.body.value("error", "") == "store_unavailable") {
      return Fail("the store is unavailable; run again with --resume to go on");
    }
    const std::string result =
        a.body.contains("error") ? "refused:" + a.body.value("error", "") : a.body.value("outcome", "?");
    progress.Write("done " + id + " " + result + " " + a.body.value("execution_id", "-"));
    if (a.body.contains("error")) ++refused;
    PrintResult(id, json(), a.status, a.body, o.as_json);
  }
  if (skipped > 0) std::fprintf(stderr, "toolgate: %d execution(s) already done in an earlier run, skipped\n", skipped);
  return refused == 0 ? kExitOk : kExitRefused;
}

// A replay job's document, live or from the store.
absl::StatusOr<json> ReplayJobDoc(const Config& config, const std::string& job_id) {
  return ReadLiveOrStore(config, "/admin/replays/" + api::PercentEncode(job_id),
                         [&job_id](Engine& engine, const Clock& clock) {
                           ReplayJobStore jobs(engine.store(), clock, engine.config().LargestClockSkewS());
                           return Answered(api::GetReplayJobFromStore(jobs, job_id));
                         });
}

// `replays show`: the job and its counts as lines (--json: the /admin/replays/{job_id} document).
int ReplaysShow(const Config& config, const ReplayOptions& o) {
  auto r = ReplayJobDoc(config, o.job_id);
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (o.as_json) return PrintOr(std::move(r));
  const json& j = *r;
  const json counts = j.value("counts", json::object());
  std::printf("job        %s\n", Text(j, "job_id").c_str());
  std::printf("state      %s%s\n", Text(j, "state").c_str(),
              j.contains("running_on") ? (" on " + Text(j, "running_on")).c_str() : "");
  std::printf("requested  by %s at %s: %s\n", Text(j, "requested_by").c_str(), Text(j, "created_at").c_str(),
              Text(j, "replay_reason").c_str());
  std::printf("filter     %s\n", Printable(j.value("filter", json::object()).dump()).c_str());
  std::printf("rate       %s/s%s\n", j.value("rate_per_s", json(nullptr)).dump().c_str(),
              j.value("force", false) ? ", force" : "");
  std::printf("progress   %s of %s done: %s replayed, %s deduped, %s refused, %s failed, %s interrupted\n",
              counts.value("done", json(0)).dump().c_str(), counts.value("planned", json(0)).dump().c_str(),
              counts.value("replayed", json(0)).dump().c_str(), counts.value("deduped", json(0)).dump().c_str(),
              counts.value("refused", json(0)).dump().c_str(), counts.value("failed", json(0)).dump().c_str(),
              counts.value("interrupted", json(0)).dump().c_str());
  if (j.contains("finished_at")) std::printf("finished   %s\n", Text(j, "finished_at").c_str());
  if (j.contains("cancelled_by")) std::printf("cancelled  by %s\n", Text(j, "cancelled_by").c_str());
  return kExitOk;
}

int ReplaysList(const Config& config, const ReplayOptions& o) {
  auto r = ReadLiveOrStore(config, "/admin/replays", [](Engine& engine, const Clock& clock) {
    ReplayJobStore jobs(engine.store(), clock, engine.config().LargestClockSkewS());
    return Answered(api::ListReplayJobsFromStore(jobs, {}));
  });
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (o.as_json) return PrintOr(r);
  std::printf("%-36s  %-10s %8s %8s %8s %8s %8s  %s\n", "JOB", "STATE", "PLANNED", "DONE", "REPLAYED", "DEDUPED",
              "REFUSED", "FAILED");
  for (const auto& j : (*r)["jobs"]) {
    const json& c = j["counts"];
    std::printf("%-36s  %-10s %8s %8s %8s %8s %8s  %s\n", Text(j, "job_id").c_str(), Text(j, "state").c_str(),
                c["planned"].dump().c_str(), c["done"].dump().c_str(), c["replayed"].dump().c_str(),
                c["deduped"].dump().c_str(), c["refused"].dump().c_str(), c["failed"].dump().c_str());
  }
  return kExitOk;
}

}  // namespace

void RegisterReplayCommands(CLI::App& app, Cli& cli) {
  auto o = std::make_shared<ReplayOptions>();

  auto* executions = app.add_subcommand("executions", "executions of every tenant (admin listener)");
  executions->require_subcommand(1);
  auto* list = executions->add_subcommand(
      "list",
      "list executions: filters, paginated; with --tenant newest first, without it tenant by tenant, not in time "
      "order (oldest first within a tenant on SQLite)");
  list->add_option("--connector", o->connector, "only this connector");
  list->add_option("--tenant", o->tenant, "only this tenant (one partition: cheap on every store)");
  list->add_option("--tool", o->tool, "only this tool");
  list->add_option("--outcome", o->outcome, "comma-separated outcomes, e.g. FAILED,DEFERRED");
  list->add_option("--since", o->since, "created at or after: RFC 3339 (2026-11-30T10:00Z) or epoch ms");
  list->add_option("--until", o->until, "created before: RFC 3339 or epoch ms");
  list->add_option("--limit", o->limit, "executions per page (1..1000)")->check(CLI::Range(1, 1000));
  list->add_option("--cursor", o->cursor, "the `next` of a previous page");
  list->add_flag("--all", o->all_pages, "every page");
  list->add_flag("--json", o->as_json, "JSON (the input of `replay --from-list`)");
  list->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = ExecutionsList(*c, *o);
  });

  auto* replay =
      app.add_subcommand("replay", "replay executions as an operator (admin listener; each in its original's tenant)");
  replay->add_option("execution_id", o->execution_id, "one execution to replay");
  replay->add_option("--from-list", o->from_list,
                     "a file of execution ids (one per line, or `executions list --json`), or - for stdin");
  replay->add_option("--reason", o->reason, "replay_reason (audited)")->required();
  replay->add_option("--requested-by", o->requested_by, "who asked (audited; the ledger's actor is admin:<who>)")
      ->required();
  replay->add_option("--rate", o->rate, "replays per second with --from-list (e.g. 5 or 5/s; at most 100)");
  replay->add_option("--progress", o->progress, "the progress file of --from-list (default: FILE.progress)");
  replay->add_flag("--resume", o->resume, "go on with an interrupted --from-list run; nothing is replayed twice");
  replay->add_flag("--dry-run", o->dry_run, "print what would be replayed; replay nothing");
  replay->add_flag("--force", o->force, "re-execute even if the intent already succeeded");
  replay->add_option("--token", o->token,
                     "a JWT of the execution's tenant (operator/admin role): use the public API instead");
  replay->add_flag("--json", o->as_json, "one JSON answer per line");
  replay->callback([&cli, o] {
    const Config* c = cli.config();
    if (!c) return;
    if (o->execution_id.empty() == o->from_list.empty()) {
      cli.exit_code = Fail("give one execution id or --from-list FILE");
      cli.exit_code = kExitUsage;
      return;
    }
    cli.exit_code = o->from_list.empty() ? ReplayOne(*c, *o) : ReplayFromList(*c, *o);
  });

  auto* replays = app.add_subcommand("replays", "bulk replay jobs run by the gateway (POST /admin/replays)");
  replays->require_subcommand(1);
  auto* rlist = replays->add_subcommand("list", "jobs, newest first, with their counts");
  rlist->add_flag("--json", o->as_json, "JSON");
  rlist->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = ReplaysList(*c, *o);
  });
  auto* show = replays->add_subcommand("show", "one job");
  show->add_option("job_id", o->job_id)->required();
  show->add_flag("--json", o->as_json, "JSON");
  show->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = ReplaysShow(*c, *o);
  });
  auto* cancel = replays->add_subcommand("cancel", "stop a job: no replay starts after this");
  cancel->add_option("job_id", o->job_id)->required();
  cancel->add_option("--reason", o->reason, "why (audited)")->required();
  cancel->add_option("--requested-by", o->requested_by, "who (audited)")->required();
  cancel->callback([&cli, o] {
    if (const Config* c = cli.config()) {
      cli.exit_code = PrintOr(AdminClient{*c}.Call("DELETE", "/admin/replays/" + api::PercentEncode(o->job_id),
                                                   json{{"reason", o->reason}, {"requested_by", o->requested_by}}));
    }
  });
}

}  // namespace toolgate::cli
