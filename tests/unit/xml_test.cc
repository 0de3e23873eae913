#include "backend/xml.h"

#include <gtest/gtest.h>

#include "backend/libvirt_client.h"

namespace ckptfs {
namespace {

TEST(XmlTest, WriterEscapes) {
  XmlWriter w("domaincheckpoint");
  w.Leaf("name", {}, "a<b&\"c'");
  w.Open("disks").Leaf("disk", {{"name", "vda"}, {"checkpoint", "bit'map"}});
  std::string xml = w.ToString();
  auto doc = XmlDoc::Parse(xml);
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->Text("/domaincheckpoint/name"), "a<b&\"c'");
  EXPECT_EQ(doc->Attr("/domaincheckpoint/disks/disk", "checkpoint"), "bit'map");
}

TEST(XmlTest, MalformedIsInvalid) {
  EXPECT_EQ(XmlDoc::Parse("<a><b></a>").status().code(),
            Code::kInvalidArgument);
  EXPECT_FALSE(ParseDomainXml("<domain/>").ok());
}

TEST(XmlTest, DomainDisks) {
  auto d = ParseDomainXml(R"(<domain type='kvm'><name>vm1</name>
    <uuid>0b5c0b47-3a4b-4a0e-9f5e-6e43e2f6b1a1</uuid><devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/sdz'/><target dev='vdb' bus='virtio'/><readonly/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    </devices></domain>)");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "vm1");
  ASSERT_EQ(d->disks.size(), 3u);
  EXPECT_EQ(d->disks[0].target, "vda");
  EXPECT_EQ(d->disks[0].format, "qcow2");
  EXPECT_EQ(d->disks[0].source, "/img/a.qcow2");
  EXPECT_FALSE(d->disks[0].readonly);
  EXPECT_EQ(d->disks[1].source, "/dev/sdz");
  EXPECT_TRUE(d->disks[1].readonly);
  EXPECT_EQ(d->disks[2].device, "cdrom");
}

TEST(XmlTest, CheckpointAndBackup) {
  auto c = ParseCheckpointXml(R"(<domaincheckpoint><name>cp2</name>
    <parent><name>cp1</name></parent><creationTime>1763900000</creationTime>
    <disks><disk name='vda' checkpoint='bitmap' bitmap='cp2'/>
    <disk name='vdb' checkpoint='no'/></disks>
    <domain><name>vm1</name></domain></domaincheckpoint>)");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->parent, "cp1");
  EXPECT_EQ(c->creation_time, 1763900000);
  EXPECT_EQ(c->disks, std::vector<std::string>{"vda"});

  auto b = ParseBackupXml(R"(<domainbackup mode='pull'>
    <incremental>cp1</incremental>
    <server transport='unix' socket='/run/x/nbd.sock'/>
    <disks><disk name='vda' backup='yes' type='file' backupmode='incremental'
      incremental='cp1' exportname='vda' exportbitmap='backup-vda'>
      <driver type='qcow2'/><scratch file='/run/x/vda.scratch'/></disk>
    <disk name='vdb' backup='no'/></disks></domainbackup>)");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->mode, "pull");
  EXPECT_EQ(b->socket, "/run/x/nbd.sock");
  EXPECT_EQ(b->incremental, "cp1");
  ASSERT_EQ(b->disks.size(), 2u);
  EXPECT_EQ(b->disks[0].export_bitmap, "backup-vda");
  EXPECT_EQ(b->disks[0].scratch, "/run/x/vda.scratch");
  EXPECT_FALSE(b->disks[1].backup);
}

}  // namespace
}  // namespace ckptfs
