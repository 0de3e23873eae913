#!/usr/bin/env bash
# bench/live_read.sh -- cold/warm sequential read of a live checkpoint image:
# ckptfs vs nbdfuse vs nbdcopy on the same libvirt pull-mode NBD export, plus
# the local page cache as the ceiling. Run as root. See bench/README.md.
#
#   RUNS=5 CACHE_SIZE=256M CLEAN=0 bench/live_read.sh
#
# Env:
#   RUNS         timed runs (default 5); figures are medians over runs
#   CACHE_SIZE   ckptfs --cache-size (default 256M)
#   CLEAN=1      at the end also destroy + undefine the test domain and delete
#                /var/lib/ckptfs-bench (default: keep them for the next run)
#   TRACE=0      skip the strace histogram of FUSE read sizes (default on if
#                strace is installed; only in the untimed correctness pass)
#   NBDFUSE_RA_KB  read_ahead_kb for the second nbdfuse row (default 8192,
#                the value ckptfs sets on its own bdi); 0 skips that row
#   CKPTFS_BIN   the binary (default: <repo>/build/ckptfs)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CKPTFS_BIN:-$REPO/build/ckptfs}
RUNS=${RUNS:-5}
CACHE_SIZE=${CACHE_SIZE:-256M}
CLEAN=${CLEAN:-0}
TRACE=${TRACE:-1}
NBDFUSE_RA_KB=${NBDFUSE_RA_KB:-8192}
PY=${PYTHON:-python3}

DOM=ckptfs-bench
DIR=/var/lib/ckptfs-bench
BENCH=live_read
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
RAW=$DIR/random.raw          # the 1 GiB of random data (page-cache baseline, checksum)
DISK=$DIR/vda.qcow2          # the domain's disk, converted from $RAW
SESSION=$DIR/s.$$            # short: the NBD socket path must stay < 108 bytes
MP=$SESSION/mnt
RUN=$SESSION/run
NBDMNT=$SESSION/nbdfuse
RESULTS=$SESSION/results.tsv
SIZE=$((1024 * 1024 * 1024))
SIZE_MIB=1024
TAG=$(date -u +%Y%m%dT%H%M%S)
export LIBVIRT_DEFAULT_URI=qemu:///system

# State the cleanup trap looks at.
LIVE_CKPT=""        # checkpoint with a live export (to release)
NBDFUSE_PID=""      # nbdfuse we started
STRACE_PID=""       # strace we started
WE_STARTED_DOM=0    # shut the domain off at the end only if we started it
CLEANUP_DONE=0
STEP="start"        # what was running, for the failure message

mibps() { awk -v s="$1" -v m="$SIZE_MIB" 'BEGIN { printf "%.1f", m / s }'; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }  # RUN METRIC VALUE

# dd FILE to /dev/null with 1 MiB reads; prints the seconds. The file must be
# exactly 1 GiB (a short file would give a flattering rate).
timed_dd() {
  local f=$1 sz t0 t1
  sz=$(stat -c %s "$f")
  [[ $sz -eq $SIZE ]] || die "$f is $sz bytes, expected $SIZE"
  t0=$(now)
  dd if="$f" of=/dev/null bs=1M status=none
  t1=$(now)
  elapsed "$t0" "$t1"
}

daemon_json() {  # python expression on the parsed status.json, e.g. j["pid"]
  "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$MP/control/status.json" "$1"
}


release_ckpt() {  # NAME: end the export, then drop the libvirt checkpoint (its bitmap)
  local name=$1
  "$BIN" release "$DOM" "$name" -m "$MP" >/dev/null
  LIVE_CKPT=""
  virsh -q checkpoint-delete "$DOM" "$name" >/dev/null 2>&1 ||
    echo "live_read: warning: virsh checkpoint-delete $DOM $name failed" >&2
}

new_ckpt() {  # NAME; sets LIVE_CKPT and CREATE_S (seconds `ckptfs checkpoint` took)
  local name=$1 t0 t1
  t0=$(now)
  "$BIN" checkpoint "$DOM" --name "$name" -m "$MP" >/dev/null
  t1=$(now)
  LIVE_CKPT=$name
  CREATE_S=$(elapsed "$t0" "$t1")
}

nbd_uri() {
  local uuid sock
  uuid=$(virsh domuuid "$DOM" | tr -d '[:space:]')
  sock=$RUN/$uuid/nbd.sock
  [[ -S $sock ]] || die "no NBD socket at $sock (is the checkpoint live?)"
  echo "nbd+unix:///vda?socket=$sock"
}

