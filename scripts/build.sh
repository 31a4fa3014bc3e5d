#!/bin/bash
# Configures and builds one build directory.
#   scripts/build.sh DIR [meson options...]
# Warnings are errors.  Reconfigures an existing DIR with the options.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
if [ -f "$dir/build.ninja" ]; then
  meson configure "$dir" -Dwerror=true "$@" >/dev/null
else
  meson setup "$dir" -Dwerror=true "$@" >/dev/null
fi
ninja -C "$dir" >/dev/null
echo "build: $dir ok"
