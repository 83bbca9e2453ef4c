#pragma once

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/domain/principal.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/domain/request_shape.h"
#include "toolgate/engine/connector.h"
#include "toolgate/engine/mcp_tool_registry.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/store_write_health.h"
#include "toolgate/engine/unrecorded_outcomes.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/queue_service.h"
#include "toolgate/services/slo_counters.h"
#include "toolgate/store/async_item_store.h"

namespace toolgate {

// A validated invocation (design §5): who, which tool, what input.
// What makes an invocation a replay (design S12).
struct ReplayContext {
  std::string original_id;
  std::string original_intent_key;
  Outcome original_outcome = Outcome::kInProgress;  // kSucceeded also when an earlier replay of it succeeded
  std::string original_result_json;                 // the result of that success
  std::string succeeded_in;                         // the execution that succeeded (the original or a replay)
  std::string reason;
  std::string requested_by;
  bool force = false;  // re-execute even if the intent already succeeded (admins only)
};

// How a call is queued (design §15): its deadline and its tenant's bound.
struct QueueOrder {
  int64_t deadline_s = 3600;
  int max_per_tenant = 10'000;
  std::string callback_url;  // checked against [queue] callback_allowlist; empty: no callback
};

struct InvokeRequest {
  Principal principal;
  std::string tool_name;
  std::string input_json;  // canonical JSON of the request's `input`
  // The request's `input` as parsed, when the caller has it (the public routes: they parsed the body):
  // `input_json` is then its dump, and the admission neither parses it again nor dumps it again for
  // the downstream. The admission lets go of it after its first step (the input check): a call in
  // flight holds its input as text only, a tree costing many times that. Unset: `input_json` is parsed.
  std::shared_ptr<const nlohmann::json> input;
  std::string idempotency_key;  // empty: the execution's own id is the intent key
  std::string action_type;      // the request's; counts only for tools the config does not classify
  std::string execution_id;     // empty: a new UUIDv7
  std::optional<ReplayContext> replay;
  // `"on_defer": "queue"` (§15): where the call would be DEFERRED breaker_open, probe_in_flight,
  // concurrency_limit or downstream_throttled before reaching the downstream, it is queued instead.
  std::optional<QueueOrder> queue_on_defer;
  // The caller listens for the downstream's progress or log messages (DownstreamRequest::notifications).
  // A call that is queued instead of sent has no one listening when it runs: it goes without.
  std::shared_ptr<const NotificationRelay> notifications;
};

// What the engine answers for one invocation (design §5), in the domain's words: an execution's
// outcome and reason, or a refusal before any execution. No HTTP here: the api layer alone turns it
// into a response through one table (api::ToHttp; MCP tools/call: api::mcp::ToCallAnswer).
struct InvokeResult {
  // Set: the call was refused without an outcome of its own (unknown tool, bad input, queue full,
  // store trouble before any record, ...): `error` and `message` are the whole answer.
  std::optional<InvokeError> error;
  std::string message;
  // Unset `error`: the execution's answer. `execution_id` is the execution that answers (for an
  // intent hit, the earlier one that succeeded).
  Outcome outcome = Outcome::kSucceeded;
  OutcomeReason reason;
  std::string execution_id;
  // Try again after this many whole seconds (>= 1): DEFERRED, and a refusal for queue_full or store
  // trouble. Unset: no advice.
  std::optional<int64_t> retry_after_s;
  // What else the answer says about the execution, as JSON fields beside execution_id, outcome and
  // reason: connector_id, replay_of, latency_ms, the downstream's `result`, downstream_status,
  // retry_after_ms, an MCP server's own `tool_result` / `rpc_error`, a kill switch's `scope`, a
  // queued call's `status_url`, `intent_hit`, `deduplicated` and `succeeded_in`, `message`.
  nlohmann::json details = nlohmann::json::object();
  // The execution's ledger has TOOL_INVOKED or REPLAY_DEDUPED: for a replay, it counts toward
  // max_replays_per_execution (S12); one DEFERRED or BLOCKED before the downstream does not.
  bool reached_tool = false;

