#!/usr/bin/env bash
# Ordinary clients against a live checkpoint image: qemu-img compare,
# debugfs, a read-only loop mount, libguestfs (guestfish), cp --sparse,
# SEEK_DATA/SEEK_HOLE and st_blocks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
FS="$CKT_WORK/fs"
HELLO="hello from ckptfs"

# ----------------------------------------------------------------- a filesystem image
mkdir -p "$FS/dir"
printf '%s\n' "$HELLO" >"$FS/hello.txt"
printf 'line %d\n' $(seq 1 200) >"$FS/dir/notes.txt"
python3 - "$FS/big.bin" <<'EOF'
import hashlib, sys
h, out = b"ckptfs", bytearray()
while len(out) < 3 << 20:
    h = hashlib.sha256(h).digest()
    out += h
open(sys.argv[1], "wb").write(out)
EOF
mke2fs -q -t ext4 -d "$FS" -F "$CKT_WORK/fs.raw" 128M >/dev/null \
  || fail "mke2fs -d $FS failed"

make_domain "$DOM" 64M "raw:$CKT_WORK/fs.raw"
guest_write "$DOM" 0 0x41 1M 64k
guest_write "$DOM" 0 0x42 40M 100k
mark "$DOM" c1

ckpt_mount
D="$CKT_MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
ctl_ok checkpoint "$DOM name=c1" >/dev/null
IMG="$D/c1/vdb.img"
BLANK="$D/c1/vda.img"
assert_exists "$IMG" "$BLANK"
# The guest keeps writing to the filesystem disk during the export.
guest_write "$DOM" 1 0x55 0 8M

# ----------------------------------------------------------------- qemu-img compare
out=$(timeout 600 qemu-img compare -f raw -F raw "$IMG" "$CKT_WORK/fs.raw" 2>&1) \
  || fail "qemu-img compare $IMG fs.raw: $out"
pass "qemu-img compare: $out"

# ----------------------------------------------------------------- debugfs
got=$(timeout 120 debugfs -R 'cat /hello.txt' "$IMG" 2>/dev/null) || fail "debugfs on $IMG failed"
assert_eq "$got" "$HELLO" "debugfs cat /hello.txt"

# ----------------------------------------------------------------- loop mount
LOOPMNT="$CKT_WORK/loopmnt"
mkdir -p "$LOOPMNT"
if ! losetup -f >/dev/null 2>&1; then
  say "!!! SKIPPING the loop mount part: no free loop device here"
else
  on_cleanup "umount -l '$LOOPMNT'"
  timeout 120 mount -o ro,noload,loop -t ext4 "$IMG" "$LOOPMNT" \
    || fail "mount -o ro,noload,loop $IMG failed"
  assert_eq "$(timeout 60 cat "$LOOPMNT/hello.txt")" "$HELLO" "loop mount: hello.txt"
  timeout 120 cmp "$LOOPMNT/big.bin" "$FS/big.bin" || fail "loop mount: big.bin differs from $FS/big.bin"
  timeout 60 cmp "$LOOPMNT/dir/notes.txt" "$FS/dir/notes.txt" || fail "loop mount: dir/notes.txt differs"
  umount "$LOOPMNT" || fail "umount $LOOPMNT failed"
  pass "loop mount read hello.txt, big.bin, dir/notes.txt"
fi

# ----------------------------------------------------------------- libguestfs
guestfs_cat() {  # IMAGE PATH
  LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
    timeout 600 guestfish --ro --format=raw -a "$1" run : mount-ro /dev/sda / : cat "$2"
}
if ! command -v guestfish >/dev/null 2>&1; then
  say "!!! SKIPPING the libguestfs part: guestfish is not installed (libguestfs-tools)"
elif got=$(guestfs_cat "$IMG" /hello.txt 2>"$CKT_WORK/guestfish.err"); then
  assert_eq "$got" "$HELLO" "guestfish cat /hello.txt"
elif ! guestfs_cat "$CKT_WORK/fs.raw" /hello.txt >/dev/null 2>"$CKT_WORK/guestfish-ref.err"; then
  say "!!! SKIPPING the libguestfs part: libguestfs does not work on this host even on a plain file:"
  tail -5 "$CKT_WORK/guestfish-ref.err" >&2
else
  fail "guestfish could not read /hello.txt from $IMG (it can from fs.raw): $(tail -5 "$CKT_WORK/guestfish.err")"
fi

# ----------------------------------------------------------------- sparse copy
size=$(stat -c %s "$BLANK")
timeout 600 cp --sparse=always "$BLANK" "$CKT_WORK/blank.copy" || fail "cp --sparse=always $BLANK failed"
cmp_image "$CKT_WORK/blank.copy" "$(expected_file "$DOM" 0 c1)" "sparse copy of vda.img"
du_bytes=$(du -B1 "$CKT_WORK/blank.copy" | cut -f1)
((du_bytes * 16 < size)) || fail "cp --sparse=always: copy uses $du_bytes bytes of $size (holes lost)"
pass "sparse copy uses $du_bytes of $size bytes"

# ----------------------------------------------------------------- SEEK_DATA / SEEK_HOLE, st_blocks
for i in 0 1; do
  t=$(disk_target $i)
  f="$D/c1/$t.img"
  want=$(expected_allocated "$DOM" $i c1)
  got=$(seek_data_map "$f") || fail "SEEK_DATA/SEEK_HOLE on $f failed"
  [[ "$got" == "$want" ]] || fail "$f: SEEK_DATA/SEEK_HOLE extents differ from the allocated extents
--- expected (allocation of the disk at c1)
$want
--- got
$got"
  pass "$f SEEK_DATA/SEEK_HOLE"
  allocated=$(json_get "$D/c1/info.json" "disks.$i.allocated")
  assert_eq "$allocated" "$(sum_extents <<<"$want")" "info.json disks.$i.allocated"
  blocks=$(stat -c %b "$f")
  diff=$((blocks * 512 - allocated))
  ((diff < 0)) && diff=$((-diff))
  ((diff <= 65536)) || fail "$f: st_blocks*512 = $((blocks * 512)), info.json allocated = $allocated"
  pass "$f st_blocks*512 ~ allocated ($((blocks * 512)) vs $allocated)"
done

ckpt_umount
assert_no_job "$DOM"
