#include "mountd/control.h"

#include <algorithm>
#include <cstdint>
#include <set>

namespace ckptfs {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
      min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
      min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

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

}  // namespace

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

Status ValidateHostId(std::string_view id) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
  };
  if (id.empty() || id.size() > 64 || !alnum(id[0]) ||
      !std::all_of(id.begin(), id.end(), [&](char c) {
        return alnum(c) || c == '.' || c == '_' || c == '-';
      })) {
    return InvalidArgument("bad host id '" + SanitizeForRecord(id) +
                           "': use 1 to 64 of [A-Za-z0-9._-], starting with "
                           "a letter or digit");
  }
  return Status::Ok();
}

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
  // libvirt's rule (domaincheckpoint.rng): anything else it refuses when
  // the backup job begins, after the request was accepted.
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) {
      return InvalidArgument(
          "checkpoint name may hold letters, digits, '_', '-' and '.' only");
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

namespace {

// The line without its ending, if it is one line of UTF-8 text.
Result<std::string_view> CheckLine(std::string_view line) {
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
  // The request's words go into the JSON reply and job record, and JSON
  // holds only UTF-8: nlohmann::json throws on anything else, which would
  // end the daemon.
  if (!IsUtf8(line)) {
    return InvalidArgument("request is not UTF-8 text");
  }
  return line;
}

std::set<std::string, std::less<>> KnownKeys(RequestKind kind) {
  switch (kind) {
    case RequestKind::kCheckpoint:
      return {"name", "disks"};
    case RequestKind::kBackup:
      return {"name", "checkpoint", "mode"};
    case RequestKind::kRelease:
      break;
  }
  return {};
}

// disks=vda,vdb: valid names, none twice.
Status ParseDisks(std::string_view value, std::vector<std::string>* disks) {
  std::set<std::string, std::less<>> uniq;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view disk = value.substr(start, comma - start);
    RETURN_IF_ERROR(ValidateDiskName(disk));
    if (!uniq.insert(std::string(disk)).second) {
      return InvalidArgument("disk '" + std::string(disk) + "' listed twice");
    }
    disks->emplace_back(disk);
    start = comma + 1;
  }
  return Status::Ok();
}

// One key=value word. REQUIRES: `key` is known for the request's kind.
Status SetValue(const std::string& key, std::string_view value, Request* req) {
  if (value.empty()) return InvalidArgument("empty value for " + key);
  if (key == "name") {
    req->name = value;
  } else if (key == "checkpoint") {
    req->checkpoint = value;
  } else if (key == "mode") {
    if (value != "auto" && value != "full" && value != "incremental") {
      return InvalidArgument("mode must be auto, full or incremental");
    }
    req->mode = value;
  } else if (key == "disks") {
    return ParseDisks(value, &req->disks);
  }
  return Status::Ok();
}

// The positional words (DOMAIN, and CHECKPOINT for a release), then the
// names' own rules.
Status SetPositional(const std::vector<std::string_view>& positional,
                     Request* req) {
  const RequestKind kind = req->kind;
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
  req->domain = positional[0];
  RETURN_IF_ERROR(ValidateDomainName(req->domain));
  if (kind == RequestKind::kRelease) req->checkpoint = positional[1];
  if (!req->name.empty()) RETURN_IF_ERROR(ValidateCheckpointName(req->name));
  if (!req->checkpoint.empty()) {
    RETURN_IF_ERROR(ValidateCheckpointName(req->checkpoint));
  }
  if (!req->name.empty() && !req->checkpoint.empty()) {
    return InvalidArgument("give either name= or checkpoint=, not both");
  }
  return Status::Ok();
}

}  // namespace

Result<Request> ParseRequest(RequestKind kind, std::string_view raw) {
  ASSIGN_OR_RETURN(std::string_view line, CheckLine(raw));
  std::vector<std::string_view> words = SplitWords(line);
  if (words.empty()) {
    return InvalidArgument("empty request: write 'DOMAIN [key=value ...]'");
  }

  Request req;
  req.kind = kind;
  std::vector<std::string_view> positional;
  std::set<std::string, std::less<>> seen;
  const std::set<std::string, std::less<>> known = KnownKeys(kind);
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
    RETURN_IF_ERROR(SetValue(key, w.substr(eq + 1), &req));
  }
  RETURN_IF_ERROR(SetPositional(positional, &req));
  return req;
}

}  // namespace ckptfs
