#!/usr/bin/env bash
# What another local user (made here with useradd) could plant for root's
# daemon, and what root's clients must not use. A victim directory of the
# user's (known files, owners, modes, mtimes, contents) must come out of
# every case exactly as it went in.
# - Run dir: owned by the user, a symlink (to the victim, and to a trusted
#   directory), reached through a symlink owned by the user or through a
#   directory of the user's, world-writable (0777), below a world-writable
#   directory without the sticky bit, and a RUN/.lock symlink to the victim's
#   file, to the victim itself, to a name that does not exist yet in it:
#   `ckptfs mount` exits 1 with one line naming the path, mounts nothing,
#   chmods nothing and creates neither the run dir nor the store.
# - Store: the same kinds (a copy of a real store with a backup in it; a
#   missing store below a world-writable directory, sticky or not):
#   `ckptfs mount` and every store command (ls, verify, gc, reindex, prune)
#   refuse it the same way and leave it as it is.
# - RUN/<uuid>: a directory the user owns (0777), holding a hard link to the
#   victim's file as vda.scratch and symlinks into the victim: the daemon
#   empties it without following anything, gives it to QEMU's user 0700 and
#   the checkpoint works. A symlink at RUN/<uuid>: checkpoint and backup of
#   that domain are refused (EACCES, a failed job whose error names the
#   symlink) before libvirt is asked for anything; the symlink stays; once
#   it is gone the next checkpoint works.
# - `ckptfs umount` of a mount point named "mnt a;b" (root: umount2; the
#   user: fusermount3 with an argv): unmounted, its daemon gone, the sibling
#   mount "mnt" still there, no program "a" or "b" from $PATH run.
# - A ckptfs mount of the user's (the real daemon run as the user with
#   --connect test:///default and --allow-other, in a mount namespace of our
#   own whose /etc/fuse.conf has user_allow_other; getuid() made to say 0 so
#   its files look root's): root's checkpoint/release/backup/jobs refuse it,
#   found alone, with -m and with $CKPTFS_MOUNT, naming who mounted it (the
#   kernel's user_id=), and the daemon receives no request (its job records
#   stay as they were; one written by hand shows a request would leave one).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

USERN="cktud$$"
QEMU_USER=libvirt-qemu
B=$CKPTFS_BIN
DOM=$(dom_name)

id "$QEMU_USER" >/dev/null 2>&1 || skip "no $QEMU_USER user (QEMU's user on Debian)"
for c in cc nsenter unshare runuser fusermount3; do
  command -v "$c" >/dev/null || skip "no $c here"
done
# Users of killed runs.
for u in $(awk -F: '/^cktud[0-9]+:/ {print $1}' /etc/passwd); do
  pid_alive "${u#cktud}" || userdel "$u" 2>/dev/null || true
done
useradd --no-create-home --shell /usr/sbin/nologin "$USERN" || fail "useradd $USERN failed"
on_cleanup "userdel $USERN"
UID_N=$(id -u "$USERN")
asuser() { (cd / && runuser -u "$USERN" -- "$@"); }

# ----------------------------------------------------------------- the victim
VICTIM="$CKT_WORK/victim"
mkdir -p "$VICTIM/sub"
printf 'one\n' >"$VICTIM/f1"
printf 'two\n' >"$VICTIM/sub/f2"
chmod 0750 "$VICTIM"
chmod 0700 "$VICTIM/sub"
chmod 0640 "$VICTIM/f1"
chmod 0600 "$VICTIM/sub/f2"
chown -R "$USERN:" "$VICTIM"
# Names, types, owners, modes, sizes, link counts, mtimes, link targets and
# contents of everything below DIR (DIR itself included).
tree_state() {  # DIR
  (cd "$1" && find . -printf '%p %y %u:%g %m %s %n %T@ %l\n' | sort \
    && find . -type f -exec sha256sum {} + | sort)
}
VSTATE=$(tree_state "$VICTIM")
victim_untouched() {  # AFTER_WHAT
  assert_eq "$(tree_state "$VICTIM")" "$VSTATE" "the victim directory after $1"
}

