#include "toolgate/store/sqlite_item_store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"
#include "store/item_ops.h"
#include "store/sqlite_wal_vfs.h"
#include "toolgate/status_macros.h"
#include "toolgate/store/item_json.h"

namespace toolgate::store {
namespace {

// Items in a rowid table, found by a unique (pk, sk) index that holds the keys alone. They were in a
// WITHOUT ROWID table keyed by (pk, sk), whose b-tree keeps whole rows in its interior cells too: a
// seek that compared its key with a large row's (a call's input of a megabyte) read that whole row,
// overflow pages and all, into a buffer of its size, on every comparison. A few such rows made every
// write and read that passed them slow for as long as they were kept: 80 inputs of 1 MB took a
// loaded instance from ~6,200 calls/s to ~370 (docs/store.md).
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS items ("
    "  pk TEXT NOT NULL,"
    "  sk TEXT NOT NULL,"
    "  attrs TEXT NOT NULL,"
    "  ttl INTEGER);"
    "CREATE UNIQUE INDEX IF NOT EXISTS items_key ON items(pk, sk);"
    "CREATE INDEX IF NOT EXISTS items_ttl ON items(ttl) WHERE ttl IS NOT NULL;";

// A store made before: its WITHOUT ROWID table copied into the rowid one and the indexes made, in
// one transaction (an older process writing meanwhile never finds the table without its key).
constexpr const char* kMigrateFromWithoutRowid =
    "CREATE TABLE items_rowid ("
    "  pk TEXT NOT NULL,"
    "  sk TEXT NOT NULL,"
    "  attrs TEXT NOT NULL,"
    "  ttl INTEGER);"
    "INSERT INTO items_rowid (pk, sk, attrs, ttl) SELECT pk, sk, attrs, ttl FROM items ORDER BY pk, sk;"
    "DROP TABLE items;"
    "ALTER TABLE items_rowid RENAME TO items;"
    "CREATE UNIQUE INDEX items_key ON items(pk, sk);"
    "CREATE INDEX items_ttl ON items(ttl) WHERE ttl IS NOT NULL;";

// Maps a SQLite result code to the store's Status vocabulary (see ItemStore).
absl::Status SqliteError(int rc, std::string_view what, sqlite3* db) {
  const std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const std::string msg = absl::StrCat("sqlite ", std::string(what), ": ", detail);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      // Another connection holds the lock this statement needed: it did nothing, and a write group
      // it was part of is rolled back whole.
      return MarkNothingWritten(absl::UnavailableError(absl::StrCat(msg, " (store busy)")));
    case SQLITE_READONLY:
      return absl::FailedPreconditionError(absl::StrCat(msg, " (store is read-only)"));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: {
      // Where every reader of this error (serve's start, `store check`, `ledger verify`, a call's log
      // line) learns which file and what to do: the runbook's row for a damaged store.
      const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
      if (file == nullptr || *file == '\0') return absl::DataLossError(msg);
      return absl::DataLossError(absl::StrCat(msg, ": the store file ", file,
                                              " is damaged; stop every gateway on it, set it aside with its -wal and "
                                              "-shm, and restore the latest backup (docs/operations.md, runbook: "
                                              "\"the store file is damaged\")"));
    }
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// The least string greater than every string that starts with `prefix`, or nullopt when none.
std::optional<std::string> PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  if (prefix.empty()) return std::nullopt;
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

// Resets a statement when it leaves scope, so no read snapshot outlives its use (a kept snapshot
// makes the next BEGIN IMMEDIATE on the connection fail with SQLITE_BUSY_SNAPSHOT).
class StatementScope {
 public:
  explicit StatementScope(sqlite3_stmt* s) : s_(s) {}
  ~StatementScope() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StatementScope(const StatementScope&) = delete;
  StatementScope& operator=(const StatementScope&) = delete;

 private:
  sqlite3_stmt* s_;
};

void BindText(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

absl::Status SqliteReadOnly() { return absl::FailedPreconditionError("sqlite store opened read-only"); }

// An item's expiry is its row's ttl column, by which the sweep deletes rows and queries leave them
// out: a read takes it from there, so every reader (a Get, a query, `ledger verify`) sees the expiry
// the row really has, whatever the attrs text says: an event row set to expire apart from its chain
// fails verify at once, and a ttl edited into the attrs alone excuses no damage as "expired".
void TakeTtlFromColumn(Item& item, sqlite3_stmt* s, int column) {
  if (sqlite3_column_type(s, column) == SQLITE_NULL) {
    item.erase(std::string(kTtlAttribute));
  } else {
    item[std::string(kTtlAttribute)] = AttributeValue(static_cast<int64_t>(sqlite3_column_int64(s, column)));
  }
}

}  // namespace

class SqliteItemStore::Connection {
 public:
  ~Connection() {
    for (sqlite3_stmt* s : {get_, put_, insert_, update_attrs_, update_row_, del_, query_asc_, query_desc_, scan_,
                            begin_, commit_, rollback_, data_version_}) {
      sqlite3_finalize(s);
    }
    sqlite3_close_v2(db_);
  }

  static absl::StatusOr<std::unique_ptr<Connection>> Open(const Options& o) {
    auto conn = std::unique_ptr<Connection>(new Connection());
    const int flags =
        (o.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
    const char* vfs = o.coalesce_wal_writes ? internal::CoalescingWalVfsName() : nullptr;
    int rc = sqlite3_open_v2(o.path.c_str(), &conn->db_, flags, vfs);
    if (rc != SQLITE_OK) return SqliteError(rc, absl::StrCat("open '", o.path, "'"), conn->db_);
    sqlite3_extended_result_codes(conn->db_, 1);
    sqlite3_busy_timeout(conn->db_, o.busy_timeout_ms);
    // Pages read through a memory map instead of a pread per page miss, when asked for.
    RETURN_IF_ERROR(conn->Exec(absl::StrCat("PRAGMA mmap_size=", o.mmap_bytes).c_str(), "set mmap_size"));
    if (!o.read_only) {
      RETURN_IF_ERROR(conn->Exec("PRAGMA journal_mode=WAL", "set WAL mode"));
      RETURN_IF_ERROR(
          conn->Exec(o.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", "set synchronous"));
      RETURN_IF_ERROR(conn->MigrateFromWithoutRowid(o.path));
      RETURN_IF_ERROR(conn->Exec(kSchema, "create schema"));
    }
    RETURN_IF_ERROR(conn->Prepare("SELECT attrs, ttl FROM items WHERE pk = ?1 AND sk = ?2", &conn->get_));
    if (!o.read_only) {
      RETURN_IF_ERROR(
          conn->Prepare("INSERT OR REPLACE INTO items (pk, sk, attrs, ttl) VALUES (?1, ?2, ?3, ?4)", &conn->put_));
      RETURN_IF_ERROR(conn->Prepare(
          "INSERT INTO items (pk, sk, attrs, ttl) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (pk, sk) DO NOTHING",
          &conn->insert_));
      // A kept item's row rewritten in place: its attrs alone when its ttl is as the row has it (the
      // ttl index left alone), else both. Where INSERT OR REPLACE deletes the row and its index entry
      // and inserts both again.
      RETURN_IF_ERROR(conn->Prepare("UPDATE items SET attrs = ?3 WHERE pk = ?1 AND sk = ?2", &conn->update_attrs_));
      RETURN_IF_ERROR(
          conn->Prepare("UPDATE items SET attrs = ?3, ttl = ?4 WHERE pk = ?1 AND sk = ?2", &conn->update_row_));
      RETURN_IF_ERROR(conn->Prepare("DELETE FROM items WHERE pk = ?1 AND sk = ?2", &conn->del_));
      RETURN_IF_ERROR(conn->Prepare("BEGIN IMMEDIATE", &conn->begin_));
      RETURN_IF_ERROR(conn->Prepare("COMMIT", &conn->commit_));
      RETURN_IF_ERROR(conn->Prepare("ROLLBACK", &conn->rollback_));
      RETURN_IF_ERROR(conn->Prepare("PRAGMA data_version", &conn->data_version_));
    }
    // ?3: lower bound (inclusive), ?4: upper bound (exclusive, may be NULL), ?5: after, ?6: now, ?7: limit.
    RETURN_IF_ERROR(
        conn->Prepare("SELECT sk, attrs, ttl FROM items WHERE pk = ?1 AND sk >= ?3 AND (?4 IS NULL OR sk < ?4)"
                      " AND (?5 IS NULL OR sk > ?5) AND (ttl IS NULL OR ttl > ?6) ORDER BY sk ASC LIMIT ?7",
                      &conn->query_asc_));
    RETURN_IF_ERROR(
        conn->Prepare("SELECT sk, attrs, ttl FROM items WHERE pk = ?1 AND sk >= ?3 AND (?4 IS NULL OR sk < ?4)"
                      " AND (?5 IS NULL OR sk < ?5) AND (ttl IS NULL OR ttl > ?6) ORDER BY sk DESC LIMIT ?7",
                      &conn->query_desc_));
    // ?1 pk prefix lower bound, ?2 its upper bound (may be NULL), ?3/?4 after (pk, sk) (may be NULL), ?5 limit.
    RETURN_IF_ERROR(
        conn->Prepare("SELECT pk, sk, attrs, ttl FROM items WHERE pk >= ?1 AND (?2 IS NULL OR pk < ?2)"
                      " AND (?3 IS NULL OR (pk, sk) > (?3, ?4)) ORDER BY pk, sk LIMIT ?5",
                      &conn->scan_));
    return conn;
  }

  // The writer's WAL: SQLite's automatic checkpoint (which would run inside whichever thread commits,
  // an event loop among them) is replaced by a count of the WAL's frames after each commit; the store
  // decides where the checkpoint runs (CommitGroup).
  void CountWalFrames() {
    sqlite3_wal_hook(
        db_,
        [](void* self, sqlite3*, const char*, int frames) {
          static_cast<Connection*>(self)->wal_frames_ = frames;
          return SQLITE_OK;
        },
        this);
  }
  int wal_frames() const { return wal_frames_; }
  // A passive checkpoint, as SQLite's automatic one: copies what no reader still needs into the
  // database file, never waiting for a reader or a writer. Outside a transaction only.
  absl::Status Checkpoint() {
    int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(rc, "checkpoint", db_);
    wal_frames_ = 0;
    return absl::OkStatus();
  }

  // BEGIN IMMEDIATE without SQLite's busy handler: false (nothing begun) when another connection
  // holds the write lock, for a leader that must not wait (an event loop).
  absl::StatusOr<bool> BeginWithoutWaiting(int busy_timeout_ms) {
    sqlite3_busy_timeout(db_, 0);
    int rc;
    {
      StatementScope scope(begin_);
      rc = sqlite3_step(begin_);
    }
    sqlite3_busy_timeout(db_, busy_timeout_ms);
    if ((rc & 0xff) == SQLITE_BUSY) return false;
    if (rc != SQLITE_DONE) return SqliteError(rc, "begin", db_);
    return true;
  }

  // Whether the items table is the WITHOUT ROWID one stores were made with before (kSchema).
  absl::StatusOr<bool> ItemsWithoutRowid() {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'", -1, &s,
                                nullptr);
    if (rc != SQLITE_OK) return SqliteError(rc, "read the schema", db_);
    bool old = false;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      std::string sql = text != nullptr ? text : "";
      for (char& c : sql) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      old = sql.find("WITHOUT ROWID") != std::string::npos;
      rc = SQLITE_DONE;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return SqliteError(rc, "read the schema", db_);
    return old;
  }

  // Moves a store made before into the rowid table (kSchema), once: under the write lock, checked
  // again there, since another process may be doing the same at the same moment.
  absl::Status MigrateFromWithoutRowid(const std::string& path) {
    ASSIGN_OR_RETURN(bool old, ItemsWithoutRowid());
    if (!old) return absl::OkStatus();
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "begin the migration"));
    absl::StatusOr<bool> still = ItemsWithoutRowid();
    absl::Status done = still.status();
    if (done.ok() && *still) {
      spdlog::info("sqlite store {}: moving the items to a rowid table (once; large items slowed every seek)", path);
      done = Exec(kMigrateFromWithoutRowid, "migrate the items table");
    }
    if (done.ok()) done = Exec("COMMIT", "commit the migration");
    if (!done.ok()) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return done;
    }
    return absl::OkStatus();
  }

  absl::Status Exec(const char* sql, std::string_view what) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(rc, what, db_);
    return absl::OkStatus();
  }

  absl::Status Prepare(const char* sql, sqlite3_stmt** out) {
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, out, nullptr);
    if (rc != SQLITE_OK) return SqliteError(rc, "prepare", db_);
    return absl::OkStatus();
  }

