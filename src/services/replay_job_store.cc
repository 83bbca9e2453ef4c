#include "toolgate/services/replay_job_store.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "toolgate/status_macros.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

using store::Attr;
using store::Condition;
using store::Item;
using store::UpdateOp;

namespace {

constexpr char kJobsPk[] = "REPLAYJOBS";

store::ItemKey HeaderKey(std::string_view job_id) { return {kJobsPk, absl::StrCat("JOB#", std::string(job_id))}; }

store::ItemKey PartKey(std::string_view job_id, int64_t part) {
  char sk[32];
  std::snprintf(sk, sizeof sk, "PART#%06lld", static_cast<long long>(part));
  return {absl::StrCat("REPLAYJOB#", std::string(job_id)), sk};
}

ReplayJob JobFromItem(const Item& item) {
  ReplayJob j;
  auto s = [&](const char* n) { return store::GetString(item, n).value_or(""); };
  auto i = [&](const char* n, int64_t d = 0) { return store::GetInt(item, n).value_or(d); };
  j.job_id = s("job_id");
  j.state = s("state");
  j.reason = s("reason");
  j.requested_by = s("requested_by");
  j.force = store::GetBool(item, "force").value_or(false);
  j.rate_per_s = static_cast<int>(i("rate_per_s", 5));
  j.filter_json = s("filter_json");
  j.created_at_ms = i("created_at_ms");
  j.updated_at_ms = i("updated_at_ms");
  j.finished_at_ms = i("finished_at_ms");
  j.planned = i("planned");
  j.next_index = i("next_index");
  j.in_flight_index = i("in_flight_index", -1);
  j.last_execution_id = s("last_execution_id");
  j.replayed = i("replayed");
  j.deduped = i("deduped");
  j.refused = i("refused");
  j.failed = i("failed");
  j.interrupted = i("interrupted");
  j.owner = s("owner");
  j.lease_until_ms = i("lease_until_ms");
  j.cancelled_by = s("cancelled_by");
  return j;
}

Condition Running() { return Condition::Eq(Attr("state"), std::string("RUNNING")); }
Condition OwnedBy(std::string_view owner) { return Condition::Eq(Attr("owner"), std::string(owner)); }

}  // namespace

ReplayJobStore::ReplayJobStore(store::ItemStore& store, const Clock& clock, int max_clock_skew_s)
    : store_(store), clock_(clock), skew_ms_(int64_t{max_clock_skew_s} * 1000) {}

absl::Status ReplayJobStore::Create(const ReplayJob& job, const std::vector<ReplayJobEntry>& entries) {
  if (static_cast<int64_t>(entries.size()) > kMaxEntries) {
    return absl::InvalidArgumentError(absl::StrCat("a replay job holds at most ", kMaxEntries, " executions"));
  }
  const int64_t ttl = job.created_at_ms / 1000 + kRetentionS;
  for (size_t at = 0, part = 0; at < entries.size(); at += kPartSize, ++part) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t k = at; k < std::min(entries.size(), at + kPartSize); ++k) {
      list.push_back({entries[k].first, entries[k].second});
    }
    Item item{{"entries", list.dump()}, {std::string(store::kTtlAttribute), ttl}};
    ASSIGN_OR_RETURN(store::WriteResult r,
                     store_.Put(PartKey(job.job_id, static_cast<int64_t>(part)), item, Condition::Always()));
    (void)r;
  }
  Item header{{"job_id", job.job_id},
              {"state", std::string("RUNNING")},
              {"reason", job.reason},
              {"requested_by", job.requested_by},
              {"force", job.force},
              {"rate_per_s", int64_t{job.rate_per_s}},
              {"filter_json", job.filter_json},
              {"created_at_ms", job.created_at_ms},
              {"updated_at_ms", job.created_at_ms},
              {"planned", static_cast<int64_t>(entries.size())},
              {"next_index", int64_t{0}},
              {"in_flight_index", int64_t{-1}},
              {"replayed", int64_t{0}},
              {"deduped", int64_t{0}},
              {"refused", int64_t{0}},
              {"failed", int64_t{0}},
              {"interrupted", int64_t{0}},
              {std::string(store::kTtlAttribute), ttl}};
  if (entries.empty()) {
    header["state"] = std::string("DONE");
    header["finished_at_ms"] = job.created_at_ms;
  }
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Put(HeaderKey(job.job_id), header, Condition::ItemAbsent()));
  if (!r.applied) return absl::AlreadyExistsError("replay job exists");
  return absl::OkStatus();
}

absl::StatusOr<ReplayJob> ReplayJobStore::Get(std::string_view job_id) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(HeaderKey(job_id)));
  if (!item) return absl::NotFoundError("no such replay job");
  return JobFromItem(*item);
}

absl::StatusOr<std::vector<ReplayJob>> ReplayJobStore::List(int limit) {
  store::QueryRequest q{kJobsPk, "JOB#", std::min(std::max(limit, 1), 1000), std::nullopt, /*descending=*/true};
  ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
  std::vector<ReplayJob> jobs;
  for (const auto& [sk, item] : p.items) jobs.push_back(JobFromItem(item));
  return jobs;
}