nbdfuse_up() {  # URI [RA_KB]: mount nbdfuse on $NBDMNT (read-only, defaults)
  local uri=$1 ra=${2:-} pidf=$SESSION/nbdfuse.pid
  mkdir -p "$NBDMNT"
  rm -f "$pidf"
  nbdfuse -r -P "$pidf" "$NBDMNT" "$uri" 2>>"$SESSION/nbdfuse.log" &
  NBDFUSE_PID=$!
  for _ in $(seq 1 300); do
    [[ -s $pidf ]] && is_mounted "$NBDMNT" && break
    kill -0 "$NBDFUSE_PID" 2>/dev/null || die "nbdfuse exited: $(cat "$SESSION/nbdfuse.log")"
    sleep 0.1
  done
  is_mounted "$NBDMNT" || die "nbdfuse did not mount $NBDMNT"
  if [[ -n $ra ]]; then
    echo "$ra" >"/sys/class/bdi/$(bdi_of "$NBDMNT")/read_ahead_kb"
  fi
  NBDFUSE_RA=$(read_ahead_of "$NBDMNT")
}

nbdfuse_down() {
  [[ -n $NBDFUSE_PID ]] || return 0
  is_mounted "$NBDMNT" && fusermount3 -u "$NBDMNT"
  wait "$NBDFUSE_PID" 2>/dev/null || true
  NBDFUSE_PID=""
}

cleanup() {
  local rc=$?
  [[ $CLEANUP_DONE -eq 1 ]] && return
  CLEANUP_DONE=1
  set +e
  trap - INT TERM
  if [[ -n $STRACE_PID ]]; then kill "$STRACE_PID" 2>/dev/null; wait "$STRACE_PID" 2>/dev/null; fi
  if [[ -n $NBDFUSE_PID ]] || is_mounted "$NBDMNT"; then
    is_mounted "$NBDMNT" && { fusermount3 -u "$NBDMNT" || umount -l "$NBDMNT"; }
    [[ -n $NBDFUSE_PID ]] && wait "$NBDFUSE_PID" 2>/dev/null
  fi
  if is_mounted "$MP"; then
    if [[ -n $LIVE_CKPT ]]; then
      "$BIN" release "$DOM" "$LIVE_CKPT" -m "$MP" >/dev/null ||
        echo "live_read: cleanup: release $LIVE_CKPT failed" >&2
      virsh -q checkpoint-delete "$DOM" "$LIVE_CKPT" >/dev/null 2>&1
    fi
    if ! timeout 150 "$BIN" umount "$MP"; then
      echo "live_read: cleanup: ckptfs umount $MP failed" >&2
      if is_mounted "$MP"; then fusermount3 -u "$MP" || umount -l "$MP"; fi
    fi
  fi
  if [[ -d $SESSION ]] && ! is_mounted "$MP" && ! is_mounted "$NBDMNT"; then
    if [[ $rc -ne 0 && -s $RESULTS ]]; then cp "$RESULTS" "$DIR/last-failed-results.tsv"; fi
    rm -rf --one-file-system "$SESSION"
  fi
  if virsh dominfo "$DOM" >/dev/null 2>&1; then
    # A backup job left over (e.g. the daemon died) must not stay open.
    virsh domjobabort "$DOM" >/dev/null 2>&1
    if [[ $CLEAN == 1 ]]; then
      say "CLEAN=1: removing domain $DOM and $DIR"
      virsh destroy "$DOM" >/dev/null 2>&1
      virsh undefine "$DOM" --checkpoints-metadata >/dev/null
    elif [[ $WE_STARTED_DOM -eq 1 ]]; then
      virsh destroy "$DOM" >/dev/null 2>&1   # stays defined, disk kept for reuse
    fi
  fi
  [[ $CLEAN == 1 ]] && rm -rf --one-file-system "$DIR"
  [[ $rc -ne 0 ]] && echo "live_read: FAILED (exit $rc) during: $STEP" >&2
  exit "$rc"
}

