# shellcheck shell=bash
# Shared helpers for the ckptfs integration tests. Source it first thing:
#
#   source "$(dirname "$0")/lib.sh"
#
# Environment: CKPTFS_BIN (the daemon, set by CTest), CKPTFS_SRC (source dir).
# Exit codes: 0 pass, 1 fail, 77 skipped (no root, no /dev/fuse, no libvirtd).
#
# What a test gets:
#   dom_name [SUFFIX]                 unique domain name: ckt-<test>-<pid>[-SUFFIX]
#   make_domain [--no-start] NAME DISKSPEC...
#                                     qcow2 disks vda, vdb, ... DISKSPEC is a size
#                                     (256M: blank disk) or raw:FILE (a raw image
#                                     converted to qcow2); defined + started.
#   guest_write DOM DISKINDEX PATTERN OFFSET LENGTH
#                                     write through the guest's virtio device
#                                     (HMP qemu-io) and apply the same write to
#                                     the expected raw file (python, not qemu)
#   mark DOM TAG                      freeze expected images + write log as TAG
#   expected_file DOM DISKINDEX [TAG] expected raw image (now, or at TAG)
#   expected_changes DOM DISKINDEX FROM TO
#                                     64 KiB-aligned merged extents written
#                                     between marks FROM and TO
#   expected_allocated DOM DISKINDEX TAG
#                                     allocated extents at TAG (initial
#                                     allocation + every write, 64 KiB clusters)
#   ckpt_mount [ARGS...]              mount at a fresh mountpoint (sets CKT_MP,
#                                     CKT_PID); run dir = $CKT_RUN unless given
#   ckpt_umount [MP]                  `ckptfs umount`, checks the mount is gone
#   ctl FILE LINE                     O_RDWR, write LINE\n, read the response;
#                                     prints the errno name (OK, EINVAL, ...);
#                                     the response is in `ctl_response`
#   ctl_hex FILE HEX                  same, raw bytes given as hex
#   assert_* helpers, wait_for, fsop, seek_data_map, cmp_image, json_get
#   make_loop_fs SIZE DIR            a fresh ext4 (no reserved blocks) in an
#                                     image file, loop-mounted on DIR
#   evict_pages FILE...               drop files' pages from the page cache
#                                     (the next read asks the daemon again)
#   running_bitmaps DOM               "<disk> <bitmap> consistent|inconsistent"
#                                     as QEMU sees them (QMP)
#   qcow2_bitmaps FILE                "<bitmap> <flags>" from the qcow2 itself
#   catalog_checkpoints [STORE]       checkpoints with a backup row in the
#                                     catalog (default store: $CKT_WORK/store)
#   qemu_pid DOM                      pid of the domain's QEMU
# Cleanup (always, via an EXIT trap): loop mounts, FUSE mounts, leftover
# daemons, backup jobs, the test's domains (with checkpoint metadata), files.
# Knobs: CKT_FOREGROUND=1 (daemon in --foreground --debug, log kept on failure
# under CKT_LOG_DIR, default /tmp/ckptfs-test-logs), CKT_VERBOSE=1 (print
# every passing check). See README.md beside this file.

set -euo pipefail

