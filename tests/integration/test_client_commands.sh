#!/usr/bin/env bash
# The command-line clients of a mount: `ckptfs checkpoint`, `release`,
# `backup` (with --wait, without, and its progress bar on a terminal) and
# `jobs` (table and --json). What they print, their exit status (0, or 1
# with one "ckptfs: " line on stderr when the daemon refuses), that a refused
# request changes nothing, and how they find the mount: -m, $CKPTFS_MOUNT,
# the only ckptfs mount, refusal when there are several. The mount point has
# a blank in its name, which the kernel's mount table escapes (\040): the
# clients must still find it and the daemon must still see its own unmount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
RAW="$CKT_WORK/random.raw"
head -c 48M /dev/urandom >"$RAW"
make_domain "$DOM" "raw:$RAW" 32M
guest_write "$DOM" 1 0x61 1M 192k

MP="$CKT_WORK/vm disks"
mkdir -p "$MP"
CKT_MOUNTS+=("$MP")
timeout 180 "$CKPTFS_BIN" mount "$MP" --run-dir "$CKT_RUN" \
  --store "$CKT_WORK/store" || fail "ckptfs mount '$MP' failed"
is_mounted "$MP" || fail "'$MP' is not mounted"
PID=$(daemon_pid_of "$MP") || fail "no pid in '$MP/control/status.json'"
CKT_PIDS+=("$PID")
CKT_MP=$MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

# run STATUS ARGS...: `ckptfs ARGS`, which must exit with STATUS; its stdout
# is in $out, its stderr in $err.
run() {
  local want=$1 rc=0
  shift
  out=$(timeout 600 "$CKPTFS_BIN" "$@" 2>"$CKT_WORK/stderr") || rc=$?
  err=$(cat "$CKT_WORK/stderr")
  ((rc == want)) || fail "ckptfs $*: exit status $rc, expected $want; stdout [$out] stderr [$err]"
  pass "ckptfs $*: exit status $rc"
}

# refused WHAT NEEDLE ARGS...: the daemon refuses; one line on stderr.
refused() {
  local what=$1 needle=$2
  shift 2
  run 1 "$@"
  [[ -z "$out" ]] || fail "$what: refused, but printed [$out] on stdout"
  assert_match "$err" '^ckptfs: [^'$'\n'']+ \(job [0-9A-Za-z-]+\)$' "$what: one line on stderr"
  assert_contains "$err" "$needle" "$what: the message"
  assert_json "$(job_file "$(job_of "$err")" "$MP")" state rejected
}

