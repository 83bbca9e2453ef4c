#include "store/sqlite_wal_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace toolgate::store::internal {
namespace {

constexpr char kVfsName[] = "toolgate-wal";
constexpr int kFrameHeaderBytes = 24;                    // a WAL frame's header (SQLite's file format)
constexpr sqlite3_int64 kMaxBuffered = 4 * 1024 * 1024;  // a spilling transaction is written in parts
// The most one write to the unix VFS is given: it masks a write's length to 17 bits (0x1ffff) and
// writes what is left in further masked parts, so a length whose rest masks to nothing (a multiple
// of 128 KB) stops short and is reported as SQLITE_FULL. 30 frames of 4 KB pages.
constexpr sqlite3_int64 kMaxWrite = 120 * 1024;

std::atomic<int64_t> g_requested{0};
std::atomic<int64_t> g_issued{0};

sqlite3_vfs* g_real = nullptr;  // the wrapped VFS; set once, before g_vfs is registered
sqlite3_vfs g_vfs;

struct DbFile;

// SQLite allocates a file object (szOsFile bytes) and never constructs it, so these hold only plain
// data, each followed by the real VFS's object. SQLite aligns them to 8 bytes only, so nothing in
// them may ask for more (a 16-byte alignment lets the compiler use aligned vector stores that fault).

// A WAL file.
struct WalFile {
  sqlite3_file base;  // base.pMethods = &kWalMethods once open
  DbFile* db;         // its database file, while both are open (they are one connection's)
  char* buffer;       // sqlite3_malloc64'd; the bytes of [start, start + length)
  sqlite3_int64 capacity;
  sqlite3_int64 start;
  sqlite3_int64 length;
  // The end of the furthest byte this connection's current write transaction wrote or holds: a
  // write below it rewrites a frame of the transaction (SQLite's checksum rewrite, or a page written
  // again) and is never held back.
  sqlite3_int64 high_water;
  int commit_header;  // the last frame header written was a commit frame's
  int pass_through;   // hold nothing (see OpenWal)
  int failed;         // a write that could not be reported when it failed (DbShmBarrier): every later call fails
  alignas(8) unsigned char real_storage[8];

  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(real_storage); }
};

// A main database file: its calls are the real file's, but its shared-memory lock and barrier tell
// the WAL file when a write transaction ends.
struct DbFile {
  sqlite3_file base;  // base.pMethods = &kDbMethods once open
  WalFile* wal;       // its WAL file, while open
  int lock;           // the lock level this connection holds on it (SQLITE_LOCK_*)
  alignas(8) unsigned char real_storage[8];

  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(real_storage); }
};

static_assert(alignof(WalFile) == 8 && alignof(DbFile) == 8, "SQLite aligns a file object to 8 bytes only");

WalFile* Wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }
DbFile* Db(sqlite3_file* f) { return reinterpret_cast<DbFile*>(f); }

int Flush(WalFile* f) {
  int rc = SQLITE_OK;
  for (sqlite3_int64 done = 0; done < f->length && rc == SQLITE_OK;) {
    const int part = static_cast<int>(std::min(f->length - done, kMaxWrite));
    rc = f->real()->pMethods->xWrite(f->real(), f->buffer + done, part, f->start + done);
    g_issued.fetch_add(1, std::memory_order_relaxed);
    done += part;
  }
  f->length = 0;  // written or not: a failed write is reported once, as SQLite's own would be
  return rc;
}

int Reserve(WalFile* f, sqlite3_int64 bytes) {
  if (bytes <= f->capacity) return SQLITE_OK;
  sqlite3_int64 capacity = f->capacity == 0 ? 64 * 1024 : f->capacity;
  while (capacity < bytes) capacity *= 2;
  void* grown = sqlite3_realloc64(f->buffer, static_cast<sqlite3_uint64>(capacity));
  if (grown == nullptr) return SQLITE_NOMEM;
  f->buffer = static_cast<char*>(grown);
  f->capacity = capacity;
  return SQLITE_OK;
}

int WriteThrough(WalFile* f, const void* data, int amount, sqlite3_int64 offset) {
  g_issued.fetch_add(1, std::memory_order_relaxed);
  return f->real()->pMethods->xWrite(f->real(), data, amount, offset);
}

