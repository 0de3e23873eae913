#!/usr/bin/env bash
# The Debian package (docs/PACKAGING.md): built with cpack from the build dir
# under test, installed, its man page and bash completion found, its
# systemd unit's ExecStart run as systemd would (expanded with
# /etc/default/ckptfs, NOTIFY_SOCKET set) against a real domain until
# READY=1, stopped with the unit's KillSignal (every export ended, nothing
# left), then purged. Leaves the host as it was, also on failure: the trap
# purges the package and restores a previous /etc/default/ckptfs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The package is built from the default build; a sanitizer build's binary
# needs its runtime and is not what anyone installs.
[[ -z ${CKT_SANITIZER:-} ]] || skip "the package is tested in the default build, not under $CKT_SANITIZER"
command -v dpkg >/dev/null || skip "dpkg not installed (not a Debian host)"
command -v cpack >/dev/null || skip "cpack not installed"
if dpkg -s ckptfs 2>/dev/null | grep -q '^Status: install ok'; then
  skip "a ckptfs package is installed on this host; not touching it"
fi
BUILD=${CKPTFS_BUILD_DIR:-$(dirname "$(readlink -f "$CKPTFS_BIN")")}
[[ -f "$BUILD/CPackConfig.cmake" ]] || fail "$BUILD is not a configured build dir (CKPTFS_BUILD_DIR)"
DEFAULTS=/etc/default/ckptfs
UNIT=/usr/lib/systemd/system/ckptfs.service

# ----------------------------------------------------------------- build, install
say "cpack -G DEB in $BUILD"
rm -f "$BUILD"/ckptfs_*.deb
(cd "$BUILD" && nice -n 19 cpack -G DEB >"$CKT_WORK/cpack.log" 2>&1) \
  || fail "cpack failed: $(tail -5 "$CKT_WORK/cpack.log")"
DEB=$(ls "$BUILD"/ckptfs_*.deb)
pass "built $DEB"

# A /etc/default/ckptfs of the host's own (no package) is set aside, so dpkg
# installs its conffile without asking, and put back at the end.
if [[ -e "$DEFAULTS" ]]; then
  mv "$DEFAULTS" "$CKT_WORK/default.orig"
  on_cleanup "mv '$CKT_WORK/default.orig' '$DEFAULTS'"
fi
on_cleanup "dpkg --purge ckptfs"
dpkg -i "$DEB" >"$CKT_WORK/dpkg.log" 2>&1 || fail "dpkg -i: $(tail -5 "$CKT_WORK/dpkg.log")"
pass "installed"
assert_exists /usr/sbin/ckptfs "$UNIT" "$DEFAULTS" \
  /usr/share/bash-completion/completions/ckptfs
assert_contains "$(dpkg-query -W -f='${Conffiles}' ckptfs)" "$DEFAULTS" "conffiles"
assert_match "$(/usr/sbin/ckptfs --version)" '^ckptfs [0-9]' "ckptfs --version"
assert_eq "$(man -w ckptfs)" /usr/share/man/man8/ckptfs.8 "man -w ckptfs"

# ----------------------------------------------------------------- completion
completes() {  # WORDS... -> the completions of the last word
  bash -c '
    source /usr/share/bash-completion/bash_completion 2>/dev/null || true
    source /usr/share/bash-completion/completions/ckptfs
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    _ckptfs ckptfs "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]:-}"
    printf "%s\n" "${COMPREPLY[@]}"' _ "$@"
}
assert_eq "$(completes ckptfs che)" checkpoint "completion of 'ckptfs che'"
assert_contains "$(completes ckptfs backup --m)" --mode "completion of 'ckptfs backup --m'"

