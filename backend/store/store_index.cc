// Store: a disk's index in either format (docs/FORMAT.md sections 4 and 8):
// opening one, building and staging a new one, and gc's mark and sweep of
// format 2 index pages.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "backend/store/store.h"
#include "backend/store/store_internal.h"

namespace ckptfs {
namespace {

using namespace store_internal;  // NOLINT: the layout's names

constexpr char kIndexPrefix[] = "index/";

}  // namespace

std::string Store::PageKey(const ChunkHash& hash) {
  const std::string hex = HashToHex(hash);
  return std::string(kIndexPrefix) + hex.substr(0, 2) + "/" + hex;
}

PageSource Store::Pages() const {
  // The object store outlives no image: every TreeIndex holds it.
  return [objects = objects_](const ChunkHash& hash) {
    return objects->Get(PageKey(hash));
  };
}

Result<std::shared_ptr<const ChunkIndex>> Store::OpenIndex(
    const BackupRecord& backup, const std::string& disk) {
  std::string key;
  ASSIGN_OR_RETURN(const std::vector<std::byte> data,
                   ReadManifestObject(backup, disk, &key));
  auto version = ManifestVersion(data);
  if (!version.ok()) return version.status().Annotate("manifest " + key);
  if (*version != kTreeManifestVersion) {
    auto manifest = ParseManifest(data);
    if (!manifest.ok()) return manifest.status().Annotate("manifest " + key);
    RETURN_IF_ERROR(CheckManifestIdentity(
        key, backup, disk, manifest->backup_id, manifest->disk,
        manifest->chunk_size, manifest->size));
    return std::shared_ptr<const ChunkIndex>(
        std::make_shared<DenseIndex>(std::move(manifest).value()));
  }
  auto tree = ParseTreeManifest(data);
  if (!tree.ok()) return tree.status().Annotate("manifest " + key);
  RETURN_IF_ERROR(CheckManifestIdentity(key, backup, disk, tree->backup_id,
                                        tree->disk, tree->chunk_size,
                                        tree->size));
  TreeRoot root;
  if (tree->has_root) root = {tree->root, tree->full};
  return std::shared_ptr<const ChunkIndex>(std::make_shared<TreeIndex>(
      tree->backup_id, tree->disk, tree->size, tree->chunk_size,
      TreeGeometry{tree->leaf_span, tree->fan_out, tree->depth}, root, Pages(),
      page_cache_));
}

std::unique_ptr<ChunkIndexBuilder> Store::NewIndexBuilder(
    const BackupRecord& backup, const std::string& disk, uint64_t size,
    std::shared_ptr<const ChunkIndex> base) {
  if (config_.format < kTreeStoreFormat) {
    return std::make_unique<DenseIndexBuilder>(backup.id, disk, size,
                                               chunk_size());
  }
  const TreeGeometry geometry =
      TreeGeometry::For(ChunkCount(size, chunk_size()), kLeafSpan, kFanOut);
  auto tree = std::dynamic_pointer_cast<const TreeIndex>(base);
  if (tree && (tree->size() != size || tree->chunk_size() != chunk_size() ||
               tree->geometry().leaf_span != geometry.leaf_span ||
               tree->geometry().fan_out != geometry.fan_out ||
               tree->geometry().depth != geometry.depth)) {
    tree = nullptr;  // another shape: build afresh from every chunk
  }
  return std::make_unique<TreeChunkIndexBuilder>(
      backup.id, disk, size, chunk_size(), geometry, std::move(tree));
}

Result<bool> Store::KeepIndex(const ChunkIndex& base) {
  const auto* tree = dynamic_cast<const TreeIndex*>(&base);
  if (tree == nullptr || !tree->root().hash) return true;
  return objects_->Touch(PageKey(*tree->root().hash));
}

Result<std::vector<std::byte>> Store::StageIndex(const BackupRecord& backup,
                                                 ChunkIndexBuilder& builder,
                                                 ObjectStore::Batch* batch) {
  ASSIGN_OR_RETURN(BuiltIndex built, builder.Finish());
  if (built.dense) {
    RETURN_IF_ERROR(CheckManifest(backup, *built.dense));
    return SerializeManifest(*built.dense);
  }
  const TreeManifest& m = built.tree;
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  RETURN_IF_ERROR(CheckName("disk name", m.disk, sizeof kManifestSuffix - 1));
  for (const auto& [hash, bytes] : built.pages) {
    const std::string key = PageKey(hash);
    // Pages are content-addressed: one already stored (another backup made
    // the same one) is touched, so gc keeps it, instead of written again.
    ASSIGN_OR_RETURN(const bool present, objects_->Touch(key));
    if (!present) RETURN_IF_ERROR(batch->Put(key, bytes));
  }
  return SerializeTreeManifest(m);
}

Status Store::PutIndex(const BackupRecord& backup, const std::string& disk,
                       std::span<const std::byte> manifest) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  RETURN_IF_ERROR(CheckName("disk name", disk, sizeof kManifestSuffix - 1));
  return objects_->Create(
      ManifestKey(backup.domain_uuid, backup.checkpoint, disk), manifest);
}

