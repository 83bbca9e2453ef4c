#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace toolgate {

// Who is calling, from a verified token (design §7). The only source of tenant and account (S11):
// the engine takes it as given; the API layer gets it from the token verifier.
struct Principal {
  std::string subject;     // `sub`
  std::string tenant_id;   // `custom:tenant_id`
  std::string account_id;  // `custom:account_id`, may be empty
  std::vector<std::string> roles;
  bool HasRole(std::string_view role) const { return std::find(roles.begin(), roles.end(), role) != roles.end(); }
};

}  // namespace toolgate
