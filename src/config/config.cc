#include "toolgate/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <cctype>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "toml++/toml.h"
#include "toolgate/domain/slo.h"
#include "toolgate/domain/control_bytes.h"

namespace toolgate {
namespace {

constexpr char kDefaultConfig[] = R"(
[connectors.crm]
base_url = "http://127.0.0.1:9101"
)";

// Reads typed keys of one TOML table, remembers which keys it was asked for, and collects errors
// that name the full key ("connectors.crm.timeout_ms").
class TableReader {
 public:
  TableReader(const toml::table* table, std::string prefix, std::vector<std::string>& errors)
      : table_(table), prefix_(std::move(prefix)), errors_(errors) {}

  std::string Key(std::string_view key) const {
    if (key.empty()) return prefix_;  // the table itself: "connectors.crm.tls applies to ..."
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  void String(std::string_view key, std::string& out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    if (auto v = n->value<std::string>())
      out = *v;
    else
      Error(key, "must be a string");
  }
  void Int(std::string_view key, int64_t min, int64_t max, int64_t& out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    // Type first: value<int64_t>() on a huge float casts it to an integer (undefined behaviour, found
    // by fuzz_config).
    if (!n->is_integer()) return Error(key, "must be an integer");
    const std::optional<int64_t> v = n->as_integer()->get();
    if (*v < min || *v > max) return Error(key, absl::StrCat("must be in ", min, "..", max, " (is ", *v, ")"));
    out = *v;
  }
  void Int(std::string_view key, int64_t min, int64_t max, int& out) {
    int64_t wide = out;
    Int(key, min, max, wide);
    out = static_cast<int>(wide);
  }
  void Double(std::string_view key, double min, double max, double& out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    auto v = n->value<double>();  // integers convert too
    if (!v) return Error(key, "must be a number");
    if (!(*v >= min && *v <= max)) return Error(key, absl::StrCat("must be in ", min, "..", max));
    out = *v;
  }
  void StringArray(std::string_view key, std::vector<std::string>& out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    std::vector<std::string> values;
    const toml::array* a = n->as_array();
    for (size_t i = 0; a != nullptr && i < a->size(); ++i) {
      auto v = (*a)[i].value<std::string>();
      if (!v) break;
      values.push_back(*v);
    }
    if (a == nullptr || values.size() != a->size()) return Error(key, "must be an array of strings");
    out = std::move(values);
  }
  void Bool(std::string_view key, bool& out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    if (auto v = n->value<bool>())
      out = *v;
    else
      Error(key, "must be true or false");
  }
  const toml::table* Table(std::string_view key) {
    const toml::node* n = Find(key);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) {
      Error(key, "must be a table");
      return nullptr;
    }
    return n->as_table();
  }
  // Whether the key is present; marks it known.
  bool Has(std::string_view key) {
    known_.insert(std::string(key));
    return table_ != nullptr && table_->contains(key);
  }

  // Every key nobody asked for is a mistake (a typo would otherwise be silently ignored).
  void RefuseUnknown() {
    if (table_ == nullptr) return;
    for (const auto& [k, v] : *table_) {
      if (!known_.count(std::string(k.str()))) Error(k.str(), "is not a known key");
    }
  }
  void Error(std::string_view key, std::string_view what) {
    errors_.push_back(absl::StrCat(Key(key), " ", std::string(what)));
  }

 private:
  const toml::node* Find(std::string_view key) {
    known_.insert(std::string(key));
    if (table_ == nullptr) return nullptr;
    return table_->get(key);
  }

  const toml::table* table_;
  std::string prefix_;
  std::vector<std::string>& errors_;
  std::set<std::string> known_;
};

bool ParseHostPort(const std::string& s, HostPort& out) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  out.host = s.substr(0, colon);
  if (out.host.front() == '[' && out.host.back() == ']') out.host = out.host.substr(1, out.host.size() - 2);
  const std::string port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  out.port = std::stoi(port);
  return out.port <= 65535;
}

void ReadListen(TableReader& r, HostPort& out) {
  std::string listen = out.ToString();
  r.String("listen", listen);
  if (!ParseHostPort(listen, out)) r.Error("listen", "must be host:port");
}

// http[s]://host[:port][/path]; the port defaults to 80 or 443. The path keeps no trailing '/'.
bool ParseHttpUrlImpl(const std::string& url, HostPort& address, std::string& path, bool& tls, std::string& why) {
  constexpr std::string_view kHttp = "http://";
  constexpr std::string_view kHttps = "https://";
  tls = url.rfind(kHttps, 0) == 0;
  if (!tls && url.rfind(kHttp, 0) != 0) {
    why = "must start with http:// or https://";
    return false;
  }
  std::string rest = url.substr(tls ? kHttps.size() : kHttp.size());
  const auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  path = slash == std::string::npos ? "" : rest.substr(slash);
  // user:password@host would be shown wherever the URL is (logs, ledger details, the admin API), and
  // would be read as a host name. The message does not quote the URL.
  if (hostport.find('@') != std::string::npos) {
    why = "must not hold credentials (user:password@host): put them in the connector's [auth] table";
    return false;
  }
  while (!path.empty() && path.back() == '/') path.pop_back();
  const bool bracketed_v6_without_port = !hostport.empty() && hostport.back() == ']';
  if (hostport.find(':') == std::string::npos || bracketed_v6_without_port) hostport += tls ? ":443" : ":80";
  if (!ParseHostPort(hostport, address) || address.port == 0 || address.host.empty()) {
    why = "must be http[s]://host[:port][/path]";
    return false;
  }
  for (char ch : path + address.host) {
    if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#') {
      why = "must not contain spaces, control characters, a query or a fragment";
      return false;
    }
  }
  return true;
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// A file the process must be able to read at start (certificates, keys, secrets).
void RequireReadableFile(TableReader& r, std::string_view key, const std::string& path) {
  if (path.empty()) return;
  std::ifstream in(path, std::ios::binary);
  if (!in) r.Error(key, absl::StrCat("names a file that cannot be read ('", path, "')"));
}

