#include "toolgate/services/kill_switch_service.h"

#include <algorithm>
#include <chrono>

#include <ctime>

#include "absl/strings/str_cat.h"
#include "toolgate/domain/ids.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Condition;
using store::Item;

namespace {

constexpr char kKillSwitchPk[] = "KILLSWITCH";

bool ValidKeyChars(std::string_view key) {
  for (char c : key) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':' ||
                    c == '@' || c == '/' || c == '*';
    if (!ok) return false;
  }
  return true;
}

// The switch stored under `sk` ("<scope>#<key>", as Set writes it): the scope and key are the sort
// key's, which is what Clear removes, whatever the item's attributes say — an item stripped of them
// (edited by hand) still stops what its key names rather than nothing.
KillSwitch KillSwitchFromItem(const std::string& sk, const Item& item) {
  KillSwitch k;
  if (const size_t hash = sk.find('#'); hash != std::string::npos && hash > 0) {
    k.scope = sk.substr(0, hash);
    k.key = sk.substr(hash + 1);
  } else {
    k.scope = store::GetString(item, "scope").value_or("");
    k.key = store::GetString(item, "key").value_or("");
  }
  k.reason = store::GetString(item, "reason").value_or("");
  k.requested_by = store::GetString(item, "requested_by").value_or("");
  k.actor = store::GetString(item, "actor").value_or("");
  k.at = store::GetString(item, "at").value_or("");
  return k;
}

}  // namespace

std::string Rfc3339(int64_t epoch_ms) {
  // Years 1970..9999 (every time toolgate makes): the calendar in arithmetic, digits written in place
  // (three per call, one per event: gmtime_r takes glibc's time-zone lock, snprintf parses a format).
  if (epoch_ms >= 0 && epoch_ms <= 253'402'300'799'999) {
    using namespace std::chrono;
    const sys_days day = floor<days>(sys_time<milliseconds>(milliseconds(epoch_ms)));
    const year_month_day ymd(day);
    const int64_t in_day = epoch_ms - duration_cast<milliseconds>(day.time_since_epoch()).count();
    std::string out = "0000-00-00T00:00:00.000Z";
    auto put = [&out](size_t at, int64_t value, int width) {
      for (int i = width - 1; i >= 0; --i, value /= 10)
        out[at + static_cast<size_t>(i)] = static_cast<char>('0' + value % 10);
    };
    put(0, static_cast<int>(ymd.year()), 4);
    put(5, static_cast<unsigned>(ymd.month()), 2);
    put(8, static_cast<unsigned>(ymd.day()), 2);
    put(11, in_day / 3'600'000, 2);
    put(14, in_day / 60'000 % 60, 2);
    put(17, in_day / 1000 % 60, 2);
    put(20, in_day % 1000, 3);
    return out;
  }
  const std::time_t secs = static_cast<std::time_t>(epoch_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];  // room for any int year: g++ checks the widest case
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(epoch_ms % 1000));
  return buf;
}

KillSwitchService::KillSwitchService(store::ItemStore& store, const Clock& clock, int refresh_ms)
    : store_(store), clock_(clock), refresh_ms_(refresh_ms) {}

bool KillSwitchService::ValidScope(std::string_view scope) {
  return scope == "global" || scope == "connector" || scope == "tenant" || scope == "action_type" ||
         scope == "tenant_action";
}

absl::Status KillSwitchService::ValidateSwitch(std::string_view scope, std::string_view key) {
  if (!ValidScope(scope)) {
    return absl::InvalidArgumentError("scope must be one of global, connector, tenant, action_type, tenant_action");
  }
  // A key no call can carry would be a switch that never fires: refuse it (DESIGN §17.2).
  auto name_error = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " must match [A-Za-z0-9_.-]{1,", kMaxNameLength,
                                                   "} (names are case-sensitive)"));
  };
  auto tenant_error = [] {
    return absl::InvalidArgumentError("a tenant must match [A-Za-z0-9_.:@-]{1,128}, as tokens carry it");
  };
  if (scope == "global") {
    if (key != "*") return absl::InvalidArgumentError("the global switch's key is \"*\"");
  } else if (scope == "connector") {
    if (!IsValidToolName(key) || key.find('.') != std::string_view::npos) return name_error("a connector id");
  } else if (scope == "tenant") {
    if (!IsValidTenantId(key)) return tenant_error();
  } else if (scope == "action_type") {
    if (!IsValidToolName(key)) return name_error("an action type (or tool name)");
  } else {  // tenant_action
    const auto slash = key.find('/');
    if (slash == std::string_view::npos)
      return absl::InvalidArgumentError("a tenant_action key is \"<tenant>/<action_type>\"");
    if (!IsValidTenantId(key.substr(0, slash))) return tenant_error();
    if (!IsValidToolName(key.substr(slash + 1))) return name_error("the action type of a tenant_action key");
  }
  return absl::OkStatus();
}

