#include "toolgate/clock.h"

namespace toolgate {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

int64_t Clock::now_epoch_ms() const { return duration_cast<milliseconds>(now_system().time_since_epoch()).count(); }

int64_t Clock::now_epoch_sec() const {
  const int64_t ms = now_epoch_ms();
  return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

int64_t Clock::now_monotonic_ms() const {
  return duration_cast<milliseconds>(now_monotonic().time_since_epoch()).count();
}

std::chrono::system_clock::time_point SystemClock::now_system() const { return std::chrono::system_clock::now(); }

std::chrono::steady_clock::time_point SystemClock::now_monotonic() const { return std::chrono::steady_clock::now(); }

ManualClock::ManualClock(int64_t start_epoch_ms) : epoch_ms_(start_epoch_ms) {}

std::chrono::system_clock::time_point ManualClock::now_system() const {
  return std::chrono::system_clock::time_point(milliseconds(epoch_ms_.load()));
}

std::chrono::steady_clock::time_point ManualClock::now_monotonic() const {
  return std::chrono::steady_clock::time_point(milliseconds(monotonic_ms_.load()));
}

void ManualClock::advance(milliseconds d) {
  epoch_ms_.fetch_add(d.count());
  monotonic_ms_.fetch_add(d.count());
}

void ManualClock::step_wall(milliseconds d) { epoch_ms_.fetch_add(d.count()); }

void ManualClock::set_epoch_ms(int64_t epoch_ms) {
  const int64_t before = epoch_ms_.exchange(epoch_ms);
  // Monotonic time never goes back, even when wall time is set backwards.
  if (epoch_ms > before) monotonic_ms_.fetch_add(epoch_ms - before);
}

}  // namespace toolgate
