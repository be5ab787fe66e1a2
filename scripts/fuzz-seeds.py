#!/usr/bin/env python3
"""Writes the seed inputs of cvmm's fuzz targets into fuzz/corpus/<target>/seed-*.

Hand-made (committed): guest-memory images (the layout fuzz/src/lib.rs reads) holding
well-formed virtio requests, and well-formed inputs of the format targets (each starts
with the selector byte its target reads; see fuzz/fuzz_targets/<target>.rs).

With --refs DIR (the shared attestation samples, e.g. /work/shared/refs/attestation):
real SEV-SNP reports, TDX quotes and the SGX extensions of their PCK certificates, as
seed-ref-* (third-party data: made on each run, never committed).

With --emulated CVMM (a built cvmm binary; needs /dev/kvm): the attestation report and
quote the demo guest gets on the emulated SNP and TDX platforms (`cvmm run --tee snp
--emulated --rng`, the `attestation: report N <hex>` / `attestation: quote N <hex>`
lines), as seed-emulated-* (made here: they verify against this machine's cached
emulated key chains).

Memory image layout (see fuzz/src/lib.rs): byte 0 odd = second half private;
bytes 8.. = per queue i: descriptor table, available ring, used ring addresses
(u32 each, at 8 + 12*i). Everything else is guest memory."""
import argparse
import base64
import json
import os
import re
import struct
import subprocess

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

# api_request: [method index (0 GET, 1 PUT, ...)] path NUL body, one per route.
for i, (method, path, body) in enumerate([
        (0, "/v1/vmm/ping", b""), (1, "/v1/vmm/shutdown", b""),
        (1, "/v1/vm", b'{"memory": "256M", "vcpus": 2, "cmdline": "wait", "rng": true, "timeout_secs": 5}'),
        (0, "/v1/vm", b""), (0, "/v1/vm/config", b""), (0, "/v1/vm/launch-log?pretty", b""),
        (1, "/v1/vm/boot", b""), (1, "/v1/vm/pause", b""), (1, "/v1/vm/resume", b""),
        (1, "/v1/vm/shutdown", b'{"timeout_secs": 2.5}'), (3, "/v1/vm", b"")]):
    write("api_request", "route-%d" % i, bytes([method]) + path.encode() + b"\0" + body)

# cc_event_log: a TD's CCEL area: the Spec ID event (SHA-384), two TCG_PCR_EVENT2 entries
# (RTMR3 = MR index 4, RTMR0 = 1), then zero fill.
spec = b"Spec ID Event03\0" + struct.pack("<IBBBBIHHB", 0, 0, 2, 0, 2, 1, 0xc, 48, 0)
ccel = struct.pack("<II20sI", 0, 3, b"\0" * 20, len(spec)) + spec
for mr, data in ((4, b"cvmm demo guest: RTMR3 event"), (1, b"")):
    ccel += struct.pack("<IIIH", mr, 0xc, 1, 0xc) + bytes([mr]) * 48 + struct.pack("<I", len(data)) + data
write("cc_event_log", "two-events", ccel + b"\0" * 64)

# --- Format targets (first byte: the selector each target reads) ---------------------


def sel(target, selector, name, data):
    write(target, name, bytes([selector]) + data)


