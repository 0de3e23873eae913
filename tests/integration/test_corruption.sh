#!/usr/bin/env bash
# Damage under a mounted store: a deleted chunk, a flipped byte in a chunk
# two backups share, a truncated manifest, a deleted backup.json, a deleted
# catalog, a corrupt catalog (garbage, and a damaged page). Reads of the
# damaged ranges fail with EIO (never wrong bytes, never a hang) and every
# other byte of every image reads correctly; `ckptfs verify` names exactly
# the damaged backups and exits 1; a backup whose base has a damaged manifest
# still works; a daemon starting on a corrupt catalog moves it aside and
# rebuilds it from the store; `ckptfs reindex` does the same. test_store_cli
# covers the CLI side of a flipped byte, a truncated manifest and reindex.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
STORE="$CKT_WORK/store"
ck() { "$CKPTFS_BIN" "$@" --store "$STORE"; }
MiB=$((1 << 20))
KiB256=$((256 * 1024))

# The chunk object holding 256 KiB of byte PATTERN.
chunk_of() {  # PATTERN
  python3 - "$STORE" "$1" <<'PY'
import hashlib, os, sys
h = hashlib.sha256(bytes([int(sys.argv[2], 0)]) * 262144).hexdigest()
print(os.path.join(sys.argv[1], "chunks", h[:2], h))
PY
}

# Reads IMAGE in 256 KiB pieces (the store's chunks) and compares with
# EXPECTED. BAD ("off:len,..." or "all") must fail with EIO, everything else
# must read correctly, also the chunks that share a 1 MiB cache block with a
# damaged one. Never wrong bytes.
check_reads() {  # IMAGE EXPECTED BAD WHAT
  local out rc=0
  out=$(timeout 300 python3 - "$1" "$2" "$3" <<'PY'
import errno, os, sys
img, exp, bad = sys.argv[1:4]
P = 256 << 10
size = os.stat(img).st_size
if bad == "all":
    bad_ranges = [(0, size)]
else:
    bad_ranges = [tuple(map(int, r.split(":"))) for r in bad.split(",") if r]
over = lambda o, l, rs: any(o < s + n and s < o + l for s, n in rs)
fd = os.open(img, os.O_RDONLY)
fe = os.open(exp, os.O_RDONLY)
problems, eio, good = [], 0, 0
for off in range(0, size, P):
    want = os.pread(fe, P, off)
    try:
        got, err = os.pread(fd, P, off), None
    except OSError as e:
        got, err = None, e.errno
    if got is not None and got != want:
        problems.append(f"{off}: WRONG BYTES")
    elif over(off, P, bad_ranges):
        if err != errno.EIO:
            problems.append(f"{off}: damaged, expected EIO, got "
                            + ("the right bytes" if err is None else errno.errorcode.get(err, str(err))))
    elif err is not None:
        problems.append(f"{off}: {errno.errorcode.get(err, str(err))}")
    if err is None:
        good += 1
    else:
        eio += 1
print(f"{good} pieces read correctly, {eio} EIO")
for p in problems[:10]:
    print(p)
sys.exit(1 if problems else 0)
PY
  ) || rc=$?
  ((rc != 124)) || fail "$4: reading $1 hung"
  ((rc == 0)) || fail "$4: $out"
  pass "$4: $out"
}

# A fresh daemon: nothing of the damaged images is cached (neither in the
# kernel's page cache nor in the block cache).
restart() {
  ckpt_umount
  ckpt_mount
  D="$CKT_MP/domains/$DOM"
  wait_for "$D/b1 after a restart" 30 test -d "$D/b1"
}

verify_damaged() {  # WHAT DAMAGED... -- OK...
  local what=$1 rc=0 out b
  shift
  out=$(ck verify) || rc=$?
  assert_eq "$rc" 1 "$what: verify exit status"
  for b in "$@"; do
    case $b in
      ok:*) assert_contains "$out" "ok      $DOM/${b#ok:}" "$what: verify" ;;
      *) assert_contains "$out" "DAMAGED $DOM/$b" "$what: verify" ;;
    esac
  done
  local n
  n=$(grep -c '^DAMAGED' <<<"$out" || true)
  assert_eq "$n" "$(printf '%s\n' "$@" | grep -vc '^ok:')" "$what: damaged backups named by verify"
}

