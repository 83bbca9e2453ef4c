#include "toolgate/store/dynamodb_item_store.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <future>
#include <memory>
#include <random>
#include <thread>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

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
namespace asio = boost::asio;

namespace {

constexpr size_t kMaxItemBytes = 400 * 1024;            // DynamoDB's item size limit
constexpr size_t kMaxResponseBytes = 16 * 1024 * 1024;  // a 1 MB Query page plus JSON overhead
// How long a kept-alive connection may sit idle before it is closed instead of reused.
constexpr std::chrono::seconds kMaxIdle(30);

// What one API call came to: the response body of a 200, or a status naming the operation and the
// AWS error type; `condition_failed` instead of an error for ConditionalCheckFailedException when
// the caller asked for that.
struct CallAnswer {
  absl::StatusOr<json> body;
  bool condition_failed = false;
};

// The result of an operation that could not run at all (`n`: the writes of a batch, each failed).
template <typename T>
struct Failed {
  static T With(const absl::Status& st, size_t) { return T(st); }
};
template <>
struct Failed<CallAnswer> {
  static CallAnswer With(const absl::Status& st, size_t) { return CallAnswer{st}; }
};
template <>
struct Failed<std::vector<absl::StatusOr<WriteResult>>> {
  static std::vector<absl::StatusOr<WriteResult>> With(const absl::Status& st, size_t n) {
    return std::vector<absl::StatusOr<WriteResult>>(n, absl::StatusOr<WriteResult>(st));
  }
};

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
  // complete answer came back (dropped, timed out, too large): it may have been applied. kNoPlace:
  // not sent, every place for a request in flight stayed taken for request_timeout_ms (safe to retry).
  enum class Failure { kNone, kConnect, kAfterSend, kNoPlace };
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

// The places for requests in flight (store.max_requests_in_flight), taken in the order asked for.
// Used on the network loop's one thread only, so it needs no lock.
class RequestPlaces {
 public:
  explicit RequestPlaces(int capacity) : capacity_(capacity), free_(capacity) {}

  int capacity() const { return capacity_; }
  // Places taken and requests in line, as last published by the loop (readable from any thread).
  int in_use() const { return capacity_ - published_free_.load(std::memory_order_relaxed); }
  int in_line() const { return published_in_line_.load(std::memory_order_relaxed); }

  // A place, when one is free or given back within `wait`; false when none was.
  asio::awaitable<bool> Take(std::chrono::milliseconds wait) {
    if (free_ > 0 && waiting_.empty()) {
      --free_;
      Publish();
      co_return true;
    }
    // In line until handed a place or the wait runs out; whichever comes first takes it out of line
    // (Give, or the erase below), always before this frame ends.
    Waiter waiter(co_await asio::this_coro::executor, wait);
    waiting_.push_back(&waiter);
    Publish();
    boost::system::error_code ignored;
    co_await waiter.timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    // Handed a place (the timer cancelled), or the wait ran out: then it is still in line, unless a
    // place was handed to it after the timer fired and before this resumed.
    if (!waiter.given) {
      const auto in_line = std::find(waiting_.begin(), waiting_.end(), &waiter);
      if (in_line != waiting_.end()) waiting_.erase(in_line);
      Publish();
    }
    co_return waiter.given;
  }

  // A place taken is given back: to the first in line, else to the free ones.
  void Give() {
    if (waiting_.empty()) {
      ++free_;
      Publish();
      return;
    }
    Waiter* first = waiting_.front();
    waiting_.pop_front();
    Publish();
    first->given = true;
    first->timer.cancel();
  }

 private:
  struct Waiter {
    Waiter(const asio::any_io_executor& executor, std::chrono::milliseconds wait) : timer(executor, wait) {}
    asio::steady_timer timer;
    bool given = false;
  };
  void Publish() {
    published_free_.store(free_, std::memory_order_relaxed);
    published_in_line_.store(static_cast<int>(waiting_.size()), std::memory_order_relaxed);
  }

