#include "toolgate/engine/unrecorded_outcomes.h"

#include <algorithm>
#include <utility>

#include "spdlog/spdlog.h"

namespace toolgate {
namespace {

std::string FirstError(const UnrecordedOutcomes::WriteResults& results) {
  for (const auto& r : results) {
    if (!r.ok()) return r.status().ToString();
  }
  return "no error";
}

// The store as a whole unreachable or too slow: the next close would fare no better this turn. Any
// other error (a damaged item, say) is this close's own.
bool StoreInTrouble(const UnrecordedOutcomes::WriteResults& results) {
  for (const auto& r : results) {
    if (!r.ok()) {
      return r.status().code() == absl::StatusCode::kUnavailable ||
             r.status().code() == absl::StatusCode::kDeadlineExceeded;
    }
  }
  return false;
}

size_t Bytes(const store::AttributeValue& v) {
  size_t n = sizeof(store::AttributeValue);
  if (v.is_string()) n += v.as_string().size();
  if (v.is_map()) {
    for (const auto& [name, value] : v.as_map()) n += name.size() + Bytes(value);
  }
  return n;
}

}  // namespace

UnrecordedOutcomes::UnrecordedOutcomes(store::ItemStore& store, const Clock& clock, Metrics& metrics, size_t max_held,
                                       size_t max_held_bytes)
    : store_(store), clock_(clock), metrics_(metrics), max_held_(max_held), max_held_bytes_(max_held_bytes) {}

std::vector<store::WriteRequest> UnrecordedOutcomes::Remaining(const std::vector<store::WriteRequest>& writes,
                                                               const WriteResults& results, bool& refused) {
  enum class State { kApplied, kLeft, kDropped };
  std::vector<store::WriteRequest> left;
  std::vector<State> states;
  std::vector<size_t> left_at(writes.size());  // where each write that is left stands in `left`
  states.reserve(writes.size());
  for (size_t i = 0; i < writes.size(); ++i) {
    const store::WriteRequest& w = writes[i];
    const absl::StatusOr<store::WriteResult>* r = i < results.size() ? &results[i] : nullptr;
    const size_t back = w.requires_back <= i ? w.requires_back : 0;
    State state;
    bool chained = false;
    if (r != nullptr && store::Applied(*r)) {
      state = State::kApplied;
    } else if (back > 0 && states[i - back] != State::kApplied) {
      state = states[i - back];  // skipped, not tried: it goes where the write it is chained to goes
      chained = state == State::kLeft;
    } else if (r == nullptr || (!r->ok() && store::IsStoreError(r->status()))) {
      state = State::kLeft;
    } else {
      state = State::kDropped;  // a condition refused it (or the store called it malformed)
      refused = true;
    }
    if (state == State::kLeft) {
      store::WriteRequest again = w;
      again.requires_back = chained ? left.size() - left_at[i - back] : 0;
      left_at[i] = left.size();
      left.push_back(std::move(again));
    }
    states.push_back(state);
  }
  return left;
}

bool UnrecordedOutcomes::AlreadyWritten(const store::WriteRequest& w, const std::optional<store::Item>& item) {
  if (!item) return false;
  switch (w.kind) {
    case store::WriteRequest::Kind::kPut:
      return *item == w.item;
    case store::WriteRequest::Kind::kUpdate:
      for (const store::UpdateOp& op : w.ops) {
        const store::AttributeValue* now = store::Find(*item, op.path);
        switch (op.kind) {
          case store::UpdateOp::Kind::kSet:
            if (now == nullptr || *now != op.value) return false;
            break;
          case store::UpdateOp::Kind::kRemove:
            if (now != nullptr) return false;
            break;
          case store::UpdateOp::Kind::kAdd:
            return false;  // a count says nothing of who moved it
        }
      }
      return !w.ops.empty();
    case store::WriteRequest::Kind::kErase:
      return false;  // gone: by this write, or by whoever else may erase it
  }
  return false;
}

size_t UnrecordedOutcomes::Bytes(const std::vector<store::WriteRequest>& writes) {
  size_t n = 0;
  for (const store::WriteRequest& w : writes) {
    n += sizeof(store::WriteRequest) + w.key.pk.size() + w.key.sk.size();
    for (const auto& [name, value] : w.item) n += name.size() + toolgate::Bytes(value);
    for (const store::UpdateOp& op : w.ops) n += sizeof(op) + op.path.ToString().size() + toolgate::Bytes(op.value);
  }
  return n;
}

bool UnrecordedOutcomes::ReadBackRefused(const std::vector<store::WriteRequest>& writes, WriteResults& results) {
  const size_t n = std::min(writes.size(), results.size());
  // Which were not tried, as the store answered (a read-back below may find their head applied).
  std::vector<bool> skipped(n);
  for (size_t i = 0; i < n; ++i) skipped[i] = store::ChainBroken(writes[i], results, i);
  bool unblocked = false;
  for (size_t i = 0; i < n; ++i) {
    if (skipped[i]) {
      // Not tried because the write it is chained to was not applied; that one found applied after
      // all: this one is written again.
      const size_t back = writes[i].requires_back;
      if (back <= i && store::Applied(results[i - back])) {
        results[i] =
            absl::UnavailableError("not tried: the write it is chained to was found applied on reading it back");
        unblocked = true;
      }
      continue;
    }
    if (!results[i].ok() || results[i]->applied) continue;
    absl::StatusOr<std::optional<store::Item>> item = store_.Get(writes[i].key);
    if (!item.ok()) {
      results[i] = item.status();  // not known whether it was ours: tried again
    } else if (AlreadyWritten(writes[i], *item)) {
      store::WriteResult applied;
      applied.applied = true;
      results[i] = std::move(applied);
    }
  }
  return unblocked;
}

bool UnrecordedOutcomes::Hold(const std::string& execution_id, const std::string& outcome,
                              const std::vector<store::WriteRequest>& writes, const WriteResults& results) {
  bool refused = false;
  std::vector<store::WriteRequest> left = Remaining(writes, results, refused);
  if (left.empty()) return false;                 // applied, or refused (the caller says so)
  const int64_t now = clock_.now_monotonic_ms();  // a wall clock stepped neither gives up nor stalls them
  const size_t bytes = Bytes(left);
  absl::MutexLock lock(&mu_);
  if (count_ >= max_held_ || bytes_ + bytes > max_held_bytes_) {
    spdlog::error(
        "execution {}: outcome {} not held for another try: {} outcomes ({} bytes) wait for the store already (it "
        "stays IN_PROGRESS; replay it once abandoned)",
        execution_id, outcome, count_, bytes_);
    metrics_.UnrecordedOutcomeEnded("full");
    return false;
  }
  held_.push_back(Close{execution_id, outcome, std::move(left), bytes, now, now + kFirstRetryMs});
  ++count_;
  bytes_ += bytes;
  UpdateGaugeLocked();
  return true;
}

int UnrecordedOutcomes::RetryDue(bool all) {
  absl::MutexLock one_at_a_time(&retry_mu_);
  const int64_t now = clock_.now_monotonic_ms();  // a wall clock stepped neither gives up nor stalls them
  std::list<Close> due;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = held_.begin(); it != held_.end();) {
      auto next = std::next(it);
      if (all || it->next_at_ms <= now) due.splice(due.end(), held_, it);
      it = next;
    }
  }
  if (due.empty()) return 0;
  int recorded = 0;
  bool store_back = false;  // the store took a write of this turn, or answered one with its condition
  size_t ended = 0;
  size_t ended_bytes = 0;
  std::list<Close> again;
  // A close the store took none of, unreachable or timing out, says it is still in trouble: the rest
  // wait for their next turn instead of each waiting out the store's own timeout (SQLite's busy
  // timeout is 5 s).
  bool still_in_trouble = false;
  const auto expired = [now](const Close& c, const std::string& error) {
    if (now - c.held_at_ms < kMaxAgeMs) return false;
    spdlog::error(
        "execution {}: outcome {} given up after {} tries over {} s: it stays IN_PROGRESS (replay it once "
        "abandoned): {}",
        c.execution_id, c.outcome, c.attempts, (now - c.held_at_ms) / 1000, error);
    return true;
  };
  const auto end = [&](const Close& c, const std::string& result) {
    metrics_.UnrecordedOutcomeEnded(result);
    ++ended;
    ended_bytes += c.bytes;
  };
  for (Close& c : due) {
    if (still_in_trouble) {
      if (expired(c, "the store still in trouble")) {
        end(c, "expired");
        continue;
      }
      c.backoff_ms = std::min(kLongestRetryMs, c.backoff_ms * 2);
      c.next_at_ms = now + c.backoff_ms;
      c.store_trouble = true;
      again.push_back(std::move(c));
      continue;
    }
    ++c.attempts;
    const size_t before = c.writes.size();
    bool refused = false;
    WriteResults results;
    std::vector<store::WriteRequest> left;
    // Writes that a read-back let go (the write they are chained to had gone in after all) are
    // written in this same turn, not left for the next (which a stop's last try does not have).
    for (size_t round = 0;; ++round) {
      results = store_.WriteBatch(c.writes);
      const bool unblocked = ReadBackRefused(c.writes, results);
      left = Remaining(c.writes, results, refused);
      if (!unblocked || left.empty() || round + 1 >= before) break;
      c.writes = std::move(left);
    }
    const bool progress = left.size() < before || refused;
    c.store_trouble = StoreInTrouble(results);
    still_in_trouble = !progress && c.store_trouble;
    // A store that takes a write, or answers one with its condition, takes writes again, even when
    // the rest of this close is refused (a slot's release whose lease was reclaimed meanwhile).
    store_back = store_back || progress;
    if (left.empty() && !refused) {
      ++recorded;
      end(c, "recorded");
      spdlog::info(
          "execution {}: outcome {} recorded after {} more tr{} ({} ms after its call ended: the store is back)",
          c.execution_id, c.outcome, c.attempts, c.attempts == 1 ? "y" : "ies", now - c.held_at_ms);
      continue;
    }
    if (left.empty()) {
      end(c, "refused");
      spdlog::warn(
          "execution {}: outcome {} ended after {} more tr{}: written but for what the store refused, given up (a "
          "replay of it, another call taking its intent over, its slot's lease reclaimed, or a replay's original "
          "swept by retention, came first)",
          c.execution_id, c.outcome, c.attempts, c.attempts == 1 ? "y" : "ies");
      continue;
    }
    if (expired(c, FirstError(results))) {
      end(c, "expired");
      continue;
    }
    c.writes = std::move(left);
    // Part of it went in: the rest is tried at the next turn.
    c.backoff_ms = progress ? kFirstRetryMs : std::min(kLongestRetryMs, c.backoff_ms * 2);
    c.next_at_ms = now + c.backoff_ms;
    again.push_back(std::move(c));
  }
  absl::MutexLock lock(&mu_);
  if (store_back) {
    // The store takes writes again: every close that waited for it is due at the next turn (one
    // failing with an error of its own, a damaged item, keeps its backoff).
    const auto due_soon = [now](Close& c) {
      if (!c.store_trouble) return;
      c.next_at_ms = std::min(c.next_at_ms, now + kFirstRetryMs);
      c.backoff_ms = kFirstRetryMs;
    };
    std::for_each(held_.begin(), held_.end(), due_soon);
    std::for_each(again.begin(), again.end(), due_soon);
  }
  for (Close& c : again) {
    // What is left of a close shrinks as parts of it go in (bytes_ counts c.bytes still).
    const size_t bytes = Bytes(c.writes);
    bytes_ = bytes_ - c.bytes + bytes;
    c.bytes = bytes;
  }
  held_.splice(held_.end(), again);
  count_ -= ended;
  bytes_ -= ended_bytes;
  UpdateGaugeLocked();
  return recorded;
}

size_t UnrecordedOutcomes::held() const {
  absl::MutexLock lock(&mu_);
  return count_;
}

size_t UnrecordedOutcomes::held_bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

void UnrecordedOutcomes::LogLeft() const {
  absl::MutexLock lock(&mu_);
  for (const Close& c : held_) {
    spdlog::error(
        "execution {}: outcome {} not recorded before the stop ({} tries): it stays IN_PROGRESS (replay it "
        "once abandoned)",
        c.execution_id, c.outcome, c.attempts);
  }
}

void UnrecordedOutcomes::UpdateGaugeLocked() { metrics_.UnrecordedOutcomesHeld(static_cast<double>(count_)); }

}  // namespace toolgate
