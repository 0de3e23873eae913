// Store: opening a store (a path or file:// URI, or any ObjectStore), its
// config.json, and where its catalog lives.
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "backend/store/catalog.h"
#include "backend/store/local_object_store.h"
#include "backend/store/rados_object_store.h"
#include "backend/store/store.h"
#include "backend/store/store_internal.h"

namespace ckptfs {
namespace {

using namespace store_internal;  // NOLINT: the layout's names
using nlohmann::json;

constexpr uint32_t kMinChunkSize = 4096;
constexpr uint32_t kMaxChunkSize = 16u << 20;

Status CheckConfig(const StoreConfig& c, const std::string& where) {
  if (c.format < kStoreFormat || c.format > kTreeStoreFormat) {
    return InvalidArgument(where + " has format " + std::to_string(c.format) +
                           "; this ckptfs reads format " +
                           std::to_string(kStoreFormat) + " or " +
                           std::to_string(kTreeStoreFormat));
  }
  if (c.chunk_size < kMinChunkSize || c.chunk_size > kMaxChunkSize ||
      (c.chunk_size & (c.chunk_size - 1)) != 0) {
    return InvalidArgument(where + ": chunk_size " +
                           std::to_string(c.chunk_size) +
                           " is not a power of two from 4096 to 16777216");
  }
  if (c.compression != "zstd" && c.compression != "auto") {
    return InvalidArgument(where + ": compression \"" + c.compression +
                           "\" is unknown; this ckptfs knows \"auto\" and "
                           "\"zstd\"");
  }
  if (c.zstd_level < ZSTD_minCLevel() || c.zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument(where + ": zstd_level " +
                           std::to_string(c.zstd_level) + " is outside " +
                           std::to_string(ZSTD_minCLevel()) + ".." +
                           std::to_string(ZSTD_maxCLevel()));
  }
  return Status::Ok();
}

constexpr std::string_view kRadosScheme = "rados:";

struct RadosUri {
  std::string pool;
  std::string ns;
};

// "rados:POOL[/NAMESPACE]". Names are limited to what is safe in a file name
// (the catalog's) and a message: [A-Za-z0-9._-], not starting with '.'.
Result<RadosUri> ParseRadosUri(const std::string& uri) {
  const std::string rest = uri.substr(kRadosScheme.size());
  const size_t slash = rest.find('/');
  RadosUri r{rest.substr(0, slash),
             slash == std::string::npos ? "" : rest.substr(slash + 1)};
  auto good = [](const std::string& name) {
    return !name.empty() && name.size() <= 128 && name[0] != '.' &&
           std::all_of(name.begin(), name.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                    c == '_' || c == '-';
           });
  };
  if (!good(r.pool) || (slash != std::string::npos && !good(r.ns))) {
    return InvalidArgument(uri +
                           " is no RADOS store: give rados:POOL or "
                           "rados:POOL/NAMESPACE (names of letters, digits, "
                           "'.', '_' and '-')");
  }
  return r;
}

}  // namespace

// ------------------------------------------------------------------ config

std::string SerializeStoreConfig(const StoreConfig& c) {
  const json j = {{"format", c.format},
                  {"chunk_size", c.chunk_size},
                  {"compression", c.compression},
                  {"zstd_level", c.zstd_level}};
  return j.dump(2) + "\n";
}

Result<StoreConfig> ParseStoreConfig(std::string_view text,
                                     const std::string& location) {
  const std::string where = "store " + location;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, or out_of_range for a number beyond a double ("1e400").
    return InvalidArgument(where + ": config.json is not JSON (" + e.what() +
                           ")");
  }
  if (!j.is_object()) {
    return InvalidArgument(where + ": config.json is not a JSON object");
  }
  auto integer = [&](const char* name, int64_t lo, int64_t hi,
                     int64_t* out) -> Status {
    const auto it = j.find(name);
    if (it == j.end()) {
      return InvalidArgument(where + ": config.json has no \"" + name + "\"");
    }
    if (!it->is_number_integer() ||
        (it->is_number_unsigned() &&
         it->get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return InvalidArgument(where + ": config.json field \"" + name +
                             "\" is not an integer in range");
    }
    *out = it->get<int64_t>();
    return Status::Ok();
  };
  StoreConfig c;
  int64_t v = 0;
  RETURN_IF_ERROR(integer("format", 0, UINT32_MAX, &v));
  c.format = static_cast<uint32_t>(v);
  if (c.format < kStoreFormat || c.format > kTreeStoreFormat) {
    return CheckConfig(c, where);
  }
  RETURN_IF_ERROR(integer("chunk_size", 0, UINT32_MAX, &v));
  c.chunk_size = static_cast<uint32_t>(v);
  RETURN_IF_ERROR(integer("zstd_level", INT32_MIN, INT32_MAX, &v));
  c.zstd_level = static_cast<int>(v);
  const auto it = j.find("compression");
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument(where +
                           ": config.json has no string \"compression\"");
  }
  c.compression = it->get<std::string>();
  RETURN_IF_ERROR(CheckConfig(c, where));
  return c;
}

