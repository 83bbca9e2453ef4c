// Queued calls (design §15), measured (not a test): `toolgate serve` processes on one store — SQLite,
// or a DynamoDB-API table — and a fast fake downstream.
//
//   enqueue rate   8 clients POST `mode: queued` calls while the connector's breaker is held open
//                  (nothing dispatches), calls/s
//   dispatch rate  the breaker closed: calls/s until the downstream has seen every one
//   latency        at low load, one call at a time: enqueue → the downstream, enqueue → final
//                  (polled every 2 ms), p50/p95
//   writes         with --units: the store writes of one queued call from enqueue to completion
//                  (in process, over a counting store) and their DynamoDB write units
//
//   toolgate_queue_bench --toolgate build/toolgate --dir /tmp/x --gateways 3 --calls 2000
//                        [--dynamodb http://127.0.0.1:8000 --table t] | --units

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "fake_downstream.h"
#include "nlohmann/json.hpp"
#include "process_support.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/engine/engine.h"
#include "toolgate/store/forwarding_item_store.h"
#include "toolgate/store/item_json.h"
#include "toolgate/store/memory_item_store.h"

namespace {

using json = nlohmann::json;
using toolgate::testing::ChildProcess;
using toolgate::testing::FakeDownstream;
using Steady = std::chrono::steady_clock;

double MsSince(Steady::time_point t) { return std::chrono::duration<double, std::milli>(Steady::now() - t).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// ---- write units (in process) ----

// Counts each write request (a batch's one by one) and its DynamoDB write units: ceil(size / 1 KB)
// of the larger of the item before and after (sizes as the item's JSON, slightly over DynamoDB's).
class CountingStore : public toolgate::store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  int writes = 0;
  int units = 0;
  void Count(const toolgate::store::ItemKey& key, size_t before) {
    size_t after = 0;
    if (auto item = Get(key); item.ok() && item->has_value()) after = toolgate::store::ItemToJsonText(**item).size();
    const size_t size = std::max(before, after) + key.pk.size() + key.sk.size();
    ++writes;
    units += static_cast<int>((size + 1023) / 1024);
  }
  size_t SizeOf(const toolgate::store::ItemKey& key) {
    auto item = Get(key);
    return item.ok() && item->has_value() ? toolgate::store::ItemToJsonText(**item).size() : 0;
  }
  absl::StatusOr<toolgate::store::WriteResult> Put(const toolgate::store::ItemKey& k, const toolgate::store::Item& i,
                                                   const toolgate::store::Condition& c) override {
    const size_t before = SizeOf(k);
    auto r = ForwardingItemStore::Put(k, i, c);
    Count(k, before);
    return r;
  }
  absl::StatusOr<toolgate::store::WriteResult> Update(const toolgate::store::ItemKey& k,
                                                      const std::vector<toolgate::store::UpdateOp>& ops,
                                                      const toolgate::store::Condition& c,
                                                      toolgate::store::ReturnValues r) override {
    const size_t before = SizeOf(k);
    auto res = ForwardingItemStore::Update(k, ops, c, r);
    Count(k, before);
    return res;
  }
  absl::StatusOr<toolgate::store::WriteResult> Erase(const toolgate::store::ItemKey& k,
                                                     const toolgate::store::Condition& c) override {
    const size_t before = SizeOf(k);
    auto r = ForwardingItemStore::Erase(k, c);
    Count(k, before);
    return r;
  }
  std::vector<absl::StatusOr<toolgate::store::WriteResult>> WriteBatch(
      const std::vector<toolgate::store::WriteRequest>& requests) override {
    std::vector<size_t> before;
    for (const auto& w : requests) before.push_back(SizeOf(w.key));
    auto r = ForwardingItemStore::WriteBatch(requests);
    for (size_t i = 0; i < requests.size(); ++i) Count(requests[i].key, before[i]);
    return r;
  }
};

int Units() {
  using namespace toolgate;
  auto config = ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 4\n", "bench");
  if (!config.ok()) return 1;
  SystemClock clock;
  store::MemoryItemStore memory(clock);
  CountingStore counting(memory);
  auto engine = Engine::Over(counting, *config, clock, EngineOptions{"bench", nullptr, {}});
  (void)engine->slots().EnsureConnector("crm", engine->config().connectors.at("crm").concurrency);
  std::printf("%-44s %7s %7s\n", "one queued call, enqueue to completion", "writes", "units");
  for (const bool callback : {false, true}) {
    for (const size_t input_bytes : {size_t{200}, size_t{1000}}) {
      InvokeRequest req;
      req.principal = {"bench", "tenant-a", "", {}};
      req.tool_name = "crm.update";
      req.input_json = json{{"pad", std::string(input_bytes - 10, 'x')}}.dump();
      QueueOrder order;
      if (callback) order.callback_url = "http://127.0.0.1:1/hook";
      counting.writes = counting.units = 0;
      const auto queued = engine->invoker().Enqueue(req, order);
      const int enqueue_writes = counting.writes, enqueue_units = counting.units;
      auto next = engine->queue().NextReady("crm", "tenant-a", 1);
      auto claim = engine->queue().Claim(**next, "bench", 30'000, 1);
      auto lease = engine->slots().TryAcquire("crm", engine->config().connectors.at("crm").concurrency);
      auto admitted = engine->invoker().AdmitClaimed(**claim, **lease, "bench");
      DownstreamResult ok;
      ok.status = 200;
      ok.body = R"({"ok":true})";
      auto done = engine->invoker().Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)), ok);
      if (callback) {
        auto due = engine->callbacks().Due(1);
        auto cb = engine->callbacks().Claim((*due)[0], "bench", 30'000);
        (void)engine->queued_calls().EndCallback(**cb, "CALLBACK_DELIVERED", {{"attempts", 1}});
      }
      std::printf("%-44s %7d %7d   (enqueue %d writes, %d units; answer %s)\n",
                  (std::to_string(input_bytes) + " B input" + (callback ? ", callback delivered" : "")).c_str(),
                  counting.writes, counting.units, enqueue_writes, enqueue_units,
                  std::string(ToString(done.outcome)).c_str());
      (void)queued;
    }
  }
  return 0;
}

