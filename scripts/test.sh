#!/usr/bin/env bash
# Whole suite, what CI runs (.ci/run): set the host up, then stages, each
# configure + build + ctest in its own build directory:
#   default  unit + integration tests                               build/
#   asan     unit + about half the integration tests, ASan + UBSan  build-asan/
#   tsan     unit + the other half (a few in both), TSan            build-tsan/
#   fuzz     every fuzz target for CKPTFS_FUZZ_SECONDS (clang)      build-fuzz/
# In the sanitizer stages the daemon the integration tests start is the
# instrumented one, and a sanitizer report fails the test. Integration tests
# run three at a time (each has its own domains, mount and store; most of
# their time is spent waiting on QEMU and libvirt); test_faults_libvirtd,
# which restarts libvirtd, runs alone. Each stage after the first is built in
# the background (nice 19, idle I/O class) while the stage before it runs its
# tests. A failed stage does not stop the later ones. The end repeats every
# stage's ctest summary with its build and test times; the exit status is
# non-zero if any stage failed. Run as root from anywhere.
#
# Knobs (environment), e.g. for a quicker run by hand:
#   CKPTFS_CI_STAGES      the stages to run, default "default asan tsan fuzz"
#   CKPTFS_CI_ASAN        the tests of the asan stage: "split" (default: the
#                         unit tests and the integration tests labelled asan in
#                         tests/CMakeLists.txt), "all" or "unit"
#   CKPTFS_CI_TSAN        the same for tsan (label tsan)
#   CKPTFS_CI_JOBS        tests run at once, default 3
#   CKPTFS_FUZZ_SECONDS   seconds each fuzz target runs, default 20
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a stages <<<"${CKPTFS_CI_STAGES:-default asan tsan fuzz}"
jobs=${CKPTFS_CI_JOBS:-3}
fuzz_seconds=${CKPTFS_FUZZ_SECONDS:-20}
usage() {
  echo "test.sh: $*" >&2
  exit 2
}
[[ $jobs =~ ^[1-9][0-9]?$ ]] || usage "CKPTFS_CI_JOBS must be a number from 1 to 99, not '$jobs'"
# A sanitizer stage's tests: CKPTFS_CI_ASAN / CKPTFS_CI_TSAN.
san_ctest() {  # KNOB LABEL
  case ${!1:-split} in
    split) echo "-j$jobs -L ^(unit|$2)\$" ;;
    all) echo "-j$jobs" ;;
    unit) echo "-j$jobs -L unit" ;;
    *) return 1 ;;
  esac
}
for knob in CKPTFS_CI_ASAN CKPTFS_CI_TSAN; do
  san_ctest "$knob" x >/dev/null || usage "$knob must be split, all or unit, not '${!knob}'"
done
read -r -a asan_ctest <<<"$(san_ctest CKPTFS_CI_ASAN asan)"
read -r -a tsan_ctest <<<"$(san_ctest CKPTFS_CI_TSAN tsan)"

bash scripts/setup.sh || exit 1

summary=()
failed=0
logs=$(mktemp -d /tmp/ckptfs-ci.XXXXXX)

# A stage's configure + build arguments, by name.
stage_configure() {  # NAME -> configure args, one per line
  case $1 in
    default) printf '%s\n' --preset default ;;
    asan) printf '%s\n' --preset asan ;;
    tsan) printf '%s\n' --preset tsan ;;
    fuzz) printf '%s\n' --preset fuzz "-DCKPTFS_FUZZ_SECONDS=$fuzz_seconds" ;;
    *) return 1 ;;
  esac
}
stage_dir() {  # NAME
  case $1 in
    default) echo build ;;
    *) echo "build-$1" ;;
  esac
}
stage_ctest() {  # NAME -> ctest args, one per line
  case $1 in
    default) echo "-j$jobs" ;;
    asan) printf '%s\n' "${asan_ctest[@]}" ;;
    tsan) printf '%s\n' "${tsan_ctest[@]}" ;;
    # Two fuzzers at a time: each uses one core.
    fuzz) printf '%s\n' -L fuzz -j2 ;;
  esac
}

