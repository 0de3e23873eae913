#!/usr/bin/env bash
# QEMU killed under ckptfs (issue 4, faults).
#  1. virsh destroy during a live export: reads of never-read blocks give EIO
#     within seconds (each read bounded), the checkpoint leaves the tree.
#  2. virsh destroy during a backup job: the backup of a live checkpoint is
#     started while its QEMU is stopped (SIGSTOP), so the copy is certainly
#     under way and cannot finish; destroy ends QEMU with SIGKILL after its
#     grace period. Readers get EIO, the job fails with a clear error,
#     nothing reaches the store or the catalog, the checkpoint is never
#     served and never a base.
#  3. That unclean stop leaves every bitmap in-use in the qcow2s: QEMU loads
#     them inconsistent and the next backup is full on both disks.
#  4. One disk closed uncleanly (qemu-io opens vda read-write and is killed):
#     the next backup copies vda in full and vdb incrementally (libvirt's job
#     says backupmode='full' for vda only), byte-identical; the one after is
#     incremental on both.
# Throughout, another domain's live checkpoint and an earlier stored backup
# stay served byte-identical.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name other)
RAW="$CKT_WORK/random.raw"
SIZE=128M   # vda: all random data, every chunk allocated
head -c "$SIZE" /dev/urandom >"$RAW"
make_domain "$DOM" "raw:$RAW" 64M
make_domain "$DOM2" 32M
guest_write "$DOM" 1 0x61 1M 256k
guest_write "$DOM2" 0 0x71 0 1M
ckpt_mount --cache-size 32M
MP=$CKT_MP
D="$MP/domains/$DOM"
D2="$MP/domains/$DOM2"
wait_for "$D appears" 30 test -d "$D"
wait_for "$D2 appears" 30 test -d "$D2"
STORE="$CKT_WORK/store"

# An earlier stored backup of $DOM and a live checkpoint of $DOM2: whatever
# happens to $DOM's QEMU, both stay served, byte for byte.
mark "$DOM" q1
wait_job "$(ctl_accepted backup "$DOM name=q1")" succeeded
mark "$DOM2" o1
ctl_ok checkpoint "$DOM2 name=o1" >/dev/null

bystanders() {  # WHEN
  evict_pages "$D/q1/vda.img" "$D/q1/vdb.img" "$D2/o1/vda.img"
  cmp_image "$D/q1/vda.img" "$(expected_file "$DOM" 0 q1)" "stored q1 vda ($1)"
  cmp_image "$D/q1/vdb.img" "$(expected_file "$DOM" 1 q1)" "stored q1 vdb ($1)"
  cmp_image "$D2/o1/vda.img" "$(expected_file "$DOM2" 0 o1)" "live o1 of $DOM2 ($1)"
  pid_alive "$CKT_PID" || fail "the daemon died ($1)"
}

# Opens IMAGE at once (before the fault), waits for GOFILE ("-": no wait),
# then reads from OFFSET on in 1 MiB preads, each bounded by 40 s (a stopped
# QEMU answers nothing; the NBD timeout is 30 s). Prints "EIO <epoch of the
# error>", "READ_ALL" or "HANG".
read_after() {  # IMAGE OFFSET GOFILE
  timeout 150 python3 - "$@" <<'EOF'
import errno, os, signal, sys, time
path, off, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
def hang(*_):
    print(f"HANG at {off}")
    sys.stdout.flush()
    os._exit(0)
signal.signal(signal.SIGALRM, hang)
while go != "-" and not os.path.exists(go):
    time.sleep(0.05)
try:
    while off < size:
        signal.alarm(40)
        if not os.pread(fd, 1 << 20, off):
            break
        signal.alarm(0)
        off += 1 << 20
    print(f"READ_ALL {off}")
except OSError as e:
    print(f"{errno.errorcode.get(e.errno, e.errno)} {time.time():.3f}")
EOF
}

