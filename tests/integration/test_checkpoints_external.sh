#!/usr/bin/env bash
# Checkpoints changed behind ckptfs's back with virsh (issue 4, faults). The
# base chooser re-reads libvirt at every decision: a backup is a base only
# while libvirt has its checkpoint (the same one: same creation time) with a
# bitmap it can use on the disk; otherwise the next older such backup, and a
# disk with no usable bitmap is copied in full. Every case is checked byte
# for byte, .changes included:
#  - a live checkpoint deleted in libvirt stays readable and can be backed
#    up, but is never a base;
#  - a checkpoint made with virsh has no data: not in the tree, never a base;
#  - checkpoint-delete --metadata keeps the bitmap recording: the
#    checkpoint redefined later (checkpoint-create --redefine) is a base;
#  - checkpoint-delete removes the bitmap: skipped, also once redefined;
#  - deleted and created again under the same name: skipped (its bitmap
#    began later; using it would lose the writes in between);
#  - a disk that lost all its bitmaps (qemu-img bitmap --remove on the
#    stopped domain): that disk full, the other incremental.
# Stored backups stay served byte-identical, also after a remount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
make_domain "$DOM" 64M 64M
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
STORED=()

# backup TAG EXPECTED_BASE ("" = full) [FULL_DISKS_JSON]: backs up a new
# checkpoint TAG (marked first) and checks mode, base, bytes and .changes.
backup() {
  local tag=$1 base=$2 full=${3:-[]} id i t
  mark "$DOM" "$tag"
  id=$(ctl_accepted backup "$DOM name=$tag")
  wait_job "$id" succeeded
  check_backup "$id" "$tag" "$base" "$full"
}

check_backup() {  # JOB TAG EXPECTED_BASE FULL_DISKS_JSON
  local id=$1 tag=$2 base=$3 full=$4 i t
  if [[ -z "$base" ]]; then
    assert_json "$(job_file "$id")" mode full
  else
    assert_json "$(job_file "$id")" mode incremental
    assert_json "$(job_file "$id")" base "$base"
    assert_json "$(job_file "$id")" full_disks "$full"
  fi
  for i in 0 1; do
    t=$(disk_target "$i")
    cmp_image "$D/$tag/$t.img" "$(expected_file "$DOM" "$i" "$tag")" "$tag $t"
    if [[ -z "$base" || "$full" == *"\"$t\""* ]]; then
      assert_changes "$D/$tag/$t.changes" "$(expected_allocated "$DOM" "$i" "$tag")" "$tag $t (full)"
    else
      assert_changes "$D/$tag/$t.changes" "$(expected_changes "$DOM" "$i" "$base" "$tag")" "$tag $t (since $base)"
    fi
  done
  STORED+=("$tag")
}

writes() {  # PATTERN: one write per disk, at offsets that move with it
  local p=$1
  guest_write "$DOM" 0 "$p" "$(((p & 0x3f) * 1024 * 1024))" 64k
  guest_write "$DOM" 1 "$p" "$(((p & 0x3f) * 512 * 1024 + 65536))" 128k
}

bitmaps() { running_bitmaps "$DOM"; }

writes 0x01
backup k1 ""
writes 0x02
backup k2 k1

# ----------------------------------------------------------------- live, deleted in libvirt
writes 0x03
mark "$DOM" lv
ctl_ok checkpoint "$DOM name=lv" >/dev/null
virsh -q checkpoint-delete "$DOM" lv >/dev/null
[[ "$(bitmaps)" != *" lv "* ]] || fail "lv's bitmap is still there: $(bitmaps)"
pass "lv deleted in libvirt, bitmap gone"
writes 0x04   # after lv: copy-before-write keeps lv's point in time
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/lv/$t.img" "$(expected_file "$DOM" "$i" lv)" "live lv $t after its deletion in libvirt"
done
id=$(ctl_accepted backup "$DOM checkpoint=lv")
wait_job "$id" succeeded
check_backup "$id" lv k2 '[]'