# build_stage NAME: configure + build, output to $logs/NAME.build, exit
# status to $logs/NAME.rc, wall seconds to $logs/NAME.secs.
build_stage() {
  local name=$1 t0=$SECONDS rc=0 configure
  mapfile -t configure < <(stage_configure "$name")
  {
    cmake "${configure[@]}" && cmake --build --preset "$name" -j2
  } >"$logs/$name.build" 2>&1 || rc=$?
  echo $((SECONDS - t0)) >"$logs/$name.secs"
  echo "$rc" >"$logs/$name.rc"
}

# Builds overlap the previous stage's tests: the next stage is configured
# and built in the background at the lowest CPU and I/O priority while a
# stage's ctest runs. The tests spend most of their time waiting on QEMU,
# libvirt and FUSE round trips, so the build takes the idle CPU, and at
# nice 19 it gets about 1/70 of a core the tests want. This keeps the
# whole run under CI's hour on two cores (about 20 minutes of it is
# compiling four builds).
bg_pid=0
start_build_in_background() {  # NAME
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    ionice -c 3 -p "$BASHPID" 2>/dev/null || true
    build_stage "$1"
  ) &
  bg_pid=$!
}

# run_stage NAME BUILT_IN_BACKGROUND NEXT_STAGE
run_stage() {
  local name=$1 background=$2 next=$3 dir build_s test_s="-" rc=0 result
  dir=$(stage_dir "$name")
  if [[ $background == 1 ]]; then
    echo "==== stage $name: waiting for its background build ($dir)"
    wait "$bg_pid"
  else
    echo "==== stage $name: configure + build ($dir)"
    build_stage "$name"
  fi
  cat "$logs/$name.build"
  build_s=$(cat "$logs/$name.secs")
  [[ -n $next ]] && start_build_in_background "$next"
  if [[ $(cat "$logs/$name.rc") == 0 ]]; then
    local ctest_args
    mapfile -t ctest_args < <(stage_ctest "$name")
    echo "==== stage $name: ctest (${ctest_args[*]})"
    local t0=$SECONDS
    ctest --test-dir "$dir" --output-on-failure "${ctest_args[@]}" 2>&1 |
      tee "$dir/ci-ctest.log"
    rc=${PIPESTATUS[0]}
    test_s=$((SECONDS - t0))
    result=$(grep -E 'tests passed|No tests were found' "$dir/ci-ctest.log" | tail -1)
    # ctest's list of failed tests, kept for the summary at the end.
    result+=$(sed -n '/^The following tests FAILED:/,$p' "$dir/ci-ctest.log" |
      grep -E '^[[:space:]]+[0-9]+ - ' | sed 's/^[[:space:]]*/\n    /')
  else
    rc=1
    result="configure or build failed"
  fi
  ((rc == 0)) || failed=1
  summary+=("$(printf '%-8s build %5ss  tests %5ss  %s  %s' "$name" "$build_s" \
    "$test_s" "$( ((rc == 0)) && echo ok || echo FAILED)" "$result")")
  echo "==== stage $name: $( ((rc == 0)) && echo ok || echo FAILED) (build ${build_s}s, tests ${test_s}s)"
}

for stage in "${stages[@]}"; do
  if ! stage_configure "$stage" >/dev/null; then
    echo "unknown stage '$stage' (CKPTFS_CI_STAGES)"
    failed=1
  fi
done
if ((failed == 0)); then
  t_all=$SECONDS
  background=0
  for ((i = 0; i < ${#stages[@]}; i++)); do
    run_stage "${stages[i]}" "$background" "${stages[i + 1]:-}"
    background=1
  done
fi

echo "==== summary (build times overlap the previous stage's tests; wall $((SECONDS - ${t_all:-$SECONDS}))s)"
for line in "${summary[@]}"; do echo "$line"; done
rm -rf "$logs"
exit "$failed"
