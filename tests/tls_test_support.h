#pragma once

// For tests and benchmarks of the HTTPS client: a throwaway PKI made with the openssl command line,
// and a small HTTP/1.1 server on 127.0.0.1 (plain or TLS, optionally requiring a client
// certificate) on its own io_context thread, counting what reaches it.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace toolgate::testing {

// Certificates and keys (EC P-256, PEM) in one directory, made by MakeTestPki:
//   ca.pem/.key          the trusted test CA
//   server.pem/.key      for 127.0.0.1 (SAN IP:127.0.0.1, DNS:localhost), by ca
//   expired.pem/.key     the same names, by ca, valid only in January 2020
//   wrong_host.pem/.key  SAN DNS:wrong.example only, by ca
//   other_ca.pem/.key    a second CA, trusted by nobody
//   untrusted.pem/.key   for 127.0.0.1, by other_ca
//   client.pem/.key      a client certificate (clientAuth), by ca
// Returns "" on success, else the command that failed and openssl's output.
inline std::string MakeTestPki(const std::string& dir) {
  {
    std::ofstream cnf(dir + "/openssl.cnf");
    cnf << "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
           "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
           "subjectKeyIdentifier = hash\n"
           "[server]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
           "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
           "[wrong_host]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
           "subjectAltName = DNS:wrong.example\n"
           "[client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n"
           "[ca]\ndefault_ca = test_ca\n"
           "[test_ca]\ndatabase = "
        << dir << "/index.txt\nnew_certs_dir = " << dir << "\nserial = " << dir
        << "/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n"
           "[any]\ncommonName = supplied\n";
    std::ofstream(dir + "/index.txt");
    std::ofstream(dir + "/serial") << "1000\n";
  }
  const std::string log = dir + "/openssl.log";
  const std::string cnf = " -config " + dir + "/openssl.cnf";
  const std::string newkey = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  auto f = [&](const std::string& name) { return dir + "/" + name; };
  auto make_ca = [&](const std::string& name, const std::string& cn) {
    return "openssl req" + cnf + " -x509" + newkey + " -days 2 -subj '/CN=" + cn + "' -extensions v3_ca -keyout " +
           f(name + ".key") + " -out " + f(name + ".pem");
  };
  // A key and a signing request, then the certificate signed by `ca` with the extensions of `section`.
  auto make_cert = [&](const std::string& name, const std::string& cn, const std::string& ca,
                       const std::string& section) {
    return "openssl req" + cnf + " -new" + newkey + " -subj '/CN=" + cn + "' -keyout " + f(name + ".key") + " -out " +
           f(name + ".csr") + " && openssl x509 -req -in " + f(name + ".csr") + " -CA " + f(ca + ".pem") + " -CAkey " +
           f(ca + ".key") + " -CAcreateserial -days 2 -extfile " + f("openssl.cnf") + " -extensions " + section +
           " -out " + f(name + ".pem");
  };
  const std::vector<std::string> commands = {
      make_ca("ca", "toolgate test CA"),
      make_ca("other_ca", "toolgate untrusted CA"),
      make_cert("server", "127.0.0.1", "ca", "server"),
      make_cert("wrong_host", "wrong.example", "ca", "wrong_host"),
      make_cert("untrusted", "127.0.0.1", "other_ca", "server"),
      make_cert("client", "toolgate test client", "ca", "client"),
      // `openssl x509` (3.0) cannot backdate a certificate; `openssl ca` can.
      "openssl req" + cnf + " -new" + newkey + " -subj '/CN=127.0.0.1' -keyout " + f("expired.key") + " -out " +
          f("expired.csr") + " && openssl ca" + cnf + " -batch -notext -cert " + f("ca.pem") + " -keyfile " +
          f("ca.key") + " -startdate 20200101000000Z -enddate 20200102000000Z -extensions server -in " +
          f("expired.csr") + " -out " + f("expired.pem"),
  };
  for (const auto& c : commands) {
    const std::string run = "(" + c + ") >" + log + " 2>&1";
    if (std::system(run.c_str()) != 0) {
      std::ifstream in(log);
      std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      return c + "\n" + output;
    }
  }
  return "";
}