CKT_SRC=${CKPTFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CKPTFS_BIN=${CKPTFS_BIN:-$CKT_SRC/build/ckptfs}
CKT_TEST=$(basename "$0" .sh)
CKT_SHORT=${CKT_TEST#test_}
CKT_SHORT=${CKT_SHORT//_/-}
CKT_ROOT=/var/lib/ckptfs-test
CKT_WORK=""          # per-test scratch dir (expected images, mountpoints)
CKT_RUN=""           # default --run-dir
CKT_MP=""            # last mountpoint
# shellcheck disable=SC2034  # used by the tests
CKT_PID=""           # last daemon pid
CKT_DOMAINS=()       # domains to destroy + undefine
CKT_MOUNTS=()        # FUSE mountpoints to unmount
CKT_PIDS=()          # daemon pids to reap
CKT_BG_PIDS=()       # background helpers started by the test
CKT_LOOP_MOUNTS=()   # loop-mounted filesystems (unmounted after the daemons)
CKT_ON_CLEANUP=()    # extra commands, run first, last registered first
CKT_MOUNT_SEQ=0
CKT_CHECKS=0
export LIBVIRT_DEFAULT_URI=qemu:///system

# ---------------------------------------------------------------- messages

say() { echo "[$CKT_TEST] $*" >&2; }

fail() {
  echo "[$CKT_TEST] FAIL: $*" >&2
  exit 1
}

skip() {
  echo "[$CKT_TEST] SKIP: $*" >&2
  exit 77
}

pass() {
  CKT_CHECKS=$((CKT_CHECKS + 1))
  [[ -n "${CKT_VERBOSE:-}" ]] && say "ok: $*"
  return 0
}

# ---------------------------------------------------------------- asserts

assert_eq() {  # GOT EXPECTED WHAT
  local got=$1 want=$2 what=${3:-value}
  if [[ "$got" != "$want" ]]; then
    fail "$what: expected [$want], got [$got]"
  fi
  pass "$what == [$want]"
}

assert_ne() {  # GOT UNEXPECTED WHAT
  if [[ "$1" == "$2" ]]; then
    fail "${3:-value}: must not be [$2]"
  fi
  pass "${3:-value} != [$2]"
}

assert_match() {  # GOT ERE WHAT
  if ! [[ "$1" =~ $2 ]]; then
    fail "${3:-value}: [$1] does not match /$2/"
  fi
  pass "${3:-value} =~ /$2/"
}

assert_contains() {  # HAYSTACK NEEDLE WHAT
  if [[ "$1" != *"$2"* ]]; then
    fail "${3:-text}: does not contain [$2]; got: [$1]"
  fi
  pass "${3:-text} contains [$2]"
}

assert_exists() {  # PATH...
  local p
  for p in "$@"; do
    [[ -e "$p" ]] || fail "$p: expected to exist (listing of $(dirname "$p"): $(ls -A "$(dirname "$p")" 2>&1 | tr '\n' ' '))"
    pass "$p exists"
  done
}

assert_not_exists() {  # PATH...
  local p
  for p in "$@"; do
    if [[ -e "$p" || -L "$p" ]]; then
      fail "$p: expected not to exist"
    fi
    pass "$p absent"
  done
}

assert_mode() {  # PATH OCTAL[|OCTAL...]
  local got
  got=$(stat -c '%a' "$1") || fail "$1: stat failed"
  [[ "|$2|" == *"|$got|"* ]] || fail "$1: mode expected $2, got $got"
  pass "$1 mode $got"
}

assert_symlink() {  # PATH TARGET
  [[ -L "$1" ]] || fail "$1: expected a symlink"
  local got
  got=$(readlink "$1")
  [[ "$got" == "$2" || "$(basename "$got")" == "$2" ]] \
    || fail "$1: expected to point to $2, points to $got"
  pass "$1 -> $2"
}

# Compare an image (through ckptfs) with an expected raw file; on mismatch
# name the first differing 64 KiB blocks and a byte of each side.
cmp_image() {  # IMAGE EXPECTED WHAT
  local img=$1 exp=$2 what=${3:-$1}
  local isz esz
  isz=$(stat -c %s "$img") || fail "$what: cannot stat $img"
  esz=$(stat -c %s "$exp")
  [[ "$isz" == "$esz" ]] || fail "$what: size of $img is $isz, expected $esz"
  local rc=0 err
  err=$(timeout 600 cmp "$img" "$exp" 2>&1 >/dev/null) || rc=$?
  if [[ $rc -eq 0 ]]; then
    pass "$what identical to $exp"
    return 0
  fi
  [[ $rc -eq 124 ]] && fail "$what: reading $img hung (600 s hang guard)"
  [[ $rc -eq 1 ]] || fail "$what: cmp could not read: $err"
  local diff
  diff=$(timeout 600 python3 - "$img" "$exp" <<'EOF' 2>&1
import sys
a, b = sys.argv[1], sys.argv[2]
B = 65536
out = []
with open(a, 'rb') as fa, open(b, 'rb') as fb:
    off = 0
    while len(out) < 8:
        try:
            x = fa.read(B)
        except OSError as e:
            out.append(f"read error at offset {off}: {e}")
            break
        y = fb.read(B)
        if not x and not y:
            break
        if x != y:
            i = next((k for k in range(min(len(x), len(y))) if x[k] != y[k]), min(len(x), len(y)))
            gx = f"0x{x[i]:02x}" if i < len(x) else "EOF"
            gy = f"0x{y[i]:02x}" if i < len(y) else "EOF"
            out.append(f"block at {off} (+{i}): got {gx}, expected {gy}")
        off += B
print("; ".join(out) if out else "cmp failed but no difference found")
EOF
  )
  fail "$what: $img differs from $exp: $diff"
}

# Compare a .changes file with an expected extent list ("off len" lines).
assert_changes() {  # CHANGES_FILE EXPECTED_TEXT WHAT
  local file=$1 want=$2 what=${3:-$1}
  local got
  got=$(timeout 120 cat "$file") || fail "$what: cannot read $file"
  got=$(printf '%s\n' "$got" | sed '/^[[:space:]]*$/d')
  want=$(printf '%s\n' "$want" | sed '/^[[:space:]]*$/d')
  if [[ "$got" != "$want" ]]; then
    fail "$what: $file differs from the expected extents
--- expected
$want
--- got
$got"
  fi
  pass "$what extents"
}

# Poll CMD until it succeeds; a hang guard, not a timing requirement.
wait_for() {  # DESCRIPTION SECONDS CMD...
  local desc=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      fail "gave up waiting ($secs s) for: $desc"
    fi
    sleep 0.2
  done
  pass "$desc"
}

# ---------------------------------------------------------------- json

# json_get FILE PATH: PATH is dotted (disks.0.name); strings print raw,
# null prints "null", other values print as JSON. Missing key: exit 3.
json_get() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"invalid JSON in {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(2)
for k in [k for k in sys.argv[2].split('.') if k]:
    try:
        d = d[int(k)] if isinstance(d, list) else d[k]
    except (KeyError, IndexError, ValueError, TypeError):
        print(f"{sys.argv[1]}: no key {sys.argv[2]!r}", file=sys.stderr)
        sys.exit(3)
print(d if isinstance(d, str) else json.dumps(d))
EOF
}

# Same on a JSON text given as an argument.
json_str_get() {  # TEXT PATH
  local f
  f=$(mktemp "$CKT_WORK/json.XXXXXX")
  printf '%s' "$1" >"$f"
  json_get "$f" "$2"
}

assert_json_valid() {  # FILE
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null \
    || fail "$1: not valid JSON: $(head -c 400 "$1" 2>&1)"
  pass "$1 valid JSON"
}

assert_json() {  # FILE PATH EXPECTED
  local got
  got=$(json_get "$1" "$2") || fail "$1: cannot get $2: $(head -c 600 "$1")"
  [[ "$got" == "$3" ]] || fail "$1: $2 expected [$3], got [$got]"
  pass "$1 $2 == [$3]"
}

# ---------------------------------------------------------------- sizes

to_bytes() {  # 64k / 1M / 2G / 2T / 4096 -> bytes
  local v=$1 n unit
  [[ "$v" =~ ^([0-9]+)([kKmMgGtT]?)$ ]] || fail "bad size '$v'"
  n=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2]}
  case $unit in
    k | K) echo $((n * 1024)) ;;
    m | M) echo $((n * 1024 * 1024)) ;;
    g | G) echo $((n * 1024 * 1024 * 1024)) ;;
    t | T) echo $((n * 1024 * 1024 * 1024 * 1024)) ;;
    *) echo "$n" ;;
  esac
}

