// JwtVerifier with real keys: HS256, RS256 and ES256 from a JWKS file, kid rotation, and the attacks
// §7 names (alg none, algorithm confusion, tampering, expiry).

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"
#include "toolgate/auth/jwt_verifier.h"

namespace toolgate::auth {
namespace {

using json = nlohmann::json;
using toolgate::testing::TempDir;

std::string BnBytes(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

// A key pair that signs tokens the way an identity provider would.
struct TestKey {
  EVP_PKEY* pkey = nullptr;
  std::string kid;
  bool ec = false;
  ~TestKey() { EVP_PKEY_free(pkey); }

  static std::unique_ptr<TestKey> Rsa(std::string kid) {
    auto k = std::make_unique<TestKey>();
    k->pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
    k->kid = std::move(kid);
    return k;
  }
  static std::unique_ptr<TestKey> Ec(std::string kid) {
    auto k = std::make_unique<TestKey>();
    k->pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    k->kid = std::move(kid);
    k->ec = true;
    return k;
  }
  json Jwk() const {
    if (!ec) {
      return {{"kty", "RSA"},
              {"kid", kid},
              {"n", Base64UrlEncode(BnBytes(pkey, OSSL_PKEY_PARAM_RSA_N))},
              {"e", Base64UrlEncode(BnBytes(pkey, OSSL_PKEY_PARAM_RSA_E))}};
    }
    unsigned char pub[65];
    size_t len = 0;
    EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len);
    return {{"kty", "EC"},
            {"crv", "P-256"},
            {"kid", kid},
            {"x", Base64UrlEncode(std::string(reinterpret_cast<char*>(pub) + 1, 32))},
            {"y", Base64UrlEncode(std::string(reinterpret_cast<char*>(pub) + 33, 32))}};
  }
  // The public key's DER (what an attacker would feed an HMAC as the "secret").
  std::string PublicDer() const {
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(pkey, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return out;
  }
  std::string Sign(const json& claims, const std::string& alg_override = "") const {
    const json header = {{"alg", alg_override.empty() ? (ec ? "ES256" : "RS256") : alg_override}, {"kid", kid}};
    const std::string input = Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(claims.dump());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey);
    size_t sig_len = 0;
    EVP_DigestSign(ctx, nullptr, &sig_len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
    std::string sig(sig_len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    sig.resize(sig_len);
    EVP_MD_CTX_free(ctx);
    if (ec) {  // DER -> JOSE r || s
      const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
      ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
      std::string jose(64, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(jose.data()), 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(jose.data()) + 32, 32);
      ECDSA_SIG_free(es);
      sig = jose;
    }
    return input + "." + Base64UrlEncode(sig);
  }
};

class JwtVerifierTest : public ::testing::Test {
 protected:
  void WriteJwks(const std::vector<const TestKey*>& keys) {
    json doc = {{"keys", json::array()}};
    for (const TestKey* k : keys) doc["keys"].push_back(k->Jwk());
    std::ofstream(jwks_) << doc.dump();
  }
  std::unique_ptr<JwtVerifier> Verifier(JwtVerifier::Options o) {
    auto v = JwtVerifier::Create(std::move(o), clock_);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? std::move(*v) : nullptr;
  }
  json Claims(int64_t exp_offset = 600) const {
    return {{"sub", "agent-7"},
            {"custom:tenant_id", "acme"},
            {"custom:account_id", "acct-1"},
            {"exp", clock_.now_epoch_sec() + exp_offset},
            {"cognito:groups", {"operator"}}};
  }

  ManualClock clock_{1'800'000'000'000};
  TempDir dir_;
  const std::string jwks_ = dir_.file("jwks.json");
};

TEST_F(JwtVerifierTest, Rs256AndEs256FromJwksWithKidSelection) {
  auto rsa = TestKey::Rsa("rsa-1");
  auto ec = TestKey::Ec("ec-1");
  WriteJwks({rsa.get(), ec.get()});
  auto v = Verifier({.jwks_file = jwks_});
  for (const TestKey* k : {rsa.get(), ec.get()}) {
    auto p = v->Verify(k->Sign(Claims()));
    ASSERT_TRUE(p.ok()) << k->kid << ": " << p.status();
    EXPECT_EQ(p->tenant_id, "acme");
    EXPECT_EQ(p->account_id, "acct-1");
    EXPECT_EQ(p->subject, "agent-7");
    EXPECT_TRUE(p->HasRole("operator"));
    EXPECT_FALSE(p->HasRole("admin"));
  }
  auto stranger = TestKey::Rsa("rsa-1");  // same kid, different key
  EXPECT_EQ(v->Verify(stranger->Sign(Claims())).status().message(), "bad signature");
  auto unknown = TestKey::Rsa("rsa-9");
  EXPECT_EQ(v->Verify(unknown->Sign(Claims())).status().message(), "unknown signing key");
}

TEST_F(JwtVerifierTest, AKeyRotationInTheJwksFileIsPickedUp) {
  auto old_key = TestKey::Rsa("2026-10");
  WriteJwks({old_key.get()});
  auto v = Verifier({.jwks_file = jwks_});
  auto new_key = TestKey::Ec("2026-11");
  EXPECT_FALSE(v->Verify(new_key->Sign(Claims())).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a new mtime
  WriteJwks({new_key.get()});
  clock_.advance(std::chrono::seconds(2));  // past the re-check interval
  EXPECT_TRUE(v->Verify(new_key->Sign(Claims())).ok());
  EXPECT_FALSE(v->Verify(old_key->Sign(Claims())).ok()) << "a key removed from the JWKS still verifies";
}

// A verified token is remembered (design §16), but never past its exp, and never past a JWKS reload
// that removed its key.
TEST_F(JwtVerifierTest, ARememberedTokenStillExpiresAndDiesWithItsKey) {
  auto v = Verifier({.hs256_secret = "s3cret"});
  const std::string hs = SignHs256(Claims(/*exp_offset=*/60).dump(), "s3cret");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(v->Verify(hs).ok()) << i;
  clock_.advance(std::chrono::seconds(60 + 29));  // inside the leeway
  EXPECT_TRUE(v->Verify(hs).ok());
  clock_.advance(std::chrono::seconds(2));
  EXPECT_EQ(v->Verify(hs).status().message(), "token expired");

  auto old_key = TestKey::Rsa("2026-10");
  auto new_key = TestKey::Ec("2026-11");
  WriteJwks({old_key.get()});
  auto jwks = Verifier({.jwks_file = jwks_});
  const std::string rs = old_key->Sign(Claims());
  ASSERT_TRUE(jwks->Verify(rs).ok());
  ASSERT_TRUE(jwks->Verify(rs).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a new mtime
  WriteJwks({new_key.get()});
  clock_.advance(std::chrono::seconds(2));  // past the re-check interval
  EXPECT_EQ(jwks->Verify(rs).status().message(), "unknown signing key") << "a remembered token outlived its key";
}

// The memory is bounded: many distinct tokens never grow it past kMaxCachedTokens, and each still
// verifies as itself.
TEST_F(JwtVerifierTest, RememberedTokensAreBounded) {
  auto v = Verifier({.hs256_secret = "s3cret"});
  for (size_t i = 0; i < JwtVerifier::kMaxCachedTokens + 10; ++i) {
    json c = Claims();
    c["sub"] = "agent-" + std::to_string(i);
    auto p = v->Verify(SignHs256(c.dump(), "s3cret"));
    ASSERT_TRUE(p.ok()) << i;
    ASSERT_EQ(p->subject, "agent-" + std::to_string(i));
  }
  json c = Claims();
  c["sub"] = "agent-0";
  EXPECT_EQ(v->Verify(SignHs256(c.dump(), "s3cret"))->subject, "agent-0");
}

TEST_F(JwtVerifierTest, AlgorithmConfusionAndNoneAreRefused) {
  auto rsa = TestKey::Rsa("rsa-1");
  WriteJwks({rsa.get()});
  // The classic attack: HS256 "signed" with the RSA public key as the HMAC secret.
  auto v = Verifier({.hs256_secret = rsa->PublicDer(), .jwks_file = jwks_});
  const std::string forged = SignHs256(Claims().dump(), rsa->PublicDer());
  // (SignHs256 writes its own header; this one names the RSA kid as an attacker would.)
  EXPECT_TRUE(v->Verify(forged).ok()) << "sanity: the configured HS256 secret verifies HS256";
  auto strict = Verifier({.jwks_file = jwks_});  // production: no HS256 secret configured
  EXPECT_EQ(strict->Verify(forged).status().message(), "algorithm not allowed");
  // An RS256 header over an EC key, and ES256 over an RSA key, are refused.
  auto ec = TestKey::Ec("ec-1");
  WriteJwks({rsa.get(), ec.get()});
  auto both = Verifier({.jwks_file = jwks_});
  EXPECT_EQ(both->Verify(ec->Sign(Claims(), "RS256")).status().message(), "algorithm does not match the key");
  EXPECT_EQ(both->Verify(rsa->Sign(Claims(), "ES256")).status().message(), "algorithm does not match the key");
  const std::string none =
      Base64UrlEncode(R"({"alg":"none","kid":"rsa-1"})") + "." + Base64UrlEncode(Claims().dump()) + ".";
  EXPECT_EQ(both->Verify(none).status().message(), "algorithm not allowed");
  const std::string lower =
      Base64UrlEncode(R"({"alg":"rs256","kid":"rsa-1"})") + "." + Base64UrlEncode(Claims().dump()) + ".eHh4";
  EXPECT_EQ(both->Verify(lower).status().message(), "algorithm not allowed");
}

TEST_F(JwtVerifierTest, ClaimsAreCheckedWithLeeway) {
  auto v = Verifier({.hs256_secret = "s3cret", .issuer = "https://idp", .audience = "toolgate", .leeway_s = 30});
  auto sign = [](json c) { return SignHs256(c.dump(), "s3cret"); };
  json good = Claims();
  good["iss"] = "https://idp";
  good["aud"] = json::array({"other", "toolgate"});
  EXPECT_TRUE(v->Verify(sign(good)).ok());
  json c = good;
  c["exp"] = clock_.now_epoch_sec() - 29;  // inside the leeway
  EXPECT_TRUE(v->Verify(sign(c)).ok());
  c["exp"] = clock_.now_epoch_sec() - 31;
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "token expired");
  c = good;
  c.erase("exp");
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "token has no exp");
  c = good;
  c["nbf"] = clock_.now_epoch_sec() + 60;
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "token not yet valid");
  c = good;
  c["iss"] = "https://evil";
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "wrong issuer");
  c = good;
  c["aud"] = "someone-else";
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "wrong audience");
  c = good;
  c.erase("custom:tenant_id");
  EXPECT_EQ(v->Verify(sign(c)).status().message(), "token has no valid custom:tenant_id");
  c = good;
  c["custom:tenant_id"] = "acme#EXEC";  // would forge a store key
  EXPECT_FALSE(v->Verify(sign(c)).ok());
  c = good;
  c.erase("cognito:groups");
  c["custom:roles"] = "operator, admin";
  auto p = v->Verify(sign(c));
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->HasRole("admin"));
  EXPECT_TRUE(p->HasRole("operator"));
}

