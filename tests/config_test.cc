// The TOML config: the example documents every key and parses; defaults; errors name the key.

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "toolgate/config.h"

namespace toolgate {
namespace {

TEST(ConfigTest, TheExampleFileParsesWithEverySection) {
  auto c = LoadConfig(TOOLGATE_SOURCE_DIR "/examples/toolgate.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->connectors.size(), 2u);
  const ConnectorConfig& crm = c->connectors.at("crm");
  EXPECT_EQ(crm.address.host, "127.0.0.1");
  EXPECT_EQ(crm.address.port, 9101);
  EXPECT_EQ(crm.concurrency.lease_ttl_s, 35);  // timeout_ms/1000 + 30
  EXPECT_EQ(crm.breaker.cooldown_s, 20);
  EXPECT_EQ(c->tools.at("crm.send_email").action_type, "email.send");
  EXPECT_EQ(c->tools.at("crm.send_email").connector_id, "email");
  EXPECT_TRUE(c->store.sqlite_synchronous_full);
  // Design §13's keys, at their defaults or as the example shows them.
  EXPECT_FALSE(crm.tls);
  EXPECT_EQ(crm.retry.max_attempts, 1);
  EXPECT_EQ(crm.retry.backoff_ms, 100);
  EXPECT_EQ(crm.retry.max_backoff_ms, 2000);
  const ToolConfig& get_deal = c->tools.at("crm.get_deal");
  EXPECT_EQ(get_deal.method, "GET");
  EXPECT_EQ(get_deal.path, "/v2/deals/{deal_id}");
  EXPECT_TRUE(get_deal.idempotent);
  EXPECT_TRUE(get_deal.schema.has_value());
  // [alerts] and [log] as the example writes them: their defaults.
  EXPECT_EQ(c->slo.runbook_url, Config{}.slo.runbook_url);
  EXPECT_FALSE(c->log.json);
  EXPECT_FALSE(c->log.access);
}

TEST(ConfigTest, APathPlaceholderThatIsNotAPropertyOfTheInputSchemaIsRefusedNamingTheKey) {
  auto c = ParseConfig(R"(
[connectors.crm]
base_url = "http://127.0.0.1:9"
[tools."crm.get_deal"]
method = "GET"
path = "/v2/deals/{deal_id}/notes/{note_id}"
input_schema = '{"type":"object","required":["deal_id"],"properties":{"deal_id":{"type":"string"}}}'
)",
                       "placeholder.toml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("tools.\"crm.get_deal\".path uses {note_id}, which is not a property of input_schema"),
            std::string::npos)
      << msg;
  // The placeholder the schema does know is not named.
  EXPECT_EQ(msg.find("{deal_id}"), std::string::npos) << msg;
  // Without a schema any placeholder is accepted (the input's fields are not known at load).
  EXPECT_TRUE(ParseConfig(R"(
[connectors.crm]
base_url = "http://127.0.0.1:9"
[tools."crm.get_deal"]
method = "GET"
path = "/v2/deals/{deal_id}/notes/{note_id}"
)",
                          "placeholder.toml")
                  .ok());
}

TEST(ConfigTest, SloAndAlertSettingsAreReadAndCheckedKeyByKey) {
  auto ok = ParseConfig(R"(
[slo]
evaluate_interval_ms = 500
[alerts]
webhook_url = "http://127.0.0.1:9200/hooks/toolgate/"
[connectors.crm]
base_url = "http://127.0.0.1:1"
[connectors.crm.slo]
error_target = 0.999
min_events = 50
)",
                        "slo.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->slo.interval_ms, 500);
  EXPECT_EQ(ok->slo.webhook_address.ToString(), "127.0.0.1:9200");
  EXPECT_EQ(ok->slo.webhook_path, "/hooks/toolgate");
  EXPECT_EQ(ok->connectors.at("crm").slo.min_events, 50);
  EXPECT_EQ(ok->connectors.at("crm").slo.latency_target, 0.99);

  auto bad = ParseConfig(R"(
[slo]
evaluate_interval_ms = 60000
[alerts]
webhook_url = "https://alerts.example.com/x"
runbook_url = "https://wiki.example/run\u001b[2Jbook"
[connectors.crm]
base_url = "http://127.0.0.1:1"
[connectors.crm.slo]
error_target = 0.92
min_events = 0
)",
                         "bad.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* key : {"slo.evaluate_interval_ms", "alerts.webhook_url", "alerts.runbook_url",
                          "connectors.crm.slo.error_target", "connectors.crm.slo.min_events"}) {
    EXPECT_NE(msg.find(key), std::string::npos) << key << " not named in: " << msg;
  }
}