  // Steps a statement that returns no rows.
  absl::Status Run(sqlite3_stmt* s, std::string_view what) {
    StatementScope scope(s);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return SqliteError(rc, what, db_);
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<Item>> Read(const ItemKey& key) {
    StatementScope scope(get_);
    BindText(get_, 1, key.pk);
    BindText(get_, 2, key.sk);
    int rc = sqlite3_step(get_);
    if (rc == SQLITE_DONE) return std::optional<Item>();
    if (rc != SQLITE_ROW) return SqliteError(rc, "read", db_);
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(get_, 0));
    const int len = sqlite3_column_bytes(get_, 0);
    absl::StatusOr<Item> item = ItemFromJsonText(std::string_view(text ? text : "", len));
    if (!item.ok()) {
      return absl::DataLossError(absl::StrCat("item (", key.pk, ", ", key.sk, "): ", item.status().message()));
    }
    TakeTtlFromColumn(*item, get_, 1);
    return std::optional<Item>(std::move(*item));
  }

  absl::Status Delete(const ItemKey& key) {
    StatementScope scope(del_);
    BindText(del_, 1, key.pk);
    BindText(del_, 2, key.sk);
    int rc = sqlite3_step(del_);
    if (rc != SQLITE_DONE) return SqliteError(rc, "delete", db_);
    return absl::OkStatus();
  }

