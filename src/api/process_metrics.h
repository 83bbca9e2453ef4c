#pragma once

#include <string>

namespace toolgate::api {

// The standard process metrics of Prometheus client libraries, read from /proc/self at scrape
// time, in the text exposition format: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds.
// A value /proc cannot give (not Linux) is left out. Thread-safe (reads files only).
std::string ProcessMetricsText();

}  // namespace toolgate::api
