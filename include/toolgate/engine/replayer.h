#pragma once

#include <map>
#include <string>
#include <variant>

#include "toolgate/clock.h"
#include "toolgate/domain/principal.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/tool_invoker.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger.h"

namespace toolgate {

// What an operator asks for: re-run execution `original_id` of the principal's tenant (S12).
struct ReplayOrder {
  Principal principal;  // the tenant is the principal's: never a parameter (S11)
  std::string original_id;
  std::string reason;
  std::string requested_by;
  bool force = false;  // re-execute even if the intent already succeeded (admins only)
  std::string job_id;  // the bulk replay job asking, if any: said in REPLAY_REQUESTED
};

// Replay (design S12) before and after its run through the invocation path. Prepare checks the
// roles, finds the original (a replay's replay replays its original), refuses one that kept no input
// or has not finished, reserves one of its `max_replays_per_execution` replays (one conditional write)
// and appends REPLAY_REQUESTED to the original's chain; it returns the InvokeRequest to run through
// ToolInvoker, or the refusal to answer. Finish gives the reservation back when the replay never
// reached the tool (DEFERRED or BLOCKED before TOOL_INVOKED / REPLAY_DEDUPED), so replays tried
// during an outage do not use the limit up.
//
// An original still IN_PROGRESS is refused while a gateway may still be running it; once it is older
// than its connector's `abandoned_after_ms` (the call's timeout, the intent's hold and the clock skew
// allowed: no instance runs a call that long) it was abandoned — its gateway died, or lost its store,
// between the downstream call and the record of its outcome — and may be replayed like a call whose
// outcome is unknown (the same intent key: the downstream's idempotency guards it).
//
// Blocking (store work). Thread-safe. The services, clock and metrics must outlive it.
class Replayer {
 public:
  Replayer(ExecutionStore& executions, Ledger& ledger, Metrics& metrics, const Clock& clock, int max_replays,
           std::map<std::string, int64_t> abandoned_after_ms = {});

  std::variant<InvokeResult, InvokeRequest> Prepare(const ReplayOrder& order);
  void Finish(const InvokeRequest& replay, bool reached_tool);

 private:
  bool Abandoned(const ExecutionRecord& record) const;

  ExecutionStore& executions_;
  Ledger& ledger_;
  Metrics& metrics_;
  const Clock& clock_;
  const int max_replays_;
  const std::map<std::string, int64_t> abandoned_after_ms_;  // by connector id
};

}  // namespace toolgate
