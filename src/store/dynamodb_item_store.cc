#include "toolgate/store/dynamodb_item_store.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <random>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "item_ops.h"
#include "toolgate/net/http_client.h"
#include "toolgate/net/tls_client_context.h"
#include "toolgate/status_macros.h"
#include "toolgate/store/dynamodb_expressions.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate::store {

using nlohmann::json;

namespace {

constexpr size_t kMaxItemBytes = 400 * 1024;            // DynamoDB's item size limit
constexpr size_t kMaxResponseBytes = 16 * 1024 * 1024;  // a 1 MB Query page plus JSON overhead
// How long a kept-alive connection may sit idle before it is closed instead of reused.
constexpr std::chrono::seconds kMaxIdle(30);

struct Endpoint {
  bool tls = false;
  HostPort address;         // what to connect to (an IPv6 address without its brackets)
  std::string host_header;  // host[:port] as in the URL, as signed
};

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url) {
  Endpoint e;
  std::string_view rest;
  if (absl::StartsWith(absl::string_view(url.data(), url.size()), "http://")) {
    rest = url.substr(7);
  } else if (absl::StartsWith(absl::string_view(url.data(), url.size()), "https://")) {
    e.tls = true;
    rest = url.substr(8);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("store.endpoint '", std::string(url), "' must start with http:// or https://"));
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("store.endpoint '", std::string(url), "' must be scheme://host[:port]"));
  }
  e.host_header = std::string(rest);
  std::string_view host = rest;
  std::string_view port;      // empty: the scheme's
  if (rest.front() == '[') {  // [IPv6 address][:port]
    const size_t close = rest.find(']');
    const std::string_view after = close == std::string_view::npos ? "?" : rest.substr(close + 1);
    host = after.empty() || after.front() == ':' ? rest.substr(1, close - 1) : std::string_view();
    if (!after.empty()) port = after.substr(1);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  e.address.host = std::string(host);
  e.address.port = e.tls ? 443 : 80;
  const bool bad_port =
      rest.back() == ':' ||
      (!port.empty() && (!std::all_of(port.begin(), port.end(), ::isdigit) ||
                         !absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &e.address.port) ||
                         e.address.port < 1 || e.address.port > 65535));
  if (e.address.host.empty() || bad_port) {
    return absl::InvalidArgumentError(absl::StrCat("store.endpoint '", std::string(url), "' has a bad host or port"));
  }
  return e;
}

// The result of one HTTP exchange, as the retry policy of the class comment sees it.
struct Exchange {
  // kConnect: DynamoDB cannot have seen the request (no connection, or TLS refused before it was
  // sent): safe to retry any request. kAfterSend: the request may have reached DynamoDB and no
  // complete answer came back (dropped, timed out, too large): it may have been applied.
  enum class Failure { kNone, kConnect, kAfterSend };
  Failure failure = Failure::kNone;
  std::string error;  // transport error text
  int status = 0;
  std::string body;
  std::optional<int64_t> date_s;  // the answer's `Date`, when it had one that parses
};

// The net client's account of a call, in those terms. A pooled connection DynamoDB had closed
// while it was idle never surfaces here: the client sends the request again once on a new
// connection when nothing of an answer came back (a closed idle connection reads end-of-stream
// before the request could reach DynamoDB's HTTP layer).
Exchange FromClientResult(net::ClientResult r) {
  Exchange ex;
  if (r.ok) {
    ex.status = r.status;
    ex.body = std::move(r.body);
    for (const auto& [name, value] : r.headers) {
      if (name == "date") ex.date_s = DynamoDbItemStore::ParseHttpDate(value);
    }
    return ex;
  }
  // Not connected, refused by TLS, or out of time before the handshake ended: `sent` is false.
  ex.failure = r.sent ? Exchange::Failure::kAfterSend : Exchange::Failure::kConnect;
  ex.error = std::move(r.error);
  return ex;
}

// DynamoDB's error type without its namespace: "com.amazonaws.dynamodb.v20120810#X" -> "X".
std::string ErrorType(const std::string& body) {
  json j = ParseJsonWithin(body);
  std::string type;
  if (j.is_object() && j.contains("__type") && j["__type"].is_string()) type = j["__type"].get<std::string>();
  const size_t hash = type.rfind('#');
  if (hash != std::string::npos) type = type.substr(hash + 1);
  return type.empty() ? "UnknownError" : type;
}

