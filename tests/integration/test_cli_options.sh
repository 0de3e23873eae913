#!/usr/bin/env bash
# Bad options and arguments on the command line: each gets one clear line on
# stderr ("ckptfs: ..."), a non-zero exit status (2 for usage errors), and
# changes nothing: no mount, no daemon left, no run dir or store created.
source "$(dirname "$0")/lib.sh"

W=$CKT_WORK/cli
mkdir -p "$W/mp"
touch "$W/afile"
RUN=$W/run
STORE=$W/store

# Runs ckptfs with ARGS; expects exit status RC and exactly one stderr line
# matching ERE.
refuse() {  # RC ERE ARGS...
  local rc=$1 ere=$2 got err
  shift 2
  got=0
  err=$(timeout 60 "$CKPTFS_BIN" "$@" 2>&1 >/dev/null) || got=$?
  assert_eq "$got" "$rc" "exit status of: ckptfs $*"
  assert_eq "$(printf '%s\n' "$err" | wc -l)" 1 "one line of error for: ckptfs $* ($err)"
  assert_match "$err" "^ckptfs: $ere" "error of: ckptfs $*"
}

nothing_changed() {  # WHAT
  assert_not_exists "$RUN" "$STORE"
  is_mounted "$W/mp" && fail "$1: $W/mp is mounted"
  [[ -z $(ls -A "$W/mp") ]] || fail "$1: $W/mp is not empty"
  if pgrep -f -- "--run-dir $RUN" >/dev/null; then fail "$1: a daemon is left"; fi
  pass "$1 changed nothing"
}

m=(mount "$W/mp" --run-dir "$RUN" --store "$STORE")

# Usage errors (CLI11): status 2.
refuse 2 "The following argument was not expected: --bogus" "${m[@]}" --bogus
refuse 2 "A subcommand is required" 
refuse 2 "MOUNTPOINT is required" mount --run-dir "$RUN" --store "$STORE"
refuse 2 "DOMAIN is required" checkpoint
nothing_changed "usage errors"

# Values: status 1, named option, nothing created.
refuse 1 "--cache-size: bad size 'abc'" "${m[@]}" --cache-size abc
refuse 1 "--cache-size: bad size '-5M'" "${m[@]}" --cache-size -5M
refuse 1 "--cache-size 0 is below the minimum of 1M" "${m[@]}" --cache-size 0
refuse 1 "--cache-size 4k is below the minimum of 1M" "${m[@]}" --cache-size 4k
refuse 1 "--cache-size: size '99999999T' too large" "${m[@]}" --cache-size 99999999T
nothing_changed "bad --cache-size"

refuse 1 "--host-id: bad host id 'a/b': use 1 to 64 of" "${m[@]}" --host-id a/b
refuse 1 "--host-id: bad host id '-a'" "${m[@]}" --host-id=-a
refuse 1 "--host-id: bad host id '.a'" "${m[@]}" --host-id .a
refuse 1 "--host-id: bad host id 'h h'" "${m[@]}" --host-id "h h"
refuse 1 "--host-id: bad host id '$(printf 'x%.0s' {1..65})'" "${m[@]}" --host-id "$(printf 'x%.0s' {1..65})"
nothing_changed "bad --host-id"

for v in 9 86401 abc 10s ""; do
  refuse 1 "--lock-lease: '$v' is not a number of seconds from 10 to 86400" "${m[@]}" --lock-lease "$v"
done
nothing_changed "bad --lock-lease"

refuse 1 "mount point $W/nonexistent" mount "$W/nonexistent" --run-dir "$RUN" --store "$STORE"
refuse 1 ".*afile is not a directory" mount "$W/afile" --run-dir "$RUN" --store "$STORE"
long=$W/$(printf 'r%.0s' {1..100})
refuse 1 "--run-dir .* is too long for NBD socket paths" mount "$W/mp" --run-dir "$long" --store "$STORE"
assert_not_exists "$long"
nothing_changed "bad mount point / run dir"

# Failures found after the run dir lock (libvirt, store): no mount, no daemon,
# and no store created for a daemon that never ran.
refuse 1 "cannot connect to libvirt at bogus:///x" "${m[@]}" --connect bogus:///x
assert_not_exists "$STORE"
rm -rf "$RUN"
refuse 1 "store path $W/afile is not a directory" mount "$W/mp" --run-dir "$RUN" --store "$W/afile"
rm -rf "$RUN"
mkdir -m 0700 "$W/badstore"
echo '{"format": 7}' >"$W/badstore/config.json"
refuse 1 ".*has format 7; this ckptfs reads format 1" mount "$W/mp" --run-dir "$RUN" --store "$W/badstore"
rm -rf "$RUN"
nothing_changed "bad --connect / --store"

# Store commands.
refuse 1 "store .*none: store directory .*none does not exist" verify --store "$W/none"
assert_not_exists "$W/none"
refuse 1 "keep-last needs a non-negative count, not '-1'" prune --store "$W/badstore" --keep-last -1
refuse 1 "keep-daily needs a non-negative count, not 'abc'" prune --store "$W/badstore" --keep-daily abc
refuse 1 ".*has format 7" ls --store "$W/badstore"
assert_eq "$(cat "$W/badstore/config.json")" '{"format": 7}' "a refused store is left as it was"

# Clients without a mount.
refuse 1 "$W/mp is not a ckptfs mount \(no control/status.json\)" backup some-domain --mount "$W/mp"
refuse 1 "$W/afile is not a ckptfs mount" jobs --mount "$W/afile"

say "PASS ($CKT_CHECKS checks)"
