#include "api/queue_dispatcher.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <mutex>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)
#include <vector>

#include "api/api_support.h"
#include "api/invocation.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

namespace {

constexpr int64_t kFirstBackoffMs = 10;
constexpr int64_t kBreakerRecheckMs = 250;  // how often a lane re-reads its breaker while it has work
constexpr int64_t kAtLimitWaitMs = 20;
constexpr int64_t kReadingBreakerMs = 50;  // another worker is reading the breaker: wait this long      // the
                                           // connector is at max_in_flight: try again soon

}  // namespace

struct QueueDispatcher::Impl {
  // One connector's queue and its workers. Every worker of a lane runs on the lane's strand, so
  // `sleepers` needs no lock; `mu` guards what the pool threads read and write (PickOne).
  struct Lane {
    explicit Lane(const ConnectorConfig& c, asio::io_context& io) : connector(c), strand(asio::make_strand(io)) {}
    const ConnectorConfig& connector;
    asio::strand<asio::io_context::executor_type> strand;
    std::vector<asio::steady_timer*> sleepers;

    std::mutex mu;
    std::vector<std::string> tenants;  // this round's tenants, in turn
    size_t cursor = 0;
    int64_t breaker_checked_ms = 0;
    int64_t parked_until_ms = 0;  // breaker OPEN or connector throttled: no claims before this
    bool scouting = false;        // parked: one worker still walks the queue (deadlines); the rest wait
    // The items other workers of this lane are between reading and claiming: a worker passes over
    // them, so the lane's workers claim different calls instead of all racing for a tenant's head
    // (a lost race costs a slot taken and given back).
    std::vector<std::string> claiming;
  };

  enum class StepKind {
    kRun,      // a claimed call to run: `ticket`
    kWorked,   // something changed (ended, put back, lost a race): look again at once
    kNothing,  // this tenant had nothing ready
    kIdle,     // no tenant has queued calls
    kWait,     // parked or at the limit: wait `wait_ms`
  };
  struct Step {
    StepKind kind = StepKind::kIdle;
    std::unique_ptr<ToolInvoker::Ticket> ticket;
    int64_t wait_ms = 0;
    size_t tenants = 0;

    static Step Idle() { return {}; }
  };

  Impl(GatewayContext& context, asio::io_context& io_context) : g(context), io(io_context) {
    for (const auto& [id, c] : g.config.connectors) lanes.push_back(std::make_unique<Lane>(c, io));
  }

  int64_t LeaseMs(const ConnectorConfig& c) const {
    const int lease_s = g.config.queue.claim_lease_s > 0 ? g.config.queue.claim_lease_s : c.concurrency.lease_ttl_s;
    return int64_t{lease_s} * 1000;
  }

  // The breaker says whether the lane may claim (§15: an OPEN breaker parks the queue; the half-open
  // probe may be a queued call). Re-read at most every kBreakerRecheckMs.
  std::optional<int64_t> ParkedFor(Lane& lane, int64_t now_ms) {
    {
      std::lock_guard<std::mutex> l(lane.mu);
      if (now_ms < lane.parked_until_ms) return lane.parked_until_ms - now_ms;
      if (now_ms - lane.breaker_checked_ms < kBreakerRecheckMs) return std::nullopt;
      lane.breaker_checked_ms = now_ms;
      // The other workers wait for this read rather than claim on a stale "not parked".
      lane.parked_until_ms = now_ms + kReadingBreakerMs;
    }
    absl::StatusOr<breaker::Snapshot> b = g.engine.breakers().Read(lane.connector.id);
    if (!b.ok()) return g.config.queue.poll_interval_ms;  // the store is in trouble: do not claim now
    int64_t until_ms = 0;
    // OPEN: parked until its cooldown ends, but looked at again meanwhile, so that an operator's close
    // drains the queue at once rather than after the cooldown.
    if (b->state == breaker::State::kOpen)
      until_ms = std::min(b->open_until_epoch_sec * 1000, now_ms + kBreakerRecheckMs);
    if (b->state == breaker::State::kForcedOpen) until_ms = now_ms + kBreakerRecheckMs;
    if (b->state == breaker::State::kHalfOpen && b->half_open_probe_in_flight) until_ms = now_ms + kBreakerRecheckMs;
    until_ms = std::max(until_ms, b->throttled_until_epoch_sec * 1000);
    std::lock_guard<std::mutex> l(lane.mu);
    lane.parked_until_ms = until_ms;
    if (until_ms <= now_ms) return std::nullopt;
    return until_ms - now_ms;
  }

