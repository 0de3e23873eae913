#!/usr/bin/env bash
# Two daemons sharing one store, as two hosts would ("hostA" and "hostB":
# their own host ids, mounts and run dirs on one machine): a backup made by A
# is listed and served by B within seconds (the store's change log, never a
# listing of the store), byte-identical; identical data from both is
# stored once; gc and prune from B while A backs up lose nothing; A frozen
# mid-backup past its lock's lease: B's gc expires the lock and A's backup
# then fails instead of completing; A killed mid-backup: B's gc removes its
# lock and, once old, only its orphans; B backs up a domain A backed up last
# (a migrated VM): incremental on A's base while libvirt has its checkpoint,
# full once it has none; every backup stays byte-identical.
#
# CKT_SHARED_STORE=rados runs it all on a Ceph pool (scripts/ceph-up.sh),
# where each daemon has a catalog of its own in its run dir, as hosts do;
# otherwise on a local directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BACKEND=${CKT_SHARED_STORE:-local}
DOM=$(dom_name)
DOM2=$(dom_name two)
STORE=$CKT_WORK/store
if [[ $BACKEND == rados ]]; then
  for t in ceph-mon ceph-osd ceph-mgr ceph rados; do
    command -v "$t" >/dev/null || skip "$t not installed (run scripts/setup.sh)"
  done
  POOL=ckptfs
  CEPH_DIR="$CKT_WORK/ceph"
  on_cleanup "bash '$CKT_SRC/scripts/ceph-down.sh' '$CEPH_DIR'"
  up=$(bash "$CKT_SRC/scripts/ceph-up.sh" "$CEPH_DIR" "$POOL") ||
    fail "ceph-up.sh failed"
  CONF=$(sed -n 's/^CEPH_CONF=//p' <<<"$up")
  CID=$(sed -n 's/^CEPH_ID=//p' <<<"$up")
  STORE_ARGS=(--store "rados:$POOL" --ceph-conf "$CONF" --ceph-id "$CID")
  rad() { timeout 60 rados -c "$CONF" --id "$CID" -p "$POOL" "$@"; }
  objects() { rad ls | sort; }
else
  STORE_ARGS=(--store "$STORE")
  objects() {
    [[ -d $STORE ]] || return 0
    (cd "$STORE" && find . -type f -not -name '.*' -printf '%P\n' | sort)
  }
fi
ck() { "$CKPTFS_BIN" "$@" "${STORE_ARGS[@]}"; }
chunk_files() { objects | grep -c '^chunks/' || true; }
count_objects() { objects | grep -c -- "$1" || true; }  # REGEX
temps() { find "$STORE/chunks" -type f -name '.*' | wc -l; }

RAW="$CKT_WORK/random.raw"
head -c 256M /dev/urandom >"$RAW"
make_domain "$DOM" "raw:$RAW"
make_domain "$DOM2" 64M
# Data no other backup has, for the backup A is killed in: its copy writes
# new chunks (temporaries until its commit).
DOM3=$(dom_name three)
head -c 256M /dev/urandom >"$CKT_WORK/random3.raw"
make_domain "$DOM3" "raw:$CKT_WORK/random3.raw"

mount_a() {
  ckpt_mount --host-id hostA --lock-lease 10 "${STORE_ARGS[@]}"
  MPA=$CKT_MP
  PIDA=$CKT_PID
  wait_for "$DOM on A" 30 test -d "$MPA/domains/$DOM"
}
mount_a
ckpt_mount --host-id hostB --run-dir "$CKT_WORK/runB" "${STORE_ARGS[@]}"
MPB=$CKT_MP
PIDB=$CKT_PID
assert_json "$MPA/control/status.json" host_id hostA
assert_json "$MPB/control/status.json" host_id hostB

# Every complete backup, byte-identical from B's mount.
declare -A EXPECT
check_all() {  # WHAT
  local k
  for k in "${!EXPECT[@]}"; do
    wait_for "$k on B" 30 test -e "$MPB/domains/$k"
    cmp_image "$MPB/domains/$k" "${EXPECT[$k]}" "$k from B ($1)"
  done
}

backup_on() {  # MP DOM NAME [WORDS] -> job id
  CKT_MP=$1 ctl_accepted backup "$2 name=$3${4:+ $4}"
}

# A backup of DOM on A that surely runs for a while: its checkpoint is made
# first, then QEMU is held (SIGSTOP) and the backup of that checkpoint starts;
# its copy waits on the export until the caller resumes QEMU ($QPID).
held_backup_on_a() {  # NAME -> job id
  CKT_MP=$MPA ctl_ok checkpoint "$DOM name=$1" >/dev/null
  kill -STOP "$QPID"
  on_cleanup "kill -CONT $QPID 2>/dev/null"
  CKT_MP=$MPA ctl_accepted backup "$DOM checkpoint=$1"
}

