#!/usr/bin/env bash
# bench/rados.sh -- backups into a RADOS store and reads from it, side by side with
# `rbd import` / `rbd export` of the same bytes into / out of the same cluster
# (scripts/ceph-up.sh: one mon, one mgr, one memstore OSD on 127.0.0.1), on one
# fully allocated 1 GiB disk: 512 MiB random + 512 MiB of generated log text.
#   1. full backup (control/backup, fresh store namespace) vs `rbd import` of the
#      disk's raw bytes into an RBD image, back to back;
#   2. cold read of the stored image (fresh mount, drop_caches, dd bs=1M) vs
#      `rbd export IMAGE - >/dev/null`, back to back;
#   3. CPU seconds per GiB of the ckptfs daemon, the rbd process and the OSD for
#      each, and the daemon's peak RSS;
#   4. metadata bytes per backup: this disk's full and a 1% dirty incremental
#      (the objects each backup added outside chunks/), and the 2 TiB thin and
#      8 GiB full-disk figures of the index's unit test (tree_index_test).
# Run as root. See bench/README.md.
#
#   RUNS=3 CACHE_SIZE=256M bench/rados.sh
#
# Env:
#   RUNS         timed runs (default 3); figures are medians over runs
#   CACHE_SIZE   ckptfs --cache-size (default 256M)
#   CHECK=0      skip the untimed sha256 checks (run 1)
#   PERF=1       also `perf record` the daemon during run 1's full backup and cold
#                read (a profile summary follows the results)
#   CLEAN=1      at the end also undefine the test domain and delete
#                /var/lib/ckptfs-bench-rados (default: keep them for the next run)
#   CKPTFS_BIN   the binary (default: <repo>/build/ckptfs); copied into the session
#   TREE_INDEX_TEST  the unit test that prints the 2 TiB / 8 GiB metadata figures
#                (default: next to CKPTFS_BIN in tests/; skipped if missing)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_SRC=${CKPTFS_BIN:-$REPO/build/ckptfs}
TREE_TEST=${TREE_INDEX_TEST:-$(dirname "$BIN_SRC")/tests/tree_index_test}
RUNS=${RUNS:-3}
CACHE_SIZE=${CACHE_SIZE:-256M}
CLEAN=${CLEAN:-0}
CHECK=${CHECK:-1}
PERF=${PERF:-0}
PY=${PYTHON:-python3}
BENCH=rados
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

DOM=ckptfs-bench-rados
DOM_MEM_MIB=256
DIR=/var/lib/ckptfs-bench-rados
RAW=$DIR/data.raw              # 512 MiB random + 512 MiB log text: the disk's content
DISK=$DIR/vda.qcow2            # the domain's disk, reconverted from $RAW every run
DOM_XML=$DIR/domain.xml
SESSION=$DIR/s.$$              # short: socket paths must stay < 108 bytes
MP=$SESSION/mnt
BIN=$SESSION/ckptfs
CEPH_DIR=$SESSION/ceph
RESULTS=$SESSION/results.tsv
POOL=ckptfs                    # the store's pool (ceph-up.sh's restricted key)
RBD_POOL=rbdbench              # rbd's pool: same PG count, same OSD
SIZE=$((1024 * 1024 * 1024))
SIZE_MIB=1024
RANDOM_MIB=512
DIRTY_RUNS=4                   # incremental: 4 x 2560 KiB guest writes = 1% of the disk
DIRTY_LEN=$((2560 * 1024))
TAG=$(date -u +%Y%m%dT%H%M%S)
export LIBVIRT_DEFAULT_URI=qemu:///system
# ckptfs's store (4 runs x ~700 MiB) and one 1 GiB RBD image at a time, in RAM.
export CEPH_UP_MEMSTORE_BYTES=${CEPH_UP_MEMSTORE_BYTES:-$((6 * 1024 * 1024 * 1024))}

