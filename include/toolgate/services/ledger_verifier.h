#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// What `toolgate ledger verify` checks, as a service (testable without the binary).
//
// A chain passes when (a) its events link and hash, and expire when its anchor (the record, the
// day's head item) says the chain does (Ledger::VerifyChain), (b) it reaches the event its anchor
// names, with that event's hash — so a removed tail is caught — allowing at most one
// trailing event the anchor does not cover yet (a crash between the event's write and the anchor's
// on a store without multi-item transactions, DESIGN §17.1: reported, not failed), and (c) for an
// execution, its record agrees with what the chain says: EXECUTION_RECEIVED's tenant, tool, connector,
// action type, intent key and input hash,
// the outcome of the final event, the SHA-256 of the result (`result_sha256`), and the partition the
// record is stored under. So an edited outcome or result, or a record moved to another tenant, fails.
//
// Thread-compatible (one walk at a time). Status codes: store errors from ItemStore.
class LedgerVerifier {
 public:
  struct Report {
    int64_t executions = 0;          // execution chains checked
    int64_t audit_days = 0;          // audit chains checked
    int64_t events = 0;              // events checked in all of them
    int64_t expired = 0;             // chains that reached their retention while being read (gone whole)
    int64_t pending_tails = 0;       // chains with one trailing event their anchor does not cover yet
    int64_t intents = 0;             // SUCCEEDED intents whose result was checked against their execution's
    std::vector<std::string> notes;  // one line per pending tail
    std::string problem;             // the first failure, naming the chain and event; empty: all passed
    bool ok() const { return problem.empty(); }
  };

  LedgerVerifier(store::ItemStore& store, const Clock& clock);

  // Walks every execution and every audit day, and every SUCCEEDED intent (its result against its
  // execution's); stops at the first problem.
  absl::StatusOr<Report> VerifyAll();

  // One execution. `stored_under_tenant` is the tenant of the partition the record was read from.
  // OK, or kDataLoss naming the problem; `pending` is set when one trailing event is not anchored.
  static absl::Status CheckExecution(const ExecutionRecord& record, std::string_view stored_under_tenant,
                                     const std::vector<LedgerEvent>& events, bool* pending);
  // One audit day against its head item (`head.seq` 0: no head item).
  static absl::Status CheckAuditDay(const std::vector<LedgerEvent>& events, const Ledger::Tail& head, bool* pending);

 private:
  absl::Status CheckOrphanEvents(const std::unordered_set<std::string>& recorded, Report& report);
  absl::Status CheckIntents(Report& report);

  store::ItemStore& store_;
  const Clock& clock_;
  Ledger ledger_;
  ExecutionStore executions_;
};

}  // namespace toolgate
