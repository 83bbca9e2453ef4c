// The events of a call's own path held in its execution record (DESIGN §16): one write per commit,
// the same chain as the items they replace (seq, at, data, hash), and `ledger verify` catches every
// change to them that it caught in items — an edited event, a removed one, a record that no longer
// says what its EXECUTION_RECEIVED said. Later events stay items after them. ToolInvoker over the real
// services and a memory store; the verifier as `ledger verify` runs it.

#include "api/invocation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "invoker_support.h"
#include "nlohmann/json.hpp"
#include "toolgate/services/ledger_verifier.h"
#include "sync_point_store.h"
#include "toolgate/engine/replayer.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class OwnPathLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 4\n", "own.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    stack_ = std::make_unique<toolgate::testing::InvokerStack>(memory_, clock_, std::move(*c));
    ASSERT_TRUE(stack_->slots.EnsureConnector("crm", stack_->config.connectors.at("crm").concurrency).ok());
  }

  json Call(const std::string& idempotency_key = "", const std::string& tenant = "tenant-a",
            const std::string& input = R"({"k":"v"})") {
    InvokeRequest r;
    r.principal = {"user-1", tenant, "", {}};
    r.tool_name = "crm.update";
    r.input_json = input;
    r.idempotency_key = idempotency_key;
    auto admitted = stack_->invoker.Admit(r);
    if (auto* refused = std::get_if<InvokeResult>(&admitted)) return api::InvocationBody(*refused);
    clock_.advance(std::chrono::milliseconds(3));
    DownstreamResult d;
    d.status = 200;
    d.body = R"({"ok":true})";
    d.latency_ms = 3;
    return api::InvocationBody(
        stack_->invoker.Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)), d));
  }

  store::Item RecordItem(const std::string& id) {
    auto item = memory_.Get(ExecutionStore::Key("tenant-a", id));
    EXPECT_TRUE(item.ok() && item->has_value());
    return item.ok() && item->has_value() ? **item : store::Item{};
  }
  void PutRecordItem(const std::string& id, const store::Item& item) {
    ASSERT_TRUE(memory_.Put(ExecutionStore::Key("tenant-a", id), item, store::Condition::Always()).ok());
  }
  int EventItems(const std::string& id) {
    auto page = memory_.Query({Ledger::ExecutionChain(id), "EVENT#", 100, std::nullopt, false});
    EXPECT_TRUE(page.ok());
    return page.ok() ? static_cast<int>(page->items.size()) : -1;
  }
  // What `ledger verify` says: empty when every chain passes.
  std::string Verify() {
    LedgerVerifier verifier(memory_, clock_);
    auto report = verifier.VerifyAll();
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? report->problem : "unreadable";
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore memory_{clock_};
  std::unique_ptr<toolgate::testing::InvokerStack> stack_;
};