// An HTTP/1.1 server on 127.0.0.1 (port 0) answering every request 200 "hello <target>" (or a fixed
// JSON body), keeping connections alive as the client asks. Counts accepted connections, completed
// TLS handshakes and requests read. Its io_context runs on a thread of its own; the destructor stops and joins it.
class TestHttpServer {
 public:
  struct Options {
    std::string cert_file;  // with key_file: TLS; both empty: plain HTTP
    std::string key_file;
    std::string client_ca_file;         // TLS: require a client certificate signed by this CA
    bool close_after_response = false;  // close each connection after one response, without saying so
    std::string json_body;              // non-empty: answer with this as application/json instead of "hello <target>"
  };

  explicit TestHttpServer(Options options) : options_(std::move(options)) {
    namespace ssl = boost::asio::ssl;
    if (!options_.cert_file.empty()) {
      tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
      tls_->use_certificate_chain_file(options_.cert_file);
      tls_->use_private_key_file(options_.key_file, ssl::context::pem);
      if (!options_.client_ca_file.empty()) {
        tls_->load_verify_file(options_.client_ca_file);
        tls_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    }
    tcp::endpoint at(boost::asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(at.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(at);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    boost::asio::co_spawn(io_, Accept(), boost::asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestHttpServer() {
    io_.stop();
    thread_.join();
  }
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  int handshakes() const { return handshakes_.load(); }
  int requests() const { return requests_.load(); }
  // The SNI of the last completed handshake ("" when the client sent none).
  std::string last_server_name() const {
    std::lock_guard lock(mu_);
    return last_server_name_;
  }

 private:
  using tcp = boost::asio::ip::tcp;
  template <class T>
  using awaitable = boost::asio::awaitable<T>;

  awaitable<void> Accept() {
    for (;;) {
      boost::beast::error_code ec;
      tcp::socket socket = co_await acceptor_.async_accept(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      ++accepted_;
      boost::asio::co_spawn(io_, Session(std::move(socket)), boost::asio::detached);
    }
  }

  awaitable<void> Session(tcp::socket socket) {
    namespace beast = boost::beast;
    if (!tls_) {
      beast::tcp_stream stream(std::move(socket));
      auto serve = Serve(stream);
      co_await std::move(serve);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *tls_);
    beast::error_code ec;
    co_await stream.async_handshake(boost::asio::ssl::stream_base::server,
                                    boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec) co_return;
    ++handshakes_;
    {
      const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
      std::lock_guard lock(mu_);
      last_server_name_ = sni != nullptr ? sni : "";
    }
    auto serve = Serve(stream);
    co_await std::move(serve);
  }

  template <class Stream>
  awaitable<void> Serve(Stream& stream) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    beast::flat_buffer buffer;
    for (;;) {
      beast::error_code ec;
      http::request<http::string_body> req;
      co_await http::async_read(stream, buffer, req, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      ++requests_;
      http::response<http::string_body> res{http::status::ok, 11};
      if (options_.json_body.empty()) {
        res.set(http::field::content_type, "text/plain");
        res.body() = "hello " + std::string(req.target());
      } else {
        res.set(http::field::content_type, "application/json");
        res.body() = options_.json_body;
      }
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await http::async_write(stream, res, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec || !req.keep_alive() || options_.close_after_response) {
        beast::get_lowest_layer(stream).socket().close(ec);  // no close_notify: as a crashed or impatient server
        co_return;
      }
    }
  }

  Options options_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // before io_: sessions the io_context destroys use it
  boost::asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  int port_ = 0;
  std::thread thread_;
  std::atomic<int> accepted_{0};
  std::atomic<int> handshakes_{0};
  std::atomic<int> requests_{0};
  mutable std::mutex mu_;
  std::string last_server_name_;
};

}  // namespace toolgate::testing