absl::StatusOr<std::vector<ReplayJobEntry>> ReplayJobStore::Entries(std::string_view job_id, int64_t from,
                                                                    int64_t count) {
  std::vector<ReplayJobEntry> out;
  for (int64_t part = from / kPartSize; count > 0 && static_cast<int64_t>(out.size()) < count; ++part) {
    ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(PartKey(job_id, part)));
    if (!item) break;
    const nlohmann::json list = ParseJsonWithin(store::GetString(*item, "entries").value_or("[]"));
    if (!list.is_array()) return absl::DataLossError("replay job part is not a list");
    for (size_t k = 0; k < list.size(); ++k) {
      const int64_t index = part * kPartSize + static_cast<int64_t>(k);
      if (index < from || static_cast<int64_t>(out.size()) == count) continue;
      const nlohmann::json& e = list[k];
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string()) {
        return absl::DataLossError("replay job entry is not [tenant, id]");
      }
      out.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    }
  }
  return out;
}

absl::StatusOr<bool> ReplayJobStore::Cancel(std::string_view job_id, std::string_view cancelled_by) {
  const int64_t now = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(HeaderKey(job_id),
                    {UpdateOp::Set(Attr("state"), std::string("CANCELLED")),
                     UpdateOp::Set(Attr("cancelled_by"), std::string(cancelled_by)),
                     UpdateOp::Set(Attr("finished_at_ms"), now), UpdateOp::Set(Attr("updated_at_ms"), now)},
                    Condition::And({Condition::Exists(Attr("job_id")), Running()}), store::ReturnValues::kNone));
  if (!r.applied) {
    ASSIGN_OR_RETURN(ReplayJob j, Get(job_id));  // kNotFound for an unknown job
    (void)j;
  }
  return r.applied;
}

absl::StatusOr<std::optional<ReplayJob>> ReplayJobStore::Claim(std::string_view job_id, std::string_view owner,
                                                               int64_t lease_ms) {
  const int64_t now = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(
          HeaderKey(job_id),
          {UpdateOp::Set(Attr("owner"), std::string(owner)), UpdateOp::Set(Attr("lease_until_ms"), now + lease_ms)},
          Condition::And({Condition::Exists(Attr("job_id")), Running(),
                          Condition::Or({Condition::NotExists(Attr("owner")), OwnedBy(owner),
                                         Condition::Lt(Attr("lease_until_ms"), now - skew_ms_)})})));
  if (!r.applied) return std::nullopt;
  return JobFromItem(r.item);
}

absl::Status ReplayJobStore::Release(std::string_view job_id, std::string_view owner) {
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(HeaderKey(job_id), {UpdateOp::Remove(Attr("owner")), UpdateOp::Remove(Attr("lease_until_ms"))},
                    Condition::And({Condition::Exists(Attr("job_id")), OwnedBy(owner)}), store::ReturnValues::kNone));
  (void)r;
  return absl::OkStatus();
}

absl::StatusOr<bool> ReplayJobStore::Begin(std::string_view job_id, std::string_view owner, int64_t index,
                                           int64_t lease_ms) {
  const int64_t now = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(HeaderKey(job_id),
                    {UpdateOp::Set(Attr("in_flight_index"), index),
                     UpdateOp::Set(Attr("lease_until_ms"), now + lease_ms), UpdateOp::Set(Attr("updated_at_ms"), now)},
                    Condition::And({Running(), OwnedBy(owner), Condition::Eq(Attr("next_index"), index)}),
                    store::ReturnValues::kNone));
  return r.applied;
}

absl::StatusOr<bool> ReplayJobStore::Record(std::string_view job_id, std::string_view owner, int64_t index,
                                            std::string_view execution_id, std::string_view result) {
  ASSIGN_OR_RETURN(ReplayJob job, Get(job_id));
  const int64_t now = clock_.now_epoch_ms();
  std::vector<UpdateOp> ops = {
      UpdateOp::Set(Attr("next_index"), index + 1), UpdateOp::Set(Attr("in_flight_index"), int64_t{-1}),
      UpdateOp::Set(Attr("last_execution_id"), std::string(execution_id)), UpdateOp::Set(Attr("updated_at_ms"), now),
      UpdateOp::Add(store::AttributePath::Top(std::string(result)), 1)};
  const Condition mine = Condition::And({OwnedBy(owner), Condition::Eq(Attr("next_index"), index)});
  if (index + 1 >= job.planned) {  // the last one ends the job, unless it was cancelled meanwhile
    std::vector<UpdateOp> done = ops;
    done.push_back(UpdateOp::Set(Attr("state"), std::string("DONE")));
    done.push_back(UpdateOp::Set(Attr("finished_at_ms"), now));
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(HeaderKey(job_id), done, Condition::And({mine, Running()}),
                                                         store::ReturnValues::kNone));
    if (r.applied) return true;
  }
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(HeaderKey(job_id), ops, mine, store::ReturnValues::kNone));
  return r.applied;
}

}  // namespace toolgate
