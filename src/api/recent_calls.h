#pragma once

#include <algorithm>
#include <deque>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace toolgate::api {

// The last five minutes of calls per connector, on this instance, for /admin/connectors.
class RecentCalls {
 public:
  void Add(const std::string& connector, int64_t now_ms, int64_t latency_ms, bool error) {
    absl::MutexLock lock(&mu_);
    auto& q = calls_[connector];
    q.push_back({now_ms, latency_ms, error});
    while (q.size() > 20000 || (!q.empty() && q.front().at_ms < now_ms - 300'000)) q.pop_front();
  }
  nlohmann::json Summary(const std::string& connector, int64_t now_ms) {
    absl::MutexLock lock(&mu_);
    std::vector<int64_t> latencies;
    int64_t errors = 0;
    for (const auto& c : calls_[connector]) {
      if (c.at_ms < now_ms - 300'000) continue;
      latencies.push_back(c.latency_ms);
      errors += c.error ? 1 : 0;
    }
    std::sort(latencies.begin(), latencies.end());
    using json = nlohmann::json;
    auto pct = [&](double p) -> json {
      if (latencies.empty()) return nullptr;
      return latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * static_cast<double>(latencies.size())))];
    };
    return {
        {"calls", latencies.size()},
        {"error_ratio",
         latencies.empty() ? json(nullptr) : json(static_cast<double>(errors) / static_cast<double>(latencies.size()))},
        {"latency", {{"p50", pct(0.50)}, {"p95", pct(0.95)}, {"p99", pct(0.99)}}}};
  }

 private:
  struct Call {
    int64_t at_ms;
    int64_t latency_ms;
    bool error;
  };
  absl::Mutex mu_;
  std::map<std::string, std::deque<Call>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate::api
