#include "toolgate/services/slo_counters.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Condition;
using store::Item;
using store::UpdateOp;
using store::WriteRequest;

namespace {

constexpr int64_t kMinuteTtlS = 8 * 3600;
constexpr int64_t kHourTtlS = 31 * 24 * 3600;
constexpr char kMinutePrefix[] = "MIN#";
constexpr char kHourPrefix[] = "HOUR#";
// One item per connector whose alarm ever fired, so alarms of a connector no longer configured can
// be found without a scan: (SLO_ALARMED, <connector>).
constexpr char kAlarmedPk[] = "SLO_ALARMED";

std::string Pk(const std::string& connector) { return "SLO#" + connector; }

std::string BucketSk(std::string_view prefix, int64_t index, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*lld", width, static_cast<long long>(index));
  return std::string(prefix) + buf;
}
std::string MinuteSk(int64_t minute) { return BucketSk(kMinutePrefix, minute, 10); }
std::string HourSk(int64_t hour) { return BucketSk(kHourPrefix, hour, 8); }

std::string LatencyAttr(size_t i) { return absl::StrCat("l", i); }

constexpr char kDeferredReasonPrefix[] = "od_";

// The outcome counts' attributes (minute items), with their OutcomeCounts fields.
constexpr std::array<std::pair<const char*, int64_t OutcomeCounts::*>, 5> kOutcomeAttrs = {{
    {"o_calls", &OutcomeCounts::calls},
    {"o_succeeded", &OutcomeCounts::succeeded},
    {"o_failed", &OutcomeCounts::failed},
    {"o_deferred", &OutcomeCounts::deferred},
    {"o_blocked", &OutcomeCounts::blocked},
}};

// A reason fit to be part of an attribute name; anything else is "other".
std::string ReasonKey(std::string_view reason) {
  if (reason.empty() || reason.size() > 40 ||
      reason.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string_view::npos) {
    return "other";
  }
  return std::string(reason);
}

std::vector<UpdateOp> AddOps(const slo::BucketCounts& c, const std::array<int64_t, kLatencyBucketCount>& latency,
                             const OutcomeCounts& outcomes, int64_t ttl) {
  std::vector<UpdateOp> ops = {UpdateOp::Add(store::AttributePath::Top("total"), c.total),
                               UpdateOp::Add(store::AttributePath::Top("error_bad"), c.error_bad),
                               UpdateOp::Add(store::AttributePath::Top("latency_bad"), c.latency_bad)};
  for (size_t i = 0; i < latency.size(); ++i) {
    if (latency[i] != 0) ops.push_back(UpdateOp::Add(store::AttributePath::Top(LatencyAttr(i)), latency[i]));
  }
  for (const auto& [name, field] : kOutcomeAttrs) {
    if (outcomes.*field != 0) ops.push_back(UpdateOp::Add(store::AttributePath::Top(name), outcomes.*field));
  }
  for (const auto& [reason, n] : outcomes.deferred_by_reason) {
    if (n != 0) ops.push_back(UpdateOp::Add(store::AttributePath::Top(kDeferredReasonPrefix + reason), n));
  }
  ops.push_back(UpdateOp::Set(store::AttributePath::Top(std::string(store::kTtlAttribute)), ttl));
  return ops;
}

// Counts are never negative and never absurd; anything else is a damaged item, not a number to trust.
absl::StatusOr<SloBucket> DecodeBucket(const Item& item, const std::string& connector, const std::string& sk) {
  SloBucket b;
  auto field = [&](std::string_view name, int64_t& out) -> absl::Status {
    const auto* v = store::Find(item, store::AttributePath::Top(std::string(name)));
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number() || v->as_number() < 0 || v->as_number() > 1e15) {
      return absl::DataLossError(
          absl::StrCat("SLO counter SLO#", connector, "/", sk, ": ", std::string(name), " is not a count"));
    }
    out = static_cast<int64_t>(v->as_number());
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(field("total", b.counts.total));
  RETURN_IF_ERROR(field("error_bad", b.counts.error_bad));
  RETURN_IF_ERROR(field("latency_bad", b.counts.latency_bad));
  for (size_t i = 0; i < kLatencyBucketCount; ++i) RETURN_IF_ERROR(field(LatencyAttr(i), b.latency[i]));
  for (const auto& [name, member] : kOutcomeAttrs) RETURN_IF_ERROR(field(name, b.outcomes.*member));
  for (const auto& [name, value] : item) {
    if (name.rfind(kDeferredReasonPrefix, 0) != 0) continue;
    int64_t n = 0;
    RETURN_IF_ERROR(field(name, n));
    b.outcomes.deferred_by_reason[name.substr(sizeof kDeferredReasonPrefix - 1)] += n;
  }
  return b;
}

std::string AlarmSk(slo::Sli sli, std::string_view tier) {
  return "ALARM#" + std::string(slo::ToString(sli)) + "#" + std::string(tier);
}

// An alarm item written before alarms had a sequence reads as sequence 0, its change announced.
SloAlarmState DecodeAlarm(const Item& item) {
  SloAlarmState a;
  a.firing = store::GetBool(item, "firing").value_or(false);
  a.since_ms = store::GetInt(item, "since_ms").value_or(0);
  a.seq = store::GetInt(item, "seq").value_or(0);
  a.announced = store::GetBool(item, "announced").value_or(true);
  a.announced_by = store::GetString(item, "announced_by").value_or("");
  std::vector<std::string> wrong;
  for (const char* name : {"firing", "announced"}) {
    if (const auto* v = store::Find(item, store::Attr(name)); v != nullptr && !v->is_bool()) {
      wrong.push_back(absl::StrCat(name, " is not a boolean"));
    }
  }
  // A seq that is not a whole number is damage too: a claim's condition compares it with the whole
  // number read, so no change of the alarm would ever be announced again.
  // So is one a claim or an ADD cannot take as an int64 (beyond 2^53 a double is not exact).
  if (const auto* v = store::Find(item, store::Attr("seq"));
      v != nullptr && (!v->is_number() || (v->is_double() && v->as_number() != std::floor(v->as_number())) ||
                       !(v->as_number() >= -9007199254740992.0 && v->as_number() <= 9007199254740992.0))) {
    wrong.push_back("seq is not a whole number");
  }
  a.damage = absl::StrJoin(wrong, ", ");
  if (!wrong.empty()) a.damaged_item = item;
  return a;
}

// Adds the buckets after `now` into `now`'s.
void FoldAhead(std::map<int64_t, SloBucket>& buckets, int64_t now) {
  for (auto it = buckets.upper_bound(now); it != buckets.end(); it = buckets.erase(it)) {
    SloBucket& into = buckets[now];
    into.counts += it->second.counts;
    for (size_t i = 0; i < kLatencyBucketCount; ++i) into.latency[i] += it->second.latency[i];
    into.outcomes += it->second.outcomes;
  }
}

}  // namespace

