#pragma once

// The inside of TlsClientContext, for the net layer's own files (http_client.cc builds its streams
// from it). Not part of the public interface.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/ssl/context.hpp>

#include "toolgate/net/tls_client_context.h"

namespace toolgate::net {

class TlsClientContext {
 public:
  explicit TlsClientContext(boost::asio::ssl::context context) : context_(std::move(context)) {}
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // For constructing streams (asio's ssl::stream takes a mutable context). Creating SSL objects
  // from one SSL_CTX on several threads at once is safe; nothing may change the context after
  // MakeTlsClientContext returned it.
  boost::asio::ssl::context& native() const { return context_; }

 private:
  mutable boost::asio::ssl::context context_;
};

}  // namespace toolgate::net
