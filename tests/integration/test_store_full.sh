#!/usr/bin/env bash
# The store's filesystem runs full (a 128 MiB loop-mounted ext4 that also
# holds the catalog): a backup whose data does not fit fails with ENOSPC in
# its job record and leaves nothing behind but chunks gc removes (no
# temporaries, no manifests, no lock, no record); what was stored before
# stays byte-identical and verifies; the failed checkpoint is never served
# nor a base; on a 100% full filesystem requests still work, the daemon
# restarts, verify and ls work, a daemon that cannot create its catalog
# refuses to start with a clear error; once space is freed the next backups
# succeed, are correct, and are incremental from the last good one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name two)
FS="$CKT_WORK/storefs"
STORE="$FS/store"
ck() { "$CKPTFS_BIN" "$@" --store "$STORE"; }
avail() { df -B1 --output=avail "$FS" | tail -1 | tr -d ' '; }

# Leaves about LEFT bytes free on the store's filesystem (0: none at all).
fill_fs() {  # LEFT
  local left=$1 n=0 a
  a=$(avail)
  if ((a > left + 1048576)); then
    fallocate -l $((a - left - 1048576)) "$FS/filler.0" || fail "fallocate on $FS failed"
  fi
  # The last MiB (and, for 0, every block) by plain writes.
  while (($(avail) > left)); do
    n=$((n + 1))
    dd if=/dev/zero of="$FS/filler.$n" bs=64k count=$(((($(avail) - left) + 65535) / 65536)) \
      status=none 2>/dev/null || break
  done
  say "store filesystem: $(avail) bytes free"
}
free_fs() { rm -f "$FS"/filler.*; sync; }

no_leftovers() {  # WHAT: no temporaries, locks, or manifests without a record
  local t
  t=$(find "$STORE" -name '.tmp.*' | sed -n 1,5p)
  [[ -z "$t" ]] || fail "$1: temporaries left in the store: $t"
  t=$({ find "$STORE/locks" -type f 2>/dev/null || true; } | sed -n 1,5p)
  [[ -z "$t" ]] || fail "$1: store locks left: $t"
  local d
  for d in "$STORE"/backups/*/*/; do
    [[ -d "$d" ]] || continue
    [[ -f "$d/backup.json" ]] || fail "$1: manifests without a record in $d: $(ls "$d")"
  done
  pass "$1: no temporaries, locks or incomplete backups in the store"
}

job_error() { json_get "$(job_file "$1")" error 2>/dev/null || true; }

make_loop_fs 128M "$FS"
RAW1="$CKT_WORK/one.raw"
RAW2="$CKT_WORK/two.raw"
head -c 32M /dev/urandom >"$RAW1"
truncate -s 128M "$RAW1"
head -c 64M /dev/urandom >"$RAW2"
truncate -s 128M "$RAW2"
make_domain "$DOM" "raw:$RAW1"
make_domain "$DOM2" "raw:$RAW2"
ckpt_mount --store "$STORE"
D="$CKT_MP/domains/$DOM"
D2="$CKT_MP/domains/$DOM2"
wait_for "$D appears" 30 test -d "$D"
wait_for "$D2 appears" 30 test -d "$D2"
[[ "$(stat -c %m "$STORE")" == "$FS" ]] || fail "$STORE is not on the loop filesystem"
assert_exists "$STORE/catalog.db"   # the catalog shares the store's filesystem

# ----------------------------------------------------------------- b1 fits
guest_write "$DOM" 0 0x41 100M 1M
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img"
out=$(ck verify) || fail "verify after b1: $out"

