// Store commands that need no daemon: ls, verify, reindex, gc, prune. They
// open the store directory and its catalog directly; a daemon serving the
// same store picks up their changes within seconds.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ckptfs {

// Each returns the process exit status and prints to stdout/stderr.
int StoreList(const std::string& store_dir, const std::string& domain,
              bool json);
int StoreVerify(const std::string& store_dir);
int StoreReindex(const std::string& store_dir);
int StoreGc(const std::string& store_dir, bool dry_run);
int StorePrune(const std::string& store_dir, const std::string& domain,
               const std::vector<std::pair<std::string, std::string>>& keep,
               bool dry_run);

}  // namespace ckptfs
