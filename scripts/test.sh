#!/bin/bash
# Sets everything up and runs every test:
#   1. the Debian packages (scripts/install-deps.sh)
#   2. build/       gcc, warnings as errors: unit + integration suites
#   3. build-san/   gcc with AddressSanitizer + UndefinedBehaviorSanitizer
#                   (leaks and UB are failures): unit + integration suites
#   4. build-fuzz/  clang + libFuzzer: the fuzz suite (fuzz-nbdsrv 60 s, the
#                   others 30 s; one target per core at a time)
# Prints one summary line "tests: N passed, N failed, N skipped" (a build
# that fails counts as one failed test) and exits non-zero if anything
# failed.  Run as root on Debian 12.
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

build_failed=0
build() {               # build DIR OPTIONS...: a failed build counts as a failure
  if ! ./scripts/build.sh "$@"; then
    status=1
    build_failed=$((build_failed + 1))
    return 1
  fi
}

if build build -Db_sanitize=none; then
  run_suite build --suite unit --suite integration
fi

if build build-san -Db_sanitize=address,undefined -Db_lundef=false \
     -Dc_args=-fno-sanitize-recover=all; then
  run_suite build-san --suite unit --suite integration
fi

if CC=clang build build-fuzz -Dfuzz=enabled -Db_sanitize=none \
     -Dbuildtype=debugoptimized; then
  run_suite build-fuzz --suite fuzz
fi

# One closing line over all runs.
python3 - "$build_failed" "${summaries[@]}" <<'PY' || status=1
import json, sys
counts = {"OK": 0, "FAIL": int(sys.argv[1]), "SKIP": 0, "TIMEOUT": 0, "ERROR": 0}
for path in sys.argv[2:]:
    with open(path) as f:
        for line in f:
            r = json.loads(line)["result"]
            counts[r] = counts.get(r, 0) + 1
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["ERROR"]
print(f"tests: {counts['OK']} passed, {failed} failed, {counts['SKIP']} skipped")
sys.exit(1 if failed else 0)
PY
exit $status
