#!/usr/bin/env bash
# thunder — origin mode, SIGHUP rescans the image directory: a new image is
# served, a re-added image is served at its new version while a connection
# opened before keeps reading the old one, a removed manifest withdraws its
# export, and a corrupt manifest withdraws it too without harming the rest.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdinfo nbdcopy sha256sum jq
# nbdsh runs "python3 -m nbd": use Debian's python3, which has the module.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    skip "Debian's python3 with the nbd module (python3-libnbd) is missing"
nbdsh () { /usr/bin/python3 -m nbd "$@"; }

images=$tmpdir/images
mkdir "$images"
make_image "$images/a.img" 4
image_add a "$images/a.img" >/dev/null

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen none

exports ()
{
    nbdinfo --list --json "nbd+unix:///?socket=$sock" |
        jq -r '.exports[]["export-name"]' | sort | tr '\n' ' '
}

# rescan WANT  — SIGHUP, then wait (bounded) until the exports are WANT.
rescan ()
{
    local want=$1 got i
    kill -HUP "$thunderd_pid"
    for (( i = 0; i < 50; ++i )); do
        got=$(exports)
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    fail "after SIGHUP: exports '$got', want '$want'"
}

[ "$(exports)" = "a " ] || fail "at start: exports '$(exports)', want 'a '"

# A new image.
head -c $((3 * 1048576 + 17)) /dev/urandom > "$images/b.img"
image_add b "$images/b.img" >/dev/null
rescan "a b "
copy_and_check "$(uri_unix b)" "$images/b.img"

# A new version of b, put in place the way an operator would (new file,
# rename, image add).  A client connected before keeps the old version.
cp "$images/b.img" "$tmpdir/b.old"
coproc OLD { nbdsh -u "$(uri_unix b)" -c '
import hashlib, sys
print("connected", flush=True)
sys.stdin.readline()
print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest(), flush=True)' 2>&1; }
read -r -t 10 line <&"${OLD[0]}" || fail "nbdsh: no output"
[ "$line" = connected ] || fail "nbdsh: $line"
head -c $((2 * 1048576)) /dev/urandom > "$images/b.new"
mv "$images/b.new" "$images/b.img"
image_add b "$images/b.img" >/dev/null
rescan "a b "
assert_thunderd_alive "rescan of a new version"
grep -q "serving new version of 'b'" "$thunderd_log" ||
    fail "no 'serving new version' in the log"
copy_and_check "$(uri_unix b)" "$images/b.img"
echo >&"${OLD[1]}"
read -r -t 30 line <&"${OLD[0]}" || fail "nbdsh: no digest"
[ "$line" = "$(sha256 "$tmpdir/b.old")" ] ||
    fail "a connection opened before the rescan did not read the old version: $line"
[ "$(nbdinfo --size "$(uri_unix b)")" = $((2 * 1048576)) ] ||
    fail "new version of b: wrong size"

# A removed manifest withdraws its export.
rm "$images/a.manifest.json"
rescan "b "
grep -q "withdrawing 'a'" "$thunderd_log" || fail "no 'withdrawing' in the log"

# A corrupt manifest withdraws its export and is logged by name.
echo '{"thunder_manifest": 1,' > "$images/b.manifest.json"
rescan ""
grep -q "b.manifest.json" "$thunderd_log" ||
    fail "the corrupt manifest is not named in the log"
assert_thunderd_alive "rescan of a corrupt manifest"

stop_thunderd
[ "$thunderd_status" -eq 0 ] || fail "thunderd exit status $thunderd_status"
exit 0
