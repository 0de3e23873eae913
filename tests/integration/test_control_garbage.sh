#!/usr/bin/env bash
# Garbage at every control file (checkpoint, release, backup): junk text,
# a 1 MiB line, 64 MiB written in 64 KiB pieces, binary data with NULs and
# invalid UTF-8, partial lines, a request split over two writes, and every
# way to change control/ itself. Each bad write fails with EINVAL (a clear
# error, a "rejected" job record) and changes nothing: no checkpoint in
# libvirt, no job, the same tree, the same store. Then 16 processes write
# valid and invalid lines at once: every valid request is handled (one per
# domain at a time, the others EBUSY), every invalid one is EINVAL, and what
# succeeded reads back byte-identical. The daemon's memory stays bounded
# and it keeps serving. (test_bad_requests.sh covers single malformed lines.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DOM=$(dom_name)
DOM2=$(dom_name two)
STORE="$CKT_WORK/store"

# VmRSS less what the block cache holds (images come and go meanwhile).
rss_kib() {
  local rss cache
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$CKT_PID/status")
  cache=$(json_get "$CKT_MP/control/status.json" cache.bytes)
  echo $((rss - cache / 1024))
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$CKT_PID/status"; }
# GROWTH_KIB < LIMIT_KIB, except under a sanitizer (CKT_SANITIZER, set by
# CTest in the asan and tsan builds), where RSS measures the sanitizer: ASan
# keeps 256 MiB of freed memory in quarantine, TSan shadows every byte.
# There LeakSanitizer (asan build) checks what the daemon keeps.
rss_within() {  # GROWTH_KIB LIMIT_KIB
  [[ -n ${CKT_SANITIZER:-} ]] || (($1 < $2))
}
njobs() { find "$CKT_MP/control/jobs" -maxdepth 1 -name '*.json' | wc -l; }

state_of() {
  local d
  for d in "$DOM" "$DOM2"; do
    echo "$d checkpoints: $(checkpoint_names "$d" | tr '\n' ' ')"
    echo "$d job: $(job_type "$d")"
    echo "$d tree: $(ls -A "$CKT_MP/domains/$d" | sort | tr '\n' ' ')"
  done
  # (other tests' domains come and go: only ours)
  echo "domains: $(find "$CKT_MP/domains" -mindepth 1 -maxdepth 1 -name "*-$$*" -printf '%f\n' | sort | tr '\n' ' ')"
  echo "control: $(ls -A "$CKT_MP/control" | sort | tr '\n' ' ')"
  echo "store: $(find "$STORE/backups" -type f 2>/dev/null | sort | tr '\n' ' ')"
}

# Writes to control/FILE what the python expression PAYLOADS (a list of
# bytes, one write each, in one open) yields; prints "n errno-name..." for
# the writes. Every write must fail with EINVAL; the state must not change.
expect_einval() {  # FILE WHAT PYTHON-EXPR
  local before after out
  before=$(state_of)
  out=$(timeout 600 python3 - "$CKT_MP/control/$1" "$3" <<'PY'
import collections, errno, os, sys
path, expr = sys.argv[1], sys.argv[2]
payloads = eval(expr)
fd = os.open(path, os.O_RDWR)
seen = collections.Counter()
reply = b""
for p in payloads:
    try:
        n = os.write(fd, p)
        seen["OK" if n == len(p) else f"SHORT_{n}"] += 1
    except OSError as e:
        seen[errno.errorcode.get(e.errno, str(e.errno))] += 1
        reply = os.pread(fd, 65536, 0)
os.close(fd)
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())))
print(reply.decode(errors="replace").strip())
PY
  ) || fail "$2: the writer hung or failed"
  local counts reply
  counts=$(sed -n 1p <<<"$out")
  reply=$(sed -n 2p <<<"$out")
  [[ "$counts" =~ ^EINVAL=[0-9]+$ ]] || fail "control/$1 $2: expected only EINVAL, got $counts ($reply)"
  assert_eq "$(json_str_get "$reply" state)" rejected "control/$1 $2: reply state"
  local err
  err=$(json_str_get "$reply" error)
  [[ -n "$err" && ${#err} -lt 400 ]] || fail "control/$1 $2: error text [$err]"
  after=$(state_of)
  [[ "$before" == "$after" ]] || fail "control/$1 $2 changed the state:
--- before
$before
--- after
$after"
  pass "control/$1 $2: $counts, \"$err\""
}

RAW="$CKT_WORK/random.raw"
head -c 48M /dev/urandom >"$RAW"
truncate -s 64M "$RAW"
make_domain "$DOM" 64M 64M
make_domain "$DOM2" "raw:$RAW"
ckpt_mount --store "$STORE" --cache-size 64M
D="$CKT_MP/domains/$DOM"
D2="$CKT_MP/domains/$DOM2"
wait_for "$D appears" 30 test -d "$D"
wait_for "$D2 appears" 30 test -d "$D2"
guest_write "$DOM" 0 0x41 0 1M
guest_write "$DOM" 1 0x42 4M 1M
mark "$DOM" cp0
ctl_ok checkpoint "$DOM name=cp0" >/dev/null
mark "$DOM2" b0
wait_job "$(ctl_accepted backup "$DOM2 name=b0")" succeeded
cmp_image "$D/cp0/vda.img" "$(expected_file "$DOM" 0 cp0)" "cp0 vda.img"
# Warm up whatever the daemon allocates once (threads, catalog pages).
for f in checkpoint release backup; do ctl "$f" "warm up" >/dev/null; done
rss0=$(rss_kib)
say "daemon VmRSS (less the block cache) before the garbage: $rss0 KiB"

# ----------------------------------------------------------------- junk text
for f in checkpoint release backup; do
  expect_einval "$f" "junk text" "[b'!!@@ ## \$\$ %%\n', b'$DOM name=ok junk\n', b'$DOM =\n',
    b'$DOM name=a name=b\n', b'$DOM bogus=1\n', b'$DOM name=\xc3\xbcn\xc3\xafc\xc3\xb6de\n',
    b'$DOM name=../../etc\n', b'$DOM name=.hidden\n', b'$DOM disks=../vda\n',
    b'garbage\r\r\n', b'\n', b'\r\n', b'\t \t\n', b'$DOM cp0 cp0 cp0\n', b'=\n', b'$DOM mode=\n']"
done
expect_einval backup "bad backup keys" "[b'$DOM mode=sideways\n', b'$DOM checkpoint=cp0 name=x\n',
  b'$DOM mode=full mode=full\n', b'$DOM checkpoint=../cp0\n', b'$DOM disks=vda\n']"
