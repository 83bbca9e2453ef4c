#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/async_item_store.h"
#include "toolgate/store/item_store.h"

struct sqlite3;

namespace toolgate::store {

// The embedded default backend: one SQLite file in WAL mode, shared safely by any number of threads
// and processes on one host. Each item is a row (pk, sk, attrs as JSON text, ttl), so an operator can
// read the store with the sqlite3 shell. A conditional write is one `BEGIN IMMEDIATE` transaction
// that reads the row, evaluates the condition and writes, so it is atomic across processes.
//
// Thread-safe. Connections are pooled: each concurrent caller gets its own. Expired items are hidden
// from reads at once and deleted by a background sweeper (when `sweep_interval_ms` > 0).
//
// Also the asynchronous port (AsyncItemStore): a read runs at once on the caller's thread, on a
// pooled reader connection (WAL readers never wait for the writer); a write batch joins the same
// group-commit queue as the synchronous writes, and a writer thread of the store's own (started
// at the first one) commits the groups that an asynchronous batch leads and calls their
// completions. Exception: with `synchronous_full = false`, a batch submitted while nothing is
// committing or queued, to a store where batches have not lately been meeting each other, is
// committed by the submitting thread itself, and its completion runs there before AsyncWriteBatch
// returns (no fsync is waited for; WAL checkpoints stay on the writer thread). The destructor
// commits what is queued and calls every completion before it returns.
//
// Status codes beyond ItemStore's: Open returns kDataLoss for a file that is not a SQLite database,
// kUnavailable for one that cannot be opened; writes to a read-only store return kFailedPrecondition.
class SqliteItemStore final : public ItemStore, public AsyncItemStore {
 public:
  struct Options {
    std::string path;              // the database file; its directory must exist
    bool read_only = false;        // open for reading only (e.g. `ledger verify` on a stopped server)
    bool synchronous_full = true;  // fsync at every commit (power-loss durable); false: WAL NORMAL
    int busy_timeout_ms = 5000;    // how long a writer waits for another's lock before kUnavailable
    // Pages within the file's first mmap_bytes are read through a memory map (no read call per page
    // miss); those touched count in the process's resident set, as file-backed pages. 0: none.
    int64_t mmap_bytes = 0;
    int sweep_interval_ms = 60'000;  // background TTL sweep period; 0 disables the sweeper thread
    // Write a commit's WAL frames with one write instead of two per page (src/store/sqlite_wal_vfs.h);
    // what reaches the disk, and when it is synced, is the same either way.
    bool coalesce_wal_writes = true;
  };

  // `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<SqliteItemStore>> Open(const Options& options, const Clock& clock);
  ~SqliteItemStore() override;

  SqliteItemStore(const SqliteItemStore&) = delete;
  SqliteItemStore& operator=(const SqliteItemStore&) = delete;

