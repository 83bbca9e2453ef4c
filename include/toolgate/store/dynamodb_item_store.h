#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/store/async_item_store.h"
#include "toolgate/store/aws_sigv4.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store {

// The distributed backend: one DynamoDB table (pk, sk: strings) shared by every toolgate instance,
// over DynamoDB's JSON API (AWS, or any engine speaking it, e.g. ScyllaDB Alternator, dynalite).
// Each ItemStore operation is one GetItem / PutItem / UpdateItem / DeleteItem / Query / Scan
// request, signed with Signature V4; conditions and updates are rendered with name and value
// placeholders. Reads are strongly consistent.
//
// The requests go through the net layer's HTTP client, as downstream calls do (one client, one set
// of TLS rules), on a network loop of the store's own (one thread): up to `max_requests_in_flight`
// requests out at once over kept-alive connections (more wait on the loop for a place, in order, up
// to request_timeout_ms), and no thread waits for one — the asynchronous port (AsyncItemStore,
// DESIGN §16) hands each result to its completion from that loop; the synchronous one (ItemStore,
// for the CLI, the services' own writes and the tests) waits for the loop. HTTPS is verified like a
// connector's (TLS >= 1.2, host name checked, `ca_file` or else the system CAs).
//
// Retries (capped exponential backoff with full jitter, inside `retry_budget_ms`): throttling
// (ProvisionedThroughputExceeded, Throttling, RequestLimitExceeded), 503, and requests that never
// left (no connection, TLS refused or timed out before the request was sent) are retried for every
// request — DynamoDB did not apply those. A write whose outcome is unknown (500, a timeout or a
// dropped connection after the request was sent) is NOT retried: a retried conditional ADD could
// apply twice; the caller gets kUnavailable and its S10 policy. Reads are retried on every transient
// failure. One case is not a retry of this policy but the client's: a kept-alive connection found
// closed by DynamoDB (end of stream or reset before any byte of an answer) is replaced and the
// request sent once more on a new connection — DynamoDB closes idle connections, not requests.
//
// Status codes beyond ItemStore's: kFailedPrecondition when the table does not exist (run
// `toolgate store init`); kPermissionDenied when DynamoDB refuses the credentials. Every error names
// the operation and the AWS error type. Items larger than DynamoDB's 400 KB are refused with
// kInvalidArgument before anything is sent.
//
// Scan pages come in DynamoDB's order (by partition hash), not in key order.
//
// Write units: every PutItem / UpdateItem / DeleteItem asks for ReturnConsumedCapacity TOTAL and the
// units DynamoDB reports are added up (consumed_write_units) and handed to `on_write_units` with the
// item's key. An engine that reports none (or a write refused by its condition, which DynamoDB
// charges but does not report) is counted from item sizes by DynamoDB's rule — 1 unit per started
// KB of the item (attribute names + values), the larger of before and after; what the adapter does
// not see (the item before an UpdateItem or DeleteItem) counts as nothing, so that estimate is a
// lower bound.
class DynamoDbItemStore final : public ItemStore, public AsyncItemStore {
 public:
  // One write's consumed capacity (see the class comment).
  struct WriteUnits {
    std::string_view op;   // "PutItem", "UpdateItem", "DeleteItem"
    const ItemKey& key;    // the item written
    double units = 0;      // write capacity units
    bool reported = true;  // false: computed from item sizes (the engine reported none)
    bool applied = true;   // false: the condition did not hold (DynamoDB charges those writes too)
  };

  struct Options {
    std::string table = "toolgate";
    std::string region = "us-east-1";
    std::string endpoint;           // "http://127.0.0.1:8000"; empty: https://dynamodb.<region>.amazonaws.com
    std::string ca_file;            // CAs for an https endpoint, instead of the system CAs (empty: system CAs)
    aws::Credentials credentials;   // usually from aws::LoadCredentials()
    int request_timeout_ms = 2000;  // one HTTP exchange
    int retry_budget_ms = 1500;     // all retries of one operation
    int max_attempts = 6;
    int max_idle_connections = 64;  // raised to max_requests_in_flight when that is larger
    // Requests out at once (and so connections open); more wait on the network loop for a place, in
    // order, up to request_timeout_ms each (then that attempt fails unsent and may be retried).
    int max_requests_in_flight = 64;
    // Called for each retry (op: "GetItem"…, reason: "throttled", "server_error", "connection",
    // "in_flight_cap").
    std::function<void(std::string_view op, std::string_view reason)> on_retry;
    // Called after each write DynamoDB answered (applied, or refused by its condition) with the
    // write units it consumed. Called on the writing thread; must be thread-safe.
    std::function<void(const WriteUnits&)> on_write_units;
  };