  const int capacity_;
  int free_;
  std::deque<Waiter*> waiting_;
  std::atomic<int> published_free_{capacity_};
  std::atomic<int> published_in_line_{0};
};

}  // namespace

struct DynamoDbItemStore::Impl {
  Options options;
  const Clock& clock;
  Endpoint endpoint;
  std::shared_ptr<const net::TlsClientContext> tls;  // https endpoints only
  // The network loop (DESIGN §16): every request goes out on it, as many at once as are submitted,
  // over the kept-alive connections of `pool` (its idle connections belong to `net`: declared after
  // it, destroyed before it). The thread runs until the store is destroyed.
  asio::io_context net;
  asio::executor_work_guard<asio::io_context::executor_type> net_work{net.get_executor()};
  net::ConnectionPool pool;
  RequestPlaces places;  // what is in flight at once (and so how many connections are open)
  std::thread net_thread;
  // Operations under way (WaitIdle, the destructor).
  absl::Mutex ops_mu;
  absl::CondVar ops_idle;  // signalled when ops_in_flight falls to 0
  int ops_in_flight ABSL_GUARDED_BY(ops_mu) = 0;
  std::atomic<double> write_units{0};
  // The latest clock reading (clock_reading); measured_at 0: none yet.
  std::atomic<int64_t> clock_ahead_ms{0};
  std::atomic<int64_t> clock_measured_at_ms{0};

  Impl(Options o, const Clock& c, Endpoint e)
      : options(std::move(o)),
        clock(c),
        endpoint(std::move(e)),
        pool(static_cast<size_t>(std::max({1, options.max_idle_connections, options.max_requests_in_flight})),
             kMaxIdle),
        places(std::max(1, options.max_requests_in_flight)),
        net_thread([this] { net.run(); }) {}

  ~Impl() {
    WaitIdle();
    net_work.reset();
    net.stop();  // idle pooled connections hold no operation, but nothing is left to wait for either
    net_thread.join();
  }

  void WaitIdle() {
    absl::MutexLock lock(&ops_mu);
    while (ops_in_flight > 0) ops_idle.Wait(&ops_mu);
  }

  // Runs `op` on the network loop and hands its result to `done` there (the asynchronous port).
  template <typename T, typename Done>
  void Spawn(asio::awaitable<T> op, Done done, size_t writes = 1) {
    // Counted from before the spawn until its completion has run (or the spawn failed).
    struct InFlight {
      explicit InFlight(Impl* i) : impl(i) {
        absl::MutexLock lock(&impl->ops_mu);
        ++impl->ops_in_flight;
      }
      InFlight(InFlight&& o) noexcept : impl(std::exchange(o.impl, nullptr)) {}
      InFlight(const InFlight&) = delete;
      InFlight& operator=(const InFlight&) = delete;
      InFlight& operator=(InFlight&&) = delete;
      ~InFlight() {
        if (impl == nullptr) return;
        absl::MutexLock lock(&impl->ops_mu);
        if (--impl->ops_in_flight == 0) impl->ops_idle.SignalAll();
      }
      Impl* impl;
    };
    asio::co_spawn(
        net, std::move(op),
        [writes, done = std::move(done), in_flight = InFlight(this)](std::exception_ptr e, T result) mutable {
          const InFlight ends = std::move(in_flight);  // after `done`
          if (e) {
            result = Failed<T>::With(absl::InternalError("DynamoDB store: an operation ended by an exception"), writes);
          }
          std::move(done)(std::move(result));
        });
  }

  // Runs `op` on the network loop and waits for it (the synchronous port). Refused on the network
  // thread itself, which would wait for itself.
  template <typename T>
  T RunOnNet(asio::awaitable<T> op, size_t writes = 1) {
    if (std::this_thread::get_id() == net_thread.get_id()) {
      return Failed<T>::With(absl::InternalError("DynamoDB store: a blocking call on the store's own network thread"),
                             writes);
    }
    std::promise<T> promise;
    std::future<T> answer = promise.get_future();
    Spawn(
        std::move(op), [&promise](T result) { promise.set_value(std::move(result)); }, writes);
    return answer.get();
  }

