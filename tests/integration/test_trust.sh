#!/usr/bin/env bash
# A completed backup never changes, a base is never wrong (issue 11, items
# 1, 3, 7, 9 and 10), on the real stack:
#  1. a backup name in the store is taken: after `virsh checkpoint-delete`
#     of a backed-up checkpoint, a new backup with its name is refused with
#     EEXIST before anything is made, and the stored backup serves its own
#     bytes after a remount;
#  3. a checkpoint deleted and made again with virsh under the name of a
#     backed-up one: the next backup must not take unchanged chunks from the
#     old backup (it would miss the writes in between); it is byte-identical;
#     3b. the same within one second (the old creation time): the nonce in
#     ckptfs's checkpoint descriptions tells them apart;
#  7. mode=incremental without a usable base: EINVAL, no job, no checkpoint;
#  9. a lock of host "<this host>-999999" (a prefix match of ours) and the
#     manifests of its running backup survive this daemon's start;
# 10. a damaged chunk is moved aside by verify, the next backup holding its
#     data stores it again, and the old backup reads right again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
STORE="$CKT_WORK/store"
ck() { "$CKPTFS_BIN" "$@" --store "$STORE"; }
make_domain "$DOM" 64M 64M
ckpt_mount
D="$CKT_MP/domains/$DOM"
wait_for "$D appears" 30 test -d "$D"

remount() {
  ckpt_umount
  ckpt_mount
  D="$CKT_MP/domains/$DOM"
  wait_for "$D after a remount" 30 test -d "$D"
}

backup() {  # TAG [WORDS]
  mark "$DOM" "$1"
  local id
  id=$(ctl_accepted backup "$DOM name=$1 ${2:-}")
  wait_job "$id" succeeded
  echo "$id"
}

# CKT_TRUST_SECTIONS="3 10" runs only those (each section stands alone).
want() { [[ " ${CKT_TRUST_SECTIONS:-1 3 3b 7 9 10} " == *" $1 "* ]]; }

cmp_both() {  # TAG WHAT
  local i t
  for i in 0 1; do
    t=$(disk_target "$i")
    cmp_image "$D/$1/$t.img" "$(expected_file "$DOM" "$i" "$1")" "$2 $t"
  done
}

# ----------------------------------------------------------------- 1. names are taken
if want 1; then
guest_write "$DOM" 0 0x11 1M 1M
guest_write "$DOM" 1 0x12 2M 256k
backup weekly >/dev/null
cmp_both weekly "weekly"
virsh -q checkpoint-delete "$DOM" weekly >/dev/null
guest_write "$DOM" 0 0x13 1M 1M   # what a replacing backup would hold
before=$(checkpoint_names "$DOM")
manifests_before=$(cd "$STORE" && find backups -type f | sort | xargs sha256sum)
err=$(ctl backup "$DOM name=weekly")
assert_eq "$err" EEXIST "backup with a name the store holds"
assert_contains "$(ctl_response)" "a backup never changes" "the refusal"
assert_eq "$(ctl_field state)" rejected "its job"
assert_no_job "$DOM"
assert_eq "$(checkpoint_names "$DOM")" "$before" "libvirt's checkpoints after the refusal"
assert_eq "$(cd "$STORE" && find backups -type f | sort | xargs sha256sum)" \
  "$manifests_before" "the store's backups after the refusal"
remount
cmp_both weekly "weekly after the refusal and a remount"
fi

# ----------------------------------------------------------------- 3. same name, new checkpoint
if want 3; then
# k1 backed up; deleted in libvirt; W written; k1 made again with virsh
# (a new bitmap from now on); more writes; k2 with no other base.
backup k1 >/dev/null
virsh -q checkpoint-delete "$DOM" k1 >/dev/null
# libvirt's creation times have one-second resolution: a checkpoint made
# again within the same second as the old one is indistinguishable (see
# docs/RELIABILITY.md, section 1b).
sleep 1.1
guest_write "$DOM" 0 0x21 8M 256k    # W: after the old k1, before the new
guest_write "$DOM" 1 0x22 9M 64k
virsh -q checkpoint-create-as "$DOM" k1 >/dev/null
guest_write "$DOM" 0 0x23 12M 64k
id=$(backup k2)
job=$(cat "$(job_file "$id")")
[[ "$(json_str_get "$job" base)" != k1 ]] ||
  fail "k2 took the old backup of k1 as its base: $job"
pass "k2 is not incremental from the old k1's backup"
cmp_both k2 "k2 (holds W)"
remount
cmp_both k2 "k2 after a remount"
fi

# ----------------------------------------------------------------- 3b. same name, same second
if want 3b; then
# As 3, but the new j1 has the old j1's creation time, as a checkpoint made
# again within the same second has (libvirt keeps whole seconds): its
# metadata is redefined with the old time over its own, new bitmap. Only
# the nonce ckptfs writes into its checkpoints' descriptions tells them
# apart; the old backup of j1 must not be the base.
backup j1 >/dev/null
old_time=$(virsh checkpoint-dumpxml "$DOM" j1 --no-domain |
  sed -n 's:.*<creationTime>\(.*\)</creationTime>.*:\1:p')
[[ -n "$old_time" ]] || fail "no creationTime of j1"
virsh -q checkpoint-delete "$DOM" j1 >/dev/null
guest_write "$DOM" 0 0x31 20M 256k   # W: after the old j1, before the new
guest_write "$DOM" 1 0x32 21M 64k
virsh -q checkpoint-create-as "$DOM" j1 >/dev/null
virsh checkpoint-dumpxml "$DOM" j1 |
  sed "s:<creationTime>.*</creationTime>:<creationTime>$old_time</creationTime>:" \
    >"$CKT_WORK/j1.xml"
