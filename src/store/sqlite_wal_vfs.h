#pragma once

// A SQLite VFS that writes a transaction's WAL frames with one write instead of two per page.
//
// SQLite writes each WAL frame as two writes, its 24-byte header and its page, so a commit of n pages
// is 2n `pwrite` calls; on a machine where a system call costs microseconds (a VM's exit on every
// return to user space) that is a measurable part of a small commit. This VFS wraps the default one
// and, for WAL files, holds consecutive writes in a buffer and hands them to the file in one write
// (in parts of at most 120 KB: the unix VFS masks a write's length to 17 bits):
//
//   - when the page of a commit frame arrives (its header's "database size after commit" is not
//     zero): before SQLite publishes the commit in the WAL index, so no reader, in this process or
//     another, can see a frame that is not in the file; an error of that write is the commit's
//     write error, as it would have been;
//   - before a write that does not continue the buffered run, and before any other operation on the
//     file (read, sync, truncate, size, lock, file control, close);
//   - when the buffer would exceed 4 MB (a transaction spilling its cache).
//
// A rewrite (a write below what the write transaction already wrote: SQLite rewriting frame headers
// with new checksums after the commit frame, or a page written again) is never held. When the
// transaction ends (its database file releases the WAL write lock), whatever is still held belongs
// to a transaction that was rolled back after spilling pages and is dropped: another writer may
// already have written its frames at those offsets; so is whatever is held at close. Nothing is held
// while the connection holds the database file exclusively (locking_mode = EXCLUSIVE takes no WAL
// write lock), where SQLite pads commits to sectors (no power-safe overwrite), or where the database
// file is not this VFS's.
//
// The database file is wrapped only to see that lock (its calls are forwarded as they are); every
// other file (the -shm, temporary files) is the default VFS's own object, unwrapped. What reaches
// the disk, and when it is synced, is unchanged; only the number of calls that put it there.
//
// Process-wide, registered once; never the default VFS (only connections that name it use it).

#include <cstdint>

namespace toolgate::store::internal {

// Registers the VFS (once; thread-safe) and returns its name for sqlite3_open_v2, or nullptr when
// SQLite has no default VFS to wrap (then open with the default).
const char* CoalescingWalVfsName();

// Counters since the process started, for tests and benchmarks: the WAL writes SQLite asked for,
// and the writes this VFS made to carry them.
struct WalWriteCounts {
  int64_t requested = 0;
  int64_t issued = 0;
};
WalWriteCounts CoalescingWalWriteCounts();

}  // namespace toolgate::store::internal
