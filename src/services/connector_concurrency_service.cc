#include "toolgate/services/connector_concurrency_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Attr;
using store::AttributeMap;
using store::AttributePath;
using store::Condition;
using store::Item;
using store::UpdateOp;

namespace {

constexpr char kInFlight[] = "in_flight_count";
constexpr char kMax[] = "max_in_flight";
constexpr char kHolders[] = "holders";
constexpr char kLimitSource[] = "limit_source";  // "config" or "operator"
constexpr char kFromConfig[] = "config";
constexpr char kFromOperator[] = "operator";
constexpr char kLimitSetBy[] = "limit_set_by";  // an operator's limit: who, why, when (epoch ms)
constexpr char kLimitReason[] = "limit_reason";
constexpr char kLimitSetAt[] = "limit_set_at_ms";
constexpr int kMaxLimit = kMaxInFlightLimit;
constexpr int kMaxShards = kMaxConcurrencyShards;

// True when a lease that expires at `expires_at_ms` may be reclaimed at `now_ms` (S7).
bool Reclaimable(int64_t expires_at_ms, int64_t now_ms, const ConcurrencyConfig& config) {
  return expires_at_ms + int64_t{config.max_clock_skew_s} * 1000 <= now_ms;
}

// S6: one conditional increment, `in_flight_count < max_in_flight` (the limit stored in the item),
// and only if this lease is not recorded yet: should a store apply the same acquire twice (a request
// resent after a lost answer), the second finds its lease and changes nothing, so the count can never
// exceed the holders it recorded. A count below zero or a limit beyond any configurable one (an
// edited or corrupted item) admits nothing: the first would let the fleet past its limit unseen,
// the second is no limit at all. ReclaimShard repairs the count; `limits reset` the limit.
Condition AcquireCondition(const std::string& lease_id) {
  static const Condition kRoom = Condition::And(
      {Condition::Exists(Attr(kHolders)),
       Condition::Compare(Condition::Attr(Attr(kInFlight)), Condition::Op::kLt, Condition::Attr(Attr(kMax))),
       Condition::Ge(Attr(kInFlight), int64_t{0}), Condition::Le(Attr(kMax), int64_t{kMaxLimit})});
  return Condition::And({kRoom, Condition::NotExists(AttributePath::In(kHolders, lease_id))});
}

// The acquire of `lease` on its shard: ADD in_flight_count 1, SET holders.<id> = expiry, if there is room.
store::WriteRequest AcquireRequest(const SlotLease& lease) {
  return store::WriteRequest::Update(ConnectorConcurrencyService::Key(lease.connector_id, lease.shard),
                                     {UpdateOp::Add(Attr(kInFlight), 1),
                                      UpdateOp::Set(AttributePath::In(kHolders, lease.lease_id), lease.expires_at_ms)},
                                     AcquireCondition(lease.lease_id), store::ReturnValues::kNone);
}

absl::StatusOr<ConcurrencySnapshot> DecodeSlots(const Item& item, std::string_view connector_id, int64_t now_ms,
                                                const ConcurrencyConfig& config) {
  const auto in_flight = store::GetInt(item, kInFlight);
  const auto max = store::GetInt(item, kMax);
  const AttributeMap* holders = store::GetMap(item, kHolders);
  if (!in_flight || !max || holders == nullptr) {
    return absl::DataLossError(
        absl::StrCat("concurrency item of connector '", std::string(connector_id), "' is malformed"));
  }
  ConcurrencySnapshot s;
  s.in_flight = *in_flight;
  s.max_in_flight = *max;
  s.holders = static_cast<int64_t>(holders->size());
  s.limit_set_by_operator = store::GetString(item, kLimitSource) == kFromOperator;
  if (s.limit_set_by_operator) {
    s.limit_set_by = store::GetString(item, kLimitSetBy).value_or("");
    s.limit_reason = store::GetString(item, kLimitReason).value_or("");
    s.limit_set_at_ms = store::GetInt(item, kLimitSetAt).value_or(0);
  }
  for (const auto& [id, expiry] : *holders) {
    if (expiry.is_number() && Reclaimable(store::SaturatedInt(expiry), now_ms, config)) {
      ++s.expired_holders;
    }
  }
  return s;
}

// Sums a shard's snapshot into the connector's.
void Add(ConcurrencySnapshot& total, const ConcurrencySnapshot& part) {
  total.in_flight += part.in_flight;
  total.max_in_flight += part.max_in_flight;
  total.holders += part.holders;
  total.expired_holders += part.expired_holders;
  total.limit_set_by_operator = total.limit_set_by_operator || part.limit_set_by_operator;
  if (total.limit_set_by.empty() && !part.limit_set_by.empty()) {  // every shard holds the same note
    total.limit_set_by = part.limit_set_by;
    total.limit_reason = part.limit_reason;
    total.limit_set_at_ms = part.limit_set_at_ms;
  }
}

}  // namespace

