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

}  // namespace

UnrecordedOutcomes::UnrecordedOutcomes(store::ItemStore& store, const Clock& clock, Metrics& metrics, size_t max_held)
    : store_(store), clock_(clock), metrics_(metrics), max_held_(max_held) {}

std::vector<store::WriteRequest> UnrecordedOutcomes::Remaining(const std::vector<store::WriteRequest>& writes,
                                                               const WriteResults& results, bool& refused) {
  enum class State { kApplied, kLeft, kDropped };
  std::vector<store::WriteRequest> left;
  State previous = State::kApplied;
  for (size_t i = 0; i < writes.size(); ++i) {
    const store::WriteRequest& w = writes[i];
    const absl::StatusOr<store::WriteResult>* r = i < results.size() ? &results[i] : nullptr;
    State state;
    bool chained = false;
    if (r != nullptr && r->ok() && (*r)->applied) {
      state = State::kApplied;
    } else if (i > 0 && w.requires_previous && previous != State::kApplied) {
      state = previous;  // skipped, not tried: it goes where the write it is chained to goes
      chained = state == State::kLeft;
    } else if (r == nullptr || (!r->ok() && store::IsStoreError(r->status()))) {
      state = State::kLeft;
    } else {
      state = State::kDropped;  // a condition refused it (or the store called it malformed)
      refused = true;
    }
    if (state == State::kLeft) {
      store::WriteRequest again = w;
      again.requires_previous = chained;
      left.push_back(std::move(again));
    }
    previous = state;
  }
  return left;
}

bool UnrecordedOutcomes::Hold(const std::string& execution_id, const std::string& outcome,
                              const std::vector<store::WriteRequest>& writes, const WriteResults& results) {
  bool refused = false;
  std::vector<store::WriteRequest> left = Remaining(writes, results, refused);
  if (left.empty()) return false;  // applied, or refused (the caller says so)
  const int64_t now = clock_.now_epoch_ms();
  {
    absl::MutexLock lock(&mu_);
    if (held_.size() >= max_held_) {
      spdlog::error(
          "execution {}: outcome {} not held for another try: {} outcomes wait for the store already (it stays "
          "IN_PROGRESS; replay it once abandoned)",
          execution_id, outcome, held_.size());
      metrics_.UnrecordedOutcomeEnded("full");
      return false;
    }
    held_.push_back(Close{execution_id, outcome, std::move(left), now, now + kFirstRetryMs});
  }
  Update();
  return true;
}

int UnrecordedOutcomes::RetryDue(bool all) {
  absl::MutexLock one_at_a_time(&retry_mu_);
  const int64_t now = clock_.now_epoch_ms();
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
  std::list<Close> again;
  // A close the store took none of says it is still in trouble: the rest wait for their next turn
  // instead of each waiting out the store's own timeout (SQLite's busy timeout is 5 s).
  bool still_in_trouble = false;
  const auto expired = [now](const Close& c, const std::string& error) {
    if (now - c.held_at_ms < kMaxAgeMs) return false;
    spdlog::error(
        "execution {}: outcome {} given up after {} tries over {} s: it stays IN_PROGRESS (replay it once "
        "abandoned): {}",
        c.execution_id, c.outcome, c.attempts, (now - c.held_at_ms) / 1000, error);
    return true;
  };
  for (Close& c : due) {
    if (still_in_trouble) {
      if (expired(c, "the store still in trouble")) {
        metrics_.UnrecordedOutcomeEnded("expired");
        continue;
      }
      c.backoff_ms = std::min(kLongestRetryMs, c.backoff_ms * 2);
      c.next_at_ms = now + c.backoff_ms;
      again.push_back(std::move(c));
      continue;
    }
    ++c.attempts;
    WriteResults results = store_.WriteBatch(c.writes);
    bool refused = false;
    std::vector<store::WriteRequest> left = Remaining(c.writes, results, refused);
    still_in_trouble = left.size() == c.writes.size() && !refused;
    if (left.empty() && !refused) {
      ++recorded;
      metrics_.UnrecordedOutcomeEnded("recorded");
      spdlog::info(
          "execution {}: outcome {} recorded after {} more tr{} ({} ms after its call ended: the store is back)",
          c.execution_id, c.outcome, c.attempts, c.attempts == 1 ? "y" : "ies", now - c.held_at_ms);
      continue;
    }
    if (left.empty()) {
      metrics_.UnrecordedOutcomeEnded("refused");
      spdlog::warn(
          "execution {}: outcome {} given up after {} more tr{}: the store refused part of its record (a replay, "
          "another call taking its intent over, or its slot's lease reclaimed, came first)",
          c.execution_id, c.outcome, c.attempts, c.attempts == 1 ? "y" : "ies");
      continue;
    }
    if (expired(c, FirstError(results))) {
      metrics_.UnrecordedOutcomeEnded("expired");
      continue;
    }
    c.writes = std::move(left);
    c.backoff_ms = std::min(kLongestRetryMs, c.backoff_ms * 2);
    c.next_at_ms = now + c.backoff_ms;
    again.push_back(std::move(c));
  }
  {
    absl::MutexLock lock(&mu_);
    held_.splice(held_.end(), again);
  }
  Update();
  return recorded;
}

size_t UnrecordedOutcomes::held() const {
  absl::MutexLock lock(&mu_);
  return held_.size();
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

void UnrecordedOutcomes::Update() { metrics_.UnrecordedOutcomesHeld(static_cast<double>(held())); }

}  // namespace toolgate
