#!/usr/bin/env bash
# ceph-down.sh DIR: stops the cluster scripts/ceph-up.sh started in DIR (by
# the pid files under DIR/run, nothing else) and waits until its daemons are
# gone (SIGKILL after 10 s). Leaves DIR (logs) in place; idempotent.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
[[ -d "$1" ]] || exit 0
dir=$(cd "$1" && pwd)

pids=()
for f in "$dir"/run/*.pid; do
  [[ -f "$f" ]] || continue
  pid=$(cat "$f" 2>/dev/null)
  # Only a ceph daemon (the pid file may be stale and the pid reused).
  if [[ -n "$pid" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == ceph-* ]]; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
  rm -f "$f"
done

# And any daemon of this cluster whose pid file is gone or stale: they are
# told apart by this cluster's own config path on their command line.
for pid in $(pgrep -f -- "-c $dir/ceph.conf" 2>/dev/null); do
  if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == ceph-* ]] &&
    [[ " ${pids[*]} " != *" $pid "* ]]; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
done

for _ in $(seq 100); do
  alive=()
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && alive+=("$pid")
  done
  ((${#alive[@]} == 0)) && exit 0
  sleep 0.1
done
for pid in "${alive[@]}"; do
  echo "ceph-down: pid $pid did not stop on SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null
done
exit 0
