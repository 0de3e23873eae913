// Writes the seed corpora of the fuzz targets: valid inputs made with the
// real serialisers (so a format change is one re-run away from fresh seeds)
// and a few invalid ones derived from them, each named after what it shows.
//
//   build-fuzz/tests/fuzz/fuzz_seeds tests/fuzz/corpus
//
// Existing files of the same name are overwritten; others (inputs that
// fuzzing found and that were added by hand) are left alone.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/store/catalog.h"
#include "backend/store/change_log.h"
#include "backend/store/index_page.h"
#include "backend/store/object_store.h"
#include "backend/store/serialize.h"
#include "backend/store/sha256.h"
#include "backend/store/store.h"
#include "backend/xml.h"
#include "mountd/jobs.h"
#include "tests/fakes/memory_object_store.h"

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;

class SeedWriter {
 public:
  explicit SeedWriter(fs::path root) : root_(std::move(root)) {}

  void Write(const std::string& target, const std::string& name,
             std::string_view bytes) {
    const fs::path dir = root_ / target;
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::cerr << "cannot write " << (dir / name) << "\n";
      std::exit(1);
    }
    ++count_;
  }
  void Write(const std::string& target, const std::string& name,
             const Bytes& bytes) {
    Write(target, name,
          std::string_view(reinterpret_cast<const char*>(bytes.data()),
                           bytes.size()));
  }
  int count() const { return count_; }

 private:
  fs::path root_;
  int count_ = 0;
};

void Check(const Status& st) {
  if (!st.ok()) {
    std::cerr << "fuzz_seeds: " << st.ToString() << "\n";
    std::exit(1);
  }
}

