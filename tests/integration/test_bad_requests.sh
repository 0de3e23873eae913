#!/usr/bin/env bash
# Malformed and impossible control requests: the right errno, a "rejected"
# job record, and no change to libvirt or to the tree. domains/ is read-only.
# Concurrent checkpoint requests: EBUSY or success, never corruption.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
NODOM="ckt-no-such-domain-$$"

make_domain "$DOM" 64M 64M
ckpt_mount
D="$CKT_MP/domains/$DOM"
JOBS="$CKT_MP/control/jobs"
wait_for "$D appears" 30 test -d "$D"

guest_write "$DOM" 0 0x41 0 64k
guest_write "$DOM" 1 0x42 1M 64k
ctl_ok checkpoint "$DOM name=cp0" >/dev/null
assert_exists "$D/cp0/vda.img"

# Everything a bad request must leave alone.
state_of() {
  echo "checkpoints: $(checkpoint_names "$DOM" | tr '\n' ' ')"
  echo "job type: $(job_type "$DOM")"
  virsh backup-dumpxml "$DOM" 2>&1 | sed '/^$/d'
  echo "tree: $(ls -A "$D" | sort | tr '\n' ' ')"
  echo "latest: $(readlink "$D/latest")"
  # Other tests' domains (ckt-<test>-<pid>, run by hand alongside) come and go.
  echo "domains: $( { ls -A "$CKT_MP/domains" | grep -Ev '^ckt-[a-z-]+-[0-9]+'
    ls -A "$CKT_MP/domains" | grep -Fx -- "$DOM"; } | sort | tr '\n' ' ')"
}

njobs() { find "$JOBS" -maxdepth 1 -name '*.json' | wc -l; }

# One rejected request: errno, response, job record, nothing changed.
expect_rejected() {  # ERRNO FILE MODE DATA
  local want=$1 file=$2 mode=$3 data=$4 before after n0 err id jf
  before=$(state_of)
  n0=$(njobs)
  if [[ $mode == hex ]]; then
    err=$(ctl_hex "$file" "$data")
  else
    err=$(ctl "$file" "$data")
  fi
  [[ "$err" == "$want" ]] || fail "control/$file [$data]: expected $want, got $err (response: $(ctl_response))"
  id=$(ctl_field id) || fail "control/$file [$data]: no job id in the response: [$(ctl_response)]"
  assert_eq "$(ctl_field state)" rejected "control/$file [$data] response state"
  [[ -n "$(ctl_field error)" ]] || fail "control/$file [$data]: empty error text in the response"
  jf=$(job_file "$id")
  assert_exists "$jf"
  assert_json_valid "$jf"
  assert_json "$jf" state rejected
  assert_json "$jf" kind "$file"
  local k
  for k in kind domain checkpoint state error request; do
    json_get "$jf" "$k" >/dev/null || fail "$jf: no key '$k': $(cat "$jf")"
  done
  python3 -c '
import json, re, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if any(re.search("time|created|start|end|finish|submit", k) for k in d) else 1)' "$jf" \
    || fail "$jf: no time field: $(cat "$jf")"
  assert_eq "$(njobs)" $((n0 + 1)) "job records after control/$file [$data]"
  after=$(state_of)
  [[ "$before" == "$after" ]] || fail "control/$file [$data] changed the state:
--- before
$before
--- after
$after"
  pass "control/$file [$data] -> $want"
}

long65=$(printf 'a%.0s' $(seq 1 65))
long64=$(printf 'b%.0s' $(seq 1 64))

# ----------------------------------------------------------------- malformed
expect_rejected EINVAL checkpoint text "$DOM name=../x"
expect_rejected EINVAL checkpoint text "$DOM name=.x"
expect_rejected EINVAL checkpoint text "$DOM name=a/b"
expect_rejected EINVAL checkpoint text "$DOM name=$long65"
expect_rejected EINVAL checkpoint text "$DOM name="
expect_rejected EINVAL checkpoint text "$DOM bogus=1"
expect_rejected EINVAL checkpoint text "$DOM name=a name=b"
expect_rejected EINVAL checkpoint text "$DOM disks=vda disks=vdb"
expect_rejected EINVAL checkpoint text "$DOM name"
expect_rejected EINVAL checkpoint text "$DOM =cp9"
expect_rejected EINVAL checkpoint text "$DOM $DOM"
expect_rejected EINVAL checkpoint text ""
expect_rejected EINVAL checkpoint text "   "
expect_rejected EINVAL checkpoint hex "00ff0a"
expect_rejected EINVAL checkpoint hex "$(printf '%s name=x' "$DOM" | od -An -tx1 | tr -d ' \n')fffe0a"
expect_rejected EINVAL release text "$DOM"
expect_rejected EINVAL release text "$DOM cp0 extra"
expect_rejected EINVAL release text "$DOM ../x"
expect_rejected EINVAL release text ""