# refused WHAT NEEDLE... -- COMMAND...: COMMAND exits 1 with one
# "ckptfs: " line on stderr that contains every NEEDLE.
refused() {
  local what=$1 needles=() rc=0 err n
  shift
  while [[ $1 != -- ]]; do
    needles+=("$1")
    shift
  done
  shift
  err=$(cd / && timeout 120 "$@" 2>&1 >/dev/null) || rc=$?
  ((rc == 1)) || fail "$what: exit status $rc, expected 1; stderr [$err]"
  [[ "$err" == "ckptfs: "* && "$err" != *$'\n'* ]] \
    || fail "$what: not one 'ckptfs: ' line on stderr: [$err]"
  for n in "${needles[@]}"; do
    [[ "$err" == *"$n"* ]] || fail "$what: the message does not contain [$n]: [$err]"
  done
  pass "$what: refused ($err)"
}

RMP="$CKT_WORK/mnt-refused"
mkdir -p "$RMP"
CKT_MOUNTS+=("$RMP")
UNUSED_RUN="$CKT_WORK/r-none"
UNUSED_STORE="$CKT_WORK/store-unused"
# mount_refused WHAT RUN_DIR STORE NEEDLE...: nothing mounted, neither the
# unused run dir nor the unused store created, the victim untouched.
mount_refused() {
  local what=$1 run=$2 store=$3
  shift 3
  refused "mount with $what" "$@" -- "$B" mount "$RMP" --run-dir "$run" --store "$store"
  ! is_mounted "$RMP" || fail "mount with $what: $RMP is mounted"
  assert_not_exists "$UNUSED_RUN" "$UNUSED_STORE"
  victim_untouched "mount with $what"
}

# ----------------------------------------------------------------- run dirs
# (Short names: a run dir path has at most 61 characters, for its sockets.)
P="$CKT_WORK/r-user"
mkdir -m 0755 "$P"
chown "$USERN:" "$P"
asuser ln -s "$VICTIM/f1" "$P/.lock"
asuser ln -s "$VICTIM" "$P/$(cat /proc/sys/kernel/random/uuid)"
before=$(tree_state "$P")
mount_refused "a run dir owned by $USERN" "$P" "$UNUSED_STORE" \
  "run dir $P is owned by $USERN (uid $UID_N) with mode 0755" "must be owned by root"
assert_eq "$(tree_state "$P")" "$before" "$P after the refusal"

P="$CKT_WORK/r-link"
ln -s "$VICTIM" "$P"
chown -h "$USERN:" "$P"
mount_refused "a run dir that is a symlink to the victim" "$P" "$UNUSED_STORE" \
  "run dir $P is a symlink (to $VICTIM)"
mkdir -m 0711 "$CKT_WORK/run-real"
ln -s "$CKT_WORK/run-real" "$CKT_WORK/r-link2"
mount_refused "a run dir that is root's symlink to a trusted directory" \
  "$CKT_WORK/r-link2" "$UNUSED_STORE" "run dir $CKT_WORK/r-link2 is a symlink (to $CKT_WORK/run-real)"
assert_eq "$(ls -A "$CKT_WORK/run-real")" "" "the symlink's target after the refusal"
assert_mode "$CKT_WORK/run-real" 711

mkdir -m 0755 "$CKT_WORK/rdir"
ln -s "$CKT_WORK/rdir" "$CKT_WORK/rl"
chown -h "$USERN:" "$CKT_WORK/rl"
P="$CKT_WORK/rl/r"
mount_refused "a run dir reached through $USERN's symlink" "$P" "$UNUSED_STORE" \
  "$CKT_WORK/rl (on the way to the run dir $P) is a symlink owned by $USERN"
assert_eq "$(ls -A "$CKT_WORK/rdir")" "" "the symlink's target after the refusal"

mkdir -m 0755 "$CKT_WORK/ru"
chown "$USERN:" "$CKT_WORK/ru"
P="$CKT_WORK/ru/r"
mount_refused "a run dir in a directory of $USERN's" "$P" "$UNUSED_STORE" \
  "$CKT_WORK/ru is owned by $USERN (uid $UID_N) with mode 0755 (on the way to the run dir $P)"
assert_not_exists "$P"

P="$CKT_WORK/r-777"
mkdir "$P"
chmod 0777 "$P"
mount_refused "a world-writable run dir" "$P" "$UNUSED_STORE" \
  "run dir $P is owned by root (uid 0) with mode 0777" "chmod go-w $P"
assert_mode "$P" 777
assert_eq "$(ls -A "$P")" "" "$P after the refusal"

mkdir "$CKT_WORK/rw"
chmod 0777 "$CKT_WORK/rw"
P="$CKT_WORK/rw/r"
mkdir -m 0711 "$P"
mount_refused "a run dir below a world-writable directory" "$P" "$UNUSED_STORE" \
  "$CKT_WORK/rw is owned by root (uid 0) with mode 0777 (on the way to the run dir $P)" \
  "unless sticky"