int WalWrite(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
  WalFile* f = Wal(file);
  g_requested.fetch_add(1, std::memory_order_relaxed);
  if (f->failed != SQLITE_OK) return f->failed;
  // Nothing is held while the connection holds the database file exclusively (locking_mode =
  // EXCLUSIVE): SQLite then takes and releases no WAL write lock, so the end of a rolled-back
  // transaction would go unseen. (In normal WAL mode a connection holds SHARED on the file.)
  if (f->pass_through || (f->db != nullptr && f->db->lock >= SQLITE_LOCK_EXCLUSIVE)) {
    if (int rc = Flush(f); rc != SQLITE_OK) return rc;
    return WriteThrough(f, data, amount, offset);
  }
  const sqlite3_int64 end = offset + amount;
  // A rewrite within the transaction (below what it already wrote), or more than one write carries:
  // written at once, after what is held. After the commit frame SQLite writes only rewrites (its
  // checksum rewrite), so nothing of a commit is ever left held when SQLite publishes it.
  if (offset < f->high_water || amount > kMaxWrite) {
    if (int rc = Flush(f); rc != SQLITE_OK) return rc;
    f->high_water = std::max(f->high_water, end);
    return WriteThrough(f, data, amount, offset);
  }
  if (f->length > 0 && (offset != f->start + f->length || f->length + amount > kMaxBuffered)) {
    if (int rc = Flush(f); rc != SQLITE_OK) return rc;
  }
  if (int rc = Reserve(f, f->length + amount); rc != SQLITE_OK) return rc;
  if (f->length == 0) f->start = offset;
  std::memcpy(f->buffer + f->length, data, static_cast<size_t>(amount));
  f->length += amount;
  f->high_water = end;
  if (amount == kFrameHeaderBytes) {
    // Bytes 4..7 of a frame header: the database size in pages after a commit, 0 for other frames.
    const auto* header = static_cast<const unsigned char*>(data);
    f->commit_header = (header[4] | header[5] | header[6] | header[7]) != 0;
    return SQLITE_OK;
  }
  // A commit frame's page: SQLite publishes the commit in the WAL index next; the frames must be in
  // the file before any reader can look for them.
  if (f->commit_header) return Flush(f);
  return SQLITE_OK;
}

// The connection's write transaction ended (its WAL write lock is released). A commit left nothing
// held; what is held now are frames of a transaction that was rolled back after it spilled pages:
// never part of the database, and the next writer, of any connection, may write its own frames at
// those offsets. They are dropped, never written over them.
void EndOfWriteTransaction(WalFile* f) {
  f->length = 0;
  f->high_water = 0;
  f->commit_header = 0;
}

int WalClose(sqlite3_file* file) {
  WalFile* f = Wal(file);
  // A commit left nothing held; what is held at close belongs to a transaction that never committed.
  f->length = 0;
  const int rc = f->real()->pMethods != nullptr ? f->real()->pMethods->xClose(f->real()) : SQLITE_OK;
  sqlite3_free(f->buffer);
  f->buffer = nullptr;
  f->capacity = 0;
  if (f->db != nullptr) f->db->wal = nullptr;
  f->db = nullptr;
  return rc;
}

// Every other call sees the file with what was written to it.
template <typename Call>
int FlushThen(sqlite3_file* file, Call call) {
  WalFile* f = Wal(file);
  if (f->failed != SQLITE_OK) return f->failed;
  if (int rc = Flush(f); rc != SQLITE_OK) return rc;
  return call(f->real());
}

int WalRead(sqlite3_file* file, void* data, int amount, sqlite3_int64 offset) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xRead(r, data, amount, offset); });
}
int WalTruncate(sqlite3_file* file, sqlite3_int64 size) {
  Wal(file)->high_water = std::min(Wal(file)->high_water, size);
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xTruncate(r, size); });
}
int WalSync(sqlite3_file* file, int flags) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xSync(r, flags); });
}
int WalFileSize(sqlite3_file* file, sqlite3_int64* size) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xFileSize(r, size); });
}
int WalLock(sqlite3_file* file, int level) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xLock(r, level); });
}
int WalUnlock(sqlite3_file* file, int level) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xUnlock(r, level); });
}
int WalFileControl(sqlite3_file* file, int op, void* arg) {
  return FlushThen(file, [&](sqlite3_file* r) { return r->pMethods->xFileControl(r, op, arg); });
}
int WalFetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
  return FlushThen(file, [&](sqlite3_file* r) {
    if (r->pMethods->iVersion < 3) {
      *out = nullptr;  // "no mapping": SQLite reads instead
      return SQLITE_OK;
    }
    return r->pMethods->xFetch(r, offset, amount, out);
  });
}

