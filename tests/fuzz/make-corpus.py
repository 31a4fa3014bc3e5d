#!/usr/bin/env python3
# thunder — writes the seed corpus of fuzz-nbdsrv: valid client sessions
# (the client's bytes only), one file each.  The input's length modulo 3
# is the TLS mode fuzz-nbdsrv runs it under (tls_mode below).
#
# Usage: make-corpus.py [DIR]   (default: corpus/nbdsrv next to this file)
#
# The exports are those of fuzz-nbdsrv.c: "img" (64 KiB + 3 bytes), "err",
# and a 4096-byte name 'a'..'z' repeating.
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
FIXED, NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_STRUCTURED_REPLY = 8
OPT_STARTTLS = 5
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7
FUA = 1
IMG_SIZE = 64 * 1024 + 3
LONG_NAME = bytes(ord('a') + i % 26 for i in range(4096))


def flags(f=FIXED | NO_ZEROES):
    return struct.pack('>I', f)


def opt(o, data=b''):
    return struct.pack('>QII', IHAVEOPT, o, len(data)) + data


def info_go(o, name, reqs=()):
    data = struct.pack('>I', len(name)) + name + struct.pack('>H', len(reqs))
    data += b''.join(struct.pack('>H', r) for r in reqs)
    return opt(o, data)


def req(typ, cookie, offset=0, count=0, fl=0):
    return struct.pack('>IHHQQI', REQ_MAGIC, fl, typ, cookie, offset, count)


DISC = req(CMD_DISC, 0)

SESSIONS = {
    'go-read-disc': flags() + info_go(OPT_GO, b'img')
    + req(CMD_READ, 1, 0, 4096) + req(CMD_READ, 2, IMG_SIZE - 3, 3) + DISC,
    'export-name-read': flags(FIXED) + opt(OPT_EXPORT_NAME, b'img')
    + req(CMD_READ, 1, 512, 512) + DISC,
    'export-name-nozeroes-read': flags() + opt(OPT_EXPORT_NAME, b'img')
    + req(CMD_READ, 7, 100, 1000, FUA),
    'list': flags() + opt(OPT_LIST) + opt(OPT_ABORT),
    'info-go': flags() + info_go(OPT_INFO, b'img',
                                 (INFO_NAME, INFO_DESCRIPTION,
                                  INFO_BLOCK_SIZE))
    + info_go(OPT_GO, b'img') + req(CMD_READ, 3, 0, 1) + DISC,
    'abort': flags() + opt(OPT_ABORT),
    'structured-reply-then-go': flags() + opt(OPT_STRUCTURED_REPLY)
    + info_go(OPT_GO, b'img') + DISC,
    'unknown-export-then-go': flags() + info_go(OPT_GO, b'nope')
    + info_go(OPT_GO, b'img') + DISC,
    'long-name-go': flags() + info_go(OPT_GO, LONG_NAME, (INFO_NAME,))
    + req(CMD_READ, 1, 0, 4096) + DISC,
    'err-export': flags() + info_go(OPT_GO, b'err')
    + req(CMD_READ, 1, 0, 512) + req(CMD_READ, 2, 1, 512)
    + req(CMD_CACHE, 3, 0, 512) + DISC,
    'all-commands': flags() + info_go(OPT_GO, b'img')
    + req(CMD_READ, 1, 0, 512) + req(CMD_FLUSH, 2)
    + req(CMD_CACHE, 3, 0, IMG_SIZE) + req(CMD_WRITE, 4, 0, 8) + b'payload!'
    + req(CMD_TRIM, 5, 0, 512) + req(CMD_WRITE_ZEROES, 6, 0, 512)
    + req(CMD_BLOCK_STATUS, 7, 0, 512) + req(CMD_READ, 8, IMG_SIZE, 1)
    + DISC,
}


def tls_mode(data, mode):
    """data padded after its end (bytes fuzz-nbdsrv never reads: the
    session ends before) so that its length modulo 3 selects mode (0 off,
    1 on, 2 require), as fuzz-nbdsrv.c does."""
    return data + b'\0' * ((mode - len(data)) % 3)


# NBD_OPT_STARTTLS sessions (the upgrade succeeds in memory).
SESSIONS.update({
    'tls-require-refused-then-starttls': tls_mode(
        flags() + opt(OPT_LIST) + info_go(OPT_GO, b'img') + opt(OPT_STARTTLS)
        + opt(OPT_LIST) + info_go(OPT_GO, b'img') + req(CMD_READ, 1, 0, 512)
        + DISC, 2),
    'tls-require-export-name': tls_mode(
        flags() + opt(OPT_EXPORT_NAME, b'img') + DISC, 2),
    'tls-on-starttls-twice': tls_mode(
        flags() + opt(OPT_STARTTLS) + opt(OPT_STARTTLS)
        + opt(OPT_STARTTLS, b'x') + info_go(OPT_GO, b'img') + DISC, 1),
    'tls-off-starttls': tls_mode(
        flags() + opt(OPT_STARTTLS) + info_go(OPT_GO, b'img') + DISC, 0),
})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, 'corpus',
                                                              'nbdsrv')
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SESSIONS.items()):
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)
    return 0


if __name__ == '__main__':
    sys.exit(main())
