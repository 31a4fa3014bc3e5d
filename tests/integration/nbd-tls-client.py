#!/usr/bin/python3
# thunder — a raw NBD client that upgrades with NBD_OPT_STARTTLS and then
# asks for the export list, presenting whatever client certificate it is
# given, even one the server's CA did not sign (GnuTLS clients such as
# libnbd send none then).  For tests/integration/test-nbd-tls.sh.
#
# Usage: nbd-tls-client.py HOST PORT CA-CERT [CLIENT-CERT CLIENT-KEY]
# Prints "list: NAME..." when the server listed exports, or "error: WHY";
# exits 0 either way (1 on a usage or protocol error before TLS).
import socket
import ssl
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
OPT_LIST, OPT_STARTTLS = 3, 5
REP_ACK, REP_SERVER = 1, 2


def recv_exact(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError('end of stream')
        b += c
    return b


def opt(s, o):
    s.sendall(struct.pack('>QII', IHAVEOPT, o, 0))


def reply(s):
    magic, o, typ, ln = struct.unpack('>QIII', recv_exact(s, 20))
    if magic != REP_MAGIC:
        raise ValueError('bad reply magic')
    return o, typ, recv_exact(s, ln)


def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    raw = socket.create_connection((host, port), timeout=10)
    greeting = recv_exact(raw, 18)
    if greeting[:16] != b'NBDMAGICIHAVEOPT':
        print('error: not an NBD server')
        return 1
    raw.sendall(struct.pack('>I', 3))  # FIXED_NEWSTYLE | NO_ZEROES
    opt(raw, OPT_STARTTLS)
    o, typ, _ = reply(raw)
    if o != OPT_STARTTLS or typ != REP_ACK:
        print('error: STARTTLS refused (reply 0x%x)' % typ)
        return 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    names = []
    try:
        s = ctx.wrap_socket(raw, server_hostname=host)
        opt(s, OPT_LIST)
        while True:
            o, typ, data = reply(s)
            if typ == REP_ACK:
                break
            if typ != REP_SERVER:
                print('error: list refused (reply 0x%x)' % typ)
                return 0
            ln = struct.unpack('>I', data[:4])[0]
            names.append(data[4:4 + ln].decode())
    except (ssl.SSLError, EOFError, OSError) as e:
        print('error: %s' % e)
        return 0
    print('list: ' + ' '.join(names))
    return 0


if __name__ == '__main__':
    sys.exit(main())
