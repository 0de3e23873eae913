#!/usr/bin/env bash
# Live checkpoints as files: point-in-time images under concurrent guest
# writes (copy-before-write), .changes for full and incremental checkpoints,
# info.json, latest, default names, release, disks= selection.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
MiB=$((1024 * 1024))

check_files() {  # DIR DISK...
  local dir=$1 d
  shift
  assert_exists "$dir/checkpoint.xml" "$dir/info.json"
  for d in "$@"; do
    assert_exists "$dir/$d.img" "$dir/$d.changes"
  done
}

check_info() {  # DIR CHECKPOINT BASE DISK...
  local dir=$1 cp=$2 base=$3 f="$1/info.json" i=0 d
  shift 3
  assert_json_valid "$f"
  assert_json "$f" domain "$DOM"
  assert_json "$f" checkpoint "$cp"
  assert_json "$f" state live
  assert_json "$f" base "$base"
  assert_match "$(json_get "$f" created)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' "$f created"
  assert_eq "$(json_get "$f" disks | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" "$#" "$f number of disks"
  for d in "$@"; do
    assert_json "$f" "disks.$i.name" "$d"
    assert_json "$f" "disks.$i.source" "$(dom_dir "$DOM")/$d.qcow2"
    assert_json "$f" "disks.$i.size" "$(stat -c %s "$dir/$d.img")"
    i=$((i + 1))
  done
}

# ----------------------------------------------------------------- setup
make_domain "$DOM" 256M 128M
ckpt_mount
D="$CKT_MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

# ----------------------------------------------------------------- cp1 (full)
guest_write "$DOM" 0 0x41 1M 64k
guest_write "$DOM" 0 0x42 10M 200k     # unaligned end: clusters 10M..10M+256k
guest_write "$DOM" 0 0x43 200M 3M
guest_write "$DOM" 1 0x61 0 4k
guest_write "$DOM" 1 0x62 100M 1M
mark "$DOM" cp1

id=$(ctl_ok checkpoint "$DOM name=cp1")
jf=$(job_file "$id")
assert_json_valid "$jf"
assert_json "$jf" kind checkpoint
assert_json "$jf" domain "$DOM"
assert_json "$jf" checkpoint cp1
assert_json "$jf" state succeeded

check_files "$D/cp1" vda vdb
assert_symlink "$D/latest" cp1
assert_contains "$(virsh checkpoint-list "$DOM" --name)" cp1 "virsh checkpoint-list"
assert_contains "$(timeout 60 cat "$D/cp1/checkpoint.xml")" "<name>cp1</name>" "cp1/checkpoint.xml"
check_info "$D/cp1" cp1 null vda vdb
assert_eq "$(stat -c %s "$D/cp1/vda.img")" $((256 * MiB)) "vda.img size"
assert_eq "$(stat -c %s "$D/cp1/vdb.img")" $((128 * MiB)) "vdb.img size"

# Guest writes during the export, over cp1's data and elsewhere: the
# images must stay at cp1 (copy-before-write).
guest_write "$DOM" 0 0x44 1056k 64k    # overlaps 1M..1M+64k, spills into next cluster
guest_write "$DOM" 0 0x45 10M 4k
guest_write "$DOM" 0 0x46 50M 1M       # previously unallocated
guest_write "$DOM" 1 0x63 0 64k
guest_write "$DOM" 1 0x64 100M 512k

cmp_image "$D/cp1/vda.img" "$(expected_file "$DOM" 0 cp1)" "cp1 vda.img"
cmp_image "$D/cp1/vdb.img" "$(expected_file "$DOM" 1 cp1)" "cp1 vdb.img"
# No base: .changes lists the allocated extents.
assert_changes "$D/cp1/vda.changes" "$(expected_allocated "$DOM" 0 cp1)" "cp1 vda.changes"
assert_changes "$D/cp1/vdb.changes" "$(expected_allocated "$DOM" 1 cp1)" "cp1 vdb.changes"
assert_json "$D/cp1/info.json" disks.0.allocated "$(expected_allocated "$DOM" 0 cp1 | sum_extents)"
assert_json "$D/cp1/info.json" disks.1.allocated "$(expected_allocated "$DOM" 1 cp1 | sum_extents)"

# ----------------------------------------------------------------- cp2 (incremental)
guest_write "$DOM" 1 0x65 64M 128k
mark "$DOM" cp2
ctl_ok checkpoint "$DOM name=cp2" >/dev/null
assert_not_exists "$D/cp1"
names=$(checkpoint_names "$DOM" | tr '\n' ' ')
assert_contains "$names" cp1 "virsh checkpoint-list after cp2"
assert_contains "$names" cp2 "virsh checkpoint-list after cp2"
check_files "$D/cp2" vda vdb
assert_symlink "$D/latest" cp2
check_info "$D/cp2" cp2 cp1 vda vdb

# Writes after cp2, over the extents cp2 changed.
guest_write "$DOM" 0 0x47 1M 128k
guest_write "$DOM" 0 0x48 50M 64k
guest_write "$DOM" 1 0x66 64M 64k
guest_write "$DOM" 1 0x67 1M 64k

assert_changes "$D/cp2/vda.changes" "$(expected_changes "$DOM" 0 cp1 cp2)" "cp2 vda.changes"
assert_changes "$D/cp2/vdb.changes" "$(expected_changes "$DOM" 1 cp1 cp2)" "cp2 vdb.changes"
cmp_image "$D/cp2/vda.img" "$(expected_file "$DOM" 0 cp2)" "cp2 vda.img"
cmp_image "$D/cp2/vdb.img" "$(expected_file "$DOM" 1 cp2)" "cp2 vdb.img"

# ----------------------------------------------------------------- default name
mark "$DOM" cp3
id=$(ctl_ok checkpoint "$DOM")
cp3=$(json_get "$(job_file "$id")" checkpoint)
assert_match "$cp3" '^[0-9]{8}T[0-9]{6}Z$' "default checkpoint name"
assert_not_exists "$D/cp2"
check_files "$D/$cp3" vda vdb
assert_symlink "$D/latest" "$cp3"
check_info "$D/$cp3" "$cp3" cp2 vda vdb
assert_changes "$D/$cp3/vda.changes" "$(expected_changes "$DOM" 0 cp2 cp3)" "$cp3 vda.changes"

# ----------------------------------------------------------------- release
id=$(ctl_ok release "$DOM $cp3")
assert_json "$(job_file "$id")" kind release
assert_not_exists "$D/$cp3" "$D/latest"
assert_no_job "$DOM"
names=$(checkpoint_names "$DOM" | tr '\n' ' ')
for c in cp1 cp2 "$cp3"; do
  assert_contains "$names" "$c" "checkpoints kept in libvirt after release"
done

# ----------------------------------------------------------------- disks=vdb
guest_write "$DOM" 1 0x68 20M 64k
mark "$DOM" cpb
ctl_ok checkpoint "$DOM name=cpb disks=vdb" >/dev/null
check_files "$D/cpb" vdb
assert_not_exists "$D/cpb/vda.img" "$D/cpb/vda.changes"
check_info "$D/cpb" cpb "$cp3" vdb
guest_write "$DOM" 1 0x69 20M 64k
cmp_image "$D/cpb/vdb.img" "$(expected_file "$DOM" 1 cpb)" "cpb vdb.img"
assert_changes "$D/cpb/vdb.changes" "$(expected_changes "$DOM" 1 cp3 cpb)" "cpb vdb.changes"
ctl_ok release "$DOM cpb" >/dev/null
assert_not_exists "$D/cpb"
assert_no_job "$DOM"

ckpt_umount
assert_no_job "$DOM"
