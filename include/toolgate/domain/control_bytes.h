#pragma once

// Control bytes in text that a person reads (a log line, a YAML file): each written as \xNN, so that
// what a client or an operator sent can neither start a new line nor drive a terminal.

#include <string>

namespace toolgate {

// A C0 control byte (0x00–0x1f) or DEL (0x7f).
inline bool IsControlByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

// Appends `\xNN` (two lowercase hex digits) for `c`.
inline void AppendHexEscape(std::string& out, char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  out += "\\x";
  out += kHex[u >> 4];
  out += kHex[u & 0xf];
}

}  // namespace toolgate
