#include "api/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace toolgate::api {

namespace {

void Family(std::string& out, const char* name, const char* type, const char* help, double value) {
  char line[256];
  std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
  out += line;
}

// The fields of /proc/self/stat after the command name (which may hold spaces), 1-based as in
// proc(5) from field 3 on.
std::vector<std::string> StatFields() {
  std::ifstream f("/proc/self/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(all.substr(close + 1));
  std::vector<std::string> fields = {"", "", ""};  // fields 0..2 unused
  for (std::string v; rest >> v;) fields.push_back(v);
  return fields;
}

double BootTime() {
  std::ifstream f("/proc/stat");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  return -1;
}

int OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the directory's own descriptor
}

}  // namespace

std::string ProcessMetricsText() {
  std::string out;
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);
  const std::vector<std::string> s = StatFields();
  try {
    if (s.size() > 24 && ticks > 0) {
      Family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
             (std::stod(s[14]) + std::stod(s[15])) / static_cast<double>(ticks));
      Family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", std::stod(s[23]));
      Family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             std::stod(s[24]) * static_cast<double>(page));
      if (const double boot = BootTime(); boot >= 0) {
        Family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
               boot + std::stod(s[22]) / static_cast<double>(ticks));
      }
    }
  } catch (const std::exception&) {
    // An unreadable /proc value leaves its family out.
  }
  if (const int fds = OpenFds(); fds >= 0)
    Family(out, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    Family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           static_cast<double>(lim.rlim_cur));
  }
  return out;
}

}  // namespace toolgate::api
