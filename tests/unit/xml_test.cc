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
  EXPECT_TRUE(c->sized.empty());

  // With VIR_DOMAIN_CHECKPOINT_XML_SIZE libvirt sizes only the disks whose
  // bitmap it can use: vdb's is missing or inconsistent.
  auto s = ParseCheckpointXml(R"(<domaincheckpoint><name>cp2</name>
    <disks><disk name='vda' checkpoint='bitmap' bitmap='cp2' size='0'/>
    <disk name='vdb' checkpoint='bitmap' bitmap='cp2'/>
    <disk name='vdc' checkpoint='no'/></disks></domaincheckpoint>)");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->disks, (std::vector<std::string>{"vda", "vdb"}));
  EXPECT_EQ(s->sized, std::vector<std::string>{"vda"});

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
  EXPECT_EQ(b->disks[0].backupmode, "incremental");
  EXPECT_EQ(b->disks[0].scratch, "/run/x/vda.scratch");
  EXPECT_FALSE(b->disks[1].backup);
}

// Found by fuzz.libvirt_xml (tests/fuzz/corpus/libvirt_xml/
// crash-creation-time-out-of-range): strtoll saturates an absurd
// creationTime, and the tree shows it as creation_time * 1000.
TEST(XmlTest, CheckpointCreationTimeInRange) {
  auto xml = [](const std::string& t) {
    return "<domaincheckpoint><name>c</name><creationTime>" + t +
           "</creationTime></domaincheckpoint>";
  };
  auto ok = ParseCheckpointXml(xml("9223372036854775"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->creation_time, 9223372036854775);
  for (const char* bad :
       {"9223372036854776", "-9223372036854776", "99999999999999999999999"}) {
    auto c = ParseCheckpointXml(xml(bad));
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  }
}

// A checkpoint deleted and made again under its name within the same second
// has the old creation time: only ckptfs's nonce tells them apart.
TEST(XmlTest, RecordedCheckpointNeedsTimeAndNonce) {
  auto xml = [](const std::string& description, int64_t t) {
    return "<domaincheckpoint><name>k1</name><description>" + description +
           "</description><creationTime>" + std::to_string(t) +
           "</creationTime></domaincheckpoint>";
  };
  const std::string d1 = CheckpointDescription();
  const std::string d2 = CheckpointDescription();
  ASSERT_NE(d1, d2);
  auto cp = ParseCheckpointXml(xml(d1, 100));
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_EQ(cp->nonce.size(), 16u);
  EXPECT_TRUE(IsRecordedCheckpoint(*cp, 100, xml(d1, 100)));
  EXPECT_FALSE(IsRecordedCheckpoint(*cp, 101, xml(d1, 101)));
  EXPECT_FALSE(IsRecordedCheckpoint(*cp, 100, xml(d2, 100)));
  // Made again by someone else (virsh), or recorded so: no nonce on one side.
  EXPECT_FALSE(IsRecordedCheckpoint(*cp, 100, xml("", 100)));
  auto foreign = ParseCheckpointXml(xml("made by hand", 100));
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(foreign->nonce, "");
  EXPECT_FALSE(IsRecordedCheckpoint(*foreign, 100, xml(d1, 100)));
  // Neither has one (checkpoints of older ckptfs versions): the time decides.
  EXPECT_TRUE(
      IsRecordedCheckpoint(*foreign, 100, xml("created by ckptfs", 100)));
  // A record whose XML does not parse proves nothing.
  EXPECT_FALSE(IsRecordedCheckpoint(*foreign, 100, "<domaincheckpoint>"));
}

}  // namespace
}  // namespace ckptfs