TEST_F(JwtVerifierTest, TimeClaimsOutsideInt64AreRefusedNotCast) {
  auto v = Verifier({.hs256_secret = "s3cret"});
  // Claims text written by hand: a JSON library would not write 1e400 or 2^64-1 as we need them.
  auto token = [&](const std::string& claim, const std::string& number) {
    json c = Claims();
    std::string text = c.dump();
    if (claim == "exp") {
      text.replace(text.find("\"exp\":") + 6, std::to_string(c["exp"].get<int64_t>()).size(), number);
    } else {
      text.insert(text.size() - 1, ",\"" + claim + "\":" + number);
    }
    return SignHs256(text, "s3cret");
  };
  for (const std::string claim : {"exp", "nbf", "iat"}) {
    for (const std::string number : {"1e300", "-1e300", "9223372036854775808.0", "-9.3e18", "18446744073709551615",
                                     "9.3e18", "\"1800000600\"", "true", "null", "[1]"}) {
      SCOPED_TRACE(claim + " = " + number);
      auto r = v->Verify(token(claim, number));
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
      EXPECT_EQ(r.status().message(), "malformed " + claim);
    }
    // Past double's range the JSON parser itself refuses the claims.
    EXPECT_EQ(v->Verify(token(claim, "1e400")).status().message(), "malformed claims");
    EXPECT_EQ(v->Verify(token(claim, "-1e400")).status().message(), "malformed claims");
  }
  // The largest exp int64 holds is a valid (if silly) expiry: no overflow adding the leeway.
  EXPECT_TRUE(v->Verify(token("exp", "9223372036854775807")).ok());
  EXPECT_TRUE(v->Verify(token("exp", "9.2e18")).ok());
  EXPECT_EQ(v->Verify(token("exp", "-9223372036854775808")).status().message(), "token expired");
  // A fractional date counts in whole seconds; iat is only checked for shape.
  EXPECT_TRUE(v->Verify(token("nbf", std::to_string(clock_.now_epoch_sec()) + ".5")).ok());
  EXPECT_TRUE(v->Verify(token("iat", std::to_string(clock_.now_epoch_sec() + 86400))).ok());
}

