// ChangeLog: the store's log of complete backups added and removed, so that
// every daemon sharing a store (hosts on one Ceph pool, each with its own
// catalog) learns of another's backups within seconds, by reading only what
// changed instead of listing the store.
//
// Layout (docs/FORMAT.md section 9):
//   changes/<seq>       one change: {"seq","change":"added"|"removed",
//                       "domain_uuid","checkpoint","time"}; <seq> is 20
//                       decimal digits from 1, so that keys sort by number
//   changes/trimmed     decimal: every change at or below it may be gone
//
// Why sequence numbers claimed with Create, not a log object appended to:
// Create is the one atomic primitive every ObjectStore has (an exclusive
// create in a directory, an exclusive write_full in RADOS). Of two writers
// racing for the next number one gets kAlreadyExists and takes the next
// one, so the numbers in use are always one run (trimmed..head], and a
// reader finds the head by probing Exists, O(log n) from a stale hint.
//
// A change is written after what it announces (the record after PutBackup,
// the record's removal in DeleteBackup), so a reader that sees the change
// finds the record (or its absence). A writer that dies between the two
// leaves a change unannounced: the other hosts see it at their next start
// or reindex, which list the store. Appending is best effort for the same
// reason: the backup itself is complete either way.
//
// Readers keep their position in memory. A position that is no longer in
// the log (trimmed past it, or a store made anew) is a gap: the reader lists
// the store once (Store::ReconcileCatalog) and goes on from the head.
//
// Thread safety: thread-safe; several processes and hosts may share a log.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/status.h"
#include "backend/store/object_store.h"

namespace ckptfs {

struct Change {
  enum class Kind { kAdded, kRemoved };
  uint64_t seq = 0;
  Kind kind = Kind::kAdded;
  std::string domain_uuid, checkpoint;
  int64_t time = 0;  // epoch seconds when it was appended
  bool operator==(const Change&) const = default;
};

std::string SerializeChange(const Change& c);
// kIoError naming `key` for anything SerializeChange cannot have written,
// or a seq other than the key's.
Result<Change> ParseChange(const std::string& key, std::string_view text);

class ChangeLog {
 public:
  explicit ChangeLog(std::shared_ptr<ObjectStore> objects)
      : objects_(std::move(objects)) {}

  static std::string Key(uint64_t seq);

  // Appends a change (seq and time are filled in); returns its seq.
  Result<uint64_t> Append(Change::Kind kind, const std::string& domain_uuid,
                          const std::string& checkpoint);
  // The highest seq in the log; 0 if there is none.
  Result<uint64_t> Head();

  struct Since {
    std::vector<Change> changes;  // after `after`, in order
    // `after` is no longer in the log, or a change cannot be read: the
    // reader must list the store instead.
    bool gap = false;
  };
  // At most `max` changes after `after` (0: from the beginning).
  Result<Since> Read(uint64_t after, size_t max = 1000);

  // What gc keeps (seconds): a daemon stopped for longer finds a gap at
  // its next Poll and lists the store once.
  static constexpr int64_t kRetention = 7 * 86400;

  // gc: removes the changes appended before `cutoff` (epoch seconds), but
  // never the newest (the head must stay findable). Returns how many it
  // removed (dry run: would remove).
  Result<uint64_t> Trim(int64_t cutoff, bool dry_run);

 private:
  Result<bool> Has(uint64_t seq);
  Result<uint64_t> Floor();
  // hint_ = max(hint_, seq), racing other threads.
  void RaiseHint(uint64_t seq);

  const std::shared_ptr<ObjectStore> objects_;
  // The highest seq this process saw: where the next search for the head
  // starts.
  std::atomic<uint64_t> hint_{0};
};

}  // namespace ckptfs