# ----------------------------------------------------------------- made with virsh
virsh -q checkpoint-create-as "$DOM" vx >/dev/null
assert_not_exists "$D/vx"
writes 0x05
backup k3 k2   # not lv (gone from libvirt), not vx (no backup)
assert_not_exists "$D/vx"

# ----------------------------------------------------------------- --metadata
virsh checkpoint-dumpxml "$DOM" k3 >"$CKT_WORK/k3.xml"
virsh -q checkpoint-delete "$DOM" k3 --metadata >/dev/null
assert_contains "$(bitmaps)" "vda k3 consistent" "k3's bitmap after a metadata-only delete"
writes 0x06
backup k4 k2   # libvirt no longer lists k3
# ----------------------------------------------------------------- deleted, then redefined
virsh -q checkpoint-delete "$DOM" k4 >/dev/null
[[ "$(bitmaps)" != *" k4 "* ]] || fail "k4's bitmap is still there: $(bitmaps)"
virsh -q checkpoint-create "$DOM" "$CKT_WORK/k3.xml" --redefine >/dev/null
writes 0x07
backup k5 k3   # k3's bitmap recorded every write since k3
virsh checkpoint-dumpxml "$DOM" k5 >"$CKT_WORK/k5.xml"
virsh -q checkpoint-delete "$DOM" k5 >/dev/null
virsh -q checkpoint-create "$DOM" "$CKT_WORK/k5.xml" --redefine >/dev/null
assert_contains "$(virsh checkpoint-list "$DOM" --name)" "k5" "k5 redefined"
[[ "$(bitmaps)" != *" k5 "* ]] || fail "k5 has a bitmap again: $(bitmaps)"
writes 0x08
backup k6 k3   # k5 is listed but has no bitmap

# ----------------------------------------------------------------- same name, new checkpoint
old=$(checkpoint_epoch "$DOM" k6)
virsh -q checkpoint-delete "$DOM" k6 >/dev/null
writes 0x09   # only a base older than k6 sees these
wait_for "the clock passes k6's creation second" 5 test "$(date +%s)" -gt "$old"
virsh -q checkpoint-create-as "$DOM" k6 >/dev/null
assert_ne "$(checkpoint_epoch "$DOM" k6)" "$old" "creation time of the new k6"
writes 0x0a
backup k7 k3   # the new k6 began after k6's backup; k5 still has no bitmap

# ----------------------------------------------------------------- one disk without bitmaps
virsh -q destroy "$DOM" >/dev/null   # clean: QEMU stores the bitmaps
vda_qcow2="$(dom_dir "$DOM")/vda.qcow2"
for b in $(qcow2_bitmaps "$vda_qcow2" | cut -d' ' -f1); do
  qemu-img bitmap --remove "$vda_qcow2" "$b"
done
assert_eq "$(qcow2_bitmaps "$vda_qcow2")" "" "vda's bitmaps"
virsh -q start "$DOM" >/dev/null
writes 0x0b
backup k8 k7 '["vda"]'
writes 0x0c
backup k9 k8   # vda has k8's bitmap now

# ----------------------------------------------------------------- everything still served
check_stored() {  # WHEN
  local tag i t
  for tag in "${STORED[@]}"; do
    for i in 0 1; do
      t=$(disk_target "$i")
      evict_pages "$D/$tag/$t.img"
      cmp_image "$D/$tag/$t.img" "$(expected_file "$DOM" "$i" "$tag")" "stored $tag $t ($1)"
    done
    assert_json "$D/$tag/info.json" state stored
  done
  local listed="" e
  for e in "$D"/*; do
    [[ "$(basename "$e")" == latest ]] || listed+="$(basename "$e")"$'\n'
  done
  listed=$(printf '%s' "$listed" | sort | tr '\n' ' ')
  assert_eq "$listed" "$(printf '%s\n' "${STORED[@]}" | sort | tr '\n' ' ')" "checkpoints in the tree ($1)"
}
check_stored "after all the changes"
ckpt_umount "$MP"
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
check_stored "after a remount"
ckpt_umount "$MP"
