#!/usr/bin/env bash
# bench/backup.sh -- backups into the store and reads from it, side by side with
# reference tools, on one 1 GiB disk holding 768 MiB of random data:
#   1. full backup (control/backup, fresh store) vs nbdcopy of the same kind of
#      export to a local raw file (+ fsync);
#   2. incremental backup with ~1% of the disk dirty (160 x 64 KiB guest writes);
#   3. cold sequential read of the stored image vs qemu-storage-daemon's FUSE
#      export of a local qcow2 of the same data;
#   4. store size against the allocated data, and a second full backup into the
#      same store (dedup: adds ~0 chunk bytes);
# plus the daemon's peak RSS and CPU during the full backup. Run as root. See
# bench/README.md.
#
#   RUNS=3 CACHE_SIZE=256M CLEAN=0 bench/backup.sh
#
# Env:
#   RUNS         timed runs (default 3); figures are medians over runs
#   CACHE_SIZE   ckptfs --cache-size (default 256M)
#   CHECK=0      skip the untimed sha256 checks of the stored images (run 1)
#   TOP=0        skip the `top` snapshot taken during run 1's full backup
#   CLEAN=1      at the end also undefine the test domain and delete
#                /var/lib/ckptfs-bench-backup (default: keep them for the next run)
#   CKPTFS_BIN   the binary (default: <repo>/build/ckptfs); copied into the
#                session first, so a rebuild during the run does not matter
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_SRC=${CKPTFS_BIN:-$REPO/build/ckptfs}
RUNS=${RUNS:-3}
CACHE_SIZE=${CACHE_SIZE:-256M}
CLEAN=${CLEAN:-0}
CHECK=${CHECK:-1}
TOP=${TOP:-1}
PY=${PYTHON:-python3}
BENCH=backup
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

DOM=ckptfs-bench-backup
DOM_MEM_MIB=256
DIR=/var/lib/ckptfs-bench-backup
RAW=$DIR/data.raw              # 768 MiB random + 256 MiB hole: the disk's content
DISK=$DIR/vda.qcow2            # the domain's disk, reconverted from $RAW every run
LOCAL_QCOW2=$DIR/local.qcow2   # $RAW converted once: qemu-storage-daemon reads it
DOM_XML=$DIR/domain.xml
SESSION=$DIR/s.$$              # short: the NBD socket path must stay < 108 bytes
MP=$SESSION/mnt
RUN=$SESSION/run
BIN=$SESSION/ckptfs
RESULTS=$SESSION/results.tsv
TOP_FILE=$SESSION/top.txt
NBDCOPY_OUT=/var/tmp/ckptfs-bench-nbdcopy.$$.raw
QSD_IMG=/var/tmp/ckptfs-bench-qsd.$$.img
QSD_PID_FILE=$SESSION/qsd.pid
SIZE=$((1024 * 1024 * 1024))
SIZE_MIB=1024
DATA_MIB=768
WRITES=160                     # incremental: 160 x 64 KiB = 10 MiB (~1% of the disk)
WRITE_LEN=65536
TAG=$(date -u +%Y%m%dT%H%M%S)
export LIBVIRT_DEFAULT_URI=qemu:///system

# State the cleanup trap looks at.
LIVE_CKPT=""       # checkpoint with a live export that we must release
QSD_PID=""
CLEANUP_DONE=0

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }  # RUN METRIC VALUE
mibps() { awk -v s="$1" -v m="${2:-$SIZE_MIB}" 'BEGIN { printf "%.1f", m / s }'; }

timed_dd() {  # FILE -> seconds of `dd bs=1M` of the whole (exactly 1 GiB) file
  local f=$1 sz t0 t1
  sz=$(stat -c %s "$f")
  [[ $sz -eq $SIZE ]] || die "$f is $sz bytes, expected $SIZE"
  t0=$(now)
  dd if="$f" of=/dev/null bs=1M status=none
  t1=$(now)
  elapsed "$t0" "$t1"
}

