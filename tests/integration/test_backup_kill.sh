#!/usr/bin/env bash
# A backup killed halfway (SIGKILL of the daemon) is never served and never a
# base: after a remount its stale export is ended, the checkpoint has no
# stored data, and the next backup is full and byte-identical; the one after
# is incremental from it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
RAW="$CKT_WORK/random.raw"
head -c 384M /dev/urandom >"$RAW"
make_domain "$DOM" "raw:$RAW"
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

mark "$DOM" k1
ctl_ok checkpoint "$DOM name=k1" >/dev/null
# QEMU held (SIGSTOP) while the backup of k1 starts: its copy waits on the
# export, so the job is certainly running when the daemon is killed, however
# loaded the machine (test_kill_loop kills at random moments of the copy).
qpid=$(qemu_pid "$DOM")
kill -STOP "$qpid"
on_cleanup "kill -CONT $qpid"
id=$(ctl_accepted backup "$DOM checkpoint=k1")
assert_json "$(job_file "$id")" state running
# While it runs, the checkpoint is served live and says so.
assert_json "$D/k1/info.json" state backing-up
rc=0; out=$(ctl checkpoint "$DOM name=other") || rc=$?
assert_eq "$out" EBUSY "a checkpoint request while the backup runs"
kill -9 "$CKT_PID"
pass "daemon killed during backup k1"
kill -CONT "$qpid"
umount -l "$MP" 2>/dev/null || true
assert_has_job "$DOM"   # the killed daemon's export is still open

ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
assert_no_job "$DOM"    # the new daemon ended it
assert_not_exists "$D/k1"
assert_not_exists "$CKT_WORK/store/backups"/*/k1/backup.json

guest_write "$DOM" 0 0x51 8M 64k
mark "$DOM" k2
id=$(ctl_accepted backup "$DOM name=k2")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode full   # k1 never completed: no base
cmp_image "$D/k2/vda.img" "$(expected_file "$DOM" 0 k2)" "k2 vda.img"

guest_write "$DOM" 0 0x52 100M 64k
mark "$DOM" k3
id=$(ctl_accepted backup "$DOM name=k3")
wait_job "$id" succeeded
assert_json "$(job_file "$id")" mode incremental
assert_json "$(job_file "$id")" base k2
cmp_image "$D/k3/vda.img" "$(expected_file "$DOM" 0 k3)" "k3 vda.img"
cmp_image "$D/k2/vda.img" "$(expected_file "$DOM" 0 k2)" "k2 vda.img after k3"

ckpt_umount "$MP"
