#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/domain/ids.h"  // IsValidToolName: config keys use the name alphabet
#include "toolgate/domain/concurrency_rules.h"
#include "toolgate/domain/credential_options.h"
#include "toolgate/domain/json_schema.h"
#include "toolgate/domain/request_shape.h"
#include "toolgate/domain/host_port.h"

namespace toolgate {

struct ServerConfig {
  HostPort listen{"127.0.0.1", 8080};
  int64_t max_body_bytes = 1 << 20;
  int max_header_bytes = 16 * 1024;
  int request_timeout_ms = 30'000;  // reading a request; the downstream call has its own timeout
  int io_threads = 0;               // event-loop threads serving connections; 0: one per core
  int store_threads = 16;           // bounded pool for blocking store work
  int breaker_cache_ms = 250;       // how long a CLOSED (or cooling-down) breaker is answered from memory
  // Open connections on the public listener. 0 (the key left out): derived at start from the
  // descriptor limit (ResolveConnectionCaps).
  int max_connections = 0;
  int write_timeout_ms = 10'000;  // writing one response; a client that does not read is then closed
  // Bytes of large responses (> 64 KiB each) waiting to be written, for the whole process; a
  // response that does not fit is answered 503 gateway_overloaded.
  int64_t max_response_buffer_bytes = int64_t{64} << 20;
  // Bytes of large request bodies (> 64 KiB each) of the requests being served, for the whole
  // process: a call in flight holds its input for as long as it runs. A request that does not fit is
  // answered 503 gateway_overloaded before anything is parsed.
  int64_t max_request_buffer_bytes = int64_t{64} << 20;
};

struct AdminConfig {
  HostPort listen{"127.0.0.1", 9901};
  std::string admin_token_env;  // name of the env var holding the bearer token; empty: no token
  // Open connections on the admin listener: separate from the public cap, so that a flood on the
  // public port never locks operators out.
  int max_connections = 64;
  // Host names the admin listener answers besides its own address and localhost (design §6):
  // names lowercased, IPv6 literals without brackets.
  std::vector<std::string> allowed_hosts;
  // A bulk replay job's claim lapses this long after its holder's last step (a killed instance's
  // job is taken over by another after it); instances look for lapsed jobs at least this often.
  // Keep it above the longest single replay (a connector's timeout with its retries) and 1 / rate.
  int replay_job_lease_s = 30;
};

struct StoreConfig {
  std::string backend = "sqlite";  // sqlite | memory | dynamodb
  std::string path = "./toolgate-data/toolgate.db";
  bool sqlite_synchronous_full = true;
  int sqlite_mmap_mb = 0;  // SQLite: how much of the file each connection reads through a memory map
  std::string table = "toolgate";
  std::string region = "us-east-1";
  std::string endpoint;             // empty: https://dynamodb.<region>.amazonaws.com
  std::string ca_file;              // CAs for an https endpoint, instead of the system trust store
  int request_timeout_ms = 2000;    // one DynamoDB HTTP exchange
  int retry_budget_ms = 1500;       // all retries of one store operation
  int max_requests_in_flight = 64;  // DynamoDB: requests out at once; more wait for a place
  int sweep_interval_s = 60;        // SQLite and memory: how often expired items are deleted
  // SQLite: create the store (and its directory) when there is none at `path`. false refuses to
  // start instead — production, where "no store" means a volume that did not mount.
  bool create_if_missing = true;
};

// [ledger]: how long executions, their ledger chains and the daily audit chains are kept.
struct LedgerConfig {
  int64_t retention_s = 30 * 86'400;      // 0 keeps everything forever
  int64_t deferred_retention_s = 86'400;  // executions deferred before reaching a connector
};

// With the DynamoDB backend the request body is capped so an execution record fits in one item.
inline constexpr int kDynamoDbMaxBodyBytes = 256 * 1024;

struct AuthConfig {
  std::string hs256_secret_env = "TOOLGATE_JWT_SECRET";
  std::string jwks_file;
  std::string issuer;
  std::string audience;
  int leeway_s = 30;
};

struct SloConfig {
  double error_target = 0.995;
  double latency_target = 0.99;
  int latency_threshold_ms = 1000;
  int min_events = 20;  // a tier stays quiet while its long window holds fewer calls
};

// Fleet-wide SLO evaluation (design §8) and where alarms are announced.
struct SloEvaluationConfig {
  int interval_ms = 10'000;  // counts flushed to the store and alarms evaluated this often (<= 10 s)
  std::string webhook_url;   // [alerts] webhook_url: http://host:port/path receiving a JSON POST per change
  HostPort webhook_address;  // parsed from webhook_url
  std::string webhook_path;
  // [alerts] runbook_url: the runbook_url annotation of the rules `toolgate slo rules` prints.
  std::string runbook_url = "docs/operations.md#slo-alarms";
};

enum class OnStoreError { kDefer, kAllow };

// [connectors.X.tls] (design §13): how an https:// connector's server is verified and, for mutual
// TLS, who toolgate is. Verification cannot be turned off.
struct ConnectorTlsConfig {
  std::string ca_file;           // empty: the system trust store
  std::string client_cert_file;  // with client_key_file: mutual TLS
  std::string client_key_file;
};

// [connectors.X.retry] (design §13): attempts of one call, all inside its timeout_ms.
struct RetryConfig {
  int max_attempts = 1;  // 1: no retry
  int backoff_ms = 100;  // first backoff's upper bound (full jitter), doubling
  int max_backoff_ms = 2000;
};

// How a connector reaches its downstream (design §13, §14).
enum class ConnectorKind {
  kHttp,      // base_url: one HTTP request per call
  kMcp,       // url: an MCP server over Streamable HTTP
  kMcpStdio,  // command: an MCP server run as a child process, JSON-RPC over its stdin/stdout
};

struct ConnectorConfig {
  std::string id;
  ConnectorKind kind = ConnectorKind::kHttp;
  std::string base_url;     // http[s]://host[:port][/prefix]; kind = "http" only
  std::string url;          // http[s]://host[:port]/path of the MCP endpoint; kind = "mcp" only
  HostPort address;         // parsed from base_url (http) or url (mcp)
  bool tls = false;         // base_url / url is https://
  std::string path_prefix;  // base_url's path (http); the MCP endpoint's path, "/" when empty (mcp)
  // MCP kinds: tools are exposed as <tool_prefix><server's name>; default "<id>.", may be "".
  std::string tool_prefix;
  int tools_ttl_s = 300;                   // MCP kinds: how long a fetched tools/list is used
  std::vector<std::string> command;        // mcp_stdio: the program and its arguments
  std::map<std::string, std::string> env;  // mcp_stdio: set in the child's environment
  bool is_mcp() const { return kind != ConnectorKind::kHttp; }
  ConnectorTlsConfig tls_options;
  CredentialOptions auth;  // [connectors.X.auth]: where secrets come from, never the secrets
  RetryConfig retry;
  int timeout_ms = 5000;
  std::string health_path = "/health";
  OnStoreError on_store_error = OnStoreError::kDefer;
  int64_t max_response_bytes = 4 << 20;
  ConcurrencyConfig concurrency;
  breaker::Config breaker;
  SloConfig slo;
  // [connectors.X.queue] workers: dispatchers of this connector's queue on each instance (design §15).
  // Default: max_in_flight, at most kDefaultMaxQueueWorkers.
  int queue_workers = 0;
};

inline constexpr int kDefaultMaxQueueWorkers = 64;

// [queue] (design §15, §17.4–§17.5): queued calls.
struct QueueConfig {
  int64_t default_deadline_s = 3600;  // a call's `deadline_s` when it names none
  int64_t max_deadline_s = 7 * 86'400;
  int max_per_tenant = 10'000;  // queued calls of one tenant (fleet-wide); beyond: 429 queue_full
  int claim_lease_s = 0;        // a claim's lease; 0: the connector's lease_ttl_s
  int poll_interval_ms = 1000;  // the longest an idle dispatcher waits between looks at its queue
  // Callbacks (§15, §17.5): a queued call's `callback_url` must start with one of these prefixes
  // (each http[s]://host[:port][/path]); empty: callbacks are refused.
  std::vector<std::string> callback_allowlist;
  // Where the HMAC-SHA256 signing secret comes from: an env var or a file, exactly one when the
  // allowlist is set. The value is never read into the Config (the gateway reads it at start).
  std::string callback_secret_env;
  std::string callback_secret_file;
  int64_t callback_retry_s = 86'400;  // a delivery is retried for this long after its first attempt
  int callback_backoff_ms = 1000;     // the first retry's delay, doubling up to callback_max_backoff_ms
  int callback_max_backoff_ms = 300'000;
  int callback_timeout_ms = 5000;  // one delivery attempt, connect to response
};

// http[s]://host[:port][/path] (no credentials, query or fragment; the port defaults to 80/443):
// the address, the path (no trailing '/') and whether it is https. False with `why` otherwise.
bool ParseHttpUrl(const std::string& url, HostPort& address, std::string& path, bool& tls, std::string& why);

// [tools."<name>"] (design §5, §13).
struct ToolConfig {
  std::string action_type;           // empty: not classified by config
  std::string connector_id;          // empty: the part of the name before the first '.'
  std::string method = "POST";       // GET | POST | PUT | PATCH | DELETE
  std::string path;                  // below the connector's base_url, with {field} placeholders; empty: /<tool>
  bool idempotent = false;           // safe to retry (default: GET, PUT, DELETE unless set false)
  std::string description;           // shown to agents (MCP tools/list)
  std::string input_schema;          // JSON Schema text (the §13 subset); empty: any JSON object
  std::optional<JsonSchema> schema;  // input_schema, compiled at load
  RequestShape shape;                // method and path, checked at load
};

// [mcp] (design §14, §17.7): the MCP front door on the public listener.
struct McpConfig {
  // Where clients reach the public listener, scheme://host[:port][/prefix] without a trailing '/'.
  // Empty: http://<server.listen> with the port actually bound (required when listen is a wildcard
  // address). Names the RFC 9728 resource and is the default allowed Origin.
  std::string public_url;
  // Origins (scheme://host[:port], lowercased, default port left out) a browser-borne request may
  // come from besides public_url's own.
  std::vector<std::string> allowed_origins;
  std::vector<std::string> authorization_servers;  // http(s) URLs for the RFC 9728 document
  // Env var holding the key that signs Mcp-Session-Id values. Empty: derived from the HS256 secret,
  // else a random key per process (then a session id is accepted only by the instance that issued it).
  std::string session_secret_env;
};

// [log] (design §17.12).
struct LogConfig {
  bool json = false;    // format = "json": every log line one JSON object; "text" (default): plain lines
  bool access = false;  // one line per HTTP request on either listener
};

struct Config {
  LogConfig log;
  ServerConfig server;
  AdminConfig admin;
  StoreConfig store;
  AuthConfig auth;
  int max_replays_per_execution = 5;
  int idempotency_retention_h = 24;
  int kill_switch_refresh_ms = 1000;  // S8 asks for 2 s fleet-wide
  SloEvaluationConfig slo;
  LedgerConfig ledger;
  McpConfig mcp;
  QueueConfig queue;
  std::map<std::string, ConnectorConfig> connectors;
  std::map<std::string, ToolConfig> tools;
  std::string source;  // the file it came from, or "built-in default"