# --- preconditions -----------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (drop_caches, FUSE, libvirt)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for t in virsh qemu-img nbdfuse nbdcopy fusermount3 mountpoint dd sha256sum "$PY"; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done
[[ -x $BIN ]] || die "no $BIN: build first (cmake --preset default && cmake --build --preset default)"
CACHE_MIB=$("$PY" - "$CACHE_SIZE" <<'EOF'
import re, sys
m = re.fullmatch(r'(\d+)([KMGT]?)i?B?', sys.argv[1].strip(), re.I)
if not m:
    sys.exit("bad CACHE_SIZE")
n = int(m.group(1)) * {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}[m.group(2).upper()]
print(n // (1 << 20))
EOF
) || die "cannot parse CACHE_SIZE=$CACHE_SIZE"
if ! timeout 10 virsh version >/dev/null 2>&1; then
  if [[ -f $REPO/scripts/libvirtd-up.sh ]]; then
    bash "$REPO/scripts/libvirtd-up.sh" || die "libvirtd does not answer"
  else
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    sleep 3
    timeout 10 virsh version >/dev/null 2>&1 || die "libvirtd does not answer"
  fi
fi

trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. test domain ------------------------------------------------------------
define_domain() {
  DOM_XML="$DIR/domain.xml" define_and_start_domain
  WE_STARTED_DOM=1
}

if virsh dominfo "$DOM" >/dev/null 2>&1 && { [[ ! -f $RAW || ! -f $DISK ]]; }; then
  say "domain $DOM exists but $RAW or $DISK is missing: recreating it"
  virsh destroy "$DOM" >/dev/null 2>&1 || true
  virsh undefine "$DOM" --checkpoints-metadata >/dev/null
fi
if ! virsh dominfo "$DOM" >/dev/null 2>&1; then
  say "creating domain $DOM: 1 GiB of random data in $DISK"
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  rm -f "$RAW" "$RAW.sha256" "$DISK"
  head -c 1G /dev/urandom >"$RAW.tmp"
  mv "$RAW.tmp" "$RAW"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK"
  define_domain
else
  say "reusing domain $DOM"
  if [[ $(virsh domstate "$DOM") != running* ]]; then
    virsh -q start "$DOM" >/dev/null
    WE_STARTED_DOM=1
  fi
  # Leftovers of an interrupted run: a backup job, bench checkpoints.
  virsh domjobabort "$DOM" >/dev/null 2>&1 || true
  for c in $(virsh checkpoint-list "$DOM" --name 2>/dev/null); do
    if [[ $c == bench-* ]]; then
      virsh -q checkpoint-delete "$DOM" "$c" >/dev/null 2>&1 || true
    fi
  done
fi
[[ "$(virsh domstate "$DOM")" == running* ]] || die "$DOM is not running"
VIRT_TYPE=$(virsh dumpxml "$DOM" | sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p")
[[ -s $RAW.sha256 ]] || sha256sum "$RAW" | awk '{print $1}' >"$RAW.sha256"
RAW_SUM=$(cat "$RAW.sha256")

# --- 2. mount + correctness pass ----------------------------------------------
say "mounting ckptfs on $MP (cache $CACHE_SIZE, run dir $RUN)"
mkdir -p "$MP" "$RUN"
: >"$RESULTS"
"$BIN" mount "$MP" --run-dir "$RUN" --cache-size "$CACHE_SIZE"
is_mounted "$MP" || die "ckptfs mount returned but $MP is not mounted"
DPID=$(daemon_json 'j["pid"]')
[[ -d /proc/$DPID ]] || die "daemon pid $DPID from status.json is not running"
CKPTFS_RA=$(read_ahead_of "$MP")   # right when `ckptfs mount` returned
BIN_REV="not $REPO"
if [[ $(realpath "$BIN") == "$REPO"/build/* ]]; then
  BIN_REV=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')
fi
IDLE_RSS_MIB=$(( $(vm_kib "$DPID" VmRSS) / 1024 ))

say "correctness pass: checkpoint bench-$TAG-check, sha256 of vda.img vs $RAW"
new_ckpt "bench-$TAG-check"
IMG=$MP/domains/$DOM/$LIVE_CKPT/vda.img
[[ $(stat -c %s "$IMG") -eq $SIZE ]] || die "$IMG has size $(stat -c %s "$IMG"), expected $SIZE"
TRACE_PREFIX=$SESSION/strace
if [[ $TRACE != 0 ]] && command -v strace >/dev/null; then
  # Every FUSE reply is one writev on /dev/fuse: 16-byte header + data.
  # -ff: one file per thread, so no <unfinished ...> splits to stitch.
  strace -ff -qq -e trace=writev -e signal=none -o "$TRACE_PREFIX" -p "$DPID" 2>/dev/null &
  STRACE_PID=$!
  sleep 1
fi
drop_caches
IMG_SUM=$(sha256sum "$IMG" | awk '{print $1}')
if [[ -n $STRACE_PID ]]; then
  kill "$STRACE_PID" 2>/dev/null || true
  wait "$STRACE_PID" 2>/dev/null || true
  STRACE_PID=""
fi
[[ $IMG_SUM == "$RAW_SUM" ]] || die "CHECKSUM MISMATCH: vda.img $IMG_SUM, random.raw $RAW_SUM"
CHECK="sha256 of vda.img == random.raw ($RAW_SUM)"
READ_SIZES="(not traced)"
FUSE_FDS=""
for f in /proc/"$DPID"/fd/*; do
  if [[ $(readlink "$f" 2>/dev/null) == /dev/fuse ]]; then FUSE_FDS+="${f##*/} "; fi
done
if compgen -G "$TRACE_PREFIX.*" >/dev/null; then
  READ_SIZES=$("$PY" - "$FUSE_FDS" "$TRACE_PREFIX".* <<'EOF'
import collections, re, sys
fds = set(sys.argv[1].split())
sizes = collections.Counter()
for path in sys.argv[2:]:
    for line in open(path, errors="replace"):
        m = re.match(r'writev\((\d+),.*\)\s+=\s+(\d+)\s*$', line)
        if m and m.group(1) in fds and int(m.group(2)) > 4096 + 16:
            sizes[int(m.group(2)) - 16] += 1
tot = sum(sizes.values())
if not tot:
    print("(no data replies seen)")
else:
    top = ", ".join(f"{s // 1024} KiB x{n}" for s, n in sizes.most_common(4))
    data = sum(s * n for s, n in sizes.items())
    print(f"{tot} replies > 4 KiB, {data / 2**20:.0f} MiB, mean {data / tot / 1024:.0f} KiB; most common: {top}")
EOF
)
fi
release_ckpt "bench-$TAG-check"

# --- 3. timed runs --------------------------------------------------------------
for run in $(seq 1 "$RUNS"); do
  say "run $run/$RUNS"
  name=bench-$TAG-$run
  new_ckpt "$name"
  record "$run" ckpt_create_s "$CREATE_S"
  IMG=$MP/domains/$DOM/$name/vda.img

  # a. ckptfs cold: new checkpoint (empty block cache) + dropped page cache
  STEP="run $run: ckptfs cold read of $IMG"
  drop_caches
  echo 5 >"/proc/$DPID/clear_refs"          # reset VmHWM to the current RSS
  record "$run" rss_before_mib "$(( $(vm_kib "$DPID" VmRSS) / 1024 ))"
  s=$(timed_dd "$IMG"); record "$run" ckptfs_cold "$(mibps "$s")"
  record "$run" rss_peak_mib "$(( $(vm_kib "$DPID" VmHWM) / 1024 ))"
  CKPTFS_RA_READ=$(read_ahead_of "$MP")
  # d. warm re-read, no drop
  STEP="run $run: ckptfs warm re-read of $IMG"
  s=$(timed_dd "$IMG"); record "$run" ckptfs_warm "$(mibps "$s")"

  uri=$(nbd_uri)
  # b. nbdfuse, defaults
  STEP="run $run: nbdfuse ($uri)"
  nbdfuse_up "$uri"
  NBDFUSE_RA_DEFAULT=$NBDFUSE_RA
  drop_caches
  s=$(timed_dd "$NBDMNT/nbd"); record "$run" nbdfuse "$(mibps "$s")"
  nbdfuse_down
  # b'. nbdfuse with ckptfs's read-ahead window (is the gap only read-ahead?)
  if [[ $NBDFUSE_RA_KB != 0 ]]; then
    nbdfuse_up "$uri" "$NBDFUSE_RA_KB"
    drop_caches
    s=$(timed_dd "$NBDMNT/nbd"); record "$run" nbdfuse_ra "$(mibps "$s")"
    nbdfuse_down
  fi
  # c. nbdcopy -> null: (no FUSE at all)
  STEP="run $run: nbdcopy $uri null:"
  drop_caches
  t0=$(now); nbdcopy "$uri" null:; t1=$(now)
  record "$run" nbdcopy "$(mibps "$(elapsed "$t0" "$t1")")"

  STEP="run $run: release $name"
  release_ckpt "$name"

  # d'. local page cache: warm the raw file, then time it
  STEP="run $run: page-cache read of $RAW"
  cat "$RAW" >/dev/null
  s=$(timed_dd "$RAW"); record "$run" pagecache "$(mibps "$s")"
done

STATUS_CACHE=$(daemon_json 'json.dumps(j["cache"])')

# --- report ---------------------------------------------------------------------
"$PY" - "$RESULTS" <<EOF
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run, metric, value = line.split("\t")
    rows.setdefault(metric, []).append(float(value))
med = {k: statistics.median(v) for k, v in rows.items()}
budget = $CACHE_MIB
ra = "$NBDFUSE_RA_KB"
print()
print("### ckptfs live read benchmark (bench/live_read.sh)")
print()
print("\`\`\`")
print(f"date        $(date -u +%Y-%m-%dT%H:%MZ)   host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)")
print(f"setup       domain $DOM ($VIRT_TYPE), 1 GiB qcow2 of random data, live pull-mode export")
print(f"            ckptfs $("$BIN" --version 2>/dev/null | head -1) ($BIN, built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ); tree $BIN_REV)")
print(f"            --cache-size $CACHE_SIZE, runs {len(rows['ckptfs_cold'])}, each cold read after drop_caches")
print(f"correctness $CHECK")
print()
labels = [
    ("ckptfs_cold", "ckptfs cold   (new checkpoint, dd bs=1M)"),
    ("nbdfuse",     "nbdfuse cold  (defaults, read_ahead_kb=$NBDFUSE_RA_DEFAULT)"),
    ("nbdfuse_ra",  f"nbdfuse cold  (read_ahead_kb={ra})"),
    ("nbdcopy",     "nbdcopy -> null: (no FUSE)"),
    ("ckptfs_warm", "ckptfs warm   (re-read, kernel cache)"),
    ("pagecache",   "page cache    (local 1 GiB file)"),
]
print(f"{'tool':<46}{'median MiB/s':>13}{'min':>9}{'max':>9}")
for key, label in labels:
    if key in rows:
        v = rows[key]
        print(f"{label:<46}{med[key]:>13.0f}{min(v):>9.0f}{max(v):>9.0f}")
print()
def ratio(a, b):
    return f"{med[a] / med[b]:.2f}" if a in med and b in med and med[b] else "n/a"
print(f"ckptfs / nbdfuse (cold, defaults)     {ratio('ckptfs_cold', 'nbdfuse')}")
if "nbdfuse_ra" in med:
    print(f"ckptfs / nbdfuse (cold, same RA)      {ratio('ckptfs_cold', 'nbdfuse_ra')}")
print(f"ckptfs / nbdcopy (cold)               {ratio('ckptfs_cold', 'nbdcopy')}")
print(f"ckptfs warm / page cache              {ratio('ckptfs_warm', 'pagecache')}")
rss = rows["rss_peak_mib"]
limit = budget + 64
verdict = "OK" if max(rss) <= limit else "OVER"
print(f"daemon peak RSS (VmHWM, cold read)    median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB"
      f"  vs budget {budget} MiB + 64 = {limit} MiB: {verdict}")
rb = rows["rss_before_mib"]
print(f"daemon RSS before each cold read      median {statistics.median(rb):.0f} MiB (after mount, idle: $IDLE_RSS_MIB MiB)")
c = rows["ckpt_create_s"]
print(f"checkpoint create (ckptfs checkpoint) median {statistics.median(c):.2f} s, min {min(c):.2f}, max {max(c):.2f}")
print(f"read_ahead_kb                         ckptfs bdi $CKPTFS_RA_READ during reads ($CKPTFS_RA when mount returned), nbdfuse bdi $NBDFUSE_RA_DEFAULT")
print(f"FUSE read sizes at the daemon         $READ_SIZES")
cache = json.loads('''$STATUS_CACHE''')
print("block cache (status.json, all runs)   " + ", ".join(f"{k} {v}" for k, v in cache.items()))
print("\`\`\`")
print()
print("per run (MiB/s; rss MiB; create s):")
for key in [k for k, _ in labels] + ["rss_before_mib", "rss_peak_mib", "ckpt_create_s"]:
    if key in rows:
        print(f"  {key:<14}" + "  ".join(f"{x:8.1f}" for x in rows[key]))
EOF