# snp_formats: 0 report, 1 CPUID page, 2 ID block/auth, 3 VMSA, 4 options/policy,
# 5 termination, 6 conversion, 7 certificate table, 8 secrets page, 9 report request.
cpuid = struct.pack("<IIQ", 2, 0, 0) + b"\0" * 32
cpuid += struct.pack("<IIQQIIIIQ", 0, 0, 0, 0, 0xd, 0x68747541, 0x444d4163, 0x69746e65, 0)
cpuid += struct.pack("<IIQQIIIIQ", 0x8000001f, 0, 0, 0, 0x1b, 0x2f, 1, 0, 0)
sel("snp_formats", 1, "cpuid-page", cpuid.ljust(4096, b"\0"))
id_block = b"\x11" * 48 + b"\x22" * 16 + b"\x33" * 16 + struct.pack("<IIQ", 1, 0, 0x30000)
id_auth = struct.pack("<II", 1, 0).ljust(0x1000, b"\0")
sel("snp_formats", 2, "id-block", id_block)
sel("snp_formats", 2, "id-block-base64", base64.b64encode(id_block))
sel("snp_formats", 2, "id-auth", id_auth)
vmsa = bytearray(4096)
vmsa[0x10:0x20] = struct.pack("<HHIQ", 0xf000, 0x9b, 0xffff, 0xffff0000)  # CS
vmsa[0x178:0x180] = struct.pack("<Q", 0xfff0)  # RIP
vmsa[0x3b0:0x3b8] = struct.pack("<Q", 1)  # SEV_FEATURES
sel("snp_formats", 3, "vmsa", bytes(vmsa))
host_data = base64.b64encode(b"\x44" * 32).decode()
sel("snp_formats", 4, "options",
    ("sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,host-data=%s,"
     "id-block=%s,id-auth=%s,author-key-enabled=off,kernel-hashes=on"
     % (host_data, base64.b64encode(id_block).decode(), base64.b64encode(id_auth[:64]).decode())).encode())
sel("snp_formats", 4, "policy", b"0x30000")
KVM_SYSTEM_EVENT_SEV_TERM = 6
sel("snp_formats", 5, "term-request", struct.pack("<QQ", KVM_SYSTEM_EVENT_SEV_TERM, (3 << 16) | (1 << 12) | 0x100))
KVM_HC_MAP_GPA_RANGE, ENCRYPTED = 12, 1 << 4
sel("snp_formats", 6, "map-gpa-range",
    struct.pack("<Q6QQQQ", KVM_HC_MAP_GPA_RANGE, 0x100000, 16, ENCRYPTED, 0, 0, 0, 1 << 3, 0x200000, 0x1000)
    + struct.pack("<QQQQ", 0, 0x80000000, 0x100000000, 0x40000000))
guid = bytes.fromhex("63da758de6644564adc5f4b93be8accd")
table = guid + struct.pack("<II", 48, 5) + b"\0" * 24 + b"hello"
sel("snp_formats", 7, "cert-table", table)
secrets = bytearray(4096)
secrets[0:12] = struct.pack("<III", 3, 0, 0x00a00f11)
secrets[0x20:0xa0] = bytes(range(128))
sel("snp_formats", 8, "secrets-page", bytes(secrets))
sel("snp_formats", 9, "report-request", b"\x55" * 64 + struct.pack("<IB", 0, 1) + b"\0" * 27)

report = bytearray(0x4a0)
report[0:8] = struct.pack("<II", 3, 0)  # version 3
report[0x08:0x10] = struct.pack("<Q", 0x30000)  # policy
report[0x34:0x38] = struct.pack("<I", 1)  # ECDSA P-384 with SHA-384
report[0x50:0x90] = b"\x77" * 64  # report data
report[0x188:0x18b] = bytes([0x19, 0x01, 0x01])  # family, model, stepping
sel("snp_formats", 0, "report-v3", bytes(report))
sel("snp_crypto", 3, "report-v3", bytes(report))

# tdx_formats: 0 quote, 1 TD report (flags byte first), 2 SGX extensions, 3 fatal error,
# 4 QGS response / tdx-guest options, 5-6 a forwarded TDG.VP.VMCALL.
td_report = bytearray(1024)
td_report[0:3] = bytes([0x81, 0, 0])
td_report[128:192] = b"\x66" * 64
qe_auth = bytes(range(32))
chain = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
qe_data = b"\0" * 384 + b"\0" * 64 + struct.pack("<H", len(qe_auth)) + qe_auth
qe_data += struct.pack("<HI", 5, len(chain)) + chain
sig_data = b"\0" * 64 + b"\0" * 64 + struct.pack("<HI", 6, len(qe_data)) + qe_data
quote = struct.pack("<HHIHH", 4, 2, 0x81, 0, 0) + bytes.fromhex("939a7233f79c4ca9940a0db3957f0607") + b"\0" * 20
quote += b"\0" * 584 + struct.pack("<I", len(sig_data)) + sig_data
sel("tdx_formats", 0, "quote-v4", quote)
sel("tdx_crypto", 0, "quote-v4", quote)
sel("tdx_formats", 1, "td-report", bytes([3]) + bytes(td_report))
KVM_SYSTEM_EVENT_TDX_FATAL = 7
regs = [0] * 16
regs[12], regs[13], regs[1] = (1 << 63) | 5, 0x1000, (1 << 14) | (1 << 15)
regs[14], regs[15] = struct.unpack("<QQ", b"panic at line 42")
sel("tdx_formats", 3, "fatal-error", struct.pack("<Q16Q", KVM_SYSTEM_EVENT_TDX_FATAL, *regs))
quote_resp = struct.pack("<HHIIIII", 1, 1, 1, 16 + 8 + 4, 0, 0, 4) + b"QUOT"
sel("tdx_formats", 4, "qgs-response", quote_resp)
sel("tdx_formats", 4, "tdx-guest-options",
    b"tdx-guest,id=tdx0,sept-ve-disable=on,attributes=0x10000000,"
    b"quote-generation-socket.type=vsock,quote-generation-socket.cid=2,quote-generation-socket.port=4050")
