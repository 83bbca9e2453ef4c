#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "net/tls_client_context_impl.h"
#include "toolgate/net/tls_client_context.h"

namespace toolgate::net {

namespace ssl = boost::asio::ssl;

namespace {

// "tls.ca_file 'x.pem'": how every message names the file it is about.
std::string Named(const char* option, const std::string& path) { return absl::StrCat("tls.", option, " '", path, "'"); }

// Opening the file first gives the plain reason (no such file, permission denied) instead of
// OpenSSL's layered one, and keeps parse errors for files that do exist.
absl::Status CheckReadable(const char* option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::InvalidArgumentError(absl::StrCat(Named(option, path), ": cannot read it: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// OpenSSL's reason strings name what went wrong (no certificate found, key values mismatch), never
// the bytes it read.
absl::Status Rejected(const char* option, const std::string& path, const char* what,
                      const boost::system::error_code& ec) {
  return absl::InvalidArgumentError(absl::StrCat(Named(option, path), ": ", what, " (", ec.message(), ")"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TlsClientContext>> MakeTlsClientContext(const TlsOptions& options) {
  if (options.client_cert_file.empty() != options.client_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls.client_cert_file and tls.client_key_file go together: mutual TLS needs both the certificate and its key");
  }
  try {
    ssl::context context(ssl::context::tls_client);
    SSL_CTX* native = context.native_handle();
    if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
      return absl::InternalError("TLS: cannot require TLS 1.2 or later");
    }
    context.set_options(ssl::context::default_workarounds | ssl::context::no_compression);
    // An encrypted key would make OpenSSL ask for its pass phrase on the terminal: refuse instead.
    context.set_password_callback([](std::size_t, ssl::context::password_purpose) { return std::string(); });
    context.set_verify_mode(ssl::verify_peer);

    boost::system::error_code ec;
    if (options.ca_file.empty()) {
      context.set_default_verify_paths(ec);
      if (ec) return absl::InternalError(absl::StrCat("TLS: cannot use the system trust store: ", ec.message()));
    } else {
      if (auto s = CheckReadable("ca_file", options.ca_file); !s.ok()) return s;
      context.load_verify_file(options.ca_file, ec);
      if (ec) return Rejected("ca_file", options.ca_file, "no usable PEM CA certificate in it", ec);
    }

    if (!options.client_cert_file.empty()) {
      if (auto s = CheckReadable("client_cert_file", options.client_cert_file); !s.ok()) return s;
      if (auto s = CheckReadable("client_key_file", options.client_key_file); !s.ok()) return s;
      context.use_certificate_chain_file(options.client_cert_file, ec);
      if (ec) return Rejected("client_cert_file", options.client_cert_file, "no usable PEM certificate in it", ec);
      // OpenSSL checks the key against the certificate as it loads it; a mismatch fails here.
      context.use_private_key_file(options.client_key_file, ssl::context::pem, ec);
      if (ec) {
        return absl::InvalidArgumentError(absl::StrCat(
            Named("client_key_file", options.client_key_file), ": not an unencrypted PEM private key matching ",
            Named("client_cert_file", options.client_cert_file), " (", ec.message(), ")"));
      }
      if (SSL_CTX_check_private_key(native) != 1) {
        return absl::InvalidArgumentError(absl::StrCat(Named("client_key_file", options.client_key_file),
                                                       ": does not match ",
                                                       Named("client_cert_file", options.client_cert_file)));
      }
    }
    return std::shared_ptr<const TlsClientContext>(std::make_shared<TlsClientContext>(std::move(context)));
  } catch (const boost::system::system_error& e) {  // the context constructor throws when OpenSSL cannot make one
    return absl::InternalError(absl::StrCat("TLS: cannot create a client context: ", e.what()));
  }
}

}  // namespace toolgate::net
