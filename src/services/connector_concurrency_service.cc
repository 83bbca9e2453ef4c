#include "toolgate/services/connector_concurrency_service.h"

#include <algorithm>
#include <limits>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/services/ledger.h"
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
constexpr char kTenantCounterPrefix[] = "tenant_in_flight#";  // + TenantTag: one tenant's slots
constexpr char kTagSeparator = '~';                           // a lease id's suffix naming its tenant's counter
// Counts the tidy's writes (TidyTenantCounters): each is conditional on the count it read, so of two
// tidies that read the item before either wrote, the second's write is refused.
constexpr char kTidyCount[] = "tenant_tidy_count";
constexpr int kMaxLimit = kMaxInFlightLimit;
// At most this many counters are tidied per shard per ReclaimExpired (one write each).
constexpr int kMaxTidiedCounters = 256;
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

std::string TenantCounter(std::string_view tag) { return kTenantCounterPrefix + std::string(tag); }

// The tag of a tenant counter's attribute name; nullopt for any other attribute.
std::optional<std::string_view> CounterTag(std::string_view name) {
  if (name.rfind(kTenantCounterPrefix, 0) != 0) return std::nullopt;
  return name.substr(sizeof(kTenantCounterPrefix) - 1);
}

// The tenant counter a holder's lease id names (after its last '~'), empty when it names none.
std::string_view TagOfLease(std::string_view lease_id) {
  const size_t at = lease_id.rfind(kTagSeparator);
  return at == std::string_view::npos ? std::string_view() : lease_id.substr(at + 1);
}

// The tenant's part of the acquire's condition: its counter below its share on this shard (absent
// counts as zero; a negative one, from an edited item, admits nothing). A shard whose part of the
// share is zero (a share smaller than the shards) admits nothing, absent counter or not.
Condition TenantRoom(const std::string& counter, int64_t share) {
  if (share <= 0)
    return Condition::And({Condition::Lt(Attr(counter), int64_t{0}), Condition::Ge(Attr(counter), int64_t{0})});
  return Condition::Or(
      {Condition::NotExists(Attr(counter)),
       Condition::And({Condition::Lt(Attr(counter), share), Condition::Ge(Attr(counter), int64_t{0})})});
}

// The acquire of `lease` on its shard: ADD in_flight_count 1, SET holders.<id> = expiry, if there is
// room — and, under a per-tenant share, ADD tenant_in_flight#<tag> 1 if the tenant's share has room.
store::WriteRequest AcquireRequest(const SlotLease& lease, const ConcurrencyConfig& config) {
  std::vector<UpdateOp> ops = {UpdateOp::Add(Attr(kInFlight), 1),
                               UpdateOp::Set(AttributePath::In(kHolders, lease.lease_id), lease.expires_at_ms)};
  Condition condition = AcquireCondition(lease.lease_id);
  if (!lease.tenant_tag.empty()) {
    const std::string counter = TenantCounter(lease.tenant_tag);
    const int64_t share = ConnectorConcurrencyService::TenantShareOf(config.max_in_flight_per_tenant, config.shards,
                                                                     lease.shard, lease.tenant_tag);
    condition = Condition::And({std::move(condition), TenantRoom(counter, share)});
    ops.push_back(UpdateOp::Add(Attr(counter), 1));
  }
  return store::WriteRequest::Update(ConnectorConcurrencyService::Key(lease.connector_id, lease.shard), std::move(ops),
                                     std::move(condition), store::ReturnValues::kNone);
}