sel("tdx_formats", 4, "tdx-guest-json",
    json.dumps({"qom-type": "tdx-guest", "id": "tdx0", "sept-ve-disable": True,
                "quote-generation-socket": {"type": "unix", "path": "/run/qgs.sock"}}).encode())
# GetQuote (nr selector 0) of a 2-page buffer at 0x10000 (even values: base + v/2),
# shared from page 0; the buffer holds a version-1 header and a 1024-byte report.
head = struct.pack("<12Q", 0, 0, 2 * 0x2000, 0, 0, 0, 0, 0, 0, 3, 0x100, 0)
buf = struct.pack("<QQII", 1, 0, 1024, 0) + bytes(td_report)
sel("tdx_formats", 5, "get-quote", head + buf)
sel("tdx_formats", 5, "setup-event-notify", struct.pack("<12Q", 1, 2 * 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0))

# snp_crypto: 1 a sealed REPORT_REQ (seqno 1, VMPCK 0), 2 the same to the emulated PSP,
# 4 an ID block it signs itself (flags 2) and with an author key (flags 3).
report_req = b"\x55" * 64 + b"\0" * 32
sel("snp_crypto", 1, "sealed-report-request", bytes([0, 5, 0, 0, 0]) + report_req)
sel("snp_crypto", 2, "guest-request", bytes([0, 5, 0, 0]) + report_req)
sel("snp_crypto", 4, "id-block-signed", id_block + bytes([2]))
sel("snp_crypto", 4, "id-block-author-signed", id_block + bytes([3]))

# tdx_crypto: 1 a TD report the quoting enclave quotes (flags: MAC and hashes right).
sel("tdx_crypto", 1, "td-report", bytes([3]) + bytes(td_report))
sel("tdx_crypto", 1, "td-report-v5", bytes([7]) + bytes(td_report))


# --- ghcb and tdcall: request sequences in the `arbitrary` crate's encoding ------------
# (arbitrary 1.x: integers little-endian, bool = a byte's low bit, Option = bool then
# the value, enum = a u32 v picking variant (v * count) >> 32, each Vec element preceded
# by a "one more" bool and the Vec ended by a false one, fields in declaration order.
# The types are those of fuzz/fuzz_targets/ghcb.rs and tdcall.rs; if they change, these
# seeds decode to other (still valid) inputs.)

def a_u8(v): return struct.pack("<B", v)
def a_u16(v): return struct.pack("<H", v)
def a_u32(v): return struct.pack("<I", v)
def a_u64(v): return struct.pack("<Q", v)
def a_bool(v): return b"\x01" if v else b"\x00"
def a_opt(v): return b"\x00" if v is None else b"\x01" + v
def a_vec(items): return b"".join(b"\x01" + i for i in items) + b"\x00"


def a_enum(index, count, *fields):
    v = (index * (1 << 32) + count - 1) // count
    assert (v * count) >> 32 == index and v < 1 << 32
    return a_u32(v) + b"".join(fields)