expect_einval release "bad release lines" "[b'$DOM\n', b'$DOM cp0 extra\n', b'$DOM name=cp0\n', b'$DOM ../cp0\n']"

# ----------------------------------------------------------------- huge lines
for f in checkpoint release backup; do
  expect_einval "$f" "a 1 MiB line" "[b'$DOM name=' + b'a' * (1 << 20) + b'\n']"
  expect_einval "$f" "a 4097-byte line" "[b'$DOM name=' + b'b' * (4097 - len(b'$DOM name=') - 1) + b'\n']"
done
t0=$SECONDS
expect_einval checkpoint "64 MiB in 64 KiB writes" "[b'x' * 65535 + b'\n'] * 1024"
say "64 MiB of garbage rejected in $((SECONDS - t0)) s"
expect_einval backup "4 MiB of one line in 4 KiB writes" "[b'$DOM name=' + b'c' * 4000] + [b'd' * 4096] * 1023 + [b'\n']"

# ----------------------------------------------------------------- binary
for f in checkpoint release backup; do
  expect_einval "$f" "binary" "[os.urandom(4096) for _ in range(64)] + [b'\x00' * 4096, b'$DOM\x00 name=x\n',
    b'$DOM name=\xff\xfe\n', b'$DOM name=x\x1b[2J\n', b'$DOM\x7f\n', b'\xff\xfe$DOM\n',
    b'$DOM\xc3\n', b'\xc0\xaf$DOM\n', b'$DOM\xed\xa0\x80\n']"
done

# ----------------------------------------------------------------- partial lines
for f in checkpoint release backup; do
  expect_einval "$f" "a partial line, then close" "[b'$DOM na=']"
  expect_einval "$f" "a request split over two writes" "[b'$DOM name=', b'=x\n']"
