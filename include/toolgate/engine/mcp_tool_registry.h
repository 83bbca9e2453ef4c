#pragma once

// Which MCP connector serves which exposed tool name (design §14, §17.2, §17.7). MCP connectors
// publish their servers' tool lists here when they refresh them; the invoker resolves a tool's
// connector and the MCP front door lists tools from it. The last list of each connector is also
// kept in the store, so an instance that starts while a server is down still knows its tools.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// One tool of an MCP server as toolgate exposes it.
struct McpTool {
  std::string name;         // exposed: <tool_prefix><server's name>
  std::string server_name;  // the server's own name, sent in tools/call
  std::string connector_id;
  std::string definition_json;  // the server's Tool object (description, inputSchema, ...) with `name` = exposed name
};

// What the store keeps of an MCP connector's server, for every instance and for operators (design
// §17.7): its last tool list and what it said about itself when that list was fetched.
struct McpServerRecord {
  std::string tools_json;        // a JSON array of Tool objects as the server listed them (server names)
  std::string server_name;       // serverInfo.name of its `initialize` answer ("" if unknown)
  std::string server_version;    // serverInfo.version
  std::string protocol_version;  // the revision the session runs
  int64_t tool_count = 0;        // the tools toolgate exposes from that list
  int64_t refreshed_at_ms = 0;   // when the list was fetched (epoch ms)
};

// Thread-safe: Publish and the readers may run concurrently from any thread.
class McpToolRegistry {
 public:
  // The largest tool list (its JSON text) a connector may have: what a store item holds (a DynamoDB
  // item at most 400 KB; the key and attribute names need a little of it), so that every list in use
  // can be saved for the fleet. A server's list beyond it is refused whole (McpConnector::RefreshTools).
  static constexpr size_t kMaxListBytes = 350 * 1024;

  // `reserved`: names other connectors already serve ([tools] of http connectors); an MCP tool of
  // such a name is left out. `connector_ids`: every configured connector; an MCP tool named in
  // another's namespace (`<its id>.rest`, design §1: the connector is the part before the first dot)
  // is left out too, so that a server listed with `tool_prefix = ""` can neither receive calls meant
  // for that connector nor escape that connector's kill switch.
  explicit McpToolRegistry(std::set<std::string, std::less<>> reserved = {},
                           std::set<std::string, std::less<>> connector_ids = {});

  // Replaces `connector_id`'s tools with `tools` (their connector_id must be it). A name another
  // connector already exposes (or a reserved one) is left out, logged, and returned: the connector
  // that published it first keeps it (§17.2).
  std::vector<std::string> Publish(const std::string& connector_id, std::vector<McpTool> tools);

  // The connector exposing `name`, if an MCP connector does.
  std::optional<std::string> ConnectorOf(std::string_view name) const;
  // Every exposed tool, sorted by name.
  std::vector<McpTool> Tools() const;
  // Whether `connector_id` has published a list (an empty one counts), and how many tools it has.
  bool HasList(std::string_view connector_id) const;
  size_t ToolCount(std::string_view connector_id) const;

  // The store copy of a connector's last list: item (CONNECTOR#<id>, MCP_TOOLS) with attributes
  // `tools` (the JSON array), `server_name`, `server_version`, `protocol_version`, `tool_count` and
  // `refreshed_at_ms`. Blocking. Save: kInvalidArgument when the list is larger than a store item
  // may be (nothing is written; the list is then kept in memory only); store errors as the store
  // returns them.
  static absl::Status Save(store::ItemStore& store, const std::string& connector_id, const McpServerRecord& record);
  // The saved record, or nullopt when none was saved (an item without `tools` counts as none).
  static absl::StatusOr<std::optional<McpServerRecord>> Load(store::ItemStore& store, const std::string& connector_id);

 private:
  const std::set<std::string, std::less<>> reserved_;
  const std::set<std::string, std::less<>> connector_ids_;
  mutable absl::Mutex mu_;
  std::map<std::string, McpTool, std::less<>> by_name_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>, std::less<>> names_of_ ABSL_GUARDED_BY(mu_);  // connector → names
};

}  // namespace toolgate
