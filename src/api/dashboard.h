#pragma once

#include <string_view>

namespace toolgate::api {

// The operator dashboard (design §9): one self-contained page, no external resources. It reads the
// admin JSON routes (/admin/connectors, /admin/slo, /admin/series, /admin/kill-switches,
// /admin/audit) and refreshes itself.
extern const std::string_view kDashboardHtml;

}  // namespace toolgate::api