done
# A valid request needs no newline (each write is one request), so a valid
# first half of a split request acts on its own: documented, and shown here.
err=$(ctl_hex checkpoint "$(printf '%s name=nonl' "$DOM" | od -An -tx1 | tr -d ' \n')")
assert_eq "$err" OK "a request without a newline"
assert_exists "$D/nonl"
assert_not_exists "$D/cp0"
ctl_ok release "$DOM nonl" >/dev/null
ctl_ok checkpoint "$DOM name=cp0b" >/dev/null   # the live checkpoint again
mark "$DOM" cp0b

# ----------------------------------------------------------------- control/ itself
C="$CKT_MP/control"
assert_fsop EROFS write "$C/status.json"
assert_fsop EROFS rdwr "$C/status.json"
assert_fsop EROFS write "$(ls "$C"/jobs/*.json | sed -n 1p)"
assert_fsop EROFS create "$C/new"
assert_fsop EROFS create "$C/jobs/new.json"
assert_fsop EROFS mkdir "$C/dir"
assert_fsop EROFS unlink "$C/checkpoint"
assert_fsop EROFS rename "$C/checkpoint" "$C/checkpoint2"
assert_fsop EROFS chmod "$C/backup"
assert_fsop EROFS symlink "$C/link" checkpoint
assert_fsop EROFS rmdir "$C/jobs"
assert_fsop OK truncate "$C/checkpoint"   # shells open with O_TRUNC
assert_fsop OK rdwr "$C/release"

rss1=$(rss_kib)
say "daemon VmRSS (less the block cache) after the garbage: $rss1 KiB (before: $rss0 KiB); $(njobs) job records"
rss_within $((rss1 - rss0)) 32768 || fail "daemon VmRSS grew by $(((rss1 - rss0) / 1024)) MiB under garbage"
# Bounded, not just small: the same flood again (to every control file) adds
# nothing that stays.
for f in checkpoint release backup; do
  expect_einval "$f" "64 MiB more in 64 KiB writes" "[b'z' * 65535 + b'\n'] * 1024"
done
rss1b=$(rss_kib)
say "daemon VmRSS (less the block cache) after three more floods: $rss1b KiB"
rss_within $((rss1b - rss1)) 8192 || fail "daemon VmRSS grew by $(((rss1b - rss1) / 1024)) MiB over three more floods"
(($(njobs) <= 1000)) || fail "$(njobs) job records kept (at most 1000)"

# ----------------------------------------------------------------- 16 at once
RESULTS="$CKT_WORK/concurrent.txt"
timeout 600 python3 - "$CKT_MP/control" "$DOM" "$DOM2" "$RESULTS" <<'PY'
import errno, json, multiprocessing as mp, os, sys
ctl, dom, dom2, out = sys.argv[1:5]

def request(f, line):
    fd = os.open(os.path.join(ctl, f), os.O_RDWR)
    try:
        os.write(fd, line)
        err = "OK"
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    reply = os.pread(fd, 65536, 0)
    os.close(fd)
    try:
        r = json.loads(reply)
    except ValueError:
        r = {"state": "<no JSON reply>", "id": ""}
    text = "".join(c if c.isprintable() else "?" for c in line.decode(errors="replace").strip())
    return [f, text[:60], err, r.get("state"), r.get("id", ""), r.get("error", "")[:200]]

def worker(k, barrier, q):
    barrier.wait()
    res = []
    for r in range(3):
        if k < 4:
            res.append(["valid"] + request("checkpoint", f"{dom} name=ck{k}{r}\n".encode()))
        elif k < 8:
            res.append(["valid"] + request("backup", f"{dom2} name=bk{k}{r} mode=full\n".encode()))
        elif k < 10:
            res.append(["valid"] + request("release", f"{dom} cp0b\n".encode()))
        else:
            f = ("checkpoint", "release", "backup")[(k + r) % 3]
            bad = [os.urandom(512), f"{dom} name=bad/{k}{r}\n".encode(),
                   b"y" * 5000, f"{dom2} mode=none\n".encode()][(k + r) % 4]
            res.append(["bad"] + request(f, bad))
    q.put(res)

