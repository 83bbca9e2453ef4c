#pragma once

#include "toolgate/domain/json_depth.h"

namespace toolgate::api {

// How deep a request body to toolgate's own API may nest (checked with JsonDepthWithin).
inline constexpr int kMaxJsonDepth = 64;

using ::toolgate::JsonDepthWithin;

}  // namespace toolgate::api