// Found by fuzz_config: an empty base_url was accepted, leaving a connector with no address.
TEST(ConfigTest, AnEmptyBaseUrlIsRefused) {
  auto c = ParseConfig("[connectors.crm]\nbase_url = \"\"\n", "empty.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("connectors.crm.base_url"), std::string::npos) << c.status();
}

// Found by fuzz_config: a huge float where an integer belongs was cast to an integer (undefined
// behaviour inside the TOML library) before its type was checked.
TEST(ConfigTest, AHugeFloatWhereAnIntegerBelongsIsRefused) {
  auto c = ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\ntimeout_ms = 4.19e306\n", "float.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("connectors.crm.timeout_ms must be an integer"), std::string::npos)
      << c.status();
}

TEST(ConfigTest, LedgerRetentionDefaultsAndLimits) {
  const std::string crm = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto defaults = ParseConfig(crm, "d.toml");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->ledger.retention_s, 30 * 86'400);
  EXPECT_EQ(defaults->ledger.deferred_retention_s, 86'400);
  EXPECT_EQ(defaults->store.sweep_interval_s, 60);

  auto short_one = ParseConfig("[ledger]\nretention_s = 3600\n" + crm, "s.toml");
  ASSERT_TRUE(short_one.ok()) << short_one.status();
  EXPECT_EQ(short_one->ledger.deferred_retention_s, 3600) << "the deferred default never outlives the retention";

  auto forever = ParseConfig("[ledger]\nretention_s = 0\ndeferred_retention_s = 0\n" + crm, "f.toml");
  ASSERT_TRUE(forever.ok()) << forever.status();
  EXPECT_EQ(forever->ledger.retention_s, 0);

  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"[ledger]\nretention_s = 30\n", "ledger.retention_s must be 0 (keep forever) or at least 60"},
           {"[ledger]\nretention_s = -1\n", "ledger.retention_s must be in 0.."},
           {"[ledger]\nretention_s = 600\ndeferred_retention_s = 700\n",
            "ledger.deferred_retention_s must not be longer than retention_s (600)"},
           {"[ledger]\nretention_s = 600\ndeferred_retention_s = 0\n",
            "ledger.deferred_retention_s must not be longer"},
           {"[ledger]\nretention_days = 3\n", "ledger.retention_days is not a known key"},
           {"[store]\nsweep_interval_s = 0\n", "store.sweep_interval_s must be in 1..3600"},
       }) {
    auto c = ParseConfig(text + crm, "bad.toml");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(std::string(c.status().message()).find(want), std::string::npos) << c.status();
  }
}

// The SQLite memory map is off unless asked for: the pages it maps count in the resident set, up to
// its size, so under varied keys the RSS grew to the map's size (256 MB when it was always on).
TEST(ConfigTest, TheSqliteMemoryMapIsOffByDefaultAndBounded) {
  const std::string crm = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto defaults = ParseConfig(crm, "d.toml");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->store.sqlite_mmap_mb, 0);
  auto mapped = ParseConfig("[store]\nsqlite_mmap_mb = 256\n" + crm, "m.toml");
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(mapped->store.sqlite_mmap_mb, 256);
  for (const char* bad :
       {"[store]\nsqlite_mmap_mb = -1\n", "[store]\nsqlite_mmap_mb = 65537\n", "[store]\nsqlite_mmap_mb = \"64\"\n"}) {
    auto c = ParseConfig(bad + crm, "bad.toml");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(std::string(c.status().message()).find("store.sqlite_mmap_mb"), std::string::npos) << c.status();
  }
}

// Claims no one connector owns (bulk replay jobs, callback deliveries) wait for the fleet's largest
// skew; the clock check against the store holds the hosts to the smallest.
TEST(ConfigTest, TheLargestAndSmallestClockSkewsAreThoseOfAnyConnector) {
  EXPECT_EQ(Config{}.LargestClockSkewS(), 5) << "the default, with no connector";
  EXPECT_EQ(Config{}.SmallestClockSkewS(), 5);
  auto two = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_clock_skew_s = 3\n"
      "[connectors.mail]\nbase_url = \"http://127.0.0.1:2\"\nmax_clock_skew_s = 40\n"
      "[connectors.erp]\nbase_url = \"http://127.0.0.1:3\"\nmax_clock_skew_s = 0\n",
      "two.toml");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->LargestClockSkewS(), 40);
  EXPECT_EQ(two->SmallestClockSkewS(), 0);
  auto wide = ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_clock_skew_s = 30\n", "wide.toml");
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->SmallestClockSkewS(), 30) << "not the default's 5";
}