  absl::Status Write(const ItemKey& key, const Item& item) {
    if (put_ == nullptr) return SqliteReadOnly();
    return Store(put_, key, item);
  }

  // Writes `item` only where no item has `key`: one statement where a read and a write would be two
  // (a Put whose condition is ItemAbsent: every ledger event, every new execution). False when an
  // item was there (nothing written).
  absl::StatusOr<bool> Insert(const ItemKey& key, const Item& item) {
    if (insert_ == nullptr) return SqliteReadOnly();
    RETURN_IF_ERROR(Store(insert_, key, item));
    return sqlite3_changes(db_) == 1;
  }

  // The writer's cache of decoded items (design §16): an item the writer updated, or inserted with
  // WriteRequest::updated_soon, is kept decoded, so the next conditional write of it (a connector's
  // CONCURRENCY item: every acquire and release; an execution record at its call's close) skips
  // reading and parsing its JSON. Valid only while no other connection has committed: call
  // RevalidateCache inside each transaction before using it; Forget everything after a rollback.
  // Bounded: at kMaxCachedItems the entries no unwritten change holds are dropped.
  //
  // An update of a kept item changes it where it is kept and marks it `dirty`; its row is written
  // once, by WriteDirty before the commit, however many batches of the group updated it (a
  // connector's CONCURRENCY item: one row write per group instead of one per acquire and release).
  // Nothing outside the transaction sees the difference: the group commits whole or not at all.
  static constexpr size_t kMaxCachedItems = 512;

  struct CacheEntry {
    Item item;
    bool dirty = false;  // changed since its row was last written, in this transaction
    // What the database holds for the item: no row (an update created it, its row not yet written),
    // a row whose ttl column is unknown here (read, and written by someone else), or a row this
    // connection wrote with `row_ttl` in its ttl column. WriteDirty rewrites a row in place.
    enum class Row : uint8_t { kNone, kTtlUnknown, kTtlKnown } row = Row::kNone;
    std::optional<int64_t> row_ttl;
  };

  static std::string CacheKey(const ItemKey& key) { return absl::StrCat(key.pk.size(), ":", key.pk, key.sk); }

  // Empties the cache when another connection (a thread's pool connection, another process) has
  // committed since the last check. REQUIRES: inside a write transaction (so nobody commits meanwhile).
  absl::Status RevalidateCache() {
    StatementScope scope(data_version_);
    int rc = sqlite3_step(data_version_);
    if (rc != SQLITE_ROW) {
      Forget();
      return SqliteError(rc, "data_version", db_);
    }
    const int64_t version = sqlite3_column_int64(data_version_, 0);
    if (version != cache_version_) {
      Forget();
      cache_version_ = version;
    }
    return absl::OkStatus();
  }
  CacheEntry* Cached(const ItemKey& key) {
    auto it = cache_.find(CacheKey(key));
    return it == cache_.end() ? nullptr : &it->second;
  }
  // `entry` (of `key`) was changed where it is kept: its row is written by WriteDirty.
  void MarkDirty(const ItemKey& key, CacheEntry& entry) {
    if (entry.dirty) return;
    entry.dirty = true;
    dirty_.push_back(key);
  }
  // Writes the row of every kept item changed in this transaction. REQUIRES: inside it, before its
  // commit. An error leaves the transaction to be rolled back (and the cache forgotten).
  absl::Status WriteDirty() {
    for (const ItemKey& key : dirty_) {
      CacheEntry* entry = Cached(key);
      if (entry == nullptr || !entry->dirty) continue;  // erased or rewritten whole since
      RETURN_IF_ERROR(WriteKept(key, *entry));
      entry->dirty = false;
    }
    dirty_.clear();
    return absl::OkStatus();
  }
  // After a Put or Erase of `key` (its row written or deleted): an entry that exists follows it
  // (nullptr: erased).
  void Refresh(const ItemKey& key, const Item* value) {
    auto it = cache_.find(CacheKey(key));
    if (it == cache_.end()) return;
    if (value == nullptr) {
      cache_.erase(it);
    } else {
      it->second = Written(*value);
    }
  }
  // After an insert of `key` that wrote its row and that an update soon follows: its value.
  void Remember(const ItemKey& key, Item value) {
    std::string k = CacheKey(key);
    if (!HasRoomFor(k)) return;  // its row is written already
    cache_.insert_or_assign(std::move(k), Written(std::move(value)));
  }
  // An entry for `key`, not kept before, whose row WriteDirty writes: the caller sets its item.
  // `has_row`: the database holds a row for it (read in this transaction). nullptr when every kept
  // entry holds an unwritten change (the caller writes the row itself).
  CacheEntry* KeepChanged(const ItemKey& key, bool has_row) {
    std::string k = CacheKey(key);
    if (!HasRoomFor(k)) return nullptr;
    CacheEntry& entry = cache_[std::move(k)];
    entry.row = has_row ? CacheEntry::Row::kTtlUnknown : CacheEntry::Row::kNone;
    MarkDirty(key, entry);
    return &entry;
  }
  // Whether the cache can take (or holds) the entry `k`: when full, what no unwritten change holds
  // is dropped first. (Still full means more items than that changed in one transaction.)
  bool HasRoomFor(const std::string& k) {
    if (cache_.size() < kMaxCachedItems || cache_.contains(k)) return true;
    std::erase_if(cache_, [](const auto& entry) { return !entry.second.dirty; });
    return cache_.size() < kMaxCachedItems;
  }
  void Forget() {
    cache_.clear();
    dirty_.clear();
    cache_version_ = -1;
  }
  // Item rows written (put, inserted or updated) since the last call.
  int64_t TakeRowsWritten() { return std::exchange(rows_written_, 0); }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* get_ = nullptr;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* update_attrs_ = nullptr;
  sqlite3_stmt* update_row_ = nullptr;
  sqlite3_stmt* del_ = nullptr;
  sqlite3_stmt* query_asc_ = nullptr;
  sqlite3_stmt* query_desc_ = nullptr;
  sqlite3_stmt* scan_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* data_version_ = nullptr;

