#!/usr/bin/env bash
# thunder — hashing throughput: `thunderctl image add` against sha256sum.
#
# Usage: bench/bench-hash.sh [FILE]
#
# Without FILE, makes a file of BENCH_HASH_MB MiB (default 1024) of
# random-ish data in a temporary directory.  With FILE, hashes that file
# (its manifest is written to a temporary directory via a symlink, so
# nothing is left beside it).  The page cache is warmed first, so both
# tools are measured on cached data: this compares hashing, not the disk.
# Each tool runs BENCH_HASH_RUNS times (default 3); the best run counts.
#
# Environment:
#   THUNDERCTL       thunderctl to run (default ./build/src/cli/thunderctl)
#   BENCH_HASH_MB    size of the generated file in MiB (default 1024)
#   BENCH_HASH_RUNS  runs per tool (default 3)
#   BENCH_HASH_ARGS  extra arguments for `thunderctl image add`
#
# The target: thunder hashes at least 0.8 times as fast as sha256sum
# (ratio = thunder MB/s / sha256sum MB/s).  Exit status 0 whether or not
# the target holds; 1 on errors.
set -euo pipefail

thunderctl=${THUNDERCTL:-./build/src/cli/thunderctl}
mb=${BENCH_HASH_MB:-1024}
runs=${BENCH_HASH_RUNS:-3}
target=0.8

die() { echo "bench-hash: $*" >&2; exit 1; }

[[ $mb =~ ^[1-9][0-9]*$ ]] || die "BENCH_HASH_MB '$mb': must be a positive number"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_HASH_RUNS '$runs': must be a positive number"
[[ -x $thunderctl ]] || die "$thunderctl: not executable; build first or set THUNDERCTL"
command -v sha256sum >/dev/null || die "sha256sum: not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

if [[ $# -ge 1 ]]; then
    [[ -f $1 ]] || die "$1: not a regular file"
    src=$(readlink -f -- "$1")
    file=$tmp/image.raw
    ln -s -- "$src" "$file"
else
    file=$tmp/image.raw
    # Random-ish and cheap: one random MiB repeated with a varying
    # counter header, so blocks differ and nothing compresses away.
    head -c 1048576 /dev/urandom > "$tmp/seed"
    for ((i = 0; i < mb; i++)); do
        printf '%016d' "$i"
        tail -c +17 "$tmp/seed"
    done > "$file"
    rm -f "$tmp/seed"
fi

bytes=$(stat -L -c %s -- "$file")
(( bytes > 0 )) || die "$file: empty"

# Warm the page cache (twice: the second pass confirms it fits).
cat -- "$file" > /dev/null
cat -- "$file" > /dev/null

# Prints the wall-clock seconds of the best of $runs runs of "$@".
best_of() {
    local best="" t0 t1 s
    for ((r = 0; r < runs; r++)); do
        t0=$(date +%s%N)
        "$@" > /dev/null
        t1=$(date +%s%N)
        s=$(( t1 - t0 ))
        if [[ -z $best ]] || (( s < best )); then best=$s; fi
    done
    awk -v ns="$best" 'BEGIN { printf "%.3f", ns / 1e9 }'
}

sha_s=$(best_of sha256sum -- "$file")
# shellcheck disable=SC2086  # BENCH_HASH_ARGS is a list of words
thunder_s=$(best_of "$thunderctl" image add bench "$file" ${BENCH_HASH_ARGS:-})

awk -v bytes="$bytes" -v sha="$sha_s" -v thu="$thunder_s" -v target="$target" \
    -v cpus="$(nproc)" -v args="${BENCH_HASH_ARGS:-(defaults)}" '
function mbps(s) { return s > 0 ? bytes / 1e6 / s : 0 }
BEGIN {
    printf "file: %d bytes (%.0f MiB), page cache warm, %d CPUs, best of runs\n",
           bytes, bytes / 1048576, cpus
    printf "thunderctl image add arguments: %s\n\n", args
    printf "%-22s %9s %10s %7s\n", "tool", "seconds", "MB/s", "ratio"
    printf "%-22s %9.3f %10.1f %7.2f\n", "sha256sum", sha, mbps(sha), 1
    ratio = mbps(sha) > 0 ? mbps(thu) / mbps(sha) : 0
    printf "%-22s %9.3f %10.1f %7.2f\n", "thunderctl image add", thu, mbps(thu), ratio
    verdict = (ratio >= target) ? "met" : "NOT met"
    printf "\ntarget: ratio >= %.1f: %s\n", target, verdict
}'