OutcomeCounts& OutcomeCounts::operator+=(const OutcomeCounts& o) {
  for (const auto& [name, field] : kOutcomeAttrs) this->*field += o.*field;
  for (const auto& [reason, n] : o.deferred_by_reason) deferred_by_reason[reason] += n;
  return *this;
}

slo::Buckets SloSeries::MinuteCounts() const {
  slo::Buckets out;
  for (const auto& [k, b] : minutes) out[k] = b.counts;
  return out;
}
slo::Buckets SloSeries::HourCounts() const {
  slo::Buckets out;
  for (const auto& [k, b] : hours) out[k] = b.counts;
  return out;
}

SloCounters::SloCounters(store::ItemStore& store, const Clock& clock) : store_(store), clock_(clock) {}

int SloCounters::LatencyBucket(int64_t latency_ms) {
  for (size_t i = 0; i < kLatencyBucketsMs.size(); ++i) {
    if (latency_ms <= kLatencyBucketsMs[i]) return static_cast<int>(i);
  }
  return static_cast<int>(kLatencyBucketsMs.size());
}

void SloCounters::Record(const std::string& connector, bool error_bad, int64_t latency_ms, bool latency_bad) {
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  const size_t bucket = static_cast<size_t>(LatencyBucket(latency_ms));
  absl::MutexLock lock(&mu_);
  for (Pending* p : {&pending_minutes_[{connector, minute}], &pending_hours_[{connector, minute / 60}]}) {
    p->counts.total += 1;
    p->counts.error_bad += error_bad ? 1 : 0;
    p->counts.latency_bad += latency_bad ? 1 : 0;
    p->latency[bucket] += 1;
  }
}

