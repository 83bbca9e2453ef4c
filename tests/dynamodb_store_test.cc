// The DynamoDB adapter's own parts: Signature V4 against AWS's published test suite, credentials,
// expression rendering (placeholders only), the retry policy against a fake endpoint that throttles
// or fails, and table initialisation on dynalite. The shared semantics are in store_conformance_test.

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <fstream>
#include <functional>
#include <set>

#include "fake_downstream.h"
#include "gmock/gmock.h"
#include "test_support.h"
#include "wait_until.h"
#include "toolgate/store/aws_sigv4.h"
#include "toolgate/store/dynamodb_expressions.h"
#include "toolgate/store/dynamodb_item_store.h"

namespace toolgate::store {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using toolgate::testing::FakeDownstream;
using Reply = FakeDownstream::Reply;

// AWS's Signature V4 test suite: credentials, scope and time shared by every case.
const aws::Credentials kSuiteCredentials{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
const aws::SigningScope kSuiteScope{"us-east-1", "service"};

aws::SignableRequest SuiteRequest(std::string method, std::string query = "") {
  return {std::move(method),
          "/",
          std::move(query),
          {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}},
          ""};
}

TEST(SigV4Test, GetVanillaMatchesTheAwsTestSuite) {
  auto s = aws::SignV4(SuiteRequest("GET"), kSuiteCredentials, kSuiteScope);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s->signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  EXPECT_EQ(
      s->authorization,
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4Test, PostVanillaAndQueryOrderMatchTheAwsTestSuite) {
  auto post = aws::SignV4(SuiteRequest("POST"), kSuiteCredentials, kSuiteScope);
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->signature, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
  // get-vanilla-query-order-key-case: parameters are sorted before signing.
  auto query = aws::SignV4(SuiteRequest("GET", "Param2=value2&Param1=value1"), kSuiteCredentials, kSuiteScope);
  ASSERT_TRUE(query.ok());
  EXPECT_EQ(query->signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

TEST(SigV4Test, AnyChangeToTheSignedRequestChangesTheSignature) {
  const auto base = *aws::SignV4(SuiteRequest("POST"), kSuiteCredentials, kSuiteScope);
  aws::SignableRequest body = SuiteRequest("POST");
  body.payload = "{}";
  EXPECT_NE(aws::SignV4(body, kSuiteCredentials, kSuiteScope)->signature, base.signature);
  aws::Credentials other = kSuiteCredentials;
  other.secret_access_key.back() = 'X';
  EXPECT_NE(aws::SignV4(SuiteRequest("POST"), other, kSuiteScope)->signature, base.signature);
  EXPECT_NE(aws::SignV4(SuiteRequest("POST"), kSuiteCredentials, {"eu-west-1", "service"})->signature, base.signature);
  aws::SignableRequest no_date = SuiteRequest("POST");
  no_date.headers.pop_back();
  EXPECT_EQ(aws::SignV4(no_date, kSuiteCredentials, kSuiteScope).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(aws::AmzDate(1440938160), "20150830T123600Z");
}

TEST(CredentialsTest, SharedFileProfilesAndEnvironmentTakePrecedence) {
  const std::string file =
      "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key=secret-default\n\n"
      "[ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key = secret-ops\naws_session_token = tok\n";
  auto d = aws::ParseSharedCredentials(file, "default");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->access_key_id, "AKIDDEFAULT");
  EXPECT_EQ(d->secret_access_key, "secret-default");
  EXPECT_EQ(d->session_token, "");
  auto ops = aws::ParseSharedCredentials(file, "ops");
  ASSERT_TRUE(ops.ok());
  EXPECT_EQ(ops->session_token, "tok");
  EXPECT_EQ(aws::ParseSharedCredentials(file, "missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(aws::ParseSharedCredentials("[default]\naws_access_key_id = x\n", "default").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(aws::ParseSharedCredentials("[default\n", "default").status().code(), absl::StatusCode::kInvalidArgument);

  toolgate::testing::TempDir dir;
  std::ofstream(dir.file("credentials")) << file;
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  setenv("AWS_SHARED_CREDENTIALS_FILE", dir.file("credentials").c_str(), 1);
  setenv("AWS_PROFILE", "ops", 1);
  auto from_file = aws::LoadCredentials();
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->access_key_id, "AKIDOPS");
  setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
  setenv("AWS_SESSION_TOKEN", "session-env", 1);
  auto from_env = aws::LoadCredentials();
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(from_env->access_key_id, "AKIDENV");
  EXPECT_EQ(from_env->session_token, "session-env");
  for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"}) unsetenv(v);
  setenv("AWS_SHARED_CREDENTIALS_FILE", dir.file("absent").c_str(), 1);
  EXPECT_EQ(aws::LoadCredentials().status().code(), absl::StatusCode::kNotFound);
  unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

TEST(DynamoDbExpressionsTest, ValuesAndNamesOnlyEverAppearAsPlaceholders) {
  const std::string hostile = "x) OR attribute_exists(#n0";
  dynamodb::ExpressionBuilder b;
  auto c = dynamodb::RenderCondition(
      Condition::And({Condition::Eq(AttributePath::Top(hostile), hostile),
                      Condition::Exists(AttributePath::In("holders", "lease-1")),
                      Condition::Compare(Condition::Attr(AttributePath::Top("in_flight_count")), Condition::Op::kLt,
                                         Condition::Attr(AttributePath::Top("max_in_flight")))}),
      b);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, "(#n0 = :v0) AND (attribute_exists(#n1.#n2)) AND (#n3 < #n4)");
  EXPECT_THAT(*c, Not(HasSubstr("lease-1")));
  EXPECT_EQ(b.names()["#n0"], hostile);
  EXPECT_EQ(b.values()[":v0"], nlohmann::json({{"S", hostile}}));

  dynamodb::ExpressionBuilder u;
  auto update = dynamodb::RenderUpdate({UpdateOp::Add(AttributePath::Top("in_flight_count"), 1),
                                        UpdateOp::Set(AttributePath::In("holders", "lease-1"), int64_t{123}),
                                        UpdateOp::Remove(AttributePath::Top("old"))},
                                       u);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(*update, "SET #n0 = if_not_exists(#n0, :v0) + :v1, #n1.#n2 = :v2 REMOVE #n3");
  // DynamoDB refuses overlapping paths and writes to the key: refused before sending.
  dynamodb::ExpressionBuilder x;
  EXPECT_EQ(
      dynamodb::RenderUpdate(
          {UpdateOp::Set(AttributePath::Top("m"), AttributeMap{}), UpdateOp::Set(AttributePath::In("m", "k"), 1)}, x)
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dynamodb::RenderUpdate({UpdateOp::Set(AttributePath::Top("pk"), "x")}, x).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DynamoDbExpressionsTest, AlwaysNeverAndEmptyCombinationsRender) {
  dynamodb::ExpressionBuilder b;
  EXPECT_EQ(*dynamodb::RenderCondition(Condition::Always(), b), "");
  EXPECT_EQ(*dynamodb::RenderCondition(Condition::And({Condition::Always(), Condition::ItemExists()}), b),
            "(attribute_exists(#n_pk))");
  EXPECT_THAT(*dynamodb::RenderCondition(Condition::Not(Condition::Always()), b), HasSubstr(" AND "));
  EXPECT_THAT(*dynamodb::RenderCondition(Condition::Or({Condition::ItemAbsent(), Condition::Always()}), b),
              HasSubstr(" OR "));
}

TEST(DynamoDbExpressionsTest, WireValuesRoundTripAndForeignTypesAreDataLoss) {
  const Item item{{"s", "text"}, {"i", int64_t{-42}}, {"d", 2.5}, {"b", false}, {"m", AttributeMap{{"k", 1}}}};
  auto wire = dynamodb::ItemToWire(item);
  ASSERT_TRUE(wire.ok());
  EXPECT_EQ((*wire)["i"], nlohmann::json({{"N", "-42"}}));
  auto back = dynamodb::ItemFromWire(*wire);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, item);
  EXPECT_EQ(dynamodb::ValueFromWire({{"SS", {"a"}}}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(dynamodb::ValueFromWire({{"N", "12abc"}}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(dynamodb::ValueFromWire(nlohmann::json::array()).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(dynamodb::ItemToWire({{"pk", "x"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dynamodb::ValueToWire(std::nan("")).status().code(), absl::StatusCode::kInvalidArgument);
}

// A DynamoDB endpoint that answers from a script, to drive the retry policy.
class DynamoDbRetryTest : public ::testing::Test {
 protected:
  std::unique_ptr<DynamoDbItemStore> Open(int budget_ms = 2000,
                                          const std::function<void(DynamoDbItemStore::Options&)>& tweak = {}) {
    DynamoDbItemStore::Options o;
    o.endpoint = fake_.base_url();
    o.credentials = toolgate::testing::TestCredentials();
    o.retry_budget_ms = budget_ms;
    o.request_timeout_ms = 1000;
    if (tweak) tweak(o);
    o.on_retry = [this](std::string_view op, std::string_view reason) {
      std::lock_guard lock(mu_);
      retries_.push_back(std::string(op) + ":" + std::string(reason));
    };
    auto s = DynamoDbItemStore::Open(o, clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  static Reply Error(int status, const std::string& type) {
    return Reply{status, R"({"__type":"com.amazonaws.dynamodb.v20120810#)" + type + R"(","message":"scripted"})"};
  }
  ManualClock clock_;
  FakeDownstream fake_;
  std::mutex mu_;
  std::vector<std::string> retries_;
};

TEST_F(DynamoDbRetryTest, ThrottlingIsRetriedUntilItPassesAndEveryRequestIsSigned) {
  std::atomic<int> calls{0};
  fake_.set_behavior([&](const FakeDownstream::Request&) {
    return calls.fetch_add(1) < 2 ? Error(400, "ProvisionedThroughputExceededException")
                                  : Reply{200, R"({"Item":{"pk":{"S":"A"},"sk":{"S":"B"},"v":{"N":"7"}}})"};
  });
  auto store = Open();
  auto got = store->Get({"A", "B"});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(GetInt(**got, "v"), 7);
  EXPECT_EQ(calls.load(), 3);
  EXPECT_THAT(retries_, ::testing::ElementsAre("GetItem:throttled", "GetItem:throttled"));
  for (const auto& r : fake_.requests()) {
    EXPECT_EQ(r.headers.at("x-amz-target"), "DynamoDB_20120810.GetItem");
    EXPECT_THAT(r.headers.at("authorization"), HasSubstr("AWS4-HMAC-SHA256 Credential=AKIDTOOLGATETEST/"));
    EXPECT_THAT(r.headers.at("authorization"), HasSubstr("/us-east-1/dynamodb/aws4_request"));
  }
}

// The asynchronous port (DESIGN §16): operations submitted together are in flight together, on the
// store's one network thread, each over a connection of its own; no thread of the caller's waits.
// A blocking call made on that thread (from a completion) is refused at once, not waited for.
TEST_F(DynamoDbRetryTest, TheAsynchronousPortKeepsManyRequestsInFlightAtOnceOnItsOwnThread) {
  // Each answer is held until twelve requests are at the fake at once (bounded at 10 s, within the
  // request timeout): requests that go out together meet there however slow the machine; requests
  // sent one after another never do.
  fake_.set_behavior([this](const FakeDownstream::Request&) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (fake_.peak_concurrent() < 12 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return Reply{200, R"({"Item":{"pk":{"S":"A"},"sk":{"S":"B"},"v":{"N":"7"}}})"};
  });
  auto store = Open(2000, [](DynamoDbItemStore::Options& o) { o.request_timeout_ms = 20000; });
  AsyncItemStore& port = *store;
  constexpr int kOps = 16;
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0, found = 0;
  std::set<std::thread::id> completing;
  absl::Status from_completion;
  for (int i = 0; i < kOps; ++i) {
    port.AsyncGet({"A", "B"}, [&, i](absl::StatusOr<std::optional<Item>> got) {
      absl::Status blocking;
      if (i == 0) blocking = store->Get({"A", "B"}).status();  // on the network thread: refused
      std::lock_guard lock(mu);
      if (i == 0) from_completion = blocking;
      if (got.ok() && got->has_value() && GetInt(**got, "v") == 7) ++found;
      completing.insert(std::this_thread::get_id());
      if (++done == kOps) all_done.notify_one();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(20), [&] { return done == kOps; }));
  }
  EXPECT_EQ(found, kOps);
  EXPECT_GE(fake_.peak_concurrent(), 12) << "the requests did not go out together";
  EXPECT_EQ(completing.size(), 1u) << "every completion comes from the store's one network thread";
  EXPECT_EQ(completing.count(std::this_thread::get_id()), 0u);
  EXPECT_EQ(from_completion.code(), absl::StatusCode::kInternal) << from_completion;
  EXPECT_THAT(std::string(from_completion.message()), HasSubstr("network thread"));
  EXPECT_EQ(fake_.total(), kOps) << "the refused blocking call sent nothing";
  store->WaitIdle();
}

// Submitted operations beyond store.max_requests_in_flight wait for a place on the network loop:
// the fake DynamoDB (the independent observer) never sees more at once, and every one is answered.
TEST_F(DynamoDbRetryTest, RequestsBeyondTheInFlightCapWaitForAPlaceAndAllAreAnswered) {
  fake_.set_behavior([](const FakeDownstream::Request&) {
    return Reply{200, R"({"Item":{"pk":{"S":"A"},"sk":{"S":"B"},"v":{"N":"7"}}})", {}, 200};
  });
  auto store = Open(2000, [](DynamoDbItemStore::Options& o) {
    o.max_requests_in_flight = 4;
    o.request_timeout_ms = 5000;  // the last in line waits ~600 ms
  });
  AsyncItemStore& port = *store;
  constexpr int kOps = 16;
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0, found = 0;
  for (int i = 0; i < kOps; ++i) {
    port.AsyncGet({"A", "B"}, [&](absl::StatusOr<std::optional<Item>> got) {
      std::lock_guard lock(mu);
      if (got.ok() && got->has_value() && GetInt(**got, "v") == 7) ++found;
      if (++done == kOps) all_done.notify_one();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(20), [&] { return done == kOps; }));
  }
  EXPECT_EQ(found, kOps);
  EXPECT_EQ(fake_.peak_concurrent(), 4) << "the cap was passed, or the places were not all used";
  EXPECT_EQ(fake_.total(), kOps);
  EXPECT_TRUE(retries_.empty()) << "a wait for a place within request_timeout_ms is no failure";
  store->WaitIdle();
}

// What the cap holds is readable while it holds it (the /metrics gauges): the requests sent, the
// ones in line, the cap; all given back once answered.
TEST_F(DynamoDbRetryTest, TheRequestsHoldingAndWaitingForAPlaceAreCounted) {
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  fake_.set_behavior([&](const FakeDownstream::Request&) {
    std::unique_lock lock(gate_mu);
    gate_cv.wait_for(lock, std::chrono::seconds(20), [&] { return open; });
    return Reply{200, R"({"Item":{"pk":{"S":"A"},"sk":{"S":"B"},"v":{"N":"7"}}})"};
  });
  auto store = Open(2000, [](DynamoDbItemStore::Options& o) {
    o.max_requests_in_flight = 3;
    o.request_timeout_ms = 30000;  // nobody's wait runs out while the gate is shut
  });
  EXPECT_EQ(store->request_load().in_flight, 0);
  EXPECT_EQ(store->request_load().limit, 3);
  AsyncItemStore& port = *store;
  constexpr int kOps = 8;
  std::atomic<int> done{0};
  for (int i = 0; i < kOps; ++i) port.AsyncGet({"A", "B"}, [&](const auto&) { done.fetch_add(1); });
  DynamoDbItemStore::RequestLoad held;
  for (int i = 0; i < 1000; ++i) {  // bounded: 10 s
    held = store->request_load();
    if (held.in_flight == 3 && held.waiting == kOps - 3 && fake_.concurrent() == 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(held.in_flight, 3);
  EXPECT_EQ(held.waiting, kOps - 3);
  EXPECT_EQ(held.limit, 3);
  {
    std::lock_guard lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  for (int i = 0; i < 2000 && done.load() < kOps; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(done.load(), kOps);
  store->WaitIdle();
  const DynamoDbItemStore::RequestLoad after = store->request_load();
  EXPECT_EQ(after.in_flight, 0) << "a place was not given back";
  EXPECT_EQ(after.waiting, 0);
}

// A wait for a place is bounded by request_timeout_ms: then that attempt fails unsent, named, and is
// retried inside the budget like a connection that failed (here the budget allows no retry).
TEST_F(DynamoDbRetryTest, AWaitForAPlaceThatRunsOutFailsUnsentAndNamesTheCap) {
  fake_.set_behavior([](const FakeDownstream::Request&) {
    return Reply{200, R"({"Item":{"pk":{"S":"A"},"sk":{"S":"B"},"v":{"N":"7"}}})", {}, 1500};
  });
  auto store = Open(/*budget_ms=*/0, [](DynamoDbItemStore::Options& o) {
    o.max_requests_in_flight = 1;
    o.request_timeout_ms = 3750;  // in line: the 2nd waits ~1.5 s, the 3rd ~3 s, the 4th would wait 4.5 s
  });
  AsyncItemStore& port = *store;
  constexpr int kOps = 4;
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0;
  std::vector<absl::Status> failed;
  for (int i = 0; i < kOps; ++i) {
    port.AsyncGet({"A", "B"}, [&](absl::StatusOr<std::optional<Item>> got) {
      std::lock_guard lock(mu);
      if (!got.ok()) failed.push_back(got.status());
      if (++done == kOps) all_done.notify_one();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(20), [&] { return done == kOps; }));
  }
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsStoreError(failed[0]));
  EXPECT_THAT(std::string(failed[0].message()), HasSubstr("GetItem"));
  EXPECT_THAT(std::string(failed[0].message()), HasSubstr("max_requests_in_flight"));
  EXPECT_EQ(fake_.peak_concurrent(), 1);
  EXPECT_EQ(fake_.total(), 3) << "the request that found no place was sent";
  store->WaitIdle();
}

TEST_F(DynamoDbRetryTest, PersistentThrottlingEndsAsUnavailableWithinTheBudgetNamingOpAndType) {
  fake_.set_behavior([](const auto&) { return Error(400, "ThrottlingException"); });
  auto store = Open(/*budget_ms=*/300);
  const auto start = std::chrono::steady_clock::now();
  auto r = store->Update({"A", "B"}, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsStoreError(r.status()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("UpdateItem"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("ThrottlingException"));
  EXPECT_GE(fake_.total(), 2);
}

TEST_F(DynamoDbRetryTest, AWriteWhoseOutcomeIsUnknownIsNotRetriedButAReadIs) {
  fake_.set_behavior([](const auto&) { return Error(500, "InternalServerError"); });
  auto store = Open();
  auto w = store->Update({"A", "B"}, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("outcome is unknown"));
  EXPECT_EQ(fake_.total(), 1) << "a conditional ADD retried after a 500 could apply twice";
  fake_.reset_counts();
  auto r = store->Get({"A", "B"});
  EXPECT_FALSE(r.ok());
  EXPECT_GT(fake_.total(), 1);
}

// The request was sent and the connection dropped before any answer: DynamoDB may have applied it.
TEST_F(DynamoDbRetryTest, AWriteWhoseConnectionDropsAfterSendingIsNotRetriedButAReadIs) {
  fake_.set_behavior([](const auto&) { return Reply{.close_without_reply = true}; });
  auto store = Open();
  auto w = store->Update({"A", "B"}, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("outcome is unknown"));
  EXPECT_EQ(fake_.total(), 1) << "a conditional ADD sent again after a dropped connection could apply twice";
  fake_.reset_counts();
  auto r = store->Get({"A", "B"});
  EXPECT_FALSE(r.ok());
  EXPECT_GT(fake_.total(), 1);
  std::lock_guard lock(mu_);
  EXPECT_THAT(retries_, ::testing::Contains("GetItem:connection"));
  EXPECT_THAT(retries_, Not(::testing::Contains("UpdateItem:connection")));
}

// The same on a kept-alive connection: a write that goes out on it whole and finds it ended before
// any byte of the answer may have been applied (DynamoDB, or a proxy before it, dropped the
// connection after the write) — it is not sent again on a new connection. A read is.
TEST_F(DynamoDbRetryTest, AWriteWhoseReusedConnectionDropsAfterSendingIsNotSentAgain) {
  fake_.set_connections(FakeDownstream::Connections::kKeepAlive);
  fake_.set_behavior([](const FakeDownstream::Request& r) {
    if (r.headers.at("x-amz-target") == "DynamoDB_20120810.GetItem") return Reply{200, "{}"};
    return Reply{.close_without_reply = true};
  });
  auto store = Open();
  ASSERT_TRUE(store->Get({"A", "B"}).ok()) << "a connection to reuse";
  ASSERT_EQ(fake_.connections_accepted(), 1);
  fake_.reset_counts();
  auto w = store->Update({"A", "B"}, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("outcome is unknown"));
  EXPECT_EQ(fake_.total(), 1) << "sent once, on the reused connection; a second copy could apply twice";
  EXPECT_EQ(fake_.connections_accepted(), 1);
  std::lock_guard lock(mu_);
  EXPECT_THAT(retries_, ::testing::IsEmpty());
}

// A kept-alive connection DynamoDB closed while idle: the request never reached it there, and goes
// out once on a new connection — a write too, and without a retry of the policy.
TEST_F(DynamoDbRetryTest, AKeptAliveConnectionClosedWhileIdleIsReplacedForWritesToo) {
  fake_.set_connections(FakeDownstream::Connections::kAnnounceButDrop);
  fake_.set_behavior([](const auto&) { return Reply{200, "{}"}; });
  auto store = Open();
  for (int i = 0; i < 3; ++i) {
    // Closed while idle: once the fake has closed the last one. A write sent before its close lands
    // meets the connection reset with its outcome unknown, and is rightly not sent again (the test
    // above) — a race this test is not about.
    ASSERT_TRUE(testing::WaitUntil([&] { return fake_.connections_closed() >= i; }, std::chrono::seconds(5)));
    auto w = store->Update({"A", "B"}, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
    ASSERT_TRUE(w.ok()) << "write " << i << ": " << w.status();
  }
  EXPECT_EQ(fake_.total(), 3);
  EXPECT_EQ(fake_.connections_accepted(), 3);
  std::lock_guard lock(mu_);
  EXPECT_THAT(retries_, ::testing::IsEmpty());
}

TEST_F(DynamoDbRetryTest, ConditionFailuresAreResultsAndOtherErrorsAreClassified) {
  std::atomic<int> step{0};
  fake_.set_behavior([&](const auto&) {
    switch (step.load()) {
      case 0:
        return Error(400, "ConditionalCheckFailedException");
      case 1:
        return Error(400, "ResourceNotFoundException");
      case 2:
        return Error(400, "ValidationException");
      default:
        return Error(400, "UnrecognizedClientException");
    }
  });
  auto store = Open();
  auto cond = store->Put({"A", "B"}, {{"v", 1}}, Condition::ItemAbsent());
  ASSERT_TRUE(cond.ok()) << cond.status();
  EXPECT_FALSE(cond->applied);
  step = 1;
  auto missing = store->Get({"A", "B"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("store init"));
  step = 2;
  EXPECT_EQ(store->Get({"A", "B"}).status().code(), absl::StatusCode::kInvalidArgument);
  step = 3;
  EXPECT_EQ(store->Get({"A", "B"}).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(retries_.empty());
}

TEST_F(DynamoDbRetryTest, AnItemOverFourHundredKilobytesIsRefusedBeforeSending) {
  auto store = Open();
  auto r = store->Put({"A", "B"}, {{"blob", std::string(410 * 1024, 'x')}}, Condition::Always());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.total(), 0);
}

// An engine that reports no ConsumedCapacity: the units are counted from the item sizes (1 per started
// KB, at least 1), and a write refused by its condition still counts (DynamoDB charges it).
TEST_F(DynamoDbRetryTest, WriteUnitsAreCountedFromItemSizesWhenTheEngineReportsNone) {
  std::atomic<int> step{0};
  fake_.set_behavior([&](const auto&) {
    return step.load() == 0 ? Reply{200, "{}"} : Error(400, "ConditionalCheckFailedException");
  });
  std::vector<std::string> seen;
  DynamoDbItemStore::Options o;
  o.endpoint = fake_.base_url();
  o.credentials = toolgate::testing::TestCredentials();
  o.on_write_units = [&](const DynamoDbItemStore::WriteUnits& w) {
    seen.push_back(std::string(w.op) + " " + w.key.pk + "/" + w.key.sk + " " + std::to_string(w.units) +
                   (w.reported ? " reported" : " computed") + (w.applied ? "" : " refused"));
  };
  auto store = DynamoDbItemStore::Open(o, clock_);
  ASSERT_TRUE(store.ok()) << store.status();
  // 2,500 bytes of value plus names and keys: 3 started KB.
  ASSERT_TRUE((*store)->Put({"A", "B"}, {{"blob", std::string(2500, 'x')}}, Condition::Always())->applied);
  EXPECT_DOUBLE_EQ((*store)->consumed_write_units(), 3);
  ASSERT_TRUE((*store)->Put({"A", "C"}, {{"v", 1}}, Condition::Always())->applied);
  step = 1;
  EXPECT_FALSE((*store)->Erase({"A", "C"}, Condition::ItemExists())->applied);
  EXPECT_DOUBLE_EQ((*store)->consumed_write_units(), 5);
  EXPECT_THAT(seen, ::testing::ElementsAre("PutItem A/B 3.000000 computed", "PutItem A/C 1.000000 computed",
                                           "DeleteItem A/C 1.000000 computed refused"));
  for (const auto& r : fake_.requests()) {
    EXPECT_EQ(nlohmann::json::parse(r.body).value("ReturnConsumedCapacity", ""), "TOTAL") << r.body;
  }
}

// The host's clock against DynamoDB's, from each answer's Date (whole seconds): the lead (or lag)
// beyond what the header's resolution leaves open, 0 within it.
TEST_F(DynamoDbRetryTest, EachAnswersDateTellsHowFarThisHostsClockIsFromDynamoDbs) {
  std::string date;
  fake_.set_behavior([&](const FakeDownstream::Request&) {
    Reply r{200, R"({})"};
    r.headers.push_back({"Date", date});
    return r;
  });
  const auto http_date = [](int64_t epoch_s) {
    const std::time_t t = static_cast<std::time_t>(epoch_s);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[64];
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return std::string(text);
  };
  auto store = Open();
  EXPECT_FALSE(store->clock_reading().has_value()) << "a reading before any answer";
  const int64_t now_s = clock_.now_epoch_ms() / 1000;
  struct Case {
    int64_t server_s;
    int64_t least_ms, most_ms;  // the reading's bounds (the manual clock stands still during the call)
  } cases[] = {
      {now_s, 0, 0},                   // the same second: agrees
      {now_s - 20, 19'001, 20'000},    // DynamoDB 20 s behind: this host ahead
      {now_s + 30, -30'000, -29'001},  // DynamoDB 30 s ahead: this host behind
  };
  for (const Case& c : cases) {
    date = http_date(c.server_s);
    ASSERT_TRUE(store->Get({"A", "B"}).ok());
    auto reading = store->clock_reading();
    ASSERT_TRUE(reading.has_value()) << date;
    EXPECT_GE(reading->ahead_ms, c.least_ms) << date;
    EXPECT_LE(reading->ahead_ms, c.most_ms) << date;
    EXPECT_EQ(reading->measured_at_ms, clock_.now_epoch_ms());
  }
  // An answer whose Date does not parse leaves the last reading as it was.
  date = "yesterday";
  ASSERT_TRUE(store->Get({"A", "B"}).ok());
  EXPECT_LE(store->clock_reading()->ahead_ms, -29'001);
}

TEST(DynamoDbClockTest, HttpDatesParseAndTheReadingIsTheBoundNearerZero) {
  EXPECT_EQ(DynamoDbItemStore::ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);  // RFC 9110's example
  EXPECT_EQ(DynamoDbItemStore::ParseHttpDate("Sun, 06 Nov 1994 08:49:37"), std::nullopt);
  EXPECT_EQ(DynamoDbItemStore::ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), std::nullopt);
  EXPECT_EQ(DynamoDbItemStore::ParseHttpDate(""), std::nullopt);
  // DynamoDB read [1000 s, 1001 s) somewhere in a round trip from 1'002'000 to 1'002'400 ms here.
  EXPECT_EQ(DynamoDbItemStore::ClockAheadMs(1000, 1'002'000, 1'002'400), 1'001);
  // A round trip that spans the second the header names: nothing can be said.
  EXPECT_EQ(DynamoDbItemStore::ClockAheadMs(1000, 999'800, 1'000'300), 0);
  EXPECT_EQ(DynamoDbItemStore::ClockAheadMs(1000, 997'000, 997'100), -2'900);
}

TEST(DynamoDbServerTest, AnUnreachableEndpointIsUnavailableAfterRetries) {
  ManualClock clock;
  DynamoDbItemStore::Options o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(toolgate::testing::FreeLoopbackPort());
  o.credentials = toolgate::testing::TestCredentials();
  o.retry_budget_ms = 200;
  int retries = 0;
  o.on_retry = [&](std::string_view, std::string_view reason) { retries += reason == "connection"; };
  auto store = DynamoDbItemStore::Open(o, clock);
  ASSERT_TRUE(store.ok());
  auto r = (*store)->Get({"A", "B"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("connection failed"));
  EXPECT_GT(retries, 0);
}

TEST(DynamoDbServerTest, InitTableIsIdempotentAndSaysWhenTtlIsUnsupported) {
  ManualClock clock;
  toolgate::testing::TempDir dir;
  auto store = toolgate::testing::OpenDynamo(toolgate::testing::TableFor(dir), clock);  // first init
  ASSERT_NE(store, nullptr);
  auto again = store->InitTable();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(*again, HasSubstr("exists"));
  EXPECT_THAT(*again, HasSubstr("ACTIVE"));
  EXPECT_THAT(*again, HasSubstr("TTL"));
  // Expired items are hidden from reads even though this engine never deletes them.
  ASSERT_TRUE(store->Put({"A", "B"}, {{"ttl", clock.now_epoch_sec() - 1}}, Condition::Always()).ok());
  EXPECT_FALSE(store->Get({"A", "B"})->has_value());
  ASSERT_TRUE(store->DeleteTable().ok());
  EXPECT_EQ(store->Get({"A", "B"}).status().code(), absl::StatusCode::kFailedPrecondition);
}

// dynalite reports ConsumedCapacity (DynamoDB's rule: the larger of the item before and after, per
// started KB); the adapter adds it up.
TEST(DynamoDbServerTest, WriteUnitsAreTheConsumedCapacityTheEngineReports) {
  ManualClock clock;
  toolgate::testing::TempDir dir;
  auto store = toolgate::testing::OpenDynamo(toolgate::testing::TableFor(dir), clock);
  ASSERT_NE(store, nullptr);
  const double start = store->consumed_write_units();
  ASSERT_TRUE(store->Put({"A", "B"}, {{"v", 1}}, Condition::Always())->applied);
  EXPECT_DOUBLE_EQ(store->consumed_write_units() - start, 1);
  ASSERT_TRUE(store->Put({"A", "B"}, {{"blob", std::string(2500, 'x')}}, Condition::Always())->applied);
  EXPECT_DOUBLE_EQ(store->consumed_write_units() - start, 4);
  // Shrinking it still costs the larger size; deleting it costs its size.
  ASSERT_TRUE(store->Update({"A", "B"}, {UpdateOp::Remove(AttributePath::Top("blob"))}, Condition::Always()).ok());
  EXPECT_DOUBLE_EQ(store->consumed_write_units() - start, 7);
  ASSERT_TRUE(store->Erase({"A", "B"}, Condition::Always())->applied);
  EXPECT_DOUBLE_EQ(store->consumed_write_units() - start, 8);
}

// dynalite runs on this host: its Date agrees with this host's clock.
TEST(DynamoDbServerTest, AServerOnThisHostAgreesWithItsClock) {
  toolgate::testing::TempDir dir;
  SystemClock clock;
  auto store = toolgate::testing::OpenDynamo(toolgate::testing::TableFor(dir), clock);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Get({"A", "B"}).ok());
  auto reading = store->clock_reading();
  ASSERT_TRUE(reading.has_value()) << "dynalite's answers carry no Date";
  EXPECT_EQ(reading->ahead_ms, 0);
}

// HTTPS: dynalite behind a TLS front whose certificate (for IP 127.0.0.1) is made here. The server is
// verified against `ca_file`; without it, the system CAs refuse it and nothing is sent in clear.
TEST(DynamoDbServerTest, AnHttpsEndpointIsVerifiedAndThenWorks) {
  toolgate::testing::TempDir dir;
  const std::string cert = dir.file("cert.pem"), key = dir.file("key.pem");
  const std::string make_cert =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(make_cert.c_str()), 0) << "openssl could not make a test certificate";
  auto& dynalite = toolgate::testing::Dynalite::Shared();
  ASSERT_TRUE(dynalite.ok()) << dynalite.error();
  toolgate::testing::ChildProcess proxy({"/usr/bin/env", "node", TOOLGATE_TLS_PROXY, cert, key, "0",
                                         dynalite.endpoint().substr(dynalite.endpoint().rfind(':') + 1)});
  const std::optional<std::string> listening = proxy.ReadLine(std::chrono::seconds(20));
  ASSERT_TRUE(listening.has_value() && listening->rfind("listening ", 0) == 0) << listening.value_or("(nothing)");
  const int port = std::stoi(listening->substr(sizeof("listening ") - 1));
  ASSERT_GT(port, 0);

  ManualClock clock;
  DynamoDbItemStore::Options o;
  o.endpoint = "https://127.0.0.1:" + std::to_string(port);
  o.table = toolgate::testing::TableFor(dir);
  o.credentials = toolgate::testing::TestCredentials();
  o.retry_budget_ms = 200;
  auto untrusted = DynamoDbItemStore::Open(o, clock);
  ASSERT_TRUE(untrusted.ok());
  auto refused = (*untrusted)->Get({"A", "B"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("TLS"));

  o.ca_file = cert;
  auto trusted = DynamoDbItemStore::Open(o, clock);
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  ASSERT_TRUE((*trusted)->InitTable().ok());
  ASSERT_TRUE((*trusted)->Put({"A", "B"}, {{"v", "over tls"}}, Condition::ItemAbsent())->applied);
  for (int i = 0; i < 3; ++i) {  // a kept-alive TLS connection serves several requests
    auto got = (*trusted)->Get({"A", "B"});
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ(GetString(**got, "v"), "over tls");
  }
}

}  // namespace
}  // namespace toolgate::store