libvirt_floor() {  # BASE_CHECKPOINT -> seconds of virsh backup-begin + domjobabort
  local d=$SESSION/floor t0 t1 c=floor-$$-$RANDOM
  rm -rf "$d"
  mkdir -p "$d"
  chown libvirt-qemu:libvirt-qemu "$d"
  chmod 0700 "$d"
  cat >"$d.backup.xml" <<EOF
<domainbackup mode='pull'><incremental>$1</incremental>
<server transport='unix' socket='$d/nbd.sock'/>
<disks><disk name='vda' backup='yes' type='file'><driver type='qcow2'/>
<scratch file='$d/vda.scratch'/></disk></disks></domainbackup>
EOF
  cat >"$d.ckpt.xml" <<EOF
<domaincheckpoint><name>$c</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>
EOF
  t0=$(now)
  virsh -q backup-begin "$DOM" "$d.backup.xml" "$d.ckpt.xml" >/dev/null || die "virsh backup-begin failed"
  virsh -q domjobabort "$DOM" >/dev/null || die "virsh domjobabort failed"
  t1=$(now)
  # Deleting the checkpoint merges its bitmap into its parent's: ckptfs's
  # next incremental still starts from its own last backup.
  virsh -q checkpoint-delete "$DOM" "$c" >/dev/null || die "virsh checkpoint-delete $c failed"
  rm -rf "$d" "$d.backup.xml" "$d.ckpt.xml"
  elapsed "$t0" "$t1"
}

store_bytes() {  # STORE -> "chunk_bytes chunk_objects backup_bytes"
  local c=0 n=0 b=0
  [[ -d $1/chunks ]] && { c=$(du -sb "$1/chunks" | cut -f1); n=$(find "$1/chunks" -type f | wc -l); }
  [[ -d $1/backups ]] && b=$(du -sb "$1/backups" | cut -f1)
  echo "$c $n $b"
}

mount_ckptfs() {  # STORE
  "$BIN" mount "$MP" --run-dir "$RUN" --store "$1" --cache-size "$CACHE_SIZE"
  is_mounted "$MP" || die "ckptfs mount returned but $MP is not mounted"
  DPID=$(json_get "$MP/control/status.json" 'j["pid"]')
  [[ -d /proc/$DPID ]] || die "daemon pid $DPID from status.json is not running"
}

umount_ckptfs() {
  is_mounted "$MP" || return 0
  timeout 150 "$BIN" umount "$MP" || die "ckptfs umount $MP failed"
}

nbd_uri() {
  local uuid sock
  uuid=$(virsh domuuid "$DOM" | tr -d '[:space:]')
  sock=$RUN/$uuid/nbd.sock
  [[ -S $sock ]] || die "no NBD socket at $sock (is the checkpoint live?)"
  echo "nbd+unix:///vda?socket=$sock"
}

# Every run starts from the same disk: shut the domain off, drop its checkpoint
# metadata (the bitmaps go with the old qcow2), reconvert $RAW, start it again.
reset_domain() {
  virsh destroy "$DOM" >/dev/null 2>&1 || true
  local c
  for c in $(virsh checkpoint-list "$DOM" --roots --name 2>/dev/null); do
    virsh -q checkpoint-delete "$DOM" "$c" --children --metadata >/dev/null
  done
  [[ -z $(virsh checkpoint-list "$DOM" --name 2>/dev/null | tr -d '[:space:]') ]] ||
    die "checkpoints of $DOM left after deleting their metadata"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK.tmp"
  mv "$DISK.tmp" "$DISK"
  virsh -q start "$DOM" >/dev/null
  [[ "$(virsh domstate "$DOM")" == running* ]] || die "$DOM is not running"
  QPID=$(qemu_pid_of "$DOM")
  [[ -n $QPID && -d /proc/$QPID ]] || die "cannot find the QEMU pid of $DOM"
}

# backup_timed NAME MODE TOPFILE|-: start a backup through control/backup and poll
# its job record every 50 ms until it succeeds. Prints one JSON object: accept_s
# (the write returned), total_s (job seen succeeded), CPU seconds of the daemon and
# of QEMU over that time, and the final job record. Fails if the job fails.
backup_timed() {
  "$PY" - "$MP" "$DOM" "$1" "$2" "$DPID" "$QPID" "$3" <<'EOF'
import json, os, subprocess, sys, time
mp, dom, name, mode, dpid, qpid, topfile = sys.argv[1:8]
hz = os.sysconf("SC_CLK_TCK")
def cpu(pid):  # (user, system) seconds
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) / hz, int(f[12]) / hz)
    except OSError:
        return (float("nan"), float("nan"))
c0 = (cpu(dpid), cpu(qpid))
t0 = time.monotonic()
fd = os.open(f"{mp}/control/backup", os.O_RDWR)
line = f"{dom} name={name} mode={mode}"
try:
    os.write(fd, (line + "\n").encode())
except OSError as e:
    try:
        reply = os.read(fd, 65536).decode().strip()
    except OSError:
        reply = ""
    sys.exit(f"write '{line}' to control/backup: {os.strerror(e.errno)}; reply: {reply}")
