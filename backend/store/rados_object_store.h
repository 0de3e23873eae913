// RadosObjectStore: an ObjectStore in a Ceph RADOS pool (librados C++); key
// "a/b/c" is the object "a/b/c" in the pool, in an optional RADOS namespace.
//
// RADOS already gives what LocalObjectStore builds from files, so this store
// uses it instead of rebuilding it:
// - Put is one write_full (atomic: readers see the old or the new object) and
//   durable when the OSDs ack it, so no temporaries and no fsync. Create adds
//   create(exclusive) to the same operation: of two racing Creates one gets
//   -EEXIST (kAlreadyExists).
// - The object's age is the xattr "ckptfs.mtime" (decimal epoch seconds),
//   written in the same operation as the data by Put and Create, and by
//   Touch in an operation that asserts the object exists. (The OSD's own
//   mtime cannot be set without a data write.)
// - DeleteIfUnusedSince is ONE operation: cmpxattr(cutoff > mtime) + remove.
//   The OSD runs an object's operations one at a time, so a Touch lands
//   either before (the compare fails, the object stays) or after (it finds
//   nothing and reports false). An object without the xattr (written by
//   another tool) counts as old.
// - Quarantine copies the bytes to ".quarantine/<key>.<nonce>.<n>" (no key may
//   start with '.', and List skips such names) and then removes the key.
// - Batch (rados_batch.cc) sends its Puts as asynchronous operations, at
//   most 16 in flight; Commit waits for every ack. Each object is visible
//   once acked, before Commit (harmless: chunks are named by content).
//
// Errors: -ENOENT kNotFound; -EDQUOT (pool quota reached) and -ENOSPC (pool
// or cluster full) kNoSpace, saying which (the IoCtx is "full try", so the
// OSD answers a write that would grow a full pool at once instead of the
// client waiting for space); -EACCES/-EPERM kPermission (the
// client key's caps); a timeout (rados_osd_op_timeout / rados_mon_op_timeout,
// so a stopped OSD gives an error instead of a hang) and everything else
// kIoError, each with the pool and object in the message.
//
// Thread safety: all methods may be called concurrently from any thread (a
// librados IoCtx's operations are thread-safe) and from several processes
// and hosts on one pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <rados/librados_fwd.hpp>
#include <string>
#include <vector>

#include "backend/store/object_store.h"

namespace ckptfs {

// How to reach the cluster. Empty fields leave librados its defaults: the
// config from $CEPH_CONF or /etc/ceph/ceph.conf, the id "admin", the keyring
// the config names.
struct CephOptions {
  std::string conf;  // --ceph-conf: path of a ceph.conf
  std::string id;    // --ceph-id: client id without "client." ("ckptfs")
  // Bounds every operation (rados_osd_op_timeout, rados_mon_op_timeout,
  // unless the config sets them), so an OSD or mon that is gone gives
  // kIoError instead of a hang.
  int op_timeout_seconds = 30;
};

class RadosObjectStore : public ObjectStore {
 public:
  // Connects to the cluster and opens `pool` (namespace `ns`, "" for the
  // default). kNotFound if the pool does not exist; kIoError if the
  // cluster does not answer within the timeout.
  static Result<std::unique_ptr<RadosObjectStore>> Open(
      const std::string& pool, const std::string& ns,
      const CephOptions& options);
  ~RadosObjectStore() override;
  RadosObjectStore(const RadosObjectStore&) = delete;
  RadosObjectStore& operator=(const RadosObjectStore&) = delete;

  Status Put(const std::string& key, std::span<const std::byte> data) override;
  Status Create(const std::string& key,
                std::span<const std::byte> data) override;
  Result<std::vector<std::byte>> Get(const std::string& key) override;
  Result<size_t> GetInto(const std::string& key,
                         std::span<std::byte> buf) override;
  Result<bool> Exists(const std::string& key) override;
  Result<std::vector<std::string>> List(const std::string& prefix) override;
  Status Delete(const std::string& key) override;
  Result<bool> Touch(const std::string& key) override;
  Result<int64_t> ModifiedTime(const std::string& key) override;
  Result<bool> DeleteIfUnusedSince(const std::string& key,
                                   int64_t cutoff) override;
  Status Quarantine(const std::string& key) override;
  std::unique_ptr<Batch> NewBatch() override;
  // "rados:POOL" or "rados:POOL/NAMESPACE".
  std::string location() const override { return location_; }

 private:
  RadosObjectStore(std::unique_ptr<librados::Rados> cluster,
                   std::unique_ptr<librados::IoCtx> io, std::string location,
                   uint64_t nonce);
  class AioBatch;
  Status Write(const std::string& key, std::span<const std::byte> data,
               bool exclusive);
  // Adds the write of a whole object (with its age xattr) to `op`.
  static void AddWrite(librados::ObjectWriteOperation& op,
                       std::span<const std::byte> data, bool exclusive);
  // The Status for librados return value `r` (< 0) of `what` on `key`.
  Status Error(int r, const std::string& what, const std::string& key) const;

  std::unique_ptr<librados::Rados> cluster_;
  std::unique_ptr<librados::IoCtx> io_;
  const std::string location_;
  const uint64_t nonce_;  // random per instance: quarantine names never clash
  std::atomic<uint64_t> next_bad_{0};
};

// The name of the xattr that holds an object's age (docs/FORMAT.md).
inline constexpr char kRadosMtimeXattr[] = "ckptfs.mtime";
// The prefix of quarantined objects' names (never a valid key).
inline constexpr char kRadosQuarantinePrefix[] = ".quarantine/";

}  // namespace ckptfs