  absl::StatusOr<std::optional<Item>> Get(const ItemKey& key) override;
  absl::StatusOr<WriteResult> Put(const ItemKey& key, const Item& item, const Condition& condition) override;
  using ItemStore::Update;
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops, const Condition& condition,
                                     ReturnValues returns) override;
  absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) override;
  absl::StatusOr<QueryPage> Query(const QueryRequest& request) override;
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request) override;
  std::vector<absl::StatusOr<WriteResult>> WriteBatch(const std::vector<WriteRequest>& requests) override;
  std::string_view backend_name() const override { return "sqlite"; }

  void AsyncGet(ItemKey key, GetCompletion done) override;
  void AsyncQuery(QueryRequest request, QueryCompletion done) override;
  void AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) override;
  bool ReadsAreLocal() const override { return true; }
  void WaitIdle() override;

  // Write transactions committed so far (each a group of one or more batches).
  int64_t groups_committed() const { return groups_committed_.load(std::memory_order_relaxed); }
  // Item rows its committed write transactions wrote (put, inserted or updated; not deleted). An
  // item updated by several batches of one group is one row write (see CommitGroup).
  int64_t rows_written() const { return rows_written_.load(std::memory_order_relaxed); }
  // WAL checkpoints the store's writer has run (it replaces SQLite's automatic one; see CommitGroup).
  int64_t checkpoints_run() const { return checkpoints_run_.load(std::memory_order_relaxed); }

  // The WAL writes SQLite asked for, and the writes that carried them, since the process started,
  // over every store of the process opened with `coalesce_wal_writes` (src/store/sqlite_wal_vfs.h).
  struct WalWrites {
    int64_t requested = 0;
    int64_t issued = 0;
  };
  static WalWrites wal_writes();
  // The name of that VFS for sqlite3_open_v2 (tests open raw connections through it), or nullptr
  // when SQLite has no default VFS to wrap.
  static const char* coalescing_vfs_name();

  // Deletes expired items now; returns how many. Expiry is this host's wall clock, and deletion is
  // for every instance sharing the file: so nothing is deleted while that clock stands stepped away
  // (by more than kClockStepMs) from where the monotonic clock says it should be since the store was
  // opened — a clock jumped a day ahead for a few seconds must not delete the fleet's live intents.
  // A step that lasts kKeepClockStepAfterMs is taken as the clock's new time, and sweeping resumes.
  // Either is logged.
  absl::StatusOr<int> SweepExpired();
  static constexpr int64_t kClockStepMs = 2'000;
  static constexpr int64_t kKeepClockStepAfterMs = 10 * 60'000;

  // Runs SQLite's integrity check; kDataLoss naming the first problem when it fails.
  absl::Status CheckIntegrity();

  // Whether this process could write the store at `path` (an existing file; nothing is created or
  // written): opened for writing, the write lock taken and given back at once. kFailedPrecondition
  // when the file, its directory (the -wal and -shm files) or the volume is read-only for this user;
  // kUnavailable when another process holds the lock longer than `busy_timeout_ms`.
  static absl::Status CheckWritable(const std::string& path, int busy_timeout_ms);

  // Whether the file at `path` is still the one opened, and its `-wal` and `-shm` files too (each as
  // it was once the store was opened; one connection is kept open for the store's life, so SQLite
  // itself never removes them meanwhile). The file removed (its directory deleted, a volume
  // unmounted) or replaced, writes would go to a file no other process — nor this one after a
  // restart — ever reads; the -wal or -shm removed, every process that opens the store afterwards
  // works on a log of its own, unseen by those already running (SQLite's split brain). From the
  // moment the sweeper sees it (every kFileCheckMs) every operation fails kUnavailable naming the
  // file, and /readyz says store_unavailable, until it is back.
  bool FileStillOpened() const;
  static constexpr int64_t kFileCheckMs = 2'000;

  class Connection;  // one sqlite3 handle with its prepared statements (internal)

 private:
  SqliteItemStore(Options options, const Clock& clock);

  absl::StatusOr<std::unique_ptr<Connection>> Acquire();
  void Return(std::unique_ptr<Connection> conn);

  // Group commit (as LevelDB's write path): writers queue; the writer at the front commits the
  // requests of everyone queued behind it in one transaction, each request decided by its own
  // condition in queue order, and wakes them. Threads of one process never contend for SQLite's lock
  // (whose busy handler sleeps), and one commit (one fsync) serves many writes.
  //
  // A group's leader is always the owner of the entry at the front of the queue: the thread of a
  // synchronous Submit, the writer thread for an asynchronous batch, or the thread that submitted an
  // asynchronous batch to an empty queue (`on_submitter`, NORMAL only). One group is committed at a
  // time, since the front leaves the queue only once its group is committed.
  struct Writer;
  std::vector<absl::StatusOr<WriteResult>> Submit(const std::vector<WriteRequest>& requests);
  std::vector<Writer*> TakeGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Removes the committed `group` from the queue, wakes its synchronous writers and the next leader;
  // returns its asynchronous writers, whose completions the caller runs once the lock is released.
  std::vector<Writer*> FinishGroup(const std::vector<Writer*>& group, const Writer* self)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Commits `group` (led by `self`, or by the writer thread when null), takes it off the queue and
  // runs its asynchronous writers' completions.
  void CommitAndFinish(const std::vector<Writer*>& group, const Writer* self) ABSL_LOCKS_EXCLUDED(queue_mu_);
  // `on_submitter`: led by the thread that submitted its asynchronous batch (an event loop), which
  // must not wait: it leaves a due checkpoint to the next leader, and returns false (nothing done)
  // when another process holds the database's write lock. True: every writer of `group` has results.
  bool CommitGroup(const std::vector<Writer*>& group, bool on_submitter);
  bool AsyncLeads() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  void WriterLoop();

  void SweepLoop();

  const Options options_;
  const Clock& clock_;

  absl::Mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> pool_ ABSL_GUARDED_BY(pool_mu_);

  std::unique_ptr<Connection> writer_;  // used by the group leader only; its page cache stays warm
  absl::Mutex queue_mu_;
  std::deque<Writer*> writers_ ABSL_GUARDED_BY(queue_mu_);
  bool writer_stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::CondVar writer_cv_;    // signalled when an asynchronous batch reaches the front, and at stop
  std::thread writer_thread_;  // started under queue_mu_ by the first AsyncWriteBatch; joined by the destructor
  int contention_ ABSL_GUARDED_BY(queue_mu_) = 0;             // see AsyncWriteBatch
  int64_t async_outstanding_ ABSL_GUARDED_BY(queue_mu_) = 0;  // batches whose completion has not returned
  absl::CondVar idle_cv_;                                     // signalled when async_outstanding_ drops to 0
  std::atomic<int64_t> groups_committed_{0};
  std::atomic<int64_t> rows_written_{0};
  std::atomic<int64_t> checkpoints_run_{0};
  std::atomic<bool> checkpoint_due_{false};  // the WAL is past kCheckpointFrames and a loop led its last commit

  // Whether the wall clock may be trusted to delete by (SweepExpired).
  bool SweepClockAgrees();

  absl::Mutex sweep_mu_;
  bool stopping_ ABSL_GUARDED_BY(sweep_mu_) = false;  // the sweeper waits on it (Mutex::Await)
  // Wall time minus monotonic time (ms): the one the sweep trusts, and a different one seen since
  // `step_seen_at_mono_ms_` (none: 0 and nullopt).
  absl::Mutex clock_mu_;
  int64_t trusted_offset_ms_ ABSL_GUARDED_BY(clock_mu_) = 0;
  std::optional<int64_t> step_offset_ms_ ABSL_GUARDED_BY(clock_mu_);
  int64_t step_seen_at_mono_ms_ ABSL_GUARDED_BY(clock_mu_) = 0;
  std::thread sweeper_;
  // The opened files' identities (FileStillOpened): the store, its -wal and its -shm (one not there
  // once opened: no path, not checked), and whether the sweeper last found one elsewhere, which.
  struct FileIdentity {
    std::string path;
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  std::array<FileIdentity, 3> files_;
  std::atomic<bool> file_gone_{false};
  std::atomic<int> gone_file_{0};       // an index into files_
  std::unique_ptr<Connection> keeper_;  // read-write stores: holds the -wal and -shm open for the store's life
  int FileElsewhere() const;            // the index of the first file not as opened, or -1
  absl::Status FileGone() const;
};

}  // namespace toolgate::store