TEST(ConfigTest, TheBuiltInDefaultIsValid) {
  Config c = DefaultConfig();
  EXPECT_EQ(c.server.listen.ToString(), "127.0.0.1:8080");
  EXPECT_EQ(c.admin.listen.ToString(), "127.0.0.1:9901");
  EXPECT_EQ(c.store.path, "./toolgate-data/toolgate.db");
  EXPECT_EQ(c.connectors.count("crm"), 1u);
}

TEST(ConfigTest, ErrorsNameEveryBadKey) {
  auto c = ParseConfig(R"(
[server]
listen = "nope"
[store]
backend = "postgres"
[connectors.crm]
base_url = "ftp://x"
timeout_ms = "slow"
on_store_error = "panic"
[connectors.crm.breaker]
cooldown_s = 0
[connectors."Bad Name"]
base_url = "http://127.0.0.1:1"
[tools."crm.x"]
connector = "missing"
[surprise]
)",
                       "test.toml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  for (const char* expected :
       {"server.listen must be host:port", "store.backend must be", "connectors.crm.base_url must start with http://",
        "connectors.crm.timeout_ms must be an integer", "connectors.crm.on_store_error must be",
        "connectors.crm.breaker.cooldown_s must be in 1..3600", "connectors.Bad Name",
        "tools.\"crm.x\".connector names a connector", "surprise is not a known key"}) {
    EXPECT_NE(msg.find(expected), std::string::npos) << "missing: " << expected << "\nin: " << msg;
  }
}

TEST(ConfigTest, ConnectionAndResponseLimitsHaveDefaultsAndRanges) {
  const std::string crm = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto defaults = ParseConfig(crm, "t.toml");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->server.max_connections, 0);  // derived at start
  EXPECT_EQ(defaults->server.io_threads, 0);       // one event loop per core
  EXPECT_EQ(defaults->server.write_timeout_ms, 10'000);
  EXPECT_EQ(defaults->server.max_response_buffer_bytes, int64_t{64} << 20);
  EXPECT_EQ(defaults->server.max_request_buffer_bytes, int64_t{64} << 20);
  EXPECT_EQ(defaults->admin.max_connections, 64);
  EXPECT_TRUE(defaults->admin.allowed_hosts.empty());
  EXPECT_EQ(defaults->admin.replay_job_lease_s, 30);

  auto set = ParseConfig(
      "[server]\nmax_connections = 500\nwrite_timeout_ms = 2000\nmax_response_buffer_bytes = 8388608\nio_threads = 3\n"
      "max_request_buffer_bytes = 4194304\n"
      "[admin]\nmax_connections = 8\nreplay_job_lease_s = 5\nallowed_hosts = [\"Admin.Example.internal\", "
      "\"10.0.0.7\", \"[::1]\", "
      "\"fd00::2\"]\n" +
          crm,
      "t.toml");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->server.max_connections, 500);
  EXPECT_EQ(set->server.io_threads, 3);
  EXPECT_EQ(set->server.write_timeout_ms, 2000);
  EXPECT_EQ(set->server.max_response_buffer_bytes, 8 << 20);
  EXPECT_EQ(set->server.max_request_buffer_bytes, 4 << 20);
  EXPECT_EQ(set->admin.max_connections, 8);
  EXPECT_EQ(set->admin.replay_job_lease_s, 5);
  EXPECT_EQ(set->admin.allowed_hosts,
            (std::vector<std::string>{"admin.example.internal", "10.0.0.7", "::1", "fd00::2"}));

  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"[server]\nmax_connections = 0\n", "server.max_connections must be in 1..1000000"},
           {"[server]\nio_threads = 65\n", "server.io_threads must be in 0..64"},
           {"[server]\nio_threads = -1\n", "server.io_threads must be in 0..64"},
           {"[server]\nwrite_timeout_ms = 10\n", "server.write_timeout_ms must be in 100..600000"},
           {"[server]\nmax_response_buffer_bytes = 1000\n", "server.max_response_buffer_bytes must be in 1048576.."},
           {"[server]\nmax_response_buffer_bytes = 2097152\n",
            "server.max_response_buffer_bytes (2097152) must be at least connectors.crm.max_response_bytes (4194304)"},
           {"[server]\nmax_request_buffer_bytes = 1000\n", "server.max_request_buffer_bytes must be in 1048576.."},
           {"[server]\nmax_body_bytes = 2097152\nmax_request_buffer_bytes = 1048576\n",
            "server.max_request_buffer_bytes (1048576) must be at least server.max_body_bytes (2097152)"},
           {"[admin]\nmax_connections = 0\n", "admin.max_connections must be in 1..4096"},
           {"[admin]\nreplay_job_lease_s = 1\n", "admin.replay_job_lease_s must be in 2..3600"},
           {"[admin]\nallowed_hosts = \"example.com\"\n", "admin.allowed_hosts must be an array of strings"},
           {"[admin]\nallowed_hosts = [\"ok\", 7]\n", "admin.allowed_hosts must be an array of strings"},
           {"[admin]\nallowed_hosts = [\"ok\", \"evil.com/x\"]\n",
            "admin.allowed_hosts [1] (\"evil.com/x\") must be a host name"},
           {"[admin]\nallowed_hosts = [\"\"]\n", "admin.allowed_hosts [0]"},
           {"[admin]\nallowed_hosts = [\"" + std::string(254, 'a') + "\"]\n", "admin.allowed_hosts [0]"},
           {"[admin]\nallowed_hosts = [\"a b\"]\n", "admin.allowed_hosts [0]"},
       }) {
    auto c = ParseConfig(text + crm, "bad.toml");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(std::string(c.status().message()).find(want), std::string::npos) << c.status();
  }
}