void KillSwitchService::ChangeMade() {
  absl::MutexLock lock(&mu_);
  snapshot_at_ms_ = -1;  // this instance sees its own change at once
  ++changes_;            // and a list being read meanwhile is not trusted
}

absl::StatusOr<KillSwitch> KillSwitchService::Set(KillSwitch ks) {
  RETURN_IF_ERROR(ValidateSwitch(ks.scope, ks.key));
  ks.at = Rfc3339(clock_.now_epoch_ms());
  const Item item{{"scope", ks.scope}, {"key", ks.key}, {"reason", ks.reason}, {"requested_by", ks.requested_by},
                  {"actor", ks.actor}, {"at", ks.at}};
  absl::StatusOr<store::WriteResult> r =
      store_.Put({kKillSwitchPk, absl::StrCat(ks.scope, "#", ks.key)}, item, Condition::Always());
  ChangeMade();  // even when the store's answer was an error: the write may have applied
  {
    // In force here even if the next list cannot be read — after an error too (it may have applied:
    // failing safe, it stops this instance's calls until a list is read).
    absl::MutexLock lock(&mu_);
    std::erase_if(snapshot_, [&ks](const KillSwitch& k) { return k.scope == ks.scope && k.key == ks.key; });
    snapshot_.push_back(ks);
  }
  if (!r.ok()) return r.status();
  return ks;
}

absl::StatusOr<bool> KillSwitchService::Clear(std::string_view scope, std::string_view key) {
  // Looser than Set: a switch stored by an older version under a key Set now refuses can be cleared.
  if (!ValidScope(scope)) return absl::InvalidArgumentError("no such scope");
  if (key.empty() || key.size() > 256 || !ValidKeyChars(key)) {
    return absl::InvalidArgumentError("key must be 1..256 characters of [A-Za-z0-9_.:@/*-]");
  }
  absl::StatusOr<store::WriteResult> r =
      store_.Erase({kKillSwitchPk, absl::StrCat(std::string(scope), "#", std::string(key))}, Condition::ItemExists());
  ChangeMade();
  if (!r.ok()) return r.status();
  absl::MutexLock lock(&mu_);  // gone here even if the next list cannot be read
  std::erase_if(snapshot_, [&](const KillSwitch& k) { return k.scope == scope && k.key == key; });
  return r->applied;
}

