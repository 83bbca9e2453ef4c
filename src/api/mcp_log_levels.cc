#include "api/mcp_log_levels.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/engine/connector.h"
#include "toolgate/services/ledger.h"

namespace toolgate::api {

namespace {

constexpr int64_t kCacheMs = 5'000;
constexpr size_t kMaxCached = 10'000;  // sessions; past it the cache starts again empty
constexpr const char* kLevelNames[] = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"};

store::ItemKey KeyOf(const std::string& digest) { return {absl::StrCat("MCP_SESSION#", digest), "LOG_LEVEL"}; }

}  // namespace

std::string McpLogLevels::Digest(std::string_view tenant_id, std::string_view session_id) {
  std::string text(tenant_id);
  text += '\n';
  text += session_id;
  return Sha256Hex(text);
}

void McpLogLevels::Remember(const std::string& digest, int severity, std::optional<int64_t> read_since_ms) {
  const int64_t now = clock_.now_monotonic_ms();
  absl::MutexLock lock(&mu_);
  if (read_since_ms) {
    // A read kept only when nothing newer came meanwhile: a Set on this instance while the read was
    // on its way (the read may have seen the store before it) is this instance's latest word.
    if (auto it = cache_.find(digest); it != cache_.end() && it->second.at_ms >= *read_since_ms) return;
  }
  if (cache_.size() >= kMaxCached && cache_.find(digest) == cache_.end()) {
    // What is no longer fresh goes first; only a cache full of fresh entries starts again empty.
    for (auto it = cache_.begin(); it != cache_.end();)
      it = now - it->second.at_ms >= kCacheMs ? cache_.erase(it) : ++it;
    if (cache_.size() >= kMaxCached) cache_.clear();
  }
  cache_[digest] = {severity, now};
}

absl::Status McpLogLevels::Set(std::string_view tenant_id, std::string_view session_id, int severity,
                               int64_t expires_at_s) {
  if (severity < 0 || severity > 7) return absl::InvalidArgumentError("not a logging level");
  const std::string digest = Digest(tenant_id, session_id);
  const store::Item item{{"level", std::string(kLevelNames[severity])}, {"ttl", expires_at_s}};
  absl::StatusOr<store::WriteResult> put = store_.Put(KeyOf(digest), item, store::Condition::Always());
  if (!put.ok()) return put.status();
  Remember(digest, severity, std::nullopt);
  return absl::OkStatus();
}

std::optional<int> McpLogLevels::Cached(std::string_view tenant_id, std::string_view session_id) {
  const std::string digest = Digest(tenant_id, session_id);
  absl::MutexLock lock(&mu_);
  auto it = cache_.find(digest);
  if (it == cache_.end() || clock_.now_monotonic_ms() - it->second.at_ms >= kCacheMs) return std::nullopt;
  return it->second.severity;
}

int McpLogLevels::Get(std::string_view tenant_id, std::string_view session_id) {
  if (std::optional<int> known = Cached(tenant_id, session_id)) return *known;
  const std::string digest = Digest(tenant_id, session_id);
  const int64_t read_since_ms = clock_.now_monotonic_ms();
  int severity = -1;
  absl::StatusOr<std::optional<store::Item>> got = store_.Get(KeyOf(digest));
  if (!got.ok()) {
    spdlog::warn("mcp: the logging level of a session could not be read, no log messages relayed for 5 s: {}",
                 got.status().ToString());
  } else if (got->has_value()) {
    // What the store holds is checked like any input: an unknown level is none.
    severity = LogSeverity(store::GetString(**got, "level").value_or(""));
  }
  Remember(digest, severity, read_since_ms);
  return Cached(tenant_id, session_id).value_or(severity);
}

}  // namespace toolgate::api
