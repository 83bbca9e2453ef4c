#pragma once

#include <string>

#include "toolgate/config.h"

namespace toolgate {

// Prometheus recording and alerting rules (YAML, for `promtool check rules`) equivalent to the
// built-in SLO tiers (design §8), built on toolgate_slo_events_total and
// toolgate_slo_bad_events_total summed over the fleet's instances: one recording rule per window,
// one alert per connector, SLO and tier with the connector's own target and min_events guard.
// Alert names: ToolgateSloBurnRatePage and ToolgateSloBurnRateTicket (labels connector, slo,
// severity, tier).
std::string PrometheusSloRules(const Config& config);

// The summary annotation of one alert (the same text the rules carry; tests compare with it).
std::string SloAlertSummary(const std::string& connector, const std::string& slo, const std::string& tier,
                            double factor);

}  // namespace toolgate
