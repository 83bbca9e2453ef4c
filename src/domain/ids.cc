#include "toolgate/domain/ids.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cctype>
#include <random>

#include "absl/strings/ascii.h"

namespace toolgate {
namespace {

std::mt19937_64& Rng() {
  // One generator per thread, seeded from the OS, so no lock is needed on the hot path.
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }());
  return rng;
}

// The last id's 48-bit milliseconds and 12-bit counter (rand_a), as (ms << 12) | counter: RFC 9562
// §6.2 method 1, so ids made in one process in the same millisecond still sort in the order they
// were made (listings are newest first by id). A new millisecond starts its counter at a random
// value below 2048, leaving at least 2048 ids before the counter carries into the milliseconds.
std::atomic<uint64_t> g_last_stamp{0};

uint64_t NextStamp(uint64_t ms) {
  const uint64_t fresh = (ms << 12) | (Rng()() & 0x7ff);
  uint64_t last = g_last_stamp.load(std::memory_order_relaxed);
  for (;;) {
    // Monotonic while the clock moves forward (or stands still); a clock stepped back by more than a
    // second (a test's manual clock, an NTP step) starts again from it rather than stamping ids ahead.
    const bool stepped_back = (last >> 12) > ms + 1000;
    const uint64_t next = (stepped_back || fresh > last) ? fresh : last + 1;
    if (g_last_stamp.compare_exchange_weak(last, next, std::memory_order_relaxed)) return next;
  }
}

}  // namespace

std::string NewUuidV7(const Clock& clock) {
  std::array<uint8_t, 16> b{};
  const uint64_t stamp = NextStamp(static_cast<uint64_t>(clock.now_epoch_ms()) & 0xffff'ffff'ffffULL);
  const uint64_t ms = stamp >> 12;
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  b[6] = static_cast<uint8_t>((stamp >> 8) & 0x0f);
  b[7] = static_cast<uint8_t>(stamp & 0xff);
  const uint64_t r2 = Rng()();
  for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<uint8_t>(r2 >> (8 * i));
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x70);  // version 7
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 10
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0f]);
  }
  return out;
}

std::string NewLeaseId() {
  static constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint64_t r = Rng()();
  std::string out(11, 'A');
  for (char& c : out) {  // 11 × 6 bits: the last character carries the remaining 4
    c = kBase64Url[r & 0x3f];
    r >>= 6;
  }
  return out;
}

bool LooksLikeUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

bool IsValidToolName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {

std::string_view WithoutTrailingSeparators(std::string_view name) {
  while (!name.empty() && (name.back() == '.' || name.back() == '-' || name.back() == '_')) name.remove_suffix(1);
  return name;
}

}  // namespace

std::string FoldToolName(std::string_view name) {
  std::string folded(WithoutTrailingSeparators(name));
  for (char& c : folded) c = absl::ascii_tolower(static_cast<unsigned char>(c));
  return folded;
}

bool ToolNamesLookAlike(std::string_view a, std::string_view b) {
  a = WithoutTrailingSeparators(a);
  b = WithoutTrailingSeparators(b);
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return absl::ascii_tolower(static_cast<unsigned char>(x)) == absl::ascii_tolower(static_cast<unsigned char>(y));
  });
}

bool IsValidTenantId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char ch : id) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '.' || ch == '-' || ch == ':' || ch == '@';
    if (!ok) return false;
  }
  return true;
}

}  // namespace toolgate
