#include "toolgate/engine/mcp_tool_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace toolgate {

namespace {

store::ItemKey KeyOf(const std::string& connector_id) {
  return {absl::StrCat("CONNECTOR#", connector_id), "MCP_TOOLS"};
}

}  // namespace

McpToolRegistry::McpToolRegistry(std::set<std::string, std::less<>> reserved,
                                 std::set<std::string, std::less<>> connector_ids)
    : reserved_(std::move(reserved)), connector_ids_(std::move(connector_ids)) {}

std::vector<std::string> McpToolRegistry::Publish(const std::string& connector_id, std::vector<McpTool> tools) {
  std::vector<std::string> left_out;
  absl::MutexLock lock(&mu_);
  for (const std::string& name : names_of_[connector_id]) by_name_.erase(name);
  std::vector<std::string>& names = names_of_[connector_id];
  names.clear();
  std::vector<std::string> foreign;  // in another connector's namespace
  for (McpTool& tool : tools) {
    const size_t dot = tool.name.find('.');
    const std::string_view space = std::string_view(tool.name).substr(0, dot);
    if (dot != std::string::npos && space != connector_id && connector_ids_.count(space) > 0) {
      foreign.push_back(tool.name);
      left_out.push_back(tool.name);
      continue;
    }
    const bool taken = reserved_.count(tool.name) > 0 || by_name_.count(tool.name) > 0;
    if (taken) {
      left_out.push_back(tool.name);
      continue;
    }
    names.push_back(tool.name);
    tool.connector_id = connector_id;
    std::string name = tool.name;
    by_name_.emplace(std::move(name), std::move(tool));
  }
  for (const std::string& name : left_out) {
    if (std::find(foreign.begin(), foreign.end(), name) != foreign.end()) {
      spdlog::warn("connector {}: tool {} left out: the name is in connector {}'s namespace (set tool_prefix)",
                   connector_id, name, name.substr(0, name.find('.')));
    } else {
      spdlog::warn("connector {}: tool {} left out: another connector already exposes that name (set tool_prefix)",
                   connector_id, name);
    }
  }
  return left_out;
}

std::optional<std::string> McpToolRegistry::ConnectorOf(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second.connector_id;
}

std::vector<McpTool> McpToolRegistry::Tools() const {
  absl::MutexLock lock(&mu_);
  std::vector<McpTool> out;
  out.reserve(by_name_.size());
  for (const auto& [name, tool] : by_name_) out.push_back(tool);
  return out;
}

bool McpToolRegistry::HasList(std::string_view connector_id) const {
  absl::MutexLock lock(&mu_);
  return names_of_.find(connector_id) != names_of_.end();
}

size_t McpToolRegistry::ToolCount(std::string_view connector_id) const {
  absl::MutexLock lock(&mu_);
  auto it = names_of_.find(connector_id);
  return it == names_of_.end() ? 0 : it->second.size();
}

absl::Status McpToolRegistry::Save(store::ItemStore& store, const std::string& connector_id,
                                   const McpServerRecord& record) {
  if (record.tools_json.size() > kMaxListBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the tool list of connector ", connector_id, " has ",
                                                   record.tools_json.size(), " bytes, more than a store item holds"));
  }
  store::Item item{{"tools", record.tools_json},
                   {"server_name", record.server_name.substr(0, 200)},
                   {"server_version", record.server_version.substr(0, 100)},
                   {"protocol_version", record.protocol_version.substr(0, 40)},
                   {"tool_count", record.tool_count},
                   {"refreshed_at_ms", record.refreshed_at_ms}};
  absl::StatusOr<store::WriteResult> put = store.Put(KeyOf(connector_id), item, store::Condition::Always());
  return put.status();
}

absl::StatusOr<std::optional<McpServerRecord>> McpToolRegistry::Load(store::ItemStore& store,
                                                                     const std::string& connector_id) {
  absl::StatusOr<std::optional<store::Item>> got = store.Get(KeyOf(connector_id));
  if (!got.ok()) return got.status();
  if (!got->has_value()) return std::optional<McpServerRecord>();
  const store::Item& item = **got;
  auto it = item.find("tools");
  if (it == item.end() || !it->second.is_string()) return std::optional<McpServerRecord>();
  McpServerRecord r;
  r.tools_json = it->second.as_string();
  r.server_name = store::GetString(item, "server_name").value_or("");
  r.server_version = store::GetString(item, "server_version").value_or("");
  r.protocol_version = store::GetString(item, "protocol_version").value_or("");
  r.tool_count = store::GetInt(item, "tool_count").value_or(0);
  r.refreshed_at_ms = store::GetInt(item, "refreshed_at_ms").value_or(0);
  return std::optional<McpServerRecord>(std::move(r));
}

}  // namespace toolgate
