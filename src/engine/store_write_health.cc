#include "toolgate/engine/store_write_health.h"

#include "absl/strings/match.h"

namespace toolgate {

namespace {

// A store's message is kept to this many bytes: enough for SQLite's and DynamoDB's words and the
// file they name, never a whole response body.
constexpr size_t kMaxMessageBytes = 512;

}  // namespace

bool StoreWriteHealth::IsStoreTrouble(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kPermissionDenied:  // DynamoDB: write access denied, credentials expired
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kInternal:
      return true;
    case absl::StatusCode::kFailedPrecondition:
      // The store's own words for a store it may not write (SqliteItemStore: "store is read-only",
      // "opened read-only"); the services use kFailedPrecondition for refusals of theirs too.
      return absl::StrContains(status.message(), "read-only");
    default:
      return false;
  }
}

void StoreWriteHealth::Record(const absl::StatusOr<store::WriteResult>& result) {
  if (result.ok()) {
    if (result->applied) Succeeded();
  } else if (IsStoreTrouble(result.status())) {
    Failed(result.status());
  }
}

void StoreWriteHealth::Record(const std::vector<absl::StatusOr<store::WriteResult>>& results) {
  bool applied = false;
  for (const auto& r : results) {
    if (!r.ok() && IsStoreTrouble(r.status())) {
      Failed(r.status());
      return;
    }
    applied = applied || (r.ok() && r->applied);
  }
  if (applied) Succeeded();
}

void StoreWriteHealth::Succeeded() {
  // Stored only when the millisecond changed: a store to a shared line on every write of every
  // thread would make the request path's threads take turns at it.
  const int64_t now_ms = clock_.now_epoch_ms();
  if (last_success_ms_.load(std::memory_order_relaxed) != now_ms) {
    last_success_ms_.store(now_ms, std::memory_order_relaxed);
  }
  if (failing_.load(std::memory_order_relaxed)) failing_.store(false, std::memory_order_release);
}

void StoreWriteHealth::Failed(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    last_failure_ms_ = clock_.now_epoch_ms();
    last_failure_message_ = std::string(status.message().substr(0, kMaxMessageBytes));
  }
  failing_.store(true, std::memory_order_release);
}

StoreWriteHealth::Snapshot StoreWriteHealth::snapshot() const {
  Snapshot s;
  s.failing = failing();
  s.last_success_ms = last_success_ms_.load(std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  s.last_failure_ms = last_failure_ms_;
  s.last_failure_message = last_failure_message_;
  return s;
}

bool StoreWriteHealth::WritesUnconfirmed() const {
  const int64_t last = last_success_ms_.load(std::memory_order_relaxed);
  const int64_t now = clock_.now_epoch_ms();
  return last == 0 || now - last >= kConfirmWithinMs || last - now >= kConfirmWithinMs;
}

bool StoreWriteHealth::ClaimProbe() {
  const int64_t now = clock_.now_monotonic_ms();
  int64_t last = last_probe_monotonic_ms_.load(std::memory_order_relaxed);
  while (now - last >= kProbeIntervalMs) {
    if (last_probe_monotonic_ms_.compare_exchange_weak(last, now, std::memory_order_relaxed)) return true;
  }
  return false;
}

}  // namespace toolgate