# ----------------------------------------------------------------- f1 does not
# 64 MiB of random data into 16 MiB of free space.
fill_fs $((16 << 20))
chunks_b1=$(find "$STORE/chunks" -type f | wc -l)
mark "$DOM2" f1
id=$(ctl_accepted backup "$DOM2 name=f1")
wait_job "$id" failed
jf=$(job_file "$id")
assert_json "$jf" code no-space
assert_contains "$(job_error "$id")" "No space left on device" "f1 job error"
assert_contains "$(job_error "$id")" "$STORE" "f1 job error names the store"
assert_contains "$(job_error "$id")" "store's filesystem is full" "f1 job error says what to do"
say "f1 failed as it should: $(job_error "$id")"
assert_no_job "$DOM2"
assert_not_exists "$D2/f1"
assert_not_exists "$STORE"/backups/*/f1
no_leftovers "after the failed f1"
out=$(ck verify) || fail "verify after the failed f1: $out"
assert_contains "$out" "1 backups checked, 0 damaged" "verify after the failed f1"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img after the failed f1"
# The failed f1 dropped its own chunks with its batch: the store holds b1's
# chunks and nothing else (no temporaries either), so gc has nothing to do.
assert_eq "$(find "$STORE/chunks" -type f | wc -l)" "$chunks_b1" "chunk objects after the failed f1"
assert_eq "$(find "$STORE" -name '.tmp.*' | wc -l)" 0 "temporaries after the failed f1"
find "$STORE/chunks" -type f -exec touch -d '-2 hours' {} +
out=$(ck gc) || fail "gc after the failed f1: $out"
say "gc after the failed f1: $out"
assert_eq "$(find "$STORE/chunks" -type f | wc -l)" "$chunks_b1" "chunk objects after gc (all b1's)"
out=$(ck verify) || fail "verify after gc: $out"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img after gc"

# ----------------------------------------------------------------- freed: f2
free_fs
mark "$DOM2" f2
id=$(ctl_accepted backup "$DOM2 name=f2")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode full      # f1 is no base
assert_json "$(job_file "$id")" base null
assert_json "$D2/f2/info.json" base null
cmp_image "$D2/f2/vda.img" "$(expected_file "$DOM2" 0 f2)" "f2 vda.img"
assert_changes "$D2/f2/vda.changes" "$(expected_allocated "$DOM2" 0 f2)" "f2 vda.changes (full)"
no_leftovers "after f2"

# ----------------------------------------------------------------- 100% full
fill_fs 0
guest_write "$DOM" 0 0x42 64M 1M
mark "$DOM" i1
err=$(ctl backup "$DOM name=i1")
id=$(ctl_field id)
if [[ "$err" == OK ]]; then
  wait_job "$id" failed
else
  assert_eq "$err" ENOSPC "backup on a full store"
  assert_json "$(job_file "$id")" state failed
fi
assert_json "$(job_file "$id")" code no-space
say "i1 on a full store: $err, $(job_error "$id")"
assert_no_job "$DOM"
assert_not_exists "$D/i1"
no_leftovers "after the failed i1"
# Live checkpoints need no store space (their job records stay in memory).
ctl_ok checkpoint "$DOM name=c1" >/dev/null
cmp_image "$D/c1/vda.img" "$(expected_file "$DOM" 0 i1)" "c1 vda.img on a full store"
ctl_ok release "$DOM c1" >/dev/null
assert_no_job "$DOM"
# The daemon restarts on the full filesystem, with its catalog.
ckpt_umount
ckpt_mount --store "$STORE"
D="$CKT_MP/domains/$DOM"
D2="$CKT_MP/domains/$DOM2"
wait_for "b1 after a restart on a full store" 30 test -d "$D/b1"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img after a restart on a full store"
cmp_image "$D2/f2/vda.img" "$(expected_file "$DOM2" 0 f2)" "f2 vda.img after a restart on a full store"
out=$(ck verify) || fail "verify on a full store: $out"
assert_contains "$out" "2 backups checked, 0 damaged" "verify on a full store"
out=$(ck ls) || fail "ls on a full store: $out"
assert_contains "$out" "f2" "ls on a full store"
# reindex either works or says the disk is full; the catalog stays usable.
rc=0
out=$(ck reindex 2>&1) || rc=$?
say "reindex on a full store: rc $rc: $out"
((rc == 0)) || assert_match "$out" "full|space" "reindex error on a full store"
ckpt_umount
# Without its catalog and without space to create one: a clear refusal.
mkdir -p "$CKT_WORK/catalog.saved"
mv "$STORE"/catalog.db* "$CKT_WORK/catalog.saved/"
fill_fs 0   # what the catalog took
mp="$CKT_WORK/mnt-full"
mkdir -p "$mp"
CKT_MOUNTS+=("$mp")
rc=0
out=$(timeout 120 "$CKPTFS_BIN" mount "$mp" --store "$STORE" --run-dir "$CKT_RUN" 2>&1) || rc=$?
if ((rc == 0)); then
  # It found room after all (ext4 may keep a block or two): it must serve.
  CKT_MP=$mp
  say "no catalog, no space: the daemon found room for a new catalog"
  wait_for "b1 with a rebuilt catalog" 30 test -d "$mp/domains/$DOM/b1"
  ckpt_umount "$mp"
else
  assert_match "$out" "catalog.*(full|space)" "mount error without room for the catalog"
  ! is_mounted "$mp" || fail "$mp mounted although the mount failed"
  say "no catalog, no space: mount refused: $out"
fi

# ----------------------------------------------------------------- freed again
free_fs
ckpt_mount --store "$STORE"
D="$CKT_MP/domains/$DOM"
D2="$CKT_MP/domains/$DOM2"
wait_for "b1 after the catalog was rebuilt" 30 test -d "$D/b1"
wait_for "f2 after the catalog was rebuilt" 30 test -d "$D2/f2"
guest_write "$DOM" 0 0x43 8M 64k
mark "$DOM" i2
id=$(ctl_accepted backup "$DOM name=i2")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base b1   # i1 failed: never a base
cmp_image "$D/i2/vda.img" "$(expected_file "$DOM" 0 i2)" "i2 vda.img"
assert_changes "$D/i2/vda.changes" "$(expected_changes "$DOM" 0 b1 i2)" "i2 vda.changes (since b1)"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img at the end"
cmp_image "$D2/f2/vda.img" "$(expected_file "$DOM2" 0 f2)" "f2 vda.img at the end"
out=$(ck verify) || fail "verify at the end: $out"
assert_contains "$out" "3 backups checked, 0 damaged" "verify at the end"
no_leftovers "at the end"
ckpt_umount