TEST_F(JwtVerifierTest, RoleStringsAreTrimmedOfSpacesAndControlCharactersFailTheToken) {
  auto v = Verifier({.hs256_secret = "s3cret"});
  auto roles_of = [&](const json& roles, const char* field = "custom:roles") {
    json c = Claims();
    c.erase("cognito:groups");
    c[field] = roles;
    return v->Verify(SignHs256(c.dump(), "s3cret"));
  };
  // A comma-separated string: entries trimmed of ASCII spaces, empty ones skipped.
  auto spaced = roles_of(" admin");
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  EXPECT_EQ(spaced->roles, std::vector<std::string>{"admin"});
  auto list = roles_of("operator,  admin , ,");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->roles, (std::vector<std::string>{"operator", "admin"}));
  // A JSON list is taken as written: " admin" there is not the role admin.
  auto verbatim = roles_of(json::array({" admin"}), "cognito:groups");
  ASSERT_TRUE(verbatim.ok());
  EXPECT_FALSE(verbatim->HasRole("admin"));
  // Control characters are refused, never stripped, in either form; C1 controls and direction
  // marks too (an audit line would show a role other than the one the token carries).
  for (const json& bad : {json("x,\nadmin"), json("x,\tadmin"), json("\tadmin"), json("admin\r"), json("ad\u007fmin"),
                          json(std::string("admin\0", 6)), json::array({"x", "\nadmin"}), json::array({"admin\t"}),
                          json("x,\u009badmin"), json::array({"nimda\u202e"})}) {
    for (const char* field : {"custom:roles", "cognito:groups"}) {
      SCOPED_TRACE(std::string(field) + " = " + bad.dump());
      auto r = roles_of(bad, field);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
      EXPECT_EQ(r.status().message(), "role names must be printable text");
    }
  }
}

