#include "api/openapi.h"

#include "nlohmann/json.hpp"

namespace toolgate::api {

std::string OpenApiFor(std::string_view listener, const std::string& server_url) {
  using json = nlohmann::json;
  json doc = json::parse(kOpenApiDocument, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("paths")) return "{}";  // the build checks the document (openapi_test)
  json paths = json::object();
  for (auto& [path, item] : doc["paths"].items()) {
    json kept = json::object();
    for (auto& [key, op] : item.items()) {
      if (!op.is_object() || !op.contains("tags")) {
        kept[key] = op;  // shared parameters of the path
        continue;
      }
      for (const auto& tag : op["tags"]) {
        if (tag == std::string(listener)) kept[key] = op;
      }
    }
    bool has_operation = false;
    for (auto& [key, op] : kept.items()) has_operation = has_operation || (op.is_object() && op.contains("tags"));
    if (has_operation) paths[path] = kept;
  }
  doc["paths"] = paths;
  if (!server_url.empty())
    doc["servers"] = json::array({{{"url", server_url}, {"description", std::string(listener) + " listener"}}});
  return doc.dump();
}

}  // namespace toolgate::api
