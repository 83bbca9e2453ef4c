#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

struct StoreOpenOptions {
  bool read_only = false;  // SQLite: open for reading (the CLI's direct ledger reads); others ignore it
  // DynamoDB: called for each retried request (op, reason), for the retry metrics.
  std::function<void(std::string_view op, std::string_view reason)> on_retry;
  // DynamoDB: called after each write with the item written and the write units it consumed
  // (DynamoDbItemStore::Options::on_write_units), for the cost metrics.
  std::function<void(const store::ItemKey& key, double units)> on_write_units;
};

// Opens the backend `config` names: sqlite (creating the file's directory), memory, or dynamodb
// (credentials from the AWS environment or shared credentials file). The table itself is not
// created here: `toolgate store init` does that.
absl::StatusOr<std::unique_ptr<store::ItemStore>> OpenConfiguredStore(const StoreConfig& config, const Clock& clock,
                                                                      const StoreOpenOptions& options = {});

}  // namespace toolgate
