#include "mountd/control.h"

#include <algorithm>
#include <set>

namespace ckptfs {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::vector<std::string_view> SplitWords(std::string_view s) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !IsSpace(s[i])) ++i;
    if (i > start) words.push_back(s.substr(start, i - start));
  }
  return words;
}

Status ValidateDiskName(std::string_view disk) {
  if (disk.empty() || disk.size() > 32 ||
      !std::all_of(disk.begin(), disk.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
      })) {
    return InvalidArgument("bad disk name '" + std::string(disk) +
                           "': use targets like vda,vdb");
  }
  return Status::Ok();
}

}  // namespace

std::string_view KindName(RequestKind kind) {
  switch (kind) {
    case RequestKind::kCheckpoint:
      return "checkpoint";
    case RequestKind::kBackup:
      return "backup";
    case RequestKind::kRelease:
      return "release";
  }
  return "unknown";
}

Status ValidateCheckpointName(std::string_view name) {
  if (name.empty()) return InvalidArgument("empty checkpoint name");
  if (name.size() > kMaxNameLength) {
    return InvalidArgument("checkpoint name longer than " +
                           std::to_string(kMaxNameLength) + " characters");
  }
  if (name.front() == '.') {
    return InvalidArgument("checkpoint name must not start with '.'");
  }
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '/' || c == '\\') {
      return InvalidArgument(
          "checkpoint name may hold printable ASCII only, no '/', '\\' or "
          "spaces");
    }
  }
  if (name == "latest") {
    return InvalidArgument("'latest' is reserved (the newest-checkpoint link)");
  }
  return Status::Ok();
}

Status ValidateDomainName(std::string_view name) {
  if (name.empty()) return InvalidArgument("missing domain name");
  if (name.size() > 255) return InvalidArgument("domain name too long");
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos)
    return InvalidArgument("bad domain name '" + std::string(name) + "'");
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return InvalidArgument("domain name holds control characters");
    }
  }
  return Status::Ok();
}

std::string SanitizeForRecord(std::string_view line) {
  // The line ending is not part of the request.
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::string out;
  for (char c : line.substr(0, 256)) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u >= 0x7f) ? '?' : c;
  }
  if (line.size() > 256) out += "...";
  return out;
}

Result<Request> ParseRequest(RequestKind kind, std::string_view line) {
  if (line.size() > kMaxRequestBytes) {
    return InvalidArgument("request longer than " +
                           std::to_string(kMaxRequestBytes) + " bytes");
  }
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      return InvalidArgument("one request per write: the line holds a newline");
    }
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      return InvalidArgument("request holds control or binary characters");
    }
  }
  std::vector<std::string_view> words = SplitWords(line);
  if (words.empty()) {
    return InvalidArgument("empty request: write 'DOMAIN [key=value ...]'");
  }

  Request req;
  req.kind = kind;
  std::vector<std::string_view> positional;
  std::set<std::string, std::less<>> seen;
  std::set<std::string, std::less<>> known;
  switch (kind) {
    case RequestKind::kCheckpoint:
      known = {"name", "disks"};
      break;
    case RequestKind::kBackup:
      known = {"name", "checkpoint", "mode"};
      break;
    case RequestKind::kRelease:
      break;
  }
  for (std::string_view w : words) {
    size_t eq = w.find('=');
    if (eq == std::string_view::npos) {
      if (!seen.empty()) {
        return InvalidArgument("positional word '" + SanitizeForRecord(w) +
                               "' after key=value words");
      }
      positional.push_back(w);
      continue;
    }
    std::string key(w.substr(0, eq));
    std::string_view value = w.substr(eq + 1);
    if (!known.count(key)) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return InvalidArgument(
          "unknown key '" + SanitizeForRecord(key) + "' for control/" +
          std::string(KindName(kind)) +
          (list.empty() ? " (it takes no keys)" : " (known: " + list + ")"));
    }
    if (!seen.insert(key).second) {
      return InvalidArgument("key '" + key + "' given twice");
    }
    if (value.empty()) return InvalidArgument("empty value for " + key);
    if (key == "name") {
      req.name = value;
    } else if (key == "checkpoint") {
      req.checkpoint = value;
    } else if (key == "mode") {
      if (value != "auto" && value != "full" && value != "incremental") {
        return InvalidArgument("mode must be auto, full or incremental");
      }
      req.mode = value;
    } else if (key == "disks") {
      std::set<std::string, std::less<>> uniq;
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        if (comma == std::string_view::npos) comma = value.size();
        std::string_view disk = value.substr(start, comma - start);
        RETURN_IF_ERROR(ValidateDiskName(disk));
        if (!uniq.insert(std::string(disk)).second) {
          return InvalidArgument("disk '" + std::string(disk) +
                                 "' listed twice");
        }
        req.disks.emplace_back(disk);
        start = comma + 1;
      }
    }
  }

  size_t want = kind == RequestKind::kRelease ? 2 : 1;
  if (positional.size() < want) {
    return InvalidArgument(kind == RequestKind::kRelease
                               ? "usage: DOMAIN CHECKPOINT"
                               : "missing domain name");
  }
  if (positional.size() > want) {
    return InvalidArgument("unexpected word '" +
                           SanitizeForRecord(positional[want]) + "'");
  }
  req.domain = positional[0];
  RETURN_IF_ERROR(ValidateDomainName(req.domain));
  if (kind == RequestKind::kRelease) req.checkpoint = positional[1];
  if (!req.name.empty()) RETURN_IF_ERROR(ValidateCheckpointName(req.name));
  if (!req.checkpoint.empty()) {
    RETURN_IF_ERROR(ValidateCheckpointName(req.checkpoint));
  }
  if (!req.name.empty() && !req.checkpoint.empty()) {
    return InvalidArgument("give either name= or checkpoint=, not both");
  }
  return req;
}

}  // namespace ckptfs
