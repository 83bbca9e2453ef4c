#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "toolgate/domain/concurrency_rules.h"
#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// A held slot. Give it back with ConnectorConcurrencyService::Release.
struct SlotLease {
  std::string connector_id;
  std::string lease_id;
  int64_t expires_at_ms = 0;
  int shard = 0;  // the shard item that holds it
  // The tenant's counter this slot is also counted in (TenantTag), empty when the connector has no
  // per-tenant share. Also the lease id's suffix after '~', so that a reclaimer finds it.
  std::string tenant_tag;
};

// Why TryAcquire found no slot.
enum class SlotRefusal {
  kConnectorFull,  // the connector's max_in_flight are all held
  kTenantShare,    // there was room, but the tenant holds its max_in_flight_per_tenant
};

// The semaphore as stored.
struct ConcurrencySnapshot {
  int64_t in_flight = 0;
  int64_t max_in_flight = 0;
  int64_t holders = 0;          // leases recorded (equals in_flight: both change in one write)
  int shards = 1;               // items summed
  int64_t expired_holders = 0;  // leases past expiry + skew, reclaimable
  // Under a per-tenant share: the slots each tenant holds (by TenantTag, summed over shards), for
  // the tenants holding any.
  std::map<std::string, int64_t> tenant_slots;

  // The most slots one tenant holds (0 when no tenant is counted).
  int64_t busiest_tenant() const {
    int64_t most = 0;
    for (const auto& [tag, held] : tenant_slots) most = held > most ? held : most;
    return most;
  }
  bool limit_set_by_operator = false;
  // Who set an operator's limit, why and when (epoch ms); empty/0 for a limit from the config and
  // for one set before these were kept.
  std::string limit_set_by;
  std::string limit_reason;
  int64_t limit_set_at_ms = 0;
};

// Who asked for an operator's limit and why (PUT /admin/connectors/{id}/limits), kept with the limit.
struct LimitNote {
  std::string requested_by;
  std::string reason;
};

// Connector-scoped in-flight semaphore shared through the store (design S6, S7). The semaphore of
// connector C is one item (CONNECTOR#C, CONCURRENCY) holding `in_flight_count`, `max_in_flight` and a
// map `holders` of lease id -> expiry (epoch ms). Acquire is one conditional write
// (`ADD in_flight_count 1, SET holders.<id>` if `in_flight_count < max_in_flight`); release is the
// reverse if `holders.<id>` exists, so a slot is given back at most once and the count never goes
// below zero. A lease whose holder died is reclaimed by whoever next finds the connector full, once
// `expiry + max_clock_skew_s` has passed on the reclaimer's clock — so a host whose clock runs up to
// the skew ahead never takes a live holder's slot.
//
// The limit lives in the item so an operator's change is in force fleet-wide at once; a limit set by
// an operator survives restarts, one from the config follows the config.
//
// Sharding (`concurrency_shards` = K > 1, design section 3): one item takes at most ~1,000 writes/s
// on DynamoDB, so a busy connector's semaphore is split into K items — shard 0 is
// (CONNECTOR#C, CONCURRENCY), shard k is (CONNECTOR#C, CONCURRENCY#k) — each holding its share of the
// limit (max/K, the first max%K shards one more). Acquire tries the shards from a random one onwards
// and takes the first with room; a lease names its shard and is released there. Every shard keeps
// its own `in_flight_count < max_in_flight`, and the shares add up to the limit, so S6 holds for the
// sum. The price: a caller may be told DEFER only after trying every shard (K writes when the
// connector is full), and a limit change is K writes that are not atomic together — while it is
// applied, the sum lies between the old and the new limit.
//
// A per-tenant share (`max_in_flight_per_tenant` = P > 0): the item also holds a counter per tenant,
// `tenant_in_flight#<tag>` (tag: TenantTag, a hash of the tenant id, so the item's size does not
// depend on how long tenant ids are), and the acquire's one conditional write also requires the
// tenant's counter to be below its share (TenantShareOf(P, K, k, tag) on shard k) and adds one to
// it; a release takes one off. The share is split over the shards as the limit is, rotated by the
// tenant's tag: under a share smaller than the shards each tenant has a part on `P` of them, and
// different tenants on different ones, so together they reach every shard. The holder's lease id ends in `~<tag>`, so a
// reclaimer of an expired lease knows which counter to take it off. ReclaimExpired (every few seconds) also sets a
// counter that disagrees with its holders to their number (an instance of an earlier version reclaimed a lease without
// knowing its counter) and removes counters at zero, so the item holds only the tenants with calls
// in flight. The share is the config's, never stored: an instance without it (a rolling change)
// acquires without counting the tenant.
//
// Thread-safe. Status codes: store errors from ItemStore; kDataLoss when the item is malformed.
class ConnectorConcurrencyService {
 public:
  ConnectorConcurrencyService(store::ItemStore& store, const Clock& clock);

