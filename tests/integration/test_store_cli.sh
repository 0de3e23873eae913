#!/usr/bin/env bash
# The store commands against a real store made by real backups: ls, verify
# (healthy, a flipped byte in a chunk, a truncated manifest), reads give EIO
# rather than wrong bytes, reindex after the catalog is deleted, prune with
# keep rules (dry run changes nothing; kept backups stay byte-identical), gc
# removes only unreferenced chunks and loses nothing while a backup runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
STORE="$CKT_WORK/store"
ck() { "$CKPTFS_BIN" "$@" --store "$STORE"; }

RAW="$CKT_WORK/random.raw"
head -c 96M /dev/urandom >"$RAW"
truncate -s 128M "$RAW"
make_domain "$DOM" "raw:$RAW"
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

guest_write "$DOM" 0 0x41 100M 1M      # only b1 has these chunks
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
guest_write "$DOM" 0 0x42 100M 1M
mark "$DOM" b2
wait_job "$(ctl_accepted backup "$DOM name=b2")" succeeded

# ----------------------------------------------------------------- ls, verify
out=$(ck ls) || fail "ckptfs ls failed: $out"
assert_contains "$out" "b1" "ls"
assert_contains "$out" "b2" "ls"
out=$(ck verify) || fail "verify of a healthy store failed: $out"
assert_contains "$out" "2 backups checked, 0 damaged" "verify (healthy)"

# A flipped byte in a chunk only b2 references (the 0x42 write).
chunk=$(python3 - "$STORE" <<'PY'
import hashlib, os, sys
data = bytes([0x42]) * 262144
h = hashlib.sha256(data).hexdigest()
print(os.path.join(sys.argv[1], "chunks", h[:2], h))
PY
)
assert_exists "$chunk"
cp "$chunk" "$CKT_WORK/chunk.orig"
python3 - "$chunk" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(bytes(b))
PY
rc=0; out=$(ck verify) || rc=$?
assert_eq "$rc" 1 "verify exit status with a corrupt chunk"
assert_contains "$out" "DAMAGED $DOM/b2" "verify names the damaged backup"
assert_contains "$out" "ok      $DOM/b1" "verify: b1 is not affected"
# Reads of the damaged range fail; they never return wrong bytes.
err=$(timeout 60 python3 - "$D/b2/vda.img" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.pread(fd, 1 << 20, 100 << 20)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
PY
) || true
assert_eq "$err" EIO "read of a corrupt chunk"
pass "read of the corrupt chunk: $err"
cp "$CKT_WORK/chunk.orig" "$chunk"

# A truncated manifest.
man=$(ls "$STORE"/backups/*/b1/vda.manifest)
cp "$man" "$CKT_WORK/manifest.orig"
truncate -s 100 "$man"
rc=0; out=$(ck verify) || rc=$?
assert_eq "$rc" 1 "verify exit status with a truncated manifest"
assert_contains "$out" "DAMAGED $DOM/b1" "verify names the backup with the bad manifest"
cp "$CKT_WORK/manifest.orig" "$man"
out=$(ck verify) || fail "verify after repair failed: $out"

# ----------------------------------------------------------------- reindex
ckpt_umount "$MP"
rm -f "$STORE"/catalog.db*
out=$(ck reindex) || fail "reindex failed: $out"
assert_contains "$out" "2 backups" "reindex"
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "b1 after reindex" 30 test -d "$D/b1"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 after reindex"
cmp_image "$D/b2/vda.img" "$(expected_file "$DOM" 0 b2)" "b2 after reindex"

# ----------------------------------------------------------------- prune
out=$(ck prune --keep-last 1 --dry-run) || fail "prune --dry-run failed: $out"
assert_contains "$out" "remove" "prune --dry-run lists what goes"
assert_exists "$D/b1"
rc=0; ck prune >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 1 "prune without a keep rule refuses"
# libvirt sends the daemon the events of every domain on the host: a steady
# stream of them (a domain suspended and resumed every second) must not hold
# back the poll that picks up the prune.
FLOOD_STOP="$CKT_WORK/flood.stop"
(while [[ ! -e "$FLOOD_STOP" ]]; do
  virsh -q suspend "$DOM" >/dev/null && virsh -q resume "$DOM" >/dev/null
  sleep 1
done) &
flood=$!
CKT_BG_PIDS+=("$flood")
out=$(ck prune --keep-last 1) || fail "prune failed: $out"
gone() { [[ ! -e "$1" ]]; }
wait_for "b1 leaves the tree after prune" 30 gone "$D/b1"
touch "$FLOOD_STOP"
wait "$flood" || fail "suspending and resuming $DOM failed"
assert_eq "$(virsh domstate "$DOM" | sed -n 1p)" running "$DOM after the event stream"
assert_not_exists "$STORE"/backups/*/b1/backup.json
cmp_image "$D/b2/vda.img" "$(expected_file "$DOM" 0 b2)" "b2 after prune"

# ----------------------------------------------------------------- gc
before=$(find "$STORE/chunks" -type f | wc -l)
out=$(ck gc --dry-run) || fail "gc --dry-run failed: $out"
assert_eq "$(find "$STORE/chunks" -type f | wc -l)" "$before" "gc --dry-run removes nothing"
# Chunks written in the last minute are kept (a backup may be using them),
# and so is everything under a format 2 index page written in the last
# minute: age every chunk and page so gc may remove what nothing references.
find "$STORE/chunks" $([[ -d "$STORE/index" ]] && echo "$STORE/index") -type f \
  -exec touch -d '-1 hour' {} +
out=$(ck gc) || fail "gc failed: $out"
after=$(find "$STORE/chunks" -type f | wc -l)
((after < before)) || fail "gc removed nothing ($before chunks): $out"
sum41=$(python3 -c 'import hashlib; print(hashlib.sha256(bytes([0x41]) * 262144).hexdigest())')
assert_not_exists "$STORE/chunks/${sum41:0:2}/$sum41"
pass "gc: $out"
out=$(ck verify) || fail "verify after gc: $out"
cmp_image "$D/b2/vda.img" "$(expected_file "$DOM" 0 b2)" "b2 after gc"

# gc while a backup runs: the running backup reuses (touches) b2's chunks
# and writes new ones; gc must remove none of them.
find "$STORE/chunks" -type f -exec touch -d '-1 hour' {} +
guest_write "$DOM" 0 0x43 4M 1M
mark "$DOM" b3
id=$(ctl_accepted backup "$DOM name=b3")
for _ in 1 2 3 4 5; do ck gc >/dev/null || fail "gc during a backup failed"; done
wait_job "$id" succeeded
ck gc >/dev/null || fail "gc after the backup failed"
out=$(ck verify) || fail "verify after gc during a backup: $out"
cmp_image "$D/b3/vda.img" "$(expected_file "$DOM" 0 b3)" "b3 after gc during its backup"
cmp_image "$D/b2/vda.img" "$(expected_file "$DOM" 0 b2)" "b2 after gc during b3"

ckpt_umount "$MP"
