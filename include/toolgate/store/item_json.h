#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "toolgate/store/item.h"

namespace toolgate::store {

// Items as JSON objects: strings, numbers (integers stay integers), bools and nested objects. This
// is how the SQLite backend keeps attributes (readable with the sqlite3 shell) and how items are
// shown to operators.
nlohmann::json ItemToJson(const Item& item);
std::string ItemToJsonText(const Item& item);
// Appends `s` as a JSON string, byte for byte as nlohmann's dump writes it (no ensure_ascii; invalid
// UTF-8 replaced): what ItemToJsonText writes for a string, for other canonical text (ledger hashes).
void AppendJsonString(std::string& out, std::string_view s);

// kDataLoss when `json` is not an object of supported values (arrays and null are not attributes).
absl::StatusOr<Item> ItemFromJson(const nlohmann::json& json);
// kDataLoss when `text` is not such a JSON object. Depth is bounded by the parser's checks here.
absl::StatusOr<Item> ItemFromJsonText(std::string_view text);

}  // namespace toolgate::store
