#!/usr/bin/env bash
# Start virtlogd + libvirtd without systemd and wait until qemu:///system
# answers; make sure /dev/fuse is usable. No package installs here.
#
# Use:  bash scripts/libvirtd-up.sh          (exit 0 when ready, 1 if not)
#  or:  source scripts/libvirtd-up.sh; ckpt_libvirtd_up; ckpt_fuse_up
# Must run as root.

ckpt_virsh_answers() {
  timeout 10 virsh -c qemu:///system version >/dev/null 2>&1
}

ckpt_libvirtd_up() {

  if ckpt_virsh_answers; then
    return 0
  fi
  if ! command -v libvirtd >/dev/null 2>&1; then
    echo "libvirtd-up: libvirtd is not installed (run scripts/setup.sh)" >&2
    return 1
  fi
  # Detection only (never used to kill): is a daemon process there already?
  if ! pgrep -x virtlogd >/dev/null 2>&1; then
    virtlogd -d || echo "libvirtd-up: virtlogd -d failed" >&2
  fi
  if ! pgrep -x libvirtd >/dev/null 2>&1; then
    libvirtd -d || echo "libvirtd-up: libvirtd -d failed" >&2
  fi
  for _ in $(seq 1 60); do
    if ckpt_virsh_answers; then
      return 0
    fi
    sleep 1
  done
  echo "libvirtd-up: 'virsh -c qemu:///system version' still does not answer after 60 s" >&2
  return 1
}

# /dev/fuse must exist and be openable read-write.
ckpt_fuse_up() {
  if [[ ! -e /dev/fuse ]]; then
    modprobe fuse >/dev/null 2>&1 || true
  fi
  if [[ ! -e /dev/fuse ]]; then
    mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
  fi
  if ! command -v fusermount3 >/dev/null 2>&1; then
    echo "libvirtd-up: fusermount3 missing (package fuse3)" >&2
    return 1
  fi
  if ! python3 -c 'import os; os.close(os.open("/dev/fuse", os.O_RDWR))' 2>/dev/null; then
    echo "libvirtd-up: /dev/fuse cannot be opened read-write" >&2
    return 1
  fi
  return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  if [[ $(id -u) -ne 0 ]]; then
    echo "libvirtd-up: must run as root" >&2
    exit 1
  fi
  ckpt_libvirtd_up
  ckpt_fuse_up
fi
