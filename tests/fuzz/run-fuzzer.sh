#!/bin/sh
# thunder — runs one libFuzzer target for a fixed time on a private copy
# of its seed corpus (the source tree is never written).
#
# Usage: run-fuzzer.sh FUZZER CORPUS_DIR ARTIFACT_DIR [LIBFUZZER_ARGS...]
#
# Exit status: the fuzzer's (0 when it found nothing).  A crash leaves its
# reproducer in ARTIFACT_DIR (crash-*, leak-*, timeout-*, oom-*); replay
# it with: FUZZER ARTIFACT_DIR/crash-...
set -eu

if [ $# -lt 3 ]; then
  echo "usage: $0 FUZZER CORPUS_DIR ARTIFACT_DIR [ARGS...]" >&2
  exit 2
fi
fuzzer=$1
corpus=$2
artifacts=$3
shift 3

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cp -R "$corpus"/. "$work"/
mkdir -p "$artifacts"

# libFuzzer exits 77 on a finding by default, which meson reads as a
# skipped test: findings exit 1 here.
status=0
"$fuzzer" -error_exitcode=1 "$@" -artifact_prefix="$artifacts"/ "$work" ||
  status=$?
if [ "$status" -eq 77 ]; then
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "$0: $fuzzer failed ($status); reproducers in $artifacts:" >&2
  ls -l "$artifacts" >&2 || true
fi
exit "$status"
