#include "toolgate/store_factory.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace toolgate {

absl::StatusOr<std::unique_ptr<store::ItemStore>> OpenConfiguredStore(const StoreConfig& config, const Clock& clock,
                                                                      const StoreOpenOptions& options) {
  if (config.backend == "memory") return std::unique_ptr<store::ItemStore>(new store::MemoryItemStore(clock));
  if (config.backend == "sqlite") {
    std::error_code exists_ec;
    const bool missing = !std::filesystem::exists(config.path, exists_ec);
    if (!options.read_only && missing && !config.create_if_missing) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no store at ", config.path,
          " and store.create_if_missing = false: is its volume mounted? (set it true to start a new, empty store)"));
    }
    if (!options.read_only) {
      std::error_code ec;
      const auto dir = std::filesystem::path(config.path).parent_path();
      if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    }
    // A store that is not there is created: say so, loudly — on a first start that is expected; after
    // a volume failed to mount or a directory was deleted it is every execution, ledger event and
    // kill switch gone, and this line is where an operator finds out.
    if (!options.read_only && missing) {
      spdlog::warn("sqlite: no store at {}: creating a new, empty one (expected only on a first start)", config.path);
    }
    store::SqliteItemStore::Options o;
    o.path = config.path;
    o.read_only = options.read_only;
    o.synchronous_full = config.sqlite_synchronous_full;
    o.mmap_bytes = int64_t{config.sqlite_mmap_mb} << 20;
    o.sweep_interval_ms = options.read_only ? 0 : config.sweep_interval_s * 1000;
    auto s = store::SqliteItemStore::Open(o, clock);
    if (!s.ok()) return s.status();
    return std::unique_ptr<store::ItemStore>(std::move(*s));
  }
  if (config.backend == "dynamodb") {
    auto credentials = store::aws::LoadCredentials();
    if (!credentials.ok()) return credentials.status();
    store::DynamoDbItemStore::Options o;
    o.table = config.table;
    o.region = config.region;
    o.endpoint = config.endpoint;
    o.ca_file = config.ca_file;
    o.credentials = std::move(*credentials);
    o.request_timeout_ms = config.request_timeout_ms;
    o.retry_budget_ms = config.retry_budget_ms;
    o.max_requests_in_flight = config.max_requests_in_flight;
    o.on_retry = options.on_retry;
    if (options.on_write_units) {
      o.on_write_units = [f = options.on_write_units](const store::DynamoDbItemStore::WriteUnits& w) {
        f(w.key, w.units);
      };
    }
    auto s = store::DynamoDbItemStore::Open(std::move(o), clock);
    if (!s.ok()) return s.status();
    return std::unique_ptr<store::ItemStore>(std::move(*s));
  }
  return absl::InvalidArgumentError("store.backend must be \"sqlite\", \"memory\" or \"dynamodb\"");
}

}  // namespace toolgate
