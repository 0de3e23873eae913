// Fuzz target: the libvirt XML parsers (backend/libvirt_client.h:
// ParseDomainXml, ParseCheckpointXml, ParseBackupXml; XmlDoc of
// backend/xml.h underneath). Every input goes to all three.
//
// Checked for what parses:
// - the documented musts: a domain and a checkpoint have a name, every
//   listed disk has a target, a checkpoint keeps its XML verbatim and its
//   creation time is one the tree can render (IsoTime(seconds * 1000));
// - the values read back unchanged from the XML libvirt would write for them
//   (built with XmlWriter, as ckptfs builds its backup XML), so nothing the
//   parser returns depends on escaping, attribute order or defaults.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/libvirt_client.h"
#include "backend/xml.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

bool SameDisk(const DiskInfo& a, const DiskInfo& b) {
  return a.target == b.target && a.device == b.device && a.format == b.format &&
         a.source == b.source && a.readonly == b.readonly;
}

std::string DomainXml(const DomainInfo& d) {
  XmlWriter w("domain");
  w.RootAttr("type", "kvm");
  w.Leaf("name", {}, d.name);
  w.Leaf("uuid", {}, d.uuid);
  w.Open("devices");
  for (const DiskInfo& disk : d.disks) {
    w.Open("disk", {{"type", "file"}, {"device", disk.device}});
    if (!disk.format.empty()) {
      w.Leaf("driver", {{"name", "qemu"}, {"type", disk.format}});
    }
    if (!disk.source.empty()) w.Leaf("source", {{"file", disk.source}});
    w.Leaf("target", {{"dev", disk.target}, {"bus", "virtio"}});
    if (disk.readonly) w.Leaf("readonly");
    w.Close();
  }
  return w.Close().ToString();
}

void FuzzDomain(const std::string& xml) {
  auto d = ParseDomainXml(xml);
  if (!d.ok()) {
    FUZZ_CHECK(d.status().code() == Code::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!d->name.empty());
  for (const DiskInfo& disk : d->disks) FUZZ_CHECK(!disk.target.empty());
  const std::string written = DomainXml(*d);
  auto again = ParseDomainXml(written);
  FUZZ_CHECK_MSG(again.ok(), written);
  FUZZ_CHECK_MSG(again->name == d->name && again->uuid == d->uuid, written);
  FUZZ_CHECK_MSG(again->disks.size() == d->disks.size(), written);
  for (size_t i = 0; i < d->disks.size(); ++i) {
    FUZZ_CHECK_MSG(SameDisk(again->disks[i], d->disks[i]), written);
  }
}

std::string CheckpointXml(const CheckpointInfo& c) {
  XmlWriter w("domaincheckpoint");
  w.Leaf("name", {}, c.name);
  if (!c.parent.empty()) w.Open("parent").Leaf("name", {}, c.parent).Close();
  w.Leaf("creationTime", {}, std::to_string(c.creation_time));
  w.Open("disks");
  std::multiset<std::string> sized(c.sized.begin(), c.sized.end());
  for (const std::string& disk : c.disks) {
    std::vector<std::pair<std::string, std::string>> attrs = {
        {"name", disk}, {"checkpoint", "bitmap"}};
    if (auto it = sized.find(disk); it != sized.end()) {
      attrs.emplace_back("size", "65536");
      sized.erase(it);
    }
    w.Leaf("disk", attrs);
  }
  return w.Close().ToString();
}

void FuzzCheckpoint(const std::string& xml) {
  auto c = ParseCheckpointXml(xml);
  if (!c.ok()) {
    FUZZ_CHECK(c.status().code() == Code::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!c->name.empty());
  FUZZ_CHECK(c->xml == xml);
  FUZZ_CHECK(fuzz::MillisecondsFit(c->creation_time));
  const std::string written = CheckpointXml(*c);
  auto again = ParseCheckpointXml(written);
  FUZZ_CHECK_MSG(again.ok(), written);
  FUZZ_CHECK_MSG(again->name == c->name && again->parent == c->parent &&
                     again->creation_time == c->creation_time &&
                     again->disks == c->disks && again->sized == c->sized,
                 written);
}

std::string BackupXml(const BackupJobInfo& b) {
  XmlWriter w("domainbackup");
  w.RootAttr("mode", b.mode);
  if (!b.incremental.empty()) w.Leaf("incremental", {}, b.incremental);
  w.Leaf("server", {{"transport", b.transport}, {"socket", b.socket}});
  w.Open("disks");
  for (const BackupJobInfo::Disk& d : b.disks) {
    w.Open("disk", {{"name", d.name},
                    {"backup", d.backup ? "yes" : "no"},
                    {"exportname", d.export_name},
                    {"exportbitmap", d.export_bitmap},
                    {"backupmode", d.backupmode}});
    w.Leaf("scratch", {{"file", d.scratch}});
    w.Close();
  }
  return w.Close().ToString();
}

void FuzzBackup(const std::string& xml) {
  auto b = ParseBackupXml(xml);
  if (!b.ok()) {
    FUZZ_CHECK(b.status().code() == Code::kInvalidArgument);
    return;
  }
  const std::string written = BackupXml(*b);
  auto again = ParseBackupXml(written);
  FUZZ_CHECK_MSG(again.ok(), written);
  FUZZ_CHECK_MSG(again->mode == b->mode && again->transport == b->transport &&
                     again->socket == b->socket &&
                     again->incremental == b->incremental &&
                     again->disks.size() == b->disks.size(),
                 written);
  for (size_t i = 0; i < b->disks.size(); ++i) {
    const auto& x = again->disks[i];
    const auto& y = b->disks[i];
    FUZZ_CHECK_MSG(x.name == y.name && x.backup == y.backup &&
                       x.export_name == y.export_name &&
                       x.export_bitmap == y.export_bitmap &&
                       x.backupmode == y.backupmode && x.scratch == y.scratch,
                   written);
  }
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string xml(ckptfs::fuzz::AsText(data, size));
  ckptfs::FuzzDomain(xml);
  ckptfs::FuzzCheckpoint(xml);
  ckptfs::FuzzBackup(xml);
  return 0;
}