# ----------------------------------------------------------------- unknown things
expect_rejected ENOENT checkpoint text "$NODOM"
expect_rejected ENOENT checkpoint text "$NODOM name=x"
expect_rejected ENOENT checkpoint text "$DOM disks=vdz"
expect_rejected ENOENT checkpoint text "$DOM disks=vda,vdz"
expect_rejected ENOENT release text "$DOM no-such-checkpoint"
expect_rejected ENOENT release text "$NODOM cp0"

# ----------------------------------------------------------------- read-only tree
I="$D/cp0/vda.img"
assert_fsop EROFS write "$I"
assert_fsop EROFS rdwr "$I"
assert_fsop EROFS truncate "$I"
assert_fsop EROFS unlink "$I"
assert_fsop EROFS rename "$I" "$D/cp0/moved.img"
assert_fsop EROFS chmod "$I"
assert_fsop EROFS utime "$I"
assert_fsop EROFS write "$D/cp0/info.json"
assert_fsop EROFS create "$D/cp0/new.img"
assert_fsop EROFS create "$D/new"
assert_fsop EROFS mkdir "$D/cp0/sub"
assert_fsop EROFS mkdir "$D/newcheckpoint"
assert_fsop EROFS mkdir "$CKT_MP/domains/newdomain"
assert_fsop EROFS rmdir "$D/cp0"
assert_fsop EROFS unlink "$D/latest"
assert_fsop EROFS symlink "$D/link" cp0
assert_fsop OK read "$I"
cmp_image "$I" "$(expected_file "$DOM" 0)" "cp0 vda.img after the bad requests"

# ----------------------------------------------------------------- concurrency
guest_write "$DOM" 0 0x43 2M 64k
mark "$DOM" c
(
  CKT_CTL_RESP="$CKT_WORK/bg.response"
  ctl checkpoint "$DOM name=c1" >"$CKT_WORK/bg.errno"
) &
bg=$!
CKT_BG_PIDS+=("$bg")
err2=$(ctl checkpoint "$DOM name=c2")
resp2=$(ctl_response)
wait "$bg" || fail "background checkpoint request failed to run"
err1=$(cat "$CKT_WORK/bg.errno")
resp1=$(cat "$CKT_WORK/bg.response")
say "concurrent requests: c1 -> $err1, c2 -> $err2"
for e in "$err1" "$err2"; do
  [[ "$e" == OK || "$e" == EBUSY ]] || fail "concurrent checkpoint: expected OK or EBUSY, got $e (c1: $resp1; c2: $resp2)"
done
[[ "$err1" == OK || "$err2" == OK ]] || fail "concurrent checkpoint: both requests failed (c1: $resp1; c2: $resp2)"
cp "$(ctl_response_file)" "$CKT_WORK/c2.response"
for c in c1 c2; do
  if [[ $c == c1 ]]; then e=$err1; r="$CKT_WORK/bg.response"; else e=$err2; r="$CKT_WORK/c2.response"; fi
  st=$(json_get "$r" state) || fail "concurrent $c: response is not JSON: $(cat "$r")"
  if [[ $e == OK ]]; then
    assert_eq "$st" succeeded "concurrent $c response state"
  else
    [[ $st == rejected || $st == failed ]] || fail "concurrent $c: EBUSY but state '$st'"
    assert_exists "$(job_file "$(json_get "$r" id)")"
  fi
done
live=()
for c in c1 c2; do
  [[ -d "$D/$c" ]] && live+=("$c")
done
assert_eq "${#live[@]}" 1 "live checkpoint dirs after concurrent requests (${live[*]:-none})"
assert_not_exists "$D/cp0"
assert_symlink "$D/latest" "${live[0]}"
assert_has_job "$DOM"
[[ "$err1" == OK ]] && assert_contains "$(checkpoint_names "$DOM")" c1 "checkpoints"
[[ "$err2" == OK ]] && assert_contains "$(checkpoint_names "$DOM")" c2 "checkpoints"
guest_write "$DOM" 0 0x44 2M 64k
cmp_image "$D/${live[0]}/vda.img" "$(expected_file "$DOM" 0 c)" "${live[0]} vda.img"
cmp_image "$D/${live[0]}/vdb.img" "$(expected_file "$DOM" 1 c)" "${live[0]} vdb.img"

# ----------------------------------------------------------------- boundary name
ctl_ok checkpoint "$DOM name=$long64" >/dev/null
assert_exists "$D/$long64/vda.img"
ctl_ok release "$DOM $long64" >/dev/null
assert_not_exists "$D/$long64"
assert_no_job "$DOM"
ckpt_umount
assert_no_job "$DOM"
