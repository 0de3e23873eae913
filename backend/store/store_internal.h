// Internals shared by the Store's files (store.cc, store_open.cc,
// store_locks.cc, store_maintenance.cc): the object names of the layout in
// store.h and the checks every writer applies. Not for use outside
// backend/store/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/status.h"
#include "backend/store/types.h"

namespace ckptfs::store_internal {

inline constexpr char kConfigKey[] = "config.json";
inline constexpr char kBackupsPrefix[] = "backups/";
inline constexpr char kLocksPrefix[] = "locks/";
inline constexpr char kRecordName[] = "backup.json";
inline constexpr char kManifestSuffix[] = ".manifest";
// Marks a backup whose DeleteBackup is under way (never a disk's name: those
// end in kManifestSuffix).
inline constexpr char kDeletingName[] = "deleting";
inline constexpr size_t kMaxComponent = 255;  // NAME_MAX of local filesystems

// Checks a name used as a key component (uuid, checkpoint, disk).
Status CheckName(const char* what, const std::string& name,
                 size_t suffix_length = 0);
// Checks the id, uuid and checkpoint of a record (see Store::PutManifest).
Status CheckBackupIdentity(const BackupRecord& r);
// An object's bytes as text.
std::string AsText(const std::vector<std::byte>& data);

}  // namespace ckptfs::store_internal