# ----------------------------------------------------------------- the unit's command
# One command line of the unit, expanded as systemd does: ${VAR} is one
# word, $VAR is split at blanks (systemd.service(5), "Command lines").
expand_exec() {  # KEY -> the words, one per line
  local line word name
  line=$(sed -n "s/^$1=[-@:+!]*//p" "$UNIT")
  [[ -n "$line" ]] || fail "$UNIT has no $1"
  # EnvironmentFile syntax: KEY=VALUE, the value taken as is (blanks
  # too), optionally in quotes; # starts a comment line.
  (while IFS= read -r env; do
      [[ $env =~ ^([A-Za-z_][A-Za-z_0-9]*)=(.*)$ ]] || continue
      name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
      [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]] && value=${BASH_REMATCH[1]}
      printf -v "$name" '%s' "$value"
    done <"$DEFAULTS"
    read -ra words <<<"$line"
    for word in "${words[@]}"; do
      if [[ $word =~ ^\$\{([A-Za-z_0-9]+)\}$ ]]; then
        name=${BASH_REMATCH[1]}
        printf '%s\n' "${!name-}"
      elif [[ $word =~ ^\$([A-Za-z_0-9]+)$ ]]; then
        name=${BASH_REMATCH[1]}
        for w in ${!name-}; do printf '%s\n' "$w"; done
      else
        printf '%s\n' "$word"
      fi
    done)
}
assert_contains "$(grep '^EnvironmentFile=' "$UNIT")" "$DEFAULTS" "EnvironmentFile"
assert_eq "$(sed -n 's/^Type=//p' "$UNIT")" notify "Type"
MP="$CKT_WORK/mnt-unit"
cat >"$DEFAULTS" <<EOF
CKPTFS_MOUNTPOINT=$MP
CKPTFS_OPTIONS=--run-dir $CKT_RUN --store $CKT_WORK/store --debug
EOF
CKT_MOUNTS+=("$MP")
mapfile -t pre < <(expand_exec ExecStartPre)
"${pre[@]}" || fail "ExecStartPre ${pre[*]} failed"
mapfile -t cmd < <(expand_exec ExecStart)
assert_eq "${cmd[*]}" "/usr/sbin/ckptfs mount --foreground $MP --run-dir $CKT_RUN --store $CKT_WORK/store --debug" "ExecStart expanded"
assert_exists "$MP"

DOM=$(dom_name)
make_domain "$DOM" 64M

# ----------------------------------------------------------------- run until READY=1
SOCK="$CKT_WORK/notify.sock"
NOTES="$CKT_WORK/notify.log"
python3 - "$SOCK" "$NOTES" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg.strip() + "\n")
        out.flush()
        if "STOPPING=1" in msg:
            break
EOF
CKT_BG_PIDS+=("$!")
wait_for "notify socket" 10 test -S "$SOCK"
say "ExecStart: ${cmd[*]}"
NOTIFY_SOCKET=$SOCK "${cmd[@]}" >"$CKT_WORK/daemon-unit.log" 2>&1 &
PID=$!
CKT_PIDS+=("$PID")
on_cleanup "_ckt_kill_daemon $PID"
wait_for "READY=1 from the daemon" 60 grep -qx READY=1 "$NOTES"
pass "READY=1 received"
# Served as soon as READY=1 came: no waiting here.
assert_exists "$MP/domains/$DOM"
assert_eq "$(daemon_pid_of "$MP")" "$PID" "status.json pid"
CKT_MP=$MP
ctl_ok checkpoint "$DOM name=pkg1" >/dev/null
assert_exists "$MP/domains/$DOM/pkg1/vda.img"
assert_has_job "$DOM"

# ----------------------------------------------------------------- stop as the unit does
assert_eq "$(grep -c '^ExecStop=' "$UNIT" || true)" 0 "no ExecStop"
SIG=$(sed -n 's/^KillSignal=//p' "$UNIT")
assert_eq "$SIG" SIGTERM "KillSignal"
kill -s "${SIG#SIG}" "$PID"
daemon_gone() { ! pid_alive "$PID"; }
wait_for "daemon $PID to exit" 60 daemon_gone
rc=0
wait "$PID" || rc=$?
assert_eq "$rc" 0 "daemon exit status after $SIG"
grep -qx STOPPING=1 "$NOTES" || fail "no STOPPING=1: $(cat "$NOTES")"
! is_mounted "$MP" || fail "$MP still mounted after $SIG"
pass "$MP unmounted"
assert_no_job "$DOM"
for p in $(pgrep -x ckptfs || true); do
  [[ "$(proc_exe "$p")" != /usr/sbin/ckptfs ]] || fail "installed ckptfs $p still running"
done
pass "nothing left running"

# ----------------------------------------------------------------- purge
dpkg --purge ckptfs >"$CKT_WORK/dpkg.log" 2>&1 || fail "dpkg --purge: $(tail -5 "$CKT_WORK/dpkg.log")"
assert_not_exists /usr/sbin/ckptfs "$UNIT" "$DEFAULTS" \
  /usr/share/man/man8/ckptfs.8 /usr/share/bash-completion/completions/ckptfs
if dpkg -s ckptfs >/dev/null 2>&1; then fail "ckptfs still known to dpkg"; fi
pass "purged"
