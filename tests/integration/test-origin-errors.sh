#!/usr/bin/env bash
# thunder — every error an origin export returns, with its errno, through
# libnbd (tests/tools/nbd-errors.c: reads past the end or over 32 MiB →
# EINVAL, write/trim/zero → EPERM, flush and cache succeed, unknown and
# 4096-byte export names → unknown export, structured replies refused,
# OPT_LIST / OPT_INFO / OPT_ABORT), and the export-name limits through the
# raw client: names over 4096 bytes → NBD_REP_ERR_TOO_BIG for GO/INFO and a
# disconnect for EXPORT_NAME; the server lives on.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy sha256sum

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
# 40 MiB + 1000 bytes: more than one 32 MiB request, an unaligned end.
make_image "$img" 40 1000
image_add base "$img" --block-size 131072 >/dev/null
raw=$TEST_TOOLS_DIR/nbd-raw

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen none

# --- libnbd -----------------------------------------------------------------
out=$(timeout 60 "$TEST_TOOLS_DIR/nbd-errors" "$sock" base "$img" 131072 2>&1) ||
    fail "nbd-errors: $(grep -v '^ok' <<<"$out")"
echo "$out"
assert_thunderd_alive "nbd-errors"

# --- export-name lengths through the raw client -----------------------------
# expect_reply WANT OPTION LEN  — nbd-raw opt OPTION LEN must print WANT.
# Failures are counted, so that one run reports all of them.
failures=()
expect_reply ()
{
    local want=$1 got
    shift
    got=$(timeout 30 "$raw" "$sock" opt "$@" 2>&1) || got="nbd-raw exit $?: $got"
    echo "opt $*: $got"
    if [ "$got" != "$want" ]; then
        failures+=("option $1 with a $2-byte export name: got '$got', want '$want'")
    fi
    assert_thunderd_alive "option $1 with a $2-byte export name"
}
expect_reply "reply ERR_TOO_BIG" go 5000
expect_reply "reply ERR_TOO_BIG" info 5000
expect_reply "reply ERR_TOO_BIG" go 4097
expect_reply "reply ERR_UNKNOWN" go 4096
expect_reply "reply ERR_UNKNOWN" info 4096
expect_reply "closed" export-name 5000
expect_reply "closed" export-name 4096
expect_reply "closed" export-name 3
# Other options: STRUCTURED_REPLY refused with ERR_UNSUP, an unknown option
# with ERR_UNSUP, OPT_LIST with data is invalid, ABORT is acknowledged.
expect_reply "reply ERR_UNSUP" structured-reply 0
expect_reply "reply ERR_UNSUP" 4242 0
expect_reply "reply ERR_INVALID" list 10
expect_reply "reply ACK" abort 0
# "Longer refused with NBD_REP_ERR_TOO_BIG" holds for any length the
# client actually sends, not only up to some internal buffer size.
expect_reply "reply ERR_TOO_BIG" go 65536
expect_reply "reply ERR_TOO_BIG" info 65536

# NBD_OPT_EXPORT_NAME with the right name works.
out=$(timeout 30 "$raw" "$sock" export-name base 2>&1) ||
    fail "NBD_OPT_EXPORT_NAME base: $out"
echo "$out"
grep -q "^export-name: size $(stat -c %s "$img") " <<<"$out" ||
    fail "NBD_OPT_EXPORT_NAME base: wrong size: $out"

# After all of it, a good client gets the image.
assert_thunderd_alive "the export-name checks"
copy_and_check "$(uri_unix base)" "$img"

if [ ${#failures[@]} -gt 0 ]; then
    printf 'FAIL: %s\n' "${failures[@]}" >&2
    fail "${#failures[@]} option check(s) failed (listed above)"
fi