std::string ErrorMessage(const std::string& body) {
  json j = ParseJsonWithin(body);
  for (const char* field : {"message", "Message"}) {
    if (j.is_object() && j.contains(field) && j[field].is_string()) return j[field].get<std::string>().substr(0, 300);
  }
  return "";
}

bool IsThrottle(std::string_view type) {
  return type == "ProvisionedThroughputExceededException" || type == "ThrottlingException" ||
         type == "RequestLimitExceeded" || type == "LimitExceededException";
}

// DynamoDB's size of a value in wire form ("Item sizes and formats"): strings and binaries by their
// bytes, a number about 1 byte per 2 significant digits plus 1, a boolean or null 1, a map or list
// 3 bytes plus 1 per element plus the elements (and, in a map, their names).
size_t WireValueSize(const json& v) {
  if (!v.is_object() || v.size() != 1) return 0;
  const auto it = v.begin();
  const std::string& type = it.key();
  const json& val = it.value();
  if (type == "S" && val.is_string()) return val.get_ref<const std::string&>().size();
  if (type == "B" && val.is_string()) return val.get_ref<const std::string&>().size() * 3 / 4;
  if (type == "N" && val.is_string()) {
    std::string digits;
    for (const char c : val.get_ref<const std::string&>()) {
      if (c == 'e' || c == 'E') break;
      if (c >= '0' && c <= '9') digits.push_back(c);
    }
    const size_t first = digits.find_first_not_of('0');
    const size_t last = digits.find_last_not_of('0');
    const size_t significant = first == std::string::npos ? 1 : last - first + 1;
    return (significant + 1) / 2 + 1;
  }
  if (type == "BOOL" || type == "NULL") return 1;
  if ((type == "SS" || type == "NS" || type == "BS") && val.is_array()) {
    size_t n = 0;
    for (const json& e : val) n += WireValueSize(json{{type.substr(0, 1), e}});
    return n;
  }
  if (type == "L" && val.is_array()) {
    size_t n = 3;
    for (const json& e : val) n += 1 + WireValueSize(e);
    return n;
  }
  if (type == "M" && val.is_object()) {
    size_t n = 3;
    for (auto e = val.begin(); e != val.end(); ++e) n += e.key().size() + 1 + WireValueSize(e.value());
    return n;
  }
  return 0;
}

// An item's size by the same rule: its attribute names and values, keys included.
size_t WireItemSize(const json& item) {
  size_t n = 0;
  if (!item.is_object()) return 0;
  for (auto e = item.begin(); e != item.end(); ++e) n += e.key().size() + WireValueSize(e.value());
  return n;
}

}  // namespace

struct DynamoDbItemStore::Impl {
  Options options;
  const Clock& clock;
  Endpoint endpoint;
  std::shared_ptr<const net::TlsClientContext> tls;  // https endpoints only
  // Clients not in use. A thread takes one for a request (or makes one when none is free) and gives
  // it back, with the connection it kept alive, afterwards: a client runs one call at a time, and
  // its idle connection belongs to its own io_context.
  absl::Mutex mu;
  std::vector<std::unique_ptr<net::BlockingHttpClient>> idle ABSL_GUARDED_BY(mu);
  std::atomic<double> write_units{0};
  // The latest clock reading (clock_reading); measured_at 0: none yet.
  std::atomic<int64_t> clock_ahead_ms{0};
  std::atomic<int64_t> clock_measured_at_ms{0};

  Impl(Options o, const Clock& c, Endpoint e) : options(std::move(o)), clock(c), endpoint(std::move(e)) {}