TEST(ConfigTest, ThePublicConnectionCapIsDerivedFromTheDescriptorLimitOrCheckedAgainstIt) {
  auto parse = [](const std::string& extra) {
    auto c = ParseConfig(extra + "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n", "t.toml");
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  };
  struct Derived {
    uint64_t nofile;
    int cap;
  };
  // (limit - 256 reserved - 64 admin) / 2, clamped to 16..16384.
  for (const auto& [nofile, cap] : {Derived{1024, 352}, Derived{4096, 1888}, Derived{65536, 16384},
                                    Derived{~uint64_t{0}, 16384}, Derived{256, 16}}) {
    Config c = parse("");
    auto plan = ResolveConnectionCaps(nofile, c);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_TRUE(plan->derived);
    EXPECT_EQ(c.server.max_connections, cap) << nofile;
    EXPECT_EQ(plan->descriptors_needed, 2 * cap + 64 + 256);
  }
  // A limit too low even for 16: started anyway (the caller warns), the need says so.
  Config tiny = parse("");
  EXPECT_GT(ResolveConnectionCaps(256, tiny)->descriptors_needed, 256);

  Config fits = parse("[server]\nmax_connections = 352\n");
  auto plan = ResolveConnectionCaps(1024, fits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->derived);
  EXPECT_EQ(fits.server.max_connections, 352);

  Config too_many = parse("[server]\nmax_connections = 353\n");
  auto refused = ResolveConnectionCaps(1024, too_many);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("server.max_connections = 353 needs about 1026 file descriptors"),
            std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("(RLIMIT_NOFILE) is 1024"), std::string::npos);
  // The admin cap counts too.
  Config big_admin = parse("[server]\nmax_connections = 300\n[admin]\nmax_connections = 200\n");
  EXPECT_FALSE(ResolveConnectionCaps(1024, big_admin).ok());
}

TEST(ConfigTest, LeaseAndProbeTimeoutMustOutliveTheCall) {
  auto c = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\ntimeout_ms = 10000\nlease_ttl_s = 10\n"
      "[connectors.crm.breaker]\nprobe_timeout_s = 5\n",
      "t.toml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("lease_ttl_s must be longer than timeout_ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("probe_timeout_s must be longer than timeout_ms"), std::string::npos) << msg;
  EXPECT_FALSE(ParseConfig("", "empty.toml").ok());  // a connector is required
  EXPECT_FALSE(ParseConfig("[connectors.crm\n", "broken.toml").ok());
  EXPECT_FALSE(ParseConfig("[connectors.crm]\nbase_url = \"ftp://secure\"\n", "ftp.toml").ok());
}