barrier = mp.Barrier(16)
q = mp.Queue()
ps = [mp.Process(target=worker, args=(k, barrier, q)) for k in range(16)]
for p in ps:
    p.start()
rows = [row for _ in ps for row in q.get(timeout=500)]
for p in ps:
    p.join()
with open(out, "w") as f:
    for row in rows:
        f.write("\t".join(row) + "\n")
PY
say "16 concurrent writers: $(cut -f1,2,4 "$RESULTS" | sort | uniq -c | tr '\n' ';' | tr -s ' \t' '  ')"
wait_for "no job running" 300 bash -c "grep -q '\"jobs_running\": 0' '$CKT_MP/control/status.json'"
ok_ck=() ok_bk=()
while IFS=$'\t' read -r kind f line err st id msg; do
  if [[ "$kind" == bad ]]; then
    [[ "$err" == EINVAL && "$st" == rejected ]] || fail "concurrent garbage [$line] to $f: $err $st $msg"
    continue
  fi
  name=$(sed -n 's/.*name=\([^ ]*\).*/\1/p' <<<"$line")
  case "$err" in
    OK)
      case $f in
        checkpoint) assert_eq "$st" succeeded "concurrent $line"; ok_ck+=("$name") ;;
        backup) ok_bk+=("$name"); wait_job "$id" succeeded ;;
        release) assert_eq "$st" succeeded "concurrent release" ;;
      esac
      ;;
    EBUSY)
      assert_eq "$st" rejected "concurrent $f [$line] EBUSY"
      [[ -z "$name" ]] || ! { checkpoint_names "$DOM"; checkpoint_names "$DOM2"; } | grep -qx "$name" \
        || fail "concurrent $f [$line] got EBUSY but created checkpoint $name"
      ;;
    ENOENT)
      [[ $f == release ]] || fail "concurrent $f [$line]: ENOENT"
      ;;
    *) fail "concurrent $f [$line]: $err ($st): $msg" ;;
  esac
done <"$RESULTS"
((${#ok_ck[@]} > 0)) || fail "no concurrent checkpoint request succeeded"
((${#ok_bk[@]} > 0)) || fail "no concurrent backup request succeeded"
# libvirt has exactly the checkpoints that succeeded (plus the earlier ones).
want=$(printf '%s\n' cp0 nonl cp0b "${ok_ck[@]}" | sort)
assert_eq "$(checkpoint_names "$DOM" | tr '\n' ' ')" "$(tr '\n' ' ' <<<"$want")" "$DOM checkpoints in libvirt"
want=$(printf '%s\n' b0 "${ok_bk[@]}" | sort)
assert_eq "$(checkpoint_names "$DOM2" | tr '\n' ' ')" "$(tr '\n' ' ' <<<"$want")" "$DOM2 checkpoints in libvirt"
# One live checkpoint of DOM at most, one of those that succeeded.
live=$(find "$D" -mindepth 1 -maxdepth 1 ! -name latest -printf '%f\n')
assert_eq "$(wc -w <<<"$live")" 1 "$DOM live checkpoints ($live)"
printf '%s\n' "${ok_ck[@]}" | grep -qx "$live" || fail "$DOM serves $live, not one that succeeded (${ok_ck[*]})"
cmp_image "$D/$live/vda.img" "$(expected_file "$DOM" 0)" "$live vda.img"
cmp_image "$D/$live/vdb.img" "$(expected_file "$DOM" 1)" "$live vdb.img"
for b in b0 "${ok_bk[@]}"; do
  cmp_image "$D2/$b/vda.img" "$(expected_file "$DOM2" 0 b0)" "$b vda.img"
done
say "concurrent: checkpoints ${ok_ck[*]} and backups ${ok_bk[*]} succeeded"

rss2=$(rss_kib)
say "daemon VmRSS (less the block cache) at the end: $rss2 KiB, VmHWM $(hwm_kib) KiB; catalog $(stat -c %s "$STORE/catalog.db") bytes"
rss_within $((rss2 - rss0)) 65536 || fail "daemon VmRSS grew by $(((rss2 - rss0) / 1024)) MiB"
# Still serving: a fresh request and a fresh read.
ctl_ok release "$DOM $live" >/dev/null
assert_no_job "$DOM"
ckpt_umount