disk_target() {  # INDEX -> vda, vdb, ...
  local letters=abcdefghijklmnop
  echo "vd${letters:$1:1}"
}

# ---------------------------------------------------------------- domains

dom_name() {  # [SUFFIX]
  echo "ckt-${CKT_SHORT}-$$${1:+-$1}"
}

dom_dir() { echo "$CKT_ROOT/$1"; }     # qcow2 disks
dom_work() { echo "$CKT_WORK/dom-$1"; } # expected images, write logs

domain_xml() {  # NAME TYPE NDISKS
  local name=$1 type=$2 n=$3 i t
  cat <<EOF
<domain type='$type'>
  <name>$name</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
EOF
  for ((i = 0; i < n; i++)); do
    t=$(disk_target "$i")
    cat <<EOF
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$(dom_dir "$name")/$t.qcow2'/>
      <target dev='$t' bus='virtio'/>
    </disk>
EOF
  done
  cat <<EOF
  </devices>
</domain>
EOF
}

# Allocated 64 KiB clusters of a qcow2 (before the domain starts), as
# "off len" lines, for disks made from an image.
qcow2_allocated() {  # FILE
  qemu-img map --output=json "$1" | python3 -c '
import json, sys
ext = [(e["start"], e["length"]) for e in json.load(sys.stdin) if e.get("data")]
out = []
for o, l in ext:
    if out and out[-1][0] + out[-1][1] == o:
        out[-1][1] += l
    else:
        out.append([o, l])
for o, l in out:
    print(o, l)'
}

