#include "api/mcp_session.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace toolgate::api {

namespace {

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac, &len);
  return std::string(reinterpret_cast<const char*>(mac), len);
}

// A short digest of the tenant: the id names no tenant in clear text, yet binds to one.
std::string TenantDigest(std::string_view tenant_id) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(tenant_id.data()), tenant_id.size(), d);
  return Hex(d, 12);
}

bool VisibleAscii(std::string_view s) {
  for (char c : s) {
    if (c < 0x21 || c > 0x7e || c == '.') return false;
  }
  return !s.empty();
}

}  // namespace

McpSessionIds::McpSessionIds(std::string key, int64_t ttl_ms) : key_(std::move(key)), ttl_ms_(ttl_ms) {}

std::string McpSessionIds::DeriveKey(std::string_view secret) {
  if (!secret.empty()) return Hmac(secret, "toolgate mcp session ids v1");
  unsigned char random[32];
  if (RAND_bytes(random, sizeof random) != 1) {  // no entropy: fall back to the C++ library's source
    std::random_device rd;
    for (unsigned char& b : random) b = static_cast<unsigned char>(rd());
  }
  return std::string(reinterpret_cast<const char*>(random), sizeof random);
}

std::string McpSessionIds::Sign(std::string_view payload) const {
  const std::string mac = Hmac(key_, payload);
  return Hex(reinterpret_cast<const unsigned char*>(mac.data()), mac.size());
}

std::string McpSessionIds::Issue(std::string_view tenant_id, std::string_view protocol_version, int64_t now_ms) const {
  unsigned char nonce[12];
  if (RAND_bytes(nonce, sizeof nonce) != 1) std::fill(std::begin(nonce), std::end(nonce), 0);
  // v1.<version>.<issued ms>.<nonce>.<tenant digest>, then .<mac> over all of it.
  const std::string payload =
      absl::StrCat("v1.", std::string(VisibleAscii(protocol_version) ? protocol_version : "unknown"), ".", now_ms, ".",
                   Hex(nonce, sizeof nonce), ".", TenantDigest(tenant_id));
  return absl::StrCat(payload, ".", Sign(payload));
}

std::optional<McpSessionIds::Session> McpSessionIds::Verify(std::string_view id, std::string_view tenant_id,
                                                            int64_t now_ms) const {
  if (id.size() > 512) return std::nullopt;
  const size_t last_dot = id.rfind('.');
  if (last_dot == std::string_view::npos) return std::nullopt;
  const std::string_view payload = id.substr(0, last_dot);
  const std::string expected = Sign(payload);
  const std::string_view mac = id.substr(last_dot + 1);
  if (mac.size() != expected.size() || CRYPTO_memcmp(mac.data(), expected.data(), mac.size()) != 0) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(std::string(payload), '.');
  if (parts.size() != 5 || parts[0] != "v1" || parts[4] != TenantDigest(tenant_id)) return std::nullopt;
  Session s;
  s.protocol_version = std::string(parts[1]);
  if (!absl::SimpleAtoi(std::string(parts[2]), &s.issued_at_ms)) return std::nullopt;
  if (now_ms - s.issued_at_ms > ttl_ms_ || s.issued_at_ms - now_ms > 60'000) return std::nullopt;
  return s;
}

}  // namespace toolgate::api
