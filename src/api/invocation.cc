#include "api/invocation.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <atomic>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/ascii.h"
#include "api/api_support.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

namespace {

InvokeResult ShuttingDown() {
  return InvokeResult::Refused(InvokeError::kShuttingDown, "toolgate is shutting down; retry on another instance");
}

// One call or enqueue counted in flight for as long as it lives. Counted before `draining` is read
// (both sequentially consistent): a drain on another event loop either sees it in flight and waits
// for it, or it sees the drain and is refused.
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& n_;
};

// How a call reaches the store from the event loop (DESIGN §16): through the store's asynchronous
// port when it has one (SQLite: batches join its group commit, reads run here; DynamoDB: batches on
// its network loop, reads that are round trips on the pool), the rest of the blocking store work on
// the pool. Without a port (memory) the engine runs the whole admission and completion on the pool,
// as blocking calls (StoreDrive).
StoreDrive LoopDrive(GatewayContext& g) { return {g.engine.async_port(), &g.pool}; }

}  // namespace

asio::awaitable<InvokeResult> RunInvocation(GatewayContext& g, InvokeRequest ir) {
  const InFlight counted(g.in_flight);
  if (g.draining) co_return ShuttingDown();
  auto admit = g.engine.invoker().AdmitAsync(std::move(ir), LoopDrive(g));
  ToolInvoker::Admitted admitted = co_await std::move(admit);
  if (auto* answer = std::get_if<InvokeResult>(&admitted)) co_return std::move(*answer);
  auto run = RunAdmitted(g, std::move(std::get<std::unique_ptr<ToolInvoker::Ticket>>(admitted)));
  co_return co_await std::move(run);
}

asio::awaitable<InvokeResult> RunAdmitted(GatewayContext& g, std::unique_ptr<ToolInvoker::Ticket> ticket) {
  const DownstreamRequest& ds = ToolInvoker::Downstream(*ticket);
  const std::string connector_id = ds.connector->id;
  DownstreamResult result;
  const auto started = std::chrono::steady_clock::now();
  try {
    // S7: the slot's lease must outlive the call. It is reckoned when the acquire is prepared; a
    // write that then waited long for the store (another process holding SQLite's lock) commits it
    // with less life left than the call may take, and another instance could reclaim the slot
    // mid-call and exceed the limit. Then nothing is sent: deferred, as for a shortage of this host.
    if (ticket->lease && g.clock.now_epoch_ms() + ds.connector->timeout_ms >= ticket->lease->expires_at_ms) {
      spdlog::warn("execution {}: not sent to connector {}: its slot's lease has {} ms left, the call may take {} ms",
                   ticket->record.execution_id, connector_id, ticket->lease->expires_at_ms - g.clock.now_epoch_ms(),
                   ds.connector->timeout_ms);
      result.kind = DownstreamResult::Kind::kLocalResource;
      result.error = "the store took so long to record the call that its slot's lease would end before it could";
    } else {
      auto call_op = g.connectors.at(connector_id)->Call(ds);
      result = co_await std::move(call_op);
    }
  } catch (const std::exception& e) {
    // A connector that throws (a defect: an answer of a shape its code did not expect) must not
    // leave the call RUNNING with its slot taken: the call went out and its answer could not be
    // read, which is what the outcome then says (FAILED downstream_error, intent unknown).
    spdlog::error("execution {}: connector {} failed reading the answer: {}", ticket->record.execution_id, connector_id,
                  e.what());
    result = DownstreamResult{};
    result.kind = DownstreamResult::Kind::kResponseInvalid;
    result.error = "toolgate could not read the downstream's answer";
    result.latency_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  }
  if (result.kind != DownstreamResult::Kind::kLocalResource) {  // this host's trouble says nothing of the connector
    g.recent.Add(connector_id, g.clock.now_epoch_ms(), result.latency_ms, IsDownstreamFailure(result));
  }
  auto complete = g.engine.invoker().CompleteAsync(std::move(ticket), std::move(result), LoopDrive(g));
  InvokeResult answer = co_await std::move(complete);
  answer.reached_tool = true;  // TOOL_INVOKED was durable before the call
  co_return answer;
}

int InvokeErrorHttpStatus(InvokeError error) {
  switch (error) {
    case InvokeError::kInvalidInput:
      return 400;
    case InvokeError::kForbidden:
      return 403;
    case InvokeError::kUnknownTool:
    case InvokeError::kNotFound:
      return 404;
    case InvokeError::kNotReplayable:
    case InvokeError::kExecutionInProgress:
    case InvokeError::kReplayLimitReached:
      return 409;
    case InvokeError::kGone:
      return 410;
    case InvokeError::kIdempotencyKeyReused:
      return 422;
    case InvokeError::kQueueFull:
      return 429;
    case InvokeError::kNotImplemented:
      return 501;
    case InvokeError::kStoreUnavailable:
    case InvokeError::kShuttingDown:
      return 503;
  }
  return 500;
}

int InvocationHttpStatus(const InvokeResult& answer) {
  return answer.error ? InvokeErrorHttpStatus(*answer.error)
                      : ::toolgate::InvocationHttpStatus(answer.outcome, answer.reason);
}