# ----------------------------------------------------------------- A backs up, B serves
guest_write "$DOM" 0 0x41 1M 1M
mark "$DOM" a1
id=$(backup_on "$MPA" "$DOM" a1)
CKT_MP=$MPA wait_job "$id" succeeded
# B learns of it from the store's change log, at its next poll (5 s).
start=$SECONDS
wait_for "A's backup listed on B" 30 test -e "$MPB/domains/$DOM/a1/vda.img"
took=$((SECONDS - start))
((took <= 15)) || fail "B listed A's backup only after $took s"
pass "B listed A's backup $took s after it completed"
EXPECT["$DOM/a1/vda.img"]=$(expected_file "$DOM" 0 a1)
check_all "A's full backup"

# ----------------------------------------------------------------- dedup across hosts
before=$(chunk_files)
guest_write "$DOM2" 0 0x41 5M 1M   # the same bytes as a1's at 1M..2M
mark "$DOM2" b1
id=$(backup_on "$MPB" "$DOM2" b1)
CKT_MP=$MPB wait_job "$id" succeeded
assert_eq "$(chunk_files)" "$before" "chunks stored by B for data A stored already"
EXPECT["$DOM2/b1/vda.img"]=$(expected_file "$DOM2" 0 b1)
check_all "B's backup of the same data"

