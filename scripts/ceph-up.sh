#!/usr/bin/env bash
# ceph-up.sh DIR [POOL]: a throw-away single-node Ceph cluster for tests.
#
# One ceph-mon, one ceph-mgr (the mon learns pool usage from it, which pool
# quotas need) and one ceph-osd with `osd objectstore = memstore` (RAM only,
# so it starts in seconds and leaves no disk behind), all on 127.0.0.1,
# cephx on, no systemd. Everything (conf, keyrings, mon/osd/mgr data, logs,
# pid files, admin sockets) lives under DIR, so several test scripts can each
# run their own cluster at once: the mon's port is probed free (and the OSD
# and mgr pick free ports from Ceph's range themselves).
#
# Creates pool POOL (default ckptfs; size 1, min_size 1, no autoscaler) and a
# client key client.ckptfs whose caps allow only that pool. Prints
#   CEPH_CONF=DIR/ceph.conf
#   CEPH_ID=ckptfs
# on stdout (everything else goes to stderr). The admin key is
# DIR/ceph.client.admin.keyring (`ceph -c DIR/ceph.conf ...` uses it).
# Fails with the log tail if a daemon is not up within 60 s. Stop it with
# scripts/ceph-down.sh DIR.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 DIR [POOL]" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
pool=${2:-ckptfs}
client=ckptfs
conf=$dir/ceph.conf
timeout_s=${CEPH_UP_TIMEOUT:-60}

log() { echo "ceph-up: $*" >&2; }
fail() {
  log "$*"
  local f
  for f in "$dir"/log/*.log; do
    [[ -f "$f" ]] || continue
    echo "---- tail of $f" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}
trap 'fail "failed at line $LINENO: $BASH_COMMAND"' ERR

if [[ -f "$dir/run/mon.a.pid" ]] && kill -0 "$(cat "$dir/run/mon.a.pid")" 2>/dev/null; then
  fail "a cluster is already running in $dir (scripts/ceph-down.sh $dir first)"
fi
rm -rf "$dir/mon" "$dir/osd" "$dir/mgr" "$dir/run" "$dir/log" "$dir/crash" "$dir"/ceph.*.keyring
mkdir -p "$dir/mon" "$dir/osd" "$dir/mgr" "$dir/run" "$dir/log"

# A free TCP port on 127.0.0.1 (the kernel picks; a race with another
# prober is possible but the mon would then fail to bind and we say so).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fsid=$(cat /proc/sys/kernel/random/uuid)

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public network = 127.0.0.1/32
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $dir/ceph.\$name.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0

[client]
# Several clients of one name (a daemon, the rados tool, tests) at once.
admin socket = $dir/run/\$name.\$pid.asok

[mon]
mon data = $dir/mon/\$cluster-\$id
mon initial members = a

[mgr]
mgr data = $dir/mgr/\$cluster-\$id
mgr stats period = 1
mon mgr digest period seconds = 1

[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = ${CEPH_UP_MEMSTORE_BYTES:-2147483648}
osd journal size = 0
osd max object name len = 460
osd max object namespace len = 64
EOF

ceph_admin() { timeout "$timeout_s" ceph -c "$conf" --connect-timeout 10 "$@"; }

# ---- keys and the mon
ceph-authtool --create-keyring "$dir/ceph.mon.a.keyring" --gen-key -n mon. \
  --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key \
  -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
  --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$dir/ceph.mon.a.keyring" \
  --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
  "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" \
  --keyring "$dir/ceph.mon.a.keyring" 2>>"$dir/log/mkfs.log" ||
  fail "ceph-mon --mkfs failed"
ceph-mon -c "$conf" -i a 2>>"$dir/log/daemons.log" || fail "ceph-mon did not start"

deadline=$((SECONDS + timeout_s))
until ceph -c "$conf" --connect-timeout 5 mon stat >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "ceph-mon not up within ${timeout_s}s (port $port)"
  sleep 0.5
done
log "mon up on 127.0.0.1:$port"

# ---- the mgr (pool statistics, so pool quotas take effect)
mkdir -p "$dir/mgr/ceph-x"
ceph_admin auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' \
  mds 'allow *' -o "$dir/ceph.mgr.x.keyring" >/dev/null
ceph-mgr -c "$conf" -i x 2>>"$dir/log/daemons.log" || fail "ceph-mgr did not start"

# ---- the OSD (memstore)
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_key=$(ceph-authtool --gen-print-key)
echo "{\"cephx_secret\": \"$osd_key\"}" >"$dir/osd-secret.json"
osd_id=$(ceph_admin osd new "$osd_uuid" -i "$dir/osd-secret.json")
rm -f "$dir/osd-secret.json"
mkdir -p "$dir/osd/ceph-$osd_id"
ceph-authtool --create-keyring "$dir/ceph.osd.$osd_id.keyring" \
  --name "osd.$osd_id" --add-key "$osd_key" >/dev/null
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" \
  2>>"$dir/log/mkfs.log" >/dev/null || fail "ceph-osd --mkfs failed"
ceph-osd -c "$conf" -i "$osd_id" 2>>"$dir/log/daemons.log" ||
  fail "ceph-osd did not start"

until ceph -c "$conf" --connect-timeout 5 osd dump 2>/dev/null |
  grep -q "^osd.$osd_id up"; do
  ((SECONDS < deadline)) || fail "osd.$osd_id not up within ${timeout_s}s"
  sleep 0.5
done
log "osd.$osd_id up"

# ---- the pool and the client key (caps: this pool only)
ceph_admin osd pool create "$pool" 8 8 >/dev/null 2>&1
ceph_admin osd pool set "$pool" size 1 --yes-i-really-mean-it >/dev/null 2>&1
ceph_admin osd pool set "$pool" min_size 1 >/dev/null 2>&1
ceph_admin osd pool application enable "$pool" ckptfs >/dev/null 2>&1
ceph_admin auth get-or-create "client.$client" \
  mon 'profile simple-rados-client' osd "allow rwx pool=$pool" \
  -o "$dir/ceph.client.$client.keyring" >/dev/null

# The pool is usable once its PGs are active: a write answers then.
until timeout 5 rados -c "$conf" --id "$client" -p "$pool" put .ceph-up-probe \
  "$conf" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "pool $pool not writable within ${timeout_s}s"
  sleep 0.5
done
rados -c "$conf" --id "$client" -p "$pool" rm .ceph-up-probe >/dev/null 2>&1 || true
log "pool $pool ready (${SECONDS}s)"

echo "CEPH_CONF=$conf"
echo "CEPH_ID=$client"