TEST(ConfigTest, HttpsConnectorsWithTlsAuthAndRetry) {
  const std::string dir = ::testing::TempDir();
  const std::string ca = dir + "/config_test_ca.pem", secret = dir + "/config_test_secret";
  std::ofstream(ca) << "not parsed at load";
  std::ofstream(secret) << "s3cr3t\n";
  setenv("TOOLGATE_CONFIG_TEST_TOKEN", "value-from-env", 1);
  auto c = ParseConfig(absl::StrCat(R"(
[connectors.crm]
base_url = "https://crm.example.com/api/"
[connectors.crm.tls]
ca_file = ")",
                                    ca, R"("
[connectors.crm.auth]
type = "oauth2_client_credentials"
token_url = "https://login.example.com/oauth2/token"
client_id = "toolgate"
client_secret_file = ")",
                                    secret, R"("
scope = "deals.write"
[connectors.crm.retry]
max_attempts = 3
backoff_ms = 50
[connectors.billing]
base_url = "http://127.0.0.1:9300"
[connectors.billing.auth]
type = "header"
name = "X-Api-Key"
value_env = "TOOLGATE_CONFIG_TEST_TOKEN"
[tools."crm.get_deal"]
method = "GET"
path = "/v2/deals/{deal_id}"
description = "Read one deal"
input_schema = '{"type":"object","required":["deal_id"],"properties":{"deal_id":{"type":"string"}}}'
[tools."crm.create_deal"]
)"),
                       "tls.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  const ConnectorConfig& crm = c->connectors.at("crm");
  EXPECT_TRUE(crm.tls);
  EXPECT_EQ(crm.address.host, "crm.example.com");
  EXPECT_EQ(crm.address.port, 443);
  EXPECT_EQ(crm.path_prefix, "/api");
  EXPECT_EQ(crm.tls_options.ca_file, ca);
  EXPECT_EQ(crm.auth.type, CredentialOptions::Type::kOAuth2ClientCredentials);
  EXPECT_TRUE(crm.auth.token_tls);
  EXPECT_EQ(crm.auth.token_address.ToString(), "login.example.com:443");
  EXPECT_EQ(crm.auth.token_target, "/oauth2/token");
  EXPECT_EQ(crm.auth.secret_file, secret);
  EXPECT_EQ(crm.retry.max_attempts, 3);
  EXPECT_EQ(crm.retry.backoff_ms, 50);
  EXPECT_EQ(crm.retry.max_backoff_ms, 2000);
  EXPECT_EQ(c->connectors.at("billing").auth.header_name, "X-Api-Key");
  EXPECT_FALSE(c->connectors.at("billing").tls);
  EXPECT_EQ(c->connectors.at("billing").retry.max_attempts, 1);
  const ToolConfig& get = c->tools.at("crm.get_deal");
  EXPECT_EQ(get.method, "GET");
  EXPECT_TRUE(get.idempotent);  // GET, PUT and DELETE are idempotent unless set false
  EXPECT_EQ(get.description, "Read one deal");
  EXPECT_FALSE(c->tools.at("crm.create_deal").idempotent);
  EXPECT_EQ(c->tools.at("crm.create_deal").method, "POST");
  // The Config holds where secrets come from, never the secrets.
  EXPECT_EQ(crm.auth.secret_env, "");
}

TEST(ConfigTest, BadTlsAuthAndRetryKeysAreNamed) {
  unsetenv("TOOLGATE_CONFIG_TEST_UNSET");
  auto c = ParseConfig(R"(
[connectors.crm]
base_url = "https://crm.example.com"
[connectors.crm.tls]
ca_file = "/nonexistent/ca.pem"
client_cert_file = "/nonexistent/client.pem"
[connectors.crm.auth]
type = "oauth2_client_credentials"
token_url = "http://login.example.com/token"
client_secret_env = "TOOLGATE_CONFIG_TEST_UNSET"
[connectors.crm.retry]
max_attempts = 0
[connectors.plain]
base_url = "http://127.0.0.1:9"
[connectors.plain.tls]
ca_file = "/nonexistent/ca.pem"
[connectors.plain.auth]
type = "basic"
[tools."crm.x"]
method = "FETCH"
path = "v2/x"
input_schema = "not json"
)",
                       "bad.toml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  for (const char* want : {
           "connectors.crm.tls.ca_file names a file that cannot be read",
           "connectors.crm.tls.client_cert_file names a file that cannot be read",
           "connectors.crm.tls.client_cert_file and client_key_file go together",
           "connectors.crm.auth.token_url must be https://",
           "connectors.crm.auth.client_id is required",
           "connectors.crm.auth.client_secret_env names the environment variable TOOLGATE_CONFIG_TEST_UNSET, which is "
           "not set",
           "connectors.crm.retry.max_attempts must be in 1..10",
           "connectors.plain.tls applies to https:// connectors only",
           "connectors.plain.auth.type must be",
           "tools.\"crm.x\".method must be GET, POST, PUT, PATCH or DELETE",
           "tools.\"crm.x\".path must start with /",
           "tools.\"crm.x\".input_schema must be a JSON object",
       }) {
    EXPECT_NE(msg.find(want), std::string::npos) << "missing: " << want << "\nin: " << msg;
  }
  // One problem a line, each starting with its key, and no key ends in a stray dot.
  std::istringstream lines(msg);
  std::string header;
  std::getline(lines, header);
  EXPECT_EQ(header, "bad.toml: invalid configuration:");
  for (std::string line; std::getline(lines, line);) {
    ASSERT_TRUE(line.starts_with("  ")) << line;
    const std::string key = line.substr(2, line.find(' ', 2) - 2);
    EXPECT_FALSE(key.ends_with('.')) << line;
  }
  // A loopback token endpoint may be plain http (a test or a sidecar).
  setenv("TOOLGATE_CONFIG_TEST_TOKEN", "x", 1);
  EXPECT_TRUE(ParseConfig(R"(
[connectors.crm]
base_url = "http://127.0.0.1:9"
[connectors.crm.auth]
type = "oauth2_client_credentials"
token_url = "http://127.0.0.1:9/token"
client_id = "toolgate"
client_secret_env = "TOOLGATE_CONFIG_TEST_TOKEN"
)",
                          "ok.toml")
                  .ok());
}

