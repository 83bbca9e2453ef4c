#pragma once

// The process's file descriptor limit (RLIMIT_NOFILE) at start: raised, and turned into the
// listeners' connection caps. Every accepted connection, downstream connection and store file is a
// descriptor; running out makes accept() and connect() fail (EMFILE), so the caps are set below it.

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "toolgate/config.h"

namespace toolgate::api {

struct DescriptorLimit {
  uint64_t soft_before = 0;  // the soft limit the process started with
  uint64_t soft = 0;         // the soft limit now
  uint64_t hard = 0;
};

// Raises the soft limit to the hard limit, as nginx (worker_rlimit_nofile) and Go's runtime do: a
// soft limit of 1024 is a leftover of select(), which toolgate does not use (Asio uses epoll).
// Changes the whole process: call it once, from main. kInternal when getrlimit/setrlimit fail.
absl::StatusOr<DescriptorLimit> RaiseDescriptorLimit();

// The soft limit now.
uint64_t CurrentDescriptorLimit();

// Settles config.server.max_connections against the current soft limit (ResolveConnectionCaps)
// and logs the outcome; warns when even the smallest derived cap needs more descriptors than the
// limit allows. kInvalidArgument for an explicit cap the limit cannot hold.
absl::Status ApplyConnectionCaps(Config& config);

}  // namespace toolgate::api
