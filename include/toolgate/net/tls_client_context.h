#pragma once

// The TLS side of toolgate's HTTP client: how a connector says whom it trusts and who it is, once,
// when it is built. The calls themselves (AsyncHttpCall with ClientRequest::tls) are in
// http_client.h. Free of Asio and OpenSSL types in its interface.

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace toolgate::net {

// Where a connector's TLS material lives: PEM files, read once by MakeTlsClientContext.
struct TlsOptions {
  // CA certificates (PEM, one or more) that may sign the server's certificate chain. Empty: the
  // system trust store (OpenSSL's default verify paths) instead; never both.
  std::string ca_file;
  // Mutual TLS: this client's certificate (PEM; a chain may follow the leaf) and its private key
  // (PEM, unencrypted). Both or neither.
  std::string client_cert_file;
  std::string client_key_file;
};

// The TLS client configuration of one connector: an OpenSSL context (TLS ≥ 1.2, the server's
// certificate chain verified against the chosen CAs, the client certificate when given). There is
// deliberately no way to turn verification off. The host name is not part of it: each request names
// its server (ClientRequest::server_name).
//
// Immutable once made, so one context may serve any number of concurrent calls on any threads.
// Opaque: only the net layer looks inside. Held by shared_ptr because calls in flight and idle
// pooled connections keep it alive after the connector that made it is gone.
class TlsClientContext;

// Reads the files of `options` and builds the context. The files are read now, not per call:
// replacing them later has no effect on this context.
//
// Returns InvalidArgument when a file cannot be read or holds no usable PEM (the CA file has no
// certificate, the certificate or key does not parse, the key is encrypted), when the key does not
// match the certificate, or when only one of client_cert_file and client_key_file is given. The
// message names the option and the file, never the file's contents. Internal when OpenSSL itself
// cannot set up a context (out of memory) or the system trust store cannot be located.
absl::StatusOr<std::shared_ptr<const TlsClientContext>> MakeTlsClientContext(const TlsOptions& options);

}  // namespace toolgate::net