// Credentials in a URL would be shown wherever the URL is: refused, without quoting them.
TEST(ConfigTest, UrlsWithUserInformationAreRefusedWithoutQuotingThem) {
  setenv("TOOLGATE_CONFIG_TEST_TOKEN", "x", 1);
  auto c = ParseConfig(R"(
[connectors.crm]
base_url = "https://user:hunter2@crm.example.com:443/api"
[connectors.crm.auth]
type = "oauth2_client_credentials"
token_url = "https://id:swordfish@login.example.com/token"
client_id = "toolgate"
client_secret_env = "TOOLGATE_CONFIG_TEST_TOKEN"
)",
                       "userinfo.toml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("connectors.crm.base_url must not hold credentials"), std::string::npos) << msg;
  EXPECT_NE(msg.find("connectors.crm.auth.token_url must not hold credentials"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("hunter2"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("swordfish"), std::string::npos) << msg;
}

TEST(ConfigTest, ToolNames) {
  EXPECT_TRUE(IsValidToolName("crm.update_opportunity"));
  EXPECT_TRUE(IsValidToolName("a-b_c.9"));
  EXPECT_FALSE(IsValidToolName(""));
  // DESIGN §17.2: case-sensitive, uppercase allowed (MCP tool names), up to 200 characters.
  EXPECT_TRUE(IsValidToolName("CRM.x"));
  EXPECT_TRUE(IsValidToolName(std::string(200, 'a')));
  EXPECT_FALSE(IsValidToolName(std::string(201, 'a')));
  EXPECT_FALSE(IsValidToolName("crm/x"));
  EXPECT_FALSE(IsValidToolName("crm x"));
  EXPECT_FALSE(IsValidToolName("crm\nx"));
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

TEST(ConfigTest, DynamoDbBackendCapsTheBodyAndChecksItsKeys) {
  const std::string connector = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto c = ParseConfig(
      "[store]\nbackend = \"dynamodb\"\ntable = \"tg\"\nendpoint = \"http://127.0.0.1:8000\"\n" + connector, "d.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->store.table, "tg");
  EXPECT_EQ(c->server.max_body_bytes, kDynamoDbMaxBodyBytes) << "the body limit defaults to what an item can hold";
  auto big = ParseConfig("[server]\nmax_body_bytes = 1048576\n[store]\nbackend = \"dynamodb\"\n" + connector, "b.toml");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(std::string(big.status().message()).find("server.max_body_bytes"), std::string::npos);
  auto bad =
      ParseConfig("[store]\nbackend = \"dynamodb\"\nendpoint = \"ftp://x\"\ntable = \"\"\n" + connector, "e.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  EXPECT_NE(msg.find("store.endpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("store.table"), std::string::npos) << msg;
  auto shards = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 4\n"
      "concurrency_shards = 8\n",
      "s.toml");
  ASSERT_FALSE(shards.ok());
  EXPECT_NE(std::string(shards.status().message()).find("concurrency_shards"), std::string::npos);
  auto ok_shards = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 64\n"
      "concurrency_shards = 8\n",
      "s.toml");
  ASSERT_TRUE(ok_shards.ok()) << ok_shards.status();
  EXPECT_EQ(ok_shards->connectors.at("crm").concurrency.shards, 8);
  EXPECT_EQ(ok_shards->connectors.at("crm").concurrency.max_in_flight_per_tenant, 0) << "no share unless set";
  auto share = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 64\nmax_in_flight_per_tenant = 8\n",
      "t.toml");
  ASSERT_TRUE(share.ok()) << share.status();
  EXPECT_EQ(share->connectors.at("crm").concurrency.max_in_flight_per_tenant, 8);
  for (const char* bad_share : {"65", "-1", "\"8\""}) {
    auto refused = ParseConfig(std::string("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 64\n"
                                           "max_in_flight_per_tenant = ") +
                                   bad_share + "\n",
                               "t.toml");
    ASSERT_FALSE(refused.ok()) << bad_share;
    EXPECT_NE(std::string(refused.status().message()).find("max_in_flight_per_tenant"), std::string::npos)
        << refused.status();
  }
}

}  // namespace
}  // namespace toolgate

#include "gmock/gmock.h"  // matchers for the [mcp] block below