// --------------------------------------------------------------------- gc

Status Store::Mark(std::optional<int64_t> cutoff,
                   std::vector<ChunkHash>* chunks, std::set<ChunkHash>* pages) {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kBackupsPrefix));
  const PageSource source = Pages();
  size_t compacted = 0;
  for (const std::string& key : keys) {
    if (!key.ends_with(kManifestSuffix)) continue;
    auto data = objects_->Get(key);
    if (!data.ok()) {
      if (data.status().code() == Code::kNotFound) continue;  // just deleted
      return IoError("manifest " + key + ": " + data.status().ToString());
    }
    auto version = ManifestVersion(*data);
    if (!version.ok()) return version.status().Annotate("manifest " + key);
    if (*version == kTreeManifestVersion) {
      auto tree = ParseTreeManifest(*data);
      if (!tree.ok()) return tree.status().Annotate("manifest " + key);
      if (tree->has_root) {
        RETURN_IF_ERROR(MarkTree(source, tree->root, tree->depth, pages, chunks)
                            .Annotate("manifest " + key));
      }
    } else {
      auto manifest = ParseManifest(*data);
      if (!manifest.ok()) return manifest.status().Annotate("manifest " + key);
      for (const ChunkRef& ref : manifest->chunks) {
        if (!ref.zero) chunks->push_back(ref.hash);
      }
    }
    // Successive backups share most chunks: deduplicate as we go so memory
    // follows the unique count.
    if (chunks->size() > 2 * compacted + (1u << 20)) {
      std::sort(chunks->begin(), chunks->end());
      chunks->erase(std::unique(chunks->begin(), chunks->end()), chunks->end());
      compacted = chunks->size();
    }
  }
  if (cutoff) {
    // A running backup's reused base subtrees and its staged pages: every
    // page touched since the oldest running backup began is a mark root.
    ASSIGN_OR_RETURN(const std::vector<std::string> page_keys,
                     objects_->List(kIndexPrefix));
    for (const std::string& key : page_keys) {
      ChunkHash hash;
      if (!HexToHash(key.substr(key.rfind('/') + 1), &hash)) continue;
      if (pages->contains(hash)) continue;
      auto mtime = objects_->ModifiedTime(key);
      if (!mtime.ok() || *mtime < *cutoff) continue;  // gone, or old
      Status st = MarkTree(source, hash, std::nullopt, pages, chunks);
      if (!st.ok() && st.code() != Code::kNotFound) return st;
    }
  }
  std::sort(chunks->begin(), chunks->end());
  chunks->erase(std::unique(chunks->begin(), chunks->end()), chunks->end());
  return Status::Ok();
}

Status Store::SweepPages(const std::set<ChunkHash>& keep, int64_t cutoff,
                         bool dry_run, GcStats* stats) {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kIndexPrefix));
  for (const std::string& key : keys) {
    ++stats->pages;
    ChunkHash hash;
    if (!HexToHash(key.substr(key.rfind('/') + 1), &hash)) continue;
    if (keep.contains(hash)) continue;
    if (dry_run) {
      auto mtime = objects_->ModifiedTime(key);
      if (mtime.ok() && *mtime < cutoff) ++stats->pages_deleted;
      continue;
    }
    ASSIGN_OR_RETURN(const bool deleted,
                     objects_->DeleteIfUnusedSince(key, cutoff));
    if (deleted) ++stats->pages_deleted;
  }
  return Status::Ok();
}

}  // namespace ckptfs