# Gpa: Low(u16), High(u32), LowPage(u8), HighPage(u16), Mmio(u16), Raw(u64).
def low_page(p): return a_enum(2, 6, a_u8(p))
def high_page(p): return a_enum(3, 6, a_u16(p))
def mmio(o): return a_enum(4, 6, a_u16(o))
def ranges(rs): return a_vec([g + a_u8(n) for g, n in rs])


# ghcb. Op: Write, Rdmsr, Wrmsr, MsrProtocol, Page, Pvalidate, Rmpadjust.
# MsrRequest: SevInfo, Cpuid{u32,u8}, ApResetHold, RegisterGhcb(Gpa), Psc{Gpa,u8},
# HvFeatures, Terminate{u8,u8}, Raw(u64). Small: Small(u8), Raw(u64).
# Value: Small(Small), Gpa(Gpa), Io{bool,u16,u8}, Ap{u8,u8}. Scratch: Buffer(u16), At(Gpa).
# Buffer: Nothing, Bytes(Vec<u8>), Psc{u16,u16,Vec<(Gpa,u8,bool)>}.
# ExitCode: Ioio, Cpuid, Msr, MmioRead, MmioWrite, Psc, GuestRequest, ExtGuestRequest,
# ApCreation, Terminate, HvFeatures, Raw(u64).
def g_msr_protocol(req): return a_enum(3, 7, req)
def g_small(v): return a_enum(0, 2, a_u8(v))
def g_value_small(v): return a_enum(0, 4, g_small(v))
def g_value_raw(v): return a_enum(0, 4, a_enum(1, 2, a_u64(v)))
def g_value_gpa(g): return a_enum(1, 4, g)
def g_value_io(port, flags): return a_enum(2, 4, a_bool(True), a_u16(port), a_u8(flags))
def g_value_ap(vcpu, request): return a_enum(3, 4, a_u8(vcpu), a_u8(request))


def g_page(at, exit_code, info1, info2, regs=(None, None, None, None), scratch=None, buffer=None, register=True):
    return a_enum(4, 7, at, a_bool(False), a_bool(register), a_enum(exit_code, 12), info1, info2,
                  b"".join(a_opt(r) for r in regs), a_opt(scratch), a_opt(None), a_opt(None), a_opt(None),
                  buffer if buffer is not None else a_enum(0, 3))


def g_pvalidate(at, rcx, rdx): return a_enum(5, 7, a_opt(at), g_small(rcx), g_small(rdx))
def g_rmpadjust(at, rdx): return a_enum(6, 7, a_opt(at), g_small(0), a_u64(rdx))
def g_input(launched, shared, ops): return ranges(launched) + ranges(shared) + a_vec(ops)


IOIO_OUT_8 = 1 << 4
write("ghcb", "msr-protocol", g_input([], [], [
    g_msr_protocol(a_enum(0, 8)),                               # SEV information
    g_msr_protocol(a_enum(1, 8, a_u32(0x8000001f), a_u8(1))),   # CPUID EBX
    g_msr_protocol(a_enum(5, 8)),                               # hypervisor features
    g_msr_protocol(a_enum(4, 8, low_page(2), a_u8(2))),         # page 2 to shared
    g_msr_protocol(a_enum(3, 8, low_page(2))),                  # register it as the GHCB
    g_msr_protocol(a_enum(6, 8, a_u8(1), a_u8(4))),             # terminate
]))
write("ghcb", "page-cpuid-ioio-mmio", g_input([], [(low_page(1), 2)], [
    g_page(low_page(1), 1, g_value_small(0), g_value_small(0), (g_value_small(0), None, g_value_small(0), None)),
    g_page(low_page(1), 0, g_value_io(0, IOIO_OUT_8), g_value_small(0), (g_value_raw(0x41), None, None, None)),
    g_page(low_page(1), 0, g_value_io(1, IOIO_OUT_8 | 1), g_value_small(0)),
    g_page(low_page(1), 3, g_value_gpa(mmio(0x10)), g_value_raw(4), scratch=a_enum(0, 2, a_u16(0))),
    g_page(low_page(1), 4, g_value_gpa(mmio(0x10)), g_value_raw(4), scratch=a_enum(1, 2, low_page(2))),
]))
psc = a_enum(2, 3, a_u16(0), a_u16(2), a_vec([high_page(0) + a_u8(2) + a_bool(True),
                                               low_page(5) + a_u8(2) + a_bool(False),
                                               low_page(5) + a_u8(1) + a_bool(False)]))
