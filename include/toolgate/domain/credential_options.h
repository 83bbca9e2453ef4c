#pragma once

// How a connector authenticates to its downstream (design §13 "Credentials", `[connectors.X.auth]`),
// as plain data. It lives in the domain so the config layer can fill it from TOML and the connectors
// layer (toolgate/connectors/credentials.h) can act on it without either including the other.
// Nothing here holds a secret: only where to read one.

#include <chrono>
#include <string>

#include "toolgate/domain/host_port.h"

namespace toolgate {

struct CredentialOptions {
  enum class Type {
    kNone,                     // no `auth` table: nothing is added
    kBearer,                   // `Authorization: Bearer <secret>`
    kHeader,                   // `<header_name>: <secret>`
    kOAuth2ClientCredentials,  // `Authorization: Bearer <access_token>` from the RFC 6749 §4.4 grant
  };
  Type type = Type::kNone;

  // kHeader: the header's name (`name`).
  std::string header_name;

  // Where the secret is read from; exactly one of the two is set. The secret is the bearer token
  // (kBearer: `token_env` / `token_file`), the header's value (kHeader: `value_env` / `value_file`)
  // or the client secret (kOAuth2ClientCredentials: `client_secret_env` / `client_secret_file`).
  std::string secret_env;   // the name of an environment variable
  std::string secret_file;  // a file path; re-read when it changes

  // kOAuth2ClientCredentials. `token_url` is the URL as configured (shown in errors and logs);
  // `token_address`, `token_target` and `token_tls` are what the config parsed from it
  // (https:// sets token_tls).
  std::string token_url;
  HostPort token_address;
  std::string token_target = "/";
  bool token_tls = false;
  std::string client_id;
  std::string scope;     // optional; sent when not empty
  std::string audience;  // optional; sent when not empty

  // Tuning, with the design's defaults; tests shorten or lengthen them.
  // A secret file is read again (to see a rotated secret) at most this often.
  std::chrono::milliseconds file_check_interval{1000};
  // After a failed token fetch, calls get that failure without a new fetch for this long, so a
  // dead token endpoint is not hammered by every call (0: every call after a failure fetches again).
  std::chrono::milliseconds failure_holdoff{1000};
  // The most one token fetch may take. A caller never waits longer than its own timeout, but the
  // fetch it started goes on for the callers after it (see ConnectorCredentials).
  std::chrono::milliseconds token_timeout{10000};
};

}  // namespace toolgate
