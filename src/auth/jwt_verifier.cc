#include "toolgate/auth/jwt_verifier.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate::auth {
namespace {

// How deep a token's header or claims may nest (identity providers nest a level or two).
constexpr int kMaxTokenJsonDepth = 16;

using json = nlohmann::json;

constexpr size_t kMaxTokenBytes = 8192;
constexpr int64_t kJwksCheckIntervalMs = 1000;

absl::Status Unauthenticated(std::string_view why) { return absl::UnauthenticatedError(std::string(why)); }

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

enum class KeyType { kRsa, kEcP256 };

struct Key {
  KeyType type;
  Pkey pkey;
};

BIGNUM* ToBignum(const std::string& bytes) {
  return BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()), nullptr);
}

Pkey RsaFromJwk(const std::string& n, const std::string& e) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  BIGNUM* bn_n = ToBignum(n);
  BIGNUM* bn_e = ToBignum(e);
  EVP_PKEY* pkey = nullptr;
  if (bld && bn_n && bn_e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1) {
      if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = nullptr;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
  }
  BN_free(bn_n);
  BN_free(bn_e);
  OSSL_PARAM_BLD_free(bld);
  return Pkey(pkey);
}

Pkey EcFromJwk(const std::string& x, const std::string& y) {
  if (x.size() != 32 || y.size() != 32) return nullptr;
  std::string point = "\x04" + x + y;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>("prime256v1"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY* pkey = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  if (ctx && EVP_PKEY_fromdata_init(ctx) == 1) {
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  return Pkey(pkey);
}

bool DigestVerify(EVP_PKEY* key, std::string_view signed_part, const std::string& signature) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                             reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

// JOSE ES256 signatures are r || s (32 bytes each); OpenSSL verifies DER.
bool EcJoseToDer(const std::string& jose, std::string& der) {
  if (jose.size() != 64) return false;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(jose.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(jose.data()) + 32, 32, nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return false;
  }
  unsigned char* out = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &out);
  ECDSA_SIG_free(sig);
  if (len <= 0) return false;
  der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(len));
  OPENSSL_free(out);
  return true;
}

std::string HmacSha256(std::string_view data, const std::string& secret) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

bool ValidTenantId(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    const bool ok =
        std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
    if (!ok) return false;
  }
  return true;
}

// A NumericDate claim (RFC 7519 §2) in whole seconds: nullopt when absent; kUnauthenticated when it
// is not a number, or a number int64 cannot hold: casting 1e300 to int64 is undefined behaviour,
// and an unsigned 2^64-1 would wrap to -1. (A literal past double's range, 1e400, never gets here:
// the JSON parser refuses it.)
absl::StatusOr<std::optional<int64_t>> NumericDate(const json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end()) return std::nullopt;
  const auto malformed = [name] { return Unauthenticated(absl::StrCat("malformed ", name)); };
  if (it->is_number_integer() && !it->is_number_unsigned()) return it->get<int64_t>();
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return malformed();
    return static_cast<int64_t>(v);
  }
  if (!it->is_number_float()) return malformed();
  const double v = it->get<double>();
  // -2^63 is exactly representable; 2^63 is the first double past int64's maximum.
  constexpr double kMin = -9223372036854775808.0, kPastMax = 9223372036854775808.0;
  if (!std::isfinite(v) || v < kMin || v >= kPastMax) return malformed();
  return static_cast<int64_t>(v);
}

// exp (required), nbf and iat (checked for shape when present), with `leeway_s` either way.
absl::Status CheckTimes(const json& claims, int64_t now, int leeway_s) {
  const absl::StatusOr<std::optional<int64_t>> exp = NumericDate(claims, "exp");
  if (!exp.ok()) return exp.status();
  if (!exp->has_value()) return Unauthenticated("token has no exp");
  if (**exp < now - leeway_s) return Unauthenticated("token expired");  // not exp + leeway: it may overflow
  const absl::StatusOr<std::optional<int64_t>> nbf = NumericDate(claims, "nbf");
  if (!nbf.ok()) return nbf.status();
  if (nbf->has_value() && now + leeway_s < **nbf) return Unauthenticated("token not yet valid");
  if (absl::StatusOr<std::optional<int64_t>> iat = NumericDate(claims, "iat"); !iat.ok()) return iat.status();
  return absl::OkStatus();
}

