// Decoding stored items: the SQLite backend's JSON attributes and DynamoDB's wire format. A
// damaged item is kDataLoss, never a crash; what decodes re-encodes and decodes to the same item.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "nlohmann/json.hpp"
#include "toolgate/store/dynamodb_expressions.h"
#include "toolgate/store/item_json.h"

using namespace toolgate::store;  // NOLINT: a fuzz target

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto item = ItemFromJsonText(text);
  const nlohmann::json wire = nlohmann::json::parse(text, nullptr, false);
  if (!item.ok()) {
    if (item.status().code() != absl::StatusCode::kDataLoss) std::abort();
    // The parser's events and the JSON tree refuse alike.
    if (!wire.is_discarded() && ItemFromJson(wire).ok()) std::abort();
  } else {
    auto again = ItemFromJsonText(ItemToJsonText(*item));
    if (!again.ok() || !(*again == *item)) std::abort();
    // ItemToJsonText writes what nlohmann writes; the tree reads the same item.
    const std::string dumped = ItemToJson(*item).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (ItemToJsonText(*item) != dumped) std::abort();
    auto from_tree = wire.is_discarded() ? absl::StatusOr<Item>(absl::DataLossError("")) : ItemFromJson(wire);
    if (!from_tree.ok() || !(*from_tree == *item)) std::abort();
  }
  if (wire.is_discarded()) return 0;
  auto from_wire = dynamodb::ItemFromWire(wire);
  if (!from_wire.ok()) {
    if (from_wire.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  auto rewired = dynamodb::ItemToWire(*from_wire);
  if (!rewired.ok()) return 0;  // e.g. a value DynamoDB items cannot hold
  auto back = dynamodb::ItemFromWire(*rewired);
  if (!back.ok() || !(*back == *from_wire)) std::abort();
  return 0;
}
