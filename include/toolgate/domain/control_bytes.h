#pragma once

// Control bytes in text that a person reads (a log line, a YAML file): each written as \xNN, so that
// what a client or an operator sent can neither start a new line nor drive a terminal.

#include <string>
#include <string_view>

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

// `s` as one line a terminal shows as written: newlines as \n and \r, other C0 control bytes and DEL
// as \xNN, C1 controls and the bidirectional controls (which reorder what is shown) as \uNNNN, and a
// byte that is not part of well-formed UTF-8 as \xNN. For text from outside (clients, downstreams, MCP
// servers, operators' reasons) on its way to a log line or an operator's terminal.
std::string Printable(std::string_view s);

}  // namespace toolgate
