#!/usr/bin/env bash
# Runs one fuzz target for CTest (fuzz.<target>): fuzzes a scratch copy of
# its checked-in seed corpus for a bounded time, so the checkout never
# changes, and fails on any crash, leak, UB report, failed invariant or
# timeout. The input that failed is kept in WORK/ and printed as hex.
#
#   run_fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS [DICT]
set -uo pipefail

fuzzer=$1 seeds=$2 work=$3 seconds=$4 dict=${5:-}
name=$(basename "$fuzzer")

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp -r "$seeds"/. "$work/corpus/"

args=(
  -max_total_time="$seconds"
  -timeout=10            # a single input taking 10 s is a hang
  -rss_limit_mb=2048
  -max_len=16384
  -print_final_stats=1
  -artifact_prefix="$work/artifacts/"
)
[[ -n "$dict" ]] && args+=(-dict="$dict")

echo "$name: fuzzing for ${seconds}s from $(find "$seeds" -type f | wc -l) seeds (work dir $work)"
rc=0
# Every seed runs first; then libFuzzer mutates. New inputs go to the copy.
"$fuzzer" "${args[@]}" "$work/corpus" >"$work/log" 2>&1 || rc=$?
grep -E '^(#[0-9]+ +(INITED|DONE)|stat::|Done )' "$work/log" | tail -8
if ((rc != 0)); then
  echo "$name: FAILED (exit $rc); the report:"
  # From the first sanitizer, invariant or libFuzzer error line on.
  start=$(grep -n -m1 -E 'ERROR: |invariant failed|runtime error|deadly signal|uncaught exception|terminate called' "$work/log" | cut -d: -f1)
  if [[ -n "$start" ]]; then
    sed -n "$((start > 3 ? start - 3 : 1)),+80p" "$work/log"
  else
    tail -60 "$work/log"
  fi
  for f in "$work"/artifacts/*; do
    [[ -f "$f" ]] || continue
    echo "$name: failing input $f ($(stat -c %s "$f") bytes):"
    head -c 1024 "$f" | od -An -tx1 -v | head -40
    echo "reproduce: $fuzzer $f"
  done
  exit 1
fi
echo "$name: OK, $(find "$work/corpus" -type f | wc -l) inputs in the corpus now"
