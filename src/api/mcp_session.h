#pragma once

// Mcp-Session-Id values that carry no server state (design §17.7): a session id is the tenant's
// digest, the negotiated protocol version and the time it was issued, signed with HMAC-SHA256. Any
// instance holding the same key accepts any id issued under it, so a load balancer needs no
// stickiness. Ending a session (DELETE) keeps nothing either: an ended id is still accepted until it
// expires — sessions hold no state a client could be confused by.
//
// Thread-safe (immutable after construction).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace toolgate::api {

class McpSessionIds {
 public:
  // `key`: the signing key (at least 16 bytes); `ttl_ms`: how long an id is accepted.
  McpSessionIds(std::string key, int64_t ttl_ms);

  // The key a gateway signs with: HMAC-SHA256(secret, label) for a configured secret (the same on
  // every instance of a fleet), else 32 random bytes (only this process accepts its ids).
  static std::string DeriveKey(std::string_view secret);

  // A new id for `tenant_id` speaking `protocol_version`: visible ASCII only, as the header needs.
  std::string Issue(std::string_view tenant_id, std::string_view protocol_version, int64_t now_ms) const;

  struct Session {
    std::string protocol_version;
    int64_t issued_at_ms = 0;
  };
  // The session when `id` was issued under this key for `tenant_id` and has not expired; else
  // nullopt (a forged, foreign, expired or malformed id).
  std::optional<Session> Verify(std::string_view id, std::string_view tenant_id, int64_t now_ms) const;

 private:
  std::string Sign(std::string_view payload) const;

  std::string key_;
  int64_t ttl_ms_;
};

}  // namespace toolgate::api
