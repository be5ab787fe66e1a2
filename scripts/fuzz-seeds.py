#!/usr/bin/env python3
"""Writes the hand-made seed inputs of cvmm's guest-facing fuzz targets into
fuzz/corpus/<target>/seed-*: guest-memory images (the layout fuzz/src/lib.rs reads)
holding well-formed requests, so the fuzzer starts from inputs that reach deep into
each device instead of from nothing.

Memory image layout (see fuzz/src/lib.rs): byte 0 odd = second half private;
bytes 8.. = per queue i: descriptor table, available ring, used ring addresses
(u32 each, at 8 + 12*i). Everything else is guest memory."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")
F_NEXT, F_WRITE = 1, 2


def image(queues, chains_per_queue, extra):
    """queues: list of (desc, avail, used) addresses; chains_per_queue: list of lists of
    descriptor chains [(addr, len, flags)]; extra: {addr: bytes}."""
    mem = bytearray(0x3000)

    def put(addr, data):
        end = addr + len(data)
        if end > len(mem):
            mem.extend(b"\0" * (end - len(mem)))
        mem[addr:end] = data

    for i, (d, a, u) in enumerate(queues):
        put(8 + 12 * i, struct.pack("<III", d, a, u))
        idx = 0
        heads = []
        for chain in chains_per_queue[i]:
            heads.append(idx)
            for k, (addr, length, flags) in enumerate(chain):
                last = k == len(chain) - 1
                put(d + 16 * idx, struct.pack("<QIHH", addr, length, flags | (0 if last else F_NEXT), idx + 1))
                idx += 1
        put(a, struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h) for h in heads))
    for addr, data in extra.items():
        put(addr, data)
    mem[0] = 0  # all memory shared
    return bytes(mem)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


Q0 = (0x400, 0x600, 0x800)
Q1 = (0xa00, 0xc00, 0xe00)
Q2 = (0x1000, 0x1100, 0x1200)

# virtio-rng: one writable buffer.
write("virtio_rng", "one-request", image([Q0], [[[(0x2000, 64, F_WRITE)]]], {}))

# virtio-blk: IN sector 0 (header, 512-byte data, status), OUT sector 1, FLUSH, GET_ID.
hdr = lambda t, sector: struct.pack("<IIQ", t, 0, sector)
blk = [
    [(0x1400, 16, 0), (0x2000, 512, F_WRITE), (0x1410, 1, F_WRITE)],
    [(0x1420, 16, 0), (0x2200, 512, 0), (0x1430, 1, F_WRITE)],
    [(0x1440, 16, 0), (0x1450, 1, F_WRITE)],
    [(0x1460, 16, 0), (0x2400, 20, F_WRITE), (0x1470, 1, F_WRITE)],
]
write("virtio_blk", "in-out-flush-id",
      image([Q0], [blk], {0x1400: hdr(0, 0), 0x1420: hdr(1, 1), 0x1440: hdr(4, 0), 0x1460: hdr(8, 0)}))

# virtio-console: a transmit buffer (queue 1) and a receive buffer (queue 0).
write("virtio_console", "rx-and-tx",
      image([Q0, Q1], [[[(0x2000, 64, F_WRITE)]], [[(0x2100, 6, 0)]]], {0x2100: b"hello\n"}))

# virtio-net: a frame to transmit (12-byte header + 60-byte frame), an rx buffer.
frame = bytes(range(60))
write("virtio_net", "tx-and-rx",
      image([Q0, Q1], [[[(0x2000, 1526, F_WRITE)]], [[(0x2800, 12, 0), (0x2810, 60, 0)]]],
            {0x2800: b"\0" * 12, 0x2810: frame}))

# virtio-vsock: an OP_REQUEST from guest CID 3 port 1024 to host CID 2 port 1234.
vsock_hdr = struct.pack("<QQIIIHHIII", 3, 2, 1024, 1234, 0, 1, 1, 0, 65536, 0)
write("virtio_vsock", "request",
      image([Q0, Q1, Q2], [[[(0x2000, 4096, F_WRITE)]], [[(0x2800, 44, 0)]], []], {0x2800: vsock_hdr}))

# virtio-mmio: the standard initialization as register accesses
# [kind(1=write), offset lo, offset hi, width code (2 = 4 bytes), value u32].
ops = []
w = lambda off, v: ops.append(struct.pack("<BHB", 1, off, 2) + struct.pack("<I", v))
r = lambda off: ops.append(struct.pack("<BHB", 0, off, 2) + b"\0" * 4)
for off in (0x000, 0x004, 0x008):
    r(off)
w(0x070, 0); w(0x070, 1); w(0x070, 3)
w(0x024, 0); w(0x020, 0); w(0x024, 1); w(0x020, 3); w(0x070, 11); r(0x070)
w(0x030, 0); w(0x038, 16)
for off, addr in ((0x080, 0x400), (0x090, 0x600), (0x0a0, 0x800)):
    w(off, addr); w(off + 4, 0)
w(0x044, 1); w(0x070, 15); w(0x050, 0); r(0x060); w(0x064, 1)
write("virtio_mmio", "init-sequence", b"".join(ops))
print("seeds written to", os.path.normpath(ROOT))