absl::StatusOr<std::vector<KillSwitch>> KillSwitchService::List() {
  std::vector<KillSwitch> out;
  store::QueryRequest q{kKillSwitchPk, "", 1000, std::nullopt, false};
  for (int page = 0; page < 100; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (auto& [sk, item] : p.items) out.push_back(KillSwitchFromItem(sk, item));
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return out;
}

namespace {

// The first switch of `snapshot` that matches the call (KillSwitchService::Match).
std::optional<KillSwitch> FirstMatch(const std::vector<KillSwitch>& snapshot, std::string_view tenant_id,
                                     std::string_view connector_id, std::string_view action_type,
                                     std::string_view tool_name) {
  // An action-type switch names what an operator switches off: the call's effective action type or
  // its tool name, whichever the operator knows it by (DESIGN §1), in any spelling a loose router
  // takes for it (ToolNamesLookAlike). An http connector forwards any name below its prefix, so
  // `crm.Delete` reaches what `crm.delete` does; a switch that also stops a tool really spelled
  // otherwise errs the safe way.
  auto names_action = [&](std::string_view key) {
    return (!action_type.empty() && ToolNamesLookAlike(key, action_type)) ||
           (!tool_name.empty() && ToolNamesLookAlike(key, tool_name));
  };
  const std::string tenant_prefix = absl::StrCat(std::string(tenant_id), "/");
  for (const char* scope : {"global", "tenant", "connector", "action_type", "tenant_action"}) {
    for (const KillSwitch& k : snapshot) {
      if (k.scope != scope) continue;
      const std::string_view s = scope;
      const std::string_view key = k.key;
      if (s == "global" || (s == "tenant" && key == tenant_id) || (s == "connector" && key == connector_id) ||
          (s == "action_type" && names_action(key)) ||
          (s == "tenant_action" && key.substr(0, tenant_prefix.size()) == tenant_prefix &&
           names_action(key.substr(tenant_prefix.size())))) {
        return k;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::optional<KillSwitch>> KillSwitchService::MatchFromFreshCopy(std::string_view tenant_id,
                                                                               std::string_view connector_id,
                                                                               std::string_view action_type,
                                                                               std::string_view tool_name) {
  absl::MutexLock lock(&mu_);
  if (!Fresh(clock_.now_monotonic_ms())) return std::nullopt;
  return FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name);
}

absl::StatusOr<std::optional<KillSwitch>> KillSwitchService::KnownMatchOr(absl::Status error,
                                                                          std::string_view tenant_id,
                                                                          std::string_view connector_id,
                                                                          std::string_view action_type,
                                                                          std::string_view tool_name) {
  if (std::optional<KillSwitch> known = FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name)) {
    return known;
  }
  return error;
}

absl::StatusOr<std::optional<KillSwitch>> KillSwitchService::Match(std::string_view tenant_id,
                                                                   std::string_view connector_id,
                                                                   std::string_view action_type,
                                                                   std::string_view tool_name) {
  uint64_t seen = 0;  // refreshes finished before this caller waited for its turn
  {
    absl::MutexLock lock(&mu_);
    if (Fresh(clock_.now_monotonic_ms())) return FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name);
    seen = refreshes_;
  }
  absl::MutexLock refreshing(&refresh_mu_);
  uint64_t changes = 0;
  {
    absl::MutexLock lock(&mu_);
    if (Fresh(clock_.now_monotonic_ms())) {  // refreshed by another caller while this one waited
      return FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name);
    }
    // A refresh that finished while this caller waited answers for it too: its error (the store
    // down: every waiter retrying the read in turn would hold the last one for all their budgets)
    // or its list (a read slower than refresh_ms) — unless this instance set or cleared a switch
    // since that read began: then neither may stand for the switch this caller must see.
    if (refreshes_ != seen && last_refresh_changes_ == changes_) {
      if (!last_refresh_.ok()) return KnownMatchOr(last_refresh_, tenant_id, connector_id, action_type, tool_name);
      return FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name);
    }
    changes = changes_;
  }
  const int64_t read_at = clock_.now_monotonic_ms();
  absl::StatusOr<std::vector<KillSwitch>> read = List();
  absl::MutexLock lock(&mu_);
  ++refreshes_;
  last_refresh_ = read.status();
  last_refresh_changes_ = changes;
  if (!read.ok()) return KnownMatchOr(read.status(), tenant_id, connector_id, action_type, tool_name);
  // A switch this instance set or cleared while the list was read may be missing from it (or still
  // in it): then the next call reads it again rather than trusting it for refresh_ms, and meanwhile
  // the switches this instance knew stay known beside the list's — a switch set here is not dropped
  // by an older list, should the next read fail (one cleared here may stop a call until then: safe).
  if (changes_ != changes) {
    for (KillSwitch& known : snapshot_) {
      const bool listed = std::any_of(read->begin(), read->end(), [&known](const KillSwitch& k) {
        return k.scope == known.scope && k.key == known.key;
      });
      if (!listed) read->push_back(std::move(known));
    }
  }
  snapshot_ = *std::move(read);
  snapshot_at_ms_ = changes_ == changes ? read_at : -1;
  return FirstMatch(snapshot_, tenant_id, connector_id, action_type, tool_name);
}

}  // namespace toolgate