// `<prefix>_env` or `<prefix>_file`, exactly one: where a secret comes from. The value is never read
// into the Config; an unset env var or an unreadable file is refused at load.
void ReadSecretSource(TableReader& r, const std::string& prefix, CredentialOptions& a) {
  const std::string env_key = prefix + "_env", file_key = prefix + "_file";
  r.String(env_key, a.secret_env);
  r.String(file_key, a.secret_file);
  if (a.secret_env.empty() == a.secret_file.empty()) {
    r.Error(env_key, absl::StrCat("or ", file_key, " is required (exactly one of them)"));
    return;
  }
  if (!a.secret_env.empty()) {
    const char* v = std::getenv(a.secret_env.c_str());
    if (v == nullptr || *v == '\0')
      r.Error(env_key, absl::StrCat("names the environment variable ", a.secret_env, ", which is not set"));
  }
  RequireReadableFile(r, file_key, a.secret_file);
}

void ReadAuth(TableReader& r, CredentialOptions& a) {
  using Type = CredentialOptions::Type;
  std::string type;
  if (!r.Has("type")) r.Error("type", "is required (bearer, header or oauth2_client_credentials)");
  r.String("type", type);
  if (type == "bearer") {
    a.type = Type::kBearer;
    ReadSecretSource(r, "token", a);
  } else if (type == "header") {
    a.type = Type::kHeader;
    r.String("name", a.header_name);
    const bool token_char_only =
        !a.header_name.empty() && a.header_name.size() <= 64 &&
        a.header_name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
            std::string::npos;
    if (!token_char_only) r.Error("name", "must be a header name ([A-Za-z0-9_-]{1,64})");
    ReadSecretSource(r, "value", a);
  } else if (type == "oauth2_client_credentials") {
    a.type = Type::kOAuth2ClientCredentials;
    if (!r.Has("token_url")) r.Error("token_url", "is required");
    r.String("token_url", a.token_url);
    std::string why;
    if (r.Has("token_url") && !ParseHttpUrlImpl(a.token_url, a.token_address, a.token_target, a.token_tls, why)) {
      r.Error("token_url", why);
    } else if (r.Has("token_url") && !a.token_tls && !IsLoopbackHost(a.token_address.host)) {
      r.Error("token_url", "must be https:// (a client secret is never sent in clear text off this host)");
    }
    if (a.token_target.empty()) a.token_target = "/";
    if (!r.Has("client_id")) r.Error("client_id", "is required");
    r.String("client_id", a.client_id);
    ReadSecretSource(r, "client_secret", a);
    r.String("scope", a.scope);
    r.String("audience", a.audience);
  } else if (r.Has("type")) {
    r.Error("type", "must be \"bearer\", \"header\" or \"oauth2_client_credentials\"");
  }
  r.RefuseUnknown();
}

