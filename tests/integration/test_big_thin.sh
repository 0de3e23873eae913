#!/usr/bin/env bash
# The store's cost follows the data (issue 13, format 2): a 2 TiB thin disk
# holding 8 x 16 MiB; its full backup and an incremental with 4 x 1 MiB dirty
# each write at most 1 MiB of metadata (index pages and manifest); four
# stored images of it open and read at once keep the daemon's peak RSS
# within --cache-size + 64 MiB; every image reads back byte-identical
# (compared over the data SEEK_DATA reports, and that the holes are holes).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
STORE=$CKT_WORK/store
CACHE_MIB=64
make_domain "$DOM" 2T
ckpt_mount --cache-size "${CACHE_MIB}M"
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
assert_json "$STORE/config.json" format 2

# Bytes of metadata (manifests, index pages) written since marker file M.
metadata_since() {  # MARKER
  find "$STORE/backups" "$STORE/index" -type f -newer "$1" \
    \( -name '*.manifest' -o -path "$STORE/index/*" \) -printf '%s\n' 2>/dev/null |
    awk '{s += $1} END {print s + 0}'
}

# The image against the expected sparse file: every data range of either
# must be data in the image with the expected bytes, and the rest zeros.
cmp_sparse() {  # IMAGE EXPECTED WHAT
  local out
  out=$(timeout 600 python3 - "$1" "$2" <<'EOF' 2>&1
import os, sys
img, exp = sys.argv[1], sys.argv[2]
def ranges(fd, size):
    out, off = [], 0
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h))
        off = h
    return out
fi, fe = os.open(img, os.O_RDONLY), os.open(exp, os.O_RDONLY)
size = os.fstat(fe).st_size
if os.fstat(fi).st_size != size:
    sys.exit(f"size {os.fstat(fi).st_size}, expected {size}")
data = ranges(fi, size)
for d, h in ranges(fe, size):
    if not any(a <= d and h <= b for a, b in data):
        sys.exit(f"expected data at {d}..{h} is not data in the image: {data[:8]}")
total = 0
for d, h in data:
    off = d
    while off < h:
        n = min(1 << 20, h - off)
        a, b = os.pread(fi, n, off), os.pread(fe, n, off)
        if a != b:
            sys.exit(f"differs in {off}..{off + n}")
        off += n
        total += n
print(f"{len(data)} data ranges, {total} bytes compared")
EOF
  ) || fail "$3: $out"
  pass "$3: $out"
}

# ----------------------------------------------------------------- full
for i in 0 1 2 3 4 5 6 7; do
  guest_write "$DOM" 0 "0x$((41 + i))" "$((i * 256 + 3))G" 16M
done
mark "$DOM" t1
touch "$CKT_WORK/m1"
sleep 1   # find -newer compares whole seconds on some filesystems
id=$(ctl_accepted backup "$DOM name=t1")
wait_job "$id" succeeded 600
full=$(metadata_since "$CKT_WORK/m1")
say "full backup of a 2 TiB thin disk with 128 MiB of data: $full bytes of metadata"
((full > 0 && full <= 1048576)) || fail "full backup wrote $full bytes of metadata (at most 1 MiB)"
pass "full backup metadata $full bytes"

# ----------------------------------------------------------------- incrementals
for t in 2 3 4; do
  for i in 0 1 2 3; do
    guest_write "$DOM" 0 "0x$((60 + t))" "$((i * 500 + t))G" 1M
  done
  mark "$DOM" "t$t"
  touch "$CKT_WORK/m$t"
  sleep 1
  id=$(ctl_accepted backup "$DOM name=t$t")
  wait_job "$id" succeeded 600
  assert_json "$(job_file "$id")" mode incremental
  inc=$(metadata_since "$CKT_WORK/m$t")
  say "incremental t$t (4 x 1 MiB dirty): $inc bytes of metadata"
  ((inc > 0 && inc <= 1048576)) || fail "incremental t$t wrote $inc bytes of metadata (at most 1 MiB)"
  pass "incremental t$t metadata $inc bytes"
done

# ----------------------------------------------------------------- four images at once
ckpt_umount "$MP"
ckpt_mount --cache-size "${CACHE_MIB}M"
MP=$CKT_MP
D="$MP/domains/$DOM"
for t in 1 2 3 4; do wait_for "t$t after remount" 30 test -e "$D/t$t/vda.img"; done
pids=()
for t in 1 2 3 4; do
  (cmp_sparse "$D/t$t/vda.img" "$(expected_file "$DOM" 0 "t$t")" "t$t vda.img") &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p" || fail "a read of the four images failed"; done
pass "four 2 TiB images read at once, byte-identical"
if [[ -z "${CKT_SANITIZER:-}" ]]; then
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$CKT_PID/status")
  say "daemon peak RSS (VmHWM) $((hwm / 1024)) MiB with --cache-size ${CACHE_MIB}M"
  ((hwm / 1024 <= CACHE_MIB + 64)) \
    || fail "daemon peak RSS $((hwm / 1024)) MiB is over --cache-size + 64 MiB"
  pass "peak RSS $((hwm / 1024)) MiB within --cache-size + 64 MiB"
fi
ckpt_umount "$MP"
say "PASS ($CKT_CHECKS checks)"
