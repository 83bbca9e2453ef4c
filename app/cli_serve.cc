// `toolgate serve`, `version`, and `dev-token` (an HS256 token for development).

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "api/descriptor_limit.h"
#include "api/gateway.h"
#include "app/cli.h"
#include "app/log_format.h"
#include "spdlog/spdlog.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/engine/event_log.h"

namespace toolgate::cli {

namespace {

// Before the gateway settles its connection caps, which it derives from this limit.
void RaiseDescriptorLimit() {
  absl::StatusOr<api::DescriptorLimit> limit = api::RaiseDescriptorLimit();
  if (!limit.ok()) {
    spdlog::warn("descriptor limit (RLIMIT_NOFILE) left as it was: {}", limit.status().ToString());
  } else if (limit->soft != limit->soft_before) {
    spdlog::info("descriptor limit (RLIMIT_NOFILE): raised the soft limit from {} to {} (hard limit {})",
                 limit->soft_before, limit->soft, limit->hard);
  } else {
    spdlog::info("descriptor limit (RLIMIT_NOFILE): soft {}, hard {}", limit->soft, limit->hard);
  }
}

// The gateway holds secrets (the JWT signing secret, the callback secret, connectors' credentials)
// in its environment and memory, and it starts `mcp_stdio` servers as children of the same user. A
// dumpable process of that user is open to them: /proc/<pid>/environ and /proc/<pid>/mem, ptrace.
// Not dumpable, those are the kernel's and root's alone (and there is no core dump); the process
// still reads its own /proc/self. Before any child or thread is started.
void MakeNotDumpable() {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    spdlog::warn("prctl(PR_SET_DUMPABLE, 0) failed: {}; a process of the same user can read toolgate's environment",
                 std::strerror(errno));
  }
}

// SIGINT and SIGTERM stop the gateway; SIGHUP is ignored, with a log line saying so (toolgate has
// no config reload, and a SIGHUP left to its default — a closed terminal, a `kill -HUP` meant to
// reload — would end the process with no drain, cutting the calls in flight and leaving their slots
// held until their leases ran out). They are blocked in every thread of the process — this runs
// before the gateway starts any, and a thread inherits the mask of the one that starts it — and one
// thread waits for them with sigwait. So a stop never depends on which thread the kernel picks or
// on what that thread is doing (a thread parked in a futex inside a library may not run a handler
// for a long time under a sanitizer's deferred signals), and no other thread sees EINTR.
class StopOnSignal {
 public:
  StopOnSignal() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  }
  // Starts the waiting thread; `gateway` must outlive this object.
  void Watch(api::Gateway& gateway) {
    waiter_ = std::thread([this, &gateway] {
      int signal = 0;
      for (;;) {
        if (sigwait(&signals_, &signal) != 0 || done_.load()) return;
        if (signal != SIGHUP) break;
        LogEvent(spdlog::level::warn, "signal_ignored",
                 "SIGHUP ignored: toolgate has no config reload (restart it to apply a changed config)",
                 {{"signal", "SIGHUP"}});
      }
      spdlog::info("{}: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
      gateway.Stop();
    });
  }
  // After Run returned, before the gateway goes: wakes the waiter if no signal did, and joins it.
  void Unwatch() {
    if (!waiter_.joinable()) return;
    done_ = true;
    pthread_kill(waiter_.native_handle(), SIGTERM);  // blocked, so it only ends the sigwait
    waiter_.join();
  }
  ~StopOnSignal() { Unwatch(); }

 private:
  sigset_t signals_;
  std::atomic<bool> done_{false};
  std::thread waiter_;
};

int Serve(const Config& config) {
  StopOnSignal stop_on_signal;  // first: before any thread is started
  MakeNotDumpable();
  // Abseil checks every Mutex lock against a process-wide graph of lock orders when it is built
  // without NDEBUG, as Debian builds it: a global lock and a graph lookup per lock, ~1.5 % of a busy
  // gateway's CPU. Abseil's own release default is off, and so is the server's; the unit tests, which
  // never come here, keep the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  SystemClock clock;
  // [log] format: every line from here on is one JSON object, or text.
  spdlog::default_logger()->set_formatter(MakeLogFormatter(config.log.json));
  RaiseDescriptorLimit();
  auto gateway = api::Gateway::Create(config, clock);
  if (!gateway.ok()) return Fail(std::string(gateway.status().message()));
  if (absl::Status s = (*gateway)->Start(); !s.ok()) return Fail(std::string(s.message()));
  spdlog::info("toolgate serving ({}; store {} {})", config.source, config.store.backend, config.store.path);
  std::printf("toolgate: public API  http://%s:%d/v1\n", config.server.listen.host.c_str(), (*gateway)->public_port());
  std::printf("toolgate: admin       http://%s:%d/ (dashboard; metrics at /metrics)\n",
              config.admin.listen.host.c_str(), (*gateway)->admin_port());
  std::fflush(stdout);
  stop_on_signal.Watch(**gateway);
  (*gateway)->Run();
  stop_on_signal.Unwatch();
  return kExitOk;
}

struct DevTokenOptions {
  std::string tenant, account, subject = "dev-user";
  std::vector<std::string> roles;
  int ttl_s = 3600;
};

int DevToken(const Config& config, const DevTokenOptions& o) {
  const char* secret = std::getenv(config.auth.hs256_secret_env.c_str());
  if (secret == nullptr || *secret == '\0') return Fail("$" + config.auth.hs256_secret_env + " is not set");
  SystemClock clock;
  json claims = {{"sub", o.subject},
                 {"custom:tenant_id", o.tenant},
                 {"exp", clock.now_epoch_sec() + o.ttl_s},
                 {"iat", clock.now_epoch_sec()}};
  // The gateway checks these when the config names them: a token it would refuse is no use.
  if (!config.auth.issuer.empty()) claims["iss"] = config.auth.issuer;
  if (!config.auth.audience.empty()) claims["aud"] = config.auth.audience;
  if (!o.account.empty()) claims["custom:account_id"] = o.account;
  if (!o.roles.empty()) claims["custom:roles"] = o.roles;
  std::printf("%s\n", auth::SignHs256(claims.dump(), secret).c_str());
  return kExitOk;
}

}  // namespace

void RegisterServeCommands(CLI::App& app, Cli& cli) {
  app.add_subcommand("serve", "run the gateway")->callback([&cli] {
    if (const Config* c = cli.config()) cli.exit_code = Serve(*c);
  });
  app.add_subcommand("version", "print the version")->callback([&cli] {
#ifdef TOOLGATE_ALLOCATOR
    std::printf("toolgate 0.1.0 (malloc: %s)\n", TOOLGATE_ALLOCATOR);
#else
    std::printf("toolgate 0.1.0 (malloc: libc)\n");
#endif
    cli.exit_code = kExitOk;
  });
  auto o = std::make_shared<DevTokenOptions>();
  auto* dev_token =
      app.add_subcommand("dev-token", "print an HS256 token signed with the configured secret (development)");
  dev_token->add_option("--tenant", o->tenant, "custom:tenant_id")->required();
  dev_token->add_option("--account", o->account, "custom:account_id");
  dev_token->add_option("--sub", o->subject, "sub");
  dev_token->add_option("--role", o->roles, "role (repeatable): operator, admin");
  dev_token->add_option("--ttl", o->ttl_s, "seconds until exp")->check(CLI::Range(1, 7 * 86400));
  dev_token->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = DevToken(*c, *o);
  });
}

}  // namespace toolgate::cli