namespace toolgate {
namespace {

TEST(ConfigTest, McpSectionDefaultsAndIsCheckedKeyByKey) {
  const std::string connector = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto plain = ParseConfig(connector, "p.toml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->mcp.public_url, "") << "empty: derived from server.listen and the bound port";
  EXPECT_TRUE(plain->mcp.allowed_origins.empty());

  auto set = ParseConfig(
      "[mcp]\npublic_url = \"https://tools.example.com/gw/\"\n"
      "allowed_origins = [\"https://App.Example.com:443\", \"http://localhost:3000\"]\n"
      "authorization_servers = [\"https://auth.example.com\"]\n" +
          connector,
      "s.toml");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->mcp.public_url, "https://tools.example.com/gw");
  EXPECT_THAT(set->mcp.allowed_origins, ::testing::ElementsAre("https://app.example.com", "http://localhost:3000"));
  EXPECT_THAT(set->mcp.authorization_servers, ::testing::ElementsAre("https://auth.example.com"));

  // A wildcard listener cannot name its own URL.
  auto wildcard = ParseConfig("[server]\nlisten = \"0.0.0.0:8080\"\n" + connector, "w.toml");
  ASSERT_FALSE(wildcard.ok());
  EXPECT_THAT(std::string(wildcard.status().message()), ::testing::HasSubstr("mcp.public_url"));
  EXPECT_TRUE(
      ParseConfig("[server]\nlisten = \"0.0.0.0:8080\"\n[mcp]\npublic_url = \"https://gw.example.com\"\n" + connector,
                  "w2.toml")
          .ok());

  auto bad = ParseConfig(
      "[mcp]\npublic_url = \"ftp://x\"\nallowed_origins = [\"https://a.example.com/path\"]\n"
      "authorization_servers = [\"not a url\"]\nsession_secret_env = \"TOOLGATE_TEST_UNSET_MCP_KEY\"\n"
      "sesion_ttl = 5\n" +
          connector,
      "b.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* key : {"mcp.public_url", "mcp.allowed_origins [0]", "mcp.authorization_servers [0]",
                          "mcp.session_secret_env", "mcp.sesion_ttl is not a known key"}) {
    EXPECT_THAT(msg, ::testing::HasSubstr(key)) << msg;
  }
  setenv("TOOLGATE_TEST_MCP_KEY", "0123456789abcdef0123456789abcdef", 1);
  auto keyed = ParseConfig("[mcp]\nsession_secret_env = \"TOOLGATE_TEST_MCP_KEY\"\n" + connector, "k.toml");
  ASSERT_TRUE(keyed.ok()) << keyed.status();
  EXPECT_EQ(keyed->mcp.session_secret_env, "TOOLGATE_TEST_MCP_KEY");
}

TEST(ConfigTest, McpConnectorKindsAndTheirKeys) {
  auto ok = ParseConfig(R"(
[connectors.everything]
kind = "mcp"
url = "https://mcp.example.com/mcp"
tools_ttl_s = 60
timeout_ms = 2000
[connectors.local]
kind = "mcp_stdio"
command = ["node", "server.js", "stdio"]
tool_prefix = ""
[connectors.local.env]
LOG_LEVEL = "debug"
[connectors.crm]
base_url = "http://127.0.0.1:1"
)",
                        "mcp.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  const ConnectorConfig& http = ok->connectors.at("everything");
  EXPECT_EQ(http.kind, ConnectorKind::kMcp);
  EXPECT_TRUE(http.tls);
  EXPECT_EQ(http.address.host, "mcp.example.com");
  EXPECT_EQ(http.address.port, 443);
  EXPECT_EQ(http.path_prefix, "/mcp");
  EXPECT_EQ(http.tool_prefix, "everything.") << "default: <id>.";
  EXPECT_EQ(http.tools_ttl_s, 60);
  const ConnectorConfig& stdio = ok->connectors.at("local");
  EXPECT_EQ(stdio.kind, ConnectorKind::kMcpStdio);
  EXPECT_THAT(stdio.command, ::testing::ElementsAre("node", "server.js", "stdio"));
  EXPECT_EQ(stdio.tool_prefix, "");
  EXPECT_EQ(stdio.tools_ttl_s, 300);
  EXPECT_EQ(stdio.env.at("LOG_LEVEL"), "debug");
  EXPECT_EQ(ok->connectors.at("crm").kind, ConnectorKind::kHttp);

  auto bad = ParseConfig(R"(
[connectors.a]
kind = "grpc"
base_url = "http://127.0.0.1:1"
[connectors.b]
kind = "mcp"
base_url = "http://127.0.0.1:1"
tool_prefix = "bad prefix"
tools_ttl_s = 0
[connectors.c]
kind = "mcp_stdio"
command = []
url = "http://127.0.0.1:1/mcp"
[connectors.c.env]
"1BAD" = "x"
[connectors.d]
base_url = "http://127.0.0.1:1"
command = ["x"]
[connectors.e]
kind = "mcp"
url = "ftp://x"
health_path = "/h"
[connectors.f]
kind = "mcp_stdio"
)",
                         "bad.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* key :
       {"connectors.a.kind must be", "connectors.b.base_url applies to kind = \"http\"", "connectors.b.url is required",
        "connectors.b.tool_prefix must match", "connectors.b.tools_ttl_s must be in",
        "connectors.c.command must name a program", "connectors.c.url applies to kind = \"mcp\"",
        "connectors.c.env names \"1BAD\"", "connectors.d.command applies to kind", "connectors.e.url must start with",
        "connectors.e.health_path applies to kind", "connectors.f.command is required"}) {
    EXPECT_THAT(msg, ::testing::HasSubstr(key)) << msg;
  }
}

}  // namespace
// [queue] and [connectors.X.queue] (design §15): defaults, and errors that name their keys.
TEST(ConfigTest, QueueKeysHaveDefaultsAndBadValuesAreNamed) {
  const std::string connector =
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 4\ntimeout_ms = 5000\n";
  auto ok = ParseConfig(connector, "q.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->queue.default_deadline_s, 3600);
  EXPECT_EQ(ok->queue.max_per_tenant, 10000);
  EXPECT_EQ(ok->connectors.at("crm").queue_workers, 4) << "default: the connector's max_in_flight";
  auto set =
      ParseConfig("[queue]\ndefault_deadline_s = 60\nmax_per_tenant = 5\nclaim_lease_s = 40\npoll_interval_ms = 250\n" +
                      connector + "[connectors.crm.queue]\nworkers = 2\n",
                  "q2.toml");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->queue.claim_lease_s, 40);
  EXPECT_EQ(set->connectors.at("crm").queue_workers, 2);
  auto bad = ParseConfig(
      "[queue]\ndefault_deadline_s = 0\nmax_per_tenant = -1\nclaim_lease_s = 3\npoll_interval_ms = 1\n"
      "callback = 1\n" +
          connector + "[connectors.crm.queue]\nworkers = 0\n",
      "q3.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* key :
       {"queue.default_deadline_s", "queue.max_per_tenant", "queue.claim_lease_s must be longer than",
        "queue.poll_interval_ms", "queue.callback is not a known key", "connectors.crm.queue.workers"}) {
    EXPECT_THAT(msg, ::testing::HasSubstr(key)) << msg;
  }
}

