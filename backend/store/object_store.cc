#include "backend/store/object_store.h"

#include <cstring>
#include <utility>

namespace ckptfs {

namespace {

constexpr size_t kMaxKeyLength = 1024;

bool KeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
         c == ':' || c == '+' || c == '@';
}

Status CheckComponents(std::string_view what, std::string_view key,
                       bool allow_open_end) {
  if (key.size() > kMaxKeyLength) {
    return InvalidArgument(std::string(what) + " is longer than " +
                           std::to_string(kMaxKeyLength) + " bytes");
  }
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    const bool last = end == std::string_view::npos;
    if (last) end = key.size();
    const std::string_view component = key.substr(start, end - start);
    if (component.empty() && !(last && allow_open_end)) {
      return InvalidArgument(std::string(what) + " '" + std::string(key) +
                             "' has an empty path component");
    }
    if (!component.empty() && component.front() == '.') {
      return InvalidArgument(std::string(what) + " '" + std::string(key) +
                             "' has a component starting with '.'");
    }
    for (char c : component) {
      if (!KeyChar(c)) {
        return InvalidArgument(
            std::string(what) + " '" + std::string(key) +
            "' contains a character outside [A-Za-z0-9._:+@/-]");
      }
    }
    if (last) break;
    start = end + 1;
  }
  return Status::Ok();
}

}  // namespace

Result<size_t> ObjectStore::GetInto(const std::string& key,
                                    std::span<std::byte> buf) {
  ASSIGN_OR_RETURN(std::vector<std::byte> data, Get(key));
  if (data.size() <= buf.size()) {
    std::memcpy(buf.data(), data.data(), data.size());
  }
  return data.size();
}

namespace {

// Puts each object as it comes: durable and visible on return, which is
// more than a batch promises.
class ImmediateBatch : public ObjectStore::Batch {
 public:
  explicit ImmediateBatch(ObjectStore& objects) : objects_(objects) {}
  Status Put(const std::string& key, std::span<const std::byte> data) override {
    return objects_.Put(key, data);
  }
  Status Commit() override { return Status::Ok(); }

 private:
  ObjectStore& objects_;
};

}  // namespace

std::unique_ptr<ObjectStore::Batch> ObjectStore::NewBatch() {
  return std::make_unique<ImmediateBatch>(*this);
}

Status ValidateObjectKey(std::string_view key) {
  if (key.empty()) return InvalidArgument("object key is empty");
  return CheckComponents("object key", key, /*allow_open_end=*/false);
}

Status ValidateObjectPrefix(std::string_view prefix) {
  if (prefix.empty()) return Status::Ok();
  return CheckComponents("object key prefix", prefix, /*allow_open_end=*/true);
}

std::string EncodeKeyComponent(std::string_view name) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(name.size());
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (KeyChar(c) && c != '+' && !(i == 0 && c == '.')) {
      out += c;
    } else {
      const auto b = static_cast<unsigned char>(c);
      out += '+';
      out += kDigits[b >> 4];
      out += kDigits[b & 0xf];
    }
  }
  return out;
}

bool DecodeKeyComponent(std::string_view component, std::string* name) {
  std::string out;
  for (size_t i = 0; i < component.size(); ++i) {
    if (component[i] != '+') {
      out += component[i];
      continue;
    }
    if (i + 2 >= component.size()) return false;
    unsigned value = 0;
    for (size_t j = i + 1; j <= i + 2; ++j) {
      const char c = component[j];
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= static_cast<unsigned>(c - '0');
      } else if (c >= 'A' && c <= 'F') {
        value |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    out += static_cast<char>(value);
    i += 2;
  }
  // Only the canonical encoding decodes: "+41" is not a way to write "A".
  if (out.empty() || EncodeKeyComponent(out) != component) return false;
  *name = std::move(out);
  return true;
}

}  // namespace ckptfs