# ----------------------------------------------------------------- gc + prune from B during A's backups
QPID=$(qemu_pid "$DOM")
for round in 1 2 3; do
  guest_write "$DOM" 0 "0x5$round" "$((round * 20))M" 2M
  mark "$DOM" "r$round"
  # QEMU held while the incremental starts on A: its copy waits on the
  # export, so prune (keeping the newest stored backup) and gc from B surely
  # run while it is under way; then again until it ends.
  id=$(held_backup_on_a "r$round")
  f=$(job_file "$id" "$MPA")
  for i in 1 2; do
    ck prune --domain "$DOM" --keep-last 1 >/dev/null || fail "prune from B failed"
    ck gc >/dev/null || fail "gc from B failed"
  done
  assert_json "$f" state running
  kill -CONT "$QPID"
  while [[ $(json_get "$f" state) == running ]]; do
    ck prune --domain "$DOM" --keep-last 1 >/dev/null || fail "prune from B failed"
    ck gc >/dev/null || fail "gc from B failed"
  done
  CKT_MP=$MPA wait_job "$id" succeeded
  for k in "${!EXPECT[@]}"; do
    [[ $k == "$DOM"/* ]] && unset "EXPECT[$k]"   # pruned (keep-last 1)
  done
  EXPECT["$DOM/r$round/vda.img"]=$(expected_file "$DOM" 0 "r$round")
  check_all "round $round of gc + prune during a backup"
done
ck prune --domain "$DOM" --keep-last 1 >/dev/null
out=$(ck verify) || fail "verify after the gc + prune rounds: $out"

# ----------------------------------------------------------------- A frozen past its lease
# A's daemon stopped (SIGSTOP: a hung or cut-off host) while its backup
# waits on the held QEMU: it cannot renew its lock.
guest_write "$DOM" 0 0x61 9M 64k
id=$(held_backup_on_a frozen)
assert_json "$(job_file "$id" "$MPA")" state running
kill -STOP "$PIDA"
on_cleanup "kill -CONT $PIDA 2>/dev/null"
kill -CONT "$QPID"
out=$(ck gc) || fail "gc while A is frozen: $out"
assert_contains "$out" "backup running: hostA-" "gc keeps A's fresh lock"
sleep 12   # > the 10 s lease
out=$(ck gc) || fail "gc after A's lease ran out: $out"
assert_contains "$out" "removed expired lock: hostA-" "gc from B expires A's lock"
assert_contains "$out" "(host hostA, not renewed for" "gc says whose lock and why"
kill -CONT "$PIDA"
CKT_MP=$MPA wait_job "$id" failed 120
assert_contains "$(json_get "$(job_file "$id" "$MPA")" error)" "expired and was removed" \
  "A's backup after its lock expired"
assert_eq "$(count_objects '/frozen/backup.json$')" 0 "records of the backup whose lock expired"
check_all "after A's lease expired"

# ----------------------------------------------------------------- A killed mid-backup
# A full backup of DOM3, killed once its copy has written chunks: QEMU is
# held the moment the first new chunk appears (a temporary, in a local
# store), so the copy cannot finish.
wait_for "$DOM3 on A" 30 test -d "$MPA/domains/$DOM3"
QPID3=$(qemu_pid "$DOM3")
chunks_before=$(objects | grep '^chunks/' || true)
# The watcher starts before the backup, so however loaded the machine it
# sees the first new chunk.
if [[ $BACKEND == local ]]; then
  python3 - "$STORE/chunks" "$QPID3" <<'PY' &
import os, signal, sys, time
top, qpid = sys.argv[1], int(sys.argv[2])
def dots():
    return {(d.name, e.name) for d in os.scandir(top) if d.is_dir()
            for e in os.scandir(d.path) if e.name.startswith(".")}
before = dots()
deadline = time.time() + 300
while time.time() < deadline:
    if dots() - before:
        os.kill(qpid, signal.SIGSTOP)
        sys.exit(0)
    time.sleep(0.002)
sys.exit(1)
PY
else
  n_before=$(chunk_files)
  (
    deadline=$((SECONDS + 300))
    while ((SECONDS < deadline)); do
      if (($(chunk_files) > n_before)); then kill -STOP "$QPID3"; exit 0; fi
    done
    exit 1
  ) &
fi
watcher=$!
sleep 0.5
id=$(backup_on "$MPA" "$DOM3" killed)
wait "$watcher" || fail "no chunk of A's backup appeared"
on_cleanup "kill -CONT $QPID3 2>/dev/null"
kill -9 "$PIDA"
kill -CONT "$QPID3"
pass "daemon A killed during backup 'killed' of $DOM3"
umount -l "$MPA" 2>/dev/null || true
assert_eq "$(count_objects '/killed/backup.json$')" 0 "records of the killed backup"
sleep 11
out=$(ck gc) || fail "gc after A died: $out"
assert_contains "$out" "removed expired lock: hostA-" "B's gc removes the dead host's lock"
assert_eq "$(count_objects '^locks/')" 0 "locks left"
# A's orphans (its temporaries and any chunk nothing references) go once
# old; age them, as an hour would.
if [[ $BACKEND == local ]]; then
  find "$STORE/chunks" -type f -exec touch -h -d '-2 hours' {} +
  n=$(temps)
  ((n > 0)) || fail "no temporaries of A's killed backup to remove"
  out=$(ck gc) || fail "gc of A's orphans: $out"
  assert_contains "$out" "removed $n stale temporaries" "gc removes A's temporaries"
  assert_eq "$(temps)" 0 "temporaries left"
else
  # RADOS writes are whole: A's orphans are the chunks it wrote, which no
  # manifest names. Their age is the ckptfs.mtime xattr.
  orphans=$(comm -13 <(echo "$chunks_before") <(objects | grep '^chunks/'))
  n=$(grep -c . <<<"$orphans" || true)
  ((n > 0)) || fail "no chunk of A's killed backup in the pool"
  for o in $orphans; do rad setxattr "$o" ckptfs.mtime 1000000000; done
  out=$(ck gc) || fail "gc of A's orphans: $out"
  left=0
  for o in $orphans; do rad stat "$o" >/dev/null 2>&1 && left=$((left + 1)); done
  assert_eq "$left" 0 "of A's $n orphan chunks, left after gc"
fi
out=$(ck verify) || fail "verify after A's orphans went: $out"
check_all "after B's gc removed a dead host's orphans"

# A comes back: its stale export ends, and its next backup is right.
mount_a
assert_no_job "$DOM3"
guest_write "$DOM" 0 0x63 7M 64k
mark "$DOM" back
id=$(backup_on "$MPA" "$DOM" back)
CKT_MP=$MPA wait_job "$id" succeeded
EXPECT["$DOM/back/vda.img"]=$(expected_file "$DOM" 0 back)
check_all "A's backup after it came back"

# ----------------------------------------------------------------- a migrated VM
# B backs up a domain whose last backup A made. B's libvirt has that
# checkpoint with its bitmap (one libvirtd here, as after a migration that
# took the checkpoints along): B's backup is an incremental on A's base.
guest_write "$DOM" 0 0x64 11M 64k
mark "$DOM" onb
id=$(backup_on "$MPB" "$DOM" onb)
CKT_MP=$MPB wait_job "$id" succeeded
assert_json "$MPB/domains/$DOM/onb/info.json" mode incremental
assert_json "$MPB/domains/$DOM/onb/info.json" base back
EXPECT["$DOM/onb/vda.img"]=$(expected_file "$DOM" 0 onb)
# Moved without its checkpoints (libvirt has none of the stored backups'):
# full.
for cp in $(checkpoint_names "$DOM"); do
  virsh checkpoint-delete "$DOM" "$cp" --metadata >/dev/null
done
guest_write "$DOM" 0 0x65 13M 64k
mark "$DOM" onb2
id=$(backup_on "$MPB" "$DOM" onb2)
CKT_MP=$MPB wait_job "$id" succeeded
assert_json "$MPB/domains/$DOM/onb2/info.json" mode full
EXPECT["$DOM/onb2/vda.img"]=$(expected_file "$DOM" 0 onb2)
check_all "B's backups of a domain A backed up"
pid_alive "$PIDB" || fail "daemon B died"
# B followed every backup and prune of A through the change log: it listed
# the store once, at its start.
assert_json "$MPB/control/status.json" store_changes.resyncs 1
applied=$(json_get "$MPB/control/status.json" store_changes.applied)
((applied > 0)) || fail "B applied no change of the store's change log"
pass "B applied $applied changes, listed the store once"

ckpt_umount "$MPA"
ckpt_umount "$MPB"
say "PASS ($CKT_CHECKS checks)"