CEPH_UP=0
CLEANUP_DONE=0
PERF_PID=""

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }  # RUN METRIC VALUE
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

admin() { timeout 120 ceph -c "$CONF" "$@"; }
rbdc() { rbd -c "$CONF" --id admin "$@"; }
# Objects of store namespace NS outside chunks/, with their sizes: "NAME SIZE".
meta_objects() {
  local o
  rados -c "$CONF" --id "$CID" -p "$POOL" -N "$1" ls | grep -v '^chunks/' | LC_ALL=C sort |
    while read -r o; do
      echo "$o $(rados -c "$CONF" --id "$CID" -p "$POOL" -N "$1" stat "$o" | sed 's/.* size //')"
    done
}
meta_added() {  # BEFORE AFTER -> "bytes objects" new or rewritten between two lists
  LC_ALL=C comm -13 "$1" "$2" | awk '{s += $2; n++} END {printf "%d %d\n", s, n}'
}

mount_ckptfs() {  # NAMESPACE RUNDIR
  "$BIN" mount "$MP" --run-dir "$2" --store "rados:$POOL/$1" --ceph-conf "$CONF" \
    --ceph-id "$CID" --cache-size "$CACHE_SIZE"
  is_mounted "$MP" || die "ckptfs mount returned but $MP is not mounted"
  DPID=$(json_get "$MP/control/status.json" 'j["pid"]')
  [[ -d /proc/$DPID ]] || die "daemon pid $DPID from status.json is not running"
}

umount_ckptfs() {
  is_mounted "$MP" || return 0
  timeout 150 "$BIN" umount "$MP" || die "ckptfs umount $MP failed"
}

reset_domain() {  # as bench/backup.sh: same disk, no checkpoints, running
  virsh destroy "$DOM" >/dev/null 2>&1 || true
  local c
  for c in $(virsh checkpoint-list "$DOM" --roots --name 2>/dev/null); do
    virsh -q checkpoint-delete "$DOM" "$c" --children --metadata >/dev/null
  done
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK.tmp"
  mv "$DISK.tmp" "$DISK"
  virsh -q start "$DOM" >/dev/null
  [[ "$(virsh domstate "$DOM")" == running* ]] || die "$DOM is not running"
  QPID=$(qemu_pid_of "$DOM")
  [[ -n $QPID && -d /proc/$QPID ]] || die "cannot find the QEMU pid of $DOM"
}

# backup_run NAME MODE: control/backup, then poll the job record every 50 ms
# until it succeeds. Prints "seconds daemon_cpu_s mode"; fails if the job fails.
backup_run() {
  "$PY" - "$MP" "$DOM" "$1" "$2" "$DPID" <<'EOF'
import json, os, sys, time
mp, dom, name, mode, dpid = sys.argv[1:6]
hz = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
c0, t0 = cpu(dpid), time.monotonic()
fd = os.open(f"{mp}/control/backup", os.O_RDWR)
try:
    os.write(fd, f"{dom} name={name} mode={mode}\n".encode())
except OSError as e:
    sys.exit(f"control/backup {name}: {os.strerror(e.errno)}: {os.read(fd, 65536).decode()}")
job = json.loads(os.read(fd, 65536).decode())["id"]
os.close(fd)
path = f"{mp}/control/jobs/{job}.json"
while True:
    try:
        j = json.load(open(path))
    except (OSError, ValueError):
        j = {}
    if j.get("state") == "succeeded":
        break
    if j.get("state") in ("failed", "rejected"):
        sys.exit(f"backup job {job} {j['state']}: {json.dumps(j)}")
    if time.monotonic() - t0 > 1800:
        sys.exit(f"backup job {job} not done after 30 min")
    time.sleep(0.05)
print(f"{time.monotonic() - t0:.4f} {cpu(dpid) - c0:.2f} {j['mode']}")
EOF
}

