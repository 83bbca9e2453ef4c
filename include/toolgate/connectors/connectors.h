#pragma once

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/connectors/http_connector.h"
#include "toolgate/connectors/mcp_connector.h"
#include "toolgate/engine/connector.h"
#include "toolgate/net/http_client.h"

namespace toolgate {

// Every configured connector's implementation, by id, each of its kind (design §13): HttpConnector
// for `http`, McpConnector for `mcp` and `mcp_stdio` (those need `mcp`; without it an MCP connector
// is refused with kInvalidArgument). The first connector that cannot be built (e.g. an unreadable CA
// file) fails it all. Call Start on each once the event loop runs.
absl::StatusOr<Connectors> MakeConnectors(const Config& config, net::ConnectionPool& pool, const Clock& clock,
                                          const McpConnectorDeps* mcp = nullptr);

}  // namespace toolgate