  // Checks the options (not the table). `clock` decides TTL expiry and must outlive the store.
  static absl::StatusOr<std::unique_ptr<DynamoDbItemStore>> Open(Options options, const Clock& clock);
  ~DynamoDbItemStore() override;

  DynamoDbItemStore(const DynamoDbItemStore&) = delete;
  DynamoDbItemStore& operator=(const DynamoDbItemStore&) = delete;

  absl::StatusOr<std::optional<Item>> Get(const ItemKey& key) override;
  absl::StatusOr<WriteResult> Put(const ItemKey& key, const Item& item, const Condition& condition) override;
  using ItemStore::Update;
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops, const Condition& condition,
                                     ReturnValues returns) override;
  absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) override;
  absl::StatusOr<QueryPage> Query(const QueryRequest& request) override;
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request) override;
  std::vector<absl::StatusOr<WriteResult>> WriteBatch(const std::vector<WriteRequest>& requests) override;
  std::string_view backend_name() const override { return "dynamodb"; }

  // The asynchronous port: each operation goes out on the network loop, and `done` is called there.
  void AsyncGet(ItemKey key, GetCompletion done) override;
  void AsyncQuery(QueryRequest request, QueryCompletion done) override;
  void AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) override;
  void WaitIdle() override;

  // `toolgate store init`: creates the table (pk/sk strings, on-demand billing) unless it exists,
  // waits until it is ACTIVE, and enables TTL on `ttl`. Returns what it did, line by line; an engine
  // without UpdateTimeToLive is reported, not an error (readers already hide expired items).
  absl::StatusOr<std::string> InitTable(int wait_timeout_ms = 60'000);

  // The write units of every write so far (see the class comment). Thread-safe.
  double consumed_write_units() const;

  // The requests under way against store.max_requests_in_flight: how many hold a place (sent, or
  // being sent), how many wait in line for one, and the cap. Thread-safe; a moment's reading.
  struct RequestLoad {
    int in_flight = 0;
    int waiting = 0;
    int limit = 0;
  };
  RequestLoad request_load() const;

  // This host's clock against DynamoDB's, read from the `Date` of its latest answer (RFC 9110, whole
  // seconds): how far this host's clock (the store's Clock) is ahead of DynamoDB's — negative:
  // behind — beyond what the header's one-second resolution and the round trip leave open; 0 when
  // the two agree within them. Every host of a fleet measures itself against the same clock, so two
  // hosts are at most the sum of their offsets apart (the leases' `max_clock_skew_s` assumes a bound
  // on that). Unset before any answer carried a Date. Thread-safe.
  struct ClockReading {
    int64_t ahead_ms = 0;
    int64_t measured_at_ms = 0;  // this host's clock, when the answer came
  };
  std::optional<ClockReading> clock_reading() const;
  // "Sat, 05 Dec 2026 11:58:48 GMT" (an HTTP date, IMF-fixdate) in seconds since the epoch.
  static std::optional<int64_t> ParseHttpDate(std::string_view text);
  // The reading one answer gives: its `Date` (seconds) and this host's clock before sending and
  // after the answer (ms).
  static int64_t ClockAheadMs(int64_t date_s, int64_t sent_ms, int64_t answered_ms);

  // Drops the table (tests).
  absl::Status DeleteTable();

 private:
  struct Impl;
  explicit DynamoDbItemStore(std::unique_ptr<Impl> impl);
  // The operations, on the network loop.
  boost::asio::awaitable<absl::StatusOr<std::optional<Item>>> DoGet(ItemKey key);
  boost::asio::awaitable<absl::StatusOr<WriteResult>> DoPut(ItemKey key, Item item, Condition condition);
  boost::asio::awaitable<absl::StatusOr<WriteResult>> DoUpdate(ItemKey key, std::vector<UpdateOp> ops,
                                                               Condition condition, ReturnValues returns);
  boost::asio::awaitable<absl::StatusOr<WriteResult>> DoErase(ItemKey key, Condition condition);
  boost::asio::awaitable<absl::StatusOr<QueryPage>> DoQuery(QueryRequest request);
  boost::asio::awaitable<WriteResults> DoWriteBatch(std::vector<WriteRequest> requests);
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::store