// The methods both kinds of file forward as they are. `Self` is WalFile or DbFile.
template <typename Self>
struct Forward {
  static sqlite3_file* Real(sqlite3_file* file) { return reinterpret_cast<Self*>(file)->real(); }
  static int CheckReservedLock(sqlite3_file* file, int* out) {
    return Real(file)->pMethods->xCheckReservedLock(Real(file), out);
  }
  static int SectorSize(sqlite3_file* file) { return Real(file)->pMethods->xSectorSize(Real(file)); }
  static int DeviceCharacteristics(sqlite3_file* file) {
    return Real(file)->pMethods->xDeviceCharacteristics(Real(file));
  }
  static int ShmMap(sqlite3_file* file, int page, int size, int extend, void volatile** out) {
    sqlite3_file* r = Real(file);
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmMap(r, page, size, extend, out) : SQLITE_IOERR_SHMMAP;
  }
  static int ShmLock(sqlite3_file* file, int offset, int n, int flags) {
    sqlite3_file* r = Real(file);
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmLock(r, offset, n, flags) : SQLITE_IOERR_SHMLOCK;
  }
  static void ShmBarrier(sqlite3_file* file) {
    sqlite3_file* r = Real(file);
    if (r->pMethods->iVersion >= 2) r->pMethods->xShmBarrier(r);
  }
  static int ShmUnmap(sqlite3_file* file, int delete_flag) {
    sqlite3_file* r = Real(file);
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmUnmap(r, delete_flag) : SQLITE_OK;
  }
  static int Unfetch(sqlite3_file* file, sqlite3_int64 offset, void* page) {
    sqlite3_file* r = Real(file);
    return r->pMethods->iVersion >= 3 ? r->pMethods->xUnfetch(r, offset, page) : SQLITE_OK;
  }
};

// The methods of a WAL file of this VFS: every version-3 method, each forwarding only what the real
// file has. SQLite keeps its shared memory on the database file, never on a WAL file.
const sqlite3_io_methods kWalMethods = {
    .iVersion = 3,
    .xClose = WalClose,
    .xRead = WalRead,
    .xWrite = WalWrite,
    .xTruncate = WalTruncate,
    .xSync = WalSync,
    .xFileSize = WalFileSize,
    .xLock = WalLock,
    .xUnlock = WalUnlock,
    .xCheckReservedLock = Forward<WalFile>::CheckReservedLock,
    .xFileControl = WalFileControl,
    .xSectorSize = Forward<WalFile>::SectorSize,
    .xDeviceCharacteristics = Forward<WalFile>::DeviceCharacteristics,
    .xShmMap = Forward<WalFile>::ShmMap,
    .xShmLock = Forward<WalFile>::ShmLock,
    .xShmBarrier = Forward<WalFile>::ShmBarrier,
    .xShmUnmap = Forward<WalFile>::ShmUnmap,
    .xFetch = WalFetch,
    .xUnfetch = Forward<WalFile>::Unfetch,
};

// SQLite's WAL write lock is shared-memory lock 0 (wal.c: WAL_WRITE_LOCK).
constexpr int kWalWriteLock = 0;