void SloCounters::RecordOutcome(const std::string& connector, Outcome outcome, std::string_view reason) {
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  absl::MutexLock lock(&mu_);
  OutcomeCounts& o = pending_minutes_[{connector, minute}].outcomes;
  o.calls += 1;
  switch (outcome) {
    case Outcome::kSucceeded:
      o.succeeded += 1;
      break;
    case Outcome::kFailed:
      o.failed += 1;
      break;
    case Outcome::kDeferred:
      o.deferred += 1;
      o.deferred_by_reason[ReasonKey(reason)] += 1;
      break;
    case Outcome::kBlocked:
      o.blocked += 1;
      break;
    case Outcome::kInProgress:
    case Outcome::kQueued:
    case Outcome::kRunning:
    case Outcome::kExpired:
      break;  // counted in `calls` only
  }
}

int64_t SloCounters::pending_calls() const {
  absl::MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [k, p] : pending_minutes_) n += p.counts.total;
  return n;
}

void SloCounters::Pending::Merge(const Pending& o) {
  counts += o.counts;
  for (size_t i = 0; i < kLatencyBucketCount; ++i) latency[i] += o.latency[i];
  outcomes += o.outcomes;
}

absl::Status SloCounters::Flush() {
  absl::MutexLock flush_lock(&flush_mu_);  // one flush at a time: a failed write's counts go back once
  PendingMap minutes, hours;
  {
    absl::MutexLock lock(&mu_);
    minutes.swap(pending_minutes_);
    hours.swap(pending_hours_);
  }
  if (minutes.empty() && hours.empty()) return absl::OkStatus();
  std::vector<WriteRequest> writes;
  std::vector<std::pair<PendingMap*, PendingMap::const_iterator>> sources;
  for (auto it = minutes.cbegin(); it != minutes.cend(); ++it) {
    writes.push_back(WriteRequest::Update(
        {Pk(it->first.first), MinuteSk(it->first.second)},
        AddOps(it->second.counts, it->second.latency, it->second.outcomes, (it->first.second + 1) * 60 + kMinuteTtlS),
        Condition::Always(), store::ReturnValues::kNone));
    sources.emplace_back(&pending_minutes_, it);
  }
  for (auto it = hours.cbegin(); it != hours.cend(); ++it) {
    writes.push_back(WriteRequest::Update(
        {Pk(it->first.first), HourSk(it->first.second)},
        AddOps(it->second.counts, it->second.latency, {}, (it->first.second + 1) * 3600 + kHourTtlS),
        Condition::Always(), store::ReturnValues::kNone));
    sources.emplace_back(&pending_hours_, it);
  }
  const auto results = store_.WriteBatch(writes);
  // A write that failed keeps its counts for the next flush (a store error here almost always means
  // "not applied"; an unknown outcome may count a bucket twice, which only errs towards alarming).
  // Buckets too old to matter any more are dropped.
  const int64_t now_minute = clock_.now_epoch_ms() / 60'000;
  absl::Status first_error;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].ok()) continue;
    if (first_error.ok()) first_error = results[i].status();
    // Refused as malformed: an ADD into a count that is not a number (a damaged item, which reads
    // leave out). Tried again it would fail every flush for as long as the bucket is current, so its
    // counts are dropped with the item they cannot be added to.
    if (results[i].status().code() == absl::StatusCode::kInvalidArgument) continue;
    const auto& [into, it] = sources[i];
    const bool is_minute = into == &pending_minutes_;
    const int64_t age_min = is_minute ? now_minute - it->first.second : now_minute - it->first.second * 60;
    if (age_min > (is_minute ? slo::kMinuteResolutionUpToMinutes : slo::kBudgetMinutes)) continue;
    (*into)[it->first].Merge(it->second);
  }
  return first_error;
}