  // One look at the lane's queue (blocking: on the pool): the next tenant's next ready call, ended
  // when its deadline passed, else claimed and admitted.
  Step PickOne(Lane& lane) {
    const ConnectorConfig& c = lane.connector;
    if (g.draining) return Step::Idle();
    // Parked (breaker OPEN, connector throttled): only one worker of the lane reads the queue — to end
    // calls whose deadline passed — and the others wait without touching the store (with every
    // worker reading, a parked fleet's polling alone saturated a small store).
    bool scout = false;
    if (std::optional<int64_t> parked = ParkedFor(lane, g.clock.now_epoch_ms())) {
      std::lock_guard<std::mutex> l(lane.mu);
      if (lane.scouting) return {StepKind::kWait, nullptr, *parked, 0};
      lane.scouting = scout = true;
    }
    struct ScoutDone {
      Lane& lane;
      bool scout;
      ~ScoutDone() {
        if (!scout) return;
        std::lock_guard<std::mutex> l(lane.mu);
        lane.scouting = false;
      }
    } scout_done{lane, scout};
    std::string tenant;
    size_t round = 0;
    if (std::optional<Step> stop = NextTenant(lane, tenant, round)) return std::move(*stop);
    const int64_t now_ms = g.clock.now_epoch_ms();
    std::vector<std::string> skip;
    {
      std::lock_guard<std::mutex> l(lane.mu);
      skip = lane.claiming;
    }
    absl::StatusOr<std::optional<QueueItem>> next =
        g.engine.queue().NextReady(c.id, tenant, c.concurrency.max_clock_skew_s, /*scan_limit=*/200, skip);
    if (!next.ok()) {
      spdlog::warn("queue of {}: not read: {}", c.id, next.status().ToString());
      return {StepKind::kWait, nullptr, g.config.queue.poll_interval_ms, round};
    }
    if (!next->has_value()) return {StepKind::kNothing, nullptr, 0, round};
    const QueueItem& item = **next;
    if (item.deadline_ms <= now_ms) {
      bool started = false;
      absl::StatusOr<bool> ended = g.engine.queued_calls().End(item, "system", ExpiryReason::kDeadline, &started);
      if (!ended.ok())
        spdlog::warn("queued execution {}: not expired: {}", item.execution_id, ended.status().ToString());
      // A run that started is no longer "still queued" (§15): its dead dispatcher's claim is taken
      // over below, as before its deadline, and the call ends as its re-run ends.
      if (!started) return {StepKind::kWorked, nullptr, 0, round};
    }
    // Parked (breaker OPEN, connector throttled): no claims — but deadlines still end calls above. The
    // scout goes on to the next tenant (its round ends in the idle backoff).
    if (std::optional<int64_t> parked = ParkedFor(lane, now_ms)) {
      if (scout) return {StepKind::kNothing, nullptr, 0, round};
      return {StepKind::kWait, nullptr, *parked, round};
    }
    return TakeUp(lane, item, now_ms, round);
  }

  // The tenant whose turn it is (the list read again when a round is over) and the round's size; a
  // step to return instead when there is none or the queue could not be read.
  std::optional<Step> NextTenant(Lane& lane, std::string& tenant, size_t& round) {
    std::unique_lock<std::mutex> l(lane.mu);
    if (lane.cursor >= lane.tenants.size()) {
      l.unlock();
      absl::StatusOr<std::vector<std::string>> tenants = g.engine.queue().Tenants(lane.connector.id);
      if (!tenants.ok()) {
        spdlog::warn("queue of {}: tenants not read: {}", lane.connector.id, tenants.status().ToString());
        return Step{StepKind::kWait, nullptr, g.config.queue.poll_interval_ms};
      }
      l.lock();
      lane.tenants = std::move(*tenants);
      lane.cursor = 0;
    }
    if (lane.tenants.empty()) return Step::Idle();
    round = lane.tenants.size();
    tenant = lane.tenants[lane.cursor++];
    return std::nullopt;
  }

