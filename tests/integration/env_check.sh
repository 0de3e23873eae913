#!/usr/bin/env bash
# Environment check, no ckptfs involved: proves with virsh + nbdinfo/nbdcopy
# that a libvirt pull-mode backup works here the way ckptfs expects it to
# (socket dir ownership, scratch files, copy-before-write, 64 KiB dirty
# bitmaps, job end by abort). Not a CTest test (no test_ prefix); run it by
# hand as root:  bash tests/integration/env_check.sh
# It uses lib.sh, so CKPTFS_BIN is not needed: a stand-in is set.
set -euo pipefail
export CKPTFS_BIN=${CKPTFS_BIN:-/bin/true}
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
R="$CKT_WORK/run/$DOM"

backup_xml() {  # [INCREMENTAL_FROM]
  echo "<domainbackup mode='pull'>"
  [[ -n "${1:-}" ]] && echo "  <incremental>$1</incremental>"
  cat <<EOF
  <server transport='unix' socket='$R/nbd.sock'/>
  <disks>
    <disk name='vda' backup='yes' type='file'><scratch file='$R/vda.scratch'/></disk>
    <disk name='vdb' backup='yes' type='file'><scratch file='$R/vdb.scratch'/></disk>
  </disks>
</domainbackup>
EOF
}

checkpoint_xml() { echo "<domaincheckpoint><name>$1</name></domaincheckpoint>"; }

uri() { echo "nbd+unix:///$1?socket=$R/nbd.sock"; }

# Data extents of an NBD export (base:allocation), merged "off len".
nbd_data_map() {  # EXPORT
  nbdinfo --map "$(uri "$1")" | awk '$3 == 0 {print $1, $2}' | align_merge
}

nbd_dirty_map() {  # EXPORT
  nbdinfo --map="qemu:dirty-bitmap:backup-$1" "$(uri "$1")" | awk '$3 == 1 {print $1, $2}' | align_merge
}

begin() {  # CHECKPOINT [INCREMENTAL_FROM]
  backup_xml "${2:-}" >"$CKT_WORK/backup.xml"
  checkpoint_xml "$1" >"$CKT_WORK/checkpoint.xml"
  virsh -q backup-begin "$DOM" "$CKT_WORK/backup.xml" "$CKT_WORK/checkpoint.xml" >/dev/null \
    || fail "virsh backup-begin $1 failed"
  assert_has_job "$DOM"
}

abort() {
  virsh domjobabort "$DOM" >/dev/null || fail "domjobabort failed"
  assert_no_job "$DOM"
}

make_domain "$DOM" 256M 128M
# The socket dir: QEMU (uid libvirt-qemu) must be able to create the socket.
mkdir -p "$R"
chown libvirt-qemu:libvirt-qemu "$R"
chmod 0700 "$R"

guest_write "$DOM" 0 0x41 1M 64k
guest_write "$DOM" 0 0x42 10M 200k
guest_write "$DOM" 1 0x61 0 4k
guest_write "$DOM" 1 0x62 100M 1M
mark "$DOM" cp1

begin cp1
for i in 0 1; do
  t=$(disk_target $i)
  assert_eq "$(nbd_data_map "$t")" "$(expected_allocated "$DOM" $i cp1)" "cp1 $t allocation map"
done
# Writes during the export overlap cp1's data: copy-before-write must keep
# the export at cp1.
guest_write "$DOM" 0 0x43 1056k 64k
guest_write "$DOM" 0 0x44 50M 1M
guest_write "$DOM" 1 0x63 0 64k
for i in 0 1; do
  t=$(disk_target $i)
  nbdcopy "$(uri "$t")" "$CKT_WORK/$t.cp1.copy"
  cmp_image "$CKT_WORK/$t.cp1.copy" "$(expected_file "$DOM" $i cp1)" "cp1 $t via nbdcopy"
done
abort
assert_eq "$(checkpoint_names "$DOM")" "cp1" "checkpoints after abort"

guest_write "$DOM" 1 0x64 64M 128k
mark "$DOM" cp2
begin cp2 cp1
guest_write "$DOM" 0 0x45 1M 128k
for i in 0 1; do
  t=$(disk_target $i)
  assert_eq "$(nbd_dirty_map "$t")" "$(expected_changes "$DOM" $i cp1 cp2)" "cp2 $t dirty bitmap"
  nbdcopy "$(uri "$t")" "$CKT_WORK/$t.cp2.copy"
  cmp_image "$CKT_WORK/$t.cp2.copy" "$(expected_file "$DOM" $i cp2)" "cp2 $t via nbdcopy"
done
abort
assert_eq "$(checkpoint_names "$DOM" | tr '\n' ' ')" "cp1 cp2 " "checkpoints after second abort"
say "environment OK: pull-mode backup, copy-before-write, dirty bitmaps, abort"
