#!/usr/bin/env bash
# Whole suite, what CI runs (.ci/run): set the host up, then stages, each
# configure + build + ctest in its own build directory:
#   default  unit + integration tests                               build/
#   asan     unit + the core integration tests under ASan + UBSan   build-asan/
#            (every integration test with CKPTFS_CI_ASAN=all)
#   tsan     unit tests under ThreadSanitizer (integration too with
#            CKPTFS_CI_TSAN=all: it does not fit CI's 60 minutes)  build-tsan/
#   fuzz     every fuzz target for CKPTFS_FUZZ_SECONDS (clang)      build-fuzz/
# A failed stage does not stop the later ones. The end repeats every
# stage's ctest summary with its build and test times; the exit status is
# non-zero if any stage failed. Run as root from anywhere.
#
# Knobs (environment), e.g. for a quicker run by hand:
#   CKPTFS_CI_STAGES      the stages to run, default "default asan tsan fuzz"
#   CKPTFS_CI_ASAN        "core" (default): the unit tests and the integration
#                         tests of the daemon's main paths (live export, backup,
#                         kill, QEMU faults, control garbage, load) under ASan +
#                         UBSan; "all": every test; "unit": the unit tests only.
#                         The whole suite under a sanitizer takes 20-30 minutes
#                         on 2 cores, too long beside the default stage for
#                         CI's 60 minutes; run it by hand with "all".
#   CKPTFS_CI_TSAN        "unit" (default) or "all", the same for TSan
#   CKPTFS_FUZZ_SECONDS   seconds each fuzz target runs, default 30
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh || exit 1

read -r -a stages <<<"${CKPTFS_CI_STAGES:-default asan tsan fuzz}"
asan_tests=${CKPTFS_CI_ASAN:-core}
tsan_tests=${CKPTFS_CI_TSAN:-unit}
fuzz_seconds=${CKPTFS_FUZZ_SECONDS:-30}

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

asan_ctest=(-j2)
[[ $asan_tests == unit ]] && asan_ctest+=(-L unit)
[[ $asan_tests == core ]] && asan_ctest+=(-E 'integration[.]test_(bad_requests|checkpoints_external|clean_ends|clients|corruption|faults_libvirtd|kill_loop|security|store_cli|store_full|tree)$')
tsan_ctest=(-j2)
[[ $tsan_tests == unit ]] && tsan_ctest+=(-L unit)

for stage in "${stages[@]}"; do
  case $stage in
    default) run_stage default build --preset default -- ;;
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
