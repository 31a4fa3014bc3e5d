#!/usr/bin/env bash
# thunder — an origin image edited in place after its manifest was
# written is never served (issue 12): no client, old or new connection,
# reads the edited bytes (nor any other: the whole image is refused with
# EIO); one error names the file and how to republish; SIGHUP and a
# restart keep refusing it; `thunderctl image add` again (and SIGHUP)
# serves the new bytes.  A write that puts the mtime back (as rsync
# --inplace -t does) is caught by the ctime.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy nbdinfo jq qemu-io sha256sum
# nbdsh runs "python3 -m nbd": use Debian's python3, which has the module.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    skip "Debian's python3 with the nbd module (python3-libnbd) is missing"
nbdsh () { /usr/bin/python3 -m nbd "$@"; }

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 8
image_add base "$img" >/dev/null
sleep 0.05   # the edit below is in a later clock tick than the manifest

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen none
copy_and_check "$(uri_unix base)" "$img"

exports ()
{
    nbdinfo --list --json "nbd+unix:///?socket=$sock" |
        jq -r '.exports[]["export-name"]' | sort | tr '\n' ' '
}

# hup_expect WANT WHY  — SIGHUP, then the exports must become WANT
# within 5 s.
hup_expect ()
{
    local i
    kill -HUP "$thunderd_pid"
    for (( i = 0; i < 50; ++i )); do
        [ "$(exports)" = "$1" ] && return 0
        sleep 0.1
    done
    fail "$2: exports '$(exports)', want '$1'"
}

# A connection made before the edit.
coproc OLD { nbdsh -u "$(uri_unix base)" -c '
import sys
print("connected", flush=True)
sys.stdin.readline()
try:
    h.pread(65536, 3 * 65536)
    print("read ok", flush=True)
except nbd.Error as e:
    print("error errno=%s" % e.errno, flush=True)' 2>&1; }
read -r -t 10 line <&"${OLD[0]}" || fail "nbdsh: no output"
[ "$line" = connected ] || fail "nbdsh: $line"

# Edit block 3 in place.
printf 'EDITED' | dd of="$img" bs=1 seek=$(( 3 * BLOCK )) conv=notrunc status=none

echo >&"${OLD[1]}"
read -r -t 30 line <&"${OLD[0]}" || fail "nbdsh: no answer"
[ "$line" = "error errno=EIO" ] ||
    fail "a connection opened before the edit: '$line', want EIO"

if out=$(nbdcopy -- "$(uri_unix base)" "$tmpdir/copy" 2>&1); then
    fail "nbdcopy of an image edited in place succeeded"
fi
if [ -f "$tmpdir/copy" ] && grep -q EDITED "$tmpdir/copy"; then
    fail "a client read the edited bytes"
fi
# Block 0 was not edited, but the image is refused as a whole.
out=$(qemu-io -r -f raw -c "read 0 4096" "$(uri_unix base)" 2>&1) || true
grep -q 'Input/output error' <<<"$out" ||
    fail "a read of an unedited block of the changed image: $out"
n=$(grep -c 'changed after its manifest was written' "$thunderd_log" || true)
[ "$n" -eq 1 ] || fail "want one 'changed after its manifest' line, got $n"
grep -q "thunderctl image add base $img" "$thunderd_log" ||
    fail "the error does not say how to republish"

# SIGHUP: withdrawn.
hup_expect "" "after SIGHUP the changed image must be withdrawn"
stop_thunderd

# A restart does not serve it either (its mtime is later than the
# manifest's).
start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen none
[ "$(exports)" = "" ] || fail "after a restart the changed image is served: $(exports)"
grep -q "changed after its manifest" "$thunderd_log" ||
    fail "the restarted thunderd does not say why base is not served"

# Republished: served again, with the new bytes.
image_add base "$img" >/dev/null
hup_expect "base " "the republished image must be served"
copy_and_check "$(uri_unix base)" "$img"

# An edit that puts the mtime back: the ctime gives it away.
touch -r "$img" "$tmpdir/mtime-ref"
printf 'AGAIN' | dd of="$img" bs=1 seek=$(( 5 * BLOCK )) conv=notrunc status=none
touch -r "$tmpdir/mtime-ref" "$img"
[ "$(stat -c %y "$img")" = "$(stat -c %y "$tmpdir/mtime-ref")" ] ||
    fail "touch -r did not put the mtime back"
out=$(qemu-io -r -f raw -c "read $(( 5 * BLOCK )) 4096" "$(uri_unix base)" 2>&1) || true
grep -q 'Input/output error' <<<"$out" ||
    fail "an edit with the mtime put back was served: $out"
grep -q 'its ctime changed' "$thunderd_log" ||
    fail "no 'its ctime changed' in the log"
