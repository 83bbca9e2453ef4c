#include "toolgate/engine/transition_auditor.h"

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/engine/event_log.h"

namespace toolgate {

void TransitionAuditor::OnTransition(const BreakerTransition& t) {
  metrics_.OnTransition(t);
  const std::string from(breaker::ToString(t.from)), to(breaker::ToString(t.to));
  LogEvent(t.to == breaker::State::kClosed ? spdlog::level::info : spdlog::level::warn, "breaker_transition",
           "breaker of " + t.connector_id + ": " + from + " -> " + to,
           {{"connector", t.connector_id},
            {"from", from},
            {"to", to},
            {"cause", std::string(ToString(t.cause))},
            {"generation", t.generation}});
  if (ledger_ == nullptr) return;
  using Cause = BreakerTransition::Cause;
  std::string type;
  switch (t.cause) {
    case Cause::kFailureThreshold:
    case Cause::kProbeFailed:
    case Cause::kProbeThrottled:
      type = "CIRCUIT_OPENED";
      break;
    case Cause::kProbeClaimed:
    case Cause::kProbeTakenOver:
      type = "CIRCUIT_HALF_OPENED";
      break;
    case Cause::kProbeSucceeded:
      type = "CIRCUIT_CLOSED";
      break;
    default:
      return;  // operator actions and returned probes
  }
  const nlohmann::json data = {{"connector_id", t.connector_id},
                               {"from", std::string(breaker::ToString(t.from))},
                               {"to", std::string(breaker::ToString(t.to))},
                               {"cause", std::string(ToString(t.cause))},
                               {"generation", t.generation}};
  if (auto e = ledger_->Audit(type, "system", data.dump()); !e.ok()) {
    spdlog::warn("audit of {} for {} not written: {}", type, t.connector_id, e.status().ToString());
  }
}

}  // namespace toolgate
