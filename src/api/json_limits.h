#pragma once

#include "toolgate/domain/json_depth.h"

namespace toolgate::api {

// How deep a request body to toolgate's own API may nest (checked with JsonDepthWithin).
inline constexpr int kMaxJsonDepth = 64;
// How many values (the body itself, each array element and object member) a request body to
// toolgate's API may hold (checked with CheckJsonText before parsing): a parsed value costs 8-20
// times its text, so 1 MiB of `[0,0,...]` would be a tree of ~8 MB per copy. Far beyond any tool's
// input (a 1 MiB body of real data holds a few thousand), it keeps a body's parse within ~10 MB.
inline constexpr int64_t kMaxJsonValues = 100'000;

using ::toolgate::CheckJsonText;
using ::toolgate::JsonDepthWithin;
using ::toolgate::JsonTextFault;

}  // namespace toolgate::api
