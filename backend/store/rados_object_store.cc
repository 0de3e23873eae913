// RadosObjectStore: the mapping of the ObjectStore contract onto RADOS
// operations (rados_object_store.h).
#include "backend/store/rados_object_store.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <rados/librados.hpp>
#include <random>
#include <system_error>
#include <utility>

namespace ckptfs {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ceph::bufferlist Bytes(std::span<const std::byte> data) {
  // A copy, not a static buffer over the caller's bytes: after a timeout
  // the messenger may still hold the message while the caller has moved on.
  ceph::bufferlist bl;
  bl.append(reinterpret_cast<const char*>(data.data()),
            static_cast<unsigned>(data.size()));
  return bl;
}

ceph::bufferlist Text(const std::string& s) {
  ceph::bufferlist bl;
  bl.append(s);
  return bl;
}

std::string Strerror(int r) { return std::strerror(r < 0 ? -r : r); }

}  // namespace

Result<std::unique_ptr<RadosObjectStore>> RadosObjectStore::Open(
    const std::string& pool, const std::string& ns,
    const CephOptions& options) {
  const std::string location = "rados:" + pool + (ns.empty() ? "" : "/" + ns);
  const std::string who =
      "client." + (options.id.empty() ? std::string("admin") : options.id);
  auto cluster = std::make_unique<librados::Rados>();
  int r = cluster->init(options.id.empty() ? nullptr : options.id.c_str());
  if (r < 0) {
    return InvalidArgument("ceph id " + options.id + ": " + Strerror(r));
  }
  // nullptr: $CEPH_CONF, then the default places (/etc/ceph/ceph.conf).
  r = cluster->conf_read_file(options.conf.empty() ? nullptr
                                                   : options.conf.c_str());
  if (r < 0) {
    return InvalidArgument("ceph config " +
                           (options.conf.empty()
                                ? std::string("($CEPH_CONF or /etc/ceph)")
                                : options.conf) +
                           " cannot be read: " + Strerror(r));
  }
  // Ceph's default is to wait forever (0); a timeout the config sets wins.
  const std::string timeout = std::to_string(options.op_timeout_seconds);
  for (const char* name : {"rados_osd_op_timeout", "rados_mon_op_timeout"}) {
    std::string value;
    if (cluster->conf_get(name, value) == 0 && value != "0" &&
        value.find_first_not_of("0.") != std::string::npos) {
      continue;
    }
    r = cluster->conf_set(name, timeout.c_str());
    if (r < 0) return Internal(std::string("conf_set ") + name + " failed");
  }
  r = cluster->conf_set("client_mount_timeout", timeout.c_str());
  if (r < 0) return Internal("conf_set client_mount_timeout failed");
  r = cluster->connect();
  if (r < 0) {
    return IoError("cannot connect to the Ceph cluster as " + who + " (" +
                   Strerror(r) +
                   "; check --ceph-conf, --ceph-id and the keyring)");
  }
  auto io = std::make_unique<librados::IoCtx>();
  r = cluster->ioctx_create(pool.c_str(), *io);
  if (r == -ENOENT) {
    return NotFound("the Ceph pool " + pool +
                    " does not exist; create it first");
  }
  if (r < 0) {
    return IoError("opening Ceph pool " + pool + ": " + Strerror(r));
  }
  io->set_namespace(ns);
  // Without this a client pauses every write to a pool marked full (quota
  // or cluster) until the flag clears, and our op timeout turns that into
  // an unexplained timeout. With it the OSD answers at once: writes that
  // would grow the pool get -EDQUOT (quota) or -ENOSPC; deletes, Touch and
  // same-size rewrites still go through, so gc and prune can free space.
  io->set_pool_full_try();
  std::random_device rd;
  const uint64_t nonce = (uint64_t{rd()} << 32) ^ rd();
  return std::unique_ptr<RadosObjectStore>(
      new RadosObjectStore(std::move(cluster), std::move(io), location, nonce));
}

RadosObjectStore::RadosObjectStore(std::unique_ptr<librados::Rados> cluster,
                                   std::unique_ptr<librados::IoCtx> io,
                                   std::string location, uint64_t nonce)
    : cluster_(std::move(cluster)),
      io_(std::move(io)),
      location_(std::move(location)),
      nonce_(nonce) {}