# timed_rbd OUTFILE ARGS...: rbd under /usr/bin/time; prints "seconds cpu_s maxrss_kib"
timed_rbd() {
  local out=$1 tf=$SESSION/time.out
  shift
  /usr/bin/time -o "$tf" -f '%e %U %S %M' rbd -c "$CONF" --id admin --no-progress "$@" >"$out" ||
    die "rbd $* failed"
  awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$tf"
}

perf_start() {  # PID FILE
  [[ $PERF == 1 && $run -eq 1 ]] || return 0
  perf record -q -g -p "$1" -o "$2" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.3
}
perf_stop() {
  [[ -n $PERF_PID ]] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
}

cleanup() {
  local rc=$?
  [[ $CLEANUP_DONE -eq 1 ]] && return
  CLEANUP_DONE=1
  set +e
  trap - INT TERM
  perf_stop
  if is_mounted "$MP"; then
    if ! timeout 150 "$BIN" umount "$MP"; then
      echo "rados: cleanup: ckptfs umount $MP failed" >&2
      if is_mounted "$MP"; then fusermount3 -u "$MP" || umount -l "$MP"; fi
    fi
  fi
  [[ $CEPH_UP -eq 1 ]] && bash "$REPO/scripts/ceph-down.sh" "$CEPH_DIR" >/dev/null 2>&1
  if [[ -d $SESSION ]] && ! is_mounted "$MP"; then
    if [[ $rc -ne 0 && -s $RESULTS ]]; then cp "$RESULTS" "$DIR/last-failed-results.tsv"; fi
    rm -rf --one-file-system "$SESSION"
  fi
  if virsh dominfo "$DOM" >/dev/null 2>&1; then
    virsh domjobabort "$DOM" >/dev/null 2>&1
    virsh destroy "$DOM" >/dev/null 2>&1
    for c in $(virsh checkpoint-list "$DOM" --roots --name 2>/dev/null); do
      virsh -q checkpoint-delete "$DOM" "$c" --children --metadata >/dev/null 2>&1
    done
    [[ $CLEAN == 1 ]] && virsh undefine "$DOM" --checkpoints-metadata >/dev/null
  fi
  [[ $CLEAN == 1 ]] && rm -rf --one-file-system "$DIR"
  [[ $rc -ne 0 ]] && echo "rados: FAILED (exit $rc) during: $STEP" >&2
  exit "$rc"
}

# --- preconditions -----------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (drop_caches, FUSE, libvirt)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for t in virsh qemu-img fusermount3 mountpoint dd sha256sum ceph rados rbd ceph-mon \
  ceph-osd ceph-mgr /usr/bin/time comm "$PY"; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done
[[ $PERF != 1 ]] || command -v perf >/dev/null || die "PERF=1 needs perf"
ensure_libvirtd "$REPO"

