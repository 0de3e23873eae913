#!/usr/bin/env bash
# Runs one test of a sanitizer build (presets asan, tsan) and fails it when a
# sanitizer wrote a report, even if the test itself passed or skipped.
#
#   sanitizer_check.sh LOG_DIR COMMAND [ARG...]
#
# CTest sets *SAN_OPTIONS=...:log_path=LOG_DIR/report for the test, so every
# instrumented process it starts writes its reports to LOG_DIR/report.<pid>:
# the daemon too, whose stderr is /dev/null once it has daemonised and which
# leaves with _exit(), so its exit status tells nobody anything.
set -uo pipefail

logs=$1
shift
rm -rf "$logs"
mkdir -p "$logs"

rc=0
"$@" || rc=$?

reports=()
for f in "$logs"/report*; do
  [[ -s "$f" ]] && reports+=("$f")
done
if ((${#reports[@]} == 0)); then
  exit "$rc"
fi
echo "sanitizer_check: ${#reports[@]} sanitizer report(s) (test exit status $rc):"
for f in "${reports[@]}"; do
  pid=${f##*.}
  echo "---- $f (pid $pid)"
  head -150 "$f"
done
exit 1
