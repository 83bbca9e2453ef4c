#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// Tool-layer idempotency (design §1, §5, S12): one record per tenant and intent key,
// (TENANT#<tenant>, INTENT#<key>), holding the intent's state, the hash of its input, the execution
// that holds or produced it, and the result of a success.
//
// Thread-safe. Status codes: store errors.
class IntentStore {
 public:
  enum class State { kInProgress, kSucceeded, kFailed, kUnknown };

  struct Claim {
    enum class Kind {
      kClaimed,     // this execution now holds the intent
      kSucceeded,   // the intent already succeeded: `execution_id` and `result_json` say how
      kInProgress,  // another execution holds it
      kMismatch,    // same key, different input
    };
    Kind kind = Kind::kClaimed;
    std::string execution_id;
    std::string result_json;
    // When claimed: the state the intent had before (kUnknown means an earlier attempt's outcome is
    // not known, and the downstream must deduplicate by the Idempotency-Key).
    std::optional<State> previous;
    // When a SUCCEEDED intent was taken over (a forced replay): the execution that succeeded and its
    // result, which the intent gets back unless the new attempt succeeds.
    std::string previous_execution_id = {};
    std::string previous_result_json = {};
    int64_t previous_execution_expires_at_s = 0;  // and that execution's expiry (0: not known)
    // kSucceeded: until when the execution it names is kept (0: not known; see FinishRequest).
    int64_t execution_expires_at_s = 0;
  };

  IntentStore(store::ItemStore& store, const Clock& clock, int retention_h);

  // One conditional write: claims an intent that is absent, expired, FAILED or UNKNOWN, or
  // IN_PROGRESS past `hold_ms` (its holder died); with `take_over_succeeded` (a forced replay, S12)
  // a SUCCEEDED one too, so forced replays still run one at a time. Reads only when the claim is
  // refused.
  absl::StatusOr<Claim> TryClaim(std::string_view tenant_id, std::string_view intent_key, std::string_view input_hash,
                                 std::string_view execution_id, int64_t hold_ms, bool take_over_succeeded = false);
  // TryClaim's first write, for the asynchronous port: the claim of an intent that is absent or
  // expired. Applied, the intent is claimed with no previous state; refused, TryClaim finds out why.
  store::WriteRequest NewClaimRequest(std::string_view tenant_id, std::string_view intent_key,
                                      std::string_view input_hash, std::string_view execution_id,
                                      int64_t hold_ms) const;

  // Records how the holder's attempt ended. A holder that lost the intent changes nothing.
  absl::Status Finish(std::string_view tenant_id, std::string_view intent_key, std::string_view execution_id,
                      State state, std::string_view result_json);
  // The same write, for a WriteBatch. `execution_expires_at_s`: when the holder's execution record
  // expires (kept in the intent, so `ledger verify` can tell an execution gone with its retention
  // from one that is missing; 0: not known).
  store::WriteRequest FinishRequest(std::string_view tenant_id, std::string_view intent_key,
                                    std::string_view execution_id, State state, std::string_view result_json,
                                    int64_t execution_expires_at_s = 0) const;
  // Gives a claim back unused (the call was deferred before it reached the downstream), restoring
  // the previous state — and, for a SUCCEEDED intent taken over, the execution, result and expiry it
  // named.
  absl::Status Release(std::string_view tenant_id, std::string_view intent_key, std::string_view execution_id,
                       const std::optional<State>& previous, std::string_view previous_execution_id = {},
                       std::string_view previous_result_json = {}, int64_t previous_execution_expires_at_s = 0);
  // Gives a SUCCEEDED intent taken over by `execution_id` back as it was (SUCCEEDED, naming
  // `previous_execution_id` with `previous_result_json`, and that execution's expiry: without it the
  // intent no longer vouches once the execution is gone): the attempt that took it did not succeed.
  store::WriteRequest RestoreSucceededRequest(std::string_view tenant_id, std::string_view intent_key,
                                              std::string_view execution_id, std::string_view previous_execution_id,
                                              std::string_view previous_result_json,
                                              int64_t previous_execution_expires_at_s) const;

  static store::ItemKey Key(std::string_view tenant_id, std::string_view intent_key);
  static std::string_view ToString(State s);

  // The key a downstream deduplicates the intent by (`Idempotency-Key`, an MCP server's
  // `_meta["io.toolgate/idempotency_key"]`): "tg1-" and the first 32 hex digits of
  // SHA-256(tenant "\n" intent key). An intent is a tenant's own, and so is its key downstream:
  // every tenant reaches a connector with the same credentials, and a downstream that keeps keys
  // per credential would otherwise answer one tenant's call with another's stored result, or drop
  // it as a repeat, when two tenants choose one key. Deterministic (every attempt, held retry,
  // queued run and replay of the intent carries the same one); 36 characters, the length of the
  // execution ids that downstreams already take; the newline is in no tenant id.
  static std::string DownstreamKey(std::string_view tenant_id, std::string_view intent_key);

 private:
  store::Item ClaimItem(std::string_view input_hash, std::string_view execution_id, int64_t now_ms, int64_t hold_ms,
                        std::optional<State> previous) const;

  store::ItemStore& store_;
  const Clock& clock_;
  const int retention_h_;
};

}  // namespace toolgate