// A host name ([A-Za-z0-9.-]{1,253}, lowercased) or an IP literal (an IPv6 one with or without
// brackets, kept without): the form the admin listener compares a request's Host with.
std::optional<std::string> NormalizeAllowedHost(std::string host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return host;
  if (host.empty() || host.size() > 253) return std::nullopt;
  for (char& ch : host) {
    const bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-';
    if (!ok) return std::nullopt;
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  return host;
}

void ReadAdmin(TableReader& admin, AdminConfig& c) {
  ReadListen(admin, c.listen);
  admin.String("admin_token_env", c.admin_token_env);
  admin.Int("max_connections", 1, 4096, c.max_connections);
  admin.Int("replay_job_lease_s", 2, 3600, c.replay_job_lease_s);
  std::vector<std::string> hosts;
  admin.StringArray("allowed_hosts", hosts);
  for (size_t i = 0; i < hosts.size(); ++i) {
    std::optional<std::string> host = NormalizeAllowedHost(hosts[i]);
    if (!host) {
      admin.Error("allowed_hosts", absl::StrCat("[", i, "] (\"", hosts[i].substr(0, 64),
                                                "\") must be a host name ([A-Za-z0-9.-]{1,253}) or an IP literal"));
      continue;
    }
    c.allowed_hosts.push_back(std::move(*host));
  }
  admin.RefuseUnknown();
}

// scheme://host[:port] of an http(s) URL, lowercased, the scheme's default port left out: the
// form a browser sends in Origin. Empty when `url` is not http(s)://host[:port][/path].
std::string OriginOf(const std::string& url) {
  HostPort address;
  std::string path, why;
  bool tls = false;
  if (!ParseHttpUrlImpl(url, address, path, tls, why)) return "";
  std::string host = address.host;
  for (char& ch : host) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  const bool default_port = address.port == (tls ? 443 : 80);
  return absl::StrCat(tls ? "https://" : "http://", host, default_port ? "" : absl::StrCat(":", address.port));
}

bool IsWildcardHost(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// [mcp] (design §14, §17.7).
void ReadMcp(TableReader& r, const ServerConfig& server, McpConfig& m) {
  r.String("public_url", m.public_url);
  while (!m.public_url.empty() && m.public_url.back() == '/') m.public_url.pop_back();
  if (!m.public_url.empty()) {
    HostPort address;
    std::string path, why;
    bool tls = false;
    if (!ParseHttpUrlImpl(m.public_url, address, path, tls, why)) r.Error("public_url", why);
  } else if (IsWildcardHost(server.listen.host)) {
    r.Error("public_url", absl::StrCat("is required when server.listen is a wildcard address (",
                                       server.listen.ToString(), "): the URL clients use to reach this listener"));
  }
  std::vector<std::string> origins;
  r.StringArray("allowed_origins", origins);
  for (size_t i = 0; i < origins.size(); ++i) {
    std::string origin = OriginOf(origins[i]);
    const bool bare = !origin.empty() && origins[i].find('/', origins[i].find("//") + 2) == std::string::npos;
    if (!bare) {
      r.Error("allowed_origins", absl::StrCat("[", i, "] (\"", origins[i].substr(0, 64),
                                              "\") must be an origin: http[s]://host[:port] without a path"));
      continue;
    }
    m.allowed_origins.push_back(std::move(origin));
  }
  r.StringArray("authorization_servers", m.authorization_servers);
  for (size_t i = 0; i < m.authorization_servers.size(); ++i) {
    if (OriginOf(m.authorization_servers[i]).empty()) {
      r.Error("authorization_servers",
              absl::StrCat("[", i, "] (\"", m.authorization_servers[i].substr(0, 64), "\") must be an http[s]:// URL"));
    }
  }
  r.String("session_secret_env", m.session_secret_env);
  if (!m.session_secret_env.empty()) {
    const char* v = std::getenv(m.session_secret_env.c_str());
    if (v == nullptr || std::string(v).size() < 32) {  // 256 bits, as the HS256 secret (RFC 7518 §3.2)
      r.Error("session_secret_env", absl::StrCat("names the environment variable ", m.session_secret_env,
                                                 ", which must hold a secret of at least 32 bytes"));
    }
  }
  r.RefuseUnknown();
}

void ReadBreaker(TableReader& r, breaker::Config& b) {
  r.Int("failure_threshold", 1, 1'000'000, b.failure_threshold);
  r.Int("window_s", 1, 86400, b.window_s);
  if (r.Has("failure_rate_threshold")) {
    double rate = 0.5;
    r.Double("failure_rate_threshold", 0.000001, 1.0, rate);
    b.failure_rate_threshold = rate;
  }
  r.Int("min_calls", 1, 1'000'000, b.min_calls);
  if (r.Has("slow_call_ms")) {
    int slow = 0;
    r.Int("slow_call_ms", 1, 3'600'000, slow);
    b.slow_call_ms = slow;
  }
  r.Int("cooldown_s", 1, 3600, b.cooldown_s);
  r.Int("state_ttl_days", 1, 3650, b.state_ttl_days);
  r.Int("probe_timeout_s", 1, 86400, b.probe_timeout_s);
  r.Int("min_distinct_tenants", 1, 100, b.min_distinct_tenants);
  r.RefuseUnknown();
}

// A tool's request shape, idempotency, description and input schema (design §13).
void ReadToolShape(TableReader& t, ToolConfig& tc) {
  t.String("method", tc.method);
  static const std::set<std::string> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE"};
  if (!kMethods.count(tc.method)) t.Error("method", "must be GET, POST, PUT, PATCH or DELETE");
  tc.idempotent = tc.method == "GET" || tc.method == "PUT" || tc.method == "DELETE";
  t.Bool("idempotent", tc.idempotent);
  t.String("path", tc.path);
  t.String("description", tc.description);
  if (tc.description.size() > 4096) t.Error("description", "must be at most 4096 bytes");
  t.String("input_schema", tc.input_schema);
  if (!tc.path.empty() && tc.path.front() != '/') {
    t.Error("path", "must start with /");
  } else if (kMethods.count(tc.method)) {
    absl::StatusOr<RequestShape> shape = ParseRequestShape(tc.method, tc.path);
    if (shape.ok())
      tc.shape = *std::move(shape);
    else
      t.Error("path", std::string(shape.status().message()));
  }
  if (!tc.input_schema.empty()) {
    const nlohmann::json schema = nlohmann::json::parse(tc.input_schema, nullptr, /*allow_exceptions=*/false);
    if (!schema.is_object()) return t.Error("input_schema", "must be a JSON object (a JSON Schema)");
    absl::StatusOr<JsonSchema> compiled = JsonSchema::Compile(schema);
    if (!compiled.ok()) return t.Error("input_schema", std::string(compiled.status().message()));
    tc.schema = *std::move(compiled);
    // A path placeholder the schema does not know could never be filled by a valid input.
    for (const std::string& field : tc.shape.placeholders()) {
      if (!tc.schema->HasProperty(field)) {
        t.Error("path", absl::StrCat("uses {", field, "}, which is not a property of input_schema"));
      }
    }
  }
}

// `kind` and the keys that say where the downstream is: base_url (http), url, tool_prefix and
// tools_ttl_s (mcp), command, env, tool_prefix and tools_ttl_s (mcp_stdio). A key of another kind is
// refused, naming the kind it belongs to.
void ReadConnectorKind(TableReader& r, ConnectorConfig& c) {
  std::string kind = "http";
  r.String("kind", kind);
  if (kind == "mcp")
    c.kind = ConnectorKind::kMcp;
  else if (kind == "mcp_stdio")
    c.kind = ConnectorKind::kMcpStdio;
  else if (kind != "http")
    r.Error("kind", "must be \"http\", \"mcp\" or \"mcp_stdio\"");
  auto refuse = [&](std::string_view key, std::string_view kinds) {
    if (r.Has(key))
      r.Error(key, absl::StrCat("applies to kind = ", std::string(kinds), " only (this connector is \"", kind, "\")"));
  };
  if (c.kind == ConnectorKind::kHttp) {
    if (!r.Has("base_url")) r.Error("base_url", "is required");
    r.String("base_url", c.base_url);
    if (std::string why; r.Has("base_url") && !ParseHttpUrlImpl(c.base_url, c.address, c.path_prefix, c.tls, why)) {
      r.Error("base_url", why);
    }
    for (const char* key : {"url", "tool_prefix", "tools_ttl_s", "command", "env"})
      refuse(key, "\"mcp\" or \"mcp_stdio\"");
    return;
  }
  refuse("base_url", "\"http\"");
  refuse("health_path", "\"http\" (an MCP connector's health check is a JSON-RPC ping)");
  c.tool_prefix = c.id + ".";
  r.String("tool_prefix", c.tool_prefix);
  const bool prefix_ok = c.tool_prefix.size() <= 64 &&
                         c.tool_prefix.find_first_not_of(
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == std::string::npos;
  if (!prefix_ok) r.Error("tool_prefix", "must match [A-Za-z0-9_.-]{0,64}");
  r.Int("tools_ttl_s", 1, 86'400, c.tools_ttl_s);
  if (c.kind == ConnectorKind::kMcp) {
    if (!r.Has("url")) r.Error("url", "is required (the MCP server's Streamable HTTP endpoint)");
    r.String("url", c.url);
    if (std::string why; r.Has("url") && !ParseHttpUrlImpl(c.url, c.address, c.path_prefix, c.tls, why))
      r.Error("url", why);
    if (c.path_prefix.empty()) c.path_prefix = "/";
    refuse("command", "\"mcp_stdio\"");
    refuse("env", "\"mcp_stdio\"");
    return;
  }
  refuse("url", "\"mcp\"");
  refuse("tls", "\"http\" or \"mcp\"");
  refuse("auth", "\"http\" or \"mcp\"");
  if (!r.Has("command")) r.Error("command", "is required (the MCP server's program and its arguments)");
  r.StringArray("command", c.command);
  if (r.Has("command") && (c.command.empty() || c.command.front().empty())) {
    r.Error("command", "must name a program (a non-empty array whose first string is not empty)");
  }
  if (const toml::table* env = r.Table("env")) {
    for (const auto& [name, value] : *env) {
      const std::string key(name.str());
      const bool name_ok =
          !key.empty() && !std::isdigit(static_cast<unsigned char>(key[0])) &&
          key.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
      auto v = value.value<std::string>();
      if (!name_ok)
        r.Error("env", absl::StrCat("names \"", key.substr(0, 64),
                                    "\", which is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
      else if (!v || v->find('\0') != std::string::npos)
        r.Error("env", absl::StrCat(".", key, " must be a string"));
      else
        c.env[key] = *v;
    }
  }
}

void ReadConnector(const std::string& id, const toml::table* t, ConnectorConfig& c, std::vector<std::string>& errors) {
  TableReader r(t, "connectors." + id, errors);
  c.id = id;
  if (!IsValidToolName(id) || id.find('.') != std::string::npos) r.Error("", "name must match [A-Za-z0-9_-]{1,200}");
  ReadConnectorKind(r, c);
  const toml::table* tls = c.kind == ConnectorKind::kMcpStdio ? nullptr : r.Table("tls");
  if (tls != nullptr) {
    TableReader tr(tls, r.Key("tls"), errors);
    if (!c.tls) tr.Error("", "applies to https:// connectors only");
    tr.String("ca_file", c.tls_options.ca_file);
    tr.String("client_cert_file", c.tls_options.client_cert_file);
    tr.String("client_key_file", c.tls_options.client_key_file);
    RequireReadableFile(tr, "ca_file", c.tls_options.ca_file);
    RequireReadableFile(tr, "client_cert_file", c.tls_options.client_cert_file);
    RequireReadableFile(tr, "client_key_file", c.tls_options.client_key_file);
    if (c.tls_options.client_cert_file.empty() != c.tls_options.client_key_file.empty()) {
      tr.Error("client_cert_file", "and client_key_file go together (mutual TLS needs both)");
    }
    tr.RefuseUnknown();
  }
  const toml::table* auth = c.kind == ConnectorKind::kMcpStdio ? nullptr : r.Table("auth");
  if (auth != nullptr) {
    TableReader ar(auth, r.Key("auth"), errors);
    ReadAuth(ar, c.auth);
  }
  TableReader rr(r.Table("retry"), r.Key("retry"), errors);
  rr.Int("max_attempts", 1, 10, c.retry.max_attempts);
  rr.Int("backoff_ms", 1, 60'000, c.retry.backoff_ms);
  rr.Int("max_backoff_ms", 1, 600'000, c.retry.max_backoff_ms);
  if (c.retry.max_backoff_ms < c.retry.backoff_ms) rr.Error("max_backoff_ms", "must be at least backoff_ms");
  rr.RefuseUnknown();
  r.Int("timeout_ms", 1, 600'000, c.timeout_ms);
  r.Int("max_in_flight", 1, 100'000, c.concurrency.max_in_flight);
  if (!c.is_mcp()) {
    r.String("health_path", c.health_path);
    if (c.health_path.empty() || c.health_path.front() != '/') r.Error("health_path", "must start with /");
  }
  std::string on_store_error = "defer";
  r.String("on_store_error", on_store_error);
  if (on_store_error == "defer")
    c.on_store_error = OnStoreError::kDefer;
  else if (on_store_error == "allow")
    c.on_store_error = OnStoreError::kAllow;
  else
    r.Error("on_store_error", "must be \"defer\" or \"allow\"");
  c.concurrency.lease_ttl_s = c.timeout_ms / 1000 + 30;
  r.Int("lease_ttl_s", 1, 86400, c.concurrency.lease_ttl_s);
  r.Int("max_clock_skew_s", 0, 300, c.concurrency.max_clock_skew_s);
  r.Int("concurrency_shards", 1, 64, c.concurrency.shards);
  if (c.concurrency.shards > c.concurrency.max_in_flight) {
    r.Error("concurrency_shards", "must not exceed max_in_flight (each shard holds at least one slot)");
  }
  r.Int("max_in_flight_per_tenant", 0, 100'000, c.concurrency.max_in_flight_per_tenant);
  if (c.concurrency.max_in_flight_per_tenant > c.concurrency.max_in_flight) {
    r.Error("max_in_flight_per_tenant", "must not exceed max_in_flight (0: no per-tenant share)");
  }
  r.Int("max_response_bytes", 1024, 64 << 20, c.max_response_bytes);
  // S7: a live call must never lose its lease or its probe claim.
  if (int64_t{c.concurrency.lease_ttl_s} * 1000 <= c.timeout_ms) {
    r.Error("lease_ttl_s", absl::StrCat("must be longer than timeout_ms (", c.timeout_ms, " ms)"));
  }
  TableReader br(r.Table("breaker"), r.Key("breaker"), errors);
  ReadBreaker(br, c.breaker);
  c.breaker.max_clock_skew_s = c.concurrency.max_clock_skew_s;  // one skew for slots and probe claims
  if (int64_t{c.breaker.probe_timeout_s} * 1000 <= c.timeout_ms) {
    br.Error("probe_timeout_s", absl::StrCat("must be longer than timeout_ms (", c.timeout_ms, " ms)"));
  }
  TableReader sr(r.Table("slo"), r.Key("slo"), errors);
  sr.Double("error_target", 0.5, 0.99999, c.slo.error_target);
  sr.Double("latency_target", 0.5, 0.99999, c.slo.latency_target);
  sr.Int("latency_threshold_ms", 1, 600'000, c.slo.latency_threshold_ms);
  sr.Int("min_events", 1, 1'000'000, c.slo.min_events);
  for (auto [key, target] :
       {std::pair{"error_target", c.slo.error_target}, std::pair{"latency_target", c.slo.latency_target}}) {
    if (absl::Status s = slo::ValidateTarget(target); !s.ok()) sr.Error(key, std::string(s.message()));
  }
  sr.RefuseUnknown();
  TableReader qr(r.Table("queue"), r.Key("queue"), errors);
  c.queue_workers = std::min(c.concurrency.max_in_flight, kDefaultMaxQueueWorkers);
  qr.Int("workers", 1, 1024, c.queue_workers);
  qr.RefuseUnknown();
  r.RefuseUnknown();
}

}  // namespace

bool ParseHttpUrl(const std::string& url, HostPort& address, std::string& path, bool& tls, std::string& why) {
  return ParseHttpUrlImpl(url, address, path, tls, why);
}

// [log] (design §17.12): the format of every log line and whether each request is logged.
void ReadLog(TableReader& r, LogConfig& log) {
  std::string format = log.json ? "json" : "text";
  r.String("format", format);
  if (format != "json" && format != "text") r.Error("format", "must be \"json\" or \"text\"");
  log.json = format == "json";
  r.Bool("access", log.access);
  r.RefuseUnknown();
}

absl::StatusOr<Config> ParseConfig(const std::string& text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": TOML syntax error at ", where.str(), ": ", std::string(e.description())));
  }
  Config c;
  c.source = source_name;
  std::vector<std::string> errors;
  TableReader top(&root, "", errors);

  TableReader server(top.Table("server"), "server", errors);
  ReadListen(server, c.server.listen);
  server.Int("max_body_bytes", 1024, 64 << 20, c.server.max_body_bytes);
  server.Int("max_header_bytes", 1024, 1 << 20, c.server.max_header_bytes);
  server.Int("request_timeout_ms", 100, 600'000, c.server.request_timeout_ms);
  // Event loops, each an io_context run by one thread: a connection lives on one of them (so Beast's
  // tcp_stream never sees its timer and its I/O on two threads at once). 0: one per core.
  server.Int("io_threads", 0, 64, c.server.io_threads);
  server.Int("store_threads", 1, 1024, c.server.store_threads);
  server.Int("breaker_cache_ms", 0, 5000, c.server.breaker_cache_ms);
  server.Int("max_connections", 1, 1'000'000, c.server.max_connections);
  server.Int("write_timeout_ms", 100, 600'000, c.server.write_timeout_ms);
  server.Int("max_response_buffer_bytes", int64_t{1} << 20, int64_t{64} << 30, c.server.max_response_buffer_bytes);
  server.Int("max_request_buffer_bytes", int64_t{1} << 20, int64_t{64} << 30, c.server.max_request_buffer_bytes);
  // A body as large as the budget could never be served: every such request would be a 503.
  if (c.server.max_request_buffer_bytes < c.server.max_body_bytes) {
    server.Error("max_request_buffer_bytes",
                 absl::StrCat("(", c.server.max_request_buffer_bytes, ") must be at least server.max_body_bytes (",
                              c.server.max_body_bytes, ")"));
  }
  server.RefuseUnknown();

  TableReader admin(top.Table("admin"), "admin", errors);
  ReadAdmin(admin, c.admin);

  TableReader store(top.Table("store"), "store", errors);
  store.String("backend", c.store.backend);
  if (c.store.backend != "sqlite" && c.store.backend != "memory" && c.store.backend != "dynamodb") {
    store.Error("backend", "must be \"sqlite\", \"memory\" or \"dynamodb\"");
  }
  store.String("path", c.store.path);
  std::string sync = c.store.sqlite_synchronous_full ? "full" : "normal";
  store.String("sqlite_synchronous", sync);
  if (sync != "full" && sync != "normal") store.Error("sqlite_synchronous", "must be \"full\" or \"normal\"");
  c.store.sqlite_synchronous_full = sync == "full";
  store.Int("sqlite_mmap_mb", 0, 65'536, c.store.sqlite_mmap_mb);
  store.String("table", c.store.table);
  store.String("region", c.store.region);
  store.String("endpoint", c.store.endpoint);
  store.String("ca_file", c.store.ca_file);
  store.Int("request_timeout_ms", 10, 60'000, c.store.request_timeout_ms);
  store.Int("retry_budget_ms", 0, 60'000, c.store.retry_budget_ms);
  store.Int("max_requests_in_flight", 1, 4096, c.store.max_requests_in_flight);
  store.Int("sweep_interval_s", 1, 3600, c.store.sweep_interval_s);
  store.Bool("create_if_missing", c.store.create_if_missing);
  if (c.store.backend == "dynamodb") {
    if (c.store.table.empty()) store.Error("table", "must name the DynamoDB table");
    if (c.store.region.empty()) store.Error("region", "must name the AWS region");
    if (!c.store.endpoint.empty() && c.store.endpoint.rfind("http://", 0) != 0 &&
        c.store.endpoint.rfind("https://", 0) != 0) {
      store.Error("endpoint", "must start with http:// or https://");
    }
    // An execution record keeps the request's input, and DynamoDB holds at most 400 KB per item:
    // the body limit defaults lower, and a larger one is refused.
    const toml::table* server_table = top.Table("server");
    if (server_table == nullptr || !server_table->contains("max_body_bytes")) {
      c.server.max_body_bytes = kDynamoDbMaxBodyBytes;
    } else if (c.server.max_body_bytes > kDynamoDbMaxBodyBytes) {
      errors.push_back("server.max_body_bytes: must be at most " + std::to_string(kDynamoDbMaxBodyBytes) +
                       " with store.backend = \"dynamodb\" (an item holds at most 400 KB, and the execution "
                       "record keeps the input)");
    }
  }
  store.RefuseUnknown();

  TableReader auth(top.Table("auth"), "auth", errors);
  auth.String("hs256_secret_env", c.auth.hs256_secret_env);
  auth.String("jwks_file", c.auth.jwks_file);
  auth.String("issuer", c.auth.issuer);
  auth.String("audience", c.auth.audience);
  auth.Int("leeway_s", 0, 300, c.auth.leeway_s);
  auth.RefuseUnknown();

  TableReader replay(top.Table("replay"), "replay", errors);
  replay.Int("max_replays_per_execution", 0, 1000, c.max_replays_per_execution);
  replay.RefuseUnknown();
  TableReader idem(top.Table("idempotency"), "idempotency", errors);
  idem.Int("retention_h", 1, 24 * 365, c.idempotency_retention_h);
  idem.RefuseUnknown();
  TableReader ledger(top.Table("ledger"), "ledger", errors);
  constexpr int64_t kTenYears = int64_t{3650} * 86'400;
  ledger.Int("retention_s", 0, kTenYears, c.ledger.retention_s);
  if (c.ledger.retention_s != 0 && c.ledger.retention_s < 60)
    ledger.Error("retention_s", "must be 0 (keep forever) or at least 60");
  if (ledger.Has("deferred_retention_s")) {
    ledger.Int("deferred_retention_s", 0, kTenYears, c.ledger.deferred_retention_s);
    if (c.ledger.deferred_retention_s != 0 && c.ledger.deferred_retention_s < 60) {
      ledger.Error("deferred_retention_s", "must be 0 (keep forever) or at least 60");
    } else if (c.ledger.retention_s > 0 &&
               (c.ledger.deferred_retention_s == 0 || c.ledger.deferred_retention_s > c.ledger.retention_s)) {
      ledger.Error("deferred_retention_s",
                   "must not be longer than retention_s (" + std::to_string(c.ledger.retention_s) + ")");
    }
  } else if (c.ledger.retention_s > 0) {
    c.ledger.deferred_retention_s = std::min(c.ledger.deferred_retention_s, c.ledger.retention_s);
  }
  ledger.RefuseUnknown();
  TableReader slo_table(top.Table("slo"), "slo", errors);
  slo_table.Int("evaluate_interval_ms", 100, 10'000, c.slo.interval_ms);
  slo_table.RefuseUnknown();
  TableReader alerts(top.Table("alerts"), "alerts", errors);
  alerts.String("webhook_url", c.slo.webhook_url);
  alerts.String("runbook_url", c.slo.runbook_url);
  if (c.slo.runbook_url.size() > 2048 ||
      std::any_of(c.slo.runbook_url.begin(), c.slo.runbook_url.end(), IsControlByte)) {
    alerts.Error("runbook_url", "must be at most 2048 characters, without control characters");
  }
  if (!c.slo.webhook_url.empty()) {
    std::string path, why;
    bool tls = false;
    if (!ParseHttpUrlImpl(c.slo.webhook_url, c.slo.webhook_address, path, tls, why))
      alerts.Error("webhook_url", why);
    else if (tls)
      alerts.Error("webhook_url", "must be http:// (alert webhooks over https are not supported yet)");
    c.slo.webhook_path = path.empty() ? "/" : path;
  }
  alerts.RefuseUnknown();
  TableReader kill(top.Table("kill_switches"), "kill_switches", errors);
  kill.Int("refresh_ms", 50, 2000, c.kill_switch_refresh_ms);
  kill.RefuseUnknown();
  TableReader mcp(top.Table("mcp"), "mcp", errors);
  ReadMcp(mcp, c.server, c.mcp);
  TableReader log(top.Table("log"), "log", errors);
  ReadLog(log, c.log);
  TableReader queue(top.Table("queue"), "queue", errors);
  queue.Int("max_deadline_s", 1, int64_t{365} * 86'400, c.queue.max_deadline_s);
  queue.Int("default_deadline_s", 1, c.queue.max_deadline_s, c.queue.default_deadline_s);
  queue.Int("max_per_tenant", 1, 10'000'000, c.queue.max_per_tenant);
  queue.Int("claim_lease_s", 0, 86'400, c.queue.claim_lease_s);
  queue.Int("poll_interval_ms", 10, 60'000, c.queue.poll_interval_ms);
  queue.StringArray("callback_allowlist", c.queue.callback_allowlist);
  for (const std::string& prefix : c.queue.callback_allowlist) {
    HostPort address;
    std::string path, why;
    bool tls = false;
    if (!ParseHttpUrlImpl(prefix, address, path, tls, why)) queue.Error("callback_allowlist", why);
  }
  queue.String("callback_secret_env", c.queue.callback_secret_env);
  queue.String("callback_secret_file", c.queue.callback_secret_file);
  if (!c.queue.callback_allowlist.empty() &&
      c.queue.callback_secret_env.empty() == c.queue.callback_secret_file.empty()) {
    queue.Error("callback_secret_env", "or callback_secret_file is required with callback_allowlist (exactly one)");
  }
  if (!c.queue.callback_secret_env.empty()) {
    const char* v = std::getenv(c.queue.callback_secret_env.c_str());
    if (v == nullptr || *v == '\0') {
      queue.Error("callback_secret_env",
                  absl::StrCat("names the environment variable ", c.queue.callback_secret_env, ", which is not set"));
    }
  }
  RequireReadableFile(queue, "callback_secret_file", c.queue.callback_secret_file);
  queue.Int("callback_retry_s", 1, int64_t{7} * 86'400, c.queue.callback_retry_s);
  queue.Int("callback_backoff_ms", 10, 3'600'000, c.queue.callback_backoff_ms);
  queue.Int("callback_max_backoff_ms", 10, 3'600'000, c.queue.callback_max_backoff_ms);
  queue.Int("callback_timeout_ms", 100, 60'000, c.queue.callback_timeout_ms);
  queue.RefuseUnknown();

  if (const toml::table* connectors = top.Table("connectors")) {
    for (const auto& [name, node] : *connectors) {
      const std::string id(name.str());
      if (!node.is_table()) {
        errors.push_back("connectors." + id + " must be a table");
        continue;
      }
      ReadConnector(id, node.as_table(), c.connectors[id], errors);
    }
  }
  if (c.connectors.empty()) errors.push_back("connectors: at least one [connectors.<id>] table is required");
  for (const auto& [id, connector] : c.connectors) {
    // A claim's lease must outlive the call it covers, as a slot's does (S7).
    if (c.queue.claim_lease_s > 0 && int64_t{c.queue.claim_lease_s} * 1000 <= connector.timeout_ms) {
      queue.Error("claim_lease_s",
                  absl::StrCat("must be longer than connectors.", id, ".timeout_ms (", connector.timeout_ms, " ms)"));
    }
    // A response as large as the budget could never be written: every such call would be a 503.
    if (connector.max_response_bytes > c.server.max_response_buffer_bytes) {
      server.Error("max_response_buffer_bytes",
                   absl::StrCat("(", c.server.max_response_buffer_bytes, ") must be at least connectors.", id,
                                ".max_response_bytes (", connector.max_response_bytes, ")"));
    }
  }

  if (const toml::table* tools = top.Table("tools")) {
    for (const auto& [name, node] : *tools) {
      const std::string tool(name.str());
      TableReader t(node.as_table(), "tools.\"" + tool + "\"", errors);
      if (!node.is_table()) {
        errors.push_back("tools.\"" + tool + "\" must be a table");
        continue;
      }
      if (!IsValidToolName(tool)) t.Error("", "is not a valid tool name ([A-Za-z0-9_.-]{1,200})");
      ToolConfig& tc = c.tools[tool];
      t.String("action_type", tc.action_type);
      if (!tc.action_type.empty() && !IsValidToolName(tc.action_type)) {
        t.Error("action_type", "must match [A-Za-z0-9_.-]{1,200} (a kill switch could never name it otherwise)");
      }
      t.String("connector", tc.connector_id);
      if (!tc.connector_id.empty() && !c.connectors.count(tc.connector_id)) {
        t.Error("connector", "names a connector that is not configured");
      }
      ReadToolShape(t, tc);
      t.RefuseUnknown();
    }
  }
  top.RefuseUnknown();

  if (!errors.empty()) {
    // One problem a line; each line Printable, so that a key or value with a line break of its own
    // cannot pass for another problem when the CLI prints the lines as lines.
    std::string msg = source_name + ": invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + Printable(e);
    return absl::InvalidArgumentError(msg);
  }
  return c;
}

absl::StatusOr<ConnectionCapPlan> ResolveConnectionCaps(uint64_t nofile, Config& config) {
  // int64 arithmetic throughout: RLIMIT_NOFILE may be RLIM_INFINITY.
  const int64_t limit = static_cast<int64_t>(std::min<uint64_t>(nofile, uint64_t{1} << 40));
  const int64_t admin = config.admin.max_connections;
  auto need = [&](int64_t public_cap) { return 2 * public_cap + admin + kReservedDescriptors; };
  ConnectionCapPlan plan;
  if (config.server.max_connections == 0) {
    plan.derived = true;
    const int64_t fits = (limit - kReservedDescriptors - admin) / 2;
    config.server.max_connections =
        static_cast<int>(std::clamp<int64_t>(fits, kMinDerivedConnections, kMaxDerivedConnections));
  } else if (need(config.server.max_connections) > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.source, ": server.max_connections = ", config.server.max_connections, " needs about ",
                     need(config.server.max_connections),
                     " file descriptors (2 per connection, as each may hold a downstream "
                     "connection, plus admin.max_connections = ",
                     admin, " and ", kReservedDescriptors, " in reserve), but the descriptor limit (RLIMIT_NOFILE) is ",
                     limit, ": raise the limit (ulimit -n, systemd LimitNOFILE=) or lower server.max_connections"));
  }
  plan.descriptors_needed = need(config.server.max_connections);
  return plan;
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {  // it opens, then reads as nothing (EISDIR)
    return absl::InvalidArgumentError(absl::StrCat("cannot read config file '", path, "': it is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file '", path, "'"));
  std::stringstream buf;
  buf << in.rdbuf();
  if (buf.str().size() > (1 << 20)) return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 1 MiB"));
  return ParseConfig(buf.str(), path);
}

Config DefaultConfig() {
  auto c = ParseConfig(kDefaultConfig, "built-in default");
  return *c;  // the built-in text is valid; the config test checks it
}

int Config::LargestClockSkewS() const {
  if (connectors.empty()) return ConcurrencyConfig{}.max_clock_skew_s;
  int largest = 0;
  for (const auto& [id, c] : connectors) largest = std::max(largest, c.concurrency.max_clock_skew_s);
  return largest;
}

int Config::SmallestClockSkewS() const {
  if (connectors.empty()) return ConcurrencyConfig{}.max_clock_skew_s;
  int smallest = connectors.begin()->second.concurrency.max_clock_skew_s;
  for (const auto& [id, c] : connectors) smallest = std::min(smallest, c.concurrency.max_clock_skew_s);
  return smallest;
}

}  // namespace toolgate
