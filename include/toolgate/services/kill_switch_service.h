#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// Every scope a kill switch may have.
inline constexpr std::array<std::string_view, 5> kKillSwitchScopes = {"global", "connector", "tenant", "action_type",
                                                                      "tenant_action"};

// One kill switch (design S8, §6). Stored as (KILLSWITCH, <scope>#<key>).
struct KillSwitch {
  std::string scope;  // global | connector | tenant | action_type | tenant_action
  std::string key;    // "*" for global; "tenant/action_type" for tenant_action
  std::string reason;
  std::string requested_by;
  std::string actor;
  std::string at;  // RFC 3339
};

// Kill switches shared through the store. Each instance keeps a snapshot and re-reads it when it is
// older than `refresh_ms`, so a switch set or cleared anywhere is in force everywhere within
// refresh_ms + one store read (S8 asks for 2 s; the default refresh is 1 s).
//
// Thread-safe. Status codes: kInvalidArgument for a bad scope or key; store errors from ItemStore.
class KillSwitchService {
 public:
  KillSwitchService(store::ItemStore& store, const Clock& clock, int refresh_ms);

  static bool ValidScope(std::string_view scope);
  // kInvalidArgument naming what is wrong with the scope/key pair: a key outside the alphabet a call
  // can carry (DESIGN §17.2) could never match. Whether a connector exists is the caller's check.
  static absl::Status ValidateSwitch(std::string_view scope, std::string_view key);

  absl::StatusOr<KillSwitch> Set(KillSwitch ks);
  // True when a switch was removed.
  absl::StatusOr<bool> Clear(std::string_view scope, std::string_view key);
  absl::StatusOr<std::vector<KillSwitch>> List();

  // The first switch (global, tenant, connector, action type, tenant + action type) that matches
  // the call, from the snapshot (refreshed when stale). An `action_type` or `tenant_action` switch
  // matches the call's effective action type or its tool name, either compared as
  // ToolNamesLookAlike does (ASCII case and trailing '.', '-', '_' ignored: a name below an http
  // connector's prefix is forwarded in any spelling). One refresh at a time: callers that
  // waited for another's refresh take its answer, its error included, rather than each reading again.
  // With the list unreadable, a switch the last list held (or this instance set since) still stops
  // the call; only a call no known switch stops gets the store's error.
  absl::StatusOr<std::optional<KillSwitch>> Match(std::string_view tenant_id, std::string_view connector_id,
                                                  std::string_view action_type, std::string_view tool_name);
  // Match's answer from a fresh snapshot only, one lookup that never reads the store; nullopt when
  // the snapshot is stale (Match would refresh it, a store read).
  std::optional<std::optional<KillSwitch>> MatchFromFreshCopy(std::string_view tenant_id, std::string_view connector_id,
                                                              std::string_view action_type, std::string_view tool_name);

 private:
  store::ItemStore& store_;
  const Clock& clock_;
  const int refresh_ms_;
  // After a write of Set or Clear, whatever the store answered.
  void ChangeMade();
  // The store could not be read (`error`): a switch the last list held, or this instance set since,
  // still stops the call — S8 holds while the store is away —; any other call gets the error (S10).
  absl::StatusOr<std::optional<KillSwitch>> KnownMatchOr(absl::Status error, std::string_view tenant_id,
                                                         std::string_view connector_id, std::string_view action_type,
                                                         std::string_view tool_name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Fresh(int64_t now_ms) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return snapshot_at_ms_ >= 0 && now_ms - snapshot_at_ms_ < refresh_ms_;
  }
  // One refresh at a time; its store read is made holding this lock only, never mu_, so a lookup
  // (MatchFromFreshCopy, on an event loop) never waits for a round trip.
  absl::Mutex refresh_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  std::vector<KillSwitch> snapshot_ ABSL_GUARDED_BY(mu_);
  int64_t snapshot_at_ms_ ABSL_GUARDED_BY(mu_) = -1;  // monotonic ms
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;         // Set and Clear by this instance
  // The last refresh, for the callers that waited for it (Match): how many have finished, what the
  // last one's read answered, and changes_ when its read began.
  uint64_t refreshes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_refresh_ ABSL_GUARDED_BY(mu_);
  uint64_t last_refresh_changes_ ABSL_GUARDED_BY(mu_) = 0;
};

// RFC 3339 UTC with milliseconds, e.g. 2026-11-27T23:15:39.123Z.
std::string Rfc3339(int64_t epoch_ms);

}  // namespace toolgate
