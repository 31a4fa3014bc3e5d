#!/usr/bin/env bash
# thunder — thunderctl pki init/issue make certificates the real TLS peers
# accept: openssl checks each purpose; nbdkit --tls=require
# --tls-verify-peer serves an image to nbdinfo and to qemu-img
# (tls-creds-x509) with a host's files; a client of another CA, a
# plaintext client and a server certificate without the address the
# client dials all get no data, each with its TLS error.  Usage errors
# exit 2 with a message; existing files are kept without --force.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdkit nbdinfo qemu-img openssl sha256sum
requires nbdkit --tls=require --dump-config

pki ()
{
    "$THUNDERCTL" pki "$@"
}

cd "$tmpdir"
out=$(pki init ca --cn "test fleet") || fail "pki init: $out"
grep -q "made CA 'test fleet' in ca" <<<"$out" || fail "pki init said: $out"
pki issue node1 --ca ca --out node1 --ip 127.0.0.1 >/dev/null
pki issue node2 --ca ca --out node2 --ip 127.0.0.1 --role client >/dev/null
pki issue noaddr --ca ca --out noaddr >/dev/null
pki init other >/dev/null
pki issue intruder --ca other --out intruder --ip 127.0.0.1 >/dev/null
[ "$(stat -c %a node1/server-key.pem)" = 600 ] || fail "server key not 0600"
[ ! -e node2/server-cert.pem ] || fail "--role client wrote a server certificate"

# openssl: each certificate verifies for its own purpose only.
openssl verify -CAfile ca/ca-cert.pem -purpose sslserver node1/server-cert.pem >/dev/null ||
    fail "openssl: node1's server certificate does not verify"
openssl verify -CAfile ca/ca-cert.pem -purpose sslclient node1/client-cert.pem >/dev/null ||
    fail "openssl: node1's client certificate does not verify"
if openssl verify -CAfile ca/ca-cert.pem -purpose sslserver node1/client-cert.pem >/dev/null 2>&1; then
    fail "openssl: a client certificate passed as a server's"
fi
if openssl verify -CAfile ca/ca-cert.pem intruder/client-cert.pem >/dev/null 2>&1; then
    fail "openssl: another CA's certificate verified"
fi

# Usage errors and existing files.
set +e
err=$(pki issue node1 --ca ca 2>&1); rc=$?
set -e
[ $rc -eq 2 ] && grep -q "give the CA directory (--ca DIR) and where the files go (--out DIR)" <<<"$err" ||
    fail "pki issue without --out: exit $rc: $err"
set +e
err=$(pki issue 'bad/name' --ca ca --out x 2>&1); rc=$?
set -e
[ $rc -eq 1 ] && grep -q "host name 'bad/name'" <<<"$err" && [ ! -e x/server-cert.pem ] ||
    fail "pki issue of a bad name: exit $rc: $err"
before=$(sha256 node1/server-cert.pem)
set +e
err=$(pki issue node1 --ca ca --out node1 --ip 127.0.0.1 2>&1); rc=$?
set -e
[ $rc -eq 1 ] && grep -q "exists; pass --force to replace it" <<<"$err" &&
    [ "$(sha256 node1/server-cert.pem)" = "$before" ] ||
    fail "pki issue over existing files: exit $rc: $err"
pki issue node1 --ca ca --out node1 --ip 127.0.0.1 --force >/dev/null
[ "$(sha256 node1/server-cert.pem)" != "$before" ] || fail "--force kept the old certificate"

# A TLS NBD server with node1's files, requiring a client certificate.
# serve DIR  — starts nbdkit on a free port with DIR's server files.
serve ()
{
    port=$(free_port)
    nbdkit -f --exit-with-parent --tls=require --tls-certificates="$PWD/$1" \
        --tls-verify-peer -p "$port" -P "$tmpdir/nbdkit.pid" \
        pattern 1M >"$tmpdir/nbdkit.log" 2>&1 &
    nbdkit_pid=$!
    cleanup_fn kill "$nbdkit_pid"
    for _ in $(seq 100); do
        [ -s "$tmpdir/nbdkit.pid" ] && return 0
        sleep 0.05
    done
    fail "nbdkit did not start: $(cat "$tmpdir/nbdkit.log")"
}
serve node1

size=$(nbdinfo --size "nbds://127.0.0.1:$port/?tls-certificates=$PWD/node2") ||
    fail "nbdinfo with a fleet client certificate failed"
[ "$size" = 1048576 ] || fail "nbdinfo: size $size"
# qemu-img reads the data through its own TLS stack (and checks the
# server's address against the certificate).
qemu-img convert --object tls-creds-x509,id=tls0,endpoint=client,dir="$PWD/node2" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$port,tls-creds=tls0" \
    -O raw "$tmpdir/copy.raw" || fail "qemu-img over TLS failed"
nbdkit pattern 1M --run 'nbdcopy "$uri" '"$tmpdir/want.raw" ||
    fail "nbdkit pattern without TLS: no reference copy"
cmp -s "$tmpdir/copy.raw" "$tmpdir/want.raw" || fail "qemu-img over TLS: wrong bytes"

# no_data WHAT ERROR-RE URI  — nbdinfo must fail with ERROR-RE.
no_data ()
{
    local what=$1 re=$2 uri=$3 err
    if err=$(nbdinfo --size "$uri" 2>&1); then
        fail "$what: got data: $err"
    fi
    grep -Eq "$re" <<<"$err" || fail "$what: unexpected error: $err"
    echo "ok: $what: $err"
}
no_data "another CA's client" "certificate verification|handshake" \
    "nbds://127.0.0.1:$port/?tls-certificates=$PWD/intruder"
no_data "plaintext client" "requires TLS" "nbd://127.0.0.1:$port/"
kill "$nbdkit_pid"; wait "$nbdkit_pid" 2>/dev/null || true
rm -f "$tmpdir/nbdkit.pid"

# A server certificate that does not name 127.0.0.1.
cp node1/client-cert.pem node1/client-key.pem noaddr/
serve noaddr
no_data "server certificate without the dialled address" \
    "certificate verification|hostname|not valid" \
    "nbds://127.0.0.1:$port/?tls-certificates=$PWD/node2"
echo "ok: pki"
