#!/bin/bash
# Sets everything up and runs every test:
#   1. the Debian packages (scripts/install-deps.sh)
#   2. build/       gcc, warnings as errors: unit + integration suites
#   3. build-san/   gcc with AddressSanitizer + UndefinedBehaviorSanitizer
#                   (leaks and UB are failures): unit + integration suites
#   4. build-fuzz/  clang + libFuzzer: the fuzz suite (60 s per target)
# Prints one summary line "tests: N passed, N failed, N skipped" and exits
# non-zero if anything failed.  Run as root on Debian 12.
set -uo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=

status=0
summaries=()

run_suite() {            # run_suite BUILDDIR MESON-TEST-ARGS...
  local dir=$1; shift
  echo "=== meson test -C $dir $*"
  if ! meson test -C "$dir" --print-errorlogs --no-rebuild "$@"; then
    status=1
  fi
  summaries+=("$dir/meson-logs/testlog.json")
}

./scripts/build.sh build -Db_sanitize=none || exit 1
run_suite build --suite unit --suite integration

./scripts/build.sh build-san -Db_sanitize=address,undefined -Db_lundef=false \
  -Dc_args=-fno-sanitize-recover=all || exit 1
run_suite build-san --suite unit --suite integration

CC=clang ./scripts/build.sh build-fuzz -Dfuzz=enabled -Db_sanitize=none \
  -Dbuildtype=debugoptimized || exit 1
run_suite build-fuzz --suite fuzz

# One closing line over all runs.
python3 - "${summaries[@]}" <<'PY' 2>/dev/null || status=1
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0, "TIMEOUT": 0, "ERROR": 0}
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            r = json.loads(line)["result"]
            counts[r] = counts.get(r, 0) + 1
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["ERROR"]
print(f"tests: {counts['OK']} passed, {failed} failed, {counts['SKIP']} skipped")
sys.exit(1 if failed else 0)
PY
exit $status