# The job id at the end of a client's line: "... (job ID)", "... (full, job ID)".
job_of() {
  local s=${1##*job }
  echo "${s%)}"
}

# ----------------------------------------------------------------- finding the mount
# Another test's mounts may exist too; ours alone, in a mount namespace of our
# own where the others are unmounted.
alone() {  # ARGS...: `ckptfs ARGS` seeing no ckptfs mount but ours
  env -u CKPTFS_MOUNT timeout 300 unshare -m --propagation private bash -c '
    mp=$1 bin=$2
    shift 2
    for m in $(awk '\''$3 == "fuse.ckptfs" {print $2}'\'' /proc/self/mounts); do
      m=$(printf "%b" "$m")
      [[ "$m" == "$mp" ]] || umount -l "$m"
    done
    exec "$bin" "$@"' _ "$MP" "$CKPTFS_BIN" "$@"
}
guest_write "$DOM" 0 0x41 0 1M
mark "$DOM" c1
out=$(alone checkpoint "$DOM" --name c1) || fail "checkpoint through the only mount failed: $out"
assert_match "$out" "^succeeded: $DOM c1 \(job [0-9A-Za-z-]+\)$" "checkpoint reply"
id=$(job_of "$out")
assert_json "$(job_file "$id" "$MP")" state succeeded
assert_json "$(job_file "$id" "$MP")" kind checkpoint
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/c1/$t.img" "$(expected_file "$DOM" "$i" c1)" "c1 $t"
done

CKPTFS_MOUNT="$MP" run 0 jobs
assert_match "$(sed -n 1p <<<"$out")" '^ID +KIND +DOMAIN +CHECKPOINT +STATE +ERROR$' "jobs header"
assert_contains "$out" "$id" "jobs through \$CKPTFS_MOUNT"

# Several mounts and none named: refused, whichever test made the others.
mkdir -m 0755 "$CKT_WORK/run2"
ckpt_mount --run-dir "$CKT_WORK/run2" --store "$CKT_WORK/store2"
MP2=$CKT_MP
out=$(env -u CKPTFS_MOUNT "$CKPTFS_BIN" jobs 2>&1) && fail "jobs with two mounts and no --mount succeeded: $out"
assert_eq "$out" "ckptfs: several ckptfs mounts; choose one with --mount" "jobs with several mounts"
ckpt_umount "$MP2"
CKT_MP=$MP   # the lib's default mount (job_file, wait_job, ctl)

# ----------------------------------------------------------------- refusals change nothing
before=$(checkpoint_names "$DOM")
refused "a taken name" "c1" checkpoint "$DOM" --name c1 -m "$MP"
refused "an unknown domain" "ckt-nosuch-$$" checkpoint "ckt-nosuch-$$" -m "$MP"
refused "a bad name" "name" checkpoint "$DOM" --name 'a/b' -m "$MP"
refused "an unknown disk" "vdz" checkpoint "$DOM" --disks vdz -m "$MP"
refused "an unknown checkpoint" "nosuch" release "$DOM" nosuch -m "$MP"
refused "a bad mode" "mode" backup "$DOM" --mode sometimes -m "$MP"
refused "name and checkpoint" "checkpoint" backup "$DOM" --name x --checkpoint c1 -m "$MP"
assert_eq "$(checkpoint_names "$DOM")" "$before" "libvirt's checkpoints after the refusals"
assert_exists "$D/c1/vda.img"
assert_has_job "$DOM"   # c1's export

# ----------------------------------------------------------------- checkpoint --disks, release
guest_write "$DOM" 1 0x62 4M 64k
mark "$DOM" c2
run 0 checkpoint "$DOM" --name c2 --disks vdb -m "$MP"
assert_match "$out" "^succeeded: $DOM c2 \(job [0-9A-Za-z-]+\)$" "checkpoint --disks reply"
assert_not_exists "$D/c2/vda.img" "$D/c1"   # c1's export ended first
cmp_image "$D/c2/vdb.img" "$(expected_file "$DOM" 1 c2)" "c2 vdb"
run 0 release "$DOM" c2 -m "$MP"
assert_match "$out" "^succeeded: $DOM c2 \(job [0-9A-Za-z-]+\)$" "release reply"
assert_json "$(job_file "$(job_of "$out")" "$MP")" kind release
assert_not_exists "$D/c2"
assert_no_job "$DOM"

# ----------------------------------------------------------------- backup
guest_write "$DOM" 0 0x42 8M 256k
mark "$DOM" b1
run 0 backup "$DOM" --name b1 --wait -m "$MP"
assert_match "$out" "^succeeded: $DOM b1 \(full, job [0-9A-Za-z-]+\)$" "backup --wait reply"
assert_json "$D/b1/info.json" state stored
assert_no_job "$DOM"
for i in 0 1; do
  t=$(disk_target "$i")
  cmp_image "$D/b1/$t.img" "$(expected_file "$DOM" "$i" b1)" "b1 $t"
done

# Without --wait and not on a terminal: the reply once the job runs.
guest_write "$DOM" 0 0x43 20M 64k
mark "$DOM" b2
run 0 backup "$DOM" --name b2 --mode incremental -m "$MP"
assert_match "$out" "^(running|queued|succeeded): $DOM b2 \(job [0-9A-Za-z-]+\)$" "backup reply"
id=$(job_of "$out")
wait_job "$id" succeeded
assert_json "$(job_file "$id" "$MP")" mode incremental
assert_json "$(job_file "$id" "$MP")" base b1
cmp_image "$D/b2/vda.img" "$(expected_file "$DOM" 0 b2)" "b2 vda"

# On a terminal it waits, with a progress bar on stderr.
guest_write "$DOM" 1 0x63 30M 1M
mark "$DOM" b3
tty_out=$(timeout 600 script -qec "$(printf '%q ' "$CKPTFS_BIN" backup "$DOM" --name b3 -m "$MP")" /dev/null) \
  || fail "backup on a terminal failed: $tty_out"
tty_out=${tty_out//$'\r'/$'\n'}
assert_match "$tty_out" '\[#########################\] 100%' "progress bar at the end"
assert_match "$tty_out" "succeeded: $DOM b3 \(incremental, job [0-9A-Za-z-]+\)" "backup on a terminal"
assert_json "$D/b3/info.json" state stored
cmp_image "$D/b3/vdb.img" "$(expected_file "$DOM" 1 b3)" "b3 vdb"

# ----------------------------------------------------------------- jobs
nfiles=$(find "$MP/control/jobs" -name '*.json' | wc -l)
run 0 jobs -m "$MP"
assert_eq "$(($(wc -l <<<"$out") - 1))" "$nfiles" "jobs: one line per job record"
assert_match "$out" "backup +$DOM +b3 +succeeded" "jobs: b3's line"
assert_match "$out" "checkpoint +$DOM +c1 +rejected +[^ ]" "jobs: the rejected c1 with its error"
run 0 jobs --json -m "$MP"
echo "$out" >"$CKT_WORK/jobs.json"
python3 - "$nfiles" "$CKT_WORK/jobs.json" <<'PY' || fail "jobs --json: $out"
import json, sys
lines = open(sys.argv[2]).read().splitlines()
assert len(lines) == int(sys.argv[1]), (len(lines), sys.argv[1])
for l in lines:
    j = json.loads(l)
    assert {"id", "kind", "state", "request"} <= j.keys(), j
PY
pass "jobs --json: $nfiles records"

# ----------------------------------------------------------------- our own unmount
# A domain started now gets a copy of the mount in its QEMU's mount
# namespace, which keeps the FUSE connection up after our unmount: the daemon
# must see its mount leave its namespace (by its escaped name) and end.
DOM2=$(dom_name second)
make_domain "$DOM2" 16M
ctl_ok "$MP/control/checkpoint" "$DOM name=u1" >/dev/null
assert_has_job "$DOM"
# The copy is what makes this case: without it (no libvirt mount namespace,
# or one the unmount propagates into) the connection simply ends.
qemu_mounts="/proc/$(qemu_pid "$DOM2")/mountinfo"
if grep -qF " ${MP// /\\040} " "$qemu_mounts"; then
  pass "QEMU of $DOM2 holds a copy of the mount"
else
  say "NOTE: QEMU of $DOM2 holds no copy of the mount; the daemon's unmount watch is not exercised here"
fi
timeout 120 fusermount3 -u "$MP" || fail "fusermount3 -u '$MP' failed"
daemon_gone() { ! pid_alive "$1"; }
wait_for "daemon $PID exits after fusermount3 -u" 60 daemon_gone "$PID"
assert_no_job "$DOM"
