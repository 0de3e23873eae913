// CatalogFollower: keeps one daemon's catalog in step with its store by
// reading the store's ChangeLog. A daemon whose catalog is its own (a Ceph
// pool shared by hosts, each with a catalog in its run dir) learns of the
// backups another host adds or prunes at its next Poll, reading only the
// changes and the records they name, never listing the store. Lists the
// store (Store::ReconcileCatalog) only at Resync: the daemon's start, and
// a gap in the log (trimmed past this reader, or a damaged change).
//
// A catalog several daemons share (a local store's catalog.db) is already
// up to date; applying a change to it again changes nothing.
//
// Thread safety: Resync and Poll from one thread at a time (the daemon's
// refresher); stats() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "backend/status.h"
#include "backend/store/catalog.h"
#include "backend/store/store.h"

namespace ckptfs {

class CatalogFollower {
 public:
  CatalogFollower(Store& store, Catalog& catalog)
      : store_(store), catalog_(catalog) {}

  // Makes the catalog list exactly the store's backups and follows the log
  // from there. The head is read before the store is listed, so a change
  // made meanwhile is applied by the next Poll (again, harmlessly).
  Status Resync();
  // Applies the changes since the last Resync or Poll. A change whose record
  // cannot be read (the store not answering) is retried at the next Poll;
  // after kMaxRetries polls it is skipped, so one damaged record cannot stop
  // the feed (the record stays unlisted, as ListBackups skips it).
  Status Poll();

  struct Stats {
    uint64_t position = 0;  // the last change applied
    uint64_t applied = 0;   // changes applied since the start
    uint64_t resyncs = 0;   // full listings of the store
    uint64_t skipped = 0;   // changes given up on
  };
  Stats stats() const {
    return {position_.load(), applied_.load(), resyncs_.load(),
            skipped_.load()};
  }

  static constexpr int kMaxRetries = 12;

 private:
  Status Apply(const Change& c);

  Store& store_;
  Catalog& catalog_;
  std::atomic<uint64_t> position_{0}, applied_{0}, resyncs_{0}, skipped_{0};
  int failures_ =
      0;  // consecutive failed Applies of the change after position_
};

}  // namespace ckptfs