 private:
  Connection() = default;

  int wal_frames_ = 0;  // the WAL's frames after the last commit (CountWalFrames)

  // An entry for an item whose row this connection has just written.
  static CacheEntry Written(Item item) {
    CacheEntry entry;
    entry.row_ttl = GetInt(item, kTtlAttribute);
    entry.item = std::move(item);
    entry.row = CacheEntry::Row::kTtlKnown;
    return entry;
  }

  // Writes a kept item's row: in place where the database holds one (its ttl index entry touched
  // only when its ttl changed), inserted where it does not. Afterwards the row is as `entry` knows it.
  absl::Status WriteKept(const ItemKey& key, CacheEntry& entry) {
    const std::optional<int64_t> ttl = GetInt(entry.item, kTtlAttribute);
    if (entry.row != CacheEntry::Row::kNone) {
      sqlite3_stmt* const s =
          entry.row == CacheEntry::Row::kTtlKnown && entry.row_ttl == ttl ? update_attrs_ : update_row_;
      RETURN_IF_ERROR(Store(s, key, entry.item, ttl));
      // No row changed: it is gone after all (nothing should remove it while the cache is valid);
      // written whole below.
      if (sqlite3_changes(db_) == 1) {
        entry.row = CacheEntry::Row::kTtlKnown;
        entry.row_ttl = ttl;
        return absl::OkStatus();
      }
    }
    RETURN_IF_ERROR(Write(key, entry.item));
    entry.row = CacheEntry::Row::kTtlKnown;
    entry.row_ttl = ttl;
    return absl::OkStatus();
  }

  // Binds (pk, sk, attrs, ttl) and runs `statement` (put_ or insert_).
  absl::Status Store(sqlite3_stmt* statement, const ItemKey& key, const Item& item) {
    return Store(statement, key, item, GetInt(item, kTtlAttribute));
  }
  // Binds (pk, sk, attrs) and, where `statement` has a fourth parameter, `ttl`, and runs it.
  absl::Status Store(sqlite3_stmt* statement, const ItemKey& key, const Item& item, std::optional<int64_t> ttl) {
    StatementScope scope(statement);
    BindText(statement, 1, key.pk);
    BindText(statement, 2, key.sk);
    BindText(statement, 3, ItemToJsonText(item));
    if (sqlite3_bind_parameter_count(statement) >= 4) {
      if (ttl) {
        sqlite3_bind_int64(statement, 4, *ttl);
      } else {
        sqlite3_bind_null(statement, 4);
      }
    }
    int rc = sqlite3_step(statement);
    if (rc != SQLITE_DONE) return SqliteError(rc, "write", db_);
    rows_written_ += sqlite3_changes(db_);
    return absl::OkStatus();
  }

  std::unordered_map<std::string, CacheEntry> cache_;
  std::vector<ItemKey> dirty_;  // keys MarkDirty named in this transaction (WriteDirty writes them)
  int64_t cache_version_ = -1;
  int64_t rows_written_ = 0;  // TakeRowsWritten
};

namespace {

int64_t WallMinusMonotonicMs(const Clock& clock) { return clock.now_epoch_ms() - clock.now_monotonic_ms(); }

}  // namespace

SqliteItemStore::SqliteItemStore(Options options, const Clock& clock)
    : options_(std::move(options)), clock_(clock), trusted_offset_ms_(WallMinusMonotonicMs(clock)) {}

absl::StatusOr<std::unique_ptr<SqliteItemStore>> SqliteItemStore::Open(const Options& options, const Clock& clock) {
  if (options.path.empty()) return absl::InvalidArgumentError("sqlite store needs a path");
  auto store = std::unique_ptr<SqliteItemStore>(new SqliteItemStore(options, clock));
  // Open one connection now so a bad file is reported at start, not at the first request.
  auto open_and_touch = [&options]() -> absl::StatusOr<std::unique_ptr<Connection>> {
    ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Connection::Open(options));
    StatementScope scope(conn->get_);
    // Touch the table: a file that is not a database fails here if the pragmas did not catch it.
    BindText(conn->get_, 1, "");
    BindText(conn->get_, 2, "");
    int rc = sqlite3_step(conn->get_);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteError(rc, "read", conn->db_);
    return conn;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> first, open_and_touch());
  store->Return(std::move(first));
  // A store that writes keeps one more connection open for its life, used for nothing: SQLite removes
  // the -wal and -shm files when a process's last connection to them closes, and the file check below
  // takes them as opened.
  if (!options.read_only) {
    ASSIGN_OR_RETURN(store->keeper_, open_and_touch());
  }
  const std::array<std::string, 3> paths = {options.path, options.path + "-wal", options.path + "-shm"};
  for (size_t i = 0; i < paths.size(); ++i) {
    if (struct stat st{}; stat(paths[i].c_str(), &st) == 0 && (i == 0 || !options.read_only)) {
      store->files_[i] = {paths[i], static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    }
  }
  if (options.sweep_interval_ms > 0 && !options.read_only) {
    store->sweeper_ = std::thread([s = store.get()] { s->SweepLoop(); });
  }
  return store;
}

SqliteItemStore::~SqliteItemStore() {
  {
    absl::MutexLock lock(&sweep_mu_);
    stopping_ = true;  // wakes the sweeper: it awaits this condition
  }
  if (sweeper_.joinable()) sweeper_.join();
  {
    absl::MutexLock lock(&queue_mu_);
    writer_stopping_ = true;  // the writer thread commits what is queued, then returns
    writer_cv_.Signal();
  }
  if (writer_thread_.joinable()) writer_thread_.join();
}

int SqliteItemStore::FileElsewhere() const {
  for (size_t i = 0; i < files_.size(); ++i) {
    const FileIdentity& f = files_[i];
    if (f.path.empty()) continue;
    struct stat st {};
    if (stat(f.path.c_str(), &st) != 0 || st.st_dev != f.dev || st.st_ino != f.ino) return static_cast<int>(i);
  }
  return -1;
}

bool SqliteItemStore::FileStillOpened() const { return FileElsewhere() < 0; }

absl::Status SqliteItemStore::FileGone() const {
  const int which = gone_file_.load(std::memory_order_relaxed);
  if (which == 0) {
    return absl::UnavailableError(absl::StrCat("the store file ", options_.path,
                                               " was removed or replaced while open: nothing is written to it until "
                                               "it is back (restore it, or restart on the right file)"));
  }
  return absl::UnavailableError(absl::StrCat(
      "the store's ", files_[static_cast<size_t>(which)].path,
      " was removed or replaced while open: a process that opens the store now works on a log of its own, "
      "unseen by those running (SQLite's split brain); nothing is written until it is back (stop every gateway "
      "on this store, then run `toolgate store check` and `toolgate ledger verify`)"));
}

absl::StatusOr<std::unique_ptr<SqliteItemStore::Connection>> SqliteItemStore::Acquire() {
  if (file_gone_.load(std::memory_order_relaxed)) return FileGone();
  {
    absl::MutexLock lock(&pool_mu_);
    if (!pool_.empty()) {
      std::unique_ptr<Connection> c = std::move(pool_.back());
      pool_.pop_back();
      return c;
    }
  }
  return Connection::Open(options_);
}

void SqliteItemStore::Return(std::unique_ptr<Connection> conn) {
  absl::MutexLock lock(&pool_mu_);
  pool_.push_back(std::move(conn));
}

absl::StatusOr<std::optional<Item>> SqliteItemStore::Get(const ItemKey& key) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  absl::StatusOr<std::optional<Item>> item = conn->Read(key);
  Return(std::move(conn));
  if (item.ok() && item->has_value() && IsExpired(**item, clock_.now_epoch_sec())) return std::optional<Item>();
  return item;
}

