#!/usr/bin/env bash
# libvirtd restarted under ckptfs (issue 4, faults). libvirtd is stopped with
# SIGTERM or SIGKILL and started again as scripts/libvirtd-up.sh does
# (libvirtd -d); the EXIT trap starts it again whatever happens.
#  1. A live export across a libvirtd restart (SIGTERM): its images read
#     byte-identical while libvirtd is down (NBD goes straight to QEMU) and
#     after; control requests fail meanwhile with a record that says why; the
#     daemon reconnects, libvirt still has the backup job (it keeps jobs
#     across its restart), copy-before-write still holds the point in time,
#     and release ends the job.
#  2. A backup that finishes while libvirtd is down: the backup of a live
#     checkpoint starts while QEMU is held (SIGSTOP), libvirtd is killed
#     (SIGKILL), then QEMU resumes and the copy finishes. It succeeds, is
#     served from the store at once, and its export is ended as soon as
#     libvirtd is back.
#  3. A backup across a crash and restart of libvirtd (QEMU held again, so
#     the copy is under way before the crash and finishes after the daemon
#     reconnected) completes, and the next backup is incremental from it;
#     all byte-identical.
# Throughout, another domain's live checkpoint and a stored backup stay
# served byte-identical.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name other)
RAW="$CKT_WORK/random.raw"
head -c 128M /dev/urandom >"$RAW"
make_domain "$DOM" "raw:$RAW" 64M
make_domain "$DOM2" 32M
guest_write "$DOM" 1 0x41 1M 256k
guest_write "$DOM2" 0 0x51 0 1M
on_cleanup ckpt_libvirtd_up   # whatever happens, libvirtd runs again
ckpt_mount --cache-size 16M
MP=$CKT_MP
D="$MP/domains/$DOM"
D2="$MP/domains/$DOM2"
S="$MP/control/status.json"
wait_for "$D appears" 30 test -d "$D"
wait_for "$D2 appears" 30 test -d "$D2"

libvirtd_stop() {  # SIGNAL
  local pid
  pid=$(pgrep -x libvirtd | head -1) || fail "no libvirtd is running"
  say "stopping libvirtd ($pid) with SIG$1"
  kill -"$1" "$pid"
  wait_for "libvirtd $pid gone" 90 bash -c "! kill -0 $pid 2>/dev/null"
}

libvirtd_start() {
  ckpt_libvirtd_up || fail "libvirtd does not start again"
  pass "libvirtd runs again (pid $(pgrep -x libvirtd | head -1))"
}

status_is() {  # KEY VALUE
  [[ "$(json_get "$S" "$1")" == "$2" ]]
}

reconnects() { json_get "$S" libvirt_reconnects; }

reconnected_since() {  # COUNT
  (($(reconnects) > $1))
}

mark "$DOM" r1
wait_job "$(ctl_accepted backup "$DOM name=r1")" succeeded
mark "$DOM2" o1
ctl_ok checkpoint "$DOM2 name=o1" >/dev/null

bystanders() {  # WHEN
  evict_pages "$D/r1/vda.img" "$D/r1/vdb.img" "$D2/o1/vda.img"
  cmp_image "$D/r1/vda.img" "$(expected_file "$DOM" 0 r1)" "stored r1 vda ($1)"
  cmp_image "$D/r1/vdb.img" "$(expected_file "$DOM" 1 r1)" "stored r1 vdb ($1)"
  cmp_image "$D2/o1/vda.img" "$(expected_file "$DOM2" 0 o1)" "live o1 of $DOM2 ($1)"
  pid_alive "$CKT_PID" || fail "the daemon died ($1)"
}