RAW="$CKT_WORK/random.raw"
head -c 48M /dev/urandom >"$RAW"
truncate -s 128M "$RAW"
make_domain "$DOM" "raw:$RAW" 64M
ckpt_mount
D="$CKT_MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

guest_write "$DOM" 0 0x41 100M 1M      # b1 only
guest_write "$DOM" 1 0x61 0 1M
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
guest_write "$DOM" 0 0x42 100M 1M      # b2 and b3 (one chunk object, 4 entries)
mark "$DOM" b2
wait_job "$(ctl_accepted backup "$DOM name=b2")" succeeded
guest_write "$DOM" 0 0x43 20M 256k    # b3 only: one chunk at a chunk boundary
guest_write "$DOM" 1 0x63 4M 64k
mark "$DOM" b3
wait_job "$(ctl_accepted backup "$DOM name=b3")" succeeded
out=$(ck verify) || fail "verify of a healthy store: $out"
exp() { expected_file "$DOM" "$1" "$2"; }
B3_UUID_DIR=$(dirname "$(ls "$STORE"/backups/*/b3/backup.json)")
BACKUPS=$(dirname "$B3_UUID_DIR")

# ----------------------------------------------------------------- a deleted chunk
c43=$(chunk_of 0x43)
assert_exists "$c43"
mv "$c43" "$CKT_WORK/c43.saved"
check_reads "$D/b3/vda.img" "$(exp 0 b3)" "$((20 * MiB)):$KiB256" "deleted chunk: b3 vda"
check_reads "$D/b3/vdb.img" "$(exp 1 b3)" "" "deleted chunk: b3 vdb"
check_reads "$D/b2/vda.img" "$(exp 0 b2)" "" "deleted chunk: b2 vda"
verify_damaged "deleted chunk" b3 ok:b1 ok:b2
mv "$CKT_WORK/c43.saved" "$c43"
out=$(ck verify) || fail "verify after the chunk is back: $out"

# ----------------------------------------------------------------- a flipped byte
restart
c42=$(chunk_of 0x42)
cp -p "$c42" "$CKT_WORK/c42.saved"
python3 - "$c42" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0x10
open(sys.argv[1], "wb").write(bytes(b))
PY
check_reads "$D/b2/vda.img" "$(exp 0 b2)" "$((100 * MiB)):$MiB" "flipped byte: b2 vda"
check_reads "$D/b3/vda.img" "$(exp 0 b3)" "$((100 * MiB)):$MiB" "flipped byte: b3 vda"
check_reads "$D/b1/vda.img" "$(exp 0 b1)" "" "flipped byte: b1 vda"
verify_damaged "flipped byte" b2 b3 ok:b1
cp -p "$CKT_WORK/c42.saved" "$c42"

# ----------------------------------------------------------------- a truncated manifest
restart
man="$BACKUPS/b1/vdb.manifest"
cp -p "$man" "$CKT_WORK/b1-vdb.saved"
truncate -s 100 "$man"
check_reads "$D/b1/vdb.img" "$(exp 1 b1)" all "truncated manifest: b1 vdb"
check_reads "$D/b1/vda.img" "$(exp 0 b1)" "" "truncated manifest: b1 vda"
check_reads "$D/b2/vdb.img" "$(exp 1 b2)" "" "truncated manifest: b2 vdb"
verify_damaged "truncated manifest" b1 ok:b2 ok:b3
cp -p "$CKT_WORK/b1-vdb.saved" "$man"

# ----------------------------------------------------------------- a deleted backup.json
cp -p "$BACKUPS/b2/backup.json" "$CKT_WORK/b2-record.saved"
rm "$BACKUPS/b2/backup.json"
verify_damaged "deleted backup.json" b2 ok:b1 ok:b3
restart   # the catalog follows the store: b2 is no backup any more
assert_not_exists "$D/b2"
check_reads "$D/b3/vda.img" "$(exp 0 b3)" "" "deleted backup.json: b3 vda"
cmp_image "$D/b1/vda.img" "$(exp 0 b1)" "deleted backup.json: b1 vda"
cp -p "$CKT_WORK/b2-record.saved" "$BACKUPS/b2/backup.json"
restart
cmp_image "$D/b2/vda.img" "$(exp 0 b2)" "b2 vda with its record back"
out=$(ck verify) || fail "verify with b2's record back: $out"

