// toolgate_soak: a bounded soak run (bench/soak.sh). Starts several `toolgate serve` processes on
// one SQLite store, drives mixed traffic at them from client threads against two fake downstreams
// that inject failures (random 5xx, slow answers, and whole outage windows that open the breaker),
// and checks invariants from outside while it runs:
//   - no downstream ever sees more calls at once than its connector's limit;
//   - exactly one probe per half-open episode: every call crm receives names its execution
//     (X-Toolgate-Execution-Id); for each breaker episode in the audit ledger (CIRCUIT_OPENED with
//     generation g_open … CIRCUIT_CLOSED with g_close), every call that arrived in it is looked up
//     in its execution's ledger (TOOL_INVOKED: probe, breaker_generation): one admitted under a
//     generation in [g_open, g_close) must be a probe, one probe per half-open generation; one
//     admitted before the opening may arrive only within 1 s of it (another instance's 250 ms
//     CLOSED cache); one admitted after the closing is fine. Checked every 5 s while executions are
//     kept (their retention is short here);
//   - memory (RSS) and file descriptors of every gateway stay flat after warm-up;
//   - the store file is bounded by the ledger retention: with [ledger] retention_s = R (--retention,
//     default 60 s) and a sweep every 10 s, it stops growing once the first executions expire — its
//     size in the second half of the run stays within 25 % (+8 MB) of its size in the first half
//     after R + 25 s;
//   - `toolgate ledger verify` passes at the end.
// Prints a summary; exits 1 if any invariant was violated.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <dirent.h>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
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
using Reply = FakeDownstream::Reply;
using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "2026-11-28T05:45:02.998Z" -> epoch ms.
int64_t ParseRfc3339(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                  &tm.tm_sec, &ms) != 7) {
    return 0;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

int64_t ProcKb(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + std::strlen(field));
  }
  return -1;
}

int FdCount(pid_t pid) {
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 2;
}

int64_t FileSize(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

struct Gateway {
  std::unique_ptr<ChildProcess> proc;
  int public_port = 0, admin_port = 0;
  std::thread drain;  // reads its stdout so a full pipe never blocks it
};

toolgate::api::ClientResult Call(int port, const std::string& method, const std::string& target,
                                 const std::string& body, const std::string& token) {
  toolgate::api::ClientRequest r;
  r.address = {"127.0.0.1", port};
  r.method = method;
  r.target = target;
  r.body = body;
  r.timeout = std::chrono::seconds(10);
  if (!body.empty()) r.headers.emplace_back("Content-Type", "application/json");
  if (!token.empty()) r.headers.emplace_back("Authorization", "Bearer " + token);
  return toolgate::api::HttpCall(std::move(r));
}

}  // namespace