RadosObjectStore::~RadosObjectStore() {
  io_->close();
  cluster_->shutdown();
}

Status RadosObjectStore::Error(int r, const std::string& what,
                               const std::string& key) const {
  const std::string where = location_ + " object " + key;
  switch (-r) {
    case ENOENT:
      return NotFound(where + ": no such object");
    case EEXIST:
      return AlreadyExists(where + ": exists already");
    case EDQUOT:
      return {Code::kNoSpace, what + " " + where +
                                  ": the pool's quota is reached (ceph osd "
                                  "pool set-quota); free space or raise it"};
    case ENOSPC:
      return {Code::kNoSpace,
              what + " " + where + ": the Ceph pool or cluster is full"};
    case EACCES:
    case EPERM:
      return {Code::kPermission, what + " " + where +
                                     ": permission denied (the client key's "
                                     "caps do not allow it)"};
    case ETIMEDOUT:
      return IoError(what + " " + where +
                     ": the cluster did not answer in time (is an OSD or "
                     "the mon down?)");
    default:
      return IoError(what + " " + where + ": " + Strerror(r));
  }
}

Status RadosObjectStore::Write(const std::string& key,
                               std::span<const std::byte> data,
                               bool exclusive) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  librados::ObjectWriteOperation op;
  AddWrite(op, data, exclusive);
  const int r = io_->operate(key, &op);
  return r < 0 ? Error(r, exclusive ? "create" : "put", key) : Status::Ok();
}

void RadosObjectStore::AddWrite(librados::ObjectWriteOperation& op,
                                std::span<const std::byte> data,
                                bool exclusive) {
  if (exclusive) op.create(/*exclusive=*/true);
  op.write_full(Bytes(data));
  op.setxattr(kRadosMtimeXattr, Text(std::to_string(NowSeconds())));
}

Status RadosObjectStore::Put(const std::string& key,
                             std::span<const std::byte> data) {
  return Write(key, data, /*exclusive=*/false);
}

Status RadosObjectStore::Create(const std::string& key,
                                std::span<const std::byte> data) {
  return Write(key, data, /*exclusive=*/true);
}

Result<std::vector<std::byte>> RadosObjectStore::Get(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  // Stat and read in one operation: the size and the bytes are of the same
  // version of the object even if a Put replaces it meanwhile. A read of
  // length 0 reads the whole object.
  librados::ObjectReadOperation op;
  uint64_t size = 0;
  int stat_r = 0, read_r = 0;
  ceph::bufferlist bl;
  op.stat(&size, nullptr, &stat_r);
  op.read(0, 0, &bl, &read_r);
  const int r = io_->operate(key, &op, nullptr);
  if (r < 0) return Error(r, "get", key);
  if (stat_r < 0 || read_r < 0)
    return Error(std::min(stat_r, read_r), "get", key);
  if (bl.length() != size) {
    return IoError("get " + location_ + " object " + key + ": read " +
                   std::to_string(bl.length()) + " of " + std::to_string(size) +
                   " bytes");
  }
  std::vector<std::byte> out(bl.length());
  bl.begin().copy(bl.length(), reinterpret_cast<char*>(out.data()));
  return out;
}

Result<size_t> RadosObjectStore::GetInto(const std::string& key,
                                         std::span<std::byte> buf) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  librados::ObjectReadOperation op;
  uint64_t size = 0;
  int stat_r = 0, read_r = 0;
  ceph::bufferlist bl;
  op.stat(&size, nullptr, &stat_r);
  // One byte more than fits, so a larger object shows as such.
  op.read(0, buf.size() + 1, &bl, &read_r);
  const int r = io_->operate(key, &op, nullptr);
  if (r < 0) return Error(r, "get", key);
  if (stat_r < 0 || read_r < 0)
    return Error(std::min(stat_r, read_r), "get", key);
  if (size > buf.size()) return static_cast<size_t>(size);
  if (bl.length() != size) {
    return IoError("get " + location_ + " object " + key + ": read " +
                   std::to_string(bl.length()) + " of " + std::to_string(size) +
                   " bytes");
  }
  bl.begin().copy(bl.length(), reinterpret_cast<char*>(buf.data()));
  return static_cast<size_t>(size);
}

