#pragma once

// The logging level an MCP client set for its session (`logging/setLevel`, design §14), kept in
// the store so that every instance of a fleet relays the session's log messages alike: sessions
// themselves hold no state (mcp_session.h), and a load balancer needs no stickiness.
//
// Item (MCP_SESSION#<digest>, LOG_LEVEL), `level` and `ttl` (the session's expiry), the digest
// SHA-256 of the tenant and the session id. Each instance keeps what it read or wrote for 5 s, so a
// level set on one instance reaches calls on another within that, and a session's calls cost a
// store read when no fresh copy is kept (concurrent misses each read; a level set on this instance
// while a read was on its way wins over what the read found). Thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <unordered_map>
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate::api {

class McpLogLevels {
 public:
  McpLogLevels(store::ItemStore& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Saves `severity` (LogSeverity: 0 debug … 7 emergency) for the session until `expires_at_s`.
  // Blocking (one store write).
  absl::Status Set(std::string_view tenant_id, std::string_view session_id, int severity, int64_t expires_at_s);

  // The session's severity (-1: none set) when this instance knows it (read or written less than
  // 5 s ago); nullopt: ask Get.
  std::optional<int> Cached(std::string_view tenant_id, std::string_view session_id);
  // The session's severity (-1: none set, or the store could not say: logged, and then no log
  // messages for 5 s). Blocking (one store read) unless cached.
  int Get(std::string_view tenant_id, std::string_view session_id);

 private:
  struct Entry {
    int severity = -1;
    int64_t at_ms = 0;  // monotonic
  };
  static std::string Digest(std::string_view tenant_id, std::string_view session_id);
  // Keeps `severity` for the session; a value read from the store (`read_since_ms`: when the read
  // began) only when nothing was kept since.
  void Remember(const std::string& digest, int severity, std::optional<int64_t> read_since_ms);

  store::ItemStore& store_;
  const Clock& clock_;
  absl::Mutex mu_;
  std::unordered_map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate::api
