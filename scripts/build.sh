#!/bin/bash
# Configures and builds one build directory.
#   scripts/build.sh DIR [meson options...]
# Warnings are errors.  Reconfigures an existing DIR with the options.
# Quiet on success; on failure prints the tail of meson's or ninja's output.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ -f "$dir/build.ninja" ]; then
  step=(meson configure "$dir" -Dwerror=true "$@")
else
  step=(meson setup "$dir" -Dwerror=true "$@")
fi
if ! "${step[@]}" >"$log" 2>&1 || ! ninja -C "$dir" >"$log" 2>&1; then
  echo "build: $dir FAILED:" >&2
  grep -E -A12 'error|FAILED|ERROR' "$log" | head -n 60 >&2 || tail -n 40 "$log" >&2
  exit 1
fi
echo "build: $dir ok"
