#pragma once

#include <string>
#include <string_view>

#include "toolgate/clock.h"

namespace toolgate {

// A UUIDv7 string (RFC 9562): 48 bits of epoch milliseconds from `clock`, then random bits, so ids
// sort by creation time; ids made in one process sort in the order they were made (a 12-bit counter
// in rand_a, RFC 9562 §6.2 method 1), unless its clock steps back by more than a second. Thread-safe.
std::string NewUuidV7(const Clock& clock);

// A slot lease's id: 64 random bits as 11 base64url characters ([A-Za-z0-9_-]). It only has to be
// unique among the leases one connector's semaphore holds at once (a collision is refused by the
// acquire's condition, never counted twice), and it is written into that item on every acquire and
// release, so it is a third of a UUID's size (DESIGN §16: WAL bytes and DynamoDB write units).
// Thread-safe.
std::string NewLeaseId();

// True when `s` has the textual form of a UUID (8-4-4-4-12 lowercase or uppercase hex digits).
bool LooksLikeUuid(const std::string& s);

// The name alphabet (DESIGN §17.2): tool names, action types, connector ids and kill-switch keys are
// [A-Za-z0-9_.-]{1,200}, case-sensitive (MCP tool names use uppercase).
inline constexpr size_t kMaxNameLength = 200;
bool IsValidToolName(std::string_view name);

// Many routers match paths without regard to ASCII case or trailing '.', '-' and '_', so where a
// tool name or action type decides what is allowed, a name that differs from another only in those
// is taken for it: `crm.Delete` and `crm.delete.` are both `crm.delete`. FoldToolName gives the
// name as compared (lower case, the trailing characters dropped), for keys of a lookup;
// ToolNamesLookAlike compares two names so without copying either.
std::string FoldToolName(std::string_view name);
bool ToolNamesLookAlike(std::string_view a, std::string_view b);

// Tenant and account ids as a token may carry them: [A-Za-z0-9_.:@-]{1,128}.
bool IsValidTenantId(std::string_view id);

}  // namespace toolgate