# ----------------------------------------------------------------- 1. live export
guest_write "$DOM" 0 0x42 10M 1M
guest_write "$DOM" 1 0x43 5M 64k
mark "$DOM" l1
ctl_ok checkpoint "$DOM name=l1" >/dev/null
cmp_image "$D/l1/vdb.img" "$(expected_file "$DOM" 1 l1)" "l1 vdb before the restart"
n=$(reconnects)
libvirtd_stop TERM
wait_for "the daemon sees libvirtd gone" 60 status_is libvirt_connected false
# Never read before: these bytes come from QEMU while libvirtd is down.
cmp_image "$D/l1/vda.img" "$(expected_file "$DOM" 0 l1)" "l1 vda while libvirtd is down"
bystanders "libvirtd down"
assert_json "$D/l1/info.json" state live
err=$(ctl checkpoint "$DOM2 name=while-down")
assert_eq "$err" EIO "a checkpoint request while libvirtd is down"
job=$(ctl_field id)
assert_match "$(json_get "$(job_file "$job")" state)" '^(failed|rejected)$' "its job record"
assert_contains "$(json_get "$(job_file "$job")" error)" "libvirt" "its error"
libvirtd_start
wait_for "the daemon reconnected and resynced" 60 reconnected_since "$n"
assert_eq "$(json_get "$S" libvirt_connected)" true "status.json libvirt_connected"
# libvirt kept the job across its restart, and ckptfs kept serving it.
assert_has_job "$DOM"
assert_contains "$(virsh backup-dumpxml "$DOM")" "$CKT_RUN/" "the job's NBD socket"
assert_exists "$D/l1/vda.img"
assert_json "$D/l1/info.json" state live
# Copy-before-write still holds l1's point in time.
guest_write "$DOM" 0 0x44 10M 2M
guest_write "$DOM" 1 0x45 5M 64k
evict_pages "$D/l1/vda.img" "$D/l1/vdb.img"
cmp_image "$D/l1/vda.img" "$(expected_file "$DOM" 0 l1)" "l1 vda after the restart"
cmp_image "$D/l1/vdb.img" "$(expected_file "$DOM" 1 l1)" "l1 vdb after the restart"
ctl_ok release "$DOM l1" >/dev/null
assert_no_job "$DOM"
assert_not_exists "$D/l1"

# ----------------------------------------------------------------- 2. backup, libvirtd down
guest_write "$DOM" 0 0x46 30M 1M
mark "$DOM" r2
ctl_ok checkpoint "$DOM name=r2" >/dev/null
n=$(reconnects)
qpid=$(qemu_pid "$DOM")
kill -STOP "$qpid"
on_cleanup "kill -CONT $qpid"
id=$(ctl_accepted backup "$DOM checkpoint=r2")
libvirtd_stop KILL
kill -CONT "$qpid"
wait_job "$id" succeeded 120
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base r1
# The export could not be ended: the checkpoint is served from the store.
wait_for "r2 served from the store" 30 status_is exports.0.checkpoint o1
assert_json "$D/r2/info.json" state stored
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/r2/$t.img" "$(expected_file "$DOM" "$i" r2)" "r2 $t while libvirtd is down"
done
libvirtd_start
wait_for "the daemon reconnected and resynced" 60 reconnected_since "$n"
# The job left behind is ended once libvirt answers again.
wait_for "r2's backup job ended after the restart" 60 bash -c "! virsh backup-dumpxml $DOM >/dev/null 2>&1"
assert_no_job "$DOM"

# ----------------------------------------------------------------- 3. quick crash + restart
guest_write "$DOM" 0 0x47 50M 64k
guest_write "$DOM" 1 0x48 20M 128k
mark "$DOM" r3
ctl_ok checkpoint "$DOM name=r3" >/dev/null
n=$(reconnects)
kill -STOP "$qpid"
id=$(ctl_accepted backup "$DOM checkpoint=r3")
libvirtd_stop KILL
libvirtd_start
wait_for "the daemon reconnected and resynced" 60 reconnected_since "$n"
assert_json "$(job_file "$id")" state running
assert_has_job "$DOM"   # libvirt kept the job across its crash
kill -CONT "$qpid"
wait_job "$id" succeeded 120
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base r2
assert_no_job "$DOM"
guest_write "$DOM" 0 0x49 60M 64k
mark "$DOM" r4
id=$(ctl_accepted backup "$DOM name=r4")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base r3
assert_no_job "$DOM"
for tag in r2 r3 r4; do
  for i in 0 1; do
    t=$(disk_target "$i")
    evict_pages "$D/$tag/$t.img"
    cmp_image "$D/$tag/$t.img" "$(expected_file "$DOM" "$i" "$tag")" "$tag $t"
  done
done
assert_changes "$D/r4/vda.changes" "$(expected_changes "$DOM" 0 r3 r4)" "r4 vda"
bystanders "at the end"
ckpt_umount "$MP"
