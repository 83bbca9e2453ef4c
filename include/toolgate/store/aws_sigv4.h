#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace toolgate::store::aws {

// AWS credentials: an access key pair and, for temporary credentials, a session token.
struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty unless temporary credentials
};

// Where credentials come from, in the AWS SDKs' order: the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), then the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials) under profile AWS_PROFILE (else "default").
// kNotFound when neither has a complete pair; kInvalidArgument for a malformed file.
absl::StatusOr<Credentials> LoadCredentials();

// Parses the INI text of a shared credentials file and returns `profile`'s keys.
absl::StatusOr<Credentials> ParseSharedCredentials(std::string_view text, std::string_view profile);

// One HTTP request to sign. Header names are matched case-insensitively; every header given is signed.
struct SignableRequest {
  std::string method;                                        // "POST"
  std::string path;                                          // already URI-encoded, e.g. "/"
  std::string query;                                         // raw query without '?', e.g. "b=2&a=1"
  std::vector<std::pair<std::string, std::string>> headers;  // must include host and x-amz-date
  std::string payload;
};

struct SigningScope {
  std::string region;   // "us-east-1"
  std::string service;  // "dynamodb"
};

// The pieces of a Signature Version 4 signature, exposed so tests can check each against AWS's
// published test suite.
struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;  // "host;x-amz-date"
  std::string signature;       // lowercase hex
  std::string authorization;   // the Authorization header value
};

// Signs `request` (AWS Signature Version 4, header form). The date comes from its x-amz-date header
// ("20150830T123600Z"); kInvalidArgument when that or host is missing.
absl::StatusOr<Signature> SignV4(const SignableRequest& request, const Credentials& credentials,
                                 const SigningScope& scope);

// "20150830T123600Z" for the given epoch seconds (UTC).
std::string AmzDate(int64_t epoch_seconds);

std::string Sha256Hex(std::string_view data);

}  // namespace toolgate::store::aws