TEST_F(OwnPathLedgerTest, ACallsEventsLiveInItsRecordAndHashAsItemsWould) {
  const json done = Call();
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  const std::string id = done["execution_id"];
  EXPECT_EQ(EventItems(id), 0) << "no event item: the record holds them";
  auto rec = stack_->executions.Get("tenant-a", id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  auto events = stack_->ledger.ReadExecution(*rec);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  const std::vector<std::string> types = {"EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"};
  std::string prev;
  for (size_t i = 0; i < events->size(); ++i) {
    const LedgerEvent& e = (*events)[i];
    EXPECT_EQ(e.seq, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(e.type, types[i]);
    EXPECT_EQ(e.actor, "user-1");
    EXPECT_EQ(e.prev_hash, prev);
    // The hash an event item of the same content would carry, computed the way items are verified.
    EXPECT_EQ(Ledger::Hash(prev, e), e.hash) << e.type;
    prev = e.hash;
  }
  EXPECT_EQ(rec->last_seq, 3);
  EXPECT_EQ(rec->last_hash, events->back().hash);
  EXPECT_EQ(json::parse((*events)[0].data), ExecutionStore::ReceivedData(*rec));
  EXPECT_EQ((*events)[2].at_ms - (*events)[0].at_ms, 3) << "each event keeps its own time";
  EXPECT_EQ(Verify(), "");

  // What the record leaves out, it can rebuild: the input's hash, empty fields.
  const store::Item item = RecordItem(id);
  EXPECT_EQ(item.count("input_hash"), 0u);
  EXPECT_EQ(item.count("reason"), 0u) << "an empty string is not stored";
  EXPECT_EQ(item.count("unguarded"), 0u) << "nor a false flag";
  EXPECT_EQ(json::parse((*events)[2].data)["result_sha256"], Sha256Hex(rec->result_json));
  EXPECT_EQ(json::parse(item.at("events").as_string())[0], json({{"v", 2}})) << "the list's header comes first";
  EXPECT_EQ(json::parse(item.at("events").as_string())[3][2]["result_sha256"], true)
      << "the result's hash is rebuilt from the record, not stored twice";
  EXPECT_EQ(rec->input_hash, Sha256Hex("crm.update\n{\"k\":\"v\"}"));
  // The close appended its event to the opening's text: the same text encoding all three writes.
  EXPECT_EQ(rec->own_events, Ledger::EncodeOwnPath(*events, *rec));
}

TEST_F(OwnPathLedgerTest, ExtendingAnEncodedPrefixWritesWhatEncodingEveryEventWould) {
  const json done = Call();
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  auto rec = stack_->executions.Get("tenant-a", done["execution_id"].get<std::string>());
  ASSERT_TRUE(rec.ok()) << rec.status();
  auto events = stack_->ledger.ReadExecution(*rec);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  const std::string whole = Ledger::EncodeOwnPath(*events, *rec);
  for (size_t n = 0; n <= events->size(); ++n) {
    const std::vector<LedgerEvent> first(events->begin(), events->begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_EQ(Ledger::ExtendOwnPath(Ledger::EncodeOwnPath(first, *rec), n, *events, *rec), whole) << n;
  }
  // Data the ledger made canonical is copied as it is: the same text as parsing and spelling it again
  // (the events read back are not marked so; the result's hash is replaced either way).
  std::vector<LedgerEvent> marked = *events;
  for (LedgerEvent& e : marked) e.data_canonical = true;
  EXPECT_EQ(Ledger::EncodeOwnPath(marked, *rec), whole);
  // Text that cannot be a prefix is not trusted: everything is encoded.
  EXPECT_EQ(Ledger::ExtendOwnPath("", 2, *events, *rec), whole);
  EXPECT_EQ(Ledger::ExtendOwnPath("[]", 5, *events, *rec), whole);
  // The result's hash is still rebuilt when the outcome's event is among those appended.
  EXPECT_EQ(json::parse(whole)[3][2]["result_sha256"], true);
}

// The received data written straight as text is the canonical text of ReceivedData, whatever the
// record's strings hold: quotes, control characters, UTF-8, and bytes that are not UTF-8.
TEST_F(OwnPathLedgerTest, TheReceivedDataWrittenAsTextIsItsCanonicalText) {
  const std::vector<std::string> strings = {"",
                                            "crm.update",
                                            "a \"quoted\" \\ back\\slash",
                                            std::string("nul\0and\x01\x1f\n\t", 12),
                                            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                            "bad \xff\xfe utf-8 \xc3",
                                            "</script>{}[],:"};
  for (size_t i = 0; i < strings.size(); ++i) {
    ExecutionRecord r;
    r.tool_name = strings[i];
    r.connector_id = strings[(i + 1) % strings.size()];
    r.action_type = strings[(i + 2) % strings.size()];
    r.tenant_id = strings[(i + 3) % strings.size()];
    r.intent_key = strings[(i + 4) % strings.size()];
    EXPECT_EQ(ExecutionStore::ReceivedText(r),
              ExecutionStore::ReceivedData(r).dump(-1, ' ', false, json::error_handler_t::replace))
        << i;
  }
}

// A result's hash in data the ledger made canonical is replaced in the text; the list is the one
// parsing that data, replacing the hash and spelling it again gives (the path of data not marked
// canonical), and it decodes to the same chain. Only a top-level `result_sha256` equal to the
// record's result's hash is replaced: not a nested one, not another value, not one in a string.
TEST_F(OwnPathLedgerTest, AResultsHashIsReplacedInCanonicalTextAsInTheParsedData) {
  ExecutionRecord rec;
  rec.execution_id = "exec-1";
  rec.tenant_id = "tenant-a";
  rec.tool_name = "crm.update";
  rec.created_at_ms = clock_.now_epoch_ms();
  rec.result_json = R"({"ok":true})";
  const std::string sha = Sha256Hex(rec.result_json);
  const std::vector<json> datas = {
      {{"latency_ms", 3}, {"outcome", "SUCCEEDED"}, {"result_sha256", sha}},
      {{"downstream_status", 200}, {"result_sha256", sha}, {"z", {{"result_sha256", sha}}}},
      {{"a", {{"result_sha256", sha}, {"b", json::array({"]", "}", "\"", sha})}}}, {"result_sha256", sha}},
      {{"result", {{"result_sha256", sha}}}},
      {{"note", "\"result_sha256\":\"" + sha + "\""}},
      {{"result_sha256", "0" + sha.substr(1)}},
      {{"result_sha256", sha + "0"}},
      {{"result_sha256", true}},
      {{"result_sha256", 7}},
      {{"result_sha256", nullptr}},
      {{"a\"result_sha256", sha}, {"result_sha256", sha}},
      {{"result_sha256", json::array({sha})}},
      {{"x", 1.5e300}, {"y", -0.0}, {"result_sha256", sha}, {"\u00e9", "\u00e9"}},
      json::array({{{"result_sha256", sha}}}),
      json(sha),
  };
  for (size_t i = 0; i < datas.size(); ++i) {
    LedgerEvent made = stack_->ledger.MakeEventJson({}, "TOOL_SUCCEEDED", "user-1", datas[i]);
    ASSERT_TRUE(made.data_canonical);
    LedgerEvent parsed = made;
    parsed.data_canonical = false;
    const std::string text = Ledger::EncodeOwnPath({made}, rec);
    EXPECT_EQ(text, Ledger::EncodeOwnPath({parsed}, rec)) << i << ": " << datas[i];
    // A `result_sha256` that is `true` already reads back as the result's hash: the encoding's one
    // ambiguity, which no event the engine makes has (its result_sha256 is always the hex digest).
    if (datas[i].is_object() && datas[i].contains("result_sha256") && datas[i]["result_sha256"] == true) continue;
    rec.own_events = text;
    auto decoded = Ledger::DecodeOwnPath(rec);
    ASSERT_TRUE(decoded.ok()) << i << ": " << decoded.status();
    ASSERT_EQ(decoded->size(), 1u);
    EXPECT_EQ((*decoded)[0].data, made.data) << i;
    EXPECT_EQ((*decoded)[0].hash, made.hash) << i;
  }
  // Replaced where it should be: the first data's hash became true, the fourth's nested one did not.
  EXPECT_EQ(json::parse(Ledger::EncodeOwnPath({stack_->ledger.MakeEventJson({}, "T", "user-1", datas[0])},
                                              rec))[1][2]["result_sha256"],
            true);
  EXPECT_EQ(json::parse(Ledger::EncodeOwnPath({stack_->ledger.MakeEventJson({}, "T", "user-1", datas[3])},
                                              rec))[1][2]["result"]["result_sha256"],
            sha);
}

// An item's size by DynamoDB's rule (what a write is billed by: 1 unit per started KB): names and
// values, a number (13) as its digits, (n + 1) / 2 + 1 bytes; the key attributes included.
size_t BilledSize(const store::ItemKey& key, const store::Item& item) {
  size_t n = 2 + key.pk.size() + 2 + key.sk.size();
  for (const auto& [name, value] : item) {
    n += name.size();
    if (value.is_string()) {
      n += value.as_string().size();
    } else if (value.is_int()) {
      n += (std::to_string(std::abs(value.as_int())).size() + 1) / 2 + 1;
    } else {
      n += 1;  // a bool (no record attribute is a double or a map)
    }
  }
  return n;
}

// DESIGN §16: a successful call with a 256 B input and no idempotency key costs 4 write units on
// DynamoDB (bench/write_units.sh): the record, written twice, must stay within one KB with its events.
TEST_F(OwnPathLedgerTest, ARecordWithItsEventsStaysWithinOneWriteUnitForA256ByteInput) {
  const std::string input = R"({"text":")" + std::string(256 - 11, 'x') + R"("})";
  ASSERT_EQ(input.size(), 256u);
  const json done = Call("", "tenant-a", input);
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  const std::string id = done["execution_id"];
  const size_t size = BilledSize(ExecutionStore::Key("tenant-a", id), RecordItem(id));
  EXPECT_LE(size, 1024u) << "two write units per record write";
  std::printf("a 256 B input's record with its three events: %zu B billed\n", size);
}

TEST_F(OwnPathLedgerTest, VerifyCatchesEveryChangeToTheEventsARecordHolds) {
  struct Case {
    std::string name;
    std::function<void(store::Item&)> tamper;
    std::string expected;
  };
  auto events_of = [](store::Item& item) { return json::parse(item.at("events").as_string()); };
  auto set_events = [](store::Item& item, const json& list) { item["events"] = list.dump(); };
  const std::vector<Case> cases = {
      {"edited data",
       [&](store::Item& item) {
         json list = events_of(item);
         list[2][2]["probe"] = true;
         set_events(item, list);
       },
       "event 3 does not match the hash its record holds"},
      {"edited time",
       [&](store::Item& item) {
         json list = events_of(item);
         list[3][1] = list[3][1].get<int64_t>() + 1000;
         set_events(item, list);
       },
       "event 3 does not match the hash its record holds"},
      {"edited actor",
       [&](store::Item& item) {
         json list = events_of(item);
         list[2].push_back("someone-else");
         set_events(item, list);
       },
       "event 3 does not match the hash its record holds"},
      {"last removed",
       [&](store::Item& item) {
         json list = events_of(item);
         list.erase(3);
         set_events(item, list);
       },
       "event 3, the last its record names, is missing"},
      {"middle removed",
       [&](store::Item& item) {
         json list = events_of(item);
         list.erase(2);
         set_events(item, list);
       },
       "event 3, the last its record names, is missing"},
      {"all removed", [&](store::Item& item) { item.erase("events"); }, "its chain is missing"},
      {"not a list", [&](store::Item& item) { item["events"] = "[[\"EXECUTION_RECEIVED\""; },
       "the events its record holds cannot be read"},
      {"record's tool edited", [&](store::Item& item) { item["tool_name"] = "crm.delete"; },
       "event 3 does not match the hash its record holds"},
      {"record's result edited", [&](store::Item& item) { item["result_json"] = R"({"ok":false})"; },
       "event 3 does not match the hash its record holds"},
      {"record's outcome edited", [&](store::Item& item) { item["outcome"] = "FAILED"; },
       "its record says FAILED but event 3 (TOOL_SUCCEEDED)"},
      // EXECUTION_RECEIVED's data written out (as the record had it; its hash unchanged) and the
      // record's intent key edited: a replay would send the downstream another Idempotency-Key.
      {"record's intent key edited beside a written-out EXECUTION_RECEIVED",
       [&](store::Item& item) {
         json list = events_of(item);
         list[1][2] = json::parse(ExecutionStore::ReceivedText(*ExecutionStore::FromItem(item)));
         set_events(item, list);
         item["intent_key"] = "forged-key";
       },
       "its record's intent_key 'forged-key' differs from EXECUTION_RECEIVED's"},
      // The input a replay sends is covered by EXECUTION_RECEIVED's input_hash, rebuilt from the record.
      {"record's input edited", [&](store::Item& item) { item["input_json"] = R"({"k":"forged"})"; },
       "event 3 does not match the hash its record holds"},
      {"record's input removed", [&](store::Item& item) { item.erase("input_json"); },
       "event 3 does not match the hash its record holds"},
      {"record's input edited beside a written-out EXECUTION_RECEIVED",
       [&](store::Item& item) {
         json list = events_of(item);
         list[1][2] = json::parse(ExecutionStore::ReceivedText(*ExecutionStore::FromItem(item)));
         set_events(item, list);
         item["input_json"] = R"({"k":"forged"})";
       },
       "its record's input_hash"},
      // Without its header the list reads as one written before EXECUTION_RECEIVED carried the
      // input's hash: another EXECUTION_RECEIVED, so other hashes.
      {"header removed",
       [&](store::Item& item) {
         json list = events_of(item);
         list.erase(0);
         set_events(item, list);
       },
       "event 3 does not match the hash its record holds"},
      {"header changed",
       [&](store::Item& item) {
         json list = events_of(item);
         list[0]["v"] = 3;
         set_events(item, list);
       },
       "the events its record holds cannot be read"},
      // One event past the anchor is a crash's trailing item, never one the record holds (written with
      // its anchor in one write): an event added to the list fails.
      {"event added",
       [&](store::Item& item) {
         json list = events_of(item);
         list.push_back({"TOOL_SUCCEEDED", 9, {{"outcome", "SUCCEEDED"}}});
         set_events(item, list);
       },
       "event 4 is held in its record, but its record's anchor names event 3 as the last"},
      {"time beyond a year",
       [&](store::Item& item) {
         json list = events_of(item);
         list[2][1] = int64_t{9'000'000'000'000'000'000};
         set_events(item, list);
       },
       "the events its record holds cannot be read"},
  };
  for (const Case& c : cases) {
    const json done = Call();
    ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
    const std::string id = done["execution_id"];
    const store::Item original = RecordItem(id);
    ASSERT_EQ(Verify(), "") << c.name;
    store::Item tampered = original;
    c.tamper(tampered);
    PutRecordItem(id, tampered);
    EXPECT_THAT(Verify(), HasSubstr(c.expected)) << c.name;
    PutRecordItem(id, original);
    EXPECT_EQ(Verify(), "") << c.name << ": restored";
  }
}

// A list written before EXECUTION_RECEIVED carried the input's hash (no header; its RECEIVED rebuilt
// without it) reads and verifies as it did, and a close appends to it in its own form.
TEST_F(OwnPathLedgerTest, AListWrittenBeforeTheInputWasCoveredReadsAsItDid) {
  const json done = Call();
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  const std::string id = done["execution_id"];
  store::Item item = RecordItem(id);
  json list = json::parse(item.at("events").as_string());
  list.erase(0);  // as an earlier version wrote it
  item["events"] = list.dump();
  auto earlier = ExecutionStore::FromItem(item);
  ASSERT_TRUE(earlier.ok()) << earlier.status();
  auto events = Ledger::DecodeOwnPath(*earlier);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ(json::parse((*events)[0].data), ExecutionStore::ReceivedData(*earlier, /*with_input=*/false));
  EXPECT_FALSE(json::parse((*events)[0].data).contains("input_hash"));
  item["last_hash"] = events->back().hash;  // its anchor, as that version wrote it
  PutRecordItem(id, item);
  EXPECT_EQ(Verify(), "");
  // A close extending a list of that form (the opening's two events) keeps its form.
  const std::string prefix = json(json::array({list[0], list[1]})).dump();
  EXPECT_EQ(Ledger::ExtendOwnPath(prefix, 2, *events, *earlier), item.at("events").as_string());
}

// An intent is held for the call's timeout, its 30 s hold and the clock skew allowed (S7): a host
// whose clock runs max_clock_skew_s ahead must not take a live intent over and send its key again.
TEST_F(OwnPathLedgerTest, AnIntentInProgressIsHeldPastTheCallByTheClockSkew) {
  const ConnectorConfig& crm = stack_->config.connectors.at("crm");
  InvokeRequest r;
  r.principal = {"user-1", "tenant-a", "", {}};
  r.tool_name = "crm.update";
  r.input_json = R"({"k":"v"})";
  r.idempotency_key = "pay-7";
  auto first = stack_->invoker.Admit(r);
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(first)) << "the first call runs";
  clock_.advance(std::chrono::milliseconds(crm.timeout_ms + 30'000 + crm.concurrency.max_clock_skew_s * 1000 - 1));
  auto held = stack_->invoker.Admit(r);
  ASSERT_TRUE(std::holds_alternative<InvokeResult>(held)) << "a live intent was taken over";
  const json answer = api::InvocationBody(std::get<InvokeResult>(held));
  EXPECT_EQ(answer["outcome"], "DEFERRED") << answer;
  EXPECT_EQ(answer["reason"], "intent_in_progress") << answer;
  clock_.advance(std::chrono::milliseconds(1));
  auto taken = stack_->invoker.Admit(r);
  EXPECT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(taken)) << "an abandoned intent stayed held";
}

TEST_F(OwnPathLedgerTest, LaterEventsAreItemsAfterTheRecordsOwnAndAnchoredByIt) {
  const json first = Call("order-1");
  ASSERT_EQ(first["outcome"], "SUCCEEDED") << first;
  const std::string id = first["execution_id"];
  const json hit = Call("order-1");  // INTENT_HIT on the original's chain, after its own events
  ASSERT_EQ(hit["intent_hit"], true) << hit;
  EXPECT_EQ(EventItems(id), 1);
  auto rec = stack_->executions.Get("tenant-a", id);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->last_seq, 4);
  auto events = stack_->ledger.ReadExecution(*rec);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ(events->back().type, "INTENT_HIT");
  EXPECT_EQ(events->back().prev_hash, (*events)[2].hash) << "the item links to the last event the record holds";
  EXPECT_EQ(Verify(), "");

  // The item removed: the record's anchor names it.
  ASSERT_TRUE(memory_.Erase({Ledger::ExecutionChain(id), "EVENT#000000000004"}, store::Condition::Always()).ok());
  EXPECT_THAT(Verify(), HasSubstr("event 4, the last its record names, is missing"));
}

// An intent's result is answered only as the execution it names vouches for it: an intent edited in
// the store to carry another result, to name an execution missing before its retention ends (or with
// no expiry kept for it at all), or copied into another tenant's partition answers nothing (DEFERRED
// store_unavailable) and runs nothing; put back, it answers again.
TEST_F(OwnPathLedgerTest, AnIntentItsExecutionDoesNotVouchForAnswersNothing) {
  const json first = Call("order-5");
  ASSERT_EQ(first["outcome"], "SUCCEEDED") << first;
  const std::string id = first["execution_id"];
  const store::ItemKey intent = IntentStore::Key("tenant-a", "order-5");
  const store::Item kept = **memory_.Get(intent);
  auto put = [&](const store::ItemKey& key, const store::Item& item) {
    ASSERT_TRUE(memory_.Put(key, item, store::Condition::Always()).ok());
  };

  store::Item forged = kept;
  forged["result_json"] = R"({"refund_to":"attacker"})";
  put(intent, forged);
  json hit = Call("order-5");
  EXPECT_EQ(hit["outcome"], "DEFERRED") << hit;
  EXPECT_EQ(hit["reason"], "store_unavailable") << hit;
  EXPECT_EQ(hit.value("result", json()), json()) << "the forged result was answered";

  forged = kept;
  forged["execution_id"] = "01900000-0000-7000-8000-000000000000";
  put(intent, forged);
  EXPECT_EQ(Call("order-5")["outcome"], "DEFERRED") << "an execution missing before its retention ends";
  // The expiry left out, as a forger would (read as 0): not an execution gone with its retention.
  ASSERT_GT(store::GetInt(kept, "execution_expires_at_s").value_or(0), 0) << "the intent keeps its execution's expiry";
  forged.erase("execution_expires_at_s");
  put(intent, forged);
  hit = Call("order-5");
  EXPECT_EQ(hit["outcome"], "DEFERRED") << hit;
  EXPECT_EQ(hit.value("result", json()), json()) << "a forged result naming a made-up execution was answered";
  EXPECT_THAT(Verify(), HasSubstr("intent order-5 of tenant tenant-a: it names execution "
                                  "01900000-0000-7000-8000-000000000000, which is missing, and no expiry is kept"));

  // tenant-a's intent planted under tenant-b: tenant-b's call must not get tenant-a's result.
  put(IntentStore::Key("tenant-b", "order-5"), kept);
  hit = Call("order-5", "tenant-b");
  EXPECT_EQ(hit["outcome"], "DEFERRED") << hit;
  EXPECT_NE(hit.value("execution_id", ""), id);

  put(intent, kept);
  hit = Call("order-5");
  EXPECT_EQ(hit["intent_hit"], true) << hit;
  EXPECT_EQ(hit["result"], json({{"ok", true}}));
}

// A damaged original does not hold its intent hostage: a repeat is still answered from the intent's
// claim (and verify names the damage).
TEST_F(OwnPathLedgerTest, AnIntentHitOnADamagedOriginalIsAnsweredFromTheClaim) {
  const json first = Call("order-9");
  ASSERT_EQ(first["outcome"], "SUCCEEDED") << first;
  const std::string id = first["execution_id"];
  store::Item item = RecordItem(id);
  item["events"] = "not a list";
  PutRecordItem(id, item);
  const json hit = Call("order-9");
  EXPECT_EQ(hit["outcome"], "SUCCEEDED") << hit;
  EXPECT_EQ(hit["intent_hit"], true) << hit;
  EXPECT_EQ(hit["execution_id"], id);
  EXPECT_EQ(EventItems(id), 0) << "nothing appended to a chain whose end cannot be known";
  EXPECT_THAT(Verify(), HasSubstr("the events its record holds cannot be read"));
}

// A deduplicated replay's REPLAY_DEDUPED carries the whole earlier result, which the record holds
// already: past Ledger::kMaxOwnPathBytes its events go as items, so the record stays bounded.
TEST_F(OwnPathLedgerTest, EventsTooBigToHoldAreItemsAndTheChainStillVerifies) {
  const json original = Call();
  ASSERT_EQ(original["outcome"], "SUCCEEDED") << original;
  const std::string big = json({{"blob", std::string(20'000, 'r')}}).dump();
  for (const std::string& result : {std::string(R"({"ok":true})"), big}) {
    InvokeRequest r;
    r.principal = {"user-1", "tenant-a", "", {}};
    r.tool_name = "crm.update";
    r.input_json = R"({"k":"v"})";
    r.replay = ReplayContext{original["execution_id"],
                             original["execution_id"],
                             Outcome::kSucceeded,
                             result,
                             original["execution_id"],
                             "check",
                             "ops",
                             false};
    auto admitted = stack_->invoker.Admit(r);
    auto* answer = std::get_if<InvokeResult>(&admitted);
    ASSERT_NE(answer, nullptr) << "a deduplicated replay is answered at admission";
    ASSERT_EQ(answer->outcome, Outcome::kSucceeded);
    auto rec = stack_->executions.Get("tenant-a", answer->execution_id);
    ASSERT_TRUE(rec.ok()) << rec.status();
    const bool small = result.size() < 100;
    EXPECT_EQ(rec->own_events.empty(), !small) << result.size();
    EXPECT_EQ(EventItems(answer->execution_id), small ? 0 : 4);  // REPLAY_STARTED, RECEIVED, DEDUPED, COMPLETED
    EXPECT_LT(rec->own_events.size(), Ledger::kMaxOwnPathBytes);
    auto events = stack_->ledger.ReadExecution(*rec);
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), 4u);
    EXPECT_EQ((*events)[2].type, "REPLAY_DEDUPED");
  }
  EXPECT_EQ(Verify(), "");
}

TEST_F(OwnPathLedgerTest, AnExecutionIsFoundByItsIdAloneThroughTheTenantList) {
  const json a = Call("", "tenant-a");
  const json b = Call("", "tenant-b");
  ASSERT_EQ(a["outcome"], "SUCCEEDED");
  ASSERT_EQ(b["outcome"], "SUCCEEDED");
  // Another process (a fresh ExecutionStore) finds both: the tenant list is in the store.
  ExecutionStore other(memory_, clock_);
  for (const json& done : {a, b}) {
    const std::string id = done["execution_id"];
    EXPECT_EQ(EventItems(id), 0);
    auto found = other.Locate(id);
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ(found->execution_id, id);
  }
  EXPECT_EQ(other.Locate("0190a0b0-0000-7000-8000-000000000000").status().code(), absl::StatusCode::kNotFound);
}

// A replay checks its original against the chain before it sends anything, and the chain it reads
// may have grown since it read the record: other parties' events (here two intent hits', as
// IntentHit appends them) land in between. Those events are past the record's anchor and say nothing
// about the record, so the replay goes ahead, and its REPLAY_REQUESTED goes after them.
TEST_F(OwnPathLedgerTest, AReplayChecksTheEventsItsRecordNamedNotOnesAppendedSince) {
  testing::SyncPointStore racing(memory_);
  auto c = ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 4\n", "race.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  testing::InvokerStack stack(racing, clock_, std::move(*c));

  InvokeRequest r;
  r.principal = {"user-1", "tenant-a", "", {}};
  r.tool_name = "crm.update";
  r.input_json = R"({"k":"v"})";
  auto admitted = stack.invoker.Admit(r);
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(admitted));
  DownstreamResult unavailable;
  unavailable.status = 503;
  unavailable.body = "{}";
  const json failed = api::InvocationBody(
      stack.invoker.Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)), unavailable));
  ASSERT_EQ(failed["outcome"], "FAILED") << failed;
  const std::string id = failed["execution_id"];

  racing.AfterRead(1, testing::SyncPointStore::KeyIs(ExecutionStore::Key("tenant-a", id)), [&] {
    auto rec = stack.executions.Get("tenant-a", id);
    ASSERT_TRUE(rec.ok()) << rec.status();
    Ledger::Tail tail{rec->last_seq, rec->last_hash, rec->expires_at_s};
    for (int i = 0; i < 2; ++i) {  // two: verify tolerates one unanchored trailing event, so one would prove nothing
      ASSERT_TRUE(stack.ledger
                      .Append(Ledger::ExecutionChain(id), tail, "INTENT_HIT", "user-2", R"({"intent_key":"k"})",
                              Ledger::ExecutionAnchor("tenant-a", id))
                      .ok());
    }
  });
  const auto prepared = stack.engine->replayer().Prepare(
      {{"op-1", "tenant-a", "", {"operator"}}, id, "downstream recovered", "oncall@acme", false, ""});
  ASSERT_EQ(racing.fired(), 1) << "the race did not happen";
  const auto* refused = std::get_if<InvokeResult>(&prepared);
  ASSERT_EQ(refused, nullptr) << api::InvocationBody(*refused);
  EXPECT_EQ(std::get<InvokeRequest>(prepared).input_json, R"({"k":"v"})");

  auto rec = stack.executions.Get("tenant-a", id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  auto events = stack.ledger.ReadExecution(*rec);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<std::string> types;
  for (const LedgerEvent& e : *events) types.push_back(e.type);
  EXPECT_THAT(types, ::testing::ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_FAILED", "INTENT_HIT",
                                            "INTENT_HIT", "REPLAY_REQUESTED"));
  EXPECT_EQ(Verify(), "");
}

}  // namespace
}  // namespace toolgate
