#!/usr/bin/env bash
# thunder — node mode, the control endpoint under bad input: malformed
# JSON, unknown image, wrong or missing token, empty or absurd upstream
# lists, an unknown image, a wrong version → 4xx (502 when no upstream can
# be reached)
# with a JSON error body, and nothing attached half-way.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 2
image_add img "$images/img.raw" >/dev/null
start_origin "$images"
version=$(origin_stats img | jq -r .version)
start_node 1
token=$(cat "$token_file")

# req WANT_STATUS METHOD PATH [BODY] [TOKEN]
req ()
{
    local want=$1 method=$2 path=$3 body=${4:-} tok=${5-$token} out status
    local -a args=(-s -o "$tmpdir/body" -w '%{http_code}' -X "$method")
    [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    status=$(curl "${args[@]}" "${node_ctl[1]}$path") || fail "curl $method $path"
    [ "$status" = "$want" ] ||
        fail "$method $path: status $status, want $want: $(cat "$tmpdir/body")"
    if [ "$want" -ge 400 ]; then
        jq -e '.error.code and .error.message' "$tmpdir/body" >/dev/null ||
            fail "$method $path: error body is not {error:{code,message}}: $(cat "$tmpdir/body")"
    fi
}

ok_body="{\"version\":\"$version\",\"upstreams\":[\"$origin_nbd/img\"]}"
req 401 GET /v1/images "" ""
req 401 GET /v1/images "" "wrong-token-wrong-token"
req 401 PUT /v1/images/img "$ok_body" "wrong-token-wrong-token"
req 400 PUT /v1/images/img '{"version": '
req 400 PUT /v1/images/img '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
req 400 PUT /v1/images/img "{\"version\":\"$version\",\"upstreams\":[]}"
req 400 PUT /v1/images/img "{\"version\":\"$version\"}"
req 400 PUT /v1/images/img "{\"version\":\"$version\",\"upstreams\":[\"http://x/img\"]}"
ups=$(printf '"%s/img",' $(seq -f "$origin_nbd" 1 17)); ups=${ups%,}
req 400 PUT /v1/images/img "{\"version\":\"$version\",\"upstreams\":[$ups]}"
req 400 PUT /v1/images/img "{\"version\":\"nothex\",\"upstreams\":[\"$origin_nbd/img\"]}"
req 400 PUT /v1/images/img "{\"version\":\"$version\",\"upstreams\":[\"$origin_nbd/img\"],\"extra\":1}"
req 400 PUT '/v1/images/..bad' "$ok_body"
req 413 PUT /v1/images/img "{\"pad\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}"
req 404 GET /v1/images/img
req 404 DELETE /v1/images/img
# An image no upstream has (404), a version nobody serves (409), no
# upstream reachable (502).
req 404 PUT /v1/images/nosuch "{\"version\":\"$version\",\"upstreams\":[\"$origin_nbd/nosuch\"]}"
req 409 PUT /v1/images/img "{\"version\":\"$(printf '%064d' 0)\",\"upstreams\":[\"$origin_nbd/img\"]}"
req 502 PUT /v1/images/img "{\"version\":\"$version\",\"upstreams\":[\"nbd+unix:///img?socket=$tmpdir/nothing.sock\"]}"
# Nothing attached half-way.
req 200 GET /v1/images
[ "$(jq '.images | length' "$tmpdir/body")" -eq 0 ] ||
    fail "something got attached: $(cat "$tmpdir/body")"
nbdinfo --list "nbd+unix:///?socket=${node_sock[1]}" | grep -q 'export=' &&
    fail "the node exports something after failed attaches"
ls "${node_cache[1]}/attached" | grep -q . && fail "an attachment was recorded"

# And the good request works, idempotently.
req 201 PUT /v1/images/img "$ok_body"
req 200 PUT /v1/images/img "$ok_body"
req 200 GET /v1/images/img
jq -e --arg v "$version" '.version == $v and .state == "attached"' "$tmpdir/body" >/dev/null ||
    fail "GET after attach: $(cat "$tmpdir/body")"
req 200 DELETE /v1/images/img
req 404 GET /v1/images/img
assert_thunderd_alive "bad control input"
exit 0
