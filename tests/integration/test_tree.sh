#!/usr/bin/env bash
# The tree: README, permissions (owner only; --allow-other), status.json and
# job records, domains following libvirt events, image mtime, EIO (never a
# hang) once the domain is destroyed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name late)

make_domain "$DOM" 64M 32M
guest_write "$DOM" 0 0x41 0 64k
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

# ----------------------------------------------------------------- README, status
assert_exists "$MP/README"
[[ -s "$MP/README" ]] || fail "$MP/README is empty"
timeout 30 cat "$MP/README" >/dev/null || fail "$MP/README cannot be read"
S="$MP/control/status.json"
assert_json_valid "$S"
for k in version pid exports cache; do
  json_get "$S" "$k" >/dev/null || fail "$S: no key '$k': $(cat "$S")"
done
assert_eq "$(json_get "$S" pid)" "$CKT_PID" "status.json pid"
pid_alive "$CKT_PID" || fail "status.json pid $CKT_PID is not a live process"
assert_eq "$(proc_exe "$CKT_PID")" "$(readlink -f "$CKPTFS_BIN")" "daemon executable"
assert_match "$(json_get "$S" exports)" '^\[' "status.json exports is a list"
assert_match "$(json_get "$S" cache)" '^\{' "status.json cache is an object"

# ----------------------------------------------------------------- a checkpoint
ctl_ok checkpoint "$DOM name=t1" >/dev/null
C="$D/t1"
assert_exists "$C/vda.img" "$C/vdb.img"
assert_contains "$(json_get "$S" exports)" "$DOM" "status.json exports"
assert_contains "$(json_get "$S" exports)" t1 "status.json exports"

# ----------------------------------------------------------------- modes
check_modes() {  # MP FILEMODE DIRMODE
  local mp=$1 fm=$2 dm=$3 d c
  d="$mp/domains/$DOM"
  c="$d/t1"
  assert_mode "$mp" "$dm"
  assert_mode "$mp/domains" "$dm"
  assert_mode "$d" "$dm"
  assert_mode "$c" "$dm"
  # control/ holds owner-writable files: 0700 is as good as 0500 there.
  assert_mode "$mp/control" "$dm|${dm/5/7}"
  assert_mode "$mp/control/jobs" "$dm|${dm/5/7}"
  assert_mode "$mp/README" "$fm"
  assert_mode "$mp/control/status.json" "$fm"
  for f in vda.img vdb.img vda.changes vdb.changes checkpoint.xml info.json; do
    assert_mode "$c/$f" "$fm"
  done
  local j
  for j in "$mp"/control/jobs/*.json; do
    assert_mode "$j" "$fm"
  done
  [[ -L "$d/latest" ]] || fail "$d/latest is not a symlink"
  assert_eq "$(stat -c %u:%g "$c/vda.img")" "0:0" "owner of $c/vda.img"
}
check_modes "$MP" 400 500
# Control files: writable (and readable, for the response) by the owner only.
for f in checkpoint backup release; do
  if [[ -e "$MP/control/$f" ]]; then
    m=$(stat -c %a "$MP/control/$f")
    [[ "$m" == 600 || "$m" == 200 ]] || fail "$MP/control/$f: mode $m, expected 600 (or 200)"
    pass "$MP/control/$f mode $m"
  elif [[ $f != backup ]]; then
    fail "$MP/control/$f is missing"
  fi
done

# ----------------------------------------------------------------- job records
n=0
for j in "$MP"/control/jobs/*.json; do
  assert_json_valid "$j"
  for k in kind domain checkpoint state request; do
    json_get "$j" "$k" >/dev/null || fail "$j: no key '$k': $(cat "$j")"
  done
  n=$((n + 1))
done
((n >= 1)) || fail "no job records in $MP/control/jobs"

# ----------------------------------------------------------------- mtime, created
epoch=$(checkpoint_epoch "$DOM" t1)
[[ -n "$epoch" ]] || fail "no creationTime in virsh checkpoint-dumpxml $DOM t1"
for f in vda.img vdb.img; do
  assert_eq "$(stat -c %Y "$C/$f")" "$epoch" "mtime of $C/$f (virsh creationTime)"
done
assert_json "$C/info.json" created "$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

# ----------------------------------------------------------------- --allow-other
ckpt_umount "$MP"
assert_no_job "$DOM"
ckpt_mount --allow-other
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
ctl_ok checkpoint "$DOM name=t2" >/dev/null
assert_mode "$MP" 555
assert_mode "$MP/README" 444
assert_mode "$MP/domains" 555
assert_mode "$D" 555
assert_mode "$D/t2" 555
assert_mode "$D/t2/vda.img" 444
assert_mode "$D/t2/info.json" 444
# control/ may stay owner-only with --allow-other (it drives libvirt).

# ----------------------------------------------------------------- libvirt events
make_domain --no-start "$DOM2" 16M
wait_for "$MP/domains/$DOM2 appears after virsh define" 30 test -d "$MP/domains/$DOM2"
virsh -q undefine "$DOM2" --checkpoints-metadata >/dev/null || fail "virsh undefine $DOM2 failed"
gone() { [[ ! -e "$1" ]]; }
wait_for "$MP/domains/$DOM2 disappears after virsh undefine" 30 gone "$MP/domains/$DOM2"

# ----------------------------------------------------------------- open files outlive attribute timeouts
# A file kept open past the attribute timeout is revalidated by the kernel
# through GETATTR on its handle (e.g. for a read at the end of the file); the
# reply must describe the file, or the kernel marks the inode bad (EIO).
out=$(timeout 120 python3 - "$D/t2/vdb.img" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
time.sleep(1.5)
tail = os.pread(fd, 4096, size)
head = os.pread(fd, 4096, 0)
time.sleep(1.5)
st = os.fstat(fd)
os.close(fd)
print(f"OK {len(tail)} {len(head)} {st.st_size == size} {oct(st.st_mode & 0o777)}")
EOF
) || fail "reading an image kept open past the attribute timeout failed: $out"
assert_eq "$out" "OK 0 4096 True 0o444" "read at EOF and at 0 after 1.5 s, fstat"

# ----------------------------------------------------------------- EIO after destroy
# t2's images have not been read yet. The image is opened before the destroy
# (its directory may go away with the job), then read to the end.
out=$(timeout 120 python3 - "$D/t2/vda.img" "$DOM" <<'EOF'
import errno, os, subprocess, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
subprocess.run(["virsh", "-q", "destroy", sys.argv[2]], check=True, stdout=subprocess.DEVNULL)
off = 0
try:
    while off < size:
        if not os.pread(fd, 1 << 20, off):
            break
        off += 1 << 20
    print(f"READ_ALL {off}")
except OSError as e:
    print(f"{errno.errorcode.get(e.errno, e.errno)} at {off}")
EOF
) || fail "reading $D/t2/vda.img after virsh destroy hung or crashed: $out"
assert_match "$out" '^EIO at [0-9]+$' "read of $D/t2/vda.img after virsh destroy"
assert_no_job "$DOM"

ckpt_umount "$MP"