# ----------------------------------------------------------------- a damaged base
# b4's base b3 has a truncated vdb manifest: vdb is copied in full.
man="$BACKUPS/b3/vdb.manifest"
cp -p "$man" "$CKT_WORK/b3-vdb.saved"
truncate -s 100 "$man"
guest_write "$DOM" 0 0x44 30M 64k
guest_write "$DOM" 1 0x64 8M 64k
mark "$DOM" b4
id=$(ctl_accepted backup "$DOM name=b4")
wait_job "$id" succeeded
cmp_image "$D/b4/vda.img" "$(exp 0 b4)" "b4 vda (base with a damaged manifest)"
cmp_image "$D/b4/vdb.img" "$(exp 1 b4)" "b4 vdb (base with a damaged manifest)"
verify_damaged "damaged base" b3 ok:b1 ok:b2 ok:b4
cp -p "$CKT_WORK/b3-vdb.saved" "$man"

# ----------------------------------------------------------------- a deleted catalog
rm -f "$STORE"/catalog.db*
cmp_image "$D/b4/vda.img" "$(exp 0 b4)" "b4 vda with the catalog deleted"
guest_write "$DOM" 0 0x45 40M 64k
mark "$DOM" b5
wait_job "$(ctl_accepted backup "$DOM name=b5")" succeeded
restart   # no reindex: the daemon rebuilds the catalog from the store
for b in b1 b2 b3 b4 b5; do
  wait_for "$b after the catalog was deleted" 30 test -d "$D/$b"
  cmp_image "$D/$b/vda.img" "$(exp 0 $b)" "$b vda after the catalog was deleted"
done
cmp_image "$D/b3/vdb.img" "$(exp 1 b3)" "b3 vdb after the catalog was deleted"

# ----------------------------------------------------------------- a corrupt catalog
ckpt_umount
head -c 64k /dev/urandom >"$STORE/catalog.db"
rm -f "$STORE/catalog.db-wal" "$STORE/catalog.db-shm"
ckpt_mount   # moves the garbage aside and rebuilds
D="$CKT_MP/domains/$DOM"
for b in b1 b2 b3 b4 b5; do
  wait_for "$b after a garbage catalog" 30 test -d "$D/$b"
done
cmp_image "$D/b5/vda.img" "$(exp 0 b5)" "b5 vda after a garbage catalog"
cmp_image "$D/b2/vdb.img" "$(exp 1 b2)" "b2 vdb after a garbage catalog"
aside=$(find "$STORE" -maxdepth 1 -name 'catalog.db.corrupt-*' | sed -n 1p)
[[ -n "$aside" ]] || fail "the garbage catalog was not kept aside: $(ls "$STORE")"
pass "garbage catalog moved aside to $aside"
# A damaged page in an otherwise valid database (the header survives).
ckpt_umount
size=$(stat -c %s "$STORE/catalog.db")
((size > 8192)) || fail "catalog.db is only $size bytes"
rm -f "$STORE/catalog.db-wal" "$STORE/catalog.db-shm"
dd if=/dev/urandom of="$STORE/catalog.db" bs=1024 seek=4 count=$(((size - 4096) / 1024)) conv=notrunc status=none
ckpt_mount
D="$CKT_MP/domains/$DOM"
for b in b1 b2 b3 b4 b5; do
  wait_for "$b after a damaged catalog page" 30 test -d "$D/$b"
done
cmp_image "$D/b4/vdb.img" "$(exp 1 b4)" "b4 vdb after a damaged catalog page"
# reindex does the same without a daemon.
ckpt_umount
head -c 64k /dev/urandom >"$STORE/catalog.db"
out=$(ck reindex 2>&1) || fail "reindex of a garbage catalog failed: $out"
assert_contains "$out" "catalog rebuilt: 5 backups" "reindex of a garbage catalog"
ckpt_mount
D="$CKT_MP/domains/$DOM"
wait_for "b5 after reindex" 30 test -d "$D/b5"
out=$(ck verify) || fail "verify at the end: $out"
assert_contains "$out" "5 backups checked, 0 damaged" "verify at the end"
ckpt_umount