assert_eq "$(ls -A "$P")" "" "$P after the refusal"

P="$CKT_WORK/r-lock"
mkdir -m 0755 "$P"
for t in "$VICTIM/f1" "$VICTIM" "$VICTIM/planted"; do
  ln -sfn "$t" "$P/.lock"
  mount_refused "RUN/.lock a symlink to $t" "$P" "$UNUSED_STORE" \
    "$P/.lock is a symlink (to $t)"
  assert_mode "$P" 755   # the lock is taken before the run dir's chmod 0711
  assert_symlink "$P/.lock" "$t"
done

# ----------------------------------------------------------------- RUN/<uuid>
make_domain "$DOM" 64M
UUID=$(virsh domuuid "$DOM" | sed '/^$/d')
STORE="$CKT_WORK/store"
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
RD="$CKT_RUN/$UUID"
assert_not_exists "$RD"

# A directory of the user's there (left from a run dir the user could once
# write), filled by the user with a hard link to the victim's file where
# QEMU's scratch file goes and symlinks into the victim.
mkdir "$RD"
chmod 0777 "$RD"
chown "$USERN:" "$RD"
asuser ln "$VICTIM/f1" "$RD/vda.scratch"
asuser ln -s "$VICTIM" "$RD/nbd.sock"
asuser mkdir "$RD/sub"
asuser ln -s "$VICTIM/sub" "$RD/sub/down"
asuser ln -s "$VICTIM/sub/f2" "$RD/sub/f2"
assert_eq "$(stat -c %h "$VICTIM/f1")" 2 "links of the victim's f1 once planted"
guest_write "$DOM" 0 0x41 1M 256k
mark "$DOM" c1
ctl_ok checkpoint "$DOM name=c1" >/dev/null
assert_eq "$(stat -c '%U %a' "$RD")" "$QEMU_USER 700" "$RD owner and mode after the checkpoint"
assert_eq "$(ls -A "$RD" | sort | tr '\n' ' ')" "nbd.sock vda.scratch " "$RD after the checkpoint"
[[ -S "$RD/nbd.sock" ]] || fail "$RD/nbd.sock is not a socket"
assert_eq "$(stat -c '%U %h' "$RD/vda.scratch")" "$QEMU_USER 1" "scratch file owner and links"
victim_untouched "a checkpoint into $USERN's RUN/<uuid>"
cmp_image "$D/c1/vda.img" "$(expected_file "$DOM" 0 c1)" "c1 vda.img"
ctl_ok release "$DOM c1" >/dev/null
assert_no_job "$DOM"
victim_untouched "the release of c1"

guest_write "$DOM" 0 0x42 4M 64k
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img"

# A symlink there: refused before libvirt is asked for anything.
rm -rf "$RD"
ln -s "$VICTIM" "$RD"
chown -h "$USERN:" "$RD"
cps=$(checkpoint_names "$DOM")
tree=$(ls -A "$D" | sort | tr '\n' ' ')
for req in "checkpoint|$DOM name=c2" "backup|$DOM name=b2"; do
  err=$(ctl "${req%%|*}" "${req#*|}")
  assert_eq "$err" EACCES "control/${req%%|*} with RUN/<uuid> a symlink"
  f=$(job_file "$(ctl_field id)")
  assert_json "$f" state failed
  assert_contains "$(json_get "$f" error)" "$RD is a symlink (to $VICTIM)" "${req%%|*} job error"
  assert_symlink "$RD" "$VICTIM"
  assert_eq "$(checkpoint_names "$DOM")" "$cps" "libvirt's checkpoints after the refused ${req%%|*}"
  assert_no_job "$DOM"
  assert_eq "$(ls -A "$D" | sort | tr '\n' ' ')" "$tree" "$DOM tree after the refused ${req%%|*}"
  victim_untouched "a ${req%%|*} with RUN/<uuid> a symlink to it"
done
assert_not_exists "$STORE/backups/$UUID/b2"
rm "$RD"
guest_write "$DOM" 0 0x43 8M 64k
mark "$DOM" c3
ctl_ok checkpoint "$DOM name=c3" >/dev/null
assert_eq "$(stat -c '%U %a' "$RD")" "$QEMU_USER 700" "$RD made again"
cmp_image "$D/c3/vda.img" "$(expected_file "$DOM" 0 c3)" "c3 vda.img"
ctl_ok release "$DOM c3" >/dev/null
ckpt_umount
victim_untouched "the unmount"

