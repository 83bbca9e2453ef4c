#include "toolgate/domain/slo.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace toolgate::slo {

std::string_view ToString(Sli s) { return s == Sli::kToolError ? "tool_error" : "tool_latency_ms"; }
std::string_view ToString(Severity s) { return s == Severity::kPage ? "page" : "ticket"; }

int64_t WindowMinutes(std::string_view label) {
  for (const Window& w : kWindows) {
    if (w.label == label) return w.minutes;
  }
  return 0;
}

double BurnRate(const Counts& c, double target) {
  if (c.total <= 0) return 0;
  return (static_cast<double>(c.bad) / static_cast<double>(c.total)) / (1.0 - target);
}

absl::Status ValidateTarget(double target) {
  if (!(target > 0 && target < 1)) return absl::InvalidArgumentError("an SLO target must be between 0 and 1");
  for (const Tier& t : kTiers) {
    if (t.factor * (1.0 - target) >= 1.0) {
      return absl::InvalidArgumentError(absl::StrCat("target ", target, " makes the ", std::string(t.name),
                                                     " tier impossible: ", t.factor,
                                                     " × (1 − target) ≥ 1 (it would need more than 100 % errors)"));
    }
  }
  return absl::OkStatus();
}

TierVerdict EvaluateTier(const Tier& tier, const Counts& long_window, const Counts& short_window, double target,
                         int64_t min_events) {
  TierVerdict v;
  v.long_burn = BurnRate(long_window, target);
  v.short_burn = BurnRate(short_window, target);
  v.long_events = long_window.total;
  v.firing = long_window.total >= min_events && v.long_burn > tier.factor && v.short_burn > tier.factor;
  return v;
}

double BudgetRemaining(const Counts& period, double target) {
  if (period.total <= 0) return 1.0;
  const double allowed = (1.0 - target) * static_cast<double>(period.total);
  return 1.0 - static_cast<double>(period.bad) / allowed;
}

std::optional<int64_t> SecondsToExhaustion(double budget_remaining, double burn_rate) {
  if (budget_remaining <= 0) return 0;
  if (burn_rate <= 0) return std::nullopt;
  return static_cast<int64_t>(std::floor(budget_remaining * static_cast<double>(kBudgetMinutes) * 60.0 / burn_rate));
}

Counts SumLast(const Buckets& buckets, int64_t last, int64_t n, Sli sli) {
  Counts sum;
  for (auto it = buckets.upper_bound(last - n); it != buckets.end() && it->first <= last; ++it)
    sum += it->second.For(sli);
  return sum;
}

}  // namespace toolgate::slo
