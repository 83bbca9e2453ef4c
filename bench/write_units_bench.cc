// DynamoDB write units per successful call (design §16, issue 16), measured (not a test): one
// `toolgate serve` on a DynamoDB-API table (dynalite) in front of a fast fake downstream. For each
// input size (256 B and 1 KB of `input` JSON, no idempotency_key) and each concurrency (1 = one call
// at a time, and each of `--concurrency`), N synchronous calls; the admin /metrics counters
// toolgate_store_write_units_total and toolgate_store_writes_total (by kind of item written) are read
// before and after, and their difference divided by the calls answered 200.
//
//   toolgate_write_units_bench --toolgate build/toolgate --dir /tmp/x --dynamodb http://127.0.0.1:8000
//                              [--calls 300] [--concurrency 16,64] [--shards 1]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "fake_downstream.h"
#include "nlohmann/json.hpp"
#include "process_support.h"
#include "toolgate/auth/jwt_verifier.h"

namespace {

using json = nlohmann::json;
using toolgate::testing::ChildProcess;
using toolgate::testing::FakeDownstream;

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

struct Counts {
  std::map<std::string, double> units, writes;  // by item kind
};

// The dynamodb rows of toolgate_store_write_units_total / toolgate_store_writes_total.
Counts Scrape(int admin_port) {
  Counts c;
  const auto r = Call(admin_port, "GET", "/metrics", "", "");
  std::istringstream in(r.body);
  std::string line;
  for (; std::getline(in, line);) {
    const bool units = line.rfind("toolgate_store_write_units_total{", 0) == 0;
    const bool writes = line.rfind("toolgate_store_writes_total{", 0) == 0;
    if (!units && !writes) continue;
    const size_t at = line.find("item=\"");
    const size_t end = at == std::string::npos ? at : line.find('"', at + 6);
    if (end == std::string::npos) continue;
    const std::string item = line.substr(at + 6, end - at - 6);
    const double value = std::atof(line.c_str() + line.rfind(' ') + 1);
    (units ? c.units : c.writes)[item] += value;
  }
  return c;
}

// A JSON object of exactly `bytes` bytes when serialized.
json InputOf(size_t bytes, int i) {
  json input{{"i", i}, {"pad", ""}};
  const size_t base = input.dump().size();
  input["pad"] = std::string(bytes > base ? bytes - base : 0, 'x');
  return input;
}

}  // namespace

