#pragma once

// The OpenAPI 3.1 description of both listeners (docs/openapi.json, compiled in). Each operation is
// tagged "public" or "admin"; GET /openapi.json on a listener answers the document with that
// listener's operations only.

#include <string>
#include <string_view>

namespace toolgate::api {

extern const std::string_view kOpenApiDocument;

// The document restricted to the operations tagged `listener` ("public" | "admin"), as JSON text;
// servers[] names the listener's own address when `server_url` is not empty.
std::string OpenApiFor(std::string_view listener, const std::string& server_url);

}  // namespace toolgate::api