  // Creates the connector's semaphore, or brings a config-set limit in line with `config`.
  absl::Status EnsureConnector(std::string_view connector_id, const ConcurrencyConfig& config);

  // One conditional write when a slot is free; nullopt when the connector is at its limit or the
  // tenant at its share (DEFER, no queueing; `*refusal` says which when given). Reclaims expired
  // leases before saying no. `tenant_id` counts only when `config` has a per-tenant share.
  absl::StatusOr<std::optional<SlotLease>> TryAcquire(std::string_view connector_id, const ConcurrencyConfig& config,
                                                      std::string_view tenant_id = {}, SlotRefusal* refusal = nullptr);

  // The acquire of TryAcquire's first try as a write for a WriteBatch (design §16: one commit with the
  // execution record and its opening events), on one shard (a random one when sharded), and the lease
  // it takes when applied. Not applied: the shard was full or its item missing — TryAcquire then
  // tries every shard and reclaims expired leases before saying no.
  std::pair<store::WriteRequest, SlotLease> PrepareAcquire(std::string_view connector_id,
                                                           const ConcurrencyConfig& config,
                                                           std::string_view tenant_id = {}) const;

  // Gives the slot back. True when this call released it; false when it was already released or
  // reclaimed (then nothing changes).
  absl::StatusOr<bool> Release(const SlotLease& lease);
  // The release as a write for a WriteBatch (applied: released; refused: already released).
  static store::WriteRequest ReleaseRequest(const SlotLease& lease);

  // Reclaims every lease of the connector past expiry + skew; returns how many. Also brings the
  // per-tenant counters in line with their holders and removes those at zero. A shard that fails
  // does not stop the others; the first error is returned, its message saying how many the others
  // reclaimed.
  absl::StatusOr<int> ReclaimExpired(std::string_view connector_id, const ConcurrencyConfig& config);

  // An operator's new limit (PUT /admin/connectors/{id}/limits), spread over `shards` items, with
  // who set it and why (kept until the limit is handed back; status shows them).
  // kInvalidArgument when out of range or smaller than the number of shards.
  absl::StatusOr<ConcurrencySnapshot> SetLimit(std::string_view connector_id, int max_in_flight, int shards = 1,
                                               const LimitNote& note = {});
  // Hands the limit back to the config (DELETE /admin/connectors/{id}/limits): `config`'s limit,
  // and from then on a changed config applies at the next start again. Forgets the LimitNote.
  absl::StatusOr<ConcurrencySnapshot> ResetLimit(std::string_view connector_id, const ConcurrencyConfig& config);

  absl::StatusOr<ConcurrencySnapshot> Read(std::string_view connector_id, const ConcurrencyConfig& config);

  static store::ItemKey Key(std::string_view connector_id, int shard = 0);

  // Shard `shard`'s part of `max_in_flight` when split over `shards` items.
  static int ShareOf(int max_in_flight, int shards, int shard);

  // The short, stable name of `tenant_id`'s counter in a semaphore item: 12 hex digits of its SHA-256.
  static std::string TenantTag(std::string_view tenant_id);
  // The shard where the tenant of `tenant_tag` has the first (largest) part of its share: the split
  // of a share starts there, so the tenants' parts spread over the shards.
  static int TenantFirstShard(std::string_view tenant_tag, int shards);
  // Shard `shard`'s part of the tenant's `share` split over `shards` items (parts that add up to it;
  // zero on the shards past the share when it is smaller than the shards).
  static int TenantShareOf(int share, int shards, int shard, std::string_view tenant_tag);

 private:
  // Writes `max_in_flight` over `shards` items, owned by `source` ("config" or "operator").
  absl::StatusOr<ConcurrencySnapshot> WriteLimit(std::string_view connector_id, int max_in_flight, int shards,
                                                 std::string_view source, const LimitNote& note);
  absl::Status EnsureShard(std::string_view connector_id, int shard, const ConcurrencyConfig& config);
  absl::StatusOr<std::optional<SlotLease>> TryShard(std::string_view connector_id, int shard,
                                                    const ConcurrencyConfig& config, const std::string& tenant_tag,
                                                    SlotRefusal* refusal);
  SlotLease NewLease(std::string_view connector_id, int shard, const ConcurrencyConfig& config,
                     const std::string& tenant_tag) const;
  absl::Status TidyTenantCounters(const store::ItemKey& key);
  // Reclaims the shard's expired leases; with `tidy`, also brings its tenant counters in line.
  absl::StatusOr<int> ReclaimShard(std::string_view connector_id, int shard, const ConcurrencyConfig& config,
                                   bool tidy);
  absl::Status RepairCount(const store::ItemKey& key);

  store::ItemStore& store_;
  const Clock& clock_;
};

}  // namespace toolgate
