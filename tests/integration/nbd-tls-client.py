#!/usr/bin/python3
# thunder — a raw NBD client that upgrades with NBD_OPT_STARTTLS and then
# asks for the export list, presenting whatever client certificate it is
# given, even one the server's CA did not sign (GnuTLS clients such as
# libnbd send none then).  For tests/integration/test-nbd-tls.sh.
#
# Usage: nbd-tls-client.py HOST PORT CA-CERT [CLIENT-CERT CLIENT-KEY]
# Prints "list: NAME..." when the server listed exports, or "error: WHY";
# exits 0 either way (1 on a usage or protocol error before TLS).
#
#   nbd-tls-client.py --slow-read IMAGE HOST PORT CA-CERT CLIENT-CERT
#                     CLIENT-KEY EXPORT
# A reader the server must wait for: a 16 KiB receive buffer, every 1 MiB
# read of the image asked for twice at once and 256 small reads of odd
# sizes (several replies per batch), nothing read for 0.3 s, then
# every reply compared with IMAGE (the server's sends stop part way
# through its batches of TLS records and resume; nbdtls.c).  Prints
# "read: N MiB and M small over VERSION" or "error: WHY" (exit 1).
#
#   nbd-tls-client.py --hold N SIZE HOST PORT CA-CERT CLIENT-CERT
#                     CLIENT-KEY EXPORT
# N slow readers at once: opens N connections, each with a 4 KiB receive
# buffer and 536-byte segments (so the kernel takes little of a reply),
# and prints "connected N"; after a line on its standard input each asks
# for one read of SIZE bytes and reads nothing, so the server's sends stop
# part way; prints "holding N", waits until its standard input ends and
# closes them all (exit 0).  "error: WHY" (exit 1) on a failure.
import socket
import ssl
import struct
import sys
import time

IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
OPT_LIST, OPT_STARTTLS, OPT_GO = 3, 5, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REQ_MAGIC, SIMPLE_REPLY_MAGIC, CMD_READ = 0x25609513, 0x67446698, 0


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


def starttls(host, port, ca, cert=None, key=None, rcvbuf=0, mss=0):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if mss:
        # The server's send buffer starts at about 20 segments: small
        # segments keep what the kernel takes of its replies small.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    raw.settimeout(10)
    raw.connect((host, port))
    if recv_exact(raw, 18)[:16] != b'NBDMAGICIHAVEOPT':
        raise ValueError('not an NBD server')
    raw.sendall(struct.pack('>I', 3))
    opt(raw, OPT_STARTTLS)
    o, typ, _ = reply(raw)
    if o != OPT_STARTTLS or typ != REP_ACK:
        raise ValueError('STARTTLS refused (reply 0x%x)' % typ)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    return ctx.wrap_socket(raw, server_hostname=host)


def go(s, export):
    name = export.encode()
    s.sendall(struct.pack('>QII', IHAVEOPT, OPT_GO, 4 + len(name) + 2) +
              struct.pack('>I', len(name)) + name + struct.pack('>H', 0))
    while True:
        o, typ, _ = reply(s)
        if typ == REP_ACK:
            break
        if typ != REP_INFO:
            raise ValueError('NBD_OPT_GO refused (reply 0x%x)' % typ)


def hold(n, size, host, port, ca, cert, key, export):
    conns = []
    for i in range(int(n)):
        s = starttls(host, int(port), ca, cert, key, rcvbuf=4096, mss=536)
        go(s, export)
        conns.append(s)
    print('connected %d' % len(conns), flush=True)
    sys.stdin.readline()
    for s in conns:
        s.sendall(struct.pack('>IHHQQI', REQ_MAGIC, 0, CMD_READ, 1, 0,
                              int(size)))
    print('holding %d' % len(conns), flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()
    return 0


def slow_read(image, host, port, ca, cert, key, export):
    data = open(image, 'rb').read()
    mib = 1 << 20
    s = starttls(host, int(port), ca, cert, key, rcvbuf=16384)
    go(s, export)
    reqs = {}
    # Two rounds of 1 MiB reads, then small reads of odd sizes whose
    # replies the server sends several at a time (gathered into shared
    # TLS records).
    sizes = ([mib] * (2 * (len(data) // mib)) +
             [512, 4096, 20000, 7000, 100, 33000, 64, 9000] * 32)
    off = 0
    for n in sizes:
        off = off if off + n <= len(data) else 0
        h = len(reqs) + 1
        reqs[h] = (off, n)
        s.sendall(struct.pack('>IHHQQI', REQ_MAGIC, 0, CMD_READ, h, off, n))
        off += n if n == mib else n + 4096
    time.sleep(0.3)
    while reqs:
        magic, err, h = struct.unpack('>IIQ', recv_exact(s, 16))
        if magic != SIMPLE_REPLY_MAGIC or err != 0 or h not in reqs:
            raise ValueError('reply: magic 0x%x error %d handle %d'
                             % (magic, err, h))
        off, n = reqs.pop(h)
        if recv_exact(s, n) != data[off:off + n]:
            raise ValueError('read of %d at %d: not the image\'s bytes'
                             % (n, off))
    print('read: %d MiB and %d small over %s'
          % (2 * (len(data) // mib), 256, s.version()))
    return 0


def main():
    if sys.argv[1] in ('--slow-read', '--hold'):
        try:
            if sys.argv[1] == '--hold':
                return hold(*sys.argv[2:10])
            return slow_read(*sys.argv[2:9])
        except (ssl.SSLError, EOFError, OSError, ValueError) as e:
            print('error: %s' % e)
            return 1
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
