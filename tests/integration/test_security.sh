#!/usr/bin/env bash
# Who may reach what, and names that must not escape their directory.
# Default mount: owner-only modes, and a local user (made here with useradd)
# gets EACCES for the mount, its images and its control files. The run dir
# (root 0711, not listable) and each domain's directory (the QEMU user's,
# 0700) keep everybody but root and QEMU's user off the NBD socket and the
# scratch files; the store (0700, files 0600, the catalog too) is root's.
# --allow-other: other users read the domains tree (images, XML, info.json)
# and nothing under control/. Names: "..", ".", "/", "latest", leading dots
# overlong names and names libvirt would refuse in control lines are EINVAL
# and change nothing; an odd but valid name is served and stored under its
# own name; libvirt checkpoints ckptfs could not have made ("latest", 100
# characters) never show up as directories, yet serve as a base; backup
# records with unsafe names (a damaged or foreign store) are not served, with
# a log line, and nothing appears outside its directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name two)
STORE="$CKT_WORK/store"
USERN="cktsec$$"
QEMU_USER=libvirt-qemu

# Users of killed runs.
for u in $(awk -F: '/^cktsec[0-9]+:/ {print $1}' /etc/passwd); do
  pid_alive "${u#cktsec}" || userdel "$u" 2>/dev/null || true
done
useradd --no-create-home --shell /usr/sbin/nologin "$USERN" || fail "useradd $USERN failed"
on_cleanup "userdel $USERN"
id "$QEMU_USER" >/dev/null 2>&1 || skip "no $QEMU_USER user (QEMU's user on Debian)"