// One queued Submit. `done` and the queue are guarded by queue_mu_; `results` is written by the
// group leader before it sets `done`, and read by its owner only after.
struct SqliteItemStore::Writer {
  const std::vector<WriteRequest>* requests;
  std::vector<absl::StatusOr<WriteResult>> results;
  bool done = false;
  absl::CondVar cv;  // signalled when this writer is done or leads the queue
  // An asynchronous batch: it owns its requests, the writer thread leads it, and `completion` gets
  // the results. Empty for a synchronous Submit.
  std::vector<WriteRequest> owned;
  AsyncItemStore::WriteCompletion completion;
  bool async() const { return static_cast<bool>(completion); }
  bool on_submitter = false;  // an asynchronous batch its submitting thread commits (AsyncWriteBatch)
};

namespace {

constexpr size_t kMaxGroupWrites = 256;
// The WAL's length, in frames, past which the writer checkpoints: SQLite's own default.
constexpr int kCheckpointFrames = 1000;
// The share of recent asynchronous batches that met others queued (in 1/1024ths) from which a
// submitting thread no longer commits its own batch (AsyncWriteBatch).
constexpr int kContentionScale = 1024;
constexpr int kInlineContentionLimit = kContentionScale / 8;

// Executes one request inside an open transaction. Returns its own result (a failed condition, a
// malformed update, an undecodable row: nothing written); sets `fatal` when SQLite itself failed,
// which aborts the whole group.
absl::StatusOr<WriteResult> ExecuteOne(SqliteItemStore::Connection& conn, const WriteRequest& req, absl::Status& fatal);

}  // namespace

std::vector<absl::StatusOr<WriteResult>> SqliteItemStore::Submit(const std::vector<WriteRequest>& requests) {
  if (options_.read_only) return std::vector<absl::StatusOr<WriteResult>>(requests.size(), SqliteReadOnly());
  Writer self;
  self.requests = &requests;
  std::vector<Writer*> group;
  {
    absl::MutexLock lock(&queue_mu_);
    writers_.push_back(&self);
    while (!self.done && &self != writers_.front()) self.cv.Wait(&queue_mu_);
    if (self.done) return std::move(self.results);
    group = TakeGroup();  // this writer leads
  }
  CommitAndFinish(group, &self);
  return std::move(self.results);
}

void SqliteItemStore::CommitAndFinish(const std::vector<Writer*>& group, const Writer* self) {
  const bool on_submitter = !group.empty() && group.front()->on_submitter;
  if (!CommitGroup(group, on_submitter)) {
    // Another process holds the file's write lock: the writer thread waits for it, not the loop.
    absl::MutexLock lock(&queue_mu_);
    group.front()->on_submitter = false;
    contention_ = kContentionScale;
    writer_cv_.Signal();
    return;
  }
  std::vector<Writer*> finished_async;
  {
    absl::MutexLock lock(&queue_mu_);
    finished_async = FinishGroup(group, self);
    // The group waited the busy timeout for another process's write lock and wrote nothing. The
    // writes queued behind it meanwhile waited for the same lock: each is answered with the same
    // error now instead of waiting the whole timeout again, so a write waits for another process's
    // lock about the busy timeout at most (a `sqlite3` shell left in a transaction).
    const Writer* first = group.empty() ? nullptr : group.front();
    if (first != nullptr && !first->results.empty() && NothingWritten(first->results.front().status())) {
      const absl::Status locked_out = first->results.front().status();
      while (!writers_.empty()) {
        Writer* w = writers_.front();
        writers_.pop_front();
        w->results.assign(w->requests->size(), locked_out);
        w->done = true;
        if (w->async()) {
          finished_async.push_back(w);
        } else {
          w->cv.Signal();
        }
      }
    }
  }
  if (finished_async.empty()) return;
  for (Writer* async_writer : finished_async) {
    std::unique_ptr<Writer> w(async_writer);
    std::move(w->completion)(std::move(w->results));
  }
  absl::MutexLock lock(&queue_mu_);
  async_outstanding_ -= static_cast<int64_t>(finished_async.size());
  if (async_outstanding_ == 0) idle_cv_.SignalAll();
}

void SqliteItemStore::WaitIdle() {
  absl::MutexLock lock(&queue_mu_);
  while (async_outstanding_ > 0) idle_cv_.Wait(&queue_mu_);
}

std::vector<SqliteItemStore::Writer*> SqliteItemStore::TakeGroup() {
  std::vector<Writer*> group;
  size_t n = 0;
  for (Writer* w : writers_) {
    if (!group.empty() && n + w->requests->size() > kMaxGroupWrites) break;
    group.push_back(w);
    n += w->requests->size();
  }
  return group;
}