reply = os.read(fd, 65536).decode()
os.close(fd)
accept = time.monotonic() - t0
job_id = json.loads(reply)["id"]
path = f"{mp}/control/jobs/{job_id}.json"
top = None
while True:
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, ValueError):
        j = None
    if j is not None:
        if j["state"] == "succeeded":
            break
        if j["state"] in ("failed", "rejected"):
            sys.exit(f"backup job {job_id} {j['state']}: {json.dumps(j)}")
        p = j.get("progress") or {}
        if (topfile != "-" and top is None and p.get("total")
                and p.get("done", 0) >= 0.4 * p["total"]):
            top = subprocess.Popen(["top", "-b", "-n", "2", "-d", "0.5", "-w", "160"],
                                   stdout=open(topfile, "w"), stderr=subprocess.DEVNULL)
    if time.monotonic() - t0 > 1800:
        sys.exit(f"backup job {job_id} still {j and j['state']} after 30 min")
    time.sleep(0.05)
total = time.monotonic() - t0
c1 = (cpu(dpid), cpu(qpid))
if top:
    top.wait()
print(json.dumps({"id": job_id, "accept_s": accept, "total_s": total,
                  "cpu_daemon_user_s": c1[0][0] - c0[0][0], "cpu_daemon_sys_s": c1[0][1] - c0[0][1],
                  "cpu_qemu_s": sum(c1[1]) - sum(c0[1]), "job": j}))
EOF
}