  std::unique_ptr<net::BlockingHttpClient> Take() {
    {
      absl::MutexLock lock(&mu);
      if (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    return std::make_unique<net::BlockingHttpClient>(1, kMaxIdle);
  }
  // Beyond max_idle_connections, the client (and its connection) is dropped.
  void GiveBack(std::unique_ptr<net::BlockingHttpClient> c) {
    absl::MutexLock lock(&mu);
    if (static_cast<int>(idle.size()) < options.max_idle_connections) idle.push_back(std::move(c));
  }

  // One signed HTTP exchange on a kept-alive connection (or a new one).
  Exchange Post(std::string_view target, const std::string& body) {
    const std::string amz_date = aws::AmzDate(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    const std::string full_target = absl::StrCat("DynamoDB_20120810.", std::string(target));
    aws::SignableRequest sr{"POST",
                            "/",
                            "",
                            {{"host", endpoint.host_header},
                             {"content-type", "application/x-amz-json-1.0"},
                             {"x-amz-date", amz_date},
                             {"x-amz-target", full_target}},
                            body};
    if (!options.credentials.session_token.empty()) {
      sr.headers.emplace_back("x-amz-security-token", options.credentials.session_token);
    }
    absl::StatusOr<aws::Signature> sig = aws::SignV4(sr, options.credentials, {options.region, "dynamodb"});
    if (!sig.ok()) {
      Exchange failed;
      failed.failure = Exchange::Failure::kConnect;
      failed.error = std::string(sig.status().message());
      return failed;
    }
    net::ClientRequest req;
    req.address = endpoint.address;
    req.method = "POST";
    req.target = "/";
    req.headers = std::move(sr.headers);  // the signed Host among them
    req.headers.emplace_back("authorization", sig->authorization);
    req.body = body;
    req.timeout = std::chrono::milliseconds(options.request_timeout_ms);
    req.max_response_bytes = kMaxResponseBytes;
    req.tls = tls;
    // Every write is conditional: sent again after it applied, it is refused by its own condition, not
    // applied twice. The adapter's own retries (retry_budget_ms) rest on the same.
    req.idempotent = true;

    std::unique_ptr<net::BlockingHttpClient> client = Take();
    const int64_t sent_ms = clock.now_epoch_ms();
    net::ClientResult result = client->Call(std::move(req));
    GiveBack(std::move(client));
    Exchange ex = FromClientResult(std::move(result));
    if (ex.date_s) {
      const int64_t answered_ms = clock.now_epoch_ms();
      clock_ahead_ms.store(ClockAheadMs(*ex.date_s, sent_ms, answered_ms), std::memory_order_relaxed);
      clock_measured_at_ms.store(answered_ms, std::memory_order_relaxed);
    }
    return ex;
  }

  // One DynamoDB API call with the retry policy of the class comment. Returns the response body of a
  // 200, or a status naming the operation and the AWS error type. `condition_failed` (when given) is
  // set instead of an error for ConditionalCheckFailedException.
  absl::StatusOr<json> Call(std::string_view op, const json& request, bool is_write, bool* condition_failed = nullptr) {
    const std::string body = request.dump();
    const auto start = std::chrono::steady_clock::now();
    const auto budget = std::chrono::milliseconds(options.retry_budget_ms);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::chrono::milliseconds backoff(25);
    std::string last;
    for (int attempt = 1;; ++attempt) {
      Exchange ex = Post(op, body);
      std::string reason;  // why a retry is allowed; empty: answer now
      absl::StatusCode code = absl::StatusCode::kUnavailable;
      if (ex.failure == Exchange::Failure::kConnect) {
        last = absl::StrCat("DynamoDB ", std::string(op), ": connection failed: ", ex.error);
        reason = "connection";
      } else if (ex.failure == Exchange::Failure::kAfterSend) {
        last = absl::StrCat("DynamoDB ", std::string(op), ": ", ex.error,
                            is_write ? " (the write's outcome is unknown)" : "");
        if (!is_write) reason = "connection";
      } else if (ex.status == 200) {
        json j = ParseJsonWithin(ex.body);
        if (j.is_discarded() || !j.is_object()) {
          return absl::DataLossError(absl::StrCat("DynamoDB ", std::string(op), ": response is not a JSON object"));
        }
        return j;
      } else {
        const std::string type = ErrorType(ex.body);
        const std::string message = ErrorMessage(ex.body);
        last = absl::StrCat("DynamoDB ", std::string(op), ": ", type, " (HTTP ", ex.status, ")",
                            message.empty() ? "" : ": ", message);
        if (type == "ConditionalCheckFailedException" && condition_failed != nullptr) {
          *condition_failed = true;
          return json::object();
        }
        if (IsThrottle(type)) {
          reason = "throttled";
        } else if (ex.status == 503 || (ex.status >= 500 && !is_write)) {
          reason = "server_error";
        } else if (ex.status >= 500) {
          absl::StrAppend(&last, is_write ? " (the write's outcome is unknown)" : "");
        } else if (type == "ValidationException" || type == "SerializationException") {
          code = absl::StatusCode::kInvalidArgument;
        } else if (type == "ResourceNotFoundException") {
          code = absl::StatusCode::kFailedPrecondition;
          absl::StrAppend(&last, " — does table '", options.table, "' exist? run `toolgate store init`");
        } else if (type == "UnrecognizedClientException" || type == "InvalidSignatureException" ||
                   type == "AccessDeniedException" || type == "MissingAuthenticationTokenException" ||
                   type == "ExpiredTokenException") {
          code = absl::StatusCode::kPermissionDenied;
        } else {
          code = absl::StatusCode::kInternal;
        }
      }
      if (reason.empty()) return absl::Status(code, last);
      const auto elapsed = std::chrono::steady_clock::now() - start;
      std::uniform_int_distribution<int64_t> jitter(0, backoff.count());
      const auto sleep = std::chrono::milliseconds(jitter(rng));
      if (attempt >= options.max_attempts || elapsed + sleep >= budget) {
        return absl::UnavailableError(
            absl::StrCat(last, " (gave up after ", attempt, " attempts in ",
                         std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), " ms)"));
      }
      if (options.on_retry) options.on_retry(op, reason);
      std::this_thread::sleep_for(sleep);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  }

  json Key(const ItemKey& key) const {
    return json{{kPartitionKeyName(), {{"S", key.pk}}}, {kSortKeyName(), {{"S", key.sk}}}};
  }
  static std::string kPartitionKeyName() { return std::string(dynamodb::kPartitionKey); }
  static std::string kSortKeyName() { return std::string(dynamodb::kSortKey); }

  // Adds ConditionExpression (when there is a condition) and the placeholders to `request`.
  static absl::Status AddCondition(json& request, const Condition& condition, dynamodb::ExpressionBuilder& b) {
    ASSIGN_OR_RETURN(std::string expr, dynamodb::RenderCondition(condition, b));
    if (!expr.empty()) request["ConditionExpression"] = expr;
    return absl::OkStatus();
  }

  int64_t now_sec() const { return clock.now_epoch_sec(); }

  // Counts one answered write: the units in `res` (ConsumedCapacity, asked for with TOTAL), else
  // 1 per started KB of `known_size` (the item as the adapter saw it; 0: not seen), at least 1.
  void RecordWrite(std::string_view op, const ItemKey& key, const json& res, bool applied, size_t known_size) {
    double units = 0;
    bool reported = false;
    if (const auto c = res.find("ConsumedCapacity"); c != res.end() && c->is_object()) {
      if (const auto u = c->find("CapacityUnits"); u != c->end() && u->is_number()) {
        units = u->get<double>();
        reported = true;
      }
    }
    if (!reported) units = std::max(1.0, std::ceil(static_cast<double>(known_size) / 1024.0));
    write_units.fetch_add(units, std::memory_order_relaxed);
    if (options.on_write_units) options.on_write_units(WriteUnits{op, key, units, reported, applied});
  }
};

DynamoDbItemStore::DynamoDbItemStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DynamoDbItemStore::~DynamoDbItemStore() = default;

absl::StatusOr<std::unique_ptr<DynamoDbItemStore>> DynamoDbItemStore::Open(Options options, const Clock& clock) {
  if (options.table.empty() || options.table.size() > 255) {
    return absl::InvalidArgumentError("store.table must be 1..255 characters");
  }
  if (options.region.empty()) return absl::InvalidArgumentError("store.region must not be empty");
  if (options.credentials.access_key_id.empty() || options.credentials.secret_access_key.empty()) {
    return absl::InvalidArgumentError("DynamoDB store needs AWS credentials");
  }
  if (options.request_timeout_ms < 1 || options.retry_budget_ms < 0 || options.max_attempts < 1) {
    return absl::InvalidArgumentError("DynamoDB store timeouts and attempts must be positive");
  }
  std::string url =
      options.endpoint.empty() ? absl::StrCat("https://dynamodb.", options.region, ".amazonaws.com") : options.endpoint;
  ASSIGN_OR_RETURN(Endpoint endpoint, ParseEndpoint(url));
  auto impl = std::make_unique<Impl>(std::move(options), clock, std::move(endpoint));
  if (impl->endpoint.tls) {
    // The connectors' TLS rules: TLS >= 1.2, the certificate verified against the system trust store
    // or, when given, `ca_file` instead; the host name checked, SNI sent.
    net::TlsOptions tls_options;
    tls_options.ca_file = impl->options.ca_file;
    absl::StatusOr<std::shared_ptr<const net::TlsClientContext>> tls = net::MakeTlsClientContext(tls_options);
    if (!tls.ok()) return absl::Status(tls.status().code(), absl::StrCat("store.ca_file: ", tls.status().message()));
    impl->tls = *std::move(tls);
  }
  return std::unique_ptr<DynamoDbItemStore>(new DynamoDbItemStore(std::move(impl)));
}

absl::StatusOr<std::optional<Item>> DynamoDbItemStore::Get(const ItemKey& key) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  json req{{"TableName", impl_->options.table}, {"Key", impl_->Key(key)}, {"ConsistentRead", true}};
  ASSIGN_OR_RETURN(json res, impl_->Call("GetItem", req, false));
  if (!res.contains("Item")) return std::optional<Item>();
  absl::StatusOr<Item> item = dynamodb::ItemFromWire(res["Item"]);
  if (!item.ok()) return absl::DataLossError(absl::StrCat(key.pk, "/", key.sk, ": ", item.status().message()));
  if (IsExpired(*item, impl_->now_sec())) return std::optional<Item>();
  return std::optional<Item>(std::move(*item));
}

absl::StatusOr<WriteResult> DynamoDbItemStore::Put(const ItemKey& key, const Item& item, const Condition& condition) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  ASSIGN_OR_RETURN(json wire, dynamodb::ItemToWire(item));
  wire[Impl::kPartitionKeyName()] = {{"S", key.pk}};
  wire[Impl::kSortKeyName()] = {{"S", key.sk}};
  const size_t size = wire.dump().size();
  if (size > kMaxItemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("item ", key.pk, "/", key.sk, " is ", size, " bytes; DynamoDB holds at most 400 KB"));
  }
  const size_t item_size = WireItemSize(wire);
  json req{{"TableName", impl_->options.table}, {"Item", std::move(wire)}, {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  RETURN_IF_ERROR(Impl::AddCondition(req, condition, b));
  b.AddTo(req);
  bool failed = false;
  ASSIGN_OR_RETURN(json res, impl_->Call("PutItem", req, true, &failed));
  impl_->RecordWrite("PutItem", key, res, !failed, item_size);
  if (failed) return WriteResult::ConditionFailed();
  return WriteResult{true, item};
}

absl::StatusOr<WriteResult> DynamoDbItemStore::Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                                      const Condition& condition, ReturnValues returns) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  json req{{"TableName", impl_->options.table},
           {"Key", impl_->Key(key)},
           {"ReturnValues", returns == ReturnValues::kAllNew ? "ALL_NEW" : "NONE"},
           {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  ASSIGN_OR_RETURN(std::string update, dynamodb::RenderUpdate(ops, b));
  if (!update.empty()) req["UpdateExpression"] = update;
  RETURN_IF_ERROR(Impl::AddCondition(req, condition, b));
  b.AddTo(req);
  if (const size_t size = req.dump().size(); size > kMaxItemBytes) {
    return absl::InvalidArgumentError(absl::StrCat("update of ", key.pk, "/", key.sk, " is ", size,
                                                   " bytes; DynamoDB holds at most 400 KB per item"));
  }
  bool failed = false;
  ASSIGN_OR_RETURN(json res, impl_->Call("UpdateItem", req, true, &failed));
  const auto attributes = res.find("Attributes");
  impl_->RecordWrite("UpdateItem", key, res, !failed, attributes == res.end() ? 0 : WireItemSize(*attributes));
  if (failed) return WriteResult::ConditionFailed();
  WriteResult out{true, {}};
  if (returns == ReturnValues::kAllNew) {
    if (!res.contains("Attributes")) return out;  // an update without ops on an absent item
    absl::StatusOr<Item> item = dynamodb::ItemFromWire(res["Attributes"]);
    if (!item.ok()) return absl::DataLossError(absl::StrCat(key.pk, "/", key.sk, ": ", item.status().message()));
    out.item = std::move(*item);
  }
  return out;
}

absl::StatusOr<WriteResult> DynamoDbItemStore::Erase(const ItemKey& key, const Condition& condition) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  json req{{"TableName", impl_->options.table}, {"Key", impl_->Key(key)}, {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  RETURN_IF_ERROR(Impl::AddCondition(req, condition, b));
  b.AddTo(req);
  bool failed = false;
  ASSIGN_OR_RETURN(json res, impl_->Call("DeleteItem", req, true, &failed));
  impl_->RecordWrite("DeleteItem", key, res, !failed, 0);
  if (failed) return WriteResult::ConditionFailed();
  return WriteResult{true, {}};
}

absl::StatusOr<QueryPage> DynamoDbItemStore::Query(const QueryRequest& request) {
  RETURN_IF_ERROR(internal::ValidateQuery(request));
  dynamodb::ExpressionBuilder b;
  std::string key_condition = absl::StrCat(b.Name(dynamodb::kPartitionKey), " = ", *b.Value(request.pk));
  if (!request.sk_prefix.empty()) {
    absl::StrAppend(&key_condition, " AND begins_with(", b.Name(dynamodb::kSortKey), ", ", *b.Value(request.sk_prefix),
                    ")");
  }
  json req{{"TableName", impl_->options.table},
           {"KeyConditionExpression", key_condition},
           {"ConsistentRead", true},
           {"ScanIndexForward", !request.descending},
           {"Limit", request.limit}};
  if (request.after) req["ExclusiveStartKey"] = impl_->Key({request.pk, *request.after});
  b.AddTo(req);
  ASSIGN_OR_RETURN(json res, impl_->Call("Query", req, false));
  QueryPage page;
  const int64_t now = impl_->now_sec();
  if (res.contains("Items") && res["Items"].is_array()) {
    for (const json& wire : res["Items"]) {
      if (!wire.contains("sk") || !wire["sk"].contains("S") || !wire["sk"]["S"].is_string()) {
        return absl::DataLossError(absl::StrCat("DynamoDB Query of ", request.pk, ": an item has no string sk"));
      }
      std::string sk = wire["sk"]["S"].get<std::string>();
      absl::StatusOr<Item> item = dynamodb::ItemFromWire(wire);
      if (!item.ok()) return absl::DataLossError(absl::StrCat(request.pk, "/", sk, ": ", item.status().message()));
      if (IsExpired(*item, now)) continue;
      page.items.emplace_back(std::move(sk), std::move(*item));
    }
  }
  if (res.contains("LastEvaluatedKey")) {
    const json& last = res["LastEvaluatedKey"];
    if (last.contains("sk") && last["sk"].contains("S") && last["sk"]["S"].is_string()) {
      page.last_sk = last["sk"]["S"].get<std::string>();
    }
  }
  return page;
}

absl::StatusOr<ScanPage> DynamoDbItemStore::Scan(const ScanRequest& request) {
  RETURN_IF_ERROR(internal::ValidateScan(request));
  dynamodb::ExpressionBuilder b;
  std::vector<std::string> filters;
  if (!request.pk_prefix.empty()) {
    filters.push_back(
        absl::StrCat("begins_with(", b.Name(dynamodb::kPartitionKey), ", ", *b.Value(request.pk_prefix), ")"));
  }
  if (!request.sk_prefix.empty()) {
    filters.push_back(absl::StrCat("begins_with(", b.Name(dynamodb::kSortKey), ", ", *b.Value(request.sk_prefix), ")"));
  }
  json req{{"TableName", impl_->options.table}, {"ConsistentRead", true}, {"Limit", request.limit}};
  if (!filters.empty()) req["FilterExpression"] = filters.size() == 1 ? filters[0] : filters[0] + " AND " + filters[1];
  if (request.after) req["ExclusiveStartKey"] = impl_->Key(*request.after);
  b.AddTo(req);
  ASSIGN_OR_RETURN(json res, impl_->Call("Scan", req, false));
  ScanPage page;
  const int64_t now = impl_->now_sec();
  const auto key_of = [](const json& wire) -> std::optional<ItemKey> {
    for (const char* k : {"pk", "sk"}) {
      if (!wire.contains(k) || !wire[k].is_object() || !wire[k].contains("S") || !wire[k]["S"].is_string()) {
        return std::nullopt;
      }
    }
    return ItemKey{wire["pk"]["S"].get<std::string>(), wire["sk"]["S"].get<std::string>()};
  };
  if (res.contains("Items") && res["Items"].is_array()) {
    for (const json& wire : res["Items"]) {
      std::optional<ItemKey> key = key_of(wire);
      if (!key) return absl::DataLossError("DynamoDB Scan: an item has no string pk/sk");
      absl::StatusOr<Item> item = dynamodb::ItemFromWire(wire);
      if (!item.ok()) return absl::DataLossError(absl::StrCat(key->pk, "/", key->sk, ": ", item.status().message()));
      if (IsExpired(*item, now)) continue;
      page.items.emplace_back(std::move(*key), std::move(*item));
    }
  }
  std::sort(page.items.begin(), page.items.end(), [](const auto& a, const auto& b) {
    return std::tie(a.first.pk, a.first.sk) < std::tie(b.first.pk, b.first.sk);
  });
  if (res.contains("LastEvaluatedKey")) {
    page.last_key = key_of(res["LastEvaluatedKey"]);
    if (!page.last_key) return absl::DataLossError("DynamoDB Scan: LastEvaluatedKey has no string pk/sk");
  }
  return page;
}

absl::StatusOr<std::string> DynamoDbItemStore::InitTable(int wait_timeout_ms) {
  std::string report;
  const std::string& table = impl_->options.table;
  json create{{"TableName", table},
              {"AttributeDefinitions", json::array({{{"AttributeName", "pk"}, {"AttributeType", "S"}},
                                                    {{"AttributeName", "sk"}, {"AttributeType", "S"}}})},
              {"KeySchema", json::array({{{"AttributeName", "pk"}, {"KeyType", "HASH"}},
                                         {{"AttributeName", "sk"}, {"KeyType", "RANGE"}}})},
              {"BillingMode", "PAY_PER_REQUEST"}};
  absl::StatusOr<json> created = impl_->Call("CreateTable", create, false);
  if (created.ok()) {
    absl::StrAppend(&report, "created table '", table, "' (pk, sk; on-demand billing)\n");
  } else if (absl::StrContains(created.status().message(), "ResourceInUseException")) {
    absl::StrAppend(&report, "table '", table, "' exists\n");
  } else {
    return created.status();
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_timeout_ms);
  for (;;) {
    ASSIGN_OR_RETURN(json d, impl_->Call("DescribeTable", json{{"TableName", table}}, false));
    const std::string status = d.value("/Table/TableStatus"_json_pointer, std::string());
    if (status == "ACTIVE") break;
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("table '", table, "' is still ", status, " after ", wait_timeout_ms, " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  absl::StrAppend(&report, "table '", table, "' is ACTIVE\n");
  json ttl{{"TableName", table}, {"TimeToLiveSpecification", {{"Enabled", true}, {"AttributeName", "ttl"}}}};
  absl::StatusOr<json> t = impl_->Call("UpdateTimeToLive", ttl, false);
  if (t.ok()) {
    absl::StrAppend(&report, "TTL enabled on attribute 'ttl'\n");
  } else if (absl::StrContains(t.status().message(), "already enabled")) {
    absl::StrAppend(&report, "TTL already enabled on attribute 'ttl'\n");
  } else if (t.status().code() == absl::StatusCode::kInvalidArgument ||
             t.status().code() == absl::StatusCode::kInternal ||
             absl::StrContains(t.status().message(), "UnknownOperation")) {
    absl::StrAppend(&report, "TTL not enabled: this engine does not support UpdateTimeToLive (", t.status().message(),
                    "); carrying on: toolgate hides expired items when reading, but they are not deleted\n");
  } else {
    return t.status();
  }
  return report;
}

std::optional<DynamoDbItemStore::ClockReading> DynamoDbItemStore::clock_reading() const {
  const int64_t at = impl_->clock_measured_at_ms.load(std::memory_order_relaxed);
  if (at == 0) return std::nullopt;
  return ClockReading{impl_->clock_ahead_ms.load(std::memory_order_relaxed), at};
}

std::optional<int64_t> DynamoDbItemStore::ParseHttpDate(std::string_view text) {
  const std::string s(text);
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

int64_t DynamoDbItemStore::ClockAheadMs(int64_t date_s, int64_t sent_ms, int64_t answered_ms) {
  // DynamoDB's clock read [date, date + 1 s) at some moment between sending and the answer, so this
  // host's lead lies in [sent - (date + 999), answered - date]: the bound nearer 0, or 0 inside it.
  const int64_t least = sent_ms - (date_s * 1000 + 999);
  const int64_t most = answered_ms - date_s * 1000;
  if (least > 0) return least;
  if (most < 0) return most;
  return 0;
}

double DynamoDbItemStore::consumed_write_units() const { return impl_->write_units.load(std::memory_order_relaxed); }

absl::Status DynamoDbItemStore::DeleteTable() {
  return impl_->Call("DeleteTable", json{{"TableName", impl_->options.table}}, false).status();
}

}  // namespace toolgate::store
