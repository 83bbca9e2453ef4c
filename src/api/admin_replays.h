#pragma once

// Replays by operators on the admin listener (DESIGN §6 "Operator routes added in wave 2", S12,
// §17.9): every tenant's executions listed, one execution replayed, and bulk replays run as
// server-side jobs. The tenant of a replay is always its original's, found from the execution
// itself — never a parameter — and each replay is its own execution through the one invocation
// path (Replayer + RunInvocation), audited in the system audit chain.

#include <map>
#include <memory>
#include <string>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include "api/gateway_context.h"
#include "api/http.h"
#include "toolgate/engine/engine.h"
#include "toolgate/services/replay_job_store.h"

namespace toolgate::api {

// The admin reads over a store alone, answered as the routes answer them (GET /admin/executions,
// GET /admin/replays, GET /admin/replays/{job_id}); `query` as the routes take it. The routes use
// them, and so does the CLI when the admin listener does not answer (it reads the store then).
// Blocking (store reads); thread-safe as the services are.
HttpResponse ListExecutionsFromStore(Engine& engine, const std::multimap<std::string, std::string>& query);
HttpResponse ListReplayJobsFromStore(ReplayJobStore& jobs, const std::multimap<std::string, std::string>& query);
HttpResponse GetReplayJobFromStore(ReplayJobStore& jobs, const std::string& job_id);

// Thread-safe (any event-loop thread may call Handle). Jobs run on the executor RunJobsForever was
// started on.
class AdminReplays {
 public:
  explicit AdminReplays(GatewayContext& context);
  ~AdminReplays();

  // /admin/executions, /admin/executions/{id}, /admin/executions/{id}/replay, /admin/replays[/{id}].
  static bool Serves(const std::string& path);
  // REQUIRES: the admin listener's own checks passed (Host, Origin, Content-Type, admin token).
  // Refused writes are audited by the caller (AdminRoutes audits every admin route alike).
  asio::awaitable<HttpResponse> Handle(HttpRequest request);

  // Takes up RUNNING jobs nobody holds (at start: a restart resumes where the job stopped; or whose
  // holder's claim lapsed), now and every few seconds, until the gateway drains.
  asio::awaitable<void> RunJobsForever();
  // Gives back the claims of the jobs this instance runs, so a restart or another instance takes
  // them at once. Blocking (store work); at shutdown, after the last invocation has finished.
  void ReleaseClaims();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
