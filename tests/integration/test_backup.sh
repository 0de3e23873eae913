#!/usr/bin/env bash
# Backups into the store: a full and two incremental backups of a running
# 2-disk domain with guest writes during each job; every backup byte-identical
# to its expected state once its export has ended, again after a remount and
# after the domain is undefined, and apart from a new domain of the same name
# (under "<name>@<uuid>"); the incremental jobs read only the bytes the
# guest dirtied; identical data in a second domain is stored once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name two)
check_backup() {  # MP CHECKPOINT BASE MODE
  local d="$1/domains/$DOM/$2" i
  assert_json "$d/info.json" state stored
  assert_json "$d/info.json" base "$3"
  assert_json "$d/info.json" mode "$4"
  for i in 0 1; do
    cmp_image "$d/$(disk_target $i).img" "$(expected_file "$DOM" $i "$2")" "$2 $(disk_target $i).img"
  done
}

stored_chunks() { find "$CKT_WORK/store/chunks" -type f | wc -l; }

# ----------------------------------------------------------------- setup
make_domain "$DOM" 256M 128M
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

# ----------------------------------------------------------------- b1: full
guest_write "$DOM" 0 0x41 1M 1M
guest_write "$DOM" 0 0x42 100M 300k
guest_write "$DOM" 1 0x61 0 64k
guest_write "$DOM" 1 0x62 64M 2M
mark "$DOM" b1
id=$(ctl_accepted backup "$DOM name=b1")
# Guest writes while the job runs: copy-before-write keeps b1 as it was.
guest_write "$DOM" 0 0x43 1M 64k
guest_write "$DOM" 1 0x63 64M 128k
wait_job "$id" succeeded
jf=$(job_file "$id")
assert_json "$jf" kind backup
assert_json "$jf" mode full
assert_json "$jf" checkpoint b1
assert_no_job "$DOM"   # the export ended with the backup
check_backup "$MP" b1 null full
assert_changes "$D/b1/vda.changes" "$(expected_allocated "$DOM" 0 b1)" "b1 vda.changes"
assert_symlink "$D/latest" b1

# ----------------------------------------------------------------- b2: incremental
guest_write "$DOM" 0 0x44 50M 64k
guest_write "$DOM" 0 0x45 200M 512k
guest_write "$DOM" 1 0x64 10M 64k
mark "$DOM" b2
id=$(ctl_accepted backup "$DOM name=b2")
guest_write "$DOM" 0 0x46 50M 64k
wait_job "$id" succeeded
jf=$(job_file "$id")
assert_json "$jf" mode incremental
assert_json "$jf" base b1
# b1->b2 changes: the writes after b1 was fixed (during its job, too).
# The job reads exactly the dirty bytes from the export: a partly dirty chunk
# takes its clean part from b1's chunk (1M and 64M: over b1's data; 50M and
# 10M: over zero chunks).
want=$(( $(expected_changes "$DOM" 0 b1 b2 | sum_extents) \
       + $(expected_changes "$DOM" 1 b1 b2 | sum_extents) ))
assert_eq "$(json_get "$jf" progress.total)" "$want" "b2 bytes read (the dirty bytes only)"
check_backup "$MP" b2 b1 incremental
assert_changes "$D/b2/vda.changes" "$(expected_changes "$DOM" 0 b1 b2)" "b2 vda.changes"
check_backup "$MP" b1 null full

# ----------------------------------------------------------------- b3: incremental
guest_write "$DOM" 1 0x65 127M 1M
mark "$DOM" b3
id=$(ctl_accepted backup "$DOM name=b3 mode=incremental")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" base b2
check_backup "$MP" b3 b2 incremental
assert_symlink "$D/latest" b3

# mode=full is honoured even when a base exists.
guest_write "$DOM" 0 0x47 3M 64k
mark "$DOM" b4
id=$(ctl_accepted backup "$DOM name=b4 mode=full")
wait_job "$id" succeeded
check_backup "$MP" b4 null full

# ----------------------------------------------------------------- remount
ckpt_umount "$MP"
ckpt_mount
MP=$CKT_MP
for b in b1 b2 b3 b4; do wait_for "$b after remount" 30 test -d "$MP/domains/$DOM/$b"; done
check_backup "$MP" b1 null full
check_backup "$MP" b2 b1 incremental
check_backup "$MP" b3 b2 incremental

# ----------------------------------------------------------------- dedup across domains
make_domain "$DOM2" 64M
before=$(stored_chunks)
guest_write "$DOM2" 0 0x41 5M 1M    # the same bytes as b1's vda at 1M..2M
id=$(ctl_accepted backup "$DOM2 name=d1")
wait_job "$id" succeeded
assert_eq "$(stored_chunks)" "$before" "chunks stored for data already in the store"
cmp_image "$MP/domains/$DOM2/d1/vda.img" "$(expected_file "$DOM2" 0)" "d1 vda.img"

# ----------------------------------------------------------------- undefined domain
OLD_UUID=$(virsh domuuid "$DOM")
virsh -q destroy "$DOM" >/dev/null
virsh -q undefine "$DOM" --checkpoints-metadata >/dev/null
wait_for "$DOM stays listed with its backups" 30 test -d "$MP/domains/$DOM/b3"
check_backup "$MP" b3 b2 incremental
check_backup "$MP" b1 null full

# ----------------------------------------------------------------- same name, new domain
# A new domain of the old one's name (a new uuid) takes the name; the old
# one's backups move to "<name>@<uuid>", and a checkpoint of the same name
# in both stays apart.
OLD_WORK=$CKT_WORK/old-$DOM
cp -a "$(dom_work "$DOM")" "$OLD_WORK"
make_domain "$DOM" 64M
guest_write "$DOM" 0 0x71 3M 256k
mark "$DOM" b1
id=$(ctl_accepted backup "$DOM name=b1")
wait_job "$id" succeeded
D="$MP/domains/$DOM"
OLD="$MP/domains/$DOM@$OLD_UUID"
wait_for "$OLD appears" 30 test -d "$OLD/b4"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "new domain's b1 vda.img"
assert_eq "$(ls "$D")" "$(printf 'b1\nlatest')" "the new $DOM's checkpoints"
for c in b1 b2 b3 b4; do
  for i in 0 1; do
    t=$(disk_target $i)
    cmp_image "$OLD/$c/$t.img" "$OLD_WORK/$t.$c.raw" "old domain's $c $t.img"
  done
done
assert_symlink "$OLD/latest" b4

ckpt_umount "$MP"

