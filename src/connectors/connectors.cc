#include "toolgate/connectors/connectors.h"

#include "absl/strings/str_cat.h"

namespace toolgate {

absl::StatusOr<Connectors> MakeConnectors(const Config& config, net::ConnectionPool& pool, const Clock& clock,
                                          const McpConnectorDeps* mcp) {
  Connectors out;
  for (const auto& [id, c] : config.connectors) {
    if (c.is_mcp()) {
      if (mcp == nullptr)
        return absl::InvalidArgumentError(absl::StrCat("connectors.", id, ": MCP connectors need the gateway"));
      absl::StatusOr<std::unique_ptr<McpConnector>> connector = McpConnector::Create(c, pool, clock, *mcp);
      if (!connector.ok()) return connector.status();
      out.emplace(id, *std::move(connector));
      continue;
    }
    absl::StatusOr<std::unique_ptr<HttpConnector>> connector = HttpConnector::Create(c, pool, clock);
    if (!connector.ok()) return connector.status();
    out.emplace(id, *std::move(connector));
  }
  return out;
}

}  // namespace toolgate