std::string Text(const Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// ------------------------------------------------------------------ control

void ControlSeeds(SeedWriter& w) {
  const std::pair<const char*, const char*> seeds[] = {
      {"valid-domain", "vm1\n"},
      {"valid-name-disks", "vm1 name=before-upgrade disks=vda,vdb\n"},
      {"valid-backup-checkpoint",
       "web01 checkpoint=20261123T081500Z mode=full"},
      {"valid-release", "web01 20261123T081500Z\n"},
      {"valid-utf8-domain", "caf\xc3\xa9\tname=x\r\n"},
      {"invalid-unknown-key", "vm1 foo=bar\n"},
      {"invalid-binary", "vm1\x01\x02\n"},
      {"invalid-two-lines", "vm1\nvm2\n"},
      {"invalid-reserved-name", "vm1 name=latest"},
      {"invalid-disk-twice", "vm1 disks=vda,vda"},
      {"invalid-slash-domain", "../etc name=.hidden"},
  };
  for (const auto& [name, line] : seeds) w.Write("control", name, line);
}

// --------------------------------------------------------------- index page

void IndexPageSeeds(SeedWriter& w) {
  IndexPage leaf;
  leaf.first = 4096;
  leaf.slots = 16;
  for (uint32_t s : {0u, 3u, 15u}) {
    const std::string plain = "chunk " + std::to_string(s);
    leaf.entries.emplace_back(s, Sha256(std::as_bytes(std::span(plain))));
  }
  IndexPage inner = leaf;
  inner.level = 2;
  inner.first = 0;
  inner.slots = 8;
  inner.entries.resize(2);
  inner.entries[1].first = 7;
  inner.full = {true, false};
  const Bytes l = SerializeIndexPage(leaf);
  w.Write("index_page", "valid-leaf-three-chunks", l);
  w.Write("index_page", "valid-interior-two-children",
          SerializeIndexPage(inner));
  Bytes bad = l;
  bad.resize(bad.size() - 1);
  w.Write("index_page", "invalid-truncated", bad);
  bad = l;
  bad[24] |= std::byte{0x02};  // a present bit without its hash
  w.Write("index_page", "invalid-bitmap", bad);
  TreeManifest m;
  m.backup_id = "0b4a1f2e-1111-2222-3333-444455556666/20261123T081500Z";
  m.disk = "vda";
  m.size = 1ull << 30;
  m.chunk_size = 262144;
  m.leaf_span = 16;
  m.fan_out = 8;
  m.depth = 3;
  m.has_root = true;
  m.root = leaf.entries[0].second;
  w.Write("index_page", "valid-tree-manifest", SerializeTreeManifest(m));
}

// ----------------------------------------------------------------- manifest

Manifest SampleManifest(uint64_t size, uint32_t chunk_size) {
  Manifest m;
  m.backup_id = "0b4a1f2e-1111-2222-3333-444455556666/20261123T081500Z";
  m.disk = "vda";
  m.size = size;
  m.chunk_size = chunk_size;
  for (uint64_t i = 0; i < ChunkCount(size, chunk_size); ++i) {
    ChunkRef ref;
    ref.zero = i % 3 == 1;
    if (!ref.zero) {
      const std::string plain = "chunk " + std::to_string(i);
      ref.hash = Sha256(std::as_bytes(std::span(plain)));
    }
    m.chunks.push_back(ref);
  }
  return m;
}

void ManifestSeeds(SeedWriter& w) {
  const Bytes empty = SerializeManifest(SampleManifest(0, 262144));
  const Bytes three = SerializeManifest(SampleManifest(3 * 4096 - 100, 4096));
  w.Write("manifest", "valid-empty-disk", empty);
  w.Write("manifest", "valid-three-chunks-one-zero", three);
  Bytes bad = three;
  bad.resize(bad.size() - 1);
  w.Write("manifest", "invalid-truncated", bad);
  bad = three;
  bad[40] ^= std::byte{0x20};
  w.Write("manifest", "invalid-checksum", bad);
  bad = three;
  bad[8] = std::byte{2};
  w.Write("manifest", "invalid-version-2", bad);
}

// ------------------------------------------------------------ backup record

BackupRecord SampleRecord(bool incremental) {
  BackupRecord r;
  r.domain_uuid = "0b4a1f2e-1111-2222-3333-444455556666";
  r.checkpoint = incremental ? "20261124T081500Z" : "20261123T081500Z";
  r.id = BackupId(r.domain_uuid, r.checkpoint);
  r.domain = incremental ? "web01" : "caf\xc3\xa9 \"01\"";
  r.base = incremental ? "20261123T081500Z" : "";
  r.mode = incremental ? "incremental" : "full";
  r.created = 1795000000;
  r.completed = 1795000060;
  r.checkpoint_xml =
      "<domaincheckpoint><name>" + r.checkpoint + "</name></domaincheckpoint>";
  BackupDisk vda;
  vda.name = "vda";
  vda.size = 10ull << 30;
  vda.allocated = 3ull << 30;
  vda.source = "/var/lib/libvirt/images/web01.qcow2";
  vda.bytes_read = 1 << 20;
  vda.changes = {{0, 65536}, {1 << 20, 196608}};
  r.disks.push_back(vda);
  if (incremental) {
    BackupDisk vdb = vda;
    vdb.name = "vdb";
    vdb.size = 8192;
    vdb.changes = {};
    r.disks.push_back(vdb);
  }
  return r;
}

void BackupRecordSeeds(SeedWriter& w) {
  const std::string full = SerializeBackupRecord(SampleRecord(false));
  const std::string incr = SerializeBackupRecord(SampleRecord(true));
  w.Write("backup_record", "valid-full", full);
  w.Write("backup_record", "valid-incremental", incr);
  // Records written before "changes" existed.
  nlohmann::json old = nlohmann::json::parse(incr);
  for (auto& disk : old["disks"]) disk.erase("changes");
  w.Write("backup_record", "valid-without-changes", old.dump(2));
  BackupRecord r = SampleRecord(false);
  r.id = "other/id";
  w.Write("backup_record", "invalid-id", SerializeBackupRecord(r));
  r = SampleRecord(false);
  r.disks[0].changes = {{1 << 20, 10}, {0, 10}};
  w.Write("backup_record", "invalid-changes-order", SerializeBackupRecord(r));
  std::string format2 = full;
  format2.replace(format2.find("\"format\": 1"), 11, "\"format\": 2");
  w.Write("backup_record", "invalid-format-2", format2);
  w.Write("backup_record", "invalid-not-json", full.substr(0, full.size() / 2));
}

// ------------------------------------------------------------- store config

void StoreConfigSeeds(SeedWriter& w) {
  w.Write("store_config", "valid-default", SerializeStoreConfig(StoreConfig{}));
  StoreConfig c;
  c.chunk_size = 4096;
  c.compression = "zstd";
  c.zstd_level = 19;
  w.Write("store_config", "valid-zstd-4k-19", SerializeStoreConfig(c));
  c = StoreConfig{};
  c.format = 7;
  w.Write("store_config", "invalid-format-7", SerializeStoreConfig(c));
  c = StoreConfig{};
  c.chunk_size = 1000;
  w.Write("store_config", "invalid-chunk-size", SerializeStoreConfig(c));
  c = StoreConfig{};
  c.compression = "lz4";
  w.Write("store_config", "invalid-compression", SerializeStoreConfig(c));
  w.Write("store_config", "invalid-array", "[1, 262144, \"zstd\", 3]\n");
}

// ------------------------------------------------------------------ change

void ChangeSeeds(SeedWriter& w) {
  Change c{7, Change::Kind::kAdded, "2f1c7a0e-5b9d-4c3e-9a51-0d6f2b8e4c11",
           "20261207T081500Z", 1765095300};
  w.Write("change", "valid-added", SerializeChange(c));
  c.kind = Change::Kind::kRemoved;
  c.checkpoint = "nightly 1/a";
  w.Write("change", "valid-removed", SerializeChange(c));
  c.seq = 8;
  w.Write("change", "invalid-seq-not-its-key", SerializeChange(c));
  const std::string text = SerializeChange(c);
  w.Write("change", "invalid-truncated", text.substr(0, text.size() / 2));
}

// --------------------------------------------------------------- object key

void ObjectKeySeeds(SeedWriter& w) {
  const BackupRecord r = SampleRecord(false);
  w.Write("object_key", "valid-record-key",
          Store::RecordKey(r.domain_uuid, "my snap/1"));
  w.Write("object_key", "valid-manifest-key",
          Store::ManifestKey(r.domain_uuid, r.checkpoint, "disk 0"));
  w.Write("object_key", "valid-component", EncodeKeyComponent(".hidden+x/y"));
  w.Write("object_key", "valid-chunk-key",
          Store::ChunkKey(Sha256(std::as_bytes(std::span("x", 1)))));
  w.Write("object_key", "invalid-dotdot", "backups/../../etc/passwd");
  w.Write("object_key", "invalid-empty-component", "locks//x");
  w.Write("object_key", "invalid-noncanonical", "+41+2");
}

// --------------------------------------------------------------- store objects

// A store as the daemon leaves it, in the store_objects input format.
std::string StoreImage(bool incremental_too, bool damage) {
  auto owned = std::make_unique<MemoryObjectStore>("seeds");
  MemoryObjectStore* memory = owned.get();  // owned by the store below
  StoreConfig config;
  config.chunk_size = 4096;
  auto store = Store::Open(std::move(owned), true, config);
  Check(store.status());
  Store& s = **store;
  Check(s.PutLock({.name = "backup-web01", .started = 1795000000}));
  auto put_backup = [&](bool incremental) {
    BackupRecord r = SampleRecord(incremental);
    r.disks.resize(1);
    r.disks[0].size = 3 * 4096 - 100;
    r.disks[0].changes = {{0, 4096}};
    Manifest m;
    m.backup_id = r.id;
    m.disk = "vda";
    m.size = r.disks[0].size;
    m.chunk_size = 4096;
    for (int i = 0; i < 3; ++i) {
      std::vector<std::byte> plain(i == 2 ? 4096 - 100 : 4096);
      if (i != 1) {
        for (size_t k = 0; k < plain.size(); ++k) {
          plain[k] = static_cast<std::byte>(k * (i + incremental + 1));
        }
      }
      auto ref = s.PutChunk(plain);
      Check(ref.status());
      m.chunks.push_back(*ref);
    }
    Check(s.PutManifest(r, m));
    Check(s.PutBackup(r));
  };
  put_backup(false);
  if (incremental_too) put_backup(true);
  std::string out;
  for (const auto& [key, bytes] : memory->objects()) {
    std::string body = Text(bytes);
    if (damage && key.ends_with("backup.json")) {
      body.replace(body.find("\"mode\""), 6, "\"mood\"");
    }
    out += "=== " + key + "\n" + body + "\n";
  }
  return out;
}

void StoreObjectsSeeds(SeedWriter& w) {
  w.Write("store_objects", "valid-one-backup", StoreImage(false, false));
  w.Write("store_objects", "valid-two-backups", StoreImage(true, false));
  w.Write("store_objects", "invalid-damaged-records", StoreImage(true, true));
  w.Write("store_objects", "invalid-config",
          "=== config.json\n{\"format\": 7}\n=== locks/x\n{\"started\": "
          "\"yesterday\"}\n");
}

// ------------------------------------------------------------- catalog json

void CatalogJsonSeeds(SeedWriter& w) {
  Job ok;
  ok.id = "20261123T081500Z-0001ab";
  ok.kind = "backup";
  ok.request = "web01 mode=incremental";
  ok.domain = "web01";
  ok.checkpoint = "20261123T081500Z";
  ok.mode = "incremental";
  ok.base = "20261122T081500Z";
  ok.state = "succeeded";
  ok.done = ok.total = 1 << 30;
  ok.created_ms = 1795000000000;
  ok.started_ms = 1795000001000;
  ok.ended_ms = 1795000060000;
  w.Write("catalog_json", "valid-job-succeeded", JobToJson(ok).dump());
  Job failed;
  failed.id = "20261123T081501Z-0002cd";
  failed.kind = "checkpoint";
  failed.request = "nosuch";
  failed.domain = "nosuch";
  failed.state = "rejected";
  failed.error = "unknown domain 'nosuch'";
  failed.code = "not-found";
  failed.created_ms = 1795000001000;
  w.Write("catalog_json", "valid-job-rejected", JobToJson(failed).dump(2));
  w.Write("catalog_json", "valid-changes",
          nlohmann::json(SampleRecord(false).disks[0].changes).dump());
  w.Write("catalog_json", "invalid-job-types",
          "{\"id\": 7, \"progress\": {\"done\": -1, \"total\": 2.5}, "
          "\"created\": \"2026-02-30T25:00:00Z\"}");
  w.Write("catalog_json", "invalid-changes", "[[0, 65536], [\"x\"]]");
}

// -------------------------------------------------------------- libvirt xml

void LibvirtXmlSeeds(SeedWriter& w) {
  XmlWriter d("domain");
  d.RootAttr("type", "kvm");
  d.Leaf("name", {}, "web01");
  d.Leaf("uuid", {}, "0b4a1f2e-1111-2222-3333-444455556666");
  d.Open("devices");
  d.Open("disk", {{"type", "file"}, {"device", "disk"}});
  d.Leaf("driver", {{"name", "qemu"}, {"type", "qcow2"}});
  d.Leaf("source", {{"file", "/var/lib/libvirt/images/web01.qcow2"}});
  d.Leaf("target", {{"dev", "vda"}, {"bus", "virtio"}});
  d.Close();
  d.Open("disk", {{"type", "block"}, {"device", "cdrom"}});
  d.Leaf("source", {{"dev", "/dev/sr0"}});
  d.Leaf("target", {{"dev", "sda"}, {"bus", "sata"}});
  d.Leaf("readonly");
  d.Close();
  w.Write("libvirt_xml", "valid-domain", d.ToString());

  XmlWriter c("domaincheckpoint");
  c.Leaf("name", {}, "20261124T081500Z");
  c.Open("parent").Leaf("name", {}, "20261123T081500Z").Close();
  c.Leaf("creationTime", {}, "1795000000");
  c.Open("disks");
  c.Leaf("disk", {{"name", "vda"},
                  {"checkpoint", "bitmap"},
                  {"bitmap", "20261124T081500Z"}});
  c.Leaf("disk", {{"name", "vdb"}, {"checkpoint", "no"}});
  w.Write("libvirt_xml", "valid-checkpoint", c.ToString());

  XmlWriter b("domainbackup");
  b.RootAttr("mode", "pull");
  b.Leaf("incremental", {}, "20261123T081500Z");
  b.Leaf("server", {{"transport", "unix"},
                    {"socket", "/var/lib/ckptfs/run/0b4a/nbd.sock"}});
  b.Open("disks");
  b.Open("disk", {{"name", "vda"},
                  {"backup", "yes"},
                  {"type", "file"},
                  {"exportname", "vda"},
                  {"exportbitmap", "backup-vda"}});
  b.Leaf("driver", {{"type", "qcow2"}});
  b.Leaf("scratch", {{"file", "/var/lib/ckptfs/run/0b4a/vda.scratch"}});
  b.Close();
  b.Leaf("disk", {{"name", "vdb"}, {"backup", "no"}});
  w.Write("libvirt_xml", "valid-backup", b.ToString());

  w.Write("libvirt_xml", "invalid-unclosed", "<domain><name>web01</name>");
  w.Write("libvirt_xml", "invalid-no-name",
          "<domain><devices><disk device='disk'/></devices></domain>");
  w.Write("libvirt_xml", "valid-entities",
          "<!DOCTYPE domain [<!ENTITY a 'web'><!ENTITY b '&a;&a;'>]>"
          "<domain><name>&b;</name></domain>");
}

}  // namespace
}  // namespace ckptfs

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_seeds CORPUS_DIR (tests/fuzz/corpus)\n";
    return 2;
  }
  ckptfs::SeedWriter w(argv[1]);
  ckptfs::ControlSeeds(w);
  ckptfs::ManifestSeeds(w);
  ckptfs::IndexPageSeeds(w);
  ckptfs::BackupRecordSeeds(w);
  ckptfs::StoreConfigSeeds(w);
  ckptfs::ChangeSeeds(w);
  ckptfs::ObjectKeySeeds(w);
  ckptfs::StoreObjectsSeeds(w);
  ckptfs::CatalogJsonSeeds(w);
  ckptfs::LibvirtXmlSeeds(w);
  std::cout << "fuzz_seeds: wrote " << w.count() << " seeds under " << argv[1]
            << "\n";
  return 0;
}