  // The largest `max_clock_skew_s` of any connector (5, the default, with none): the skew claims that
  // belong to no one connector (bulk replay jobs, callback deliveries) allow before a take-over.
  int LargestClockSkewS() const;
  // The smallest (5 with none): what the fleet's clocks must agree within for every connector.
  int SmallestClockSkewS() const;
};

// Descriptors kept aside from connections: the store's files, logs, listeners, name lookups and
// over-cap refusals under way.
inline constexpr int64_t kReservedDescriptors = 256;
inline constexpr int kMinDerivedConnections = 16;
inline constexpr int kMaxDerivedConnections = 16384;

// How server.max_connections was settled at start.
struct ConnectionCapPlan {
  bool derived = false;            // the key was left out
  int64_t descriptors_needed = 0;  // 2 per public connection + admin.max_connections + kReservedDescriptors
};

// Settles server.max_connections against the process's descriptor limit `nofile` (the soft
// RLIMIT_NOFILE). Each public connection may hold a downstream connection as well, so it counts
// twice. Left out (0), the cap is derived: (nofile - kReservedDescriptors - admin.max_connections) / 2,
// clamped to 16..16384 (with a limit too low even for 16, `descriptors_needed` exceeds `nofile`:
// the caller warns). Set explicitly, a cap that needs more descriptors than `nofile` is refused:
// kInvalidArgument naming the key and the numbers.
absl::StatusOr<ConnectionCapPlan> ResolveConnectionCaps(uint64_t nofile, Config& config);

// Parses and validates a TOML config. Errors are kInvalidArgument and name the file and the key.
absl::StatusOr<Config> ParseConfig(const std::string& toml_text, const std::string& source_name);
absl::StatusOr<Config> LoadConfig(const std::string& path);
// The configuration `toolgate serve` uses without --config.
Config DefaultConfig();

}  // namespace toolgate
