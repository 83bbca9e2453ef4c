#pragma once

#include <memory>
#include <string>
#include <string_view>
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

  struct KeySet;  // parsed JWKS (internal)

 private:
  JwtVerifier(Options options, const Clock& clock);
  absl::Status ReloadKeysIfChanged() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const Clock& clock_;
  absl::Mutex mu_;
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(mu_);  // readers copy the pointer
  int64_t keys_mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_check_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

// Signs an HS256 token with `claims` (a JSON object text). For development and tests
// (`toolgate dev-token`); production tokens come from the identity provider.
std::string SignHs256(const std::string& claims_json, const std::string& secret);

// base64url without padding, as JWTs use it.
std::string Base64UrlEncode(std::string_view data);
bool Base64UrlDecode(std::string_view in, std::string& out);

}  // namespace toolgate::auth