  static InvokeResult Refused(InvokeError error, std::string message,
                              std::optional<int64_t> retry_after_s = std::nullopt);
  static InvokeResult Answered(Outcome outcome, OutcomeReason reason, std::string execution_id, nlohmann::json details,
                               std::optional<int64_t> retry_after_s = std::nullopt);
  bool refused() const { return error.has_value(); }
};

// An admitted call between Admit and Complete (owned by the caller; opaque to it).
class InvocationTicket {
 public:
  const ConnectorConfig* connector = nullptr;
  InvokeRequest request;
  ExecutionRecord record;
  Ledger::Tail tail;
  std::string chain;
  // The chain's events held in its record so far (DESIGN §16); empty when its events are items.
  std::vector<LedgerEvent> own_path;
  std::string own_text;  // Ledger::EncodeOwnPath(own_path, record): the close only encodes its own
  CircuitBreakerService::Permit permit;
  bool guarded = true;  // false: on_store_error = allow let it run without breaker and slot
  std::optional<SlotLease> lease;
  bool intent_claimed = false;
  std::optional<IntentStore::State> intent_previous;
  // A SUCCEEDED intent a forced replay took over: what it named, given back unless the replay succeeds.
  std::string intent_previous_execution_id;
  std::string intent_previous_result_json;
  int64_t intent_previous_execution_expires_at_s = 0;
  DownstreamRequest downstream;
  // A queued call's run (§15): the claim on its queue item, ended (or put back) with its outcome.
  std::optional<QueueClaim> queued;
  std::string instance_id;    // who dispatched it (EXECUTION_DISPATCHED)
  bool outcome_held = false;  // its close, not taken by the store, is held to be written again
};

// How an invocation's coroutine reaches the store (design §16). The default runs everything on the
// calling thread, blocking (the synchronous entry points, a pool thread, tests). On an event loop:
// the call's write batches go through the store's asynchronous port, its reads run on the loop (a
// backend whose reads are cheap and never wait on a write: SQLite's pooled readers), and the few
// writes a service makes on its own (an intent claim, a breaker transition, a probe given back)
// run on `blocking`, so that no loop waits for a commit. A store without a port (memory, DynamoDB)
// with a pool: each entry point runs whole on `blocking`, as its blocking form, so the event loop
// can hand every store the same drive.
struct StoreDrive {
  store::AsyncItemStore* port = nullptr;         // null: batches through the synchronous store, on the calling thread
  boost::asio::thread_pool* blocking = nullptr;  // null: a service's own writes on the calling thread
};

// The invocation path (design §5) over the services. Admit runs kill switches → intent check → breaker → concurrency
// slot and makes the execution's first events durable; the caller then calls the downstream (asynchronously) and hands
// the result to Complete, which records it in the breaker, intent, ledger and metrics and releases
// the slot. Every Ticket must reach Complete or Abandon exactly once. Each entry point is a coroutine
// (`...Async`, over a StoreDrive) with a blocking form that runs it to its end on the calling thread.
//
// Thread-safe; holds no per-call state between calls except in Tickets.
class ToolInvoker : public BackgroundTraffic {
 public:
  struct Services {
    store::ItemStore& store;
    const Clock& clock;
    const Config& config;
    CircuitBreakerService& breakers;
    ConnectorConcurrencyService& slots;
    KillSwitchService& kill_switches;
    Ledger& ledger;
    ExecutionStore& executions;
    IntentStore& intents;
    Metrics& metrics;
    SloCounters* slo = nullptr;                  // counts calls for the SLOs when set
    QueueService* queue = nullptr;               // queued calls (§15); without it Enqueue refuses not_implemented
    const McpToolRegistry* mcp_tools = nullptr;  // the tools MCP connectors expose, when there are any
    UnrecordedOutcomes* unrecorded = nullptr;    // holds outcomes the store did not take, to write again
    // Told the outcome of each batch written through a StoreDrive's port (the synchronous store
    // records its own: MeteredItemStore), when set.
    StoreWriteHealth* write_health = nullptr;
  };

  using Ticket = InvocationTicket;

  explicit ToolInvoker(Services services);
  ~ToolInvoker() override;

  // Either the final answer (BLOCKED, DEFERRED, an error, an intent hit) or a ticket to call the
  // downstream with.
  using Admitted = std::variant<InvokeResult, std::unique_ptr<Ticket>>;
  Admitted Admit(const InvokeRequest& request);
  boost::asio::awaitable<Admitted> AdmitAsync(InvokeRequest request, StoreDrive drive);
  static const DownstreamRequest& Downstream(const Ticket& ticket);
  InvokeResult Complete(std::unique_ptr<Ticket> ticket, const DownstreamResult& result);
  boost::asio::awaitable<InvokeResult> CompleteAsync(std::unique_ptr<Ticket> ticket, DownstreamResult result,
                                                     StoreDrive drive);
  // For a ticket whose call never started (shutdown): gives everything back, records nothing sent.
  void Abandon(std::unique_ptr<Ticket> ticket);

