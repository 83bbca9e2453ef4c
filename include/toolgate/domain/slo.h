#pragma once

// SLO arithmetic (design §8) as pure functions: burn rates, the multiwindow multi-burn-rate tiers of
// the SRE Workbook, the error budget. No I/O; counts and time come in as parameters.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

namespace toolgate::slo {

// The two SLIs of a connector: good = not a downstream error (5xx, timeout, connection failure,
// unreadable answer; 4xx is good), and good = answered within the latency threshold.
enum class Sli { kToolError, kToolLatency };
inline constexpr std::array<Sli, 2> kSlis = {Sli::kToolError, Sli::kToolLatency};
std::string_view ToString(Sli s);  // "tool_error", "tool_latency_ms"

enum class Severity { kPage, kTicket };
std::string_view ToString(Severity s);  // "page", "ticket"

// A named evaluation window.
struct Window {
  std::string_view label;  // "5m", ..., "3d" (the `window` label of toolgate_slo_burn_rate)
  int64_t minutes;
};
inline constexpr std::array<Window, 7> kWindows = {
    {{"5m", 5}, {"30m", 30}, {"1h", 60}, {"2h", 120}, {"6h", 360}, {"1d", 1440}, {"3d", 4320}}};
// Windows up to this length are summed from minute buckets, longer ones from hour buckets.
inline constexpr int64_t kMinuteResolutionUpToMinutes = 360;
// The error budget's period.
inline constexpr int64_t kBudgetMinutes = 30 * 24 * 60;

// One alarm tier: it fires when both windows burn faster than `factor`.
struct Tier {
  std::string_view name;  // "1h/5m", ... (stable: alarm items and events name tiers by it)
  std::string_view long_window;
  std::string_view short_window;
  double factor;
  Severity severity;
};
inline constexpr std::array<Tier, 4> kTiers = {{
    {"1h/5m", "1h", "5m", 14.4, Severity::kPage},
    {"6h/30m", "6h", "30m", 6, Severity::kPage},
    {"1d/2h", "1d", "2h", 3, Severity::kTicket},
    {"3d/6h", "3d", "6h", 1, Severity::kTicket},
}};

int64_t WindowMinutes(std::string_view label);  // REQUIRES: a label of kWindows

// Good/bad event counts over some span.
struct Counts {
  int64_t total = 0;
  int64_t bad = 0;
  Counts& operator+=(const Counts& o) {
    total += o.total;
    bad += o.bad;
    return *this;
  }
};

// error ratio / (1 - target); 0 with no events. REQUIRES: 0 < target < 1.
double BurnRate(const Counts& c, double target);

// kInvalidArgument when a tier could never fire or would fire on any error at all:
// factor × (1 − target) ≥ 1 means the error ratio would have to exceed 100 %.
absl::Status ValidateTarget(double target);

struct TierVerdict {
  double long_burn = 0;
  double short_burn = 0;
  int64_t long_events = 0;
  bool firing = false;
};
// A tier fires when both windows burn faster than its factor, and stays quiet while the long window
// holds fewer than `min_events` events (one failure at low traffic is not an outage).
TierVerdict EvaluateTier(const Tier& tier, const Counts& long_window, const Counts& short_window, double target,
                         int64_t min_events);

// The fraction of the period's error budget left: 1 − bad / ((1 − target) × total). 1 with no events;
// negative once overspent.
double BudgetRemaining(const Counts& period, double target);

// Seconds until the budget is spent at `burn_rate` (1 = spending exactly the whole budget over the
// period); nullopt when nothing is burning, 0 when already spent.
std::optional<int64_t> SecondsToExhaustion(double budget_remaining, double burn_rate);

// Per-minute (or per-hour) counts of one connector: bucket index → counts of each SLI.
struct BucketCounts {
  int64_t total = 0;
  int64_t error_bad = 0;
  int64_t latency_bad = 0;
  Counts For(Sli s) const { return {total, s == Sli::kToolError ? error_bad : latency_bad}; }
  BucketCounts& operator+=(const BucketCounts& o) {
    total += o.total;
    error_bad += o.error_bad;
    latency_bad += o.latency_bad;
    return *this;
  }
};
using Buckets = std::map<int64_t, BucketCounts>;

// The counts of the buckets in (last - n, last]: the last `n` buckets up to and including `last`.
Counts SumLast(const Buckets& buckets, int64_t last, int64_t n, Sli sli);

}  // namespace toolgate::slo
