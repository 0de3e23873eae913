// ObjectStore: the store's view of its backend (a local directory, later Ceph
// RADOS): immutable objects named by keys such as
// "chunks/ab/abcd..." or "backups/<uuid>/<checkpoint>/backup.json".
//
// Contract:
// - Put is atomic and durable on return: a reader (or a crash) sees the
//   whole new object or no object, never a prefix. A failed Put leaves no
//   object and nothing else behind. Putting an existing key replaces it
//   atomically (chunks never change; a retried backup rewrites a manifest).
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

  // Deferred durability for bulk writers (a backup's chunks): the object
  // stays invisible (absent to Get/Exists/Touch/List) until Commit(), which
  // makes every deferred object durable and then visible. A crash before
  // Commit leaves nothing behind but temporaries; none is ever visible torn.
  // Default: a plain Put.
  virtual Status PutDeferred(const std::string& key,
                             std::span<const std::byte> data) {
    return Put(key, data);
  }
  virtual Status Commit() { return Status::Ok(); }

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
