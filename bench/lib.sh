# shellcheck shell=bash
# bench/lib.sh -- helpers shared by the bench/ scripts. Source it, do not run it.
#
# The caller sets before sourcing (or before calling the functions that use them):
#   BENCH   short name used in error messages ("backup")
#   PY      python3
# and, for the domain helpers, DOM, DISK (qcow2 path), DOM_XML (where the XML is
# saved), DOM_MEM_MIB. Functions that touch the daemon use BIN and MP.
# Helpers set STEP (for a "FAILED during: STEP" message in the caller's trap).

STEP=${STEP:-start}

say() { STEP="$*"; echo "==> $*" >&2; }
note() { echo "    $*" >&2; }
die() { echo "${BENCH:-bench}: $*" >&2; exit 1; }
is_mounted() { awk -v mp="$1" '$2 == mp {f = 1} END {exit !f}' /proc/self/mounts; }
bdi_of() { mountpoint -d "$1" 2>/dev/null || echo "?"; }
read_ahead_of() {  # MOUNTPOINT -> read_ahead_kb of its bdi
  local b; b=$(bdi_of "$1")
  cat "/sys/class/bdi/$b/read_ahead_kb" 2>/dev/null || echo "?"
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
vm_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }  # PID VmHWM|VmRSS
cpu_s() {  # PID -> user+system CPU seconds so far (all threads)
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
load_line() {
  echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# libvirtd must answer on qemu:///system; start it the way the repo does.
ensure_libvirtd() {  # REPO
  if ! timeout 10 virsh version >/dev/null 2>&1; then
    if [[ -f $1/scripts/libvirtd-up.sh ]]; then
      bash "$1/scripts/libvirtd-up.sh" || die "libvirtd does not answer"
    else
      pgrep -x virtlogd >/dev/null || virtlogd -d
      pgrep -x libvirtd >/dev/null || libvirtd -d
      sleep 3
      timeout 10 virsh version >/dev/null 2>&1 || die "libvirtd does not answer"
    fi
  fi
}

# --- ckptfs control files -----------------------------------------------------------

# ctl_request FILE LINE: open FILE O_RDWR, write LINE, read the JSON reply and print
# it. A failed write prints {"errno": N, "error": "..."} and returns 1.
ctl_request() {
  "$PY" - "$1" "$2" <<'EOF'
import json, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.write(fd, (sys.argv[2] + "\n").encode())
except OSError as e:
    try:
        reply = os.read(fd, 65536).decode().strip()
    except OSError:
        reply = ""
    print(json.dumps({"errno": e.errno, "error": os.strerror(e.errno), "reply": reply}))
    sys.exit(1)
print(os.read(fd, 65536).decode().strip())
EOF
}

json_get() {  # FILE EXPR: python expression on the parsed JSON file j, e.g. j["pid"]
  "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# --- test domains -------------------------------------------------------------------

# domain_xml TYPE: a diskful domain with no OS ($DOM, $DISK, $DOM_MEM_MIB).
domain_xml() {
  cat <<EOF
<domain type='$1'>
  <name>$DOM</name>
  <memory unit='MiB'>${DOM_MEM_MIB:-256}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$DISK'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
}

# define_and_start_domain: KVM when /dev/kvm exists and works, else TCG. Never
# host-passthrough (it aborts on this machine kind). Saves the XML to $DOM_XML.
define_and_start_domain() {
  local type=qemu
  [[ -e /dev/kvm ]] && type=kvm
  domain_xml "$type" >"$DOM_XML"
  virsh -q define "$DOM_XML" >/dev/null
  if ! virsh -q start "$DOM" >/dev/null 2>&1; then
    [[ $type == kvm ]] || die "cannot start $DOM"
    say "KVM start failed, using TCG"
    virsh -q undefine "$DOM" >/dev/null
    domain_xml qemu >"$DOM_XML"
    virsh -q define "$DOM_XML" >/dev/null
    virsh -q start "$DOM" >/dev/null
  fi
}

domain_type() { virsh dumpxml "$DOM" | sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p"; }

qemu_pid_of() {  # DOMAIN -> pid of its QEMU (libvirt's pid file)
  cat "/run/libvirt/qemu/$1.pid" 2>/dev/null || pgrep -f "guest=$1," | head -1
}

# guest_write OFFSET LENGTH PATTERN: a write through the guest's virtio device
# (dirty bitmaps and copy-before-write see it). qemu-io's own output goes to
# QEMU's stdout, not to the monitor: any text in the reply is an error.
guest_write() {
  local out
  out=$(virsh -q qemu-monitor-command --hmp "$DOM" \
    "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P $3 $1 $2\"")
  [[ -z ${out//[[:space:]]/} ]] || die "guest write $1 $2 failed: $out"
}