absl::StatusOr<std::map<int64_t, SloBucket>> SloCounters::ReadRange(const std::string& connector,
                                                                    std::string_view prefix, int64_t first,
                                                                    int64_t last, std::vector<std::string>& damaged) {
  std::map<int64_t, SloBucket> out;
  store::QueryRequest q;
  q.pk = Pk(connector);
  q.sk_prefix = std::string(prefix);  // NOLINT
  q.descending = true;
  q.limit = 1000;
  // Newest first; stop at the first bucket older than the range. Bounded: the range has at most
  // last - first + 1 buckets, and later ones (a clock further ahead than the skew allows) are skipped.
  for (int page = 0; page < 16; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (const auto& [sk, item] : p.items) {
      const std::string digits = sk.substr(prefix.size());
      if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) {
        damaged.push_back(absl::StrCat("SLO#", connector, "/", sk, ": not a bucket key"));
        continue;
      }
      const int64_t index = std::stoll(digits);
      if (index < first) return out;
      if (index > last) continue;
      absl::StatusOr<SloBucket> bucket = DecodeBucket(item, connector, sk);
      if (bucket.ok()) {
        out[index] = *std::move(bucket);
      } else {
        damaged.push_back(std::string(bucket.status().message()));
      }
    }
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return out;
}

absl::StatusOr<SloSeries> SloCounters::Read(const std::string& connector, int max_clock_skew_s) {
  const int64_t now_ms = clock_.now_epoch_ms();
  const int64_t now_minute = now_ms / 60'000;
  const int64_t now_hour = now_minute / 60;
  // Buckets a host whose clock runs ahead (by up to the skew) has written count as this host's
  // current minute and hour, now: held back until this clock reached them, they would first count
  // when they are no longer new.
  const int64_t ahead_minute = (now_ms + int64_t{max_clock_skew_s} * 1000) / 60'000;
  SloSeries s;
  ASSIGN_OR_RETURN(s.minutes, ReadRange(connector, kMinutePrefix, now_minute - slo::kMinuteResolutionUpToMinutes + 1,
                                        ahead_minute, s.damaged));
  FoldAhead(s.minutes, now_minute);
  ASSIGN_OR_RETURN(s.hours, ReadRange(connector, kHourPrefix, now_hour - slo::kBudgetMinutes / 60 + 1,
                                      ahead_minute / 60, s.damaged));
  FoldAhead(s.hours, now_hour);
  return s;
}

absl::StatusOr<OutcomeCounts> SloCounters::ReadOutcomes(const std::string& connector, int minutes) {
  const int64_t now_minute = clock_.now_epoch_ms() / 60'000;
  std::vector<std::string> damaged;  // reported by the SLO evaluation, which reads the same items
  ASSIGN_OR_RETURN(auto buckets, ReadRange(connector, kMinutePrefix, now_minute - minutes + 1, now_minute, damaged));
  OutcomeCounts out;
  for (const auto& [minute, b] : buckets) out += b.outcomes;
  return out;
}

absl::StatusOr<std::optional<SloAlarmState>> SloCounters::SetAlarm(const std::string& connector, slo::Sli sli,
                                                                   std::string_view tier, bool firing) {
  // Only a change is written: to fire, the alarm must not be firing; to resolve, it must be.
  Condition cond = firing ? Condition::Or({Condition::NotExists(store::AttributePath::Top("firing")),
                                           Condition::Eq(store::AttributePath::Top("firing"), false)})
                          : Condition::Eq(store::AttributePath::Top("firing"), true);
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update({Pk(connector), AlarmSk(sli, tier)},
                                 {UpdateOp::Set(store::AttributePath::Top("firing"), firing),
                                  UpdateOp::Set(store::AttributePath::Top("since_ms"), clock_.now_epoch_ms()),
                                  UpdateOp::Add(store::AttributePath::Top("seq"), 1),
                                  UpdateOp::Set(store::AttributePath::Top("announced"), false)},
                                 cond, store::ReturnValues::kAllNew));
  if (!r.applied) return std::nullopt;
  return DecodeAlarm(r.item);
}

