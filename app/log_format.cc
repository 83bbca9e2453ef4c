#include "app/log_format.h"

#include <ctime>
#include <string>

#include "nlohmann/json.hpp"
#include "toolgate/engine/event_log.h"
#include "toolgate/domain/control_bytes.h"

namespace toolgate::cli {

namespace {

using json = nlohmann::json;

std::string Rfc3339Utc(spdlog::log_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t s = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

// An event's fields, or null for a plain message.
json EventFields(std::string_view payload) {
  if (payload.empty() || payload.front() != kEventMarker) return nullptr;
  json j = json::parse(payload.substr(1), nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json(nullptr);
}

// A text line's field value (logfmt): one line with no byte a terminal reading the log (`tail -f`)
// would act on (Printable), quoted when empty or holding a space, `=` or `"` — request paths and
// audit fields come from clients, and `path=/x status=200` inside a value must not read as fields.
std::string FieldValue(std::string_view s) {
  std::string v = Printable(s);
  if (!v.empty() && v.find_first_of(" =\"") == std::string::npos) return v;
  std::string quoted = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + '"';
}

class LogFormatter final : public spdlog::formatter {
 public:
  explicit LogFormatter(bool as_json) : json_(as_json) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const std::string level(spdlog::level::to_string_view(msg.level).data(),
                            spdlog::level::to_string_view(msg.level).size());
    json fields = EventFields(payload);
    std::string line;
    if (json_) {
      json out = {{"time", Rfc3339Utc(msg.time)}, {"level", level}};
      if (msg.logger_name.size() > 0) out["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
      if (fields.is_null()) {
        out["msg"] = std::string(payload);
      } else {
        for (auto& [k, v] : fields.items()) out[k] = v;
      }
      line = out.dump(-1, ' ', false, json::error_handler_t::replace);
    } else {
      line = Rfc3339Utc(msg.time) + " [" + level + "] ";
      if (fields.is_null()) {
        line += Printable(payload);
      } else {
        line += Printable(fields.value("msg", ""));
        for (auto& [k, v] : fields.items()) {
          if (k == "msg") continue;
          line += " " + k + "=" +
                  (v.is_string() ? FieldValue(v.get<std::string>())
                                 : v.dump(-1, ' ', false, json::error_handler_t::replace));
        }
      }
    }
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<LogFormatter>(json_); }

 private:
  const bool json_;
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeLogFormatter(bool json) { return std::make_unique<LogFormatter>(json); }

}  // namespace toolgate::cli
