#pragma once

#include <memory>
#include <string>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/domain/principal.h"

namespace toolgate::auth {

using Principal = ::toolgate::Principal;  // the domain's, filled from a verified token

// Verifies JWTs (design §7): RS256 and ES256 against public keys from a JWKS file (`kid` picks the
// key; the file is re-read when it changes), HS256 against a shared secret (development). The token's
// `alg` selects the key family and each key is used only with its own algorithm, so a token cannot
// choose how it is checked (no `none`, no HS256 signed with an RSA public key). `exp` is required;
// `nbf`, `iss` and `aud` are checked when configured, with `leeway_s`. `exp`, `nbf` and `iat` must
// be numbers of seconds that fit int64 (1e300 is refused, not cast). Roles come from
// `cognito:groups` or `custom:roles`, as a list or as one comma-separated string whose entries are
// trimmed of spaces ("operator, admin"); a role name holding a control character fails the token.
//
// A token that verified is remembered (design §16: no signature check or claims parse per request
// for the same token): until its `exp`, Verify answers it from memory — `exp` is still checked each
// time, and an RS256/ES256 token verifies again once the JWKS file has been reloaded. At most
// kMaxCachedTokens are kept (expired ones dropped first, then all).
//
// Thread-safe. Verify returns kUnauthenticated with a short reason that is safe to show the caller
// (it never contains the token or a key).
class JwtVerifier {
 public:
  struct Options {
    std::string hs256_secret;  // empty: HS256 refused
    std::string jwks_file;     // empty: RS256/ES256 refused
    std::string issuer;        // empty: not checked
    std::string audience;      // empty: not checked
    int leeway_s = 30;
  };

  // kInvalidArgument when the JWKS file cannot be read or holds no usable key.
  static absl::StatusOr<std::unique_ptr<JwtVerifier>> Create(Options options, const Clock& clock);
  ~JwtVerifier();

  absl::StatusOr<Principal> Verify(std::string_view token);

  static constexpr size_t kMaxCachedTokens = 1024;

  struct KeySet;  // parsed JWKS (internal)

 private:
  // A verified token: what it says and until when.
  struct Verified {
    Principal principal;
    int64_t exp = 0;
    std::optional<int64_t> nbf;
    bool asymmetric = false;  // RS256/ES256: valid while keys_generation_ is unchanged
    uint64_t keys_generation = 0;
  };

  JwtVerifier(Options options, const Clock& clock);
  absl::StatusOr<Verified> VerifyUncached(std::string_view token, int64_t now);
  absl::Status ReloadKeysIfChanged() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-reads the JWKS file when it changed (at most once per check interval); the keys in force and
  // their generation.
  std::pair<std::shared_ptr<const KeySet>, uint64_t> CurrentKeys();

  const Options options_;
  const Clock& clock_;
  absl::Mutex mu_;
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(mu_);  // readers copy the pointer
  int64_t keys_mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_check_ms_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t keys_generation_ ABSL_GUARDED_BY(mu_) = 0;  // +1 at every reload

  absl::Mutex cache_mu_;
  std::unordered_map<std::string, Verified> cache_ ABSL_GUARDED_BY(cache_mu_);
};

// Signs an HS256 token with `claims` (a JSON object text). For development and tests
// (`toolgate dev-token`); production tokens come from the identity provider.
std::string SignHs256(const std::string& claims_json, const std::string& secret);

// base64url without padding, as JWTs use it.
std::string Base64UrlEncode(std::string_view data);
bool Base64UrlDecode(std::string_view in, std::string& out);

}  // namespace toolgate::auth
