// Store commands that need no daemon: ls, verify, reindex, gc, prune. They
// open the store directory and its catalog directly; a daemon serving the
// same store picks up their changes within seconds.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "backend/store/store.h"

namespace ckptfs {

// The store a command works on: a directory or a rados: URI, and how to
// reach it (--ceph-conf, --ceph-id).
struct StoreRef {
  std::string uri;
  StoreOpenOptions options;
};

// Each returns the process exit status and prints to stdout/stderr.
int StoreList(const StoreRef& store, const std::string& domain, bool json);
int StoreVerify(const StoreRef& store);
int StoreReindex(const StoreRef& store);
int StoreGc(const StoreRef& store, bool dry_run);
int StorePrune(const StoreRef& store, const std::string& domain,
               const std::vector<std::pair<std::string, std::string>>& keep,
               bool dry_run);

}  // namespace ckptfs