TEST_F(JwtVerifierTest, TamperingAndGarbageAreRefused) {
  auto v = Verifier({.hs256_secret = "s3cret"});
  std::string token = SignHs256(Claims().dump(), "s3cret");
  ASSERT_TRUE(v->Verify(token).ok());
  std::string tampered = token;
  const auto dot = tampered.find('.');
  json claims = Claims();
  claims["custom:tenant_id"] = "victim";
  tampered = tampered.substr(0, dot + 1) + Base64UrlEncode(claims.dump()) + tampered.substr(tampered.rfind('.'));
  EXPECT_EQ(v->Verify(tampered).status().message(), "bad signature");
  for (const std::string& junk : {std::string(""), std::string("a.b"), std::string("a.b.c.d"), std::string("!!.??.##"),
                                  std::string(9000, 'a'), std::string("e30.e30.")}) {
    auto r = v->Verify(junk);
    EXPECT_FALSE(r.ok()) << junk.substr(0, 20);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  }
}

TEST_F(JwtVerifierTest, AnUnusableJwksFileIsRefusedAtStart) {
  std::ofstream(jwks_) << R"({"keys":[{"kty":"oct","kid":"x","k":"c2VjcmV0"}]})";
  EXPECT_EQ(JwtVerifier::Create({.jwks_file = jwks_}, clock_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(JwtVerifier::Create({.jwks_file = dir_.file("missing.json")}, clock_).ok());
}

TEST(Base64UrlTest, RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 70; ++i) {
    std::string out;
    ASSERT_TRUE(Base64UrlDecode(Base64UrlEncode(data), out));
    EXPECT_EQ(out, data);
    data.push_back(static_cast<char>(i * 37));
  }
  std::string out;
  EXPECT_FALSE(Base64UrlDecode("a", out));
  EXPECT_FALSE(Base64UrlDecode("ab+/", out));  // standard alphabet is not base64url
}

// `sub` becomes the ledger's actor and appears in log lines: a newline in it would forge a line, and
// cutting a long one could split a UTF-8 character. Such a token is refused, not trimmed.
TEST_F(JwtVerifierTest, ASubWithControlCharactersOrOver256BytesIsRefused) {
  auto rsa = TestKey::Rsa("rsa-1");
  WriteJwks({rsa.get()});
  auto v = Verifier({.jwks_file = jwks_});
  std::string long_utf8(85, 'a');
  for (int i = 0; i < 100; ++i) long_utf8 += "\xc3\xa9";  // 285 bytes of valid UTF-8
  // C1 controls (U+009B is CSI to some terminals) and direction marks (U+202E reverses what an
  // operator's terminal shows) too: `ledger show` prints the actor.
  for (const std::string& bad : {std::string("agent\n{\"forged\":1}"), std::string("a\tb"), std::string("x\x7f"),
                                 std::string(257, 'a'), long_utf8,
                                 std::string("a\xc2\x9b"
                                             "31m"),
                                 std::string("admin\xe2\x80\xae")}) {
    json claims = Claims();
    claims["sub"] = bad;
    const auto p = v->Verify(rsa->Sign(claims));
    ASSERT_FALSE(p.ok()) << claims["sub"].dump();
    EXPECT_EQ(p.status().message(), "token has an invalid sub");
  }
  json claims = Claims();
  claims["sub"] = std::string(85, 'a') + "\xc3\xa9\xc3\xa9\xc3\xa9";  // UTF-8 within 256 bytes: kept whole
  const auto p = v->Verify(rsa->Sign(claims));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->subject, claims["sub"].get<std::string>());
}

}  // namespace
}  // namespace toolgate::auth