# ----------------------------------------------------------------- stores
# store_refused WHAT PATH NEEDLE...: mount and every store command refuse
# the store PATH and leave it (and the victim) as they were.
store_refused() {
  local what=$1 p=$2 before="" c
  shift 2
  [[ -e "$p" ]] && before=$(tree_state "$p")
  mount_refused "$what" "$UNUSED_RUN" "$p" "$@"
  for c in ls verify gc reindex "prune --keep-last 1"; do
    # shellcheck disable=SC2086  # the prune options are words
    refused "ckptfs $c with $what" "$@" -- "$B" $c --store "$p"
  done
  if [[ -n "$before" ]]; then
    assert_eq "$(tree_state "$p")" "$before" "$p after the refusals"
  else
    assert_not_exists "$p"
  fi
  victim_untouched "the store commands with $what"
}
out=$("$B" ls --store "$STORE") || fail "ckptfs ls of the good store: $out"
assert_match "$out" "$DOM +b1 " "ckptfs ls of the good store"

P="$CKT_WORK/store-user"
cp -a "$STORE" "$P"
chown -R "$USERN:" "$P"
store_refused "a store owned by $USERN" "$P" "store $P is owned by $USERN (uid $UID_N)"
P="$CKT_WORK/store-link"
ln -s "$VICTIM" "$P"
store_refused "a store that is a symlink to the victim" "$P" "store $P is a symlink (to $VICTIM)"
cp -a "$STORE" "$CKT_WORK/store-copy"
ln -s "$CKT_WORK/store-copy" "$CKT_WORK/store-link2"
store_refused "a store that is root's symlink to a good store" "$CKT_WORK/store-link2" \
  "store $CKT_WORK/store-link2 is a symlink (to $CKT_WORK/store-copy)"
P="$CKT_WORK/store-0777"
cp -a "$STORE" "$P"
chmod 0777 "$P"
store_refused "a world-writable store" "$P" "store $P is owned by root (uid 0) with mode 0777" \
  "chmod go-w $P"
mkdir "$CKT_WORK/ww"
chmod 0777 "$CKT_WORK/ww"
P="$CKT_WORK/ww/store"
cp -a "$STORE" "$P"
store_refused "a store below a world-writable directory" "$P" \
  "$CKT_WORK/ww is owned by root (uid 0) with mode 0777 (on the way to the store $P)" "unless sticky"
store_refused "a missing store below a world-writable directory" "$CKT_WORK/ww/new" \
  "$CKT_WORK/ww is owned by root (uid 0) with mode 0777 (on the way to the store $CKT_WORK/ww/new)" \
  "unless sticky"
mkdir "$CKT_WORK/tmpdir"
chmod 1777 "$CKT_WORK/tmpdir"
store_refused "a missing store below a sticky world-writable directory" "$CKT_WORK/tmpdir/store" \
  "store $CKT_WORK/tmpdir/store does not exist and $CKT_WORK/tmpdir (mode 1777) is writable by others"
mkdir -m 0755 "$CKT_WORK/udir"
chown "$USERN:" "$CKT_WORK/udir"
P="$CKT_WORK/udir/store"
cp -a "$STORE" "$P"
store_refused "a store in a directory of $USERN's" "$P" \
  "$CKT_WORK/udir is owned by $USERN (uid $UID_N) with mode 0755 (on the way to the store $P)"

# ----------------------------------------------------------------- umount "mnt a;b"
# Programs "a" and "b" first in $PATH: a shell given the mount point's name
# would run "b" (and pass "a" to umount); each leaves a line in MARKS.
mkdir -m 0755 "$CKT_WORK/bin"
MARKS="$CKT_WORK/marks"
mkdir "$MARKS"
chmod 1777 "$MARKS"
for p in a b; do
  printf '#!/bin/sh\necho "$0 $*" >"%s/%s.$(id -u)"\n' "$MARKS" "$p" >"$CKT_WORK/bin/$p"
  chmod 0755 "$CKT_WORK/bin/$p"
done
FAKE_PATH="$CKT_WORK/bin:$PATH"
assert_no_marks() {  # AFTER_WHAT
  assert_eq "$(ls -A "$MARKS")" "" "programs run by $1 (marks)"
}