  // A ready `item` taken up by this worker (its siblings pass over it meanwhile): the kill switches,
  // then a slot (§17.4: none for a call a switch blocks; AdmitClaimed ends it BLOCKED), then the claim.
  Step TakeUp(Lane& lane, const QueueItem& item, int64_t now_ms, size_t round) {
    const ConnectorConfig& c = lane.connector;
    {
      std::lock_guard<std::mutex> l(lane.mu);
      if (std::find(lane.claiming.begin(), lane.claiming.end(), item.execution_id) != lane.claiming.end()) {
        return {StepKind::kWorked, nullptr, 0, round};  // a sibling took it up meanwhile: look again
      }
      lane.claiming.push_back(item.execution_id);
    }
    struct Claiming {
      Lane& lane;
      const std::string& id;
      ~Claiming() {
        std::lock_guard<std::mutex> l(lane.mu);
        lane.claiming.erase(std::find(lane.claiming.begin(), lane.claiming.end(), id));
      }
    } claiming{lane, item.execution_id};
    absl::StatusOr<std::optional<KillSwitch>> kill =
        g.engine.kill_switches().Match(item.tenant_id, c.id, item.action_type, item.tool_name);
    if (!kill.ok()) return {StepKind::kWait, nullptr, g.config.queue.poll_interval_ms, round};
    std::optional<SlotLease> lease;
    if (!kill->has_value()) {
      SlotRefusal refusal = SlotRefusal::kConnectorFull;
      absl::StatusOr<std::optional<SlotLease>> acquired =
          g.engine.slots().TryAcquire(c.id, c.concurrency, item.tenant_id, &refusal);
      if (!acquired.ok()) return {StepKind::kWait, nullptr, g.config.queue.poll_interval_ms, round};
      // The tenant at its share: its turn passes to the next tenant (a round where every tenant is
      // at its share ends in the idle backoff); the connector full: the lane waits for a slot.
      if (!acquired->has_value() && refusal == SlotRefusal::kTenantShare)
        return {StepKind::kNothing, nullptr, 0, round};
      if (!acquired->has_value()) return {StepKind::kWait, nullptr, kAtLimitWaitMs, round};
      lease = **acquired;
    }
    return ClaimAndAdmit(c, item, std::move(lease), now_ms, round);
  }

  // The claim on `item` (given up at once while draining, §17.5), then its admission: a ticket to
  // run, or kWorked when the race was lost or admission ended the call. `lease` is given back
  // unless admission takes it.
  Step ClaimAndAdmit(const ConnectorConfig& c, const QueueItem& item, std::optional<SlotLease> lease, int64_t now_ms,
                     size_t round) {
    auto give_back_slot = [&] {
      if (!lease) return;
      if (auto r = g.engine.slots().Release(*lease); !r.ok()) {
        spdlog::warn("connector {}: slot not released (its lease will expire): {}", c.id, r.status().ToString());
      }
    };
    absl::StatusOr<std::optional<QueueClaim>> claim =
        g.engine.queue().Claim(item, g.engine.instance_id(), LeaseMs(c), c.concurrency.max_clock_skew_s);
    if (!claim.ok() || !claim->has_value()) {
      give_back_slot();  // lost the race (§17.4): another dispatcher has it
      return {StepKind::kWorked, nullptr, 0, round};
    }
    ++g.in_flight;     // before draining is read and before the ticket exists: a drain waits for it
    if (g.draining) {  // SIGTERM: claims go back at once (§17.5), before the drain lets the process end
      give_back_slot();
      if (auto r = g.engine.queue().Requeue(**claim, now_ms); !r.ok()) {
        spdlog::warn("queue item of {} not given back on drain (its claim expires): {}", (*claim)->item.execution_id,
                     r.status().ToString());
      }
      --g.in_flight;
      return Step::Idle();
    }
    auto admitted = g.engine.invoker().AdmitClaimed(**claim, std::move(lease), g.engine.instance_id());
    if (auto* answer = std::get_if<InvokeResult>(&admitted)) {
      --g.in_flight;
      (void)answer;
      return {StepKind::kWorked, nullptr, 0, round};
    }
    return {StepKind::kRun, std::move(std::get<std::unique_ptr<ToolInvoker::Ticket>>(admitted)), 0, round};
  }

