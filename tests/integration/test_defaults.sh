#!/usr/bin/env bash
# The real defaults: `ckptfs mount MP` with neither --run-dir nor --store, on
# a host without /var/lib/ckptfs (one that exists is moved aside and put
# back afterwards). The daemon must create /var/lib/ckptfs and its run dir
# 0711, so that QEMU's user passes through to RUN/<uuid>, whatever the umask
# (mounted with umask 077, as on a hardened host: /var/lib/ckptfs was 0700
# then and every checkpoint failed with EIO, "Could not open
# .../vda.scratch: Permission denied"), and the store 0700.
# A live checkpoint and a backup of a test domain serve exactly the guest's
# bytes, the backup also after a remount; `ckptfs ls` and `verify` without
# --store find the default store. /var/lib/ckptfs is host-global: CTest runs
# this test alone (RUN_SERIAL), and no other test uses the default paths.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DEF=/var/lib/ckptfs
ASIDE=""
QEMU_USER=libvirt-qemu
id "$QEMU_USER" >/dev/null 2>&1 || skip "no $QEMU_USER user (QEMU's user on Debian)"

# A killed run may have left its /var/lib/ckptfs and the one it moved aside.
for d in "$DEF".aside-*; do
  [[ -d "$d" ]] || continue
  pid_alive "${d##*.aside-}" && continue
  say "putting back $d, left by a killed run"
  rm -rf --one-file-system "$DEF"
  mv "$d" "$DEF"
done
if [[ -e "$DEF" || -L "$DEF" ]]; then
  if [[ -f "$DEF/run/.lock" ]] && ! flock -n "$DEF/run/.lock" true; then
    skip "a ckptfs daemon uses the default run dir $DEF/run"
  fi
  ASIDE="$DEF.aside-$$"
  mv "$DEF" "$ASIDE"
  say "moved $DEF aside to $ASIDE"
fi

# Runs first in the cleanup: the daemons must be gone before their
# directories are.
restore_defaults() {
  local mp p
  for mp in "${CKT_MOUNTS[@]}"; do
    is_mounted "$mp" && timeout 60 "$CKPTFS_BIN" umount "$mp"
  done
  for p in "${CKT_PIDS[@]}"; do _ckt_kill_daemon "$p"; done
  rm -rf --one-file-system "$DEF"
  if [[ -n "$ASIDE" ]]; then mv "$ASIDE" "$DEF"; fi
}
on_cleanup restore_defaults

# ckpt_mount always passes --run-dir and --store; this one passes neither.
mount_defaults() {  # MP
  mkdir -p "$1"
  CKT_MOUNTS+=("$1")
  local rc=0
  # umask 077, as on a hardened host: the modes must not come from it.
  (umask 077 && timeout 180 "$CKPTFS_BIN" mount "$1") || rc=$?
  ((rc == 0)) || fail "ckptfs mount $1 (default run dir and store) exited with status $rc"
  is_mounted "$1" || fail "$1 is not mounted"
  CKT_PID=$(daemon_pid_of "$1") || fail "$1/control/status.json: no pid"
  CKT_PIDS+=("$CKT_PID")
  CKT_MP=$1
  pass "mounted $1 with the defaults"
}

assert_owner_mode() {  # PATH OWNER MODE
  assert_eq "$(stat -c '%U %a' "$1")" "$2 $3" "$1 owner and mode"
}

DOM=$(dom_name)
make_domain "$DOM" 64M
UUID=$(virsh domuuid "$DOM" | sed '/^$/d')
assert_not_exists "$DEF"

mount_defaults "$CKT_WORK/mnt1"
MP=$CKT_MP
D="$MP/domains/$DOM"
assert_json "$MP/control/status.json" run_dir "$DEF/run"
assert_json "$MP/control/status.json" store "$DEF/store"
assert_json "$MP/control/status.json" host_id "$(hostname)"
assert_owner_mode "$DEF" root 711
assert_owner_mode "$DEF/run" root 711
assert_owner_mode "$DEF/run/.lock" root 600
assert_owner_mode "$DEF/store" root 700
wait_for "$D appears" 30 test -d "$D"

guest_write "$DOM" 0 0x41 1M 256k
guest_write "$DOM" 0 0x42 40M 64k
mark "$DOM" c1
ctl_ok checkpoint "$DOM name=c1" >/dev/null
assert_owner_mode "$DEF/run/$UUID" "$QEMU_USER" 700
assert_eq "$(stat -c %U "$DEF/run/$UUID/vda.scratch")" "$QEMU_USER" "scratch file owner"
cmp_image "$D/c1/vda.img" "$(expected_file "$DOM" 0 c1)" "live c1 vda.img"

guest_write "$DOM" 0 0x43 4M 64k
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
assert_json "$D/b1/info.json" state stored
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "stored b1 vda.img"
assert_no_job "$DOM"
ckpt_umount "$MP"

# The default store serves b1 after a remount, and the store commands find it.
mount_defaults "$CKT_WORK/mnt2"
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "b1 after the remount" 30 test -d "$D/b1"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img after a remount"
ckpt_umount "$MP"
out=$("$CKPTFS_BIN" ls "$DOM") || fail "ckptfs ls $DOM (default store): $out"
assert_match "$out" "$DOM +b1 " "ckptfs ls with the default store"
out=$("$CKPTFS_BIN" verify 2>&1) || fail "ckptfs verify (default store): $out"
pass "ckptfs verify of the default store"
