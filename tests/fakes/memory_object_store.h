// MemoryObjectStore: the in-memory ObjectStore of unit tests and fuzzers
// (the memenv of this module). It runs the Store over the ObjectStore
// defaults (GetInto, NewBatch) instead of the local directory's own
// versions. Times are a logical clock: every Put, Create and Touch ticks it,
// so "touched after the cutoff" is exact and needs no sleeping.
//
// A hook, if set, runs before every operation with its name and key, outside
// the store's lock: tests inject what a concurrent writer does between two
// steps of the code under test (gc between its check and its delete, ...).
//
// Thread safety: all methods may be called concurrently; set the hook
// before sharing the store (or from the hook itself, in one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backend/store/object_store.h"

namespace ckptfs {

class MemoryObjectStore : public ObjectStore {
 public:
  using Bytes = std::vector<std::byte>;
  using Hook = std::function<void(std::string_view op, const std::string& key)>;

  explicit MemoryObjectStore(std::string location = "memory")
      : location_(std::move(location)) {}

  void SetHook(Hook hook) { hook_ = std::move(hook); }

  Status Put(const std::string& key, std::span<const std::byte> data) override {
    RETURN_IF_ERROR(ValidateObjectKey(key));
    Call("put", key);
    std::lock_guard lock(mu_);
    objects_[key].assign(data.begin(), data.end());
    mtimes_[key] = ++clock_;
    return Status::Ok();
  }
  Status Create(const std::string& key,
                std::span<const std::byte> data) override {
    RETURN_IF_ERROR(ValidateObjectKey(key));
    Call("create", key);
    std::lock_guard lock(mu_);
    if (objects_.contains(key)) return AlreadyExists(key + " exists");
    objects_[key].assign(data.begin(), data.end());
    mtimes_[key] = ++clock_;
    return Status::Ok();
  }
  Result<Bytes> Get(const std::string& key) override {
    Call("get", key);
    std::lock_guard lock(mu_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return NotFound(key + ": no such object");
    return it->second;
  }
  Result<bool> Exists(const std::string& key) override {
    Call("exists", key);
    std::lock_guard lock(mu_);
    return objects_.contains(key);
  }
  Result<bool> Touch(const std::string& key) override {
    Call("touch", key);
    std::lock_guard lock(mu_);
    if (!objects_.contains(key)) return false;
    mtimes_[key] = ++clock_;
    return true;
  }
  Result<int64_t> ModifiedTime(const std::string& key) override {
    Call("mtime", key);
    std::lock_guard lock(mu_);
    if (!objects_.contains(key)) return NotFound(key + ": no such object");
    return mtimes_[key];
  }
  Result<std::vector<std::string>> List(const std::string& prefix) override {
    RETURN_IF_ERROR(ValidateObjectPrefix(prefix));
    Call("list", prefix);
    std::lock_guard lock(mu_);
    std::vector<std::string> keys;
    for (auto it = objects_.lower_bound(prefix);
         it != objects_.end() && it->first.starts_with(prefix); ++it) {
      keys.push_back(it->first);
    }
    return keys;
  }
  Status Delete(const std::string& key) override {
    Call("delete", key);
    std::lock_guard lock(mu_);
    if (objects_.erase(key) == 0) return NotFound(key + ": no such object");
    mtimes_.erase(key);
    return Status::Ok();
  }
  Result<bool> DeleteIfUnusedSince(const std::string& key,
                                   int64_t cutoff) override {
    Call("delete-if-unused", key);
    std::lock_guard lock(mu_);
    if (!objects_.contains(key) || mtimes_[key] >= cutoff) return false;
    objects_.erase(key);
    mtimes_.erase(key);
    return true;
  }
  Status Quarantine(const std::string& key) override {
    Call("quarantine", key);
    std::lock_guard lock(mu_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return NotFound(key + ": no such object");
    quarantined_.emplace_back(key, std::move(it->second));
    objects_.erase(it);
    mtimes_.erase(key);
    return Status::Ok();
  }
  std::string location() const override { return location_; }

  // The logical time now (the last tick).
  int64_t now() const {
    std::lock_guard lock(mu_);
    return clock_;
  }
  // Every visible object, for tests that look at the store as a whole.
  std::map<std::string, Bytes> objects() const {
    std::lock_guard lock(mu_);
    return objects_;
  }
  std::vector<std::pair<std::string, Bytes>> quarantined() const {
    std::lock_guard lock(mu_);
    return quarantined_;
  }

 private:
  // On a copy: a hook may replace or clear itself while it runs.
  void Call(std::string_view op, const std::string& key) {
    if (Hook hook = hook_) hook(op, key);
  }

  const std::string location_;
  Hook hook_;
  mutable std::mutex mu_;
  std::map<std::string, Bytes> objects_;                    // guarded by mu_
  std::map<std::string, int64_t> mtimes_;                   // guarded by mu_
  std::vector<std::pair<std::string, Bytes>> quarantined_;  // guarded by mu_
  int64_t clock_ = 0;                                       // guarded by mu_
};

}  // namespace ckptfs