// Text that shows as written (domain::Printable): no control character, C1 control or direction mark.
bool ShowsAsWritten(const std::string& s) { return Printable(s) == s; }

// Roles from `cognito:groups` and `custom:roles`: a list of strings, or one comma-separated string
// whose entries are trimmed of ASCII spaces (people write "operator, admin"). List entries are
// taken as they are. A role name that does not show as written fails the token (kUnauthenticated):
// stripping a control character would let "x,\nadmin" or "\tadmin" become the role admin, and
// a direction mark would make an audit line show a role other than the one the token carries.
absl::Status ReadRoles(const json& claims, std::vector<std::string>& roles) {
  const auto refused = [] { return Unauthenticated("role names must be printable text"); };
  for (const char* field : {"cognito:groups", "custom:roles"}) {
    const json value = claims.value(field, json());
    if (value.is_array()) {
      for (const json& r : value) {
        if (!r.is_string()) continue;
        if (!ShowsAsWritten(r.get_ref<const std::string&>())) return refused();
        roles.push_back(r.get<std::string>());
      }
    } else if (value.is_string()) {
      const std::string& list = value.get_ref<const std::string&>();
      if (!ShowsAsWritten(list)) return refused();
      for (absl::string_view r : absl::StrSplit(list, ',')) {
        while (!r.empty() && r.front() == ' ') r.remove_prefix(1);
        while (!r.empty() && r.back() == ' ') r.remove_suffix(1);
        if (!r.empty()) roles.emplace_back(r);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct JwtVerifier::KeySet {
  std::map<std::string, Key> by_kid;
};

std::string Base64UrlEncode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+')
      c = '-';
    else if (c == '/')
      c = '_';
  }
  return out;
}

bool Base64UrlDecode(std::string_view in, std::string& out) {
  if (in.size() % 4 == 1) return false;
  std::string b64(in);
  for (char& c : b64) {
    if (c == '-')
      c = '+';
    else if (c == '_')
      c = '/';
    else if (c == '+' || c == '/' || c == '=')
      return false;  // not base64url
  }
  size_t pad = 0;
  while (b64.size() % 4 != 0) {
    b64.push_back('=');
    ++pad;
  }
  out.assign(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0) return false;
  out.resize(static_cast<size_t>(n) - pad);
  return true;
}

std::string SignHs256(const std::string& claims_json, const std::string& secret) {
  const std::string signing_input =
      Base64UrlEncode(R"({"alg":"HS256","typ":"JWT"})") + "." + Base64UrlEncode(claims_json);
  return signing_input + "." + Base64UrlEncode(HmacSha256(signing_input, secret));
}

JwtVerifier::JwtVerifier(Options options, const Clock& clock) : options_(std::move(options)), clock_(clock) {}
JwtVerifier::~JwtVerifier() = default;

absl::StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(Options options, const Clock& clock) {
  auto v = std::unique_ptr<JwtVerifier>(new JwtVerifier(std::move(options), clock));
  if (!v->options_.jwks_file.empty()) {
    absl::MutexLock lock(&v->mu_);
    if (absl::Status s = v->ReloadKeysIfChanged(); !s.ok()) return s;
  }
  return v;
}

absl::Status JwtVerifier::ReloadKeysIfChanged() {
  struct stat st {};
  if (stat(options_.jwks_file.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read JWKS file '", options_.jwks_file, "'"));
  }
  const int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (mtime == keys_mtime_ns_) return absl::OkStatus();
  std::ifstream in(options_.jwks_file);
  std::stringstream buf;
  buf << in.rdbuf();
  const json doc = json::parse(buf.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("JWKS file '", options_.jwks_file, "' is not {\"keys\": [...]}"));
  }
  auto set = std::make_shared<KeySet>();
  for (const json& k : doc["keys"]) {
    if (!k.is_object() || !k.contains("kid") || !k["kid"].is_string() || !k.contains("kty") || !k["kty"].is_string()) {
      continue;
    }
    auto str = [&](const char* f) -> std::optional<std::string> {
      std::string raw;
      if (!k.contains(f) || !k[f].is_string() || !Base64UrlDecode(k[f].get<std::string>(), raw)) return std::nullopt;
      return raw;
    };
    const std::string kty = k["kty"].get<std::string>();
    Key key;
    if (kty == "RSA") {
      auto n = str("n"), e = str("e");
      if (!n || !e) continue;
      key = Key{KeyType::kRsa, RsaFromJwk(*n, *e)};
    } else if (kty == "EC" && k.value("crv", "") == "P-256") {
      auto x = str("x"), y = str("y");
      if (!x || !y) continue;
      key = Key{KeyType::kEcP256, EcFromJwk(*x, *y)};
    } else {
      continue;
    }
    if (key.pkey) set->by_kid[k["kid"].get<std::string>()] = std::move(key);
  }
  if (set->by_kid.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JWKS file '", options_.jwks_file, "' holds no usable RSA or P-256 key"));
  }
  keys_ = std::move(set);
  keys_mtime_ns_ = mtime;
  ++keys_generation_;
  return absl::OkStatus();
}

std::pair<std::shared_ptr<const JwtVerifier::KeySet>, uint64_t> JwtVerifier::CurrentKeys() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.now_epoch_ms();
  if (now - last_check_ms_ >= kJwksCheckIntervalMs) {
    last_check_ms_ = now;
    // A broken rewrite keeps the last good keys; the operator hears of it.
    if (absl::Status reloaded = ReloadKeysIfChanged(); !reloaded.ok()) {
      spdlog::warn("JWKS file {} not reloaded (the last good keys stay in use): {}", options_.jwks_file,
                   reloaded.ToString());
    }
  }
  return {keys_, keys_generation_};
}

absl::StatusOr<Principal> JwtVerifier::Verify(std::string_view token) {
  if (token.empty()) return Unauthenticated("missing bearer token");
  if (token.size() > kMaxTokenBytes) return Unauthenticated("token too large");
  const int64_t now = clock_.now_epoch_sec();
  const std::string key(token);
  std::optional<Verified> hit;
  {
    absl::MutexLock lock(&cache_mu_);
    if (auto it = cache_.find(key); it != cache_.end()) hit = it->second;
  }
  if (hit && hit->asymmetric && CurrentKeys().second != hit->keys_generation) hit.reset();  // keys changed
  if (hit) {
    // The same checks as CheckTimes, on the remembered dates.
    if (hit->exp < now - options_.leeway_s) return Unauthenticated("token expired");
    if (hit->nbf && now + options_.leeway_s < *hit->nbf) return Unauthenticated("token not yet valid");
    return std::move(hit->principal);
  }
  absl::StatusOr<Verified> verified = VerifyUncached(token, now);
  if (!verified.ok()) return verified.status();
  {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() >= kMaxCachedTokens) {
      for (auto it = cache_.begin(); it != cache_.end();) {
        it = it->second.exp < now - options_.leeway_s ? cache_.erase(it) : std::next(it);
      }
      if (cache_.size() >= kMaxCachedTokens) cache_.clear();
    }
    cache_.insert_or_assign(key, *verified);
  }
  return std::move(verified->principal);
}