# job_field JSON EXPR: python expression on the parsed object o
# (iso("...") turns a job time into epoch seconds.)
job_field() {
  "$PY" -c 'import calendar, json, sys, time
iso = lambda s: calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
o = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

# Record one timed backup: PREFIX JSON
record_backup() {
  local run=$1 p=$2 js=$3
  record "$run" "${p}_s" "$(job_field "$js" 'round(o["total_s"], 4)')"
  record "$run" "${p}_accept_s" "$(job_field "$js" 'round(o["accept_s"], 4)')"
  # The job's own times (1 s resolution): a cross-check of the poll.
  record "$run" "${p}_job_s" "$(job_field "$js" 'iso(o["job"]["ended"]) - iso(o["job"]["started"])')"
  record "$run" "${p}_total_mib" "$(job_field "$js" 'round(o["job"]["progress"]["total"] / 2**20, 2)')"
  record "$run" "${p}_cpu_daemon_s" "$(job_field "$js" 'round(o["cpu_daemon_user_s"] + o["cpu_daemon_sys_s"], 2)')"
  record "$run" "${p}_cpu_daemon_sys_s" "$(job_field "$js" 'round(o["cpu_daemon_sys_s"], 2)')"
  record "$run" "${p}_cpu_qemu_s" "$(job_field "$js" 'round(o["cpu_qemu_s"], 2)')"
}

record_store() {  # RUN PREFIX STORE
  local c n b
  read -r c n b < <(store_bytes "$3")
  record "$1" "${2}_chunk_mib" "$(awk -v x="$c" 'BEGIN { printf "%.3f", x / 1048576 }')"
  record "$1" "${2}_chunk_objects" "$n"
  record "$1" "${2}_backups_kib" "$(awk -v x="$b" 'BEGIN { printf "%.1f", x / 1024 }')"
}

qsd_up() {
  : >"$QSD_IMG"
  rm -f "$QSD_PID_FILE"
  qemu-storage-daemon --daemonize --pidfile "$QSD_PID_FILE" \
    --blockdev "driver=file,node-name=file,filename=$LOCAL_QCOW2,read-only=on" \
    --blockdev driver=qcow2,node-name=fmt,file=file,read-only=on \
    --export "type=fuse,id=exp,node-name=fmt,mountpoint=$QSD_IMG" \
    2>>"$SESSION/qsd.log" || die "qemu-storage-daemon failed: $(cat "$SESSION/qsd.log")"
  QSD_PID=$(cat "$QSD_PID_FILE")
  is_mounted "$QSD_IMG" || die "qemu-storage-daemon did not mount $QSD_IMG"
}

qsd_down() {
  [[ -n $QSD_PID ]] || return 0
  kill "$QSD_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$QSD_PID" 2>/dev/null || break
    sleep 0.1
  done
  is_mounted "$QSD_IMG" && { fusermount3 -u "$QSD_IMG" 2>/dev/null || umount -l "$QSD_IMG"; }
  QSD_PID=""
  rm -f "$QSD_IMG"
}

cleanup() {
  local rc=$?
  [[ $CLEANUP_DONE -eq 1 ]] && return
  CLEANUP_DONE=1
  set +e
  trap - INT TERM
  qsd_down
  rm -f "$QSD_IMG" "$NBDCOPY_OUT"
  if is_mounted "$MP"; then
    if [[ -n $LIVE_CKPT ]]; then
      ctl_request "$MP/control/release" "$DOM $LIVE_CKPT" >/dev/null ||
        echo "backup: cleanup: release $LIVE_CKPT failed" >&2
    fi
    if ! timeout 150 "$BIN" umount "$MP"; then
      echo "backup: cleanup: ckptfs umount $MP failed" >&2
      if is_mounted "$MP"; then fusermount3 -u "$MP" || umount -l "$MP"; fi
    fi
  fi
  if [[ -d $SESSION ]] && ! is_mounted "$MP"; then
    if [[ $rc -ne 0 && -s $RESULTS ]]; then cp "$RESULTS" "$DIR/last-failed-results.tsv"; fi
    rm -rf --one-file-system "$SESSION"
  fi
  if virsh dominfo "$DOM" >/dev/null 2>&1; then
    virsh domjobabort "$DOM" >/dev/null 2>&1   # a backup job left open (daemon died)
    virsh destroy "$DOM" >/dev/null 2>&1       # every run restarts it anyway
    # Its checkpoints are all ours, and the next run reconverts the disk: drop them.
    for c in $(virsh checkpoint-list "$DOM" --roots --name 2>/dev/null); do
      virsh -q checkpoint-delete "$DOM" "$c" --children --metadata >/dev/null 2>&1
    done
    if [[ $CLEAN == 1 ]]; then
      say "CLEAN=1: removing domain $DOM and $DIR"
      virsh undefine "$DOM" --checkpoints-metadata >/dev/null
    fi
  fi
  [[ $CLEAN == 1 ]] && rm -rf --one-file-system "$DIR"
  [[ $rc -ne 0 ]] && echo "backup: FAILED (exit $rc) during: $STEP" >&2
  exit "$rc"
}

# --- preconditions -----------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (drop_caches, FUSE, libvirt)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for t in virsh qemu-img qemu-storage-daemon nbdcopy fusermount3 mountpoint dd du \
  sha256sum top "$PY"; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done
ensure_libvirtd "$REPO"

# One run at a time: two would share (and reset) the same domain.
mkdir -p "$DIR"
chmod 0755 "$DIR"
exec 9>"$DIR/.lock"
if ! flock -n 9; then
  say "another bench/backup.sh holds $DIR/.lock: waiting for it (up to 30 min)"
  flock -w 1800 9 || die "$DIR/.lock still held after 30 min"
fi

trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$SESSION"
# A private copy of the binary: other people may rebuild build/ckptfs meanwhile.
# A binary missing or copied mid-link (fails --version): wait and retry.
for try in 1 2 3 4 5; do
  if [[ -x $BIN_SRC ]] && cp "$BIN_SRC" "$BIN.tmp" && mv "$BIN.tmp" "$BIN" &&
    "$BIN" --version >/dev/null 2>&1; then
    break
  fi
  [[ $try -eq 5 ]] && die "no working $BIN_SRC: build first (cmake --preset default && cmake --build --preset default)"
  say "$BIN_SRC is missing or does not run (being rebuilt?): retrying in 60 s"
  sleep 60
done
BIN_VERSION=$("$BIN" --version 2>/dev/null | head -1)
BIN_BUILT=$(date -u -r "$BIN_SRC" +%Y-%m-%dT%H:%MZ)
BIN_REV="not $REPO"
if [[ $(realpath "$BIN_SRC") == "$REPO"/build/* ]]; then
  BIN_REV=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')
fi

# --- test domain and data ---------------------------------------------------------
if [[ ! -f $RAW || ! -s $RAW.sha256 ]]; then
  say "creating $RAW: $DATA_MIB MiB from /dev/urandom + $((SIZE_MIB - DATA_MIB)) MiB hole"
  rm -f "$RAW" "$RAW.sha256" "$LOCAL_QCOW2"
  head -c "${DATA_MIB}M" /dev/urandom >"$RAW.tmp"
  truncate -s "$SIZE" "$RAW.tmp"
  mv "$RAW.tmp" "$RAW"
  sha256sum "$RAW" | awk '{print $1}' >"$RAW.sha256"
fi
RAW_SUM=$(cat "$RAW.sha256")
if [[ ! -f $LOCAL_QCOW2 || $LOCAL_QCOW2 -ot $RAW ]]; then
  say "converting $RAW to $LOCAL_QCOW2 (for qemu-storage-daemon)"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$LOCAL_QCOW2.tmp"
  mv "$LOCAL_QCOW2.tmp" "$LOCAL_QCOW2"
fi
if ! virsh dominfo "$DOM" >/dev/null 2>&1; then
  say "creating domain $DOM ($DOM_MEM_MIB MiB, no OS, vda = $DISK)"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK"
  define_and_start_domain
else
  say "reusing domain $DOM"
fi
VIRT_TYPE=$(domain_type)
ALLOC_MIB=$(qemu-img info --output=json "$LOCAL_QCOW2" |
  "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["actual-size"] / 2**20))')

# --- runs ---------------------------------------------------------------------------
: >"$RESULTS"
for run in $(seq 1 "$RUNS"); do
  STORE=$SESSION/store.$run
  say "run $run/$RUNS: resetting $DOM to $RAW"
  reset_domain
  say "run $run: mounting ckptfs (fresh store $STORE)"
  mkdir -p "$MP" "$RUN"
  mount_ckptfs "$STORE"

  # 1a. Reference: nbdcopy of a live export of the same disk to a local raw file.
  ref=b-$TAG-$run-ref
  say "run $run: nbdcopy reference (checkpoint $ref)"
  out=$(ctl_request "$MP/control/checkpoint" "$DOM name=$ref") || die "checkpoint $ref: $out"
  LIVE_CKPT=$ref
  uri=$(nbd_uri)
  rm -f "$NBDCOPY_OUT"
  drop_caches
  c0=$(cpu_s "$QPID")
  t0=$(now)
  nbdcopy "$uri" "$NBDCOPY_OUT"
  t1=$(now)
  sync "$NBDCOPY_OUT"
  t2=$(now)
  c1=$(cpu_s "$QPID")
  [[ $(stat -c %s "$NBDCOPY_OUT") -eq $SIZE ]] || die "nbdcopy wrote $(stat -c %s "$NBDCOPY_OUT") bytes"
  record "$run" nbdcopy_s "$(elapsed "$t0" "$t1")"
  record "$run" nbdcopy_fsync_s "$(elapsed "$t0" "$t2")"
  record "$run" nbdcopy_cpu_qemu_s "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  record "$run" nbdcopy_out_alloc_mib "$(( $(stat -c %b "$NBDCOPY_OUT") * 512 / 1048576 ))"
  rm -f "$NBDCOPY_OUT"
  out=$(ctl_request "$MP/control/release" "$DOM $ref") || die "release $ref: $out"
  LIVE_CKPT=""
  virsh -q checkpoint-delete "$DOM" "$ref" >/dev/null

  # 1b. Full backup into the fresh store.
  full=b-$TAG-$run-full
  say "run $run: full backup $full"
  drop_caches
  echo 5 >"/proc/$DPID/clear_refs"   # reset VmHWM to the current RSS
  record "$run" rss_before_full_mib "$(( $(vm_kib "$DPID" VmRSS) / 1024 ))"
  # Other ckptfs processes (someone else's tests) make the figures noisy: count them.
  record "$run" other_ckptfs_procs "$(pgrep -x ckptfs | grep -vcx "$DPID" || true)"
  topf=-
  [[ $run -eq 1 && $TOP != 0 ]] && topf=$TOP_FILE
  js=$(backup_timed "$full" full "$topf")
  record "$run" rss_peak_full_mib "$(( $(vm_kib "$DPID" VmHWM) / 1024 ))"
  [[ $(job_field "$js" 'o["job"]["mode"]') == full ]] || die "job of $full says mode $(job_field "$js" 'o["job"]["mode"]')"
  record_backup "$run" full "$js"
  record_store "$run" st_full "$STORE"
  [[ -n ${STORE_CFG:-} ]] || STORE_CFG=$(tr -d ' \n' <"$STORE/config.json")

  # 2. Incremental: 160 random 64 KiB-aligned 64 KiB guest writes (~1% of the disk).
  say "run $run: $WRITES guest writes of 64 KiB"
  "$PY" - "$run" "$WRITES" "$WRITE_LEN" "$SIZE" >"$SESSION/writes.$run" <<'EOF'
import random, sys
run, n, ln, size = map(int, sys.argv[1:5])
rng = random.Random(run)
for blk in sorted(rng.sample(range(size // ln), n)):
    print(blk * ln, rng.randrange(1, 256))
EOF
  t0=$(now)
  while read -r off pat; do guest_write "$off" "$WRITE_LEN" "$pat"; done <"$SESSION/writes.$run"
  t1=$(now)
  record "$run" guest_writes_s "$(elapsed "$t0" "$t1")"
  incr=b-$TAG-$run-incr
  say "run $run: incremental backup $incr"
  drop_caches
  js=$(backup_timed "$incr" incremental -)
  mode=$(job_field "$js" 'o["job"]["mode"]')
  base=$(job_field "$js" 'o["job"]["base"]')
  [[ $mode == incremental && $base == "$full" ]] || die "job of $incr: mode $mode, base $base (expected incremental from $full)"
  record_backup "$run" incr "$js"
  record_store "$run" st_incr "$STORE"

  # 4b. Dedup: a second full backup of the same disk into the same store.
  full2=b-$TAG-$run-full2
  say "run $run: second full backup $full2 (same store: dedup)"
  drop_caches
  js=$(backup_timed "$full2" full -)
  [[ $(job_field "$js" 'o["job"]["mode"]') == full ]] || die "job of $full2 is not full"
  record_backup "$run" full2 "$js"
  record_store "$run" st_full2 "$STORE"

  # 2b. The fixed cost of a backup job: an incremental with nothing dirty.
  incr0=b-$TAG-$run-incr0
  say "run $run: incremental backup $incr0 with nothing dirty (fixed cost)"
  drop_caches
  js=$(backup_timed "$incr0" incremental -)
  [[ $(job_field "$js" 'o["job"]["mode"]') == incremental ]] || die "job of $incr0 is not incremental"
  record_backup "$run" incr0 "$js"

  # 2c. libvirt's own floor for any incremental: the same pull-mode backup
  # begin (new checkpoint, incremental from the last one, qcow2 scratch, NBD
  # server) and its abort, with virsh alone. No backup tool on libvirt can
  # take less per job.
  say "run $run: libvirt floor (virsh backup-begin + domjobabort)"
  record "$run" libvirt_floor_s "$(libvirt_floor "$incr0")"

  # Untimed: the stored images hold the right bytes.
  if [[ $run -eq 1 && $CHECK != 0 ]]; then
    say "run $run: checking sha256 of the stored images"
    IMGDIR=$MP/domains/$DOM
    [[ $(json_get "$IMGDIR/$full/info.json" 'j["state"]') == stored ]] ||
      die "$full is not stored: $(cat "$IMGDIR/$full/info.json")"
    s=$(sha256sum "$IMGDIR/$full/vda.img" | awk '{print $1}')
    [[ $s == "$RAW_SUM" ]] || die "CHECKSUM MISMATCH: stored $full $s, $RAW $RAW_SUM"
    want=$("$PY" - "$RAW" "$SESSION/writes.$run" "$WRITE_LEN" <<'EOF'
import hashlib, sys
raw, writes, ln = sys.argv[1], sys.argv[2], int(sys.argv[3])
patch = {}
for line in open(writes):
    off, pat = map(int, line.split())
    patch[off] = pat
h = hashlib.sha256()
with open(raw, "rb") as f:
    off = 0
    while True:
        b = f.read(ln)
        if not b:
            break
        h.update(bytes([patch[off]]) * len(b) if off in patch else b)
        off += len(b)
print(h.hexdigest())
EOF
)
    for c in "$incr" "$full2"; do
      s=$(sha256sum "$IMGDIR/$c/vda.img" | awk '{print $1}')
      [[ $s == "$want" ]] || die "CHECKSUM MISMATCH: stored $c $s, expected $want (raw + writes)"
    done
    CHECK_LINE="sha256 of stored images: full == $(basename "$RAW"), incr and full2 == $(basename "$RAW") + the $WRITES writes (run 1)"
  fi

  # 3a. Cold read of the stored full image: a remount gives an empty block cache.
  say "run $run: cold read of the stored image $full (remount)"
  umount_ckptfs
  mount_ckptfs "$STORE"
  IMG=$MP/domains/$DOM/$full/vda.img
  drop_caches
  echo 5 >"/proc/$DPID/clear_refs"
  c0=$(cpu_s "$DPID")
  s=$(timed_dd "$IMG")
  c1=$(cpu_s "$DPID")
  record "$run" read_ckptfs "$(mibps "$s")"
  record "$run" read_cpu_daemon_s "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  record "$run" rss_peak_read_mib "$(( $(vm_kib "$DPID" VmHWM) / 1024 ))"
  CKPTFS_RA=$(read_ahead_of "$MP")
  umount_ckptfs

  # 3b. qemu-storage-daemon's FUSE export of a local qcow2 of the same data.
  say "run $run: cold read through qemu-storage-daemon (FUSE export of $LOCAL_QCOW2)"
  qsd_up
  QSD_RA=$(read_ahead_of "$QSD_IMG")
  drop_caches
  c0=$(cpu_s "$QSD_PID")
  s=$(timed_dd "$QSD_IMG")
  c1=$(cpu_s "$QSD_PID")
  record "$run" read_qsd "$(mibps "$s")"
  record "$run" read_cpu_qsd_s "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
  qsd_down

  STEP="run $run: removing $STORE"
  rm -rf --one-file-system "$STORE"
done
virsh destroy "$DOM" >/dev/null 2>&1 || true

# --- report ---------------------------------------------------------------------
TOP_SNAPSHOT=""
if [[ -s $TOP_FILE ]]; then
  # The second frame (the first one's %CPU is since process start); its header
  # and the busiest processes.
  TOP_SNAPSHOT=$(awk '/^top - /{n++} n == 2' "$TOP_FILE" | sed -n '1,5p;7,20p')
fi
export CHECK_LINE="${CHECK_LINE:-not checked (CHECK=0)}" TOP_SNAPSHOT STORE_CFG="${STORE_CFG:-}"
"$PY" - "$RESULTS" <<EOF
import json, os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run, metric, value = line.rstrip("\n").split("\t")
    rows.setdefault(metric, []).append(float(value))
med = {k: statistics.median(v) for k, v in rows.items()}
n = len(rows["full_s"])
size_mib, data_mib, alloc_mib = $SIZE_MIB, $DATA_MIB, $ALLOC_MIB
cfg = json.loads(os.environ.get("STORE_CFG") or "{}")
store_cfg = (f"chunk {cfg.get('chunk_size', 0) // 1024} KiB, {cfg.get('compression', '?')} level {cfg.get('zstd_level', '?')}"
             if cfg else "config.json not read")
def mm(k, fmt="{:.2f}"):
    v = rows[k]
    return f"{fmt.format(med[k])} ({fmt.format(min(v))}-{fmt.format(max(v))})"
def rate(k):  # MiB/s of allocated data for a time metric
    return data_mib / med[k]
print()
print("### ckptfs backup benchmark (bench/backup.sh)")
print()
print("\`\`\`")
print(f"date        $(date -u +%Y-%m-%dT%H:%MZ)   host: $(load_line)")
print(f"setup       domain $DOM ($VIRT_TYPE, $DOM_MEM_MIB MiB, no OS), vda 1 GiB qcow2: {data_mib} MiB random + {size_mib - data_mib} MiB hole")
print(f"            ckptfs $BIN_VERSION (built $BIN_BUILT; tree $BIN_REV), --cache-size $CACHE_SIZE")
print(f"            store: local dir on $(df --output=source,fstype "$DIR" | tail -1 | tr -s ' '), fresh per run, {store_cfg}")
print(f"            runs {n}; figures are median (min-max); every timed step after drop_caches")
print(f"correctness {os.environ['CHECK_LINE']}")
others = max(rows["other_ckptfs_procs"])
if others:
    print(f"noise       {others:.0f} other ckptfs process(es) running when a full backup started (not ours)")
print()
print("1. full backup (control write -> job succeeded; 768 MiB read, hashed, zstd, made durable)")
print(f"   ckptfs full backup                 {mm('full_s')} s   {rate('full_s'):.0f} MiB/s of data")
print(f"   nbdcopy export -> local raw        {mm('nbdcopy_s')} s   {rate('nbdcopy_s'):.0f} MiB/s (until nbdcopy exits)")
print(f"   nbdcopy ... then fsync of the file {mm('nbdcopy_fsync_s')} s   {rate('nbdcopy_fsync_s'):.0f} MiB/s"
      " (nbdcopy writes a file back as it goes:")
print("                                      sync_file_range + FADV_DONTNEED, so the fsync is short)")
r1 = med['nbdcopy_fsync_s'] / med['full_s']
r0 = med['nbdcopy_s'] / med['full_s']
print(f"   ckptfs / nbdcopy + fsync (speed)   {r1:.2f}   (target >= 0.7: {'met' if r1 >= 0.7 else 'NOT met'})")
print(f"   ckptfs / nbdcopy until exit (speed) {r0:.2f}")
print(f"   job record: accept {med['full_accept_s']:.2f} s, started->ended {med['full_job_s']:.0f} s (1 s resolution), progress.total {med['full_total_mib']:.0f} MiB")
print(f"   CPU during the full backup: daemon {med['full_cpu_daemon_s']:.2f} s (system {med['full_cpu_daemon_sys_s']:.2f}), QEMU {med['full_cpu_qemu_s']:.2f} s"
      f"  (nbdcopy run: QEMU {med['nbdcopy_cpu_qemu_s']:.2f} s)")
rss = rows['rss_peak_full_mib']
print(f"   daemon peak RSS (VmHWM) during it  median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB"
      f" (RSS before: {med['rss_before_full_mib']:.0f} MiB)")
print()
pct = 100 * med['incr_s'] / med['full_s']
print(f"2. incremental, {$WRITES} x 64 KiB random guest writes (10 MiB, ~1% of the disk)")
print(f"   ckptfs incremental backup          {mm('incr_s')} s   = {pct:.1f}% of the full backup (target <= 5%: {'met' if pct <= 5 else 'NOT met'})")
print(f"   progress.total                     {med['incr_total_mib']:.2f} MiB read ({med['incr_total_mib'] / 10:.1f}x the 10 MiB written; 256 KiB chunks)")
print(f"   new chunk data in the store        {med['st_incr_chunk_mib'] - med['st_full_chunk_mib']:.2f} MiB,"
      f" {med['st_incr_chunk_objects'] - med['st_full_chunk_objects']:.0f} objects; manifest+record {med['st_incr_backups_kib'] - med['st_full_backups_kib']:.0f} KiB")
print(f"   accept (checkpoint creation)       {med['incr_accept_s']:.2f} s; CPU daemon {med['incr_cpu_daemon_s']:.2f} s, QEMU {med['incr_cpu_qemu_s']:.2f} s")
print(f"   same, nothing dirty (fixed cost)   {mm('incr0_s')} s = {100 * med['incr0_s'] / med['full_s']:.1f}% of the full;"
      f" accept {med['incr0_accept_s']:.2f} s, progress.total {med['incr0_total_mib']:.2f} MiB")
print(f"   libvirt floor: virsh backup-begin + domjobabort of the same kind of job"
      f" {mm('libvirt_floor_s')} s = {100 * med['libvirt_floor_s'] / med['full_s']:.1f}% of the full")
print()
r3 = med['read_ckptfs'] / med['read_qsd']
print("3. cold sequential read of the stored full image (remount + drop_caches, dd bs=1M)")
print(f"   ckptfs (store: read, zstd, sha256) {mm('read_ckptfs', '{:.0f}')} MiB/s   (bdi read_ahead_kb $CKPTFS_RA)")
print(f"   qemu-storage-daemon FUSE, qcow2    {mm('read_qsd', '{:.0f}')} MiB/s   (bdi read_ahead_kb $QSD_RA)")
print(f"   ckptfs / qemu-storage-daemon       {r3:.2f}   (target >= 2: {'met' if r3 >= 2 else 'NOT met'})")
print(f"   CPU during the read                ckptfs daemon {med['read_cpu_daemon_s']:.2f} s, qemu-storage-daemon {med['read_cpu_qsd_s']:.2f} s")
rr = rows['rss_peak_read_mib']
print(f"   daemon peak RSS (VmHWM) during it  median {statistics.median(rr):.0f} MiB, max {max(rr):.0f} MiB")
print()
print("4. store size (du -sb)")
c = med['st_full_chunk_mib']
print(f"   after the full backup              chunks {c:.1f} MiB in {med['st_full_chunk_objects']:.0f} objects"
      f" = {100 * c / alloc_mib:.1f}% of the {alloc_mib} MiB allocated (random data: no compression expected);"
      f" backups/ {med['st_full_backups_kib']:.0f} KiB")
d2 = med['st_full2_chunk_mib'] - med['st_incr_chunk_mib']
print(f"   second full backup, same store     {mm('full2_s')} s; chunks +{d2:.3f} MiB"
      f" (+{med['st_full2_chunk_objects'] - med['st_incr_chunk_objects']:.0f} objects), backups/ +{med['st_full2_backups_kib'] - med['st_incr_backups_kib']:.0f} KiB;"
      f" speed {med['full_s'] / med['full2_s']:.2f}x the first")
print("\`\`\`")
print()
for i in range(n):
    rows.setdefault("ratio_full_nbdcopy_fsync", []).append(rows["nbdcopy_fsync_s"][i] / rows["full_s"][i])
    rows.setdefault("ratio_incr_pct_of_full", []).append(100 * rows["incr_s"][i] / rows["full_s"][i])
    rows.setdefault("ratio_read_ckptfs_qsd", []).append(rows["read_ckptfs"][i] / rows["read_qsd"][i])
print("per run (s; MiB/s for read_*; MiB; KiB for *_backups_kib):")
for key in rows:
    print(f"  {key:<24}" + "  ".join(f"{x:9.2f}" for x in rows[key]))
if os.environ.get("TOP_SNAPSHOT"):
    print()
    print("top -b during run 1's full backup (second frame, at ~40% progress):")
    print(os.environ["TOP_SNAPSHOT"])
EOF