std::vector<SqliteItemStore::Writer*> SqliteItemStore::FinishGroup(const std::vector<Writer*>& group,
                                                                   const Writer* self) {
  std::vector<Writer*> finished_async;
  for (Writer* w : group) {
    writers_.pop_front();
    w->done = true;
    if (w->async()) {
      finished_async.push_back(w);
    } else if (w != self) {
      w->cv.Signal();
    }
  }
  // The next leader: a synchronous writer's thread, or the writer thread for an asynchronous batch.
  if (!writers_.empty()) {
    if (writers_.front()->async()) {
      writer_cv_.Signal();
    } else {
      writers_.front()->cv.Signal();
    }
  }
  return finished_async;
}

bool SqliteItemStore::AsyncLeads() const {
  if (writers_.empty()) return writer_stopping_;
  return writers_.front()->async() && !writers_.front()->on_submitter;
}

void SqliteItemStore::WriterLoop() {
  for (;;) {
    std::vector<Writer*> group;
    {
      // A CondVar, not an absl::Condition: no code of ours runs inside Abseil (see
      // sanitizers/tsan_absl_mutex.cc).
      absl::MutexLock lock(&queue_mu_);
      while (!AsyncLeads()) writer_cv_.Wait(&queue_mu_);
      if (writers_.empty()) return;  // stopping, and nothing is queued
      group = TakeGroup();
    }
    CommitAndFinish(group, nullptr);
  }
}

void SqliteItemStore::AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) {
  if (options_.read_only) {
    std::move(done)(WriteResults(requests.size(), SqliteReadOnly()));
    return;
  }
  if (requests.empty()) {
    std::move(done)(WriteResults());
    return;
  }
  auto w = std::make_unique<Writer>();
  w->owned = std::move(requests);
  w->requests = &w->owned;
  w->completion = std::move(done);
  std::vector<Writer*> group;
  {
    absl::MutexLock lock(&queue_mu_);
    if (!writer_thread_.joinable()) {
      writer_thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "sqlite-writer");  // for top -H, perf and gdb
        WriterLoop();
      });
    }
    ++async_outstanding_;
    writers_.push_back(w.release());  // owned by the queue until CommitAndFinish
    // How often a batch lately found others committing or queued (a moving average, in 1/1024ths).
    const bool queued = writers_.size() != 1;
    contention_ += ((queued ? kContentionScale : 0) - contention_) / 8;
    if (queued) return;  // behind a group being committed: a leader takes it later
    // Nothing is committing or queued. With `synchronous = NORMAL` a commit writes the WAL and does
    // not wait for the disk, so on a quiet store the submitting thread commits the batch itself:
    // two thread wake-ups fewer per batch, most of an idle gateway's latency per call. Not when
    // batches have lately been meeting each other: a loop committing is a loop not serving its
    // connections, and the writer thread groups their commits. With FULL the commit waits for an
    // fsync, which an event loop must not: the writer thread leads it. A checkpoint that is due is
    // the writer thread's as well.
    if (options_.synchronous_full || contention_ >= kInlineContentionLimit ||
        checkpoint_due_.load(std::memory_order_relaxed)) {
      writer_cv_.Signal();  // at the front: the writer thread leads it
      return;
    }
    writers_.front()->on_submitter = true;
    group = TakeGroup();
  }
  CommitAndFinish(group, nullptr);
}

void SqliteItemStore::AsyncGet(ItemKey key, GetCompletion done) { std::move(done)(Get(key)); }

void SqliteItemStore::AsyncQuery(QueryRequest request, QueryCompletion done) { std::move(done)(Query(request)); }