# Makes the guest's writes durable in the qcow2s (qemu-io flush through the
# guest's devices): a killed QEMU loses writes it has not flushed, as a
# crashed host would, and the expected images assume none is lost.
guest_flush() {  # DOM
  local i out
  for ((i = 0; i < $(dom_ndisks "$1"); i++)); do
    out=$(virsh qemu-monitor-command --hmp "$1" \
      "qemu-io -d /machine/peripheral/virtio-disk$i/virtio-backend flush" 2>&1) \
      || fail "flush of $1 disk $i: $out"
    [[ -z "${out//[[:space:]]/}" ]] || fail "flush of $1 disk $i: HMP says: $out"
  done
}

since() {  # EPOCH [NOW] -> seconds, two decimals
  python3 -c 'import sys, time; a = float(sys.argv[1]); b = float(sys.argv[2]) if len(sys.argv) > 2 else time.time(); print(f"{b - a:.2f}")' "$@"
}

# ----------------------------------------------------------------- 1. live export
mark "$DOM" t1
ctl_ok checkpoint "$DOM name=t1" >/dev/null
cmp_image "$D/t1/vdb.img" "$(expected_file "$DOM" 1 t1)" "t1 vdb before the destroy"
go="$CKT_WORK/destroyed.t1"
read_after "$D/t1/vda.img" $((64 << 20)) "$go" >"$CKT_WORK/reader.t1" &
reader=$!
CKT_BG_PIDS+=("$reader")
t0=$(date +%s.%N)
virsh -q destroy "$DOM" >/dev/null
t1=$(date +%s.%N)
touch "$go"
wait "$reader" || fail "reader of t1 failed or hung: $(cat "$CKT_WORK/reader.t1")"
out=$(cat "$CKT_WORK/reader.t1")
assert_match "$out" '^EIO [0-9.]+$' "read of never-read blocks of t1 after virsh destroy"
say "MEASURED: virsh destroy took $(since "$t0" "$t1") s; first read after it: EIO $(since "$t1" "${out#EIO }") s after it returned"
wait_for "t1 leaves the tree" 30 test ! -e "$D/t1"
assert_no_job "$DOM"
bystanders "after destroy during a live export"

# ----------------------------------------------------------------- 2. backup job
virsh -q start "$DOM" >/dev/null
guest_write "$DOM" 0 0x62 8M 1M
guest_write "$DOM" 1 0x63 2M 64k
guest_flush "$DOM"
mark "$DOM" q2
ctl_ok checkpoint "$DOM name=q2" >/dev/null
# From here QEMU answers nothing: the copy starts and waits on it.
qpid=$(qemu_pid "$DOM")
kill -STOP "$qpid"
on_cleanup "kill -CONT $qpid"
id=$(ctl_accepted backup "$DOM checkpoint=q2")
assert_json "$D/q2/info.json" state backing-up
assert_json "$(job_file "$id")" state running
total=$(json_get "$(job_file "$id")" progress.total)
((total > 0)) || fail "backup q2 has nothing to copy: $(cat "$(job_file "$id")")"
# A reader of the image being backed up: waits on the stopped QEMU, then
# gets EIO when destroy kills it.
read_after "$D/q2/vdb.img" $((32 << 20)) - >"$CKT_WORK/reader.q2" &
reader=$!
CKT_BG_PIDS+=("$reader")
t0=$(date +%s.%N)
virsh -q destroy "$DOM" >/dev/null   # SIGTERM waits; after ~10 s SIGKILL
t1=$(date +%s.%N)
wait "$reader" || fail "reader of q2 failed or hung: $(cat "$CKT_WORK/reader.q2")"
out=$(cat "$CKT_WORK/reader.q2")
assert_match "$out" '^EIO [0-9.]+$' "read of q2 (being backed up) across virsh destroy"
say "MEASURED: virsh destroy of the stopped QEMU took $(since "$t0" "$t1") s; the blocked read got EIO $(since "$t0" "${out#EIO }") s after destroy began ($(since "$t1" "${out#EIO }") s from its return)"
assert_eq "$(json_get "$(job_file "$id")" progress.done)" 0 "bytes q2 copied from the stopped QEMU"
wait_job "$id" failed 60
err=$(json_get "$(job_file "$id")" error)
assert_contains "$err" "stopped while the backup ran" "q2 error"
assert_contains "$err" "nothing was stored" "q2 error"
say "q2 failed with: $err"
wait_for "q2 leaves the tree" 30 test ! -e "$D/q2"
assert_not_exists "$STORE/backups"/*/q2/backup.json
[[ "$(catalog_checkpoints)" != *" q2"* ]] || fail "q2 is in the catalog: $(catalog_checkpoints)"
pass "q2 is not in the catalog"
out=$("$CKPTFS_BIN" ls "$DOM" --store "$STORE") || fail "ckptfs ls: $out"
[[ "$out" != *" q2 "* ]] || fail "ckptfs ls lists q2: $out"
bystanders "after destroy during a backup"

# ----------------------------------------------------------------- 3. inconsistent bitmaps
# QEMU was killed: the bitmaps it had loaded are still flagged in-use.
assert_contains "$(qcow2_bitmaps "$(dom_dir "$DOM")/vda.qcow2")" "q1 in-use" "vda bitmaps after the kill"
assert_contains "$(qcow2_bitmaps "$(dom_dir "$DOM")/vdb.qcow2")" "q1 in-use" "vdb bitmaps after the kill"
virsh -q start "$DOM" >/dev/null
bm=$(running_bitmaps "$DOM")
assert_contains "$bm" "vda q1 inconsistent" "QEMU's view of vda's bitmaps"
assert_contains "$bm" "vdb q1 inconsistent" "QEMU's view of vdb's bitmaps"
guest_write "$DOM" 0 0x64 20M 64k
guest_write "$DOM" 1 0x65 3M 128k
mark "$DOM" q3
id=$(ctl_accepted backup "$DOM name=q3")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode full   # q1 unusable, q2 never complete
assert_json "$(job_file "$id")" base null
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/q3/$t.img" "$(expected_file "$DOM" "$i" q3)" "q3 $t"
  assert_changes "$D/q3/$t.changes" "$(expected_allocated "$DOM" "$i" q3)" "q3 $t (full)"
done

# ----------------------------------------------------------------- 4. one disk affected
guest_write "$DOM" 0 0x66 40M 64k
guest_write "$DOM" 1 0x67 5M 64k
mark "$DOM" q4
id=$(ctl_accepted backup "$DOM name=q4")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base q3
assert_json "$(job_file "$id")" full_disks '[]'
cmp_image "$D/q4/vda.img" "$(expected_file "$DOM" 0 q4)" "q4 vda"
cmp_image "$D/q4/vdb.img" "$(expected_file "$DOM" 1 q4)" "q4 vdb"

# A clean stop (QEMU exits on SIGTERM) stores the bitmaps consistent ...
virsh -q destroy "$DOM" >/dev/null
for t in vda vdb; do
  assert_contains "$(qcow2_bitmaps "$(dom_dir "$DOM")/$t.qcow2")" "q4 auto" "$t's q4 after a clean stop"
done
# ... then vda alone is opened read-write by a process that gets killed.
rc=0
qemu-io -c 'sigraise 9' "$(dom_dir "$DOM")/vda.qcow2" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 137 "qemu-io killed with vda open"
assert_contains "$(qcow2_bitmaps "$(dom_dir "$DOM")/vda.qcow2")" "q4 in-use" "vda's q4"
assert_contains "$(qcow2_bitmaps "$(dom_dir "$DOM")/vdb.qcow2")" "q4 auto" "vdb's q4"
virsh -q start "$DOM" >/dev/null
bm=$(running_bitmaps "$DOM")
assert_contains "$bm" "vda q4 inconsistent" "QEMU's view of vda's q4"
assert_contains "$bm" "vdb q4 consistent" "QEMU's view of vdb's q4"
guest_write "$DOM" 0 0x68 60M 64k
guest_write "$DOM" 1 0x69 7M 320k
mark "$DOM" q5
# A live checkpoint first, to see the job libvirt runs.
cid=$(ctl_ok checkpoint "$DOM name=q5")
assert_json "$(job_file "$cid")" base q4
assert_json "$(job_file "$cid")" full_disks '["vda"]'
python3 - "$(virsh backup-dumpxml "$DOM")" <<'EOF' || fail "libvirt's job for q5: $(virsh backup-dumpxml "$DOM")"
import sys, xml.etree.ElementTree as ET
disks = {d.get("name"): d for d in ET.fromstring(sys.argv[1]).iter("disk")}
assert disks["vda"].get("backupmode") == "full", disks["vda"].attrib
assert disks["vdb"].get("backupmode") == "incremental", disks["vdb"].attrib
assert disks["vdb"].get("incremental") == "q4", disks["vdb"].attrib
EOF
pass "libvirt's job: vda backupmode=full, vdb incremental from q4"
assert_changes "$D/q5/vda.changes" "$(expected_allocated "$DOM" 0 q5)" "live q5 vda (full)"
assert_changes "$D/q5/vdb.changes" "$(expected_changes "$DOM" 1 q4 q5)" "live q5 vdb (incremental)"
id=$(ctl_accepted backup "$DOM checkpoint=q5")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base q4
assert_json "$(job_file "$id")" full_disks '["vda"]'
# The store record: vda was read whole, vdb only where it changed (the
# dirty bytes, at most the 256 KiB chunks that hold them).
rec=$(ls "$STORE"/backups/*/q5/backup.json)
assert_json "$rec" disks.0.bytes_read "$(to_bytes "$SIZE")"
read_vdb=$(json_get "$rec" disks.1.bytes_read)
bounds=$(expected_changes "$DOM" 1 q4 q5 | python3 -c '
import sys
C = 262144
idx, dirty = set(), 0
for line in sys.stdin:
    o, l = map(int, line.split())
    dirty += l
    idx.update(range(o // C, (o + l - 1) // C + 1))
print(dirty, len(idx) * C)')
((read_vdb >= ${bounds% *} && read_vdb <= ${bounds#* })) \
  || fail "q5 vdb: read $read_vdb bytes from the export, expected ${bounds% *}..${bounds#* }"
pass "q5 vdb read $read_vdb bytes (dirty ${bounds% *}, chunks ${bounds#* })"
for i in 0 1; do
  t=$(disk_target "$i")
  evict_pages "$D/q5/$t.img"
  cmp_image "$D/q5/$t.img" "$(expected_file "$DOM" "$i" q5)" "stored q5 $t"
done
assert_changes "$D/q5/vda.changes" "$(expected_allocated "$DOM" 0 q5)" "stored q5 vda"
assert_changes "$D/q5/vdb.changes" "$(expected_changes "$DOM" 1 q4 q5)" "stored q5 vdb"

# The full copy was once: the next backup is incremental on both disks.
guest_write "$DOM" 0 0x6a 70M 64k
guest_write "$DOM" 1 0x6b 9M 64k
mark "$DOM" q6
id=$(ctl_accepted backup "$DOM name=q6")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base q5
assert_json "$(job_file "$id")" full_disks '[]'
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/q6/$t.img" "$(expected_file "$DOM" "$i" q6)" "q6 $t"
  assert_changes "$D/q6/$t.changes" "$(expected_changes "$DOM" "$i" q5 q6)" "q6 $t"
done
for tag in q3 q4; do
  for i in 0 1; do
    t=$(disk_target "$i")
    evict_pages "$D/$tag/$t.img"
    cmp_image "$D/$tag/$t.img" "$(expected_file "$DOM" "$i" "$tag")" "$tag $t at the end"
  done
done
bystanders "at the end"
ckpt_umount "$MP"