ConnectorConcurrencyService::ConnectorConcurrencyService(store::ItemStore& store, const Clock& clock)
    : store_(store), clock_(clock) {}

store::ItemKey ConnectorConcurrencyService::Key(std::string_view connector_id, int shard) {
  return {absl::StrCat("CONNECTOR#", std::string(connector_id)),
          shard == 0 ? std::string("CONCURRENCY") : absl::StrCat("CONCURRENCY#", shard)};
}

int ConnectorConcurrencyService::ShareOf(int max_in_flight, int shards, int shard) {
  return max_in_flight / shards + (shard < max_in_flight % shards ? 1 : 0);
}

absl::Status ConnectorConcurrencyService::EnsureConnector(std::string_view connector_id,
                                                          const ConcurrencyConfig& config) {
  for (int k = 0; k < config.shards; ++k) RETURN_IF_ERROR(EnsureShard(connector_id, k, config));
  return absl::OkStatus();
}

absl::Status ConnectorConcurrencyService::EnsureShard(std::string_view connector_id, int shard,
                                                      const ConcurrencyConfig& config) {
  const int64_t share = ShareOf(config.max_in_flight, config.shards, shard);
  // No TTL on this item: it holds live leases.
  const Item fresh{{kInFlight, int64_t{0}}, {kMax, share}, {kHolders, AttributeMap{}}, {kLimitSource, kFromConfig}};
  ASSIGN_OR_RETURN(store::WriteResult created, store_.Put(Key(connector_id, shard), fresh, Condition::ItemAbsent()));
  if (created.applied) return absl::OkStatus();
  // Exists: follow the config unless an operator set the limit.
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(Key(connector_id, shard), {UpdateOp::Set(Attr(kMax), share)},
                                                       Condition::And({Condition::Eq(Attr(kLimitSource), kFromConfig),
                                                                       Condition::Exists(Attr(kHolders)),
                                                                       Condition::Ne(Attr(kMax), share)})));
  (void)r;  // not applied: already in line, or an operator's limit stands
  return absl::OkStatus();
}

namespace {

// A random shard, so callers spread over the items.
int RandomShard(int shards) {
  if (shards <= 1) return 0;
  thread_local std::minstd_rand rng{std::random_device{}()};
  return static_cast<int>(rng() % static_cast<unsigned>(shards));
}

}  // namespace

absl::StatusOr<std::optional<SlotLease>> ConnectorConcurrencyService::TryAcquire(std::string_view connector_id,
                                                                                 const ConcurrencyConfig& config) {
  if (config.shards <= 1) return TryShard(connector_id, 0, config);
  // From a random shard onwards; the first with room wins.
  const int first = RandomShard(config.shards);
  for (int i = 0; i < config.shards; ++i) {
    const int shard = (first + i) % config.shards;
    ASSIGN_OR_RETURN(std::optional<SlotLease> lease, TryShard(connector_id, shard, config));
    if (lease) return lease;
  }
  return std::optional<SlotLease>();
}