// REQUIRES: called by the group leader only (so one group at a time uses writer_).
bool SqliteItemStore::CommitGroup(const std::vector<Writer*>& group, bool on_submitter) {
  auto fail_all = [&](const absl::Status& s) {
    for (Writer* w : group) w->results.assign(w->requests->size(), s);
    return true;
  };
  if (file_gone_.load(std::memory_order_relaxed)) return fail_all(FileGone());
  if (!writer_) {
    absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Open(options_);
    if (!conn.ok()) return fail_all(conn.status());
    writer_ = std::move(*conn);
    writer_->CountWalFrames();
  }
  Connection& c = *writer_;
  absl::Status fatal;
  if (on_submitter) {
    // An event loop never sleeps in SQLite's busy handler: if another process is writing, give up.
    absl::StatusOr<bool> begun = c.BeginWithoutWaiting(options_.busy_timeout_ms);
    if (begun.ok() && !*begun) return false;
    fatal = begun.status();
  } else {
    fatal = c.Run(c.begin_, "begin");
  }
  if (fatal.ok()) fatal = c.RevalidateCache();
  if (fatal.ok()) {
    for (Writer* w : group) {
      w->results.clear();
      for (const WriteRequest& r : *w->requests) {
        const bool skip = ChainBroken(r, w->results, w->results.size());
        w->results.push_back(skip ? WriteResult::ConditionFailed() : ExecuteOne(c, r, fatal));
        if (!fatal.ok()) break;
      }
      if (!fatal.ok()) break;
    }
  }
  // The rows of kept items the group updated, once each (a CONCURRENCY item every batch of the
  // group acquired or released a slot of: one write, not one per batch).
  if (fatal.ok()) fatal = c.WriteDirty();
  if (fatal.ok()) fatal = c.Run(c.commit_, "commit");
  if (fatal.ok()) {
    groups_committed_.fetch_add(1, std::memory_order_relaxed);
    rows_written_.fetch_add(c.TakeRowsWritten(), std::memory_order_relaxed);
  }
  if (!fatal.ok()) {
    (void)c.Run(c.rollback_, "rollback");  // nothing of the group was written
    (void)c.TakeRowsWritten();
    c.Forget();
    fail_all(fatal);
  }
  // The checkpoint SQLite would run here itself, unless an event loop leads: a checkpoint syncs the
  // WAL and the database file, so it waits for the next group the writer thread (or a synchronous
  // writer) leads. A failed one (another process checkpointing) is tried again after a later commit.
  if (c.wal_frames() < kCheckpointFrames) return true;
  if (on_submitter) {
    checkpoint_due_.store(true, std::memory_order_relaxed);
    return true;
  }
  if (absl::Status s = c.Checkpoint(); s.ok()) {
    checkpoint_due_.store(false, std::memory_order_relaxed);
    checkpoints_run_.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

namespace {

absl::StatusOr<WriteResult> ExecuteOne(SqliteItemStore::Connection& conn, const WriteRequest& req,
                                       absl::Status& fatal) {
  if (absl::Status s = internal::ValidateKey(req.key); !s.ok()) return s;
  SqliteItemStore::Connection::CacheEntry* const entry = conn.Cached(req.key);
  Item* const cached = entry != nullptr ? &entry->item : nullptr;
  const Item* cur = cached;
  if (cur == nullptr && req.kind == WriteRequest::Kind::kPut && req.condition.kind() == Condition::Kind::kItemAbsent) {
    absl::StatusOr<bool> inserted = conn.Insert(req.key, req.item);
    if (!inserted.ok()) {
      fatal = inserted.status();
      return inserted.status();
    }
    if (!*inserted) return WriteResult::ConditionFailed();
    if (req.updated_soon) conn.Remember(req.key, req.item);  // its update will not read it back
    return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : req.item};
  }
  if (cur == nullptr && req.kind == WriteRequest::Kind::kPut && req.condition.kind() == Condition::Kind::kAlways) {
    // Nothing to evaluate: the row is replaced whatever it holds — one that cannot be read included
    // (an operator's override of an item edited by hand or corrupted).
    if (absl::Status s = conn.Write(req.key, req.item); !s.ok()) {
      fatal = s;
      return s;
    }
    conn.Refresh(req.key, &req.item);
    return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : req.item};
  }
  absl::StatusOr<std::optional<Item>> current = std::optional<Item>();
  if (cur == nullptr) {
    current = conn.Read(req.key);
    if (!current.ok()) {
      if (current.status().code() != absl::StatusCode::kDataLoss) fatal = current.status();
      return current.status();
    }
    cur = current->has_value() ? &**current : nullptr;
  }
  if (!internal::Evaluate(req.condition, cur)) return WriteResult::ConditionFailed();
  switch (req.kind) {
    case WriteRequest::Kind::kPut:
      if (absl::Status s = conn.Write(req.key, req.item); !s.ok()) {
        fatal = s;
        return s;
      }
      conn.Refresh(req.key, &req.item);
      return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : req.item};
    case WriteRequest::Kind::kUpdate: {
      if (entry != nullptr) {
        // Updated where it is kept: no copy of it, and its row is written once before the commit
        // (WriteDirty), not once per update. An update that fails leaves it as it was (applied whole
        // or not at all), so it is refused alone and the rest of the group stands.
        if (absl::Status s = internal::ApplyUpdateInPlace(entry->item, req.ops); !s.ok()) return s;
        conn.MarkDirty(req.key, *entry);
        return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : entry->item};
      }
      absl::StatusOr<Item> next = internal::ApplyUpdate(cur, req.ops);
      if (!next.ok()) return next.status();
      // Kept as changed, its row written by WriteDirty with whatever later writes of the group do to
      // it; written now only when the writer keeps as many changed items as it can.
      if (SqliteItemStore::Connection::CacheEntry* kept = conn.KeepChanged(req.key, cur != nullptr); kept != nullptr) {
        kept->item = std::move(*next);
        return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : kept->item};
      }
      if (absl::Status s = conn.Write(req.key, *next); !s.ok()) {
        fatal = s;
        return s;
      }
      return WriteResult{true, req.returns == ReturnValues::kNone ? Item{} : std::move(*next)};
    }
    case WriteRequest::Kind::kErase:
      if (absl::Status s = conn.Delete(req.key); !s.ok()) {
        fatal = s;
        return s;
      }
      conn.Refresh(req.key, nullptr);
      return WriteResult{true, {}};
  }
  return absl::InternalError("unknown write kind");
}

}  // namespace

std::vector<absl::StatusOr<WriteResult>> SqliteItemStore::WriteBatch(const std::vector<WriteRequest>& requests) {
  return Submit(requests);
}

absl::StatusOr<WriteResult> SqliteItemStore::Put(const ItemKey& key, const Item& item, const Condition& condition) {
  return std::move(Submit({WriteRequest::Put(key, item, condition)})[0]);
}

absl::StatusOr<WriteResult> SqliteItemStore::Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                                    const Condition& condition, ReturnValues returns) {
  return std::move(Submit({WriteRequest::Update(key, ops, condition, returns)})[0]);
}

absl::StatusOr<WriteResult> SqliteItemStore::Erase(const ItemKey& key, const Condition& condition) {
  return std::move(Submit({WriteRequest::Erase(key, condition)})[0]);
}

absl::StatusOr<QueryPage> SqliteItemStore::Query(const QueryRequest& request) {
  RETURN_IF_ERROR(internal::ValidateQuery(request));
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  sqlite3_stmt* s = request.descending ? conn->query_desc_ : conn->query_asc_;
  auto run = [&]() -> absl::StatusOr<QueryPage> {
    StatementScope scope(s);
    BindText(s, 1, request.pk);
    BindText(s, 3, request.sk_prefix);
    if (auto end = PrefixEnd(request.sk_prefix)) BindText(s, 4, *end);
    if (request.after) BindText(s, 5, *request.after);
    sqlite3_bind_int64(s, 6, clock_.now_epoch_sec());
    sqlite3_bind_int(s, 7, request.limit + 1);  // one extra row tells whether more follow
    QueryPage page;
    for (;;) {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError(rc, "query", conn->db_);
      std::string sk(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), sqlite3_column_bytes(s, 0));
      if (static_cast<int>(page.items.size()) == request.limit) {
        page.last_sk = page.items.back().first;
        break;
      }
      std::string_view text(reinterpret_cast<const char*>(sqlite3_column_text(s, 1)), sqlite3_column_bytes(s, 1));
      absl::StatusOr<Item> item = ItemFromJsonText(text);
      if (!item.ok()) {
        return absl::DataLossError(absl::StrCat("item (", request.pk, ", ", sk, "): ", item.status().message()));
      }
      TakeTtlFromColumn(*item, s, 2);
      page.items.emplace_back(std::move(sk), std::move(*item));
    }
    return page;
  };
  absl::StatusOr<QueryPage> page = run();
  Return(std::move(conn));
  return page;
}

