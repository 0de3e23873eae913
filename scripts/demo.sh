#!/usr/bin/env bash
# ckptfs demo (run as root): set up the host, build, create the domain
# "ckptfs-demo" (vda: ext4 with a few files, vdb: blank 256M), mount ckptfs at
# /mnt/ckptfs, take a live checkpoint and show the tree.
# Idempotent: re-running replaces the previous demo domain and mount.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

DOM=ckptfs-demo
MP=/mnt/ckptfs
DIR=/var/lib/ckptfs-demo
RUN=$DIR/run
BIN=${CKPTFS_BIN:-$REPO/build/ckptfs}   # set CKPTFS_BIN to skip the build
export LIBVIRT_DEFAULT_URI=qemu:///system

step() { echo; echo "==> $*"; }
die() { echo "demo: $*" >&2; exit 1; }

is_mounted() { awk -v mp="$1" '$2 == mp {f = 1} END {exit !f}' /proc/self/mounts; }

remove_previous() {
  if is_mounted "$MP"; then
    step "unmounting the previous demo mount at $MP"
    timeout 120 "$BIN" umount "$MP" || timeout 30 fusermount3 -u "$MP" || umount -l "$MP"
  fi
  if virsh dominfo "$DOM" >/dev/null 2>&1; then
    step "removing the previous demo domain $DOM"
    virsh domjobabort "$DOM" >/dev/null 2>&1 || true
    virsh destroy "$DOM" >/dev/null 2>&1 || true
    virsh undefine "$DOM" --checkpoints-metadata >/dev/null
  fi
  rm -rf "$DIR"
}

make_disks() {
  local files=$DIR/files
  mkdir -p "$files/etc" "$files/data"
  echo "Hello from the ckptfs demo domain!" >"$files/hello.txt"
  echo "ckptfs demo $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$files/etc/motd"
  seq 1 10000 >"$files/data/numbers.txt"
  mke2fs -q -t ext4 -L demo -d "$files" -F "$DIR/vda.raw" 256M >/dev/null
  qemu-img convert -q -f raw -O qcow2 "$DIR/vda.raw" "$DIR/vda.qcow2"
  rm -f "$DIR/vda.raw"
  qemu-img create -q -f qcow2 "$DIR/vdb.qcow2" 256M
}

domain_xml() {  # TYPE
  cat <<EOF
<domain type='$1'>
  <name>$DOM</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$DIR/vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$DIR/vdb.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
}

start_domain() {
  local type=qemu
  [[ -e /dev/kvm ]] && type=kvm
  domain_xml "$type" >"$DIR/domain.xml"
  virsh -q define "$DIR/domain.xml" >/dev/null
  if ! virsh -q start "$DOM" >/dev/null 2>&1 && [[ $type == kvm ]]; then
    echo "demo: KVM start failed, using TCG"
    virsh -q undefine "$DOM" >/dev/null
    domain_xml qemu >"$DIR/domain.xml"
    virsh -q define "$DIR/domain.xml" >/dev/null
    virsh -q start "$DOM" >/dev/null
  fi
  [[ "$(virsh domstate "$DOM")" == running* ]] || die "$DOM did not start"
}

# Write LINE to a control file, read the response back; prints the response,
# fails with the errno name.
control() {  # FILE LINE
  python3 - "$1" "$2" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
err = None
try:
    os.write(fd, (sys.argv[2] + "\n").encode())
except OSError as e:
    err = errno.errorcode.get(e.errno, str(e.errno))
print(os.read(fd, 65536).decode(errors="replace").strip())
if err:
    sys.exit(f"control write failed: {err}")
EOF
}

main() {
  [[ $(id -u) -eq 0 ]] || die "run as root"
  step "host setup (packages, libvirtd, /dev/fuse)"
  bash scripts/setup.sh
  if [[ -z "${CKPTFS_BIN:-}" ]]; then
    step "build"
    cmake --preset default >/dev/null
    cmake --build --preset default -j2
  fi
  [[ -x "$BIN" ]] || die "no daemon binary at $BIN"

  remove_previous
  step "creating domain $DOM (vda: ext4 with files, vdb: blank 256M)"
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  make_disks
  start_domain
  mkdir -p "$RUN"
  chmod 0755 "$RUN"

  step "mounting ckptfs at $MP"
  mkdir -p "$MP"
  "$BIN" mount "$MP" --run-dir "$RUN"
  for _ in $(seq 1 50); do
    [[ -d "$MP/domains/$DOM" ]] && break
    sleep 0.2
  done

  step "echo $DOM > $MP/control/checkpoint"
  local response
  response=$(control "$MP/control/checkpoint" "$DOM")

  step "the tree"
  find "$MP" | awk 'NR <= 40'
  step "cat $MP/domains/$DOM/latest/info.json"
  cat "$MP/domains/$DOM/latest/info.json"
  echo
  step "control response"
  echo "$response"

  local img="$MP/domains/$DOM/latest/vda.img"
  cat <<EOF

What to try next:
  debugfs -R 'cat /hello.txt' $img
  qemu-img info -f raw $img; qemu-img map -f raw $img
  $BIN umount $MP        # ends the live export, unmounts
EOF
}

main "$@"
