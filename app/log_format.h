#pragma once

// The process's log line format ([log] format, design §17.12).

#include <memory>

#include "spdlog/formatter.h"

namespace toolgate::cli {

// Writes each log line as one JSON object ({"time", "level", "logger", "msg"} plus an event's
// fields, engine/event_log.h) when `json`, else as text ("<time> [<level>] <msg> key=value ...").
// Times are UTC, RFC 3339 with milliseconds. Message text is escaped (JSON) or kept on one line
// (text: newlines become "\n").
std::unique_ptr<spdlog::formatter> MakeLogFormatter(bool json);

}  // namespace toolgate::cli
