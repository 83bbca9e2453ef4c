#include "toolgate/services/ledger.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/status_macros.h"
#include "toolgate/store/item_json.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

using store::Condition;
using store::Item;

namespace {

constexpr int kMaxAppendAttempts = 32;

std::string EventSk(int64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "EVENT#%012lld", static_cast<long long>(seq));
  return buf;
}

LedgerEvent EventFromItem(const Item& item) {
  LedgerEvent e;
  e.seq = store::GetInt(item, "seq").value_or(0);
  e.type = store::GetString(item, "type").value_or("");
  e.at = store::GetString(item, "at").value_or("");
  e.actor = store::GetString(item, "actor").value_or("");
  e.data = store::GetString(item, "data").value_or("{}");
  e.hash = store::GetString(item, "hash").value_or("");
  e.prev_hash = store::GetString(item, "prev_hash").value_or("");
  e.expires_at_s = store::GetInt(item, store::kTtlAttribute).value_or(0);
  return e;
}

std::string CanonicalText(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Lowercase hex SHA-256 of `parts`, one after the other, without joining them first.
std::string Sha256HexOf(std::initializer_list<std::string_view> parts);

// The one spelling of what an event's hash covers: `prev_hash`, then the canonical object
// {"actor","at","data","seq","type"} (as nlohmann dumps an object: keys sorted, no spaces) spelled out
// around `data_text`, the event's data as canonical JSON text. Ledger::Hash makes stored data canonical
// first; PrepareAppendJson's data is canonical already, so it is neither parsed nor copied: the text
// before and after it are hashed around it.
std::string HashOfCanonical(std::string_view prev_hash, const LedgerEvent& e, std::string_view data_text) {
  thread_local std::string before;
  thread_local std::string after;
  before.assign(prev_hash);
  before += R"({"actor":)";
  store::AppendJsonString(before, e.actor);
  before += R"(,"at":)";
  store::AppendJsonString(before, e.at);
  before += R"(,"data":)";
  after.assign(R"(,"seq":)");
  after += std::to_string(e.seq);
  after += R"(,"type":)";
  store::AppendJsonString(after, e.type);
  after += '}';
  return Sha256HexOf({before, data_text, after});
}

}  // namespace