// A holder's removal (a release or a reclaim): the holder, one off the count, and one off its
// tenant's counter when its lease id names one.
std::vector<UpdateOp> RemoveHolderOps(std::string_view lease_id) {
  std::vector<UpdateOp> ops = {UpdateOp::Remove(AttributePath::In(kHolders, std::string(lease_id))),
                               UpdateOp::Add(Attr(kInFlight), -1)};
  if (std::string_view tag = TagOfLease(lease_id); !tag.empty())
    ops.push_back(UpdateOp::Add(Attr(TenantCounter(tag)), -1));
  return ops;
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
  for (const auto& [name, value] : item) {
    const std::optional<std::string_view> tag = CounterTag(name);
    if (!tag || !value.is_number()) continue;
    if (const int64_t held = store::SaturatedInt(value); held > 0) s.tenant_slots[std::string(*tag)] += held;
  }
  return s;
}

// Sums a shard's snapshot into the connector's.
void Add(ConcurrencySnapshot& total, const ConcurrencySnapshot& part) {
  total.in_flight += part.in_flight;
  total.max_in_flight += part.max_in_flight;
  total.holders += part.holders;
  total.expired_holders += part.expired_holders;
  for (const auto& [tag, held] : part.tenant_slots) total.tenant_slots[tag] += held;
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

std::string ConnectorConcurrencyService::TenantTag(std::string_view tenant_id) {
  return Sha256Hex(tenant_id).substr(0, 12);
}

int ConnectorConcurrencyService::TenantFirstShard(std::string_view tenant_tag, int shards) {
  if (shards <= 1) return 0;
  uint64_t value = 0;  // the tag's first 8 hex digits (a tag is never anything else; other bytes count 0)
  for (char c : tenant_tag.substr(0, 8)) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
    value = value * 16 + static_cast<uint64_t>(digit);
  }
  return static_cast<int>(value % static_cast<uint64_t>(shards));
}

int ConnectorConcurrencyService::TenantShareOf(int share, int shards, int shard, std::string_view tenant_tag) {
  if (shards <= 1) return share;
  const int first = TenantFirstShard(tenant_tag, shards);
  return ShareOf(share, shards, (shard - first + shards) % shards);
}

SlotLease ConnectorConcurrencyService::NewLease(std::string_view connector_id, int shard,
                                                const ConcurrencyConfig& config, const std::string& tenant_tag) const {
  SlotLease lease{std::string(connector_id), NewLeaseId(), clock_.now_epoch_ms() + int64_t{config.lease_ttl_s} * 1000,
                  shard, tenant_tag};
  if (!tenant_tag.empty()) absl::StrAppend(&lease.lease_id, std::string(1, kTagSeparator), tenant_tag);
  return lease;
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

// The shard an acquire tries first: a random one — under a share smaller than the shards, a random
// one of the tenant's own (those with a part of its share: TenantShareOf), so the tenant's calls
// spread evenly over them.
int FirstShardToTry(const ConcurrencyConfig& config, const std::string& tag) {
  const int share = config.max_in_flight_per_tenant;
  if (tag.empty() || share >= config.shards) return RandomShard(config.shards);
  return (ConnectorConcurrencyService::TenantFirstShard(tag, config.shards) + RandomShard(share)) % config.shards;
}

}  // namespace

absl::StatusOr<std::optional<SlotLease>> ConnectorConcurrencyService::TryAcquire(std::string_view connector_id,
                                                                                 const ConcurrencyConfig& config,
                                                                                 std::string_view tenant_id,
                                                                                 SlotRefusal* refusal) {
  const std::string tag = config.max_in_flight_per_tenant > 0 ? TenantTag(tenant_id) : std::string();
  SlotRefusal why = SlotRefusal::kConnectorFull;
  std::optional<SlotLease> lease;
  // From a random shard onwards; the first with room wins. A shard whose part of the tenant's share
  // is zero is never tried for it.
  const int first = FirstShardToTry(config, tag);
  for (int i = 0; i < config.shards && !lease; ++i) {
    const int shard = (first + i) % config.shards;
    if (!tag.empty() && TenantShareOf(config.max_in_flight_per_tenant, config.shards, shard, tag) == 0) continue;
    ASSIGN_OR_RETURN(lease, TryShard(connector_id, shard, config, tag, &why));
  }
  if (!lease && refusal != nullptr) *refusal = why;
  return lease;
}

