#pragma once

#include <string>

#include "toolgate/clock.h"

namespace toolgate {

// A UUIDv7 string (RFC 9562): 48 bits of epoch milliseconds from `clock`, then random bits, so ids
// sort by creation time. Thread-safe.
std::string NewUuidV7(const Clock& clock);

// True when `s` has the textual form of a UUID (8-4-4-4-12 lowercase or uppercase hex digits).
bool LooksLikeUuid(const std::string& s);

}  // namespace toolgate
