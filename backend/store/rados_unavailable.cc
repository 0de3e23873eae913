// RadosObjectStore in a build without librados (CKPTFS_RADOS=OFF: the
// clang fuzz build, where Ceph 16's headers do not compile as C++20). Open
// says so; no instance can exist, so the other members are never called.
#include <rados/librados_fwd.hpp>

#include "backend/store/rados_object_store.h"

namespace librados {
inline namespace v14_2_0 {
class Rados {};
class IoCtx {};
}  // namespace v14_2_0
}  // namespace librados

namespace ckptfs {

namespace {
Status Unavailable() {
  return Status(Code::kUnsupported,
                "this ckptfs was built without RADOS support (CKPTFS_RADOS)");
}
}  // namespace

Result<std::unique_ptr<RadosObjectStore>> RadosObjectStore::Open(
    const std::string&, const std::string&, const CephOptions&) {
  return Unavailable();
}
RadosObjectStore::~RadosObjectStore() = default;
Status RadosObjectStore::Put(const std::string&, std::span<const std::byte>) {
  return Unavailable();
}
Status RadosObjectStore::Create(const std::string&,
                                std::span<const std::byte>) {
  return Unavailable();
}
Result<std::vector<std::byte>> RadosObjectStore::Get(const std::string&) {
  return Unavailable();
}
Result<size_t> RadosObjectStore::GetInto(const std::string&,
                                         std::span<std::byte>) {
  return Unavailable();
}
Result<bool> RadosObjectStore::Exists(const std::string&) {
  return Unavailable();
}
Result<std::vector<std::string>> RadosObjectStore::List(const std::string&) {
  return Unavailable();
}
Status RadosObjectStore::Delete(const std::string&) { return Unavailable(); }
Result<bool> RadosObjectStore::Touch(const std::string&) {
  return Unavailable();
}
Result<int64_t> RadosObjectStore::ModifiedTime(const std::string&) {
  return Unavailable();
}
Result<bool> RadosObjectStore::DeleteIfUnusedSince(const std::string&,
                                                   int64_t) {
  return Unavailable();
}
Status RadosObjectStore::Quarantine(const std::string&) {
  return Unavailable();
}
std::unique_ptr<ObjectStore::Batch> RadosObjectStore::NewBatch() {
  return ObjectStore::NewBatch();
}

}  // namespace ckptfs
