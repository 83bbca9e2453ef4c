#pragma once

// The key a downstream deduplicates an intent by, computed here on its own (OpenSSL's SHA-256, not
// the gateway's code): "tg1-" and the first 32 hex digits of SHA-256(tenant "\n" intent key).

#include <openssl/evp.h>

#include <cstdio>
#include <string>

namespace toolgate::testing {

inline std::string DownstreamKey(const std::string& tenant, const std::string& intent_key) {
  const std::string data = tenant + "\n" + intent_key;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return "digest failed";
  std::string hex = "tg1-";
  char two[3];
  for (unsigned int i = 0; i < 16; ++i) {
    std::snprintf(two, sizeof two, "%02x", md[i]);
    hex += two;
  }
  return hex;
}

}  // namespace toolgate::testing
