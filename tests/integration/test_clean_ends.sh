#!/usr/bin/env bash
# Every way the daemon can end leaves no backup job on the domain:
# `ckptfs umount`, SIGTERM, `fusermount3 -u`, and SIGKILL followed by a new
# mount with the same run dir (the new daemon ends the stale export).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
make_domain "$DOM" 64M
guest_write "$DOM" 0 0x41 0 64k

# Mount, make checkpoint NAME live, check the job is there.
live_checkpoint() {  # NAME
  ckpt_mount
  wait_for "$CKT_MP/domains/$DOM appears" 30 test -d "$CKT_MP/domains/$DOM"
  ctl_ok checkpoint "$DOM name=$1" >/dev/null
  assert_exists "$CKT_MP/domains/$DOM/$1/vda.img"
  assert_has_job "$DOM"
}

daemon_gone() { ! pid_alive "$1"; }
not_mounted() { ! is_mounted "$1"; }

after_end() {  # HOW MP PID CHECKPOINT
  local how=$1 mp=$2 pid=$3 cp=$4
  wait_for "daemon $pid exits after $how" 120 daemon_gone "$pid"
  wait_for "$mp unmounted after $how" 30 not_mounted "$mp"
  assert_no_job "$DOM"
  assert_contains "$(checkpoint_names "$DOM")" "$cp" "checkpoints after $how"
  say "$how: clean"
}

# ----------------------------------------------------------------- ckptfs umount
live_checkpoint e1
pid=$CKT_PID
ckpt_umount "$CKT_MP"
after_end "ckptfs umount" "$CKT_MP" "$pid" e1

# ----------------------------------------------------------------- SIGTERM
live_checkpoint e2
pid=$(daemon_pid_of "$CKT_MP")
kill -TERM "$pid"
after_end SIGTERM "$CKT_MP" "$pid" e2

# ----------------------------------------------------------------- fusermount3 -u
live_checkpoint e3
pid=$CKT_PID
timeout 120 fusermount3 -u "$CKT_MP" || fail "fusermount3 -u $CKT_MP failed"
after_end "fusermount3 -u" "$CKT_MP" "$pid" e3

# ----------------------------------------------------------------- SIGKILL + remount
guest_write "$DOM" 0 0x42 1M 64k
live_checkpoint e4
old_mp=$CKT_MP
pid=$CKT_PID
kill -KILL "$pid"
wait_for "daemon $pid dies after SIGKILL" 60 daemon_gone "$pid"
# The kernel mount is left behind, dead; the backup job stays in libvirt.
assert_has_job "$DOM"
timeout 60 fusermount3 -u "$old_mp" 2>/dev/null || umount -l "$old_mp" 2>/dev/null || true
wait_for "$old_mp unmounted" 30 not_mounted "$old_mp"
assert_has_job "$DOM"

ckpt_mount   # same $CKT_RUN
assert_no_job "$DOM"
D="$CKT_MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
if [[ -e "$D/e4" ]]; then
  st=$(json_get "$D/e4/info.json" state) || fail "$D/e4 exists without a readable info.json"
  assert_ne "$st" live "state of the stale checkpoint e4"
fi
python3 - "$CKT_MP/control/status.json" "$DOM" <<'EOF' || fail "status.json still lists an export of $DOM: $(cat "$CKT_MP/control/status.json")"
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(1 if sys.argv[2] in json.dumps(d.get("exports", [])) else 0)
EOF
assert_contains "$(checkpoint_names "$DOM")" e4 "checkpoints after SIGKILL + remount"

# The domain is usable again: a new live checkpoint (the stale scratch files
# and socket are gone, or libvirt would refuse the new job).
guest_write "$DOM" 0 0x43 2M 64k
mark "$DOM" e5
ctl_ok checkpoint "$DOM name=e5" >/dev/null
cmp_image "$D/e5/vda.img" "$(expected_file "$DOM" 0 e5)" "e5 vda.img"
ckpt_umount
assert_no_job "$DOM"