  // One signed HTTP exchange on a kept-alive connection (or a new one), on the network loop, once
  // one of the places for requests in flight is free.
  asio::awaitable<Exchange> Post(std::string target, std::string body, bool is_write) {
    const std::chrono::milliseconds timeout(options.request_timeout_ms);
    auto take = places.Take(timeout);
    if (!co_await std::move(take)) {
      Exchange none;
      none.failure = Exchange::Failure::kNoPlace;
      none.error = absl::StrCat("not sent: all ", places.capacity(),
                                " places for requests in flight (store.max_requests_in_flight) stayed taken for ",
                                timeout.count(), " ms");
      co_return none;
    }
    struct PlaceBack {
      RequestPlaces& places;
      ~PlaceBack() { places.Give(); }
    } back{places};
    const std::string amz_date = aws::AmzDate(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    const std::string full_target = absl::StrCat("DynamoDB_20120810.", target);
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
      co_return failed;
    }
    net::ClientRequest req;
    req.address = endpoint.address;
    req.method = "POST";
    req.target = "/";
    req.headers = std::move(sr.headers);  // the signed Host among them
    req.headers.emplace_back("authorization", sig->authorization);
    req.body = std::move(body);
    req.timeout = std::chrono::milliseconds(options.request_timeout_ms);
    req.max_response_bytes = kMaxResponseBytes;
    req.tls = tls;
    // A reused connection that ends before any byte of the answer: a read goes out again on a new
    // one; a write does not — DynamoDB (or a proxy before it) may have applied it and then dropped the
    // connection, and not every write's condition refuses it a second time (an ADD under a condition
    // still true after it, a slot's holder written then refused as "held": a write that applied
    // reported as one that did not). A connection closed while idle is found by the pool's peek
    // before anything is sent, and replaced for a write too.
    req.idempotent = !is_write;

    const int64_t sent_ms = clock.now_epoch_ms();
    auto call = net::AsyncHttpCall(std::move(req), &pool);
    net::ClientResult result = co_await std::move(call);
    Exchange ex = FromClientResult(std::move(result));
    if (ex.date_s) {
      const int64_t answered_ms = clock.now_epoch_ms();
      clock_ahead_ms.store(ClockAheadMs(*ex.date_s, sent_ms, answered_ms), std::memory_order_relaxed);
      clock_measured_at_ms.store(answered_ms, std::memory_order_relaxed);
    }
    co_return ex;
  }

