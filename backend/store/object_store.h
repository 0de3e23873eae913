// ObjectStore: the store's view of its backend (a local directory, later Ceph
// RADOS): immutable objects named by keys such as
// "chunks/ab/abcd..." or "backups/<uuid>/<checkpoint>/backup.json".
//
// Contract:
// - Put is atomic and durable on return: a reader (or a crash) sees the
//   whole new object or no object, never a prefix. A failed Put leaves no
//   object and nothing else behind. Putting an existing key replaces it
//   atomically (locks and config; chunks never change, so a rewrite is the
//   same bytes; manifests and records use Create).
// - Get/Delete report kNotFound when the object is absent.
// - List returns every key that starts with `prefix` (at any depth), sorted,
//   never an in-progress temporary.
// - Keys are validated by ValidateObjectKey (kInvalidArgument otherwise),
//   so a key can never name something outside the store.
//
// Thread safety: every method may be called concurrently from any thread,
// also by several processes on one store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  virtual Status Put(const std::string& key,
                     std::span<const std::byte> data) = 0;
  // Put that never replaces: kAlreadyExists if the key exists (of two
  // racing Creates of one key, one fails). Manifests and records, which
  // must never change once written.
  virtual Status Create(const std::string& key,
                        std::span<const std::byte> data) = 0;
  virtual Result<std::vector<std::byte>> Get(const std::string& key) = 0;
  // Get into a caller's buffer, for readers that know how big an object
  // should be (chunks): returns the object's size and, when it fits, its
  // bytes in buf's first `size` bytes; a larger object leaves buf
  // unspecified. Saves an allocation and a copy per read. Default: Get.
  virtual Result<size_t> GetInto(const std::string& key,
                                 std::span<std::byte> buf);
  virtual Result<bool> Exists(const std::string& key) = 0;
  virtual Result<std::vector<std::string>> List(const std::string& prefix) = 0;
  virtual Status Delete(const std::string& key) = 0;
  // Restarts an existing object's age (it is in use now); false if it does
  // not exist. A backup touches every chunk it reuses, and gc keeps objects
  // touched after its cutoff, so gc never deletes a chunk a running backup
  // has just decided to reference.
  virtual Result<bool> Touch(const std::string& key) = 0;
  // Seconds since the epoch of the object's last Put or Touch.
  virtual Result<int64_t> ModifiedTime(const std::string& key) = 0;

  // Deletes the object only if nobody Put or Touched it at or after
  // `cutoff` (epoch seconds), atomically with respect to Touch: a Touch
  // either lands before (the object stays) or reports false (the toucher
  // writes it again). Returns true if it deleted the object, false if it
  // was recent or absent. gc's delete, so that a chunk a running backup
  // reuses is never lost between gc's check and its delete.
  virtual Result<bool> DeleteIfUnusedSince(const std::string& key,
                                           int64_t cutoff) = 0;

  // Moves a damaged object out of the way: it becomes absent (so the next
  // writer of that key stores it afresh, and every reader of the same bytes
  // heals), while its contents are kept for inspection under a name no key
  // can have (List does not return it). kNotFound if absent.
  virtual Status Quarantine(const std::string& key) = 0;

  // Removes what crashed writers left behind and nobody touched since
  // `cutoff` (epoch seconds): temporaries of a local directory, nothing in
  // stores whose writes are atomic. Returns how many it removed. Default: 0.
  virtual Result<uint64_t> RemoveStaleTemporaries(int64_t /*cutoff*/) {
    return uint64_t{0};
  }

  // A batch of deferred writes owned by one writer (a backup): its objects
  // stay invisible (absent to Get/Exists/Touch/List) until Commit(), which
  // makes every object of this batch, and only of this batch, durable and
  // then visible. A crash or a batch destroyed before Commit leaves nothing
  // visible (at most temporaries that RemoveStaleTemporaries removes). A
  // failed Commit may have made some of the batch visible: each such object
  // is whole, and the batch must not be used further. A batch must not
  // outlive its store. Default: a plain Put per object.
  class Batch {
   public:
    virtual ~Batch() = default;
    virtual Status Put(const std::string& key,
                       std::span<const std::byte> data) = 0;
    virtual Status Commit() = 0;
  };
  virtual std::unique_ptr<Batch> NewBatch();

  // Where the objects live, for messages ("/var/lib/ckptfs/store",
  // "rados:backups").
  virtual std::string location() const = 0;
};

// A key is one or more '/'-separated components; a component is non-empty,
// does not start with '.' (so "." and ".." are impossible and names starting
// with '.' stay free for temporaries) and uses only [A-Za-z0-9._-] and
// ':' '+' '@'. No leading or trailing '/'. At most 1024 bytes.
Status ValidateObjectKey(std::string_view key);

// A List prefix: "" (everything) or a key prefix obeying the character rules
// above, possibly ending with '/' or in the middle of a component.
Status ValidateObjectPrefix(std::string_view prefix);

// Turns an arbitrary name (a checkpoint or disk name) into one key component:
// the characters [A-Za-z0-9._:@-] stay (except a leading '.'), every other
// byte becomes "+XX" (two upper-case hex digits). Injective, so two names
// never share a key. REQUIRES: !name.empty().
std::string EncodeKeyComponent(std::string_view name);

// Inverse of EncodeKeyComponent; false on anything it cannot have produced.
bool DecodeKeyComponent(std::string_view component, std::string* name);

}  // namespace ckptfs