write("ghcb", "page-psc", g_input([(low_page(4), 4)], [(low_page(1), 1)], [
    g_page(low_page(1), 5, g_value_small(0), g_value_small(0), scratch=a_enum(0, 2, a_u16(0)), buffer=psc),
    g_pvalidate(high_page(0), 1, 1),
]))
write("ghcb", "ap-creation", g_input([(low_page(4), 2)], [(low_page(1), 1)], [
    g_pvalidate(low_page(6), 0, 1),
    g_rmpadjust(low_page(6), 1 << 16),
    g_page(low_page(1), 8, g_value_ap(1, 2), g_value_gpa(low_page(6)), (g_value_small(0), None, None, None)),
]))
write("ghcb", "guest-request", g_input([], [(low_page(1), 4)], [
    g_page(low_page(1), 6, g_value_gpa(low_page(2)), g_value_gpa(low_page(3))),
    g_page(low_page(1), 7, g_value_gpa(low_page(2)), g_value_gpa(low_page(3)),
           (g_value_gpa(low_page(4)), g_value_small(0), None, None)),
]))

# tdcall. Op: Write, Copy{Gpa,Gpa,u16}, QuoteRequest{Gpa, Option<Gpa>}, Tdcall(Box).
# Tdcall: leaf, rcx, rdx, r8, r10, r11, r12, r13, r14, r15. Leaf: VpVmcall, VpInfo,
# RtmrExtend, MrReport, PageAccept, Raw(u64). Value: Small(u8), Private(Gpa),
# Shared(Gpa), Pages(u8), Port{bool,u16}, Msr(MsrIndex), Raw(u64). SubFunction:
# GetTdVmCallInfo, MapGpa, GetQuote, ReportFatalError, SetupEventNotify, Cpuid, Hlt,
# Io, Rdmsr, Wrmsr, Mmio, Raw(u64).
def t_small(v): return a_enum(0, 7, a_u8(v))
def t_private(g): return a_enum(1, 7, g)
def t_shared(g): return a_enum(2, 7, g)
def t_pages(n): return a_enum(3, 7, a_u8(n))
def t_port(p): return a_enum(4, 7, a_bool(True), a_u16(p))


def t_call(leaf, rcx=None, rdx=None, r8=None, sub=0, r12=None, r13=None, r14=None, r15=None):
    z = t_small(0)
    return a_enum(3, 4, a_enum(leaf, 6), rcx or z, rdx or z, r8 or z, z, a_enum(sub, 12),
                  r12 or z, r13 or z, r14 or z, r15 or z)


VMCALL, INFO, RTMR, REPORT, ACCEPT = range(5)
write("tdcall", "report-and-quote", ranges([(low_page(0), 4)]) + ranges([(low_page(8), 2)]) + a_vec([
    t_call(INFO),
    t_call(REPORT, rcx=t_private(low_page(0)), rdx=t_private(low_page(1))),
    a_enum(2, 4, low_page(8), a_opt(low_page(0))),                               # the guest's GetQuote buffer
    t_call(VMCALL, sub=2, r12=t_shared(low_page(8)), r13=t_pages(2)),             # GetQuote
]))
write("tdcall", "accept-map-io-mmio", ranges([]) + ranges([]) + a_vec([
    t_call(ACCEPT, rcx=t_private(low_page(3))),
    t_call(ACCEPT, rcx=t_private(low_page(3))),
    t_call(VMCALL, sub=1, r12=t_shared(high_page(0)), r13=t_pages(79)),           # MapGPA, RETRY
    t_call(VMCALL, sub=7, r12=t_small(1), r13=t_small(1), r14=t_port(0), r15=t_small(0x41)),
    t_call(VMCALL, sub=10, r12=t_small(4), r13=t_small(0), r14=t_private(mmio(0x10))),
    t_call(VMCALL, sub=5, r12=t_small(1)),
    t_call(RTMR, rcx=t_private(low_page(3)), rdx=t_small(3)),
    t_call(VMCALL, sub=3, r12=t_small(7)),                                         # fatal error
]))