namespace {

// The item has a free slot for the tenant of `tag` (empty: any), or a lease that may be reclaimed.
// `*tenant_full` is set when the connector had room but the tenant's counter was at its share.
bool MayHaveRoom(const Item& item, int64_t now_ms, const ConcurrencyConfig& config, const std::string& tag,
                 int64_t tenant_share, bool* tenant_full) {
  const auto in_flight = store::GetInt(item, kInFlight);
  const auto max = store::GetInt(item, kMax);
  if (in_flight && max && *in_flight < *max) {
    const auto held = tag.empty() ? std::nullopt : store::GetInt(item, TenantCounter(tag));
    if (!held || *held < tenant_share) return true;
    *tenant_full = true;
  }
  if (const AttributeMap* holders = store::GetMap(item, kHolders)) {
    for (const auto& [id, expiry] : *holders) {
      if (expiry.is_number() && Reclaimable(store::SaturatedInt(expiry), now_ms, config)) return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::optional<SlotLease>> ConnectorConcurrencyService::TryShard(std::string_view connector_id, int shard,
                                                                               const ConcurrencyConfig& config,
                                                                               const std::string& tenant_tag,
                                                                               SlotRefusal* refusal) {
  const int64_t tenant_share = TenantShareOf(config.max_in_flight_per_tenant, config.shards, shard, tenant_tag);
  // Attempt 0 is the fast path; a second attempt follows only if the first found the item missing
  // or reclaimed an expired lease.
  for (int attempt = 0; attempt < 2; ++attempt) {
    SlotLease lease = NewLease(connector_id, shard, config, tenant_tag);
    const store::WriteRequest w = AcquireRequest(lease, config);
    absl::StatusOr<store::WriteResult> r = store_.Update(w.key, w.ops, w.condition, w.returns);
    if (!r.ok()) {
      // The acquire's outcome is unknown (a DynamoDB timeout or 500 after the request went out): it
      // may hold a slot, and one of the tenant's share, that nothing would give back before the lease
      // runs out. Given back now; the release is conditional on the holder, so a slot that was never
      // taken is left alone. (Not where the store says it wrote nothing: a release would only wait
      // for the same lock.)
      if (store::IsStoreError(r.status()) && !store::NothingWritten(r.status())) {
        if (absl::StatusOr<bool> released = Release(lease); !released.ok()) {
          spdlog::warn(
              "connector {}: a slot whose acquire's outcome is unknown was not given back (its lease will "
              "expire): {}",
              std::string(connector_id), released.status().ToString());
        }
      }
      return r.status();
    }
    if (r->applied) return std::optional<SlotLease>(std::move(lease));
    if (attempt > 0) break;
    const int64_t now_ms = clock_.now_epoch_ms();
    ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(Key(connector_id, shard)));
    if (!item || store::GetMap(*item, kHolders) == nullptr) {
      RETURN_IF_ERROR(EnsureShard(connector_id, shard, config));
      continue;
    }
    // Expired leases reclaimed; the tenants' counters are left to the periodic reclaim (a tidy here
    // would put its reads and writes on the hottest item at every refusal, and a tenant at its share
    // is refused while the connector has room).
    ASSIGN_OR_RETURN(int reclaimed, ReclaimShard(connector_id, shard, config, /*tidy=*/false));
    // Try once more if there is room now: we reclaimed leases, or the item we read had room or
    // expired leases (another caller may have reclaimed those between our read and our reclaim —
    // without this, of two callers racing for two expired slots one was deferred with a slot free).
    bool tenant_full = false;
    const bool room = MayHaveRoom(*item, now_ms, config, tenant_tag, tenant_share, &tenant_full);
    if (tenant_full) *refusal = SlotRefusal::kTenantShare;
    if (reclaimed == 0 && !room) break;
  }
  return std::optional<SlotLease>();
}

std::pair<store::WriteRequest, SlotLease> ConnectorConcurrencyService::PrepareAcquire(
    std::string_view connector_id, const ConcurrencyConfig& config, std::string_view tenant_id) const {
  const std::string tag = config.max_in_flight_per_tenant > 0 ? TenantTag(tenant_id) : std::string();
  SlotLease lease = NewLease(connector_id, FirstShardToTry(config, tag), config, tag);
  store::WriteRequest w = AcquireRequest(lease, config);
  return {std::move(w), std::move(lease)};
}

store::WriteRequest ConnectorConcurrencyService::ReleaseRequest(const SlotLease& lease) {
  return store::WriteRequest::Update(Key(lease.connector_id, lease.shard), RemoveHolderOps(lease.lease_id),
                                     Condition::Exists(AttributePath::In(kHolders, lease.lease_id)),
                                     store::ReturnValues::kNone);
}

absl::StatusOr<bool> ConnectorConcurrencyService::Release(const SlotLease& lease) {
  const store::WriteRequest w = ReleaseRequest(lease);
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
  return r.applied;
}

absl::StatusOr<int> ConnectorConcurrencyService::ReclaimExpired(std::string_view connector_id,
                                                                const ConcurrencyConfig& config) {
  int reclaimed = 0;
  absl::Status first_error;  // one shard's trouble does not keep the others' expired slots taken
  for (int k = 0; k < config.shards; ++k) {
    absl::StatusOr<int> n = ReclaimShard(connector_id, k, config, /*tidy=*/true);
    if (n.ok()) {
      reclaimed += *n;
    } else if (first_error.ok()) {
      first_error = n.status();
    }
  }
  if (!first_error.ok()) {  // what the other shards gave back is not lost from the log with it
    return absl::Status(first_error.code(), absl::StrCat(first_error.message(), " (", reclaimed,
                                                         " slot(s) of expired leases reclaimed on the other shards)"));
  }
  return reclaimed;
}

absl::StatusOr<int> ConnectorConcurrencyService::ReclaimShard(std::string_view connector_id, int shard,
                                                              const ConcurrencyConfig& config, bool tidy) {
  const store::ItemKey key = Key(connector_id, shard);
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(key));
  if (!item) return 0;
  const AttributeMap* holders = store::GetMap(*item, kHolders);
  if (holders == nullptr) return 0;
  const auto in_flight = store::GetInt(*item, kInFlight);
  const bool miscounted = in_flight && *in_flight != static_cast<int64_t>(holders->size());
  const int64_t now_ms = clock_.now_epoch_ms();
  int reclaimed = 0;
  bool holders_alone = false;  // a holder was removed without its counts: they are set from the holders below
  for (const auto& [id, expiry] : *holders) {
    if (!expiry.is_number() || !Reclaimable(store::SaturatedInt(expiry), now_ms, config)) continue;
    // Conditional on the expiry we saw: a lease renewed meanwhile is left alone, and of several
    // reclaimers exactly one gives the slot back.
    const Condition unchanged = Condition::Eq(AttributePath::In(kHolders, id), expiry);
    absl::StatusOr<store::WriteResult> r = store_.Update(key, RemoveHolderOps(id), unchanged);
    if (!r.ok() && r.status().code() == absl::StatusCode::kInvalidArgument) {
      // A count the removal cannot take one off (an edited item: a counter that is not a number):
      // the holder goes alone, and the counts are set from the holders below. Otherwise every pass
      // would fail here, and the slot, the tenant's share and the tidy that mends the counter with it.
      spdlog::warn("{} {}: the counts cannot take the reclaim of {} ({}): the holder is removed alone", key.pk, key.sk,
                   id, r.status().ToString());
      r = store_.Update(key, {UpdateOp::Remove(AttributePath::In(kHolders, id))}, unchanged);
      holders_alone = holders_alone || (r.ok() && r->applied);
    }
    if (!r.ok()) return r.status();
    if (r->applied) ++reclaimed;
  }
  if (miscounted || holders_alone) RETURN_IF_ERROR(RepairCount(key));
  const bool counts_tenants = std::any_of(
      item->begin(), item->end(), [](const auto& attribute) { return CounterTag(attribute.first).has_value(); });
  if ((tidy || holders_alone) && counts_tenants) RETURN_IF_ERROR(TidyTenantCounters(key));
  return reclaimed;
}

// Each tenant counter against the holders whose lease ids name it. A release or reclaim by this
// version changes both together; a reclaim by an instance of an earlier version removes the holder
// alone, leaving the counter too high (the tenant refused below its share) — it is set to the
// holders' number here. A counter at zero is removed, so the item holds only tenants with calls in
// flight (an acquire finds an absent counter as zero).
//
// Each write is conditional on the counter's value read and on the tidy count read (kTidyCount,
// which it adds one to). Every other write of this version moves a counter and its holders together,
// so while the counter is as read, its holders are as many as read — unless another tidy wrote in
// between, and the tidy count refuses that case (two tidies that read before either wrote: without
// it the second would set a counter an acquire had raised meanwhile back below the truth, letting
// the tenant past its share). The only other change to the holders, an earlier version's reclaim,
// lowers them, so the value written is never below the truth.
absl::Status ConnectorConcurrencyService::TidyTenantCounters(const store::ItemKey& key) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(key));
  if (!item) return absl::OkStatus();
  const AttributeMap* holders = store::GetMap(*item, kHolders);
  if (holders == nullptr) return absl::OkStatus();
  std::map<std::string, int64_t, std::less<>> held;
  for (const auto& [id, expiry] : *holders) {
    if (std::string_view tag = TagOfLease(id); !tag.empty()) ++held[std::string(tag)];
  }
  // The tidy count as read (nullopt: absent), then as this tidy's own writes leave it.
  std::optional<store::AttributeValue> tidy_count;
  if (auto it = item->find(kTidyCount); it != item->end()) tidy_count = it->second;
  int writes = 0;
  for (const auto& [name, value] : *item) {
    const std::optional<std::string_view> tag = CounterTag(name);
    if (!tag || writes >= kMaxTidiedCounters) continue;
    const auto it = held.find(*tag);
    const int64_t holding = it == held.end() ? 0 : it->second;
    if (value.is_number() && store::SaturatedInt(value) == holding && holding > 0) continue;
    ++writes;
    // From 1 again past the largest count (an edited item): still unlike the count read.
    const int64_t read_count = tidy_count && tidy_count->is_number() ? store::SaturatedInt(*tidy_count) : 0;
    const int64_t next_count = read_count > 0 && read_count < std::numeric_limits<int64_t>::max() ? read_count + 1 : 1;
    std::vector<UpdateOp> ops = {holding == 0 ? UpdateOp::Remove(Attr(name)) : UpdateOp::Set(Attr(name), holding),
                                 UpdateOp::Set(Attr(kTidyCount), next_count)};
    Condition unchanged =
        Condition::And({Condition::Eq(Attr(name), value), tidy_count ? Condition::Eq(Attr(kTidyCount), *tidy_count)
                                                                     : Condition::NotExists(Attr(kTidyCount))});
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(key, ops, unchanged));
    if (!r.applied) break;  // another tidy (or a call) changed the item since it was read: the next period's
    tidy_count = store::AttributeValue(next_count);
    if (!(value.is_number() && store::SaturatedInt(value) == 0)) {
      spdlog::warn(
          "{} {}: {} was {} with {} holders naming it (a lease reclaimed by an earlier version, or an "
          "edited item): set to {}",
          key.pk, key.sk, name, value.is_number() ? std::to_string(store::SaturatedInt(value)) : "not a number",
          holding, holding);
    }
  }
  return absl::OkStatus();
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
