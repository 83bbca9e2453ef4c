#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "toolgate/store/condition.h"
#include "toolgate/store/item.h"

namespace toolgate::store::dynamodb {

// The key attribute names of the table: partition key `pk`, sort key `sk` (both strings).
inline constexpr std::string_view kPartitionKey = "pk";
inline constexpr std::string_view kSortKey = "sk";

// Values in DynamoDB's JSON wire form: {"S": ...}, {"N": "..."}, {"BOOL": ...}, {"M": {...}}.
// kInvalidArgument for a number DynamoDB cannot hold (NaN, infinity).
absl::StatusOr<nlohmann::json> ValueToWire(const AttributeValue& value);
absl::StatusOr<nlohmann::json> ItemToWire(const Item& item);
// kDataLoss for a wire value of a type toolgate never writes (sets, lists, null, binary) or a
// malformed number. Numbers without a fraction or exponent decode as integers.
absl::StatusOr<AttributeValue> ValueFromWire(const nlohmann::json& wire);
// The item without its key attributes.
absl::StatusOr<Item> ItemFromWire(const nlohmann::json& wire);

// Accumulates the placeholders of one request: attribute names become `#n<i>` and values `:v<i>`,
// so no name or value is ever pasted into an expression.
class ExpressionBuilder {
 public:
  std::string Name(std::string_view attribute);
  std::string Path(const AttributePath& path);
  absl::StatusOr<std::string> Value(const AttributeValue& value);

  // ExpressionAttributeNames / ExpressionAttributeValues; empty objects when none were used (a
  // request must then omit them: DynamoDB refuses empty maps).
  const nlohmann::json& names() const { return names_; }
  const nlohmann::json& values() const { return values_; }
  // Adds both to `request` when non-empty.
  void AddTo(nlohmann::json& request) const;

 private:
  std::map<std::string, std::string, std::less<>> name_ids_;
  nlohmann::json names_ = nlohmann::json::object();
  nlohmann::json values_ = nlohmann::json::object();
  int next_value_ = 0;
};

// A ConditionExpression for `condition`; empty for Condition::Always() (no condition).
absl::StatusOr<std::string> RenderCondition(const Condition& condition, ExpressionBuilder& names);

// An UpdateExpression for `ops` ("SET ... REMOVE ..."); empty when `ops` is empty. ADD renders as
// `SET p = if_not_exists(p, 0) + d`, which also works one level into a map. kInvalidArgument for a
// key attribute or for two ops on one path (DynamoDB refuses overlapping paths).
absl::StatusOr<std::string> RenderUpdate(const std::vector<UpdateOp>& ops, ExpressionBuilder& names);

}  // namespace toolgate::store::dynamodb