int DbClose(sqlite3_file* file) {
  DbFile* f = Db(file);
  if (f->wal != nullptr) f->wal->db = nullptr;
  f->wal = nullptr;
  return f->real()->pMethods != nullptr ? f->real()->pMethods->xClose(f->real()) : SQLITE_OK;
}
int DbRead(sqlite3_file* file, void* data, int amount, sqlite3_int64 offset) {
  return Db(file)->real()->pMethods->xRead(Db(file)->real(), data, amount, offset);
}
int DbWrite(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
  return Db(file)->real()->pMethods->xWrite(Db(file)->real(), data, amount, offset);
}
int DbTruncate(sqlite3_file* file, sqlite3_int64 size) {
  return Db(file)->real()->pMethods->xTruncate(Db(file)->real(), size);
}
int DbSync(sqlite3_file* file, int flags) { return Db(file)->real()->pMethods->xSync(Db(file)->real(), flags); }
int DbFileSize(sqlite3_file* file, sqlite3_int64* size) {
  return Db(file)->real()->pMethods->xFileSize(Db(file)->real(), size);
}
int DbLock(sqlite3_file* file, int level) {
  const int rc = Db(file)->real()->pMethods->xLock(Db(file)->real(), level);
  if (rc == SQLITE_OK) Db(file)->lock = std::max(Db(file)->lock, level);
  return rc;
}
int DbUnlock(sqlite3_file* file, int level) {
  const int rc = Db(file)->real()->pMethods->xUnlock(Db(file)->real(), level);
  if (rc == SQLITE_OK) Db(file)->lock = std::min(Db(file)->lock, level);
  return rc;
}
int DbFileControl(sqlite3_file* file, int op, void* arg) {
  return Db(file)->real()->pMethods->xFileControl(Db(file)->real(), op, arg);
}
int DbShmLock(sqlite3_file* file, int offset, int n, int flags) {
  DbFile* f = Db(file);
  const int rc = Forward<DbFile>::ShmLock(file, offset, n, flags);
  if (f->wal != nullptr && (flags & SQLITE_SHM_UNLOCK) != 0 && (flags & SQLITE_SHM_EXCLUSIVE) != 0 &&
      offset <= kWalWriteLock && kWalWriteLock < offset + n) {
    EndOfWriteTransaction(f->wal);
  }
  return rc;
}
// SQLite publishes a commit in the WAL index around a barrier. Nothing of a commit is held by then
// (see WalWrite); should anything be, it goes to the file before the commit can be seen, and if that
// write fails, which SQLite cannot be told here, every later call on the WAL file fails instead.
void DbShmBarrier(sqlite3_file* file) {
  DbFile* f = Db(file);
  if (f->wal != nullptr && f->wal->length > 0) {
    if (int rc = Flush(f->wal); rc != SQLITE_OK) f->wal->failed = rc;
  }
  Forward<DbFile>::ShmBarrier(file);
}
int DbFetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
  sqlite3_file* r = Db(file)->real();
  if (r->pMethods->iVersion < 3) {
    *out = nullptr;
    return SQLITE_OK;
  }
  return r->pMethods->xFetch(r, offset, amount, out);
}

const sqlite3_io_methods kDbMethods = {
    .iVersion = 3,
    .xClose = DbClose,
    .xRead = DbRead,
    .xWrite = DbWrite,
    .xTruncate = DbTruncate,
    .xSync = DbSync,
    .xFileSize = DbFileSize,
    .xLock = DbLock,
    .xUnlock = DbUnlock,
    .xCheckReservedLock = Forward<DbFile>::CheckReservedLock,
    .xFileControl = DbFileControl,
    .xSectorSize = Forward<DbFile>::SectorSize,
    .xDeviceCharacteristics = Forward<DbFile>::DeviceCharacteristics,
    .xShmMap = Forward<DbFile>::ShmMap,
    .xShmLock = DbShmLock,
    .xShmBarrier = DbShmBarrier,
    .xShmUnmap = Forward<DbFile>::ShmUnmap,
    .xFetch = DbFetch,
    .xUnfetch = Forward<DbFile>::Unfetch,
};

int OpenDb(sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  DbFile* f = Db(file);
  f->base.pMethods = nullptr;
  f->wal = nullptr;
  f->lock = SQLITE_LOCK_NONE;
  const int rc = g_real->xOpen(g_real, name, f->real(), flags, out_flags);
  // On failure SQLite calls no method of ours, but the real file must be closed if it was opened.
  if (rc != SQLITE_OK) {
    if (f->real()->pMethods != nullptr) f->real()->pMethods->xClose(f->real());
    return rc;
  }
  const sqlite3_io_methods* real = f->real()->pMethods;
  if (real->iVersion < 3 || real->xShmMap == nullptr || real->xShmLock == nullptr || real->xShmBarrier == nullptr) {
    // A file without shared memory or memory mapping: SQLite must see it as it is (it decides whether
    // WAL mode is possible from the methods), so it is not wrapped, and its WAL holds nothing.
    real->xClose(f->real());
    return g_real->xOpen(g_real, name, file, flags, out_flags);
  }
  f->base.pMethods = &kDbMethods;
  return SQLITE_OK;
}

