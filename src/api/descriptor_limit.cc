#include "api/descriptor_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

absl::StatusOr<DescriptorLimit> RaiseDescriptorLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return absl::InternalError(absl::StrCat("getrlimit: ", std::strerror(errno)));
  DescriptorLimit out{r.rlim_cur, r.rlim_cur, r.rlim_max};
  if (r.rlim_cur == r.rlim_max) return out;
  rlimit raised = r;
  raised.rlim_cur = r.rlim_max;
  // Linux refuses RLIM_INFINITY (above fs.nr_open); fall back to Linux's default nr_open.
  if (setrlimit(RLIMIT_NOFILE, &raised) != 0 && r.rlim_max == RLIM_INFINITY) {
    raised.rlim_cur = rlim_t{1} << 20;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0)
      return absl::InternalError(absl::StrCat("setrlimit: ", std::strerror(errno)));
  }
  out.soft = CurrentDescriptorLimit();
  return out;
}

uint64_t CurrentDescriptorLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;  // cannot happen for RLIMIT_NOFILE; the usual default
  return r.rlim_cur;
}

absl::Status ApplyConnectionCaps(Config& config) {
  const uint64_t nofile = CurrentDescriptorLimit();
  absl::StatusOr<ConnectionCapPlan> plan = ResolveConnectionCaps(nofile, config);
  if (!plan.ok()) return plan.status();
  spdlog::info("connection caps: {} public ({}), {} admin; they need up to {} of the {} descriptors allowed",
               config.server.max_connections,
               plan->derived ? "derived from the descriptor limit" : "server.max_connections",
               config.admin.max_connections, plan->descriptors_needed, nofile);
  if (static_cast<uint64_t>(plan->descriptors_needed) > nofile) {
    spdlog::warn(
        "the descriptor limit ({}) is too low for even {} public connections: under load, connections will "
        "fail with 'too many open files'; raise it (ulimit -n, systemd LimitNOFILE=)",
        nofile, config.server.max_connections);
  }
  return absl::OkStatus();
}

}  // namespace toolgate::api