namespace {

// The item has a free slot, or a lease that may be reclaimed.
bool MayHaveRoom(const Item& item, int64_t now_ms, const ConcurrencyConfig& config) {
  const auto in_flight = store::GetInt(item, kInFlight);
  const auto max = store::GetInt(item, kMax);
  if (in_flight && max && *in_flight < *max) return true;
  if (const AttributeMap* holders = store::GetMap(item, kHolders)) {
    for (const auto& [id, expiry] : *holders) {
      if (expiry.is_number() && Reclaimable(store::SaturatedInt(expiry), now_ms, config)) return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::optional<SlotLease>> ConnectorConcurrencyService::TryShard(std::string_view connector_id, int shard,
                                                                               const ConcurrencyConfig& config) {
  // Attempt 0 is the fast path; a second attempt follows only if the first found the item missing
  // or reclaimed an expired lease.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int64_t now_ms = clock_.now_epoch_ms();
    SlotLease lease{std::string(connector_id), NewLeaseId(), now_ms + int64_t{config.lease_ttl_s} * 1000, shard};
    const store::WriteRequest w = AcquireRequest(lease);
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
    if (r.applied) return std::optional<SlotLease>(std::move(lease));
    if (attempt > 0) break;
    ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(Key(connector_id, shard)));
    if (!item || store::GetMap(*item, kHolders) == nullptr) {
      RETURN_IF_ERROR(EnsureShard(connector_id, shard, config));
      continue;
    }
    ASSIGN_OR_RETURN(int reclaimed, ReclaimShard(connector_id, shard, config));
    // Try once more if there is room now: we reclaimed leases, or the item we read had room or
    // expired leases (another caller may have reclaimed those between our read and our reclaim —
    // without this, of two callers racing for two expired slots one was deferred with a slot free).
    if (reclaimed == 0 && !MayHaveRoom(*item, now_ms, config)) break;
  }
  return std::optional<SlotLease>();
}

std::pair<store::WriteRequest, SlotLease> ConnectorConcurrencyService::PrepareAcquire(
    std::string_view connector_id, const ConcurrencyConfig& config) const {
  const int64_t now_ms = clock_.now_epoch_ms();
  SlotLease lease{std::string(connector_id), NewLeaseId(), now_ms + int64_t{config.lease_ttl_s} * 1000,
                  RandomShard(config.shards)};
  store::WriteRequest w = AcquireRequest(lease);
  return {std::move(w), std::move(lease)};
}

store::WriteRequest ConnectorConcurrencyService::ReleaseRequest(const SlotLease& lease) {
  const AttributePath holder = AttributePath::In(kHolders, lease.lease_id);
  return store::WriteRequest::Update(Key(lease.connector_id, lease.shard),
                                     {UpdateOp::Remove(holder), UpdateOp::Add(Attr(kInFlight), -1)},
                                     Condition::Exists(holder), store::ReturnValues::kNone);
}

absl::StatusOr<bool> ConnectorConcurrencyService::Release(const SlotLease& lease) {
  const store::WriteRequest w = ReleaseRequest(lease);
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
  return r.applied;
}

absl::StatusOr<int> ConnectorConcurrencyService::ReclaimExpired(std::string_view connector_id,
                                                                const ConcurrencyConfig& config) {
  int reclaimed = 0;
  for (int k = 0; k < config.shards; ++k) {
    ASSIGN_OR_RETURN(int n, ReclaimShard(connector_id, k, config));
    reclaimed += n;
  }
  return reclaimed;
}

absl::StatusOr<int> ConnectorConcurrencyService::ReclaimShard(std::string_view connector_id, int shard,
                                                              const ConcurrencyConfig& config) {
  const store::ItemKey key = Key(connector_id, shard);
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(key));
  if (!item) return 0;
  const AttributeMap* holders = store::GetMap(*item, kHolders);
  if (holders == nullptr) return 0;
  const auto in_flight = store::GetInt(*item, kInFlight);
  const bool miscounted = in_flight && *in_flight != static_cast<int64_t>(holders->size());
  const int64_t now_ms = clock_.now_epoch_ms();
  int reclaimed = 0;
  for (const auto& [id, expiry] : *holders) {
    if (!expiry.is_number() || !Reclaimable(store::SaturatedInt(expiry), now_ms, config)) continue;
    const AttributePath holder = AttributePath::In(kHolders, id);
    // Conditional on the expiry we saw: a lease renewed meanwhile is left alone, and of several
    // reclaimers exactly one gives the slot back.
    ASSIGN_OR_RETURN(store::WriteResult r,
                     store_.Update(key, {UpdateOp::Remove(holder), UpdateOp::Add(Attr(kInFlight), -1)},
                                   Condition::Eq(holder, expiry)));
    if (r.applied) ++reclaimed;
  }
  if (miscounted) RETURN_IF_ERROR(RepairCount(key));
  return reclaimed;
}

// Every acquire and release changes `in_flight_count` and `holders` together, by one each: their
// difference never moves. One that is not zero was made by hand or by corruption (S6 would count
// wrong from then on); the count is set to the holders, conditional on the count read — unchanged,
// so are the holders' number.
absl::Status ConnectorConcurrencyService::RepairCount(const store::ItemKey& key) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(key));
  if (!item) return absl::OkStatus();
  const auto in_flight = store::GetInt(*item, kInFlight);
  const AttributeMap* holders = store::GetMap(*item, kHolders);
  if (!in_flight || holders == nullptr || *in_flight == static_cast<int64_t>(holders->size())) {
    return absl::OkStatus();
  }
  const auto held = static_cast<int64_t>(holders->size());
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(key, {UpdateOp::Set(Attr(kInFlight), held)},
                                                       Condition::Eq(Attr(kInFlight), *in_flight)));
  if (r.applied) {
    spdlog::warn("{} {}: in_flight_count was {} with {} holders (an edited or corrupted item): set to {}", key.pk,
                 key.sk, *in_flight, held, held);
  }
  return absl::OkStatus();
}