# --- Real and emulated evidence -------------------------------------------------------

SGX_EXTENSIONS_OID = bytes.fromhex("06092a864886f84d010d01")


def der_len(b, at):
    """(length, offset of the contents) of the DER length at b[at]."""
    first = b[at]
    if first < 0x80:
        return first, at + 1
    n = first & 0x7f
    return int.from_bytes(b[at + 1:at + 1 + n], "big"), at + 1 + n


def sgx_extensions(cert_der):
    """The SGX extensions' value (DER) of a PCK certificate, or None."""
    at = cert_der.find(SGX_EXTENSIONS_OID)
    if at < 0:
        return None
    at += len(SGX_EXTENSIONS_OID)
    if cert_der[at] == 0x01:  # critical BOOLEAN
        at += 3
    if cert_der[at] != 0x04:
        return None
    n, body = der_len(cert_der, at + 1)
    return cert_der[body:body + n]


def pem_certs(data):
    return [base64.b64decode(b"".join(m.split()))
            for m in re.findall(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", data, re.S)]


def quote_seeds(prefix, quote):
    write("tdx_formats", prefix, bytes([0]) + quote)
    write("tdx_crypto", prefix, bytes([0]) + quote)
    certs = pem_certs(quote)
    ext = sgx_extensions(certs[0]) if certs else None
    if ext:
        write("tdx_formats", prefix + "-sgx-extensions", bytes([2]) + ext)


def report_seeds(prefix, report):
    write("snp_formats", prefix, bytes([0]) + report)
    write("snp_crypto", prefix, bytes([3]) + report)


def refs(directory):
    path = lambda name: os.path.join(directory, name)
    for name, seed in (("go-sev-guest__verify_testdata_attestation.bin", "ref-go-sev-guest-report"),
                       ("virtee-sev__tests_certs_data_report_milan.bin.derived", "ref-virtee-milan-report")):
        if os.path.exists(path(name)):
            report_seeds(seed, open(path(name), "rb").read())
    for name, seed in (("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat", "ref-go-tdx-guest-quote-v4"),
                       ("go-tdx-guest__testing_testdata_quote_v5_sample.dat", "ref-go-tdx-guest-quote-v5"),
                       ("dcap-qvl__sample_tdx_quote", "ref-dcap-qvl-quote")):
        if os.path.exists(path(name)):
            quote_seeds(seed, open(path(name), "rb").read())


def lines_hex(console, prefix):
    """The bytes of the numbered `prefix N <hex>` lines of a demo guest's console."""
    out = b""
    for line in console.splitlines():
        if line.startswith(prefix):
            index, hex_text = line[len(prefix):].split(" ", 1)
            if not index.isdigit():  # "attestation: report data ..."
                continue
            assert int(index) == len(out) // 48, "lines in order"
            out += bytes.fromhex(hex_text.strip())
    return out


def emulated(cvmm):
    for tee, prefix, seeds in (("snp", "attestation: report ", report_seeds),
                               ("tdx", "attestation: quote ", quote_seeds)):
        run = subprocess.run([cvmm, "run", "--tee", tee, "--emulated", "--rng", "--timeout", "60"],
                             capture_output=True, text=True, timeout=300)
        evidence = lines_hex(run.stdout, prefix)
        if run.returncode != 0 or not evidence:
            raise SystemExit("fuzz-seeds: the emulated %s demo printed no evidence (exit %d): %s"
                             % (tee, run.returncode, run.stderr[-500:]))
        seeds("emulated-" + tee + ("-report" if tee == "snp" else "-quote"), evidence)


args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
args.add_argument("--refs", metavar="DIR", help="also write seeds from the shared attestation samples in DIR")
args.add_argument("--emulated", metavar="CVMM", help="also write the emulated platforms' report and quote")
args = args.parse_args()
if args.refs:
    refs(args.refs)
if args.emulated:
    emulated(args.emulated)
print("seeds written to", os.path.normpath(ROOT))