namespace {

// The body around `details` (the answer's, copied or moved by the caller).
nlohmann::json BodyAround(nlohmann::json details, const InvokeResult& answer) {
  if (answer.error) return {{"error", *answer.error}, {"message", answer.message}};
  nlohmann::json body = details.is_object() ? std::move(details) : nlohmann::json::object();
  body["execution_id"] = answer.execution_id;
  body["outcome"] = answer.outcome;
  if (const std::string_view reason = ToString(answer.reason); !reason.empty()) body["reason"] = std::string(reason);
  return body;
}

// The response to `answer` around its body: the Retry-After it carries, and whether it is an
// execution's outcome rather than a refusal.
HttpResponse ResponseOf(const nlohmann::json& body, const InvokeResult& answer) {
  HttpResponse h = Json(InvocationHttpStatus(answer), body);
  if (answer.retry_after_s) h.headers.emplace_back("Retry-After", std::to_string(*answer.retry_after_s));
  h.execution_outcome = !answer.refused();
  return h;
}

}  // namespace

nlohmann::json InvocationBody(const InvokeResult& answer) {
  return BodyAround(answer.error ? nlohmann::json() : answer.details, answer);
}

HttpResponse ToHttp(const InvokeResult& answer) { return ResponseOf(InvocationBody(answer), answer); }

HttpResponse ToHttp(InvokeResult&& answer) {
  nlohmann::json details = answer.error ? nlohmann::json() : std::move(answer.details);
  return ResponseOf(BodyAround(std::move(details), answer), answer);
}

asio::awaitable<InvokeResult> RunEnqueue(GatewayContext& g, InvokeRequest ir, QueueOrder order) {
  const InFlight counted(g.in_flight);  // a drain waits for an enqueue it did not refuse, as for a call
  if (g.draining) co_return ShuttingDown();
  auto enqueue = g.engine.invoker().EnqueueAsync(std::move(ir), std::move(order), LoopDrive(g));
  co_return co_await std::move(enqueue);
}

absl::StatusOr<QueueRequest> ReadQueueRequest(const nlohmann::json& body, bool prefer_async,
                                              const QueueConfig& config) {
  QueueRequest q;
  q.queued = prefer_async;
  if (body.contains("mode")) {
    const nlohmann::json& m = body["mode"];
    if (!m.is_string() || (m != "sync" && m != "queued")) {
      return absl::InvalidArgumentError("mode must be \"sync\" or \"queued\"");
    }
    q.queued = m == "queued";
  }
  q.order.deadline_s = config.default_deadline_s;
  q.order.max_per_tenant = config.max_per_tenant;
  if (body.contains("deadline_s")) {
    const nlohmann::json& d = body["deadline_s"];
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > config.max_deadline_s) {
      return absl::InvalidArgumentError(
          absl::StrCat("deadline_s must be a whole number of seconds in 1..", config.max_deadline_s));
    }
    q.order.deadline_s = d.get<int64_t>();
  }
  if (body.contains("on_defer")) {
    const nlohmann::json& o = body["on_defer"];
    if (!o.is_string() || (o != "defer" && o != "queue")) {
      return absl::InvalidArgumentError("on_defer must be \"defer\" or \"queue\"");
    }
    if (o == "queue") q.on_defer = q.order;
  }
  if (body.contains("callback_url")) {
    const nlohmann::json& u = body["callback_url"];
    if (!u.is_string()) return absl::InvalidArgumentError("callback_url must be a string");
    if (absl::Status st = CheckCallbackUrl(u.get<std::string>(), config); !st.ok()) return st;
    if (!q.queued && !q.on_defer) {
      return absl::InvalidArgumentError("callback_url needs \"mode\": \"queued\" or \"on_defer\": \"queue\"");
    }
    q.order.callback_url = u.get<std::string>();
    if (q.on_defer) q.on_defer->callback_url = q.order.callback_url;
  }
  return q;
}

absl::Status CheckCallbackUrl(const std::string& url, const QueueConfig& config) {
  if (url.size() > 2048) return absl::InvalidArgumentError("callback_url is longer than 2048 characters");
  HostPort address;
  std::string path, why;
  bool tls = false;
  if (!ParseHttpUrl(url, address, path, tls, why)) return absl::InvalidArgumentError("callback_url " + why);
  // The allowlist is a prefix of the URL's text: a path a receiver would normalize out from under
  // it (a `.` or `..` segment, spelled out or percent-encoded; a backslash or an encoded separator)
  // is refused rather than trusted to stay under the prefix.
  std::string lowered = absl::AsciiStrToLower(path);
  if (lowered.find('\\') != std::string::npos || lowered.find("%2f") != std::string::npos ||
      lowered.find("%5c") != std::string::npos) {
    return absl::InvalidArgumentError("callback_url's path holds a backslash or an encoded separator");
  }
  lowered = absl::StrReplaceAll(lowered, {{"%2e", "."}});
  for (absl::string_view segment : absl::StrSplit(lowered.substr(0, lowered.find_first_of("?#")), '/')) {
    if (segment == "." || segment == "..") {
      return absl::InvalidArgumentError("callback_url's path holds a '.' or '..' segment");
    }
  }
  for (const std::string& prefix : config.callback_allowlist) {
    if (url.rfind(prefix, 0) != 0) continue;
    // The prefix must end at a boundary: "https://hooks.example.com" does not allow
    // "https://hooks.example.com.evil.net/".
    if (url.size() == prefix.size() || prefix.back() == '/' || url[prefix.size()] == '/') return absl::OkStatus();
  }
  if (config.callback_allowlist.empty()) {
    return absl::InvalidArgumentError("callback_url is not allowed: this gateway has no [queue] callback_allowlist");
  }
  return absl::InvalidArgumentError("callback_url is not under a prefix of [queue] callback_allowlist");
}

bool PrefersAsync(std::string_view prefer) {
  std::string lower(prefer);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("respond-async") != std::string::npos;
}

bool IsValidIdempotencyKey(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace toolgate::api