mount_at() {  # MP RUN STORE: root's mount, sets CKT_PID
  mkdir -p "$1"
  CKT_MOUNTS+=("$1")
  timeout 180 "$B" mount "$1" --run-dir "$2" --store "$3" || fail "ckptfs mount '$1' failed"
  is_mounted "$1" || fail "'$1' is not mounted"
  CKT_PID=$(daemon_pid_of "$1") || fail "no pid in '$1/control/status.json'"
  CKT_PIDS+=("$CKT_PID")
  pass "mounted '$1' (daemon $CKT_PID)"
}
daemon_gone() { ! pid_alive "$1"; }

printf 'file a\n' >"$CKT_WORK/a"
printf 'file b\n' >"$CKT_WORK/b"
mount_at "$CKT_WORK/mnt" "$CKT_WORK/run-s" "$CKT_WORK/store-s"
SIB_PID=$CKT_PID
NASTY="$CKT_WORK/mnt a;b"
mount_at "$NASTY" "$CKT_WORK/run-n" "$CKT_WORK/store-n"
NASTY_PID=$CKT_PID
rc=0
(cd "$CKT_WORK" && PATH=$FAKE_PATH timeout 180 "$B" umount "$NASTY") || rc=$?
assert_eq "$rc" 0 "ckptfs umount '$NASTY' exit status"
! is_mounted "$NASTY" || fail "'$NASTY' still mounted after ckptfs umount"
wait_for "daemon of '$NASTY' exits" 30 daemon_gone "$NASTY_PID"
is_mounted "$CKT_WORK/mnt" || fail "the sibling mount $CKT_WORK/mnt went with '$NASTY'"
assert_eq "$(daemon_pid_of "$CKT_WORK/mnt")" "$SIB_PID" "the sibling mount's daemon"
assert_eq "$(cat "$CKT_WORK/a") $(cat "$CKT_WORK/b")" "file a file b" "files a and b beside the mount point"
assert_no_marks "root's ckptfs umount"
ckpt_umount "$CKT_WORK/mnt"

# ----------------------------------------------------------------- the user's mounts
# A mount namespace of our own (held by a sleep), with user_allow_other in its
# /etc/fuse.conf and none of the other tests' ckptfs mounts.
unshare -m --propagation private sleep infinity &
NS=$!
CKT_BG_PIDS+=("$NS")
ns_ready() { [[ "$(readlink "/proc/$NS/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]]; }
wait_for "a mount namespace of our own" 10 ns_ready
INNS=(nsenter -t "$NS" -m --)
inns() { "${INNS[@]}" "$@"; }
UPIDS=()
user_cleanup() {
  local p
  for p in "${UPIDS[@]}"; do _ckt_kill_daemon "$p"; done
}
on_cleanup user_cleanup   # before the userdel
printf 'user_allow_other\n' >"$CKT_WORK/fuse.conf"
inns mount --bind "$CKT_WORK/fuse.conf" /etc/fuse.conf || fail "bind mount of fuse.conf failed"
# shellcheck disable=SC2016
inns bash -c 'for m in $(awk '\''$3 == "fuse.ckptfs" {print $2}'\'' /proc/self/mounts); do
  umount -l "$(printf "%b" "$m")"; done' || fail "cannot detach the other ckptfs mounts"
refused "jobs with no ckptfs mount" "no ckptfs mount found" -- "${INNS[@]}" "$B" jobs

# getuid() says 0 in the user's daemon: its files look root's, as any FUSE
# daemon may claim; only the kernel's user_id= says who mounted it. (libvirt
# is told the truth: it refuses to run where getuid() != geteuid().)
cat >"$CKT_WORK/getuid0.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
uid_t getuid(void) {
  Dl_info caller;
  if (dladdr(__builtin_return_address(0), &caller) && caller.dli_fname &&
      strstr(caller.dli_fname, "libvirt"))
    return (uid_t)syscall(SYS_getuid);
  return 0;
}
EOF
cc -shared -fPIC -o "$CKT_WORK/getuid0.so" "$CKT_WORK/getuid0.c" -ldl || fail "cannot build the getuid shim"
chmod 0755 "$CKT_WORK/getuid0.so"
PRELOAD_ENV=("LD_PRELOAD=$CKT_WORK/getuid0.so")
# The shim comes before ASan's runtime in the library list.
[[ "${CKT_SANITIZER:-}" == address ]] \
  && PRELOAD_ENV+=("ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0")

