#include "toolgate/store/aws_sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace toolgate::store::aws {
namespace {

// Debian's Abseil has its own string_view: convert at the boundary.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view S(absl::string_view s) { return std::string_view(s.data(), s.size()); }
std::string_view Strip(std::string_view s) { return S(absl::StripAsciiWhitespace(A(s))); }

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// Header values are trimmed and inner runs of spaces collapse to one (the canonical form).
std::string CanonicalHeaderValue(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : Strip(v)) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

// Query parameters sorted by name, then value (they arrive already encoded).
std::string CanonicalQuery(std::string_view query) {
  if (query.empty()) return "";
  std::vector<std::pair<std::string, std::string>> params;
  for (absl::string_view part : absl::StrSplit(A(query), '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    params.push_back(std::move(kv));
  }
  std::sort(params.begin(), params.end());
  std::vector<std::string> parts;
  parts.reserve(params.size());
  for (const auto& [k, v] : params) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, "&");
}

std::string Home() {
  const char* home = std::getenv("HOME");
  return home != nullptr ? home : "";
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return Hex(digest, sizeof digest);
}

std::string AmzDate(int64_t epoch_seconds) {
  const std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

absl::StatusOr<Signature> SignV4(const SignableRequest& request, const Credentials& credentials,
                                 const SigningScope& scope) {
  std::map<std::string, std::string> headers;  // lowercase name -> canonical value (comma-joined)
  for (const auto& [name, value] : request.headers) {
    std::string key = absl::AsciiStrToLower(A(name));
    std::string v = CanonicalHeaderValue(value);
    auto [it, inserted] = headers.emplace(key, v);
    if (!inserted) absl::StrAppend(&it->second, ",", v);
  }
  const auto date_it = headers.find("x-amz-date");
  if (date_it == headers.end() || date_it->second.size() != 16) {
    return absl::InvalidArgumentError("SigV4: the request needs an x-amz-date header like 20150830T123600Z");
  }
  if (!headers.contains("host")) return absl::InvalidArgumentError("SigV4: the request needs a host header");
  const std::string amz_date = date_it->second;
  const std::string date = amz_date.substr(0, 8);

  Signature s;
  std::string canonical_headers;
  std::vector<std::string> names;
  for (const auto& [name, value] : headers) {
    absl::StrAppend(&canonical_headers, name, ":", value, "\n");
    names.push_back(name);
  }
  s.signed_headers = absl::StrJoin(names, ";");
  s.canonical_request =
      absl::StrCat(request.method, "\n", request.path.empty() ? "/" : request.path, "\n", CanonicalQuery(request.query),
                   "\n", canonical_headers, "\n", s.signed_headers, "\n", Sha256Hex(request.payload));
  const std::string credential_scope = absl::StrCat(date, "/", scope.region, "/", scope.service, "/aws4_request");
  s.string_to_sign =
      absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", credential_scope, "\n", Sha256Hex(s.canonical_request));
  std::string key = HmacSha256(absl::StrCat("AWS4", credentials.secret_access_key), date);
  key = HmacSha256(key, scope.region);
  key = HmacSha256(key, scope.service);
  key = HmacSha256(key, "aws4_request");
  const std::string raw = HmacSha256(key, s.string_to_sign);
  s.signature = Hex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  s.authorization = absl::StrCat("AWS4-HMAC-SHA256 Credential=", credentials.access_key_id, "/", credential_scope,
                                 ", SignedHeaders=", s.signed_headers, ", Signature=", s.signature);
  return s;
}

absl::StatusOr<Credentials> ParseSharedCredentials(std::string_view text, std::string_view profile) {
  std::string section;
  Credentials c;
  bool found_profile = false;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(A(text), '\n')) {
    ++line_no;
    std::string_view line = Strip(S(raw));
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return absl::InvalidArgumentError(absl::StrCat("credentials file line ", line_no, ": unterminated section"));
      }
      section = std::string(Strip(line.substr(1, line.size() - 2)));
      if (section == profile) found_profile = true;
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("credentials file line ", line_no, ": expected key = value"));
    }
    if (section != profile) continue;
    const std::string key = absl::AsciiStrToLower(A(Strip(line.substr(0, eq))));
    const std::string value(Strip(line.substr(eq + 1)));
    if (key == "aws_access_key_id") c.access_key_id = value;
    if (key == "aws_secret_access_key") c.secret_access_key = value;
    if (key == "aws_session_token") c.session_token = value;
  }
  if (!found_profile) {
    return absl::NotFoundError(absl::StrCat("credentials file has no profile [", std::string(profile), "]"));
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("credentials profile [", std::string(profile),
                                                   "] lacks aws_access_key_id or aws_secret_access_key"));
  }
  return c;
}

absl::StatusOr<Credentials> LoadCredentials() {
  Credentials env{Env("AWS_ACCESS_KEY_ID"), Env("AWS_SECRET_ACCESS_KEY"), Env("AWS_SESSION_TOKEN")};
  if (!env.access_key_id.empty() && !env.secret_access_key.empty()) return env;
  std::string path = Env("AWS_SHARED_CREDENTIALS_FILE");
  if (path.empty() && !Home().empty()) path = Home() + "/.aws/credentials";
  std::string profile = Env("AWS_PROFILE");
  if (profile.empty()) profile = "default";
  std::ifstream in(path);
  if (path.empty() || !in) {
    return absl::NotFoundError(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or provide a shared credentials "
        "file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)");
  }
  std::stringstream text;
  text << in.rdbuf();
  auto c = ParseSharedCredentials(text.str(), profile);
  if (!c.ok()) return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  return c;
}

}  // namespace toolgate::store::aws
