#pragma once

// Early-return helpers for absl::Status / absl::StatusOr (Debian's Abseil has no status_macros.h).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TOOLGATE_INTERNAL_CONCAT_(a, b) a##b
#define TOOLGATE_INTERNAL_CONCAT(a, b) TOOLGATE_INTERNAL_CONCAT_(a, b)

// RETURN_IF_ERROR(expr): returns the Status of `expr` from the enclosing function when not ok.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status toolgate_status_ = (expr);            \
    if (!toolgate_status_.ok()) return toolgate_status_; \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; returns its Status when not ok,
// else moves its value into `lhs` (which may be a declaration: `ASSIGN_OR_RETURN(auto x, f())`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  TOOLGATE_INTERNAL_ASSIGN_OR_RETURN(TOOLGATE_INTERNAL_CONCAT(toolgate_statusor_, __LINE__), lhs, expr)

#define TOOLGATE_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                       \
  if (!tmp.ok()) return std::move(tmp).status();           \
  lhs = std::move(tmp).value()
