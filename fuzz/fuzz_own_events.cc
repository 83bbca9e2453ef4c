// Decoding a stored execution record and the events of the call's own path it holds (DESIGN §16):
// what `ledger verify`, `toolgate status` and the replay read back from the store. A damaged record
// or event list is kDataLoss, never a crash or undefined behaviour; what decodes re-encodes to a list
// that decodes to the same events, with the same chain of hashes, whether its data is copied as
// canonical text or parsed and spelled again.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger.h"
#include "toolgate/store/item_json.h"

using namespace toolgate;  // NOLINT: a fuzz target

namespace {

bool SameEvents(const std::vector<LedgerEvent>& a, const std::vector<LedgerEvent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].seq != b[i].seq || a[i].type != b[i].type || a[i].at_ms != b[i].at_ms || a[i].at != b[i].at ||
        a[i].actor != b[i].actor || a[i].data != b[i].data || a[i].prev_hash != b[i].prev_hash ||
        a[i].hash != b[i].hash) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto item = store::ItemFromJsonText(text);
  if (!item.ok()) return 0;
  auto record = ExecutionStore::FromItem(*item);
  if (!record.ok()) {
    if (record.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  auto events = Ledger::DecodeOwnPath(*record);
  if (!events.ok()) {
    if (events.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  for (size_t i = 0; i < events->size(); ++i) {
    const LedgerEvent& e = (*events)[i];
    if (e.seq != static_cast<int64_t>(i) + 1) std::abort();
    if (e.prev_hash != (i == 0 ? std::string() : (*events)[i - 1].hash)) std::abort();
  }
  if (events->empty()) return 0;
  ExecutionRecord again = *record;
  again.own_events = Ledger::EncodeOwnPath(*events, *record);
  auto decoded = Ledger::DecodeOwnPath(again);
  if (!decoded.ok() || !SameEvents(*decoded, *events)) std::abort();
  // Decoded data is canonical text: marked so, it is copied (the result's hash replaced in the text)
  // rather than parsed and spelled again, and the list must not change.
  std::vector<LedgerEvent> marked = *events;
  for (LedgerEvent& e : marked) e.data_canonical = true;
  if (Ledger::EncodeOwnPath(marked, *record) != again.own_events) std::abort();
  return 0;
}