std::string BackupId(const std::string& domain_uuid,
                     const std::string& checkpoint) {
  return domain_uuid + "/" + checkpoint;
}

// ------------------------------------------------------------------- open

Result<std::unique_ptr<Store>> Store::OpenLocal(const std::string& dir,
                                                bool create,
                                                StoreConfig config_if_new) {
  if (create) RETURN_IF_ERROR(CheckConfig(config_if_new, "new store " + dir));
  ASSIGN_OR_RETURN(auto objects, LocalObjectStore::Open(dir, create));
  ASSIGN_OR_RETURN(auto store,
                   Open(std::move(objects), create, std::move(config_if_new)));
  store->catalog_path_ = dir + "/catalog.db";
  return store;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& uri, bool create,
                                           StoreConfig config_if_new,
                                           const StoreOpenOptions& options) {
  constexpr std::string_view kFileScheme = "file://";
  if (uri.starts_with(kRadosScheme)) {
    ASSIGN_OR_RETURN(const RadosUri r, ParseRadosUri(uri));
    ASSIGN_OR_RETURN(auto objects,
                     RadosObjectStore::Open(r.pool, r.ns, options.ceph));
    ASSIGN_OR_RETURN(
        auto store, Open(std::move(objects), create, std::move(config_if_new)));
    store->catalog_path_ = options.catalog_dir + "/" + r.pool +
                           (r.ns.empty() ? "" : "+" + r.ns) + ".db";
    return store;
  }
  if (uri.starts_with(kFileScheme)) {
    return OpenLocal(uri.substr(kFileScheme.size()), create,
                     std::move(config_if_new));
  }
  // "scheme://...": a backend this ckptfs does not have. Anything else is a
  // path (which may well contain ':').
  const size_t sep = uri.find("://");
  const bool scheme =
      sep != std::string::npos && sep > 0 &&
      std::all_of(uri.begin(), uri.begin() + static_cast<ptrdiff_t>(sep),
                  [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) ||
                           c == '+' || c == '-' || c == '.';
                  });
  if (scheme) {
    return InvalidArgument("store " + uri + ": unknown scheme '" +
                           uri.substr(0, sep) +
                           "'; give a directory or a file:// URI");
  }
  return OpenLocal(uri, create, std::move(config_if_new));
}

Result<std::unique_ptr<Catalog>> Store::OpenCatalog(bool replace_corrupt,
                                                    std::string* moved_to) {
  if (catalog_path_.empty()) {
    return Status(Code::kUnsupported, "store " + objects_->location() +
                                          " has no place for a catalog");
  }
  if (!replace_corrupt) return Catalog::Open(catalog_path_);
  std::string ignored;
  return Catalog::OpenOrReplaceCorrupt(catalog_path_,
                                       moved_to ? moved_to : &ignored);
}

Result<std::unique_ptr<Store>> Store::Open(std::unique_ptr<ObjectStore> objects,
                                           bool create,
                                           StoreConfig config_if_new) {
  const std::string location = objects->location();
  auto text = objects->Get(kConfigKey);
  StoreConfig config;
  if (text.ok()) {
    ASSIGN_OR_RETURN(config, ParseStoreConfig(AsText(*text), location));
  } else if (text.status().code() != Code::kNotFound) {
    return text.status().Annotate("store " + location);
  } else if (!create) {
    return NotFound("no ckptfs store at " + location +
                    " (config.json is missing); create it first");
  } else {
    RETURN_IF_ERROR(CheckConfig(config_if_new, "new store " + location));
    const std::string body = SerializeStoreConfig(config_if_new);
    RETURN_IF_ERROR(objects->Put(
        kConfigKey, std::as_bytes(std::span(body.data(), body.size()))));
    config = std::move(config_if_new);
  }
  return std::unique_ptr<Store>(
      new Store(std::shared_ptr<ObjectStore>(std::move(objects)), config));
}

Store::Store(std::shared_ptr<ObjectStore> objects, StoreConfig config)
    : objects_(std::move(objects)),
      config_(std::move(config)),
      chunks_(std::make_shared<ChunkStore>(
          objects_, config_.chunk_size, config_.zstd_level,
          /*plain_if_incompressible=*/config_.compression == "auto")) {}

}  // namespace ckptfs