absl::StatusOr<ScanPage> SqliteItemStore::Scan(const ScanRequest& request) {
  RETURN_IF_ERROR(internal::ValidateScan(request));
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  sqlite3_stmt* s = conn->scan_;
  const int64_t now = clock_.now_epoch_sec();
  auto run = [&]() -> absl::StatusOr<ScanPage> {
    StatementScope scope(s);
    BindText(s, 1, request.pk_prefix);
    if (auto end = PrefixEnd(request.pk_prefix)) BindText(s, 2, *end);
    if (request.after) {
      BindText(s, 3, request.after->pk);
      BindText(s, 4, request.after->sk);
    }
    sqlite3_bind_int(s, 5, request.limit + 1);
    ScanPage page;
    int examined = 0;
    ItemKey last;
    for (;;) {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError(rc, "scan", conn->db_);
      ItemKey key{std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), sqlite3_column_bytes(s, 0)),
                  std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 1)), sqlite3_column_bytes(s, 1))};
      if (examined == request.limit) {
        page.last_key = last;
        break;
      }
      ++examined;
      last = key;
      const bool expired = sqlite3_column_type(s, 3) != SQLITE_NULL && sqlite3_column_int64(s, 3) <= now;
      if (expired || key.sk.compare(0, request.sk_prefix.size(), request.sk_prefix) != 0) continue;
      std::string_view text(reinterpret_cast<const char*>(sqlite3_column_text(s, 2)), sqlite3_column_bytes(s, 2));
      absl::StatusOr<Item> item = ItemFromJsonText(text);
      if (!item.ok()) {
        return absl::DataLossError(absl::StrCat("item (", key.pk, ", ", key.sk, "): ", item.status().message()));
      }
      TakeTtlFromColumn(*item, s, 3);
      page.items.push_back({std::move(key), std::move(*item)});
    }
    return page;
  };
  absl::StatusOr<ScanPage> page = run();
  Return(std::move(conn));
  return page;
}

SqliteItemStore::WalWrites SqliteItemStore::wal_writes() {
  const internal::WalWriteCounts counts = internal::CoalescingWalWriteCounts();
  return {counts.requested, counts.issued};
}

const char* SqliteItemStore::coalescing_vfs_name() { return internal::CoalescingWalVfsName(); }

bool SqliteItemStore::SweepClockAgrees() {
  const int64_t mono = clock_.now_monotonic_ms();
  const int64_t offset = clock_.now_epoch_ms() - mono;
  absl::MutexLock lock(&clock_mu_);
  if (std::abs(offset - trusted_offset_ms_) <= kClockStepMs) {
    trusted_offset_ms_ = offset;  // follows a clock slewed a little at a time
    if (step_offset_ms_) {
      spdlog::info("sqlite store: the wall clock is back where it was; expired items are swept again");
      step_offset_ms_.reset();
    }
    return true;
  }
  if (!step_offset_ms_ || std::abs(offset - *step_offset_ms_) > kClockStepMs) {
    spdlog::warn(
        "sqlite store: the wall clock stepped {} ms since the store was opened (or last swept), while the monotonic "
        "clock did not; expired items are not deleted until it steps back, or stays for {} s",
        offset - trusted_offset_ms_, kKeepClockStepAfterMs / 1000);
    step_offset_ms_ = offset;
    step_seen_at_mono_ms_ = mono;
    return false;
  }
  if (mono - step_seen_at_mono_ms_ < kKeepClockStepAfterMs) return false;
  spdlog::warn(
      "sqlite store: the wall clock's step of {} ms has lasted {} s: taken as its time, expired items are swept",
      offset - trusted_offset_ms_, kKeepClockStepAfterMs / 1000);
  trusted_offset_ms_ = offset;
  step_offset_ms_.reset();
  return true;
}

absl::StatusOr<int> SqliteItemStore::SweepExpired() {
  if (options_.read_only) return 0;
  if (!SweepClockAgrees()) return 0;
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  // Bounded batches keep each write transaction (and the lock it holds) short.
  const std::string sql =
      absl::StrCat("DELETE FROM items WHERE (pk, sk) IN (SELECT pk, sk FROM items WHERE ttl IS NOT NULL AND ttl <= ",
                   clock_.now_epoch_sec(), " LIMIT 500)");
  int total = 0;
  absl::Status status;
  for (;;) {
    status = conn->Exec(sql.c_str(), "sweep");
    if (!status.ok()) break;
    const int n = sqlite3_changes(conn->db_);
    total += n;
    if (n < 500) break;
  }
  Return(std::move(conn));
  if (!status.ok()) return status;
  return total;
}

absl::Status SqliteItemStore::CheckIntegrity() {
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  std::string first_problem;
  int rc = sqlite3_exec(
      conn->db_, "PRAGMA integrity_check",
      [](void* out, int, char** values, char**) {
        auto* s = static_cast<std::string*>(out);
        if (s->empty() && values[0] != nullptr) *s = values[0];
        return 0;
      },
      &first_problem, nullptr);
  absl::Status status = rc == SQLITE_OK ? absl::OkStatus() : SqliteError(rc, "integrity check", conn->db_);
  Return(std::move(conn));
  RETURN_IF_ERROR(status);
  if (first_problem != "ok") return absl::DataLossError(absl::StrCat("sqlite integrity check: ", first_problem));
  return absl::OkStatus();
}

absl::Status SqliteItemStore::CheckWritable(const std::string& path, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  const std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) return SqliteError(rc, absl::StrCat("open '", path, "' for writing"), db.get());
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), busy_timeout_ms);
  // SQLite opens a file this user may not write read-only, without an error.
  if (sqlite3_db_readonly(db.get(), "main") == 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("sqlite store '", path, "' is read-only for this user (store is read-only)"));
  }
  if (int begin = sqlite3_exec(db.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr); begin != SQLITE_OK) {
    return SqliteError(begin, "take the write lock", db.get());
  }
  if (int end = sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr); end != SQLITE_OK) {
    return SqliteError(end, "give the write lock back", db.get());
  }
  return absl::OkStatus();
}

void SqliteItemStore::SweepLoop() {
  const int64_t tick_ms = std::min<int64_t>(kFileCheckMs, options_.sweep_interval_ms);
  int64_t since_sweep_ms = 0;
  while (true) {
    {
      absl::MutexLock lock(&sweep_mu_);
      if (sweep_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(tick_ms))) return;  // stopping
    }
    const int elsewhere = FileElsewhere();
    const bool there = elsewhere < 0;
    if (!there) gone_file_.store(elsewhere, std::memory_order_relaxed);
    if (file_gone_.exchange(!there) != !there) {
      if (there) {
        spdlog::warn("sqlite: the store file {} and its -wal and -shm are as opened again: serving again",
                     options_.path);
      } else {
        spdlog::error("sqlite: {}", std::string(FileGone().message()));
      }
    }
    since_sweep_ms += tick_ms;
    if (!there || since_sweep_ms < options_.sweep_interval_ms) continue;
    since_sweep_ms = 0;
    // A failed sweep is retried next period; reads already hide expired items.
    if (absl::StatusOr<int> swept = SweepExpired(); !swept.ok()) {
      spdlog::warn("sqlite: expired items not swept: {}", swept.status().ToString());
    }
  }
}

}  // namespace toolgate::store
