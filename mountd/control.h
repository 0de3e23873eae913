// The control protocol's request parser (DESIGN.md section 4).
//
// A request is one line written to a control file: a positional domain,
// then key=value words. Parsing is pure and strict: anything unexpected is
// kInvalidArgument with a one-line message, and nothing is executed.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

enum class RequestKind { kCheckpoint, kBackup, kRelease };

std::string_view KindName(RequestKind kind);

struct Request {
  RequestKind kind = RequestKind::kCheckpoint;
  std::string domain;
  std::string name;        // checkpoint, backup: name= of a new checkpoint
  std::string checkpoint;  // release: positional; backup: checkpoint=
  std::vector<std::string> disks;  // checkpoint: disks= (empty: all)
  std::string mode = "auto";       // backup: auto|full|incremental
};

inline constexpr size_t kMaxRequestBytes = 4096;
inline constexpr size_t kMaxNameLength = 64;

// Parses one request line (a single trailing newline is allowed).
Result<Request> ParseRequest(RequestKind kind, std::string_view line);

// Checkpoint names: 1..64 of [A-Za-z0-9_.-] (what libvirt accepts), no
// leading '.', not "latest".
Status ValidateCheckpointName(std::string_view name);
// Domain names as libvirt allows them, but safe as a directory name.
Status ValidateDomainName(std::string_view name);
// Disk targets: 1..32 of [a-z0-9] (vda, sdb, hdc, xvda).
Status ValidateDiskName(std::string_view disk);
// A daemon's host id (--host-id): 1..64 of [A-Za-z0-9._-], starting with a
// letter or digit, so that it fits in store keys and lock names as it is.
Status ValidateHostId(std::string_view id);

// A printable, bounded copy of a request line for job records and logs.
std::string SanitizeForRecord(std::string_view line);

}  // namespace ckptfs
