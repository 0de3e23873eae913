#!/usr/bin/env bash
# Whole suite, what CI runs (.ci/run): set the host up, then stages, each
# configure + build + ctest in its own build directory:
#   default  unit + integration tests                               build/
#   asan     the same under ASan + UBSan                            build-asan/
#   tsan     the same under ThreadSanitizer                         build-tsan/
#   fuzz     every fuzz target for CKPTFS_FUZZ_SECONDS (clang)      build-fuzz/
# In the sanitizer stages the daemon the integration tests start is the
# instrumented one, and a sanitizer report fails the test. Integration tests
# run three at a time (each has its own domains, mount and store; most of
# their time is spent waiting on QEMU and libvirt); test_faults_libvirtd,
# which restarts libvirtd, runs alone. A failed stage does not stop the later
# ones. The end repeats every stage's ctest summary with its build and test
# times; the exit status is non-zero if any stage failed. Run as root from
# anywhere.
#
# Knobs (environment), e.g. for a quicker run by hand:
#   CKPTFS_CI_STAGES      the stages to run, default "default asan tsan fuzz"
#   CKPTFS_CI_ASAN        "all" (default) or "unit": the tests of the asan stage
#   CKPTFS_CI_TSAN        "all" (default) or "unit": the same for tsan
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
san_ctest() {  # KNOB
  case ${!1:-all} in
    all) echo "-j$jobs" ;;
    unit) echo "-j$jobs -L unit" ;;
    *) return 1 ;;
  esac
}
for knob in CKPTFS_CI_ASAN CKPTFS_CI_TSAN; do
  san_ctest "$knob" >/dev/null || usage "$knob must be all or unit, not '${!knob}'"
done
read -r -a asan_ctest <<<"$(san_ctest CKPTFS_CI_ASAN)"
read -r -a tsan_ctest <<<"$(san_ctest CKPTFS_CI_TSAN)"

bash scripts/setup.sh || exit 1

summary=()
failed=0

# run_stage NAME BUILD_DIR CONFIGURE_ARGS -- CTEST_ARGS
run_stage() {
  local name=$1 dir=$2
  shift 2
  local configure=()
  while [[ $1 != -- ]]; do
    configure+=("$1")
    shift
  done
  shift
  local t0=$SECONDS build_s test_s="-" rc=0 result
  echo "==== stage $name: configure + build ($dir)"
  if cmake "${configure[@]}" && cmake --build --preset "$name" -j2; then
    build_s=$((SECONDS - t0))
    echo "==== stage $name: ctest ($*)"
    t0=$SECONDS
    ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$dir/ci-ctest.log"
    rc=${PIPESTATUS[0]}
    test_s=$((SECONDS - t0))
    result=$(grep -E 'tests passed|No tests were found' "$dir/ci-ctest.log" | tail -1)
    # ctest's list of failed tests, kept for the summary at the end.
    result+=$(sed -n '/^The following tests FAILED:/,$p' "$dir/ci-ctest.log" |
      grep -E '^[[:space:]]+[0-9]+ - ' | sed 's/^[[:space:]]*/\n    /')
  else
    rc=1
    build_s=$((SECONDS - t0))
    result="configure or build failed"
  fi
  ((rc == 0)) || failed=1
  summary+=("$(printf '%-8s build %5ss  tests %5ss  %s  %s' "$name" "$build_s" \
    "$test_s" "$( ((rc == 0)) && echo ok || echo FAILED)" "$result")")
  echo "==== stage $name: $( ((rc == 0)) && echo ok || echo FAILED) (build ${build_s}s, tests ${test_s}s)"
}

for stage in "${stages[@]}"; do
  case $stage in
    default) run_stage default build --preset default -- "-j$jobs" ;;
    asan) run_stage asan build-asan --preset asan -- "${asan_ctest[@]}" ;;
    tsan) run_stage tsan build-tsan --preset tsan -- "${tsan_ctest[@]}" ;;
    # Two fuzzers at a time: each uses one core.
    fuzz)
      run_stage fuzz build-fuzz --preset fuzz \
        "-DCKPTFS_FUZZ_SECONDS=$fuzz_seconds" -- -L fuzz -j2
      ;;
    *)
      echo "unknown stage '$stage' (CKPTFS_CI_STAGES)"
      failed=1
      ;;
  esac
done

echo "==== summary"
for line in "${summary[@]}"; do echo "$line"; done
exit "$failed"