absl::StatusOr<std::optional<SloAlarmState>> SloCounters::RepairAlarm(const std::string& connector, slo::Sli sli,
                                                                      std::string_view tier, bool firing,
                                                                      const SloAlarmState& read) {
  // Conditional on the attributes being as read: of several instances repairing at once exactly one
  // does, and a change made since (another instance's repair) is left alone.
  std::vector<Condition> as_read;
  for (const char* name : {"firing", "announced", "seq"}) {
    const auto* v = store::Find(read.damaged_item, store::Attr(name));
    as_read.push_back(v != nullptr ? Condition::Eq(store::Attr(name), *v) : Condition::NotExists(store::Attr(name)));
  }
  // Announced only when the alarm's state was unknown or changes: a repair that keeps a readable
  // state (only `announced` or `seq` was damaged) is no news to a receiver.
  // A change still waiting for its announcement (`announced` readably false) keeps waiting.
  const std::optional<bool> was = store::GetBool(read.damaged_item, "firing");
  const bool no_news =
      was.has_value() && *was == firing && store::GetBool(read.damaged_item, "announced").value_or(false);
  const int64_t now_ms = clock_.now_epoch_ms();
  std::vector<UpdateOp> ops = {UpdateOp::Set(store::AttributePath::Top("firing"), firing),
                               UpdateOp::Set(store::AttributePath::Top("seq"), now_ms),
                               UpdateOp::Set(store::AttributePath::Top("announced"), no_news)};
  // No news keeps its time of change (and the clock-skew hold that follows from it).
  if (!no_news || read.since_ms == 0) ops.push_back(UpdateOp::Set(store::AttributePath::Top("since_ms"), now_ms));
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update({Pk(connector), AlarmSk(sli, tier)}, std::move(ops),
                                 Condition::And(std::move(as_read)), store::ReturnValues::kAllNew));
  if (!r.applied) return std::nullopt;
  return DecodeAlarm(r.item);
}

absl::Status SloCounters::RememberAlarmed(const std::string& connector) {
  return store_.Put({kAlarmedPk, connector}, {{"connector", connector}}, Condition::Always()).status();
}

absl::StatusOr<std::vector<std::string>> SloCounters::AlarmedConnectors() {
  store::QueryRequest q;
  q.pk = kAlarmedPk;
  q.limit = 1000;
  std::vector<std::string> out;
  for (int page = 0; page < 100; ++page) {  // bounded: 100 000 connectors
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (const auto& [sk, item] : p.items) out.push_back(sk);
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return out;
}

absl::StatusOr<bool> SloCounters::ClaimAnnouncement(const std::string& connector, slo::Sli sli, std::string_view tier,
                                                    int64_t seq, const std::string& claimant) {
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update({Pk(connector), AlarmSk(sli, tier)},
                                 {UpdateOp::Set(store::AttributePath::Top("announced"), true),
                                  UpdateOp::Set(store::AttributePath::Top("announced_by"), claimant)},
                                 Condition::And({Condition::Eq(store::AttributePath::Top("announced"), false),
                                                 Condition::Eq(store::AttributePath::Top("seq"), seq)}),
                                 store::ReturnValues::kNone));
  return r.applied;
}

absl::StatusOr<std::map<std::string, SloAlarmState>> SloCounters::ReadAlarms(const std::string& connector) {
  store::QueryRequest q;
  q.pk = Pk(connector);
  q.sk_prefix = "ALARM#";
  q.limit = 100;
  ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
  std::map<std::string, SloAlarmState> out;
  for (const auto& [sk, item] : p.items) {
    out[sk.substr(6)] = DecodeAlarm(item);
  }
  return out;
}

}  // namespace toolgate
