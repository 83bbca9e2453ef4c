// The MCP tool registry (design §14, §17.2, §17.7): which connector serves an exposed name, the
// first connector keeps a contested name, and the last list survives in the store.

#include "toolgate/engine/mcp_tool_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

McpTool Tool(std::string name) { return McpTool{name, name, "", "{}"}; }

TEST(McpToolRegistryTest, ResolvesPublishedNamesAndReplacesAConnectorsList) {
  McpToolRegistry registry({"crm.get_deal"});
  EXPECT_FALSE(registry.HasList("a"));
  EXPECT_TRUE(registry.Publish("a", {Tool("a.echo"), Tool("a.sum")}).empty());
  EXPECT_TRUE(registry.HasList("a"));
  EXPECT_EQ(registry.ConnectorOf("a.echo"), "a");
  EXPECT_EQ(registry.ToolCount("a"), 2u);
  // A later refresh replaces the list: a tool the server no longer lists is gone.
  registry.Publish("a", {Tool("a.echo")});
  EXPECT_EQ(registry.ConnectorOf("a.sum"), std::nullopt);
  EXPECT_EQ(registry.ToolCount("a"), 1u);
  registry.Publish("a", {});
  EXPECT_TRUE(registry.HasList("a")) << "an empty list is still a list";
  EXPECT_EQ(registry.ToolCount("a"), 0u);
}

TEST(McpToolRegistryTest, TheLaterConnectorExposingANameIsLeftOut) {
  McpToolRegistry registry({"crm.get_deal"});
  registry.Publish("a", {Tool("echo")});
  EXPECT_THAT(registry.Publish("b", {Tool("echo"), Tool("crm.get_deal"), Tool("other")}),
              ::testing::ElementsAre("echo", "crm.get_deal"));
  EXPECT_EQ(registry.ConnectorOf("echo"), "a");
  EXPECT_EQ(registry.ConnectorOf("crm.get_deal"), std::nullopt) << "reserved for the http connector's [tools] entry";
  EXPECT_EQ(registry.ConnectorOf("other"), "b");
  // a's refresh keeps its name; once a drops it, b's next refresh gets it.
  registry.Publish("a", {Tool("echo")});
  EXPECT_EQ(registry.ConnectorOf("echo"), "a");
  registry.Publish("a", {});
  registry.Publish("b", {Tool("echo")});
  EXPECT_EQ(registry.ConnectorOf("echo"), "b");
  ASSERT_EQ(registry.Tools().size(), 1u);
  EXPECT_EQ(registry.Tools()[0].connector_id, "b");
}

// Design §1: the connector is the part of a name before its first dot. A server behind connector
// `m` listed without a prefix cannot expose `crm.update` (crm's calls would reach it, and a kill
// switch on crm would not stop them) nor `other.x` of another MCP connector; its own namespace and
// names that are no connector's are its to use.
TEST(McpToolRegistryTest, AToolInAnotherConnectorsNamespaceIsLeftOut) {
  McpToolRegistry registry({}, {"crm", "m", "other"});
  EXPECT_THAT(registry.Publish("m", {Tool("crm.update"), Tool("other.x"), Tool("m.ok"), Tool("free.y"), Tool("z")}),
              ::testing::ElementsAre("crm.update", "other.x"));
  EXPECT_EQ(registry.ConnectorOf("crm.update"), std::nullopt);
  EXPECT_EQ(registry.ConnectorOf("other.x"), std::nullopt);
  EXPECT_EQ(registry.ConnectorOf("m.ok"), "m");
  EXPECT_EQ(registry.ConnectorOf("free.y"), "m");
  EXPECT_EQ(registry.ConnectorOf("z"), "m");
  EXPECT_TRUE(registry.Publish("other", {Tool("other.x")}).empty()) << "its own namespace";
  EXPECT_EQ(registry.ConnectorOf("other.x"), "other");
}

TEST(McpToolRegistryTest, TheLastListIsKeptInTheStore) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  auto none = McpToolRegistry::Load(store, "a");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  McpServerRecord record;
  record.tools_json = R"([{"name":"echo"}])";
  record.server_name = "example-server";
  record.server_version = "1.2.3";
  record.protocol_version = "2025-11-25";
  record.tool_count = 1;
  record.refreshed_at_ms = 1'800'000'000'000;
  ASSERT_TRUE(McpToolRegistry::Save(store, "a", record).ok());
  auto loaded = McpToolRegistry::Load(store, "a");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->tools_json, R"([{"name":"echo"}])");
  EXPECT_EQ((*loaded)->server_name, "example-server");
  EXPECT_EQ((*loaded)->server_version, "1.2.3");
  EXPECT_EQ((*loaded)->protocol_version, "2025-11-25");
  EXPECT_EQ((*loaded)->tool_count, 1);
  EXPECT_EQ((*loaded)->refreshed_at_ms, 1'800'000'000'000);
  McpServerRecord huge;
  huge.tools_json = std::string(400 * 1024, ' ');
  EXPECT_EQ(McpToolRegistry::Save(store, "a", huge).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*McpToolRegistry::Load(store, "a"))->server_name, "example-server") << "a refused save writes nothing";
}

}  // namespace
}  // namespace toolgate