namespace {

std::string Sha256HexOf(std::initializer_list<std::string_view> parts) {
  // Fetched once, and one context per thread: EVP_Digest with EVP_sha256() looks the algorithm up in
  // the provider registry and allocates a context on every call (OpenSSL 3), a measurable share of a
  // call's CPU with two hashes per event.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct CtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  thread_local const std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  bool ok = sha256 != nullptr && ctx != nullptr && EVP_DigestInit_ex(ctx.get(), sha256, nullptr) == 1;
  for (std::string_view part : parts) ok = ok && EVP_DigestUpdate(ctx.get(), part.data(), part.size()) == 1;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) {
    std::string joined;  // the long way, as before
    for (std::string_view part : parts) joined += part;
    EVP_Digest(joined.data(), joined.size(), md, &len, EVP_sha256(), nullptr);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(size_t{len} * 2, '\0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view data) { return Sha256HexOf({data}); }

int64_t LedgerRetention::ExecutionExpiry(int64_t created_at_ms, bool deferred_early) const {
  const int64_t keep = deferred_early ? deferred_retention_s : retention_s;
  return keep > 0 ? created_at_ms / 1000 + keep : 0;
}

int64_t LedgerRetention::AuditExpiry(int64_t epoch_ms) const {
  if (retention_s <= 0) return 0;
  const int64_t day_end_s = (epoch_ms / 86'400'000 + 1) * 86'400;
  return day_end_s + retention_s;
}

Ledger::Ledger(store::ItemStore& store, const Clock& clock, LedgerRetention retention)
    : store_(store), clock_(clock), retention_(retention) {}

std::string Ledger::ExecutionChain(std::string_view execution_id) {
  return absl::StrCat("EXEC#", std::string(execution_id));
}

std::string Ledger::AuditChain(int64_t epoch_ms) { return absl::StrCat("AUDIT#", Rfc3339(epoch_ms).substr(0, 10)); }

std::string Ledger::Hash(std::string_view prev_hash, const LedgerEvent& e) {
  // The data as stored is made canonical first (parsed and dumped), so any spelling of the same value
  // hashes alike; data that is not JSON is hashed as a JSON string, and the chain check still sees edits.
  nlohmann::json data = ParseJsonWithin(e.data);
  if (data.is_discarded()) data = e.data;
  return HashOfCanonical(prev_hash, e, CanonicalText(data));
}

absl::StatusOr<Ledger::Tail> Ledger::ReadTail(const std::string& chain) {
  ASSIGN_OR_RETURN(store::QueryPage page, store_.Query({chain, "EVENT#", 1, std::nullopt, true}));
  Tail tail;
  if (!page.items.empty()) {
    const LedgerEvent last = EventFromItem(page.items.front().second);
    tail.seq = last.seq;
    tail.hash = last.hash;
    tail.expires_at_s = last.expires_at_s;
  }
  return tail;
}

std::pair<store::WriteRequest, LedgerEvent> Ledger::PrepareAppend(const std::string& chain, const Tail& tail,
                                                                  std::string_view type, std::string_view actor,
                                                                  std::string_view data_json) const {
  return Prepare(chain, tail, type, actor, std::string(data_json), /*canonical=*/false);
}

std::pair<store::WriteRequest, LedgerEvent> Ledger::PrepareAppendJson(const std::string& chain, const Tail& tail,
                                                                      std::string_view type, std::string_view actor,
                                                                      const nlohmann::json& data) const {
  return Prepare(chain, tail, type, actor, CanonicalText(data), /*canonical=*/true);
}

LedgerEvent Ledger::Make(const Tail& tail, std::string_view type, std::string_view actor, std::string data,
                         bool canonical) const {
  LedgerEvent e;
  e.seq = tail.seq + 1;
  e.type = std::string(type);
  e.at_ms = clock_.now_epoch_ms();
  e.at = Rfc3339(e.at_ms);
  e.actor = std::string(actor);
  e.data = std::move(data);
  e.data_canonical = canonical;
  e.prev_hash = tail.hash;
  e.hash = canonical ? HashOfCanonical(e.prev_hash, e, e.data) : Hash(e.prev_hash, e);
  e.expires_at_s = tail.expires_at_s > 0 ? tail.expires_at_s : 0;
  return e;
}

LedgerEvent Ledger::MakeEventJson(const Tail& tail, std::string_view type, std::string_view actor,
                                  const nlohmann::json& data) const {
  return Make(tail, type, actor, CanonicalText(data), /*canonical=*/true);
}

LedgerEvent Ledger::MakeEventText(const Tail& tail, std::string_view type, std::string_view actor,
                                  std::string canonical_data) const {
  return Make(tail, type, actor, std::move(canonical_data), /*canonical=*/true);
}

std::pair<store::WriteRequest, LedgerEvent> Ledger::Prepare(const std::string& chain, const Tail& tail,
                                                            std::string_view type, std::string_view actor,
                                                            std::string data, bool canonical) const {
  LedgerEvent e = Make(tail, type, actor, std::move(data), canonical);
  store::WriteRequest write = EventItemRequest(chain, e);
  return {std::move(write), std::move(e)};
}

store::WriteRequest Ledger::EventItemRequest(const std::string& chain, const LedgerEvent& e) {
  Item item{{"seq", e.seq},   {"type", e.type},          {"at", e.at}, {"actor", e.actor}, {"data", e.data},
            {"hash", e.hash}, {"prev_hash", e.prev_hash}};
  if (e.expires_at_s > 0) item.emplace(std::string(store::kTtlAttribute), e.expires_at_s);
  // Append-only: an event is never overwritten. Nobody reads an event back from its write.
  return store::WriteRequest::Put({chain, EventSk(e.seq)}, std::move(item), Condition::ItemAbsent(),
                                  store::ReturnValues::kNone);
}

namespace {

constexpr char kReceived[] = "EXECUTION_RECEIVED";
// The first element of a list of a call's own events whose EXECUTION_RECEIVED carries the input's
// hash (ExecutionStore::ReceivedText's `with_input`): every list written since. A list without it is
// read as before; an earlier version, which cannot rebuild that EXECUTION_RECEIVED, finds a list it
// cannot read (kDataLoss) rather than one it would hash wrongly and append after.
constexpr char kOwnPathHeader[] = R"([{"v":2})";
constexpr char kResultSha256[] = "result_sha256";

}  // namespace

namespace {

// What EncodeOwnEvent needs of the record, each built once and only if an event needs it.
struct OwnPathContext {
  const ExecutionRecord& record;
  std::string actor;                         // ExecutionStore::ChainActor
  bool with_input;                           // the list's EXECUTION_RECEIVED carries the input's hash
  std::optional<std::string> received;       // EXECUTION_RECEIVED's data, canonical
  std::optional<std::string> result_sha256;  // the SHA-256 of the record's result_json
};

// The span of the value of the top-level member whose key, as canonical JSON text spells it, is
// `quoted_key`, in `text`: canonical JSON text (as CanonicalText writes it: no spaces, no duplicate
// keys). Nothing when `text` is not an object or has no such member.
std::optional<std::pair<size_t, size_t>> TopLevelMember(std::string_view text, std::string_view quoted_key) {
  // The end of the string that starts at `i` (its closing quote's index + 1), or npos.
  auto string_end = [&text](size_t i) {
    for (++i; i < text.size(); ++i) {
      if (text[i] == '\\') {
        ++i;
      } else if (text[i] == '"') {
        return i + 1;
      }
    }
    return std::string_view::npos;
  };
  // The end of the value that starts at `i`: a string, an object or array (nested), or a scalar.
  auto value_end = [&](size_t i) {
    int depth = 0;
    while (i < text.size()) {
      const char c = text[i];
      if (c == '"') {
        i = string_end(i);
        if (i == std::string_view::npos) return i;
        if (depth == 0) return i;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (depth == 0) return i;  // the end of the enclosing object: a scalar ended here
        if (--depth == 0) return i + 1;
      } else if (c == ',' && depth == 0) {
        return i;
      }
      ++i;
    }
    return depth == 0 ? i : std::string_view::npos;
  };
  if (text.size() < 2 || text.front() != '{') return std::nullopt;
  size_t i = 1;
  while (i < text.size() && text[i] == '"') {
    const size_t key_end = string_end(i);
    if (key_end == std::string_view::npos || key_end >= text.size() || text[key_end] != ':') return std::nullopt;
    const size_t start = key_end + 1;
    const size_t end = value_end(start);
    if (end == std::string_view::npos || end == start || end >= text.size()) return std::nullopt;
    if (text.substr(i, key_end - i) == quoted_key) return std::make_pair(start, end - start);
    if (text[end] != ',') return std::nullopt;
    i = end + 1;
  }
  return std::nullopt;
}

// One event as EncodeOwnPath stores it: [type, ms after created_at_ms, data, actor?], spelled as
// CanonicalText spells that array (no spaces, elements joined by commas).
std::string EncodeOwnEvent(const LedgerEvent& e, OwnPathContext& c) {
  std::string text = "[";
  store::AppendJsonString(text, e.type);
  text += ',';
  text += std::to_string(e.at_ms - c.record.created_at_ms);
  text += ',';
  if (e.type == kReceived && !c.received) c.received = ExecutionStore::ReceivedText(c.record, c.with_input);
  if (e.type == kReceived && e.data == *c.received) {
    text += "null";  // EXECUTION_RECEIVED's data, rebuilt from the record
  } else if (e.data_canonical && e.data.find(kResultSha256) == std::string::npos) {
    text += e.data;  // canonical already, and nothing in it to replace
  } else if (e.data_canonical) {
    // Canonical already: the result's hash replaced in the text, as parsing, replacing and spelling
    // it again would (the canonical text of canonical text's value is that text).
    const auto sha = TopLevelMember(e.data, R"("result_sha256")");
    if (sha && e.data[sha->first] == '"') {
      if (!c.result_sha256) c.result_sha256 = Sha256Hex(c.record.result_json);
      const std::string_view value = std::string_view(e.data).substr(sha->first, sha->second);
      if (value.size() == c.result_sha256->size() + 2 && value.substr(1, value.size() - 2) == *c.result_sha256) {
        text.append(e.data, 0, sha->first);
        text += "true";
        text.append(e.data, sha->first + sha->second);
      } else {
        text += e.data;
      }
    } else {
      text += e.data;
    }
  } else {
    nlohmann::json data = ParseJsonWithin(e.data);
    // true: the SHA-256 of the record's result_json, rebuilt from it.
    if (data.is_object()) {
      auto sha = data.find(kResultSha256);
      if (sha != data.end() && sha->is_string()) {
        if (!c.result_sha256) c.result_sha256 = Sha256Hex(c.record.result_json);
        if (*sha == *c.result_sha256) *sha = true;
      }
    }
    text += CanonicalText(data.is_discarded() ? nlohmann::json(e.data) : data);
  }
  if (e.actor != c.actor) {
    text += ',';
    store::AppendJsonString(text, e.actor);
  }
  text += ']';
  return text;
}

// `list` (a canonical JSON array, "[]" at least) with the events appended, as CanonicalText of the
// whole array would spell it: elements joined by commas, no spaces.
std::string AppendOwnEvents(std::string list, const std::vector<LedgerEvent>& events, size_t from,
                            const ExecutionRecord& record) {
  if (from >= events.size()) return list;
  OwnPathContext context{record, ExecutionStore::ChainActor(record), list.starts_with(kOwnPathHeader), std::nullopt,
                         std::nullopt};
  list.pop_back();  // the closing ']'
  for (size_t i = from; i < events.size(); ++i) {
    if (list.size() > 1) list += ',';
    list += EncodeOwnEvent(events[i], context);
  }
  list += ']';
  return list;
}

}  // namespace

std::string Ledger::EncodeOwnPath(const std::vector<LedgerEvent>& events, const ExecutionRecord& record) {
  return AppendOwnEvents(absl::StrCat(kOwnPathHeader, "]"), events, 0, record);
}

std::string Ledger::ExtendOwnPath(std::string_view encoded, size_t encoded_count,
                                  const std::vector<LedgerEvent>& events, const ExecutionRecord& record) {
  if (encoded.size() < 2 || encoded.front() != '[' || encoded.back() != ']' || encoded_count > events.size()) {
    return EncodeOwnPath(events, record);
  }
  return AppendOwnEvents(std::string(encoded), events, encoded_count, record);
}

absl::StatusOr<std::vector<LedgerEvent>> Ledger::DecodeOwnPath(const ExecutionRecord& record) {
  std::vector<LedgerEvent> out;
  if (record.own_events.empty()) return out;
  auto bad = [&](std::string_view what) {
    return absl::DataLossError(absl::StrCat("the events its record holds cannot be read: ", std::string(what)));
  };
  // The events' times are offsets from the record's: a record's time must be one (up to the end of
  // year 9999, as RFC 3339 writes it), or adding an offset could overflow.
  constexpr int64_t kLastEpochMs = 253'402'300'799'999;
  if (record.created_at_ms < 0 || record.created_at_ms > kLastEpochMs) return bad("created_at_ms is not a time");
  const nlohmann::json list = ParseJsonWithin(record.own_events);
  if (!list.is_array()) return bad("not a JSON array");
  const std::string actor = ExecutionStore::ChainActor(record);
  std::string prev;
  const bool with_input = !list.empty() && list.front().is_object();
  if (with_input && list.front() != nlohmann::json{{"v", 2}}) return bad("its first element is not {\"v\":2}");
  for (const nlohmann::json& one : list) {
    if (&one == &list.front() && with_input) continue;
    // An event's time is within a year of its record's (a call ends long before).
    constexpr int64_t kMaxOffsetMs = int64_t{366} * 86'400'000;
    if (!one.is_array() || one.size() < 3 || one.size() > 4 || !one[0].is_string() || !one[1].is_number_integer() ||
        (one.size() == 4 && !one[3].is_string()) || one[1].get<int64_t>() > kMaxOffsetMs ||
        one[1].get<int64_t>() < -kMaxOffsetMs) {
      return bad(absl::StrCat("event ", out.size() + 1, " is not [type, ms, data, actor?]"));
    }
    LedgerEvent e;
    e.seq = static_cast<int64_t>(out.size()) + 1;
    e.type = one[0].get<std::string>();
    e.at_ms = record.created_at_ms + one[1].get<int64_t>();
    e.at = Rfc3339(e.at_ms);
    e.actor = one.size() == 4 ? one[3].get<std::string>() : actor;
    if (one[2].is_null()) {
      if (e.type != kReceived) return bad(absl::StrCat("event ", e.seq, " (", e.type, ") has no data"));
      e.data = ExecutionStore::ReceivedText(record, with_input);
    } else {
      nlohmann::json data = one[2];
      if (data.is_object()) {
        auto sha = data.find(kResultSha256);
        if (sha != data.end() && sha->is_boolean() && sha->get<bool>()) *sha = Sha256Hex(record.result_json);
      }
      e.data = CanonicalText(data);
    }
    e.prev_hash = prev;
    e.hash = HashOfCanonical(prev, e, e.data);
    e.expires_at_s = record.expires_at_s;
    prev = e.hash;
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<LedgerEvent>> Ledger::ReadExecution(const ExecutionRecord& record) {
  ASSIGN_OR_RETURN(std::vector<LedgerEvent> events, DecodeOwnPath(record));
  ASSIGN_OR_RETURN(std::vector<LedgerEvent> items, Read(ExecutionChain(record.execution_id)));
  if (events.empty()) return items;
  events.insert(events.end(), std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
  return events;
}

ChainAnchor Ledger::ExecutionAnchor(std::string_view tenant_id, std::string_view execution_id) {
  return {{absl::StrCat("TENANT#", std::string(tenant_id)), absl::StrCat("EXEC#", std::string(execution_id))},
          /*must_exist=*/true};
}

ChainAnchor Ledger::AuditAnchor(const std::string& audit_chain) { return {{audit_chain, "HEAD"}, false}; }

store::WriteRequest Ledger::AnchorRequest(const ChainAnchor& anchor, const LedgerEvent& event) {
  const store::AttributePath last_seq = store::AttributePath::Top("last_seq");
  std::vector<store::UpdateOp> ops = {store::UpdateOp::Set(last_seq, event.seq),
                                      store::UpdateOp::Set(store::AttributePath::Top("last_hash"), event.hash)};
  // Never backwards: a slower writer of an earlier seq must not hide a later event.
  Condition forward = Condition::Or({Condition::NotExists(last_seq), Condition::Lt(last_seq, event.seq)});
  if (anchor.must_exist) {
    forward = Condition::And({Condition::Exists(store::AttributePath::Top("execution_id")), std::move(forward)});
  } else if (event.expires_at_s > 0) {
    ops.push_back(
        store::UpdateOp::Set(store::AttributePath::Top(std::string(store::kTtlAttribute)), event.expires_at_s));
  }
  return store::WriteRequest::Update(anchor.key, std::move(ops), std::move(forward), store::ReturnValues::kNone)
      .AfterPrevious();
}

absl::StatusOr<Ledger::Tail> Ledger::ReadAnchor(const ChainAnchor& anchor) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(anchor.key));
  Tail t;
  if (item) {
    t.seq = store::GetInt(*item, "last_seq").value_or(0);
    t.hash = store::GetString(*item, "last_hash").value_or("");
    t.expires_at_s = store::GetInt(*item, store::kTtlAttribute).value_or(0);
  }
  return t;
}

absl::StatusOr<LedgerEvent> Ledger::Append(const std::string& chain, Tail& tail, std::string_view type,
                                           std::string_view actor, std::string_view data_json,
                                           const ChainAnchor& anchor) {
  for (int attempt = 0; attempt < kMaxAppendAttempts; ++attempt) {
    auto [write, e] = PrepareAppend(chain, tail, type, actor, data_json);
    std::vector<store::WriteRequest> writes;
    writes.push_back(std::move(write));
    writes.push_back(AnchorRequest(anchor, e));
    std::vector<absl::StatusOr<store::WriteResult>> results = store_.WriteBatch(writes);
    if (!results[0].ok()) return results[0].status();
    const store::WriteResult& r = *results[0];
    if (r.applied) {
      // The event is in. An anchor that did not move was already past it, or (an execution record)
      // is gone with its retention; a store error leaves one event the anchor does not cover yet,
      // which `ledger verify` reports without failing (DESIGN §17.1).
      if (!results[1].ok()) {
        spdlog::warn("ledger {}: event {} written, its anchor not advanced: {}", chain, e.seq,
                     results[1].status().ToString());
      }
      tail = {e.seq, e.hash, e.expires_at_s};
      return e;
    }
    const int64_t expires_at_s = tail.expires_at_s;
    ASSIGN_OR_RETURN(tail, ReadTail(chain));  // another writer appended first
    // An execution record may hold events the chain's items continue from (DESIGN §16): never go
    // back behind its anchor.
    if (anchor.must_exist) {
      ASSIGN_OR_RETURN(Tail anchored, ReadAnchor(anchor));
      if (anchored.seq > tail.seq) tail = anchored;
    }
    if (tail.seq == 0) tail.expires_at_s = expires_at_s;
  }
  return absl::AbortedError(absl::StrCat("ledger ", chain, ": append lost ", kMaxAppendAttempts, " races"));
}

absl::StatusOr<LedgerEvent> Ledger::Audit(std::string_view type, std::string_view actor, std::string_view data_json) {
  const int64_t now_ms = clock_.now_epoch_ms();
  const std::string chain = AuditChain(now_ms);
  ASSIGN_OR_RETURN(Tail tail, ReadTail(chain));
  // A day's chain keeps the ttl its first event got, even if the retention changes during the day.
  if (tail.seq == 0) tail.expires_at_s = retention_.AuditExpiry(now_ms);
  return Append(chain, tail, type, actor, data_json, AuditAnchor(chain));
}

absl::StatusOr<std::vector<LedgerEvent>> Ledger::Read(const std::string& chain) {
  std::vector<LedgerEvent> out;
  store::QueryRequest q{chain, "EVENT#", 1000, std::nullopt, false};
  for (int page = 0; page < 1000; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (auto& [sk, item] : p.items) out.push_back(EventFromItem(item));
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Ledger::AuditChains() {
  std::set<std::string> chains;
  // Events and head items: a day whose every event was removed still has its head.
  store::ScanRequest req{"AUDIT#", "", 1000, std::nullopt};
  for (;;) {
    ASSIGN_OR_RETURN(store::ScanPage page, store_.Scan(req));
    for (auto& [key, item] : page.items) chains.insert(key.pk);
    if (!page.last_key) break;
    req.after = page.last_key;
  }
  return std::vector<std::string>(chains.begin(), chains.end());
}

absl::StatusOr<std::vector<LedgerEvent>> Ledger::ReadAudit(int limit, std::optional<int64_t> since_ms,
                                                           std::optional<int64_t> until_ms, int max_days) {
  std::vector<LedgerEvent> out;
  const int64_t now = clock_.now_epoch_ms();
  // Event times are fixed-width RFC 3339 in UTC (millisecond precision): they compare as strings.
  const std::string since = since_ms ? Rfc3339(*since_ms) : "";
  const std::string until = until_ms ? Rfc3339(*until_ms) : "";
  const int64_t newest_ms = until_ms ? std::min(now, std::max<int64_t>(0, *until_ms)) : now;
  for (int day = 0; day < max_days && static_cast<int>(out.size()) < limit; ++day) {
    const int64_t day_ms = newest_ms - int64_t{day} * 86'400'000;
    if (since_ms && day_ms < *since_ms - 86'400'000) break;
    store::QueryRequest q{AuditChain(day_ms), "EVENT#", std::min(limit, 1000), std::nullopt, true};
    for (int page = 0; page < 100 && static_cast<int>(out.size()) < limit; ++page) {
      ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
      for (auto& [sk, item] : p.items) {
        LedgerEvent e = EventFromItem(item);
        if (!since.empty() && e.at < since) continue;
        if (!until.empty() && e.at >= until) continue;
        if (static_cast<int>(out.size()) < limit) out.push_back(std::move(e));
      }
      if (!p.last_sk) break;
      q.after = p.last_sk;
    }
  }
  return out;
}

absl::Status Ledger::VerifyChain(const std::vector<LedgerEvent>& events) {
  if (events.empty()) return absl::OkStatus();
  return VerifyChain(events, events.front().expires_at_s, "");
}

absl::Status Ledger::VerifyChain(const std::vector<LedgerEvent>& events, int64_t expires_at_s,
                                 std::string_view anchor_name) {
  if (events.empty()) return absl::OkStatus();
  // A chain expires as a whole; an event set to expire on its own would leave a gap behind. The odd
  // one out is named: an event that differs from its anchor, or the anchor when every event agrees
  // with the others but not with it.
  const int64_t first = events.front().expires_at_s;
  const bool events_agree =
      std::all_of(events.begin(), events.end(), [first](const LedgerEvent& e) { return e.expires_at_s == first; });
  const int64_t chain_expiry = events_agree ? first : expires_at_s;
  std::string prev;
  for (size_t i = 0; i < events.size(); ++i) {
    const LedgerEvent& e = events[i];
    const int64_t want_seq = static_cast<int64_t>(i) + 1;
    if (e.seq != want_seq) {
      return absl::DataLossError(absl::StrCat("event ", want_seq, " is missing (found seq ", e.seq, ")"));
    }
    if (e.prev_hash != prev)
      return absl::DataLossError(absl::StrCat("event ", e.seq, " (", e.type, ") does not link to event ", e.seq - 1));
    if (Hash(prev, e) != e.hash) {
      return absl::DataLossError(absl::StrCat("event ", e.seq, " (", e.type, ") was altered: its hash does not match"));
    }
    if (e.expires_at_s != chain_expiry) {
      return absl::DataLossError(absl::StrCat(
          "event ", e.seq, " (", e.type, ") expires at ", e.expires_at_s, ", not with its chain (", chain_expiry,
          anchor_name.empty() ? "" : absl::StrCat(", as its ", std::string(anchor_name), " holds"), ")"));
    }
    prev = e.hash;
  }
  if (first != expires_at_s) {
    return absl::DataLossError(
        absl::StrCat("its events expire at ", first, ", its ", std::string(anchor_name), " at ", expires_at_s));
  }
  return absl::OkStatus();
}

}  // namespace toolgate
