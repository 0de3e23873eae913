#!/usr/bin/env bash
# Prepare a Debian 12 host (run as root) to build and test ckptfs:
# install the packages, start virtlogd + libvirtd (no systemd), check /dev/fuse.
# Idempotent; the apt step is skipped when every package is installed already.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PACKAGES=(
  # build
  cmake g++ make pkg-config
  libfuse3-dev libvirt-dev libnbd-dev libsqlite3-dev libzstd-dev libssl-dev
  libxml2-dev nlohmann-json3-dev libcli11-dev libspdlog-dev
  libgtest-dev libgmock-dev libsystemd-dev
  librados-dev libradospp-dev
  # packaging (docs/PACKAGING.md): dpkg-shlibdeps for cpack -G DEB,
  # man -w and bash completion for tests/integration/test_package.sh
  dpkg-dev fakeroot man-db bash-completion
  # fuzz targets (clang + libFuzzer, in libclang-rt-14-dev) and symbolised
  # sanitizer reports (llvm-symbolizer)
  clang libclang-rt-14-dev llvm
  # run + integration tests
  fuse3 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils libnbd-bin nbdkit
  # a throw-away Ceph cluster (scripts/ceph-up.sh) for the RADOS store tests
  ceph-mon ceph-osd ceph-mgr ceph-common
  python3 e2fsprogs util-linux coreutils procps kmod
  # file-level restore tests (virt-cat/guestfish) and the kernel supermin needs
  libguestfs-tools linux-image-amd64
)

log() { echo "setup: $*"; }

missing_packages() {
  local p st
  for p in "${PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$st" == "install ok installed" ]] || echo "$p"
  done
}

install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "all ${#PACKAGES[@]} packages already installed"
    return 0
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No init system here: keep package scripts from trying to start services.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  apt-get update -qq || rc=$?
  if [[ $rc -eq 0 ]]; then
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef \
      -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null || rc=$?
  fi
  if [[ $own_policy -eq 1 ]]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [[ $rc -ne 0 ]]; then
    log "apt-get failed (status $rc)"
    return "$rc"
  fi
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -ne 0 ]]; then
    log "still missing after apt-get: ${missing[*]}"
    return 1
  fi
}

main() {
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"
    exit 1
  fi
  install_packages
  # shellcheck source=scripts/libvirtd-up.sh
  source "$here/libvirtd-up.sh"
  ckpt_libvirtd_up
  ckpt_fuse_up
  log "libvirtd answers on qemu:///system; /dev/fuse usable"
}

main "$@"