// [queue] callback keys (design §15): the allowlist's prefixes are http(s) URLs, a secret source is
// required with them (and must exist), and the retry keys have bounds.
TEST(ConfigTest, CallbackKeysNeedHttpPrefixesAndOneSecretSource) {
  const std::string connector = "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n";
  auto none = ParseConfig(connector, "c0.toml");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->queue.callback_allowlist.empty()) << "callbacks are off by default";
  EXPECT_EQ(none->queue.callback_retry_s, 86400);
  setenv("TOOLGATE_CONFIG_TEST_CB_SECRET", "s3cret", 1);
  auto ok = ParseConfig(
      "[queue]\ncallback_allowlist = [\"https://hooks.example.com/a/\", \"http://10.0.0.7:8080\"]\n"
      "callback_secret_env = \"TOOLGATE_CONFIG_TEST_CB_SECRET\"\ncallback_retry_s = 600\n" +
          connector,
      "c1.toml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->queue.callback_allowlist.size(), 2u);
  EXPECT_EQ(ok->queue.callback_retry_s, 600);
  auto bad = ParseConfig(
      "[queue]\ncallback_allowlist = [\"ftp://hooks.example.com\"]\ncallback_retry_s = 0\n" + connector, "c2.toml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  for (const char* key : {"queue.callback_allowlist must start with http:// or https://",
                          "queue.callback_secret_env or callback_secret_file is required", "queue.callback_retry_s"}) {
    EXPECT_THAT(msg, ::testing::HasSubstr(key)) << msg;
  }
  auto unset = ParseConfig(
      "[queue]\ncallback_allowlist = [\"https://h.example.com\"]\n"
      "callback_secret_env = \"TOOLGATE_CONFIG_TEST_CB_UNSET\"\n" +
          connector,
      "c3.toml");
  ASSERT_FALSE(unset.ok());
  EXPECT_THAT(std::string(unset.status().message()),
              ::testing::HasSubstr("TOOLGATE_CONFIG_TEST_CB_UNSET, which is not set"));
}

}  // namespace toolgate