int OpenWal(sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  WalFile* f = Wal(file);
  f->base.pMethods = nullptr;
  f->db = nullptr;
  f->buffer = nullptr;
  f->capacity = 0;
  f->start = 0;
  f->length = 0;
  f->high_water = 0;
  f->commit_header = 0;
  f->pass_through = 1;
  f->failed = SQLITE_OK;
  const int rc = g_real->xOpen(g_real, name, f->real(), flags, out_flags);
  if (rc != SQLITE_OK) {
    if (f->real()->pMethods != nullptr) f->real()->pMethods->xClose(f->real());
    return rc;
  }
  f->base.pMethods = &kWalMethods;
  // Writes are held only where it is safe to: the database file is this VFS's (so the end of a
  // write transaction is seen), and it promises power-safe overwrite, without which SQLite pads a
  // commit to a sector with extra frames and splits writes at the sync point.
  sqlite3_file* db = sqlite3_database_file_object(name);
  if (db != nullptr && db->pMethods == &kDbMethods && Db(db)->wal == nullptr) {
    f->db = Db(db);
    f->db->wal = f;
    const int characteristics = db->pMethods->xDeviceCharacteristics(db);
    f->pass_through = (characteristics & SQLITE_IOCAP_POWERSAFE_OVERWRITE) == 0 ? 1 : 0;
  }
  return SQLITE_OK;
}

int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  if ((flags & SQLITE_OPEN_WAL) != 0) return OpenWal(name, file, flags, out_flags);
  if ((flags & SQLITE_OPEN_MAIN_DB) != 0) return OpenDb(name, file, flags, out_flags);
  // Any other file is the real VFS's object in place: its calls go straight to the real methods.
  return g_real->xOpen(g_real, name, file, flags, out_flags);
}

// The rest of the VFS is the real one's, called with the real VFS object.
int Delete(sqlite3_vfs*, const char* name, int sync_dir) { return g_real->xDelete(g_real, name, sync_dir); }
int Access(sqlite3_vfs*, const char* name, int flags, int* out) { return g_real->xAccess(g_real, name, flags, out); }
int FullPathname(sqlite3_vfs*, const char* name, int size, char* out) {
  return g_real->xFullPathname(g_real, name, size, out);
}
void* DlOpen(sqlite3_vfs*, const char* name) { return g_real->xDlOpen(g_real, name); }
void DlError(sqlite3_vfs*, int size, char* out) { g_real->xDlError(g_real, size, out); }
void (*DlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) { return g_real->xDlSym(g_real, handle, symbol); }
void DlClose(sqlite3_vfs*, void* handle) { g_real->xDlClose(g_real, handle); }
int Randomness(sqlite3_vfs*, int size, char* out) { return g_real->xRandomness(g_real, size, out); }
int Sleep(sqlite3_vfs*, int microseconds) { return g_real->xSleep(g_real, microseconds); }
int CurrentTime(sqlite3_vfs*, double* out) { return g_real->xCurrentTime(g_real, out); }
int GetLastError(sqlite3_vfs*, int size, char* out) {
  return g_real->xGetLastError != nullptr ? g_real->xGetLastError(g_real, size, out) : 0;
}
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) { return g_real->xCurrentTimeInt64(g_real, out); }

const char* Register() {
  g_real = sqlite3_vfs_find(nullptr);
  if (g_real == nullptr || g_real->iVersion < 2 || g_real->xCurrentTimeInt64 == nullptr) return nullptr;
  g_vfs = sqlite3_vfs{};
  g_vfs.iVersion = 2;  // no system-call overrides: those are the real VFS's business
  g_vfs.szOsFile =
      static_cast<int>(std::max(offsetof(WalFile, real_storage), offsetof(DbFile, real_storage))) + g_real->szOsFile;
  g_vfs.mxPathname = g_real->mxPathname;
  g_vfs.zName = kVfsName;
  g_vfs.xOpen = Open;
  g_vfs.xDelete = Delete;
  g_vfs.xAccess = Access;
  g_vfs.xFullPathname = FullPathname;
  g_vfs.xDlOpen = DlOpen;
  g_vfs.xDlError = DlError;
  g_vfs.xDlSym = DlSym;
  g_vfs.xDlClose = DlClose;
  g_vfs.xRandomness = Randomness;
  g_vfs.xSleep = Sleep;
  g_vfs.xCurrentTime = CurrentTime;
  g_vfs.xGetLastError = GetLastError;
  g_vfs.xCurrentTimeInt64 = CurrentTimeInt64;
  if (sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0) != SQLITE_OK) return nullptr;
  return kVfsName;
}

}  // namespace

const char* CoalescingWalVfsName() {
  static const char* const name = Register();  // thread-safe, once
  return name;
}

WalWriteCounts CoalescingWalWriteCounts() {
  return {g_requested.load(std::memory_order_relaxed), g_issued.load(std::memory_order_relaxed)};
}

}  // namespace toolgate::store::internal