Result<bool> RadosObjectStore::Exists(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  uint64_t size = 0;
  time_t mtime = 0;
  const int r = io_->stat(key, &size, &mtime);
  if (r == -ENOENT) return false;
  if (r < 0) return Error(r, "stat", key);
  return true;
}

// O(objects in the pool's namespace): RADOS lists a pool in hash order, not
// by name, so every name is read and filtered here. Later work may keep an
// index (omap of a directory object) if stores grow large.
Result<std::vector<std::string>> RadosObjectStore::List(
    const std::string& prefix) {
  RETURN_IF_ERROR(ValidateObjectPrefix(prefix));
  std::vector<std::string> keys;
  try {
    for (auto it = io_->nobjects_begin(); it != io_->nobjects_end(); ++it) {
      const std::string& name = it->get_oid();
      // Quarantined objects and other tools' objects (".…") are no keys.
      if (!name.starts_with(prefix) || !ValidateObjectKey(name).ok()) continue;
      keys.push_back(name);
    }
  } catch (const std::system_error& e) {
    return IoError("list " + location_ + ": " + e.what());
  } catch (...) {
    return IoError("list " + location_ + ": listing the pool failed");
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

Status RadosObjectStore::Delete(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const int r = io_->remove(key);
  return r < 0 ? Error(r, "delete", key) : Status::Ok();
}

Result<bool> RadosObjectStore::Touch(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  librados::ObjectWriteOperation op;
  // Without the assert, setxattr would create an empty object.
  op.assert_exists();
  op.setxattr(kRadosMtimeXattr, Text(std::to_string(NowSeconds())));
  const int r = io_->operate(key, &op);
  if (r == -ENOENT) return false;
  if (r < 0) return Error(r, "touch", key);
  return true;
}

Result<int64_t> RadosObjectStore::ModifiedTime(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  ceph::bufferlist bl;
  const int r = io_->getxattr(key, kRadosMtimeXattr, bl);
  if (r >= 0) {
    const std::string text = bl.to_str();
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (!text.empty() && end != nullptr && *end == '\0') return int64_t{v};
  } else if (r != -ENODATA) {
    return Error(r, "reading the age of", key);
  }
  // No (or a foreign) xattr: an object some other tool wrote; its OSD mtime.
  uint64_t size = 0;
  time_t mtime = 0;
  const int s = io_->stat(key, &size, &mtime);
  if (s < 0) return Error(s, "stat", key);
  return int64_t{mtime};
}

Result<bool> RadosObjectStore::DeleteIfUnusedSince(const std::string& key,
                                                   int64_t cutoff) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  if (cutoff <= 0) return false;  // nothing is older than the epoch
  librados::ObjectWriteOperation op;
  // The OSD parses the xattr as a decimal u64 (absent: 0) and evaluates
  // "given OP xattr", so GT means cutoff > mtime. If it does not hold the
  // whole operation, remove included, is cancelled (-ECANCELED).
  op.cmpxattr(kRadosMtimeXattr, LIBRADOS_CMPXATTR_OP_GT,
              static_cast<uint64_t>(cutoff));
  op.remove();
  const int r = io_->operate(key, &op);
  if (r == -ECANCELED || r == -ENOENT) return false;
  if (r < 0) return Error(r, "delete (gc)", key);
  return true;
}

Status RadosObjectStore::Quarantine(const std::string& key) {
  ASSIGN_OR_RETURN(const std::vector<std::byte> bytes, Get(key));
  // Several damaged copies of one key may come and go: keep each.
  const std::string bad = std::string(kRadosQuarantinePrefix) + key + "." +
                          std::to_string(nonce_) + "." +
                          std::to_string(next_bad_.fetch_add(1));
  librados::ObjectWriteOperation op;
  op.write_full(Bytes(bytes));
  int r = io_->operate(bad, &op);
  if (r < 0) return Error(r, "quarantine (copy to " + bad + ")", key);
  r = io_->remove(key);
  if (r < 0) return Error(r, "quarantine (remove)", key);
  return Status::Ok();
}

}  // namespace ckptfs
