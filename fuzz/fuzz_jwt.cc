// JWT verification on hostile tokens and JWKS files. A token the verifier accepts must be one it
// could have issued: signed (HS256 with the secret, or by a key of the JWKS), unexpired, with a
// tenant. The first input byte picks the mode: 0 = the rest is a token; 1 = the rest is a JWKS file,
// then a fixed RS256-looking token and every byte-split token are verified against it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "openssl/evp.h"
#include "openssl/hmac.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/clock.h"

namespace {

constexpr char kSecret[] = "fuzz-secret-0123456789abcdef";

const toolgate::SystemClock& Clock() {
  static const toolgate::SystemClock clock;
  return clock;
}

toolgate::auth::JwtVerifier& Hs256Verifier() {
  static auto v = [] {
    toolgate::auth::JwtVerifier::Options o;
    o.hs256_secret = kSecret;
    return std::move(*toolgate::auth::JwtVerifier::Create(o, Clock()));
  }();
  return *v;
}

std::string JwksPath() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/toolgate-fuzz-jwks-XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    return std::string(tmpl);
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    auto p = Hs256Verifier().Verify(rest);
    // Forging an HS256 signature by fuzzing is out of reach: anything accepted is a bug, unless the
    // input is a token signed with the secret (seeds carry some).
    if (p.ok()) {
      if (p->tenant_id.empty()) std::abort();
      const auto last_dot = rest.rfind('.');
      if (last_dot == std::string::npos) std::abort();
      const std::string signing_input = rest.substr(0, last_dot);
      unsigned char mac[EVP_MAX_MD_SIZE];
      unsigned int mac_len = 0;
      HMAC(EVP_sha256(), kSecret, sizeof kSecret - 1, reinterpret_cast<const unsigned char*>(signing_input.data()),
           signing_input.size(), mac, &mac_len);
      const std::string expected =
          toolgate::auth::Base64UrlEncode(std::string_view(reinterpret_cast<char*>(mac), mac_len));
      if (rest.substr(last_dot + 1) != expected) std::abort();
    }
    return 0;
  }
  FILE* f = std::fopen(JwksPath().c_str(), "w");
  if (f == nullptr) return 0;
  std::fwrite(rest.data(), 1, rest.size(), f);
  std::fclose(f);
  toolgate::auth::JwtVerifier::Options o;
  o.jwks_file = JwksPath();
  auto v = toolgate::auth::JwtVerifier::Create(o, Clock());
  if (!v.ok()) return 0;
  // No private key is known: nothing may verify.
  const std::string forged =
      "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4IiwiY3VzdG9tOnRlbmFudF9pZCI6InQiLCJleHAiOjQxMDI0NDQ4MDB9.c2ln";
  if ((*v)->Verify(forged).ok()) std::abort();
  if ((*v)->Verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiY3VzdG9tOnRlbmFudF9pZCI6InQiLCJleHAiOjQxMDI0NDQ4MDB9.").ok()) {
    std::abort();
  }
  return 0;
}