int main(int argc, char** argv) {
  std::string binary, dir = "/tmp";
  int seconds = 120, gateways = 3, clients = 32, retention_s = 60, slow_readers = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--toolgate")
      binary = v;
    else if (k == "--seconds")
      seconds = std::stoi(v);
    else if (k == "--retention")
      retention_s = std::stoi(v);
    else if (k == "--gateways")
      gateways = std::stoi(v);
    else if (k == "--clients")
      clients = std::stoi(v);
    else if (k == "--dir")
      dir = v;
    else if (k == "--slow-readers")
      slow_readers = std::stoi(v);
  }
  if (binary.empty()) {
    std::fprintf(stderr,
                 "usage: toolgate_soak --toolgate BIN [--seconds 120] [--gateways 3] [--clients 32] [--retention 60] "
                 "[--slow-readers 24] [--dir D]\n");
    return 2;
  }
  constexpr int kCrmLimit = 8, kEmailLimit = 4, kCooldownS = 2, kOutageEveryS = 30, kOutageS = 5, kSweepS = 10;

  // Downstreams with injected faults.
  FakeDownstream crm, email;
  crm.set_record(false);
  email.set_record(false);
  crm.set_connections(FakeDownstream::Connections::kKeepAlive);
  email.set_connections(FakeDownstream::Connections::kKeepAlive);
  std::atomic<bool> outage{false};
  std::atomic<int64_t> injected_5xx{0}, injected_slow{0};
  std::mutex arrivals_mu;
  std::vector<std::pair<int64_t, std::string>> crm_arrivals;  // (epoch ms, execution id) of every call crm received
  crm.set_behavior([&](const FakeDownstream::Request& req) {
    {
      const auto id = req.headers.find("x-toolgate-execution-id");
      std::lock_guard lock(arrivals_mu);
      crm_arrivals.push_back({NowMs(), id == req.headers.end() ? "" : id->second});
    }
    thread_local std::minstd_rand rng{std::random_device{}()};
    if (outage.load()) return Reply{503, R"({"error":"outage"})"};
    const unsigned roll = rng() % 100;
    if (roll < 3) {
      ++injected_5xx;
      return Reply{503, R"({"error":"flaky"})"};
    }
    if (roll < 4) {
      ++injected_slow;
      return Reply{200, R"({"ok":true})", {}, 300};
    }
    return Reply{200, R"({"ok":true})", {}, 2};
  });
  // `email.archive` answers ~1 MB: the execution the slow readers ask for and never read.
  const std::string archive_reply = "{\"blob\":\"" + std::string(1 << 20, 'a') + "\"}";
  email.set_behavior([&](const FakeDownstream::Request& req) {
    if (req.path == "/email.archive") return Reply{200, archive_reply};
    thread_local std::minstd_rand rng{std::random_device{}()};
    if (rng() % 100 < 2) {
      ++injected_5xx;
      return Reply{500, R"({"error":"flaky"})"};
    }
    return Reply{200, R"({"sent":true})", {}, 5};
  });

  const std::string db = dir + "/soak.db";
  const std::string config_path = dir + "/soak.toml";
  {
    std::ofstream f(config_path);
    f << "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"" << db
      << "\"\nsqlite_synchronous = \"normal\"\nsweep_interval_s = " << kSweepS
      << "\n[slo]\nevaluate_interval_ms = 2000\n"
      << "[ledger]\nretention_s = " << retention_s << "\ndeferred_retention_s = " << retention_s << "\n"
      << "[connectors.crm]\nbase_url = \"" << crm.base_url() << "\"\ntimeout_ms = 2000\nmax_in_flight = " << kCrmLimit
      << "\n[connectors.crm.breaker]\nfailure_threshold = 5\nfailure_rate_threshold = 0.5\nmin_calls = 20\nwindow_s = "
         "5\n"
      << "cooldown_s = " << kCooldownS << "\nprobe_timeout_s = 10\n"
      << "[connectors.email]\nbase_url = \"" << email.base_url()
      << "\"\ntimeout_ms = 2000\nmax_in_flight = " << kEmailLimit
      << "\n[connectors.email.breaker]\nfailure_threshold = 50\n"
      << "[tools.\"email.send\"]\naction_type = \"email.send\"\nconnector = \"email\"\n";
  }
  setenv("TOOLGATE_JWT_SECRET", "soak-secret-0123456789abcdef-0123456789abcdef", 1);
  const std::string token = toolgate::auth::SignHs256(
      json{{"sub", "soak"}, {"custom:tenant_id", "tenant-soak"}, {"exp", std::time(nullptr) + 86400}}.dump(),
      "soak-secret-0123456789abcdef-0123456789abcdef");

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
  const int64_t start_ms = NowMs();
  std::printf("soak: %d gateways, %d clients, %d s, store %s\n", gateways, clients, seconds, db.c_str());
  std::fflush(stdout);

  // Clients.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> requests{0}, succeeded{0}, failed{0}, deferred{0}, other{0}, transport_errors{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::minstd_rand rng(static_cast<unsigned>(c) * 7919u + 1u);
      for (int64_t i = 0; !stop.load(); ++i) {
        const Gateway& gw = gws[static_cast<size_t>(c + i) % gws.size()];
        const bool mail = rng() % 10 < 3;
        const auto r =
            Call(gw.public_port, "POST", mail ? "/v1/tools/email.send/invoke" : "/v1/tools/crm.update/invoke",
                 json{{"input", {{"c", c}, {"i", i}}}}.dump(), token);
        ++requests;
        if (!r.ok) {
          ++transport_errors;
          continue;
        }
        const json body = json::parse(r.body, nullptr, false);
        const std::string outcome = body.is_object() ? body.value("outcome", "") : "";
        if (outcome == "SUCCEEDED")
          ++succeeded;
        else if (outcome == "FAILED")
          ++failed;
        else if (outcome == "DEFERRED")
          ++deferred;
        else
          ++other;
      }
    });
  }

  // Slow readers: connections that ask for a ~1 MB execution and never read the answer, then hang
  // up after a few seconds (a new one takes their place). The gateways must bound what they hold
  // for them (write timeout, response budget): the RSS check below runs with them in the mix.
  std::atomic<int64_t> slow_connections{0}, slow_refused{0};
  std::mutex big_mu;
  std::string big_id;  // the latest large execution (retention expires the older ones)
  auto make_big = [&] {
    for (int attempt = 0; attempt < 20 && !stop.load(); ++attempt) {
      const auto r = Call(gws[0].public_port, "POST", "/v1/tools/email.archive/invoke",
                          json{{"input", json::object()}}.dump(), token);
      const json body = json::parse(r.body, nullptr, false);
      if (r.ok && body.is_object() && body.value("outcome", "") == "SUCCEEDED") {
        std::lock_guard lock(big_mu);
        big_id = body["execution_id"];
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  };
  if (slow_readers > 0) {
    make_big();
    threads.emplace_back([&] {  // a fresh large execution every 10 s, within any retention
      while (!stop.load()) {
        for (int i = 0; i < 100 && !stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        make_big();
      }
    });
  }
  for (int s = 0; s < slow_readers; ++s) {
    threads.emplace_back([&, s] {
      for (int64_t i = 0; !stop.load(); ++i) {
        std::string id;
        {
          std::lock_guard lock(big_mu);
          id = big_id;
        }
        const int port = gws[static_cast<size_t>(s + i) % gws.size()].public_port;
        const int fd = socket(AF_INET, SOCK_STREAM, 0);
        const int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
          const std::string req = "GET /v1/executions/" + id +
                                  " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token + "\r\n\r\n";
          if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) ++slow_connections;
          char head[16] = {0};
          if (recv(fd, head, sizeof head - 1, MSG_PEEK | MSG_DONTWAIT) > 0 &&
              std::string(head).find(" 503") != std::string::npos) {
            ++slow_refused;  // the gateway's budget said no: also fine
          }
        }
        for (int t = 0; t < 30 && !stop.load(); ++t) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        close(fd);
      }
    });
  }

  // Outage windows and the monitor (once a second).
  int violations = 0, outages = 0;

  // One probe per half-open episode (see the top of this file). Checks the episodes that closed
  // since the last call.
  int episodes = 0, probes = 0, late_from_before = 0, after_close = 0, after_close_early = 0, intruders = 0;
  int64_t checked_until = 0;  // `at` of the last CIRCUIT_CLOSED checked
  auto check_episodes = [&] {
    const auto audit =
        Call(gws[0].admin_port, "GET", "/admin/audit?limit=1000&since=" + std::to_string(start_ms), "", "");
    const json events = json::parse(audit.body, nullptr, false);
    if (!audit.ok || !events.is_object()) {
      std::printf("VIOLATION: the audit ledger cannot be read (%s)\n", audit.error.c_str());
      ++violations;
      return;
    }
    std::vector<json> crm_events;
    for (const auto& e : events["events"]) {
      if (e["data"].is_object() && e["data"].value("connector_id", "") == "crm" &&
          e["type"].get<std::string>().rfind("CIRCUIT_", 0) == 0) {
        crm_events.push_back(e);
      }
    }
    std::sort(crm_events.begin(), crm_events.end(), [](const json& a, const json& b) {
      return a["data"].value("generation", int64_t{0}) < b["data"].value("generation", int64_t{0});
    });
    std::vector<std::pair<int64_t, std::string>> arrivals;
    {
      std::lock_guard lock(arrivals_mu);
      arrivals = crm_arrivals;
    }
    std::sort(arrivals.begin(), arrivals.end());
    int64_t open_at = -1, open_gen = 0;
    for (const auto& e : crm_events) {
      const std::string type = e["type"];
      const int64_t at = ParseRfc3339(e["at"]);
      const int64_t gen = e["data"].value("generation", int64_t{0});
      if (type == "CIRCUIT_OPENED" && open_at < 0) {
        open_at = at;
        open_gen = gen;
        continue;
      }
      if (type != "CIRCUIT_CLOSED" || open_at < 0) continue;
      const int64_t close_at = at, close_gen = gen;
      if (close_at > NowMs() - 1500) break;  // its late arrivals may still come: next time
      const int64_t episode_open_at = open_at;
      open_at = -1;
      if (close_at <= checked_until) continue;  // checked before
      checked_until = close_at;
      ++episodes;
      // Every call that arrived from the opening until a second after the closing (a call admitted
      // while HALF_OPEN would have arrived by then), classified by how its gateway admitted it.
      std::map<int64_t, int> probes_per_gen;
      std::vector<std::string> problems;
      const auto from =
          std::lower_bound(arrivals.begin(), arrivals.end(), std::make_pair(episode_open_at, std::string()));
      const auto to =
          std::lower_bound(arrivals.begin(), arrivals.end(), std::make_pair(close_at + 1000, std::string()));
      for (auto it = from; it != to; ++it) {
        const auto& [arrived, id] = *it;
        const auto r = Call(gws[0].public_port, "GET", "/v1/executions/" + id, "", token);
        const json exec = json::parse(r.body, nullptr, false);
        json invoked;
        if (r.ok && r.status == 200 && exec.is_object()) {
          for (const auto& ev : exec["events"]) {
            if (ev["type"] == "TOOL_INVOKED") invoked = ev["data"];
          }
        }
        if (!invoked.is_object()) {
          problems.push_back("call " + id + " has no TOOL_INVOKED in its ledger (status " + std::to_string(r.status) +
                             ")");
          continue;
        }
        const int64_t g = invoked.value("breaker_generation", int64_t{-1});
        const bool probe = invoked.value("probe", false);
        const long long rel = static_cast<long long>(arrived - episode_open_at);
        if (g >= close_gen) {  // admitted after the breaker closed
          ++after_close;
          // The CIRCUIT_CLOSED event is stamped after the breaker item's write: a call admitted in
          // between arrives before the event's time.
          if (arrived < close_at) ++after_close_early;
          continue;
        }
        if (g < open_gen) {
          ++late_from_before;
          if (arrived > episode_open_at + 1000) {
            problems.push_back("call " + id + " admitted before the opening arrived " + std::to_string(rel) +
                               " ms after it");
          }
          continue;
        }
        if (!probe) {
          ++intruders;
          problems.push_back("call " + id + " admitted under generation " + std::to_string(g) +
                             " (open) without a probe, at +" + std::to_string(rel) + " ms");
        } else if (++probes_per_gen[g] > 1) {
          ++intruders;
          problems.push_back("a second probe for generation " + std::to_string(g) + " at +" + std::to_string(rel) +
                             " ms");
        }
      }
      probes += static_cast<int>(probes_per_gen.size());
      if (!problems.empty()) {
        std::printf("VIOLATION: breaker episode %d (generations %lld..%lld):\n", episodes,
                    static_cast<long long>(open_gen), static_cast<long long>(close_gen));
        for (const auto& p : problems) std::printf("  %s\n", p.c_str());
        ++violations;
      }
    }
  };
  std::vector<int64_t> rss_warm(gws.size()), rss_peak(gws.size()), rss_end(gws.size());
  std::vector<int> fds_warm(gws.size()), fds_end(gws.size());
  std::vector<std::pair<int, int64_t>> store_sizes;  // (second, bytes of the database and its WAL)
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  const auto warm_at = Clock::now() + std::chrono::seconds(std::min(15, seconds / 4));
  bool warm_taken = false;
  for (int tick = 1; Clock::now() < deadline; ++tick) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const bool in_outage = tick % kOutageEveryS >= kOutageEveryS - kOutageS;
    if (in_outage && !outage.load()) ++outages;
    outage = in_outage;
    if (crm.peak_concurrent() > kCrmLimit || email.peak_concurrent() > kEmailLimit) {
      std::printf("VIOLATION: peak concurrency crm %d/%d email %d/%d\n", crm.peak_concurrent(), kCrmLimit,
                  email.peak_concurrent(), kEmailLimit);
      ++violations;
      break;
    }
    for (size_t g = 0; g < gws.size(); ++g) {
      const pid_t pid = gws[g].proc->pid();
      const int64_t rss = ProcKb(pid, "VmRSS:");
      rss_peak[g] = std::max(rss_peak[g], rss);
      rss_end[g] = rss;
      fds_end[g] = FdCount(pid);
      if (!warm_taken && Clock::now() >= warm_at) {
        rss_warm[g] = rss;
        fds_warm[g] = fds_end[g];
      }
    }
    if (!warm_taken && Clock::now() >= warm_at) warm_taken = true;
    if (tick % 5 == 0) check_episodes();
    store_sizes.push_back({tick, FileSize(db) + FileSize(db + "-wal")});
  }
  outage = false;
  stop = true;
  for (auto& t : threads) t.join();
  const int64_t end_ms = NowMs();
  std::this_thread::sleep_for(std::chrono::seconds(kCooldownS + 1));  // let the breaker close again

  // The last episodes' probes, now that the breaker had time to close.
  check_episodes();

  // Flat memory and descriptors after warm-up (generous bounds: allocator noise, pooled connections).
  for (size_t g = 0; g < gws.size(); ++g) {
    if (rss_end[g] > rss_warm[g] * 3 / 2 + 32 * 1024) {
      std::printf("VIOLATION: gateway %zu RSS grew from %lld to %lld kB\n", g, static_cast<long long>(rss_warm[g]),
                  static_cast<long long>(rss_end[g]));
      ++violations;
    }
    if (fds_end[g] > fds_warm[g] + 64) {
      std::printf("VIOLATION: gateway %zu descriptors grew from %d to %d\n", g, fds_warm[g], fds_end[g]);
      ++violations;
    }
  }

  // The store bounded by retention: once executions start to expire (R), are swept (10 s) and their
  // pages reused, the file stops growing. Compare the largest size in the second half of the run
  // with the largest in the stretch before it.
  const int settled_s = retention_s + kSweepS + 15;
  const int half_s = (settled_s + seconds) / 2;
  int64_t store_first = 0, store_second = 0;
  for (const auto& [t, bytes] : store_sizes) {
    if (t >= settled_s && t < half_s) store_first = std::max(store_first, bytes);
    if (t >= half_s) store_second = std::max(store_second, bytes);
  }
  const bool store_checked = seconds >= 2 * settled_s + 20 && store_first > 0;
  if (store_checked && store_second > store_first * 5 / 4 + 8'000'000) {
    std::printf("VIOLATION: store kept growing past its retention: %.1f MB at %d..%d s, %.1f MB at %d..%d s\n",
                static_cast<double>(store_first) / 1e6, settled_s, half_s, static_cast<double>(store_second) / 1e6,
                half_s, seconds);
    ++violations;
  }

  for (auto& gw : gws) gw.proc->Kill(SIGTERM);
  for (auto& gw : gws) {
    gw.proc->Wait();
    gw.drain.join();
  }
  const int64_t store_bytes = FileSize(db) + FileSize(db + "-wal");
  ChildProcess verify({binary, "ledger", "verify", "--config", config_path}, dir + "/verify.err");
  std::string verify_out;
  while (auto line = verify.ReadLine(std::chrono::seconds(300))) verify_out += *line + " ";
  const int verify_status = verify.Wait();
  if (verify_status != 0) {
    std::printf("VIOLATION: ledger verify failed: %s\n", verify_out.c_str());
    ++violations;
  }

  const double secs = static_cast<double>(end_ms - start_ms) / 1000.0;
  std::printf("\n== soak summary\n");
  std::printf("duration            %.0f s, %d gateways, %d clients\n", secs, gateways, clients);
  std::printf(
      "requests            %lld (%.0f/s): %lld succeeded, %lld failed, %lld deferred, %lld other, %lld transport "
      "errors\n",
      static_cast<long long>(requests.load()), static_cast<double>(requests.load()) / secs,
      static_cast<long long>(succeeded.load()), static_cast<long long>(failed.load()),
      static_cast<long long>(deferred.load()), static_cast<long long>(other.load()),
      static_cast<long long>(transport_errors.load()));
  std::printf(
      "slow readers        %d: %lld connections that asked for a 1 MB execution and never read (%lld refused 503)\n",
      slow_readers, static_cast<long long>(slow_connections.load()), static_cast<long long>(slow_refused.load()));
  std::printf("faults injected     %lld random 5xx, %lld slow answers, %d outage windows of %d s\n",
              static_cast<long long>(injected_5xx.load()), static_cast<long long>(injected_slow.load()), outages,
              kOutageS);
  std::printf(
      "breaker             %d open episodes, %d half-open probes; calls seen in them: %d probes, %d admitted "
      "before the opening, %d after the closing (%d of them before the CIRCUIT_CLOSED event's time), %d other\n",
      episodes, probes, probes, late_from_before, after_close, after_close_early, intruders);
  std::printf("peak concurrency    crm %d / %d, email %d / %d\n", crm.peak_concurrent(), kCrmLimit,
              email.peak_concurrent(), kEmailLimit);
  for (size_t g = 0; g < gws.size(); ++g) {
    std::printf("gateway %zu           RSS %lld kB after warm-up, %lld kB at the end, peak %lld kB; fds %d -> %d\n", g,
                static_cast<long long>(rss_warm[g]), static_cast<long long>(rss_end[g]),
                static_cast<long long>(rss_peak[g]), fds_warm[g], fds_end[g]);
  }
  std::printf(
      "store               %.1f MB at the end (%.0f bytes per request served); retention %d s, sweep every %d s\n",
      static_cast<double>(store_bytes) / 1e6,
      requests.load() > 0 ? static_cast<double>(store_bytes) / static_cast<double>(requests.load()) : 0.0, retention_s,
      kSweepS);
  if (store_checked) {
    std::printf("store bound         largest %.1f MB at %d..%d s, %.1f MB at %d..%d s (bound %.1f MB)\n",
                static_cast<double>(store_first) / 1e6, settled_s, half_s, static_cast<double>(store_second) / 1e6,
                half_s, seconds, static_cast<double>(store_first * 5 / 4 + 8'000'000) / 1e6);
  } else {
    std::printf("store bound         not checked: run at least %d s with a %d s retention\n", 2 * settled_s + 20,
                retention_s);
  }
  std::printf("ledger verify       %s\n", verify_status == 0 ? "passed" : "FAILED");
  std::printf("invariant violations %d\n", violations);
  return violations == 0 ? 0 : 1;
}
