#pragma once

#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace toolgate {

// Log lines that say what changed (design §17.12): breaker transitions, admin changes, kill
// switches, limits, alarms, the state restored at start, and the access log. Each is one line with
// an `event` name and fields, handed to spdlog as kEventMarker followed by a JSON object
// {"event", "msg", fields...}; the process's formatter (app/log_format.h) writes it as one JSON
// object per line ([log] format = "json", the fields merged with time and level) or as text
// ("msg key=value ..."). Thread-safe as spdlog is.
inline constexpr char kEventMarker = '\x1e';  // ASCII record separator: never in a human message

inline void LogEvent(spdlog::level::level_enum level, std::string_view event, std::string_view message,
                     nlohmann::json fields) {
  if (!spdlog::default_logger_raw()->should_log(level)) return;
  if (!fields.is_object()) fields = nlohmann::json::object();
  fields["event"] = std::string(event);
  fields["msg"] = std::string(message);
  std::string line(1, kEventMarker);
  line += fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  spdlog::default_logger_raw()->log(level, std::string_view(line));
}

}  // namespace toolgate