make_domain() {  # [--no-start] NAME DISKSPEC...
  local start=1
  if [[ "${1:-}" == "--no-start" ]]; then
    start=0
    shift
  fi
  local name=$1
  shift
  (($# >= 1)) || fail "make_domain $name: no disks given"
  local dd dw i=0 spec t
  dd=$(dom_dir "$name")
  dw=$(dom_work "$name")
  CKT_DOMAINS+=("$name")
  rm -rf "$dd" "$dw"
  # QEMU (libvirt-qemu) only needs to traverse these; libvirt's DAC driver
  # chowns the disk files themselves.
  mkdir -p "$CKT_ROOT" "$dd"
  chmod 0755 "$CKT_ROOT" "$dd"
  mkdir -p "$dw"
  for spec in "$@"; do
    t=$(disk_target "$i")
    case $spec in
      raw:*)
        local src=${spec#raw:}
        [[ -f "$src" ]] || fail "make_domain $name: no raw image $src"
        qemu-img convert -q -f raw -O qcow2 "$src" "$dd/$t.qcow2" \
          || fail "make_domain $name: qemu-img convert $src failed"
        cp --sparse=always "$src" "$dw/$t.expected"
        qcow2_allocated "$dd/$t.qcow2" >"$dw/$t.initial"
        ;;
      *)
        local bytes
        bytes=$(to_bytes "$spec")
        qemu-img create -q -f qcow2 "$dd/$t.qcow2" "$bytes" \
          || fail "make_domain $name: qemu-img create failed"
        truncate -s "$bytes" "$dw/$t.expected"
        : >"$dw/$t.initial"
        ;;
    esac
    : >"$dw/$t.writes"
    i=$((i + 1))
  done
  echo "$i" >"$dw/ndisks"
  local type=qemu
  [[ -e /dev/kvm ]] && type=kvm
  domain_xml "$name" "$type" "$i" >"$dw/domain.xml"
  virsh -q define "$dw/domain.xml" >/dev/null || fail "virsh define $name failed"
  ((start)) || return 0
  if ! virsh -q start "$name" >/dev/null 2>"$dw/start.err"; then
    if [[ $type == kvm ]]; then
      say "starting $name with KVM failed ($(cat "$dw/start.err")); retrying with TCG"
      virsh -q undefine "$name" >/dev/null
      domain_xml "$name" qemu "$i" >"$dw/domain.xml"
      virsh -q define "$dw/domain.xml" >/dev/null || fail "virsh define $name (TCG) failed"
      virsh -q start "$name" >/dev/null || fail "virsh start $name failed"
    else
      fail "virsh start $name failed: $(cat "$dw/start.err")"
    fi
  fi
  local st
  st=$(virsh domstate "$name" 2>&1 | sed -n 1p)
  [[ "$st" == running ]] || fail "domain $name is '$st' after start"
  say "domain $name running ($type, disks: $*)"
}

dom_ndisks() { cat "$(dom_work "$1")/ndisks"; }

# Guest write through the virtio device, plus the same bytes into the
# expected raw file (written with python, independent of QEMU).
guest_write() {  # DOM DISKINDEX PATTERN OFFSET LENGTH
  local dom=$1 idx=$2 pat=$3 off len t dw exp log before out
  off=$(to_bytes "$4")
  len=$(to_bytes "$5")
  t=$(disk_target "$idx")
  dw=$(dom_work "$dom")
  exp="$dw/$t.expected"
  [[ -f "$exp" ]] || fail "guest_write: $dom has no disk $t"
  (( off + len <= $(stat -c %s "$exp") )) \
    || fail "guest_write: $dom $t: $off+$len is past the end of the disk"
  log=/var/log/libvirt/qemu/$dom.log
  before=$(stat -c %s "$log" 2>/dev/null || echo 0)
  local cmd="qemu-io -d /machine/peripheral/virtio-disk$idx/virtio-backend \"write -P $pat $off $len\""
  out=$(virsh qemu-monitor-command --hmp "$dom" "$cmd" 2>&1) \
    || fail "guest_write $dom $t: virsh qemu-monitor-command failed: $out"
  if [[ -n "${out//[[:space:]]/}" ]]; then
    fail "guest_write $dom $t ($cmd): HMP says: $out"
  fi
  # qemu-io prints its result on QEMU's stdout, i.e. into the domain log.
  local want="wrote $len/$len bytes at offset $off" deadline=$((SECONDS + 30)) tail_out
  while :; do
    tail_out=$(tail -c +"$((before + 1))" "$log" 2>/dev/null || true)
    if [[ "$tail_out" == *"write failed"* ]]; then
      fail "guest_write $dom $t: qemu-io: $(grep 'write failed' <<<"$tail_out" | sed -n 1p)"
    fi
    [[ "$tail_out" == *"$want"* ]] && break
    ((SECONDS < deadline)) || fail "guest_write $dom $t: no '$want' in $log after 30 s"
    sleep 0.1
  done
  python3 - "$exp" "$off" "$len" "$pat" <<'EOF'
import sys
path, off, ln, pat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
with open(path, 'r+b') as f:
    f.seek(off)
    chunk = bytes([pat]) * min(ln, 1 << 20)
    left = ln
    while left:
        n = min(left, len(chunk))
        f.write(chunk[:n])
        left -= n
EOF
  echo "$off $len" >>"$dw/$t.writes"
}

# Freeze the expected state of every disk under TAG.
mark() {  # DOM TAG
  local dom=$1 tag=$2 dw n i t
  dw=$(dom_work "$dom")
  n=$(dom_ndisks "$dom")
  for ((i = 0; i < n; i++)); do
    t=$(disk_target "$i")
    cp --sparse=always "$dw/$t.expected" "$dw/$t.$tag.raw"
    wc -l <"$dw/$t.writes" | tr -d ' ' >"$dw/$t.$tag.mark"
  done
}

expected_file() {  # DOM DISKINDEX [TAG]
  local dw t
  dw=$(dom_work "$1")
  t=$(disk_target "$2")
  if [[ -n "${3:-}" ]]; then
    [[ -f "$dw/$t.$3.raw" ]] || fail "expected_file: no mark '$3' for $1"
    echo "$dw/$t.$3.raw"
  else
    echo "$dw/$t.expected"
  fi
}

# Round extents to 64 KiB clusters, sort, merge; stdin/out "off len" lines.
align_merge() {
  python3 -c '
import sys
G = 65536
ext = []
for line in sys.stdin:
    if line.strip():
        o, l = map(int, line.split())
        if l:
            ext.append((o // G * G, -(-(o + l) // G) * G))
ext.sort()
out = []
for s, e in ext:
    if out and s <= out[-1][1]:
        out[-1][1] = max(out[-1][1], e)
    else:
        out.append([s, e])
for s, e in out:
    print(s, e - s)'
}

_writes_between() {  # DOM DISKINDEX FROMTAG|"" TOTAG
  local dw t from=0 to
  dw=$(dom_work "$1")
  t=$(disk_target "$2")
  [[ -n "$3" ]] && from=$(cat "$dw/$t.$3.mark")
  to=$(cat "$dw/$t.$4.mark")
  ((to > from)) || return 0
  sed -n "$((from + 1)),${to}p" "$dw/$t.writes"
}

expected_changes() {  # DOM DISKINDEX FROMTAG TOTAG
  _writes_between "$1" "$2" "$3" "$4" | align_merge
}

expected_allocated() {  # DOM DISKINDEX TAG
  local dw t
  dw=$(dom_work "$1")
  t=$(disk_target "$2")
  { cat "$dw/$t.initial"; _writes_between "$1" "$2" "" "$3"; } | align_merge
}

sum_extents() {  # stdin "off len" -> total length
  awk '{s += $2} END {printf "%d\n", s}'
}

checkpoint_names() {  # DOM -> sorted names, one per line
  virsh checkpoint-list "$1" --name 2>/dev/null | sed '/^$/d' | sort
}

checkpoint_epoch() {  # DOM CHECKPOINT -> creationTime (unix seconds)
  virsh checkpoint-dumpxml "$1" "$2" --no-domain \
    | sed -n 's:.*<creationTime>\([0-9]*\)</creationTime>.*:\1:p'
}

job_type() {  # DOM -> "None", "Unbounded", ...
  virsh domjobinfo "$1" 2>/dev/null | sed -n 's/^Job type: *//p' | tr -d ' '
}

has_backup_job() {  # DOM
  virsh backup-dumpxml "$1" >/dev/null 2>&1
}

# No backup job left on DOM (polls briefly: libvirt ends jobs asynchronously).
assert_no_job() {  # DOM
  local dom=$1 deadline=$((SECONDS + 30))
  while has_backup_job "$dom" || { [[ "$(job_type "$dom")" != None && -n "$(job_type "$dom")" ]]; }; do
    if ((SECONDS >= deadline)); then
      fail "$dom still has a job 30 s later: domjobinfo: $(virsh domjobinfo "$dom" 2>&1 | sed -n 1,3p | tr '\n' ' '); backup-dumpxml: $(virsh backup-dumpxml "$dom" 2>&1 | sed -n 1,3p | tr '\n' ' ')"
    fi
    sleep 0.2
  done
  pass "no job on $dom"
}

assert_has_job() {  # DOM
  has_backup_job "$1" || fail "$1: expected a backup job, virsh backup-dumpxml: $(virsh backup-dumpxml "$1" 2>&1)"
  pass "$1 has a backup job"
}

# ---------------------------------------------------------------- faults

evict_pages() {  # FILE...
  python3 - "$@" <<'EOF'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
EOF
}

# Persistent bitmaps of a running domain's disks (not of backup scratch
# files), one line each: "<disk> <bitmap> consistent|inconsistent". QEMU
# loads a bitmap that is still flagged in-use in the qcow2 (the image was not
# closed: QEMU was killed) as inconsistent.
running_bitmaps() {  # DOM
  virsh qemu-monitor-command "$1" \
    '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' \
    | python3 -c '
import json, os, sys
for n in json.load(sys.stdin)["return"]:
    if n.get("drv") != "qcow2" or not n.get("file", "").endswith(".qcow2"):
        continue
    disk = os.path.basename(n["file"])[:-len(".qcow2")]
    for b in n.get("dirty-bitmaps", []):
        if not b.get("name"):
            continue  # anonymous: the bitmap of a running job
        state = "inconsistent" if b.get("inconsistent") else "consistent"
        print(disk, b["name"], state)' | sort -u
}

# Persistent bitmaps stored in a qcow2 file: "<bitmap> <flag,flag>" (flags
# in-use, auto). -U: readable while QEMU has the image open.
qcow2_bitmaps() {  # FILE
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
data = json.load(sys.stdin).get("format-specific", {}).get("data", {})
for b in data.get("bitmaps", []):
    print(b["name"], ",".join(b["flags"]))'
}

catalog_checkpoints() {  # [STORE] -> "<domain> <checkpoint>" lines
  python3 - "${1:-$CKT_WORK/store}/catalog.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
for name, cp in db.execute("SELECT domain_name, checkpoint FROM backups"):
    print(name, cp)
EOF
}

qemu_pid() { cat "/run/libvirt/qemu/$1.pid"; }

# ---------------------------------------------------------------- mounts

# A fresh ext4 of SIZE in DIR.img, loop-mounted on DIR; -m 0, so "full"
# means full for root too. Unmounted by the cleanup after the daemons.
make_loop_fs() {  # SIZE DIR
  local size=$1 dir=$2
  losetup -f >/dev/null 2>&1 || skip "no free loop device here"
  truncate -s "$size" "$dir.img"
  mkfs.ext4 -q -F -m 0 "$dir.img" || fail "mkfs.ext4 $dir.img failed"
  mkdir -p "$dir"
  CKT_LOOP_MOUNTS+=("$dir")
  mount -o loop "$dir.img" "$dir" || fail "mount -o loop $dir.img $dir failed"
  pass "ext4 of $size loop-mounted on $dir"
}

is_mounted() {  # MP
  # The kernel writes blanks, tabs, newlines and backslashes as \ooo.
  local esc=${1//\\/\\134}
  esc=${esc// /\\040}
  esc=${esc//$'\t'/\\011}
  esc=${esc//$'\n'/\\012}
  CKT_ESC=$esc awk '$2 == ENVIRON["CKT_ESC"] {found = 1} END {exit !found}' /proc/self/mounts
}

daemon_pid_of() {  # MP -> pid from status.json
  timeout 30 python3 -c '
import json, sys
print(json.load(open(sys.argv[1] + "/control/status.json"))["pid"])' "$1"
}

proc_exe() {  # PID -> executable path (without a " (deleted)" suffix)
  local e
  e=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
  echo "${e% (deleted)}"
}

pid_alive() {  # PID
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]
}

# Mount at a new mountpoint. Extra args go to `ckptfs mount`; --run-dir
# defaults to $CKT_RUN. Sets CKT_MP and CKT_PID. CKT_FOREGROUND=1 runs the
# daemon with --foreground --debug, logging to $CKT_WORK/daemon-N.log.
ckpt_mount() {
  CKT_MOUNT_SEQ=$((CKT_MOUNT_SEQ + 1))
  local mp="$CKT_WORK/mnt$CKT_MOUNT_SEQ" args=("$@") have_run=0 a
  local have_store=0
  for a in "${args[@]}"; do
    [[ "$a" == --run-dir* ]] && have_run=1
    [[ "$a" == --store* ]] && have_store=1
  done
  ((have_run)) || args+=(--run-dir "$CKT_RUN")
  # Each test has its own store, so backups never leak between tests.
  ((have_store)) || args+=(--store "$CKT_WORK/store")
  # CKT_STORE_FORMAT=1 runs a test against a format 1 store (dense
  # manifests: the stores ckptfs made before format 2), which stay readable
  # and writable; new stores are format 2.
  if [[ -n "${CKT_STORE_FORMAT:-}" && ! -e "$CKT_WORK/store/config.json" ]] && ((!have_store)); then
    install -d -m 0700 "$CKT_WORK/store"
    (umask 077 && printf '{"chunk_size": 262144, "compression": "auto", "format": %s, "zstd_level": 3}\n' \
      "$CKT_STORE_FORMAT" >"$CKT_WORK/store/config.json")
  fi
  mkdir -p "$mp"
  CKT_MOUNTS+=("$mp")
  say "mount: $CKPTFS_BIN mount $mp ${args[*]}"
  if [[ -n "${CKT_FOREGROUND:-}" ]]; then
    local logf="$CKT_WORK/daemon-$CKT_MOUNT_SEQ.log"
    "$CKPTFS_BIN" mount "$mp" "${args[@]}" --foreground --debug >"$logf" 2>&1 &
    CKT_PIDS+=("$!")
    wait_for "mount of $mp (log $logf)" 120 is_mounted "$mp"
  else
    local rc=0
    timeout 180 "$CKPTFS_BIN" mount "$mp" "${args[@]}" || rc=$?
    ((rc != 124)) || fail "ckptfs mount $mp did not return within 180 s"
    ((rc == 0)) || fail "ckptfs mount $mp exited with status $rc"
    is_mounted "$mp" || fail "ckptfs mount $mp returned 0 but $mp is not mounted"
  fi
  local pid
  pid=$(daemon_pid_of "$mp") || fail "$mp/control/status.json: no pid"
  CKT_PIDS+=("$pid")
  CKT_MP=$mp
  # shellcheck disable=SC2034  # used by the tests
  CKT_PID=$pid
  pass "mounted $mp (daemon pid $pid)"
}

ckpt_umount() {  # [MP]
  local mp=${1:-$CKT_MP} rc=0
  timeout 180 "$CKPTFS_BIN" umount "$mp" || rc=$?
  ((rc != 124)) || fail "ckptfs umount $mp did not return within 180 s"
  ((rc == 0)) || fail "ckptfs umount $mp exited with status $rc"
  ! is_mounted "$mp" || fail "ckptfs umount $mp returned 0 but $mp is still mounted"
  pass "unmounted $mp"
}

# ---------------------------------------------------------------- control

_ctl() {  # MODE FILE DATA
  local mode=$1 file=$2 data=$3
  [[ "$file" == */* ]] || file="$CKT_MP/control/$file"
  local rc=0 out resp
  resp=$(ctl_response_file)
  out=$(timeout 600 python3 - "$file" "$mode" "$data" "$resp" <<'EOF'
import errno, json, os, sys
path, mode, data, resp_path = sys.argv[1:5]
if mode == "hex":
    payload = bytes.fromhex(data)
else:
    payload = os.fsencode(data)
    if not payload.endswith(b"\n"):
        payload += b"\n"
name = lambda e: errno.errorcode.get(e.errno, str(e.errno))
try:
    fd = os.open(path, os.O_RDWR)
except OSError as e:
    open(resp_path, "w").close()
    print("OPEN_" + name(e))
    sys.exit(0)
result = "OK"
try:
    n = os.write(fd, payload)
    if n != len(payload):
        result = f"SHORT_WRITE_{n}"
except OSError as e:
    result = name(e)
resp = b""
try:
    # To the end: the reply is the JSON object and nothing after it, whether
    # the write succeeded (offset moved on) or failed (offset unchanged).
    for _ in range(64):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        resp += chunk
except OSError as e:
    resp += f"<read failed: {name(e)}>".encode()
os.close(fd)
try:
    if not isinstance(json.loads(resp), dict):
        raise ValueError("not an object")
except ValueError:
    result = "BAD_REPLY_" + result

with open(resp_path, "wb") as f:
    f.write(resp)
print(result)
EOF
  ) || rc=$?
  ((rc != 124)) || fail "control write to $file hung (600 s hang guard): $data"
  ((rc == 0)) || fail "control write helper failed ($rc) for $file"
  say "ctl $(basename "$file") '$data' -> $out $(head -c 1000 "$resp")"
  echo "$out"
}

# Where the last response is kept; set CKT_CTL_RESP for concurrent requests.
ctl_response_file() { echo "${CKT_CTL_RESP:-$CKT_WORK/ctl.response}"; }

ctl() { _ctl text "$1" "$2"; }     # FILE LINE -> errno name
ctl_hex() { _ctl hex "$1" "$2"; }  # FILE HEX  -> errno name
ctl_response() { cat "$(ctl_response_file)"; }
ctl_field() {  # KEY of the last response
  json_get "$(ctl_response_file)" "$1"
}

# ctl that must succeed with state "succeeded"; prints the job id.
ctl_ok() {  # FILE LINE
  local err state
  err=$(ctl "$1" "$2")
  [[ "$err" == OK ]] || fail "control $1 '$2': expected success, got $err: $(ctl_response)"
  state=$(ctl_field state) || fail "control $1 '$2': response is not JSON: $(ctl_response)"
  [[ "$state" == succeeded ]] || fail "control $1 '$2': state $state: $(ctl_response)"
  ctl_field id
}

# ctl that must be accepted (a backup job goes on running); prints the id.
ctl_accepted() {  # FILE LINE
  local err
  err=$(ctl "$1" "$2")
  [[ "$err" == OK ]] || fail "control $1 '$2': expected acceptance, got $err: $(ctl_response)"
  ctl_field id
}

# Waits for a job to end; fails unless it ended in state EXPECTED.
wait_job() {  # ID EXPECTED [SECONDS]
  local f state="" i
  f=$(job_file "$1")
  for ((i = 0; i < ${3:-300} * 5; i++)); do
    state=$(json_get "$f" state 2>/dev/null || true)
    [[ "$state" == queued || "$state" == running || -z "$state" ]] || break
    sleep 0.2
  done
  [[ "$state" == "$2" ]] || fail "job $1 ended as '$state', expected $2: $(cat "$f" 2>&1)"
  pass "job $1 $2"
}

job_file() {  # ID [MP]
  echo "${2:-$CKT_MP}/control/jobs/$1.json"
}

# Filesystem operation, prints OK or the errno name.
fsop() {  # OP PATH [ARG]
  timeout 60 python3 - "$@" <<'EOF'
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
try:
    if op == "write":      # open for writing an existing file
        os.close(os.open(path, os.O_WRONLY))
    elif op == "rdwr":
        os.close(os.open(path, os.O_RDWR))
    elif op == "create":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "rmdir":
        os.rmdir(path)
    elif op == "unlink":
        os.unlink(path)
    elif op == "truncate":
        os.truncate(path, 0)
    elif op == "rename":
        os.rename(path, arg)
    elif op == "symlink":
        os.symlink(arg, path)
    elif op == "link":
        os.link(path, arg)
    elif op == "chmod":
        os.chmod(path, 0o777)
    elif op == "utime":
        os.utime(path, (0, 0))
    elif op == "setxattr":
        os.setxattr(path, "user.ckptfs-test", b"x")
    elif op == "read":
        with open(path, "rb") as f:
            f.read(4096)
    else:
        sys.exit(f"fsop: unknown op {op}")
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}

assert_fsop() {  # EXPECTED_ERRNO OP PATH [ARG]
  local want=$1 got
  shift
  got=$(fsop "$@") || fail "fsop $* hung or failed"
  [[ "$got" == "$want" ]] || fail "$1 $2${3:+ $3}: expected $want, got $got"
  pass "$1 $2 -> $want"
}

# Data extents of a file by SEEK_DATA / SEEK_HOLE, "off len" lines, merged.
seek_data_map() {  # FILE
  timeout 300 python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
off = 0
out = []
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno == 6:  # ENXIO: no data after off
            break
        raise
    h = os.lseek(fd, d, os.SEEK_HOLE)
    if out and out[-1][0] + out[-1][1] == d:
        out[-1][1] += h - d
    else:
        out.append([d, h - d])
    off = h
for o, l in out:
    print(o, l)
EOF
}

# ---------------------------------------------------------------- cleanup

on_cleanup() { CKT_ON_CLEANUP+=("$*"); }

_ckt_kill_daemon() {  # PID
  local pid=$1 i
  pid_alive "$pid" || return 0
  say "cleanup: daemon $pid still running, SIGTERM"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  say "cleanup: daemon $pid ignores SIGTERM, SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

ckt_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0 && rc != 77)); then
    say "---- diagnostics (exit $rc)"
    local mp dom
    for mp in "${CKT_MOUNTS[@]}"; do
      is_mounted "$mp" && timeout 10 cat "$mp/control/status.json" >&2 2>/dev/null && echo >&2
    done
    for dom in "${CKT_DOMAINS[@]}"; do
      say "$dom: state $(virsh domstate "$dom" 2>&1 | sed -n 1p); job $(job_type "$dom"); checkpoints: $(checkpoint_names "$dom" | tr '\n' ' ')"
    done
    local f keep="${CKT_LOG_DIR:-/tmp/ckptfs-test-logs}/$CKT_TEST-$$"
    for f in "$CKT_WORK"/daemon-*.log; do
      [[ -f "$f" ]] || continue
      mkdir -p "$keep" && cp "$f" "$keep/"
      say "daemon log kept as $keep/$(basename "$f"); its errors and last lines:"
      grep -iE 'error|fail|warn|abort' "$f" | tail -20 >&2
      tail -20 "$f" >&2
    done
  fi
  local i p
  for ((i = ${#CKT_ON_CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CKT_ON_CLEANUP[$i]}" >/dev/null 2>&1
  done
  for p in "${CKT_BG_PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  local mp
  for mp in "${CKT_MOUNTS[@]}"; do
    if is_mounted "$mp"; then
      timeout 60 "$CKPTFS_BIN" umount "$mp" >/dev/null 2>&1 \
        || timeout 30 fusermount3 -u "$mp" 2>/dev/null \
        || umount -l "$mp" 2>/dev/null
    fi
  done
  for p in "${CKT_PIDS[@]}"; do
    _ckt_kill_daemon "$p"
  done
  # After the daemons: a store on a loop filesystem keeps it busy until then.
  for mp in "${CKT_LOOP_MOUNTS[@]}"; do
    is_mounted "$mp" && { umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null; }
  done
  # Daemons that we started but whose pid we never learned (mount failed
  # midway): match our unique work path and check it is the ckptfs binary.
  if [[ -n "$CKT_WORK" ]]; then
    local bin
    bin=$(readlink -f "$CKPTFS_BIN" 2>/dev/null)
    for p in $(pgrep -f -- "$CKT_WORK/" 2>/dev/null); do
      [[ "$(proc_exe "$p")" == "$bin" ]] && _ckt_kill_daemon "$p"
    done
  fi
  for mp in "${CKT_MOUNTS[@]}"; do
    is_mounted "$mp" && umount -l "$mp" 2>/dev/null
  done
  local dom
  for dom in "${CKT_DOMAINS[@]}"; do
    if virsh dominfo "$dom" >/dev/null 2>&1; then
      virsh domjobabort "$dom" >/dev/null 2>&1
      virsh destroy "$dom" >/dev/null 2>&1
      virsh undefine "$dom" --checkpoints-metadata >/dev/null 2>&1 \
        || virsh undefine "$dom" --checkpoints-metadata --snapshots-metadata --nvram >/dev/null 2>&1 \
        || say "cleanup: could not undefine $dom"
    fi
    rm -rf "$(dom_dir "$dom")"
  done
  if [[ -n "$CKT_WORK" && -d "$CKT_WORK" ]]; then
    if grep -q " $CKT_WORK/" /proc/self/mounts; then
      say "cleanup: something is still mounted under $CKT_WORK, leaving it"
    else
      rm -rf --one-file-system "$CKT_WORK"
    fi
  fi
  case $rc in
    0) say "PASS ($CKT_CHECKS checks)" ;;
    77) say "SKIPPED" ;;
    *) say "FAILED (exit $rc) after $CKT_CHECKS checks" ;;
  esac
  exit "$rc"
}

# ---------------------------------------------------------------- start

# Leftovers of earlier runs whose test process is gone (a test killed before
# its trap ran): mounts and dirs under $CKT_ROOT, domains named ckt-<test>-<pid>.
ckt_reap_stale() {
  local mp dom pid d
  # shellcheck disable=SC2013  # the kernel prints blanks as \040
  for mp in $(awk -v r="$CKT_ROOT/work-" 'index($2, r) == 1 {print $2}' /proc/self/mounts); do
    mp=$(printf '%b' "$mp")   # \040 is a blank
    pid=$(sed -n 's:.*/work-[a-z-]*-\([0-9]*\)\..*:\1:p' <<<"$mp")
    if [[ -z "$pid" ]] || pid_alive "$pid"; then continue; fi
    say "reaping stale mount $mp"
    timeout 30 fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
  done
  for dom in $(virsh list --all --name 2>/dev/null); do
    [[ "$dom" =~ ^ckt-[a-z-]+-([0-9]+)(-[a-z0-9]+)?$ ]] || continue
    pid=${BASH_REMATCH[1]}
    ! pid_alive "$pid" || continue
    say "reaping stale domain $dom"
    virsh domjobabort "$dom" >/dev/null 2>&1 || true
    virsh destroy "$dom" >/dev/null 2>&1 || true
    virsh undefine "$dom" --checkpoints-metadata >/dev/null 2>&1 || true
    rm -rf "${CKT_ROOT:?}/$dom"
  done
  for d in "$CKT_ROOT"/work-*; do
    [[ -d "$d" ]] || continue
    pid=$(sed -n 's:.*/work-[a-z-]*-\([0-9]*\)\..*:\1:p' <<<"$d")
    if [[ -z "$pid" ]] || pid_alive "$pid"; then continue; fi
    grep -q " $d/" /proc/self/mounts && continue
    rm -rf --one-file-system "$d"
  done
}

ckt_init() {
  [[ $(id -u) -eq 0 ]] || skip "needs root (libvirt qemu:///system, FUSE mounts)"
  # shellcheck source=../../scripts/libvirtd-up.sh
  source "$CKT_SRC/scripts/libvirtd-up.sh"
  ckpt_fuse_up || skip "/dev/fuse is not usable here"
  command -v virsh >/dev/null || skip "virsh not installed (run scripts/setup.sh)"
  ckpt_libvirtd_up || skip "libvirtd cannot be started"
  [[ -x "$CKPTFS_BIN" ]] || fail "daemon binary not found or not executable: $CKPTFS_BIN (CKPTFS_BIN)"
  mkdir -p "$CKT_ROOT"
  chmod 0755 "$CKT_ROOT"
  ckt_reap_stale
  CKT_WORK=$(mktemp -d "$CKT_ROOT/work-$CKT_SHORT-$$.XXXX")
  # QEMU must reach the run dir: every ancestor searchable by libvirt-qemu.
  chmod 0755 "$CKT_WORK"
  CKT_RUN="$CKT_WORK/run"
  mkdir -m 0755 "$CKT_RUN"
  trap ckt_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  say "work dir $CKT_WORK, daemon $CKPTFS_BIN"
}

ckt_init