mkdir -p "$DIR"
chmod 0755 "$DIR"
exec 9>"$DIR/.lock"
if ! flock -n 9; then
  say "another bench/rados.sh holds $DIR/.lock: waiting for it (up to 30 min)"
  flock -w 1800 9 || die "$DIR/.lock still held after 30 min"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$SESSION"
{ cp "$BIN_SRC" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"; } || die "cannot copy $BIN_SRC"
"$BIN" --version >/dev/null 2>&1 || die "$BIN_SRC does not run: build first"
BIN_VERSION=$("$BIN" --version 2>/dev/null | head -1)
BIN_REV="not $REPO"
if [[ $(realpath "$BIN_SRC") == "$REPO"/build/* ]]; then
  BIN_REV=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')
fi

# --- data, domain, cluster -----------------------------------------------------------
if [[ ! -f $RAW || ! -s $RAW.sha256 ]]; then
  say "creating $RAW: $RANDOM_MIB MiB from /dev/urandom + $((SIZE_MIB - RANDOM_MIB)) MiB of log text"
  rm -f "$RAW" "$RAW.sha256"
  head -c "${RANDOM_MIB}M" /dev/urandom >"$RAW.tmp"
  # Text that zstd shrinks about 3-4x and that never repeats a 256 KiB chunk
  # (every line has its own sequence number and time).
  "$PY" - "$(( (SIZE_MIB - RANDOM_MIB) << 20 ))" >>"$RAW.tmp" <<'EOF'
import random, sys
want, rng, out = int(sys.argv[1]), random.Random(7), sys.stdout.buffer
verbs = ["GET", "PUT", "POST", "DELETE", "HEAD"]
words = ["alpha", "backup", "chunk", "disk", "export", "fuse", "guest", "host", "index",
         "journal", "kernel", "lease", "mount", "nbd", "osd", "pool", "qemu", "rados"]
n, seq = 0, 0
while n < want:
    lines = []
    for _ in range(1000):
        seq += 1
        lines.append(f"2026-12-07T{seq // 3600000 % 24:02d}:{seq // 60000 % 60:02d}:"
                     f"{seq // 1000 % 60:02d}.{seq % 1000:03d}Z host{rng.randrange(40):02d} "
                     f"{rng.choice(verbs)} /{rng.choice(words)}/{rng.choice(words)}/{rng.randrange(10**6)} "
                     f"status={rng.choice((200, 200, 200, 204, 404, 500))} bytes={rng.randrange(1 << 20)} "
                     f"seq={seq}\n")
    b = "".join(lines).encode()[: want - n]
    out.write(b)
    n += len(b)
EOF
  [[ $(stat -c %s "$RAW.tmp") -eq $SIZE ]] || die "$RAW.tmp is not $SIZE bytes"
  mv "$RAW.tmp" "$RAW"
  sha256sum "$RAW" | awk '{print $1}' >"$RAW.sha256"
fi
RAW_SUM=$(cat "$RAW.sha256")
if ! virsh dominfo "$DOM" >/dev/null 2>&1; then
  say "creating domain $DOM ($DOM_MEM_MIB MiB, no OS, vda = $DISK)"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK"
  define_and_start_domain
fi
VIRT_TYPE=$(domain_type)

say "starting a Ceph cluster in $CEPH_DIR (memstore OSD, $((CEPH_UP_MEMSTORE_BYTES >> 30)) GiB)"
CEPH_UP=1
up=$(bash "$REPO/scripts/ceph-up.sh" "$CEPH_DIR" "$POOL") || die "ceph-up.sh failed"
CONF=$(sed -n 's/^CEPH_CONF=//p' <<<"$up")
CID=$(sed -n 's/^CEPH_ID=//p' <<<"$up")
admin osd pool create "$RBD_POOL" 8 8 >/dev/null 2>&1
admin osd pool set "$RBD_POOL" size 1 --yes-i-really-mean-it >/dev/null 2>&1
admin osd pool application enable "$RBD_POOL" rbd >/dev/null 2>&1
rbdc pool init "$RBD_POOL" || die "rbd pool init $RBD_POOL failed"
OSD_PID=$(cat "$CEPH_DIR"/run/osd.*.pid)
CEPH_VERSION=$(ceph --version | awk '{print $3}')

# --- runs ---------------------------------------------------------------------------
: >"$RESULTS"
for run in $(seq 1 "$RUNS"); do
  NS=r$run-$TAG
  RUN=$SESSION/run.$run          # a fresh catalog for the fresh namespace
  IMG=$RBD_POOL/img$run
  say "run $run/$RUNS: resetting $DOM; mounting ckptfs on rados:$POOL/$NS"
  reset_domain
  mkdir -p "$MP" "$RUN"
  mount_ckptfs "$NS" "$RUN"
  meta_objects "$NS" >"$SESSION/meta.0"

  # 1a. Full backup into the fresh namespace.
  full=b-$TAG-$run-full
  say "run $run: full backup $full"
  drop_caches
  echo 5 >"/proc/$DPID/clear_refs"   # reset VmHWM to the current RSS
  record "$run" other_ckptfs_procs "$(pgrep -x ckptfs | grep -vcx "$DPID" || true)"
  o0=$(cpu_s "$OSD_PID")
  perf_start "$DPID" "$SESSION/perf.backup.data"
  read -r s cpu mode < <(backup_run "$full" full) || die "backup $full failed"
  perf_stop
  [[ $mode == full ]] || die "job of $full says mode $mode"
  record "$run" full_s "$s"
  record "$run" full_cpu_daemon_s "$cpu"
  record "$run" full_cpu_osd_s "$(sub "$o0" "$(cpu_s "$OSD_PID")")"
  record "$run" rss_peak_full_mib "$(( $(vm_kib "$DPID" VmHWM) / 1024 ))"
  meta_objects "$NS" >"$SESSION/meta.1"
  read -r b n < <(meta_added "$SESSION/meta.0" "$SESSION/meta.1")
  record "$run" meta_full_bytes "$b"
  record "$run" meta_full_objects "$n"
  stats=$(rados -c "$CONF" --id "$CID" -p "$POOL" -N "$NS" ls | grep -c '^chunks/')
  record "$run" chunk_objects "$stats"

  # 1b. rbd import of the same bytes, right after (fair pairing).
  say "run $run: rbd import $RAW $IMG"
  drop_caches
  o0=$(cpu_s "$OSD_PID")
  read -r s cpu rss < <(timed_rbd /dev/null import "$RAW" "$IMG")
  record "$run" import_s "$s"
  record "$run" import_cpu_rbd_s "$cpu"
  record "$run" import_cpu_osd_s "$(sub "$o0" "$(cpu_s "$OSD_PID")")"
  record "$run" import_rss_mib "$((rss / 1024))"

  # 2a. Cold read of the stored image: a fresh daemon, an empty block cache.
  say "run $run: cold read of $full (remount)"
  umount_ckptfs
  mount_ckptfs "$NS" "$RUN"
  F=$MP/domains/$DOM/$full/vda.img
  [[ $(stat -c %s "$F") -eq $SIZE ]] || die "$F is not $SIZE bytes"
  drop_caches
  echo 5 >"/proc/$DPID/clear_refs"
  c0=$(cpu_s "$DPID")
  o0=$(cpu_s "$OSD_PID")
  perf_start "$DPID" "$SESSION/perf.read.data"
  t0=$(now)
  dd if="$F" of=/dev/null bs=1M status=none
  t1=$(now)
  perf_stop
  record "$run" read_s "$(elapsed "$t0" "$t1")"
  record "$run" read_cpu_daemon_s "$(sub "$c0" "$(cpu_s "$DPID")")"
  record "$run" read_cpu_osd_s "$(sub "$o0" "$(cpu_s "$OSD_PID")")"
  record "$run" rss_peak_read_mib "$(( $(vm_kib "$DPID" VmHWM) / 1024 ))"

  # 2b. rbd export of the imported image to /dev/null, right after.
  say "run $run: rbd export $IMG - >/dev/null"
  drop_caches
  o0=$(cpu_s "$OSD_PID")
  read -r s cpu rss < <(timed_rbd /dev/null export "$IMG" -)
  record "$run" export_s "$s"
  record "$run" export_cpu_rbd_s "$cpu"
  record "$run" export_cpu_osd_s "$(sub "$o0" "$(cpu_s "$OSD_PID")")"

  # Untimed: both hold the disk's bytes.
  if [[ $run -eq 1 && $CHECK != 0 ]]; then
    say "run $run: sha256 of the stored image and of the RBD image"
    [[ $(sha256sum <"$F" | awk '{print $1}') == "$RAW_SUM" ]] || die "CHECKSUM MISMATCH: stored $full"
    [[ $(rbdc export --no-progress "$IMG" - | sha256sum | awk '{print $1}') == "$RAW_SUM" ]] ||
      die "CHECKSUM MISMATCH: rbd export $IMG"
  fi
  rbdc rm --no-progress "$IMG" >/dev/null || die "rbd rm $IMG failed"

  # 4. An incremental with 1% of the disk dirty: its new metadata.
  say "run $run: $DIRTY_RUNS x $((DIRTY_LEN >> 10)) KiB guest writes, incremental backup"
  for k in $(seq 0 $((DIRTY_RUNS - 1))); do
    guest_write $(( (k * 256 + 17) << 20 )) "$DIRTY_LEN" $((0x30 + k + run))
  done
  read -r s cpu mode < <(backup_run "b-$TAG-$run-incr" incremental) || die "incremental failed"
  [[ $mode == incremental ]] || die "the 1% dirty backup was $mode"
  record "$run" incr_s "$s"
  meta_objects "$NS" >"$SESSION/meta.2"
  read -r b n < <(meta_added "$SESSION/meta.1" "$SESSION/meta.2")
  record "$run" meta_incr_bytes "$b"
  record "$run" meta_incr_objects "$n"
  umount_ckptfs
done
virsh destroy "$DOM" >/dev/null 2>&1 || true

# The 2 TiB thin disk and the 8 GiB full disk: the index's own unit test builds
# those backups with the real tree index and counts the bytes of index pages.
TREE_JSON=$SESSION/tree_index.json
if [[ -x $TREE_TEST ]]; then
  say "tree_index_test: metadata of the 2 TiB thin and the 8 GiB full disk"
  "$TREE_TEST" --gtest_filter='*Thin*:*EightGibibyte*' --gtest_output="json:$TREE_JSON" >/dev/null ||
    die "$TREE_TEST failed"
fi

# --- report ---------------------------------------------------------------------
"$PY" - "$RESULTS" "$TREE_JSON" <<EOF
import json, os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run, metric, value = line.rstrip("\n").split("\t")
    rows.setdefault(metric, []).append(float(value))
med = {k: statistics.median(v) for k, v in rows.items()}
n, gib = len(rows["full_s"]), $SIZE / 2**30
def mm(k, fmt="{:.2f}"):
    v = rows[k]
    return f"{fmt.format(med[k])} ({fmt.format(min(v))}-{fmt.format(max(v))})"
def rate(k):
    return f"{$SIZE_MIB / med[k]:.0f} MiB/s"
def verdict(r, t):
    return f"target >= {t}: {'met' if r >= t else 'NOT met'}"
print()
print("### ckptfs on RADOS vs rbd (bench/rados.sh)")
print()
print("\`\`\`")
print(f"date        $(date -u +%Y-%m-%dT%H:%MZ)   host: $(load_line)")
print(f"setup       domain $DOM ($VIRT_TYPE), vda 1 GiB qcow2, fully allocated: {$RANDOM_MIB} MiB random + {$SIZE_MIB - $RANDOM_MIB} MiB log text")
print(f"            ckptfs $BIN_VERSION (tree $BIN_REV), --cache-size $CACHE_SIZE, store rados:$POOL/<fresh namespace per run>")
print(f"            Ceph $CEPH_VERSION, scripts/ceph-up.sh: 1 mon, 1 mgr, 1 memstore OSD on this host; pools of 8 PGs, size 1")
print(f"            runs {n}; median (min-max); drop_caches before every timed step; pairs run back to back")
if max(rows["other_ckptfs_procs"]):
    print(f"noise       {max(rows['other_ckptfs_procs']):.0f} other ckptfs process(es) were running (not ours)")
print()
r1 = med["import_s"] / med["full_s"]
print("1. full backup of 1 GiB (control write -> job succeeded) vs rbd import of the raw bytes")
print(f"   ckptfs full backup into RADOS      {mm('full_s')} s   {rate('full_s')}")
print(f"   rbd import                         {mm('import_s')} s   {rate('import_s')}")
print(f"   ckptfs / rbd import (speed)        {r1:.2f}   ({verdict(r1, 0.7)})")
print(f"   CPU-s per GiB                      ckptfs daemon {med['full_cpu_daemon_s'] / gib:.2f}, OSD {med['full_cpu_osd_s'] / gib:.2f}"
      f" | rbd {med['import_cpu_rbd_s'] / gib:.2f}, OSD {med['import_cpu_osd_s'] / gib:.2f}")
print(f"   peak RSS                           ckptfs daemon {max(rows['rss_peak_full_mib']):.0f} MiB | rbd import {max(rows['import_rss_mib']):.0f} MiB")
print(f"   stored                             {med['chunk_objects']:.0f} chunk objects")
print()
r2 = med["export_s"] / med["read_s"]
print("2. cold read of the stored image (fresh mount, dd bs=1M) vs rbd export IMAGE - >/dev/null")
print(f"   ckptfs cold read                   {mm('read_s')} s   {rate('read_s')}")
print(f"   rbd export                         {mm('export_s')} s   {rate('export_s')}")
print(f"   ckptfs / rbd export (speed)        {r2:.2f}   ({verdict(r2, 1)})")
print(f"   CPU-s per GiB                      ckptfs daemon {med['read_cpu_daemon_s'] / gib:.2f}, OSD {med['read_cpu_osd_s'] / gib:.2f}"
      f" | rbd {med['export_cpu_rbd_s'] / gib:.2f}, OSD {med['export_cpu_osd_s'] / gib:.2f}")
print(f"   peak RSS of the daemon             {max(rows['rss_peak_read_mib']):.0f} MiB (budget $CACHE_SIZE + 64 MiB)")
print()
print("3. metadata per backup (objects a backup adds outside chunks/: index pages, record)")
print(f"   this 1 GiB disk, full              {med['meta_full_bytes']:.0f} bytes in {med['meta_full_objects']:.0f} objects")
print(f"   1% dirty incremental ({$DIRTY_RUNS} x 2.5 MiB) {med['meta_incr_bytes']:.0f} bytes in {med['meta_incr_objects']:.0f} objects"
      f" = {100 * med['meta_incr_bytes'] / med['meta_full_bytes']:.1f}% of the full; took {mm('incr_s')} s")
tj = sys.argv[2]
if os.path.exists(tj):
    props = {}
    for suite in json.load(open(tj))["testsuites"]:
        for t in suite["testsuite"]:
            props.update({k: v for k, v in t.items() if k.endswith("_bytes")})
    if "thin_full_metadata_bytes" in props:
        print(f"   2 TiB thin, 8 x 16 MiB data        full {props['thin_full_metadata_bytes']} bytes, incremental (4 x 1 MiB) {props['thin_incremental_metadata_bytes']} bytes  (tree_index_test)")
    if "full_8g_metadata_bytes" in props:
        f8, i8 = int(props['full_8g_metadata_bytes']), int(props['inc_8g_metadata_bytes'])
        print(f"   8 GiB fully allocated              full {f8} bytes, 1% dirty {i8} bytes = {100 * i8 / f8:.2f}%  (tree_index_test)")
print("\`\`\`")
print()
print("per run:")
keys = sorted(rows)
for k in keys:
    print(f"  {k:24s} " + "  ".join(f"{v:g}" for v in rows[k]))
EOF
if [[ $PERF == 1 ]]; then
  for p in backup read; do
    f=$SESSION/perf.$p.data
    [[ -s $f ]] || continue
    echo
    echo "perf, daemon during run 1's $p (self, top 25):"
    cp "$f" "$DIR/perf.$p.data"   # kept for `perf report -i` after the run
    perf report -i "$f" --no-children -g none --sort dso,sym --stdio 2>/dev/null |
      grep -v '^#' | grep '%' | head -25 || true
  done
fi