absl::StatusOr<ConcurrencySnapshot> ConnectorConcurrencyService::SetLimit(std::string_view connector_id,
                                                                          int max_in_flight, int shards,
                                                                          const LimitNote& note) {
  return WriteLimit(connector_id, max_in_flight, shards, kFromOperator, note);
}

absl::StatusOr<ConcurrencySnapshot> ConnectorConcurrencyService::ResetLimit(std::string_view connector_id,
                                                                            const ConcurrencyConfig& config) {
  return WriteLimit(connector_id, config.max_in_flight, config.shards, kFromConfig, {});
}

absl::StatusOr<ConcurrencySnapshot> ConnectorConcurrencyService::WriteLimit(std::string_view connector_id,
                                                                            int max_in_flight, int shards,
                                                                            std::string_view source,
                                                                            const LimitNote& note) {
  if (max_in_flight < 1 || max_in_flight > kMaxLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_in_flight must be in 1..", kMaxLimit));
  }
  if (shards < 1 || shards > kMaxShards || max_in_flight < shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_in_flight must be at least the connector's concurrency_shards (", shards, ")"));
  }
  ConcurrencySnapshot total;
  total.shards = shards;
  const bool from_operator = source == kFromOperator;
  for (int k = 0; k < shards; ++k) {
    std::vector<UpdateOp> ops = {UpdateOp::Set(Attr(kMax), int64_t{ShareOf(max_in_flight, shards, k)}),
                                 UpdateOp::Set(Attr(kLimitSource), std::string(source))};
    // The note goes with the limit: set with an operator's, gone with the config's.
    for (auto [name, value] : {std::pair{kLimitSetBy, &note.requested_by}, std::pair{kLimitReason, &note.reason}}) {
      ops.push_back(from_operator && !value->empty() ? UpdateOp::Set(Attr(name), *value)
                                                     : UpdateOp::Remove(Attr(name)));
    }
    ops.push_back(from_operator ? UpdateOp::Set(Attr(kLimitSetAt), clock_.now_epoch_ms())
                                : UpdateOp::Remove(Attr(kLimitSetAt)));
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(Key(connector_id, k), ops, Condition::Exists(Attr(kHolders))));
    if (!r.applied) {
      return absl::FailedPreconditionError(
          absl::StrCat("connector '", std::string(connector_id), "' has no semaphore yet (it is created at start)"));
    }
    ASSIGN_OR_RETURN(ConcurrencySnapshot part,
                     DecodeSlots(r.item, connector_id, clock_.now_epoch_ms(), ConcurrencyConfig{}));
    Add(total, part);
  }
  return total;
}

absl::StatusOr<ConcurrencySnapshot> ConnectorConcurrencyService::Read(std::string_view connector_id,
                                                                      const ConcurrencyConfig& config) {
  ConcurrencySnapshot total;
  total.shards = config.shards;
  for (int k = 0; k < config.shards; ++k) {
    ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(Key(connector_id, k)));
    if (!item) {
      total.max_in_flight += ShareOf(config.max_in_flight, config.shards, k);
      continue;
    }
    ASSIGN_OR_RETURN(ConcurrencySnapshot part, DecodeSlots(*item, connector_id, clock_.now_epoch_ms(), config));
    Add(total, part);
  }
  return total;
}

}  // namespace toolgate
