// Linked into every target of the ThreadSanitizer build only (TOOLGATE_SANITIZE=thread).
//
// Debian's Abseil is built without ThreadSanitizer, so absl::Mutex locks and unlocks with atomics
// TSan cannot see, and every member an absl::Mutex guards would look like a data race. Abseil built
// with TSan tells it about each lock operation (ABSL_TSAN_MUTEX_* in mutex.cc); this file does the
// same from outside: the linker's --wrap (see the top-level CMakeLists.txt) sends our calls of the
// absl::Mutex and absl::CondVar members below here, which announce the lock, unlock or destruction
// to TSan around the real call. CondVar::Wait and Mutex::AwaitWithTimeout release the mutex while
// they wait and hold it again when they return: to TSan, an unlock before and a lock after (so an
// absl::Condition must not run code of ours: Condition(const bool*) is read inside Abseil).
//
// If code starts calling another member that locks, unlocks or waits (Await, LockWhen, ReaderLock,
// TryLock, CondVar::WaitWithTimeout, ...), TSan reports races on what that mutex guards: wrap that
// member here too (its mangled name from `nm -D` of libabsl_synchronization.so) and add it to
// TOOLGATE_TSAN_ABSL_WRAPPED. Debian 12's libabsl-dev 20220623 puts Abseil in the inline namespace
// absl::debian3, which the names below spell.

#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;

#define TOOLGATE_REAL(mangled) asm("__real_" mangled)

// The real members, reached through the names --wrap leaves for them.
void RealLock(Mutex* mu) TOOLGATE_REAL("_ZN4absl7debian35Mutex4LockEv");
void RealUnlock(Mutex* mu) TOOLGATE_REAL("_ZN4absl7debian35Mutex6UnlockEv");
void RealDestroy(Mutex* mu) TOOLGATE_REAL("_ZN4absl7debian35MutexD1Ev");
bool RealAwaitWithTimeout(Mutex* mu, const Condition& cond, Duration timeout)
    TOOLGATE_REAL("_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
void RealWait(CondVar* cv, Mutex* mu) TOOLGATE_REAL("_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");

namespace {

void AnnounceLock(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
}
void AnnounceUnlock(Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
}

}  // namespace

extern "C" {

void __wrap__ZN4absl7debian35Mutex4LockEv(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  RealLock(mu);
  __tsan_mutex_post_lock(mu, 0, 0);
}

void __wrap__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  RealUnlock(mu);
  __tsan_mutex_post_unlock(mu, 0);
}

void __wrap__ZN4absl7debian35MutexD1Ev(Mutex* mu) {
  __tsan_mutex_destroy(mu, 0);
  RealDestroy(mu);
}

bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(Mutex* mu, const Condition& cond,
                                                                                     Duration timeout) {
  AnnounceUnlock(mu);
  const bool met = RealAwaitWithTimeout(mu, cond, timeout);
  AnnounceLock(mu);
  return met;
}

void __wrap__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu) {
  AnnounceUnlock(mu);
  RealWait(cv, mu);
  AnnounceLock(mu);
}

}  // extern "C"
