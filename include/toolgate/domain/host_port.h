#pragma once

#include <string>

namespace toolgate {

// A "host:port" listen or connect address.
struct HostPort {
  std::string host;
  int port = 0;  // 0: any free port (tests)
  std::string ToString() const { return host + ":" + std::to_string(port); }
};

}  // namespace toolgate