# Runs one file operation as USER; prints OK or the errno name.
uop() {  # USER OP PATH [ARG]
  (cd / && timeout 120 runuser -u "$1" -- python3 - "$2" "$3" "${4:-}" <<'PY'
import errno, os, socket, sys
op, path, arg = sys.argv[1:4]
try:
    if op == "read":
        with open(path, "rb") as f:
            f.read(4096)
    elif op == "cmp":
        with open(path, "rb") as a, open(arg, "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if x != y:
                    print("DIFFERENT")
                    sys.exit(0)
                if not x:
                    break
    elif op == "write":
        os.close(os.open(path, os.O_WRONLY))
    elif op == "rdwr":
        os.close(os.open(path, os.O_RDWR))
    elif op == "create":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elif op == "stat":
        os.stat(path)
    elif op == "list":
        os.listdir(path)
    elif op == "connect":
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
        s.close()
    else:
        sys.exit(f"uop: unknown op {op}")
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
  )
}

assert_uop() {  # WANT USER OP PATH [ARG]
  local want=$1 got
  shift
  got=$(uop "$@") || fail "uop $* failed to run"
  [[ "$got" == "$want" ]] || fail "as $1: $2 $3: expected $want, got $got"
  pass "as $1: $2 $3 -> $want"
}

assert_owner_mode() {  # PATH OWNER MODE
  local got
  got=$(stat -c '%U %a' "$1") || fail "stat $1 failed"
  assert_eq "$got" "$2 $3" "$1 owner and mode"
}

make_domain "$DOM" 64M
make_domain "$DOM2" 32M
ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"
guest_write "$DOM" 0 0x41 1M 1M
mark "$DOM" b1
wait_job "$(ctl_accepted backup "$DOM name=b1")" succeeded
guest_write "$DOM" 0 0x42 2M 64k
mark "$DOM" c1
ctl_ok checkpoint "$DOM name=c1" >/dev/null
UUID=$(virsh domuuid "$DOM" | sed '/^$/d')

# ----------------------------------------------------------------- owner only
assert_mode "$MP" 500
assert_mode "$MP/README" 400
assert_mode "$MP/domains" 500
assert_mode "$D" 500
for cp in b1 c1; do
  assert_mode "$D/$cp" 500
  assert_mode "$D/$cp/vda.img" 400
  assert_mode "$D/$cp/info.json" 400
  assert_mode "$D/$cp/checkpoint.xml" 400
done
assert_mode "$MP/control" 700
for f in checkpoint release backup; do assert_mode "$MP/control/$f" 600; done
assert_mode "$MP/control/status.json" 400
assert_mode "$MP/control/jobs" 500
assert_mode "$(ls "$MP"/control/jobs/*.json | sed -n 1p)" 400
assert_eq "$(stat -c %u "$D/c1/vda.img")" 0 "owner of images"
for p in "$MP" "$MP/README" "$MP/domains" "$D/c1/vda.img" "$D/b1/vda.img"; do
  assert_uop EACCES "$USERN" read "$p"
done
assert_uop EACCES "$USERN" stat "$MP/domains"
assert_uop EACCES "$USERN" write "$MP/control/checkpoint"
assert_uop EACCES "$USERN" read "$MP/control/status.json"

# ----------------------------------------------------------------- run dir
assert_owner_mode "$CKT_RUN" root 711
assert_owner_mode "$CKT_RUN/.lock" root 600
assert_owner_mode "$CKT_RUN/$UUID" "$QEMU_USER" 700
SOCK="$CKT_RUN/$UUID/nbd.sock"
[[ -S "$SOCK" ]] || fail "$SOCK: no socket"
assert_eq "$(stat -c %U "$CKT_RUN/$UUID/vda.scratch")" "$QEMU_USER" "scratch file owner"
assert_mode "$CKT_RUN/$UUID/vda.scratch" 600
assert_uop EACCES "$USERN" list "$CKT_RUN"
assert_uop EACCES "$USERN" connect "$SOCK"
assert_uop EACCES "$USERN" stat "$CKT_RUN/$UUID/vda.scratch"
assert_uop EACCES "$USERN" list "$CKT_RUN/$UUID"
assert_uop OK "$QEMU_USER" connect "$SOCK"   # QEMU's own user may

# ----------------------------------------------------------------- store
assert_owner_mode "$STORE" root 700
assert_mode "$STORE/config.json" 600
assert_mode "$STORE/catalog.db" 600
for f in $(find "$STORE/chunks" "$STORE/backups" -type f | sed -n 1,20p); do assert_mode "$f" 600; done
for d in $(find "$STORE/chunks" "$STORE/backups" -type d | sed -n 1,20p); do assert_mode "$d" 700; done
assert_uop EACCES "$USERN" list "$STORE"

# ----------------------------------------------------------------- --allow-other
ckpt_umount
ckpt_mount --allow-other
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "b1 after the remount" 30 test -d "$D/b1"
guest_write "$DOM" 0 0x43 3M 64k
mark "$DOM" c2
ctl_ok checkpoint "$DOM name=c2" >/dev/null
assert_mode "$MP" 555
assert_mode "$D/c2/vda.img" 444
assert_mode "$D/b1/vda.img" 444
assert_mode "$MP/control" 700
for f in checkpoint release backup; do assert_mode "$MP/control/$f" 600; done
assert_uop OK "$USERN" list "$MP/domains"
assert_uop OK "$USERN" read "$MP/README"
assert_uop OK "$USERN" read "$D/c2/info.json"
assert_uop OK "$USERN" read "$D/b1/checkpoint.xml"
assert_uop OK "$USERN" cmp "$D/c2/vda.img" "$(expected_file "$DOM" 0 c2)"
assert_uop OK "$USERN" cmp "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)"
assert_uop EACCES "$USERN" rdwr "$D/c2/vda.img"
assert_uop EACCES "$USERN" create "$D/c2/new"
assert_uop EACCES "$USERN" list "$MP/control"
assert_uop EACCES "$USERN" write "$MP/control/checkpoint"
assert_uop EACCES "$USERN" write "$MP/control/backup"
assert_uop EACCES "$USERN" read "$MP/control/status.json"
assert_uop EACCES "$USERN" connect "$CKT_RUN/$UUID/nbd.sock"

# ----------------------------------------------------------------- names in requests
snapshot_state() {
  echo "checkpoints: $(checkpoint_names "$DOM" | tr '\n' ' ') / $(checkpoint_names "$DOM2" | tr '\n' ' ')"
  echo "jobs: $(job_type "$DOM") $(job_type "$DOM2")"
  echo "tree: $(ls -A "$D" | tr '\n' ' ') / $(ls -A "$MP/domains/$DOM2" | tr '\n' ' ')"
  echo "run: $(find "$CKT_RUN" | sort | tr '\n' ' ')"
  echo "store: $(find "$STORE" -path "$STORE/chunks" -prune -o -print | grep -v '/catalog.db' | sort | tr '\n' ' ')"
  echo "work: $(ls -A "$CKT_WORK" | tr '\n' ' ')"
}
before=$(snapshot_state)
long65=$(printf 'n%.0s' $(seq 1 65))
long300=$(printf 'd%.0s' $(seq 1 300))
bad=(
  "checkpoint|$DOM name=.." "checkpoint|$DOM name=." "checkpoint|$DOM name=/x"
  "checkpoint|$DOM name=x/.." "checkpoint|$DOM name=latest" "checkpoint|$DOM name=$long65"
  "checkpoint|$DOM disks=../vda" "checkpoint|$DOM disks=vda/.." "checkpoint|$DOM disks=VDA"
  "checkpoint|$DOM disks=vda.img"
  "backup|$DOM name=../x" "backup|$DOM name=.hidden" "backup|$DOM name=latest"
  "backup|$DOM checkpoint=../c2" "backup|$DOM checkpoint=." "backup|$DOM name=$long65"
  "release|$DOM .." "release|$DOM ." "release|$DOM ../c2" "release|$DOM latest"
  "release|$DOM c2/../c2" "checkpoint|$DOM name=odd:n@me+1=2!" "backup|$DOM name=a%2Fb"
  "checkpoint|$DOM name=café"
)
for d in .. . "../$DOM" "$DOM/.." "/$DOM" "$long300"; do
  bad+=("checkpoint|$d" "backup|$d" "release|$d c2")
done
for b in "${bad[@]}"; do
  f=${b%%|*}
  line=${b#*|}
  err=$(ctl "$f" "$line")
  [[ "$err" == EINVAL ]] || fail "control/$f [${line:0:80}]: expected EINVAL, got $err: $(ctl_response)"
  assert_eq "$(ctl_field state)" rejected "control/$f [${line:0:80}] state"
done
pass "${#bad[@]} requests with unsafe names: EINVAL"
after=$(snapshot_state)
[[ "$before" == "$after" ]] || fail "requests with unsafe names changed something:
--- before
$before
--- after
$after"

# An odd but valid name: a directory of its own, under its own name.
ODD='_Odd-Name.2'
guest_write "$DOM" 0 0x44 4M 64k
mark "$DOM" odd
wait_job "$(ctl_accepted backup "$DOM name=$ODD")" succeeded
assert_exists "$D/$ODD/vda.img"
cmp_image "$D/$ODD/vda.img" "$(expected_file "$DOM" 0 odd)" "$ODD vda.img"
assert_exists "$STORE/backups/$UUID/$ODD/backup.json"

# ----------------------------------------------------------------- names in libvirt
# libvirt allows checkpoint names ckptfs would refuse: "latest" and names
# longer than 64. They have no data, so never a directory; they can be the
# base of a new checkpoint (its parent), named in info.json.
D2="$MP/domains/$DOM2"
LONG100=$(printf 'L%.0s' $(seq 1 100))
guest_write "$DOM2" 0 0x51 0 64k
tree2=$(ls -A "$D2" | tr '\n' ' ')
for n in latest "$LONG100"; do
  printf '<domaincheckpoint><name>%s</name></domaincheckpoint>' "$n" >"$CKT_WORK/cp.xml"
  virsh -q checkpoint-create "$DOM2" --xmlfile "$CKT_WORK/cp.xml" >/dev/null || fail "virsh checkpoint-create $n failed"
done
assert_eq "$(ls -A "$D2" | tr '\n' ' ')" "$tree2" "$DOM2 tree after libvirt checkpoints 'latest' and a 100-character one"
guest_write "$DOM2" 0 0x52 1M 64k
mark "$DOM2" c3
ctl_ok checkpoint "$DOM2 name=c3" >/dev/null
# (Made in the same second, either may count as the newest.)
base=$(json_get "$D2/c3/info.json" base)
[[ "$base" == "$LONG100" || "$base" == latest ]] || fail "c3 base: $base"
pass "c3 base: $base"
assert_changes "$D2/c3/vda.changes" "1048576 65536" "c3 vda.changes (since $base)"
assert_symlink "$D2/latest" c3
[[ -L "$D2/latest" ]] || fail "$D2/latest is not the symlink any more"
assert_eq "$(ls -A "$D2" | sort | tr '\n' ' ')" "c3 latest " "$DOM2 tree"
cmp_image "$D2/c3/vda.img" "$(expected_file "$DOM2" 0 c3)" "c3 vda.img"
for line in "release|$DOM2 latest" "backup|$DOM2 checkpoint=latest" "release|$DOM2 $LONG100"; do
  err=$(ctl "${line%%|*}" "${line#*|}")
  assert_eq "$err" EINVAL "control/${line%%|*} [${line#*|}]"
done
ctl_ok release "$DOM2 c3" >/dev/null
ckpt_umount

# ----------------------------------------------------------------- names in the store
# Records with unsafe names (a damaged or foreign store): valid JSON under
# the keys their names encode to, so the store lists them; not served.
python3 - "$STORE" "$UUID" <<'PY'
import json, os, sys
store, uuid = sys.argv[1], sys.argv[2]
def enc(name):
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        if b < 0x80 and (c.isalnum() or c in "._:@-") and not (i == 0 and c == "."):
            out.append(c)
        else:
            out.append("+%02X" % b)
    return "".join(out)
base = json.load(open(os.path.join(store, "backups", uuid, "b1", "backup.json")))
for domain, checkpoint, disk in [
        (None, "../evil", None), (None, "a/b", None), (None, "latest", None),
        (None, ".hidden", None), (None, "x y", None), (None, "..", None),
        ("../../etc", "dom-escape", None), ("a/b", "dom-slash", None),
        ("..", "dom-dotdot", None), (None, "disk-escape", "../x")]:
    r = dict(base)
    r["checkpoint"] = checkpoint
    r["id"] = uuid + "/" + checkpoint
    if domain is not None:
        r["domain"] = domain
    if disk is not None:
        r["disks"] = [dict(base["disks"][0], name=disk)]
    d = os.path.join(store, "backups", enc(uuid), enc(checkpoint))
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(os.path.join(d, "backup.json"), "w") as f:
        json.dump(r, f)
PY
CKT_FOREGROUND=1 ckpt_mount
MP=$CKT_MP
D="$MP/domains/$DOM"
wait_for "b1 with the bad records in the store" 30 test -d "$D/b1"
assert_eq "$(ls -A "$D" | sort | tr '\n' ' ')" "$(printf '%s\n' b1 latest "$ODD" | sort | tr '\n' ' ')" "$DOM tree with the bad records"
assert_symlink "$D/latest" "$ODD"
out=$(find "$MP/domains" -mindepth 1 -maxdepth 1 \( -name '.*' -o -name etc -o -name a \) -printf '%f\n')
assert_eq "$out" "" "domains/ with the bad records"
out=$(find "$MP" -name evil -o -name hidden -o -name '*escape*' -o -name 'x y' -o -name '*.hidden')
assert_eq "$out" "" "paths of the bad records in the tree"
assert_fsop ENOENT read "$D/../evil"
assert_fsop ENOENT read "$MP/domains/etc"
cmp_image "$D/b1/vda.img" "$(expected_file "$DOM" 0 b1)" "b1 vda.img with the bad records"
log=$(ls "$CKT_WORK"/daemon-*.log | tail -1)
n=$(grep -c 'not serving backup' "$log" || true)
assert_eq "$n" 10 "log lines for the records not served"
ckpt_umount