UDIR="$CKT_WORK/u"
mkdir -m 0711 "$UDIR"
chown "$USERN:" "$UDIR"
# user_mount MP N [ENV...]: `ckptfs mount MP` as the user, in the namespace.
user_mount() {
  local mp=$1 n=$2 pid
  shift 2
  asuser mkdir -p "$mp"
  inns runuser -u "$USERN" -- env "$@" timeout 120 "$B" mount "$mp" --allow-other \
    --connect test:///default --run-dir "$UDIR/run$n" --store "$UDIR/store$n" \
    || fail "ckptfs mount '$mp' as $USERN failed"
  # As root: files that claim to be root's 0400 are root's to read.
  pid=$(inns python3 -c '
import json, sys
print(json.load(open(sys.argv[1] + "/control/status.json"))["pid"])' "$mp") \
    || fail "no pid in '$mp/control/status.json'"
  UPIDS+=("$pid")
  UPID=$pid
  pass "$USERN mounted '$mp' (daemon $pid)"
}
ns_mounted() {  # MP
  inns bash -c "$(declare -f is_mounted)"'; is_mounted "$1"' _ "$1"
}
njobs() {  # MP: job records of the user's mount, as root lists them
  inns find "$1/control/jobs" -name '*.json' | wc -l
}

U1="$UDIR/mnt"
user_mount "$U1" 1 "${PRELOAD_ENV[@]}"
U1_PID=$UPID
line=$(inns awk -v m="$U1" '$2 == m' /proc/self/mounts)
assert_match "$line" " fuse\.ckptfs .*user_id=$UID_N,.*allow_other" "the user's mount in the mount table"
assert_eq "$(inns stat -c '%u %a' "$U1/control/checkpoint")" "0 600" "control/checkpoint of the user's mount as root sees it"
assert_eq "$(njobs "$U1")" 0 "job records of the user's fresh mount"
# What a client's request would leave: a record (root writes one by hand).
out=$(inns python3 -c '
import os, sys
fd = os.open(sys.argv[1] + "/control/checkpoint", os.O_RDWR)
try:
    os.write(fd, b"ckt-nosuch\n")
except OSError as e:
    print(e.strerror)
os.close(fd)' "$U1") || fail "cannot write to the user's control/checkpoint"
assert_eq "$(njobs "$U1")" 1 "job records after a request written by hand ($out)"

WHO="ckptfs mount $U1 was mounted by $USERN (uid $UID_N), not by root or you: not using it"
for req in "jobs" "checkpoint test --name x" "release test x" "backup test --name x --wait"; do
  # shellcheck disable=SC2086  # REQ is words
  refused "root's $req, the user's the only mount" "$WHO" "mount your own" -- "${INNS[@]}" "$B" $req
  # shellcheck disable=SC2086
  refused "root's $req -m" "$WHO" -- "${INNS[@]}" "$B" $req -m "$U1"
  # shellcheck disable=SC2086
  refused "root's $req with \$CKPTFS_MOUNT" "$WHO" -- "${INNS[@]}" env CKPTFS_MOUNT="$U1" "$B" $req
done
assert_eq "$(njobs "$U1")" 1 "job records after root's refused requests"

# The user's `ckptfs umount` of "mnt a;b" goes through fusermount3.
printf 'file a\n' >"$UDIR/a"
printf 'file b\n' >"$UDIR/b"
U2="$UDIR/mnt a;b"
user_mount "$U2" 2
U2_PID=$UPID
rc=0
inns runuser -u "$USERN" -- env -C "$UDIR" PATH="$FAKE_PATH" timeout 180 "$B" umount "$U2" || rc=$?
assert_eq "$rc" 0 "the user's ckptfs umount '$U2' exit status"
! ns_mounted "$U2" || fail "'$U2' still mounted after the user's ckptfs umount"
wait_for "the user's daemon of '$U2' exits" 30 daemon_gone "$U2_PID"
ns_mounted "$U1" || fail "the sibling mount $U1 went with '$U2'"
assert_eq "$(njobs "$U1")" 1 "the sibling mount still answers"
assert_eq "$(cat "$UDIR/a") $(cat "$UDIR/b")" "file a file b" "files a and b beside '$U2'"
assert_no_marks "the user's ckptfs umount"
rc=0
inns runuser -u "$USERN" -- "$B" umount "$U1" || rc=$?
assert_eq "$rc" 0 "the user's ckptfs umount $U1"
wait_for "the user's daemon of $U1 exits" 30 daemon_gone "$U1_PID"
victim_untouched "the whole test"