int main(int argc, char** argv) {
  std::string binary, dir, dynamodb, table = "write_units_bench";
  int calls = 300;
  int shards = 1;  // the connector's concurrency_shards: each shard's item holds its share of the leases
  std::vector<int> concurrencies = {1};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string item;
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--toolgate")
      binary = next();
    else if (a == "--dir")
      dir = next();
    else if (a == "--dynamodb")
      dynamodb = next();
    else if (a == "--table")
      table = next();
    else if (a == "--calls")
      calls = std::stoi(next());
    else if (a == "--shards")
      shards = std::stoi(next());
    else if (a == "--concurrency")
      for (std::stringstream list(next()); std::getline(list, item, ',');) concurrencies.push_back(std::stoi(item));
  }
  if (binary.empty() || dir.empty() || dynamodb.empty()) {
    std::fprintf(stderr,
                 "usage: %s --toolgate BINARY --dir DIR --dynamodb URL [--table T] [--calls N] [--concurrency N,N] "
                 "[--shards K]\n",
                 argv[0]);
    return 2;
  }
  FakeDownstream crm;
  crm.set_connections(FakeDownstream::Connections::kKeepAlive);
  crm.set_behavior([](const FakeDownstream::Request&) { return FakeDownstream::Reply{200, R"({"ok":true})"}; });
  setenv("AWS_ACCESS_KEY_ID", "AKIDTOOLGATEBENCH", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "toolgate-bench-secret-for-toolgate-benchmarks-0123", 1);
  const std::string config_path = dir + "/write_units_bench.toml";
  {
    std::ofstream f(config_path);
    // max_in_flight above the concurrency: no call waits for or is refused a slot.
    f << "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
      << "[store]\nbackend = \"dynamodb\"\ntable = \"" << table << "\"\nendpoint = \"" << dynamodb << "\"\n"
      << "[connectors.crm]\nbase_url = \"" << crm.base_url()
      << "\"\ntimeout_ms = 10000\nmax_in_flight = " << *std::max_element(concurrencies.begin(), concurrencies.end()) * 4
      << "\nconcurrency_shards = " << shards << "\n";
  }
  {
    ChildProcess init({binary, "store", "init", "--config", config_path}, dir + "/init.err");
    while (init.ReadLine(std::chrono::seconds(60))) {
    }
    init.Wait();
  }
  setenv("TOOLGATE_JWT_SECRET", "write-units-bench-secret-for-toolgate-benchmarks-0123-0123456", 1);
  const std::string token = toolgate::auth::SignHs256(
      json{{"sub", "bench"}, {"custom:tenant_id", "tenant-bench"}, {"exp", std::time(nullptr) + 86400}}.dump(),
      "write-units-bench-secret-for-toolgate-benchmarks-0123-0123456");
  ChildProcess gw({binary, "serve", "--config", config_path}, dir + "/gw.err");
  int public_port = 0, admin_port = 0;
  for (int i = 0; i < 2; ++i) {
    auto line = gw.ReadLine(std::chrono::seconds(20));
    if (!line) {
      std::fprintf(stderr, "the gateway did not start (see %s/gw.err)\n", dir.c_str());
      return 1;
    }
    const int port = std::atoi(line->c_str() + line->rfind(':') + 1);
    if (line->find("public API") != std::string::npos) public_port = port;
    if (line->find("admin") != std::string::npos) admin_port = port;
  }
  std::thread drain([&gw] {
    while (gw.ReadLine(std::chrono::seconds(3600))) {
    }
  });
  // One call first, so the connector's items exist before anything is counted.
  Call(public_port, "POST", "/v1/tools/crm.update/invoke", json{{"input", InputOf(256, -1)}}.dump(), token);

  std::printf("DynamoDB write units per successful call (dynalite's ConsumedCapacity), %d calls per row\n", calls);
  std::printf("%-8s %-5s %6s %9s %8s | %s\n", "input", "conc", "ok", "units/call", "writes", "by item: units (writes)");
  int seq = 0;
  for (const size_t bytes : {size_t{256}, size_t{1024}}) {
    for (const int conc : concurrencies) {
      const Counts before = Scrape(admin_port);
      std::atomic<int> next{0}, ok{0}, failed{0};
      std::vector<std::thread> clients;
      for (int c = 0; c < conc; ++c) {
        clients.emplace_back([&, base = seq] {
          for (int i = next++; i < calls; i = next++) {
            const auto r = Call(public_port, "POST", "/v1/tools/crm.update/invoke",
                                json{{"input", InputOf(bytes, base + i)}}.dump(), token);
            if (r.status == 200) {
              ++ok;
            } else if (failed++ == 0) {
              std::fprintf(stderr, "a call answered %d: %s%s\n", r.status, r.body.substr(0, 300).c_str(),
                           r.error.c_str());
            }
          }
        });
      }
      for (auto& t : clients) t.join();
      seq += calls;
      const Counts after = Scrape(admin_port);
      double units = 0, writes = 0;
      std::string detail;
      for (const auto& [item, total] : after.units) {
        const double u = total - (before.units.count(item) ? before.units.at(item) : 0);
        const double w = after.writes.count(item)
                             ? after.writes.at(item) - (before.writes.count(item) ? before.writes.at(item) : 0)
                             : 0;
        if (u == 0 && w == 0) continue;
        units += u;
        writes += w;
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s %.2f (%.2f)  ", item.c_str(), u / std::max(1, ok.load()),
                      w / std::max(1, ok.load()));
        detail += buf;
      }
      std::printf("%-8s %-5d %6d %9.2f %8.2f | %s\n", (std::to_string(bytes) + " B").c_str(), conc, ok.load(),
                  units / std::max(1, ok.load()), writes / std::max(1, ok.load()), detail.c_str());
      std::fflush(stdout);
    }
  }
  gw.Kill(SIGTERM);
  gw.Wait();
  drain.join();
  return 0;
}