  // One DynamoDB API call with the retry policy of the class comment, on the network loop (the
  // backoff a timer of the loop's: no thread sleeps).
  asio::awaitable<CallAnswer> CallAsync(std::string op, json request, bool is_write, bool want_condition_failed) {
    const std::string body = request.dump();
    const auto start = std::chrono::steady_clock::now();
    const auto budget = std::chrono::milliseconds(options.retry_budget_ms);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::chrono::milliseconds backoff(25);
    std::string last;
    for (int attempt = 1;; ++attempt) {
      auto post = Post(op, body, is_write);
      Exchange ex = co_await std::move(post);
      std::string reason;  // why a retry is allowed; empty: answer now
      absl::StatusCode code = absl::StatusCode::kUnavailable;
      if (ex.failure == Exchange::Failure::kConnect) {
        last = absl::StrCat("DynamoDB ", op, ": connection failed: ", ex.error);
        reason = "connection";
      } else if (ex.failure == Exchange::Failure::kNoPlace) {
        last = absl::StrCat("DynamoDB ", op, ": ", ex.error);
        reason = "in_flight_cap";
      } else if (ex.failure == Exchange::Failure::kAfterSend) {
        last = absl::StrCat("DynamoDB ", op, ": ", ex.error, is_write ? " (the write's outcome is unknown)" : "");
        if (!is_write) reason = "connection";
      } else if (ex.status == 200) {
        json j = ParseJsonWithin(ex.body);
        if (j.is_discarded() || !j.is_object()) {
          co_return CallAnswer{absl::DataLossError(absl::StrCat("DynamoDB ", op, ": response is not a JSON object"))};
        }
        co_return CallAnswer{std::move(j)};
      } else {
        const std::string type = ErrorType(ex.body);
        const std::string message = ErrorMessage(ex.body);
        last =
            absl::StrCat("DynamoDB ", op, ": ", type, " (HTTP ", ex.status, ")", message.empty() ? "" : ": ", message);
        if (type == "ConditionalCheckFailedException" && want_condition_failed) {
          co_return CallAnswer{json::object(), true};
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
      if (reason.empty()) co_return CallAnswer{absl::Status(code, last)};
      const auto elapsed = std::chrono::steady_clock::now() - start;
      std::uniform_int_distribution<int64_t> jitter(0, backoff.count());
      const auto sleep = std::chrono::milliseconds(jitter(rng));
      if (attempt >= options.max_attempts || elapsed + sleep >= budget) {
        co_return CallAnswer{absl::UnavailableError(
            absl::StrCat(last, " (gave up after ", attempt, " attempts in ",
                         std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), " ms)"))};
      }
      if (options.on_retry) options.on_retry(op, reason);
      asio::steady_timer timer(co_await asio::this_coro::executor, sleep);
      boost::system::error_code ignored;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  }

  // The same call, waited for (the synchronous port: Scan, the table's administration).
  absl::StatusOr<json> Call(std::string_view op, const json& request, bool is_write) {
    CallAnswer a = RunOnNet(CallAsync(std::string(op), request, is_write, false));
    return std::move(a.body);
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
// Operations under way finish before anything of the store goes (they use it to their end).
DynamoDbItemStore::~DynamoDbItemStore() { impl_->WaitIdle(); }

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

// Each operation is a coroutine on the network loop; the synchronous port waits for it there
// (RunOnNet), the asynchronous one hands its result on from there (Spawn). Arguments by value: the
// coroutine outlives the call that started it.

asio::awaitable<absl::StatusOr<std::optional<Item>>> DynamoDbItemStore::DoGet(ItemKey key) {
  if (absl::Status valid = internal::ValidateKey(key); !valid.ok()) co_return valid;
  json req{{"TableName", impl_->options.table}, {"Key", impl_->Key(key)}, {"ConsistentRead", true}};
  auto call = impl_->CallAsync("GetItem", std::move(req), false, false);
  CallAnswer a = co_await std::move(call);
  if (!a.body.ok()) co_return a.body.status();
  json& res = *a.body;
  if (!res.contains("Item")) co_return std::optional<Item>();
  absl::StatusOr<Item> item = dynamodb::ItemFromWire(res["Item"]);
  if (!item.ok()) co_return absl::DataLossError(absl::StrCat(key.pk, "/", key.sk, ": ", item.status().message()));
  if (IsExpired(*item, impl_->now_sec())) co_return std::optional<Item>();
  co_return std::optional<Item>(std::move(*item));
}

asio::awaitable<absl::StatusOr<WriteResult>> DynamoDbItemStore::DoPut(ItemKey key, Item item, Condition condition) {
  if (absl::Status valid = internal::ValidateKey(key); !valid.ok()) co_return valid;
  absl::StatusOr<json> wire = dynamodb::ItemToWire(item);
  if (!wire.ok()) co_return wire.status();
  (*wire)[Impl::kPartitionKeyName()] = {{"S", key.pk}};
  (*wire)[Impl::kSortKeyName()] = {{"S", key.sk}};
  const size_t size = wire->dump().size();
  if (size > kMaxItemBytes) {
    co_return absl::InvalidArgumentError(
        absl::StrCat("item ", key.pk, "/", key.sk, " is ", size, " bytes; DynamoDB holds at most 400 KB"));
  }
  const size_t item_size = WireItemSize(*wire);
  json req{{"TableName", impl_->options.table}, {"Item", *std::move(wire)}, {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  if (absl::Status st = Impl::AddCondition(req, condition, b); !st.ok()) co_return st;
  b.AddTo(req);
  auto call = impl_->CallAsync("PutItem", std::move(req), true, true);
  CallAnswer a = co_await std::move(call);
  if (!a.body.ok()) co_return a.body.status();
  impl_->RecordWrite("PutItem", key, *a.body, !a.condition_failed, item_size);
  if (a.condition_failed) co_return WriteResult::ConditionFailed();
  co_return WriteResult{true, std::move(item)};
}

asio::awaitable<absl::StatusOr<WriteResult>> DynamoDbItemStore::DoUpdate(ItemKey key, std::vector<UpdateOp> ops,
                                                                         Condition condition, ReturnValues returns) {
  if (absl::Status valid = internal::ValidateKey(key); !valid.ok()) co_return valid;
  json req{{"TableName", impl_->options.table},
           {"Key", impl_->Key(key)},
           {"ReturnValues", returns == ReturnValues::kAllNew ? "ALL_NEW" : "NONE"},
           {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  absl::StatusOr<std::string> update = dynamodb::RenderUpdate(ops, b);
  if (!update.ok()) co_return update.status();
  if (!update->empty()) req["UpdateExpression"] = *update;
  if (absl::Status st = Impl::AddCondition(req, condition, b); !st.ok()) co_return st;
  b.AddTo(req);
  if (const size_t size = req.dump().size(); size > kMaxItemBytes) {
    co_return absl::InvalidArgumentError(absl::StrCat("update of ", key.pk, "/", key.sk, " is ", size,
                                                      " bytes; DynamoDB holds at most 400 KB per item"));
  }
  auto call = impl_->CallAsync("UpdateItem", std::move(req), true, true);
  CallAnswer a = co_await std::move(call);
  if (!a.body.ok()) co_return a.body.status();
  json& res = *a.body;
  const auto attributes = res.find("Attributes");
  impl_->RecordWrite("UpdateItem", key, res, !a.condition_failed,
                     attributes == res.end() ? 0 : WireItemSize(*attributes));
  if (a.condition_failed) co_return WriteResult::ConditionFailed();
  WriteResult out{true, {}};
  if (returns == ReturnValues::kAllNew) {
    if (!res.contains("Attributes")) co_return out;  // an update without ops on an absent item
    absl::StatusOr<Item> item = dynamodb::ItemFromWire(res["Attributes"]);
    if (!item.ok()) co_return absl::DataLossError(absl::StrCat(key.pk, "/", key.sk, ": ", item.status().message()));
    out.item = std::move(*item);
  }
  co_return out;
}

asio::awaitable<absl::StatusOr<WriteResult>> DynamoDbItemStore::DoErase(ItemKey key, Condition condition) {
  if (absl::Status valid = internal::ValidateKey(key); !valid.ok()) co_return valid;
  json req{{"TableName", impl_->options.table}, {"Key", impl_->Key(key)}, {"ReturnConsumedCapacity", "TOTAL"}};
  dynamodb::ExpressionBuilder b;
  if (absl::Status st = Impl::AddCondition(req, condition, b); !st.ok()) co_return st;
  b.AddTo(req);
  auto call = impl_->CallAsync("DeleteItem", std::move(req), true, true);
  CallAnswer a = co_await std::move(call);
  if (!a.body.ok()) co_return a.body.status();
  impl_->RecordWrite("DeleteItem", key, *a.body, !a.condition_failed, 0);
  if (a.condition_failed) co_return WriteResult::ConditionFailed();
  co_return WriteResult{true, {}};
}

asio::awaitable<absl::StatusOr<QueryPage>> DynamoDbItemStore::DoQuery(QueryRequest request) {
  if (absl::Status valid = internal::ValidateQuery(request); !valid.ok()) co_return valid;
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
  auto call = impl_->CallAsync("Query", std::move(req), false, false);
  CallAnswer a = co_await std::move(call);
  if (!a.body.ok()) co_return a.body.status();
  json& res = *a.body;
  QueryPage page;
  const int64_t now = impl_->now_sec();
  if (res.contains("Items") && res["Items"].is_array()) {
    for (const json& wire : res["Items"]) {
      if (!wire.contains("sk") || !wire["sk"].contains("S") || !wire["sk"]["S"].is_string()) {
        co_return absl::DataLossError(absl::StrCat("DynamoDB Query of ", request.pk, ": an item has no string sk"));
      }
      std::string sk = wire["sk"]["S"].get<std::string>();
      absl::StatusOr<Item> item = dynamodb::ItemFromWire(wire);
      if (!item.ok()) co_return absl::DataLossError(absl::StrCat(request.pk, "/", sk, ": ", item.status().message()));
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
  co_return page;
}

// ItemStore::WriteBatch's rule (each write after the one before, a chained write refused when what
// it follows was not applied), each write awaited on the loop.
asio::awaitable<AsyncItemStore::WriteResults> DynamoDbItemStore::DoWriteBatch(std::vector<WriteRequest> requests) {
  WriteResults results;
  results.reserve(requests.size());
  for (WriteRequest& r : requests) {
    if (ChainBroken(r, results, results.size())) {
      results.push_back(WriteResult::ConditionFailed());
      continue;
    }
    switch (r.kind) {
      case WriteRequest::Kind::kPut: {
        auto put = DoPut(std::move(r.key), std::move(r.item), std::move(r.condition));
        results.push_back(co_await std::move(put));
        break;
      }
      case WriteRequest::Kind::kUpdate: {
        auto update = DoUpdate(std::move(r.key), std::move(r.ops), std::move(r.condition), r.returns);
        results.push_back(co_await std::move(update));
        break;
      }
      case WriteRequest::Kind::kErase: {
        auto erase = DoErase(std::move(r.key), std::move(r.condition));
        results.push_back(co_await std::move(erase));
        break;
      }
    }
  }
  co_return results;
}

absl::StatusOr<std::optional<Item>> DynamoDbItemStore::Get(const ItemKey& key) { return impl_->RunOnNet(DoGet(key)); }

absl::StatusOr<WriteResult> DynamoDbItemStore::Put(const ItemKey& key, const Item& item, const Condition& condition) {
  return impl_->RunOnNet(DoPut(key, item, condition));
}

absl::StatusOr<WriteResult> DynamoDbItemStore::Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                                      const Condition& condition, ReturnValues returns) {
  return impl_->RunOnNet(DoUpdate(key, ops, condition, returns));
}

absl::StatusOr<WriteResult> DynamoDbItemStore::Erase(const ItemKey& key, const Condition& condition) {
  return impl_->RunOnNet(DoErase(key, condition));
}

absl::StatusOr<QueryPage> DynamoDbItemStore::Query(const QueryRequest& request) {
  return impl_->RunOnNet(DoQuery(request));
}

std::vector<absl::StatusOr<WriteResult>> DynamoDbItemStore::WriteBatch(const std::vector<WriteRequest>& requests) {
  return impl_->RunOnNet(DoWriteBatch(requests), requests.size());
}

void DynamoDbItemStore::AsyncGet(ItemKey key, GetCompletion done) {
  impl_->Spawn(DoGet(std::move(key)), std::move(done));
}

void DynamoDbItemStore::AsyncQuery(QueryRequest request, QueryCompletion done) {
  impl_->Spawn(DoQuery(std::move(request)), std::move(done));
}

void DynamoDbItemStore::AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) {
  const size_t writes = requests.size();
  impl_->Spawn(DoWriteBatch(std::move(requests)), std::move(done), writes);
}

void DynamoDbItemStore::WaitIdle() { impl_->WaitIdle(); }

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

DynamoDbItemStore::RequestLoad DynamoDbItemStore::request_load() const {
  return RequestLoad{impl_->places.in_use(), impl_->places.in_line(), impl_->places.capacity()};
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