  void WakeAll(Lane& lane) {
    for (asio::steady_timer* t : lane.sleepers) t->cancel();
  }

  asio::awaitable<void> Sleep(Lane& lane, asio::steady_timer& timer, int64_t ms) {
    timer.expires_after(std::chrono::milliseconds(ms));
    lane.sleepers.push_back(&timer);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    lane.sleepers.erase(std::find(lane.sleepers.begin(), lane.sleepers.end(), &timer));
  }

  asio::awaitable<void> Worker(Lane& lane) {
    asio::steady_timer timer(lane.strand);
    int64_t backoff_ms = kFirstBackoffMs;
    size_t misses = 0;
    const int64_t cap_ms = g.config.queue.poll_interval_ms;
    while (!g.draining) {
      auto pick = [this, &lane] { return PickOne(lane); };
      Step step = co_await RunBlocking(g.pool, pick);
      switch (step.kind) {
        case StepKind::kRun: {
          backoff_ms = kFirstBackoffMs;
          misses = 0;
          WakeAll(lane);
          struct Done {
            std::atomic<int>& n;
            ~Done() { --n; }
          } done{g.in_flight};
          auto run = RunAdmitted(g, std::move(step.ticket));
          InvokeResult answer = co_await std::move(run);
          (void)answer;  // recorded in the ledger; GET /v1/executions/{id} shows it
          continue;
        }
        case StepKind::kWorked:
          backoff_ms = kFirstBackoffMs;
          misses = 0;
          WakeAll(lane);
          continue;
        case StepKind::kNothing:
          if (++misses < step.tenants) continue;  // the rest of the round may have work
          [[fallthrough]];
        case StepKind::kIdle: {
          misses = 0;
          auto sleep = Sleep(lane, timer, backoff_ms);
          co_await std::move(sleep);
          backoff_ms = std::min(backoff_ms * 2, cap_ms);
          continue;
        }
        case StepKind::kWait: {
          auto sleep = Sleep(lane, timer, std::clamp<int64_t>(step.wait_ms, 1, cap_ms));
          co_await std::move(sleep);
          continue;
        }
      }
    }
  }

  // toolgate_queue_depth and _oldest_age_seconds, fleet-wide (read from the store).
  asio::awaitable<void> PublishStats() {
    asio::steady_timer timer(io);
    while (!g.draining) {
      co_await RunBlocking(g.pool, [this] {
        for (const auto& lane : lanes) {
          absl::StatusOr<QueueStats> s = g.engine.queue().Stats(lane->connector.id, /*repair_counts=*/true);
          if (!s.ok()) continue;
          const double age_s = s->oldest_enqueued_ms == 0
                                   ? 0.0
                                   : std::max<double>(0, (g.clock.now_epoch_ms() - s->oldest_enqueued_ms) / 1000.0);
          g.engine.metrics().Queue(lane->connector.id, static_cast<double>(s->depth), age_s);
        }
        return 0;
      });
      timer.expires_after(std::chrono::milliseconds(std::max(1000, g.config.queue.poll_interval_ms)));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  GatewayContext& g;
  asio::io_context& io;
  std::vector<std::unique_ptr<Lane>> lanes;
};

QueueDispatcher::QueueDispatcher(GatewayContext& context, asio::io_context& io)
    : impl_(std::make_unique<Impl>(context, io)) {}
QueueDispatcher::~QueueDispatcher() = default;

void QueueDispatcher::Start() {
  for (const auto& lane : impl_->lanes) {
    for (int w = 0; w < lane->connector.queue_workers; ++w) {
      asio::co_spawn(lane->strand, impl_->Worker(*lane), asio::detached);
    }
  }
  asio::co_spawn(impl_->io, impl_->PublishStats(), asio::detached);
}

}  // namespace toolgate::api