  // Queued calls (design §15, §17.5). Enqueue runs the input check, kill switches (S8) and the intent
  // check at once, then writes the record (outcome QUEUED), EXECUTION_RECEIVED, EXECUTION_QUEUED and
  // the queue item in one batch: QUEUED {connector_id, status_url}; refused queue_full past the
  // tenant's bound; an intent already QUEUED/RUNNING answers with that execution (QUEUED or
  // RUNNING), one that SUCCEEDED with its result.
  InvokeResult Enqueue(const InvokeRequest& request, const QueueOrder& order);
  boost::asio::awaitable<InvokeResult> EnqueueAsync(InvokeRequest request, QueueOrder order, StoreDrive drive);
  // A queue item this instance claimed: §5 from the kill switches and the breaker on, with the
  // execution's own id, intent and Idempotency-Key. `lease`: the slot the dispatcher took for it
  // (owned from here: released on every path). The answer is final (BLOCKED; or QUEUED when the
  // call went back to the queue — breaker, throttling — with TOOL_ATTEMPT_FAILED), or a ticket for
  // the downstream call; Complete then ends the item, or puts it back after a downstream 429.
  Admitted AdmitClaimed(const QueueClaim& claim, std::optional<SlotLease> lease, std::string_view instance_id);
  boost::asio::awaitable<Admitted> AdmitClaimedAsync(QueueClaim claim, std::optional<SlotLease> lease,
                                                     std::string instance_id, StoreDrive drive);

  // The tool's input checked against its input_schema and shaped into method, target (below the
  // base URL) and body (design §13). For an MCP connector's tool the input must be a JSON object and
  // becomes the body (tools/call arguments) as it is: the server checks its own arguments (§14). InvalidArgument (400
  // invalid_input) names the first failing location, never a value.
  absl::StatusOr<ShapedRequest> CheckInput(const InvokeRequest& request) const;

  // The connector serving `tool_name`, or nullptr: a [tools] entry's `connector`; else the MCP
  // connector whose tool list holds the name (design §14: not the part before the first dot);
  // else the http connector named by the part before the first dot. An MCP connector serves only
  // the names its list holds.
  const ConnectorConfig* ResolveConnector(const std::string& tool_name) const;

  // The [tools] entry that `tool_name` differs from only in ASCII case or in trailing '.', '-' or '_'
  // (nullopt: none, or `tool_name` is that entry). An http connector forwards any name below its
  // prefix as the path, and many routers match paths loosely, so such a name would reach the
  // configured tool's endpoint without its kill switches (action_type), input_schema or shape:
  // Admit and Enqueue refuse it (unknown_tool).
  std::optional<std::string> LookAlikeOf(const std::string& tool_name) const;

  // BackgroundTraffic (design §17.7): the breaker's say over an MCP connector's own tools/list,
  // ping and session set-up. No slot, no ledger, no SLO count; only the breaker hears of them.
  std::optional<CircuitBreakerService::Permit> PermitBackground(const ConnectorConfig& connector) override;
  void RecordBackground(const ConnectorConfig& connector, const CircuitBreakerService::Permit& permit,
                        const DownstreamResult& result) override;

 private:
  class Admission;  // the stages of Admit, one method each
  // The stages of Complete: classify (inline), the SLIs, the breaker, a queued call put back, the
  // record, the metrics, the answer.
  void RecordInSlo(const ConnectorConfig& connector, const Classification& classification,
                   const DownstreamResult& result);
  boost::asio::awaitable<void> RecordInBreaker(const Ticket& ticket, const Classification& classification,
                                               StoreDrive drive);
  void RecordInBreaker(const Ticket& ticket, const Classification& classification);
  boost::asio::awaitable<InvokeResult> PutBackDeferred(Ticket& ticket, const Classification& classification,
                                                       const DownstreamResult& result, StoreDrive drive);
  boost::asio::awaitable<std::optional<InvokeResult>> QueueThrottled(Ticket& ticket,
                                                                     const Classification& classification,
                                                                     const DownstreamResult& result, StoreDrive drive);
  boost::asio::awaitable<absl::Status> RecordOutcome(Ticket& ticket, const Classification& classification,
                                                     const DownstreamResult& result, StoreDrive drive);
  void CountCompleted(const Ticket& ticket, const DownstreamResult& result, bool written);
  InvokeResult AnswerRecorded(const Ticket& ticket, const Classification& classification, DownstreamResult& result,
                              nlohmann::json result_json);

  // Why Admit and Enqueue refuse `tool_name` (unknown_tool), resolved to `connector`: no connector,
  // or a look-alike of a [tools] entry on an http connector (LookAlikeOf). nullopt: served.
  std::optional<std::string> NotServed(const ConnectorConfig* connector, const std::string& tool_name) const;

  Services s_;
  // Each [tools] entry by its name folded (FoldToolName).
  std::unordered_map<std::string, std::string> tools_by_folded_name_;
};

}  // namespace toolgate
