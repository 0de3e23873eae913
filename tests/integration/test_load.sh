#!/usr/bin/env bash
# Load: 16 concurrent readers over 8 images (2 domains x 2 disks, one stored
# backup and one live checkpoint each), half reading whole images in order,
# half reading random ranges (dropping their page cache as they go, so the
# daemon serves every pass), while a third domain's live checkpoint is
# released and a backup of it runs. Every reader gets the expected bytes
# (no error), the backup is correct, and the daemon's peak RSS (VmHWM) stays
# within the block cache budget (--cache-size 64M) plus 64 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM1=$(dom_name one)
DOM2=$(dom_name two)
DOM3=$(dom_name three)
CACHE_MIB=64

raw() {  # NAME RANDOM_MIB SIZE
  local f="$CKT_WORK/$1.raw"
  head -c "$2M" /dev/urandom >"$f"
  truncate -s "$3" "$f"
  echo "$f"
}

make_domain "$DOM1" "raw:$(raw d1a 48 96M)" "raw:$(raw d1b 24 64M)"
make_domain "$DOM2" "raw:$(raw d2a 48 96M)" "raw:$(raw d2b 24 64M)"
make_domain "$DOM3" "raw:$(raw d3a 256 256M)"
ckpt_mount --cache-size "${CACHE_MIB}M"
MP=$CKT_MP
for d in "$DOM1" "$DOM2" "$DOM3"; do
  wait_for "$d appears" 30 test -d "$MP/domains/$d"
done

# Per domain: a stored backup s, then more guest writes and a live checkpoint l.
for d in "$DOM1" "$DOM2"; do
  guest_write "$d" 0 0x41 60M 2M
  guest_write "$d" 1 0x42 40M 1M
  mark "$d" s
  wait_job "$(ctl_accepted backup "$d name=s")" succeeded
  guest_write "$d" 0 0x43 10M 3M
  guest_write "$d" 1 0x44 50M 1M
  mark "$d" l
  ctl_ok checkpoint "$d name=l" >/dev/null
done
mark "$DOM3" x3
ctl_ok checkpoint "$DOM3 name=x3" >/dev/null

LIST="$CKT_WORK/images.txt"
: >"$LIST"
for d in "$DOM1" "$DOM2"; do
  for cp in s l; do
    for i in 0 1; do
      printf '%s\t%s\n' "$MP/domains/$d/$cp/$(disk_target $i).img" "$(expected_file "$d" "$i" "$cp")" >>"$LIST"
    done
  done
done

# 16 readers: reader k reads image k % 8, in order (k < 8) or at random,
# pass after pass (each pass from the daemon, not the page cache) until the
# file STOP exists, and at least one pass each.
STOP="$CKT_WORK/stop"
timeout 600 python3 - "$LIST" "$CKT_WORK/readers.txt" "$STOP" <<'PY' &
import os, random, sys, time
lst, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
images = [l.rstrip("\n").split("\t") for l in open(lst)]
pids = {}
for k in range(16):
    img, exp = images[k % len(images)]
    pid = os.fork()
    if pid:
        pids[pid] = k
        continue
    t0, nbytes, problems, passes = time.monotonic(), 0, [], 0
    try:
        fd, fe = os.open(img, os.O_RDONLY), os.open(exp, os.O_RDONLY)
        size = os.fstat(fd).st_size
        if size != os.fstat(fe).st_size:
            problems.append(f"size {size} != {os.fstat(fe).st_size}")
        rng = random.Random(k)
        passes = 0
        while not problems and (passes == 0 or not os.path.exists(stop)):
            passes += 1
            if k < 8:
                ranges = [(o, min(1 << 20, size - o)) for o in range(0, size, 1 << 20)]
            else:
                ranges = []
                for _ in range(128):
                    n = rng.randrange(1, 257) * 4096
                    ranges.append((rng.randrange(0, size - n) // 512 * 512, n))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for off, n in ranges:
                try:
                    got = os.pread(fd, n, off)
                except OSError as e:
                    problems.append(f"pass {passes}: read {n} at {off}: {e}")
                    break
                if got != os.pread(fe, n, off):
                    problems.append(f"pass {passes}: WRONG BYTES: {n} at {off}")
                    break
                nbytes += n
    except OSError as e:
        problems.append(str(e))
    dt = time.monotonic() - t0
    with open(f"{out}.{k}", "w") as f:
        f.write(f"{k}\t{'ok' if not problems else 'FAIL ' + '; '.join(problems)}\t{nbytes}\t{dt:.2f}\t{passes}\t{img}\n")
    os._exit(0)
for _ in pids:
    os.wait()
PY
readers=$!
CKT_BG_PIDS+=("$readers")

# Meanwhile: release one checkpoint, back up that domain.
t0=$SECONDS
ctl_ok release "$DOM3 x3" >/dev/null
assert_not_exists "$MP/domains/$DOM3/x3"
mark "$DOM3" b3
id=$(ctl_accepted backup "$DOM3 name=b3")
wait_job "$id" succeeded 600
backup_s=$((SECONDS - t0))
pid_alive "$readers" || fail "the readers ended before the backup did"
touch "$STOP"
wait "$readers" || fail "the readers failed to run"
readers_s=$((SECONDS - t0))

cat "$CKT_WORK"/readers.txt.* >"$CKT_WORK/readers.txt"
assert_eq "$(wc -l <"$CKT_WORK/readers.txt")" 16 "reader reports"
if grep -v $'\tok\t' "$CKT_WORK/readers.txt" >&2; then
  fail "readers failed (above)"
fi
total=$(awk -F'\t' '{s += $3} END {printf "%d", s / 1048576}' "$CKT_WORK/readers.txt")
pass "16 readers read $total MiB correctly in ${readers_s}s ($(cut -f5 "$CKT_WORK/readers.txt" | tr '\n' ' ') passes; release + backup of $DOM3: ${backup_s}s)"
cmp_image "$MP/domains/$DOM3/b3/vda.img" "$(expected_file "$DOM3" 0 b3)" "b3 vda.img"
assert_no_job "$DOM3"

hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$CKT_PID/status")
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$CKT_PID/status")
say "daemon peak RSS (VmHWM) $((hwm / 1024)) MiB, now $((rss / 1024)) MiB; cache budget $CACHE_MIB MiB; $(json_get "$MP/control/status.json" cache | tr -d '\n ')"
if [[ -n ${CKT_SANITIZER:-} ]]; then
  say "peak RSS not checked under the $CKT_SANITIZER sanitizer (its own memory dominates)"
else
  ((hwm <= (CACHE_MIB + 64) * 1024)) || fail "daemon peak RSS $((hwm / 1024)) MiB exceeds the cache budget ($CACHE_MIB MiB) + 64 MiB"
  pass "peak RSS $((hwm / 1024)) MiB <= $((CACHE_MIB + 64)) MiB"
fi
ckpt_umount