virsh -q checkpoint-delete "$DOM" j1 --metadata >/dev/null
virsh -q checkpoint-create "$DOM" "$CKT_WORK/j1.xml" --redefine >/dev/null ||
  fail "virsh checkpoint-create --redefine j1 failed"
assert_eq "$(virsh checkpoint-dumpxml "$DOM" j1 --no-domain |
  sed -n 's:.*<creationTime>\(.*\)</creationTime>.*:\1:p')" "$old_time" \
  "creation time of the new j1"
guest_write "$DOM" 0 0x33 24M 64k
id=$(backup j2)
job=$(cat "$(job_file "$id")")
[[ "$(json_str_get "$job" base)" != j1 ]] ||
  fail "j2 took the old backup of j1 (same name and second) as its base: $job"
pass "j2 is not incremental from the old j1's backup: base $(json_str_get "$job" base)"
cmp_both j2 "j2 (holds W)"
remount
cmp_both j2 "j2 after a remount"
fi

# ----------------------------------------------------------------- 7. mode=incremental, no base
if want 7; then
for cp in $(checkpoint_names "$DOM"); do virsh -q checkpoint-delete "$DOM" "$cp" >/dev/null; done
before=$(checkpoint_names "$DOM")
err=$(ctl backup "$DOM name=k3 mode=incremental")
assert_eq "$err" EINVAL "mode=incremental without a usable base"
assert_no_job "$DOM"
assert_eq "$(checkpoint_names "$DOM")" "$before" "libvirt's checkpoints after the refusal"
assert_not_exists "$D/k3"
fi

# ----------------------------------------------------------------- 9. exact lock owners
if want 9; then
host=$(hostname)
other="$host-999999"
uuid=$(virsh domuuid "$DOM")  # (no head: SIGPIPE under pipefail)
backup run9 >/dev/null
prefix=$(dirname "$(ls "$STORE"/backups/*/run9/backup.json)")
# Make run9 look like a backup another host is still writing: its record
# not yet there, its lock naming that host.
mv "$prefix/backup.json" "$CKT_WORK/run9.record"
lockname="$other-1-job7"
python3 - "$STORE/locks" "$lockname" "$other" "$uuid" <<'PY'
import json, os, sys, time
d, name, host, uuid = sys.argv[1:5]
os.makedirs(d, exist_ok=True)
# The name as ckptfs 43d0e95 wrote it: "<host>-<pid>-<job>@<uuid>/<cp>".
key = (name + "@" + uuid + "+2Frun9")
json.dump({"started": int(time.time()), "host": host, "pid": 1,
           "domain_uuid": uuid, "checkpoint": "run9"},
          open(os.path.join(d, key), "w"))
print(key)
PY
remount
assert_exists "$STORE/locks/$lockname@$uuid+2Frun9"
assert_exists "$prefix/vda.manifest" "$prefix/vdb.manifest"
pass "host $host left the lock and manifests of host $other alone"
rm -f "$STORE/locks/$lockname@$uuid+2Frun9"
mv "$CKT_WORK/run9.record" "$prefix/backup.json"
remount
cmp_both run9 "run9 after its record is back"

# A dead daemon's lock under host id "hostB" (a store shared by hosts): the
# daemon of this host leaves it alone; one started with --host-id hostB
# removes it, and says who it is in status.json.
sleep 0 &
dead=$!
wait "$dead"
python3 - "$STORE/locks" "$dead" "$uuid" <<'PY'
import json, os, sys, time
d, pid, uuid = sys.argv[1:4]
json.dump({"started": int(time.time()), "host": "hostB", "pid": int(pid),
           "domain_uuid": uuid, "checkpoint": "run9"},
          open(os.path.join(d, "hostB-" + pid + "-job8@" + uuid + "+2Frun9"), "w"))
PY
remount
assert_json "$CKT_MP/control/status.json" host_id "$host"
assert_exists "$STORE/locks/hostB-$dead-job8@$uuid+2Frun9"
ckpt_umount
ckpt_mount --host-id hostB
assert_json "$CKT_MP/control/status.json" host_id hostB
assert_not_exists "$STORE/locks/hostB-$dead-job8@$uuid+2Frun9"
remount
cmp_both run9 "run9 after host B's daemon removed its dead lock"
fi

# ----------------------------------------------------------------- 10. damaged chunk heals
if want 10; then
guest_write "$DOM" 0 0x5a 30M 256k
backup d1 >/dev/null
chunk=$(python3 - "$STORE" <<'PY'
import hashlib, os, sys
h = hashlib.sha256(bytes([0x5a]) * 262144).hexdigest()
print(os.path.join(sys.argv[1], "chunks", h[:2], h))
PY
)
assert_exists "$chunk"
python3 - "$chunk" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0x10
open(sys.argv[1], "wb").write(bytes(b))
PY
rc=0; out=$(ck verify) || rc=$?
assert_eq "$rc" 1 "verify with a damaged chunk"
assert_contains "$out" "DAMAGED $DOM/d1" "verify"
assert_contains "$out" "moved aside" "verify"
assert_not_exists "$chunk"
ls "$(dirname "$chunk")"/.bad.* >/dev/null || fail "the damaged copy is not kept"
pass "the damaged chunk is kept aside: $(ls -d "$(dirname "$chunk")"/.bad.*)"
# The same bytes in a new full backup: stored again, not deduplicated onto
# the bad copy.
backup d2 mode=full >/dev/null
assert_exists "$chunk"
out=$(ck verify) || fail "verify after the next backup: $out"
assert_contains "$out" "ok      $DOM/d1" "d1 healed"
assert_contains "$out" "ok      $DOM/d2" "d2 whole"
remount
cmp_both d1 "d1 healed"
cmp_both d2 "d2"
fi

pass "all"
