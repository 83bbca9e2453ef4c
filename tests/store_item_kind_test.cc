// The `item` label of toolgate_store_write_units_total: every kind of item the services write is
// named from the services' own key functions, so a change of key layout shows up here.

#include "gmock/gmock.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/services/callback_outbox.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/queue_service.h"

namespace toolgate {
namespace {

TEST(StoreItemKindTest, EveryKindOfItemIsNamedFromItsKey) {
  EXPECT_EQ(StoreItemKind(ExecutionStore::Key("t1", "e1")), "execution");
  EXPECT_EQ(StoreItemKind(IntentStore::Key("t1", "k1")), "intent");
  EXPECT_EQ(StoreItemKind({Ledger::ExecutionChain("e1"), "EVENT#000000000001"}), "event");
  EXPECT_EQ(StoreItemKind({Ledger::AuditChain(0), "EVENT#000000000001"}), "audit_event");
  EXPECT_EQ(StoreItemKind(ConnectorConcurrencyService::Key("crm")), "concurrency");
  EXPECT_EQ(StoreItemKind(ConnectorConcurrencyService::Key("crm", 3)), "concurrency");
  EXPECT_EQ(StoreItemKind(CircuitBreakerService::Key("crm")), "breaker");
  EXPECT_EQ(StoreItemKind(QueueService::ItemKey("crm", "t1", 1, "e1")), "queue");
  EXPECT_EQ(StoreItemKind(QueueService::TenantKey("crm", "t1")), "queue");
  EXPECT_EQ(StoreItemKind(CallbackOutbox::Key("e1")), "callback");
  EXPECT_EQ(StoreItemKind({"SLO#crm", "MIN#1"}), "slo");
  EXPECT_EQ(StoreItemKind({"MCP_SESSION#0123abcd", "LOG_LEVEL"}), "mcp_session");
  EXPECT_EQ(StoreItemKind({"KILLSWITCH", "tool#crm.x"}), "other");
}

TEST(StoreItemKindTest, WriteUnitsAreCountedByKindOfItem) {
  Metrics metrics;
  metrics.StoreWriteUnits("dynamodb", ExecutionStore::Key("t1", "e1"), 2);
  metrics.StoreWriteUnits("dynamodb", ExecutionStore::Key("t1", "e2"), 1);
  metrics.StoreWriteUnits("dynamodb", ConnectorConcurrencyService::Key("crm"), 1);
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text, ::testing::HasSubstr(R"(toolgate_store_write_units_total{backend="dynamodb",item="execution"} 3)"));
  EXPECT_THAT(text, ::testing::HasSubstr(R"(toolgate_store_writes_total{backend="dynamodb",item="execution"} 2)"));
  EXPECT_THAT(text,
              ::testing::HasSubstr(R"(toolgate_store_write_units_total{backend="dynamodb",item="concurrency"} 1)"));
}

}  // namespace
}  // namespace toolgate