// ---- through the gateways ----

struct Gateway {
  std::unique_ptr<ChildProcess> proc;
  int public_port = 0, admin_port = 0;
  std::thread drain;
};

toolgate::net::ClientResult Call(int port, const std::string& method, const std::string& target,
                                 const std::string& body, const std::string& token) {
  toolgate::net::ClientRequest r;
  r.address = {"127.0.0.1", port};
  r.method = method;
  r.target = target;
  r.body = body;
  r.headers = {{"Content-Type", "application/json"}};
  if (!token.empty()) r.headers.push_back({"Authorization", "Bearer " + token});
  r.timeout = std::chrono::seconds(30);
  return toolgate::net::HttpCall(std::move(r));
}

}  // namespace

int main(int argc, char** argv) {
  std::string binary, dir, dynamodb, table = "queue_bench";
  int gateways = 1, calls = 2000, clients = 8, latency_calls = 50;
  bool units = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--toolgate")
      binary = next();
    else if (a == "--dir")
      dir = next();
    else if (a == "--gateways")
      gateways = std::stoi(next());
    else if (a == "--calls")
      calls = std::stoi(next());
    else if (a == "--clients")
      clients = std::stoi(next());
    else if (a == "--dynamodb")
      dynamodb = next();
    else if (a == "--table")
      table = next();
    else if (a == "--units")
      units = true;
  }
  if (units) return Units();
  if (binary.empty() || dir.empty()) {
    std::fprintf(
        stderr,
        "usage: %s --toolgate BINARY --dir DIR [--gateways N] [--calls N] [--dynamodb URL --table T] | --units\n",
        argv[0]);
    return 2;
  }
  FakeDownstream crm;
  crm.set_connections(FakeDownstream::Connections::kKeepAlive);
  crm.set_behavior([](const FakeDownstream::Request&) { return FakeDownstream::Reply{200, R"({"ok":true})"}; });
  std::string store = "[store]\npath = \"" + dir + "/store.db\"\n";
  if (!dynamodb.empty()) {
    setenv("AWS_ACCESS_KEY_ID", "AKIDTOOLGATEBENCH", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "toolgate-bench-secret-for-toolgate-benchmarks-0123", 1);
    store = "[store]\nbackend = \"dynamodb\"\ntable = \"" + table + "\"\nendpoint = \"" + dynamodb + "\"\n";
  }
  const std::string config_path = dir + "/queue_bench.toml";
  {
    std::ofstream f(config_path);
    f << "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
      << store << "[queue]\npoll_interval_ms = 100\nmax_per_tenant = 1000000\n[connectors.crm]\nbase_url = \""
      << crm.base_url() << "\"\ntimeout_ms = 5000\nmax_in_flight = 32\n";
  }
  if (!dynamodb.empty()) {
    ChildProcess init({binary, "store", "init", "--config", config_path}, dir + "/init.err");
    while (init.ReadLine(std::chrono::seconds(60))) {
    }
    init.Wait();
  }
  setenv("TOOLGATE_JWT_SECRET", "queue-bench-secret-for-toolgate-benchmarks-0123-0123456789ab", 1);
  const std::string token = toolgate::auth::SignHs256(
      json{{"sub", "bench"}, {"custom:tenant_id", "tenant-bench"}, {"exp", std::time(nullptr) + 86400}}.dump(),
      "queue-bench-secret-for-toolgate-benchmarks-0123-0123456789ab");
  std::vector<Gateway> gws(static_cast<size_t>(gateways));
  for (int g = 0; g < gateways; ++g) {
    Gateway& gw = gws[static_cast<size_t>(g)];
    gw.proc = std::make_unique<ChildProcess>(std::vector<std::string>{binary, "serve", "--config", config_path},
                                             dir + "/gw" + std::to_string(g) + ".err");
    for (int i = 0; i < 2; ++i) {
      auto line = gw.proc->ReadLine(std::chrono::seconds(20));
      if (!line) {
        std::fprintf(stderr, "gateway %d did not start (see %s/gw%d.err)\n", g, dir.c_str(), g);
        return 1;
      }
      const int port = std::atoi(line->c_str() + line->rfind(':') + 1);
      if (line->find("public API") != std::string::npos) gw.public_port = port;
      if (line->find("admin") != std::string::npos) gw.admin_port = port;
    }
    gw.drain = std::thread([p = gw.proc.get()] {
      while (p->ReadLine(std::chrono::seconds(3600))) {
      }
    });
  }
  const std::string audit = R"({"reason":"bench","requested_by":"queue bench","force":true})";
  Call(gws[0].admin_port, "POST", "/admin/connectors/crm/breaker/open", audit, "");

  // Enqueue.
  std::atomic<int> next{0}, refused{0};
  const auto t_enqueue = Steady::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = next++; i < calls; i = next++) {
        const Gateway& gw = gws[static_cast<size_t>(i + c) % gws.size()];
        auto r = Call(gw.public_port, "POST", "/v1/tools/crm.update/invoke",
                      json{{"input", {{"i", i}}}, {"mode", "queued"}}.dump(), token);
        if (r.status != 202) ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double enqueue_ms = MsSince(t_enqueue);

  // Dispatch.
  const auto t_dispatch = Steady::now();
  Call(gws[0].admin_port, "POST", "/admin/connectors/crm/breaker/close", audit, "");
  while (crm.total() < calls - refused && MsSince(t_dispatch) < 600'000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double dispatch_ms = MsSince(t_dispatch);

  // Latency at low load.
  std::vector<double> to_downstream, to_final;
  for (int i = 0; i < latency_calls; ++i) {
    const Gateway& gw = gws[static_cast<size_t>(i) % gws.size()];
    const int seen = crm.total();
    const auto t0 = Steady::now();
    auto r = Call(gw.public_port, "POST", "/v1/tools/crm.update/invoke",
                  json{{"input", {{"latency", i}}}, {"mode", "queued"}}.dump(), token);
    const std::string id = json::parse(r.body, nullptr, false).value("execution_id", "");
    bool reached = false;
    while (MsSince(t0) < 10'000) {
      if (!reached && crm.total() > seen) {
        reached = true;
        to_downstream.push_back(MsSince(t0));
      }
      auto e = Call(gw.public_port, "GET", "/v1/executions/" + id, "", token);
      const std::string outcome = json::parse(e.body, nullptr, false).value("outcome", "");
      if (outcome == "SUCCEEDED" || outcome == "FAILED") {
        if (!reached) to_downstream.push_back(MsSince(t0));
        to_final.push_back(MsSince(t0));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  std::printf("queue bench: %d gateway(s), store %s, %d calls, %d clients\n", gateways,
              dynamodb.empty() ? "sqlite" : "dynamodb (dynalite)", calls, clients);
  std::printf("  enqueue:  %8.0f calls/s (%d refused)\n", (calls - refused) * 1000.0 / enqueue_ms, refused.load());
  std::printf("  dispatch: %8.0f calls/s (until the downstream saw all %d)\n", (calls - refused) * 1000.0 / dispatch_ms,
              calls - refused.load());
  std::printf(
      "  latency at low load (%d calls): enqueue->downstream p50 %.1f ms p95 %.1f ms; enqueue->final p50 %.1f ms p95 "
      "%.1f ms\n",
      latency_calls, Percentile(to_downstream, 0.5), Percentile(to_downstream, 0.95), Percentile(to_final, 0.5),
      Percentile(to_final, 0.95));
  for (auto& gw : gws) {
    gw.proc->Kill(SIGTERM);
    gw.proc->Wait();
    if (gw.drain.joinable()) gw.drain.join();
  }
  return 0;
}