absl::StatusOr<JwtVerifier::Verified> JwtVerifier::VerifyUncached(std::string_view token, int64_t now) {
  Verified out;
  const std::vector<absl::string_view> parts = absl::StrSplit(absl::string_view(token.data(), token.size()), '.');
  if (parts.size() != 3) return Unauthenticated("malformed token");
  std::string header_raw, claims_raw, signature;
  if (!Base64UrlDecode({parts[0].data(), parts[0].size()}, header_raw) ||
      !Base64UrlDecode({parts[1].data(), parts[1].size()}, claims_raw) ||
      !Base64UrlDecode({parts[2].data(), parts[2].size()}, signature)) {
    return Unauthenticated("malformed token");
  }
  const json header = ParseJsonWithin(header_raw, kMaxTokenJsonDepth);
  if (header.is_discarded() || !header.is_object() || !header.contains("alg") || !header["alg"].is_string()) {
    return Unauthenticated("malformed token header");
  }
  const std::string alg = header["alg"].get<std::string>();
  const std::string_view signed_part(token.data(), parts[0].size() + 1 + parts[1].size());

  bool verified = false;
  if (alg == "HS256") {
    if (options_.hs256_secret.empty()) return Unauthenticated("algorithm not allowed");
    const std::string mac = HmacSha256(signed_part, options_.hs256_secret);
    verified = mac.size() == signature.size() && CRYPTO_memcmp(mac.data(), signature.data(), mac.size()) == 0;
  } else if (alg == "RS256" || alg == "ES256") {
    if (options_.jwks_file.empty()) return Unauthenticated("algorithm not allowed");
    auto [keys, generation] = CurrentKeys();
    out.asymmetric = true;
    out.keys_generation = generation;
    if (!header.contains("kid") || !header["kid"].is_string()) return Unauthenticated("token has no kid");
    auto it = keys->by_kid.find(header["kid"].get<std::string>());
    if (it == keys->by_kid.end()) return Unauthenticated("unknown signing key");
    const Key& key = it->second;
    // Each key only with its own algorithm.
    if (alg == "RS256") {
      if (key.type != KeyType::kRsa) return Unauthenticated("algorithm does not match the key");
      verified = DigestVerify(key.pkey.get(), signed_part, signature);
    } else {
      if (key.type != KeyType::kEcP256) return Unauthenticated("algorithm does not match the key");
      std::string der;
      verified = EcJoseToDer(signature, der) && DigestVerify(key.pkey.get(), signed_part, der);
    }
  } else {
    return Unauthenticated("algorithm not allowed");
  }
  if (!verified) return Unauthenticated("bad signature");

  const json claims = ParseJsonWithin(claims_raw, kMaxTokenJsonDepth);
  if (claims.is_discarded() || !claims.is_object()) return Unauthenticated("malformed claims");
  if (absl::Status s = CheckTimes(claims, now, options_.leeway_s); !s.ok()) return s;
  out.exp = **NumericDate(claims, "exp");  // CheckTimes made sure of it
  out.nbf = *NumericDate(claims, "nbf");
  if (!options_.issuer.empty()) {
    const json iss = claims.value("iss", json());
    if (!iss.is_string() || iss.get<std::string>() != options_.issuer) return Unauthenticated("wrong issuer");
  }
  if (!options_.audience.empty()) {
    const json aud = claims.value("aud", json());
    bool match = aud.is_string() && aud.get<std::string>() == options_.audience;
    if (aud.is_array()) {
      for (const json& a : aud) match = match || (a.is_string() && a.get<std::string>() == options_.audience);
    }
    if (!match) return Unauthenticated("wrong audience");
  }
  Principal& p = out.principal;
  const json tenant = claims.value("custom:tenant_id", json());
  if (!tenant.is_string() || !ValidTenantId(tenant.get<std::string>())) {
    return Unauthenticated("token has no valid custom:tenant_id");
  }
  p.tenant_id = tenant.get<std::string>();
  if (const json account = claims.value("custom:account_id", json()); account.is_string()) {
    if (!ValidTenantId(account.get<std::string>())) return Unauthenticated("token has an invalid custom:account_id");
    p.account_id = account.get<std::string>();
  }
  // `sub` becomes the ledger's actor and shows in logs: at most 256 bytes (cutting it could split a
  // UTF-8 character) and text that shows as written (Printable): no control character (a newline
  // would forge a log line, an escape would drive an operator's terminal), no direction mark.
  if (const json sub = claims.value("sub", json()); sub.is_string()) {
    const std::string& subject = sub.get_ref<const std::string&>();
    if (subject.size() > 256 || !ShowsAsWritten(subject)) return Unauthenticated("token has an invalid sub");
    p.subject = subject;
  }
  if (absl::Status s = ReadRoles(claims, p.roles); !s.ok()) return s;
  return out;
}

}  // namespace toolgate::auth
