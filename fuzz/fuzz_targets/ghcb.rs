//! Fuzzes the emulated SEV-SNP platform's exit handler (`vmm::snp::SnpVcpuExits`) with
//! sequences of guest requests: the GHCB MSR protocol, GHCB pages (IOIO, MMIO, MSR,
//! CPUID, page-state changes, guest requests, AP creation, termination), intercepted
//! MSR accesses, PVALIDATE and RMPADJUST, and the guest's own writes to its memory,
//! over a small guest memory whose pages the launch and the requests make private,
//! shared, validated or VMSAs. Answered requests must carry a GHCB-defined result, and
//! at the end of the run the RMP and the devices' shared view must agree.
#![no_main]

use std::cell::OnceCell;
use std::sync::Arc;

use arbitrary::Arbitrary;
use arch::ghcb::*;
use cvmm_fuzz::cvm::{check_page_states, guest_write, with_machine, Gpa, MsrIndex, Msrs};
use devices::virtio::SharedMemory;
use kvm_bindings::kvm_regs;
use launch::plan::snp::SnpVcpu;
use launch::plan::{LaunchPlan, VcpuState};
use launch::snp::certs::EmulatedAmdChain;
use launch::snp::cpuid_page::CpuidPlatform;
use launch::snp::emulated::{EmulatedSnpPlatform, Rmp};
use launch::snp::id_block::FinishOptions;
use launch::snp::psp::PspLaunch;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::snp::{PlatformInstruction, SnpVcpuExits};

/// vCPUs of the guest: the BSP and two APs the guest may create.
const VCPUS: usize = 3;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Ranges the launch put into the guest (private, validated, 4 KiB RMP entries):
    /// first page and page count.
    launched: Vec<(Gpa, u8)>,
    /// Ranges the guest made shared before the requests (first page, page count).
    shared: Vec<(Gpa, u8)>,
    /// What the guest does, in order; a request that ends the VM ends the run.
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The guest writes its memory.
    Write { at: Gpa, bytes: Vec<u8> },
    /// RDMSR of an intercepted MSR.
    Rdmsr(Msr),
    /// WRMSR of an intercepted MSR.
    Wrmsr(Msr, u64),
    /// VMGEXIT with an MSR-protocol request in the GHCB MSR.
    MsrProtocol(MsrRequest),
    /// VMGEXIT with a GHCB page.
    Page(Box<PageRequest>),
    /// PVALIDATE of the page at `at` (`None`: its virtual address does not translate).
    Pvalidate { at: Option<Gpa>, rcx: Small, rdx: Small },
    /// RMPADJUST of the page at `at`.
    Rmpadjust { at: Option<Gpa>, rcx: Small, rdx: u64 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Msr {
    Ghcb,
    SevStatus,
    Other(MsrIndex),
}

impl Msr {
    fn index(self) -> u32 {
        match self {
            Msr::Ghcb => MSR_GHCB,
            Msr::SevStatus => MSR_SEV_STATUS,
            Msr::Other(i) => i.get(),
        }
    }
}

/// A register value: small (0-3 and the like), or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Small {
    Small(u8),
    Raw(u64),
}

impl Small {
    fn get(self) -> u64 {
        match self {
            Small::Small(v) => u64::from(v % 4) | (u64::from(v >> 2 & 1) << 16),
            Small::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum MsrRequest {
    SevInfo,
    Cpuid { function: u32, reg: u8 },
    ApResetHold,
    RegisterGhcb(Gpa),
    Psc { at: Gpa, op: u8 },
    HvFeatures,
    Terminate { set: u8, code: u8 },
    Raw(u64),
}

impl MsrRequest {
    fn value(&self) -> u64 {
        match *self {
            MsrRequest::SevInfo => MSR_SEV_INFO_REQ,
            MsrRequest::Cpuid { function, reg } => {
                (u64::from(function) << 32) | (u64::from(reg & 3) << 30) | MSR_CPUID_REQ
            }
            MsrRequest::ApResetHold => MSR_AP_RESET_HOLD_REQ,
            MsrRequest::RegisterGhcb(at) => (at.get() & !0xfff) | MSR_REG_GPA_REQ,
            MsrRequest::Psc { at, op } => {
                (u64::from(op & 0xf) << 52) | ((at.get() >> 12) & 0xff_ffff_ffff) << 12 | MSR_PSC_REQ
            }
            MsrRequest::HvFeatures => MSR_HV_FT_REQ,
            MsrRequest::Terminate { set, code } => {
                (u64::from(code) << 16) | (u64::from(set & 0xf) << 12) | MSR_TERM_REQ
            }
            MsrRequest::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PageRequest {
    /// Where the GHCB is (rounded down to its page unless `unaligned`).
    at: Gpa,
    unaligned: bool,
    /// Register the GHCB first (MSR protocol).
    register: bool,
    exit_code: ExitCode,
    info1: Value,
    info2: Value,
    /// RAX, RBX, RCX, RDX: set and marked valid when present.
    regs: [Option<Value>; 4],
    scratch: Option<Scratch>,
    /// XORed into the valid bitmap the request's fields imply.
    valid_flip: Option<[u8; 16]>,
    /// GHCB usage (0 unless given) and protocol version (2 unless given).
    usage: Option<u32>,
    version: Option<u16>,
    buffer: Buffer,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ExitCode {
    Ioio,
    Cpuid,
    Msr,
    MmioRead,
    MmioWrite,
    Psc,
    GuestRequest,
    ExtGuestRequest,
    ApCreation,
    Terminate,
    HvFeatures,
    Raw(u64),
}

impl ExitCode {
    fn get(self) -> u64 {
        match self {
            ExitCode::Ioio => EXIT_IOIO,
            ExitCode::Cpuid => EXIT_CPUID,
            ExitCode::Msr => EXIT_MSR,
            ExitCode::MmioRead => EXIT_MMIO_READ,
            ExitCode::MmioWrite => EXIT_MMIO_WRITE,
            ExitCode::Psc => EXIT_PSC,
            ExitCode::GuestRequest => EXIT_GUEST_REQUEST,
            ExitCode::ExtGuestRequest => EXIT_EXT_GUEST_REQUEST,
            ExitCode::ApCreation => EXIT_AP_CREATION,
            ExitCode::Terminate => EXIT_TERM_REQUEST,
            ExitCode::HvFeatures => EXIT_HV_FEATURES,
            ExitCode::Raw(v) => v,
        }
    }
}

/// An SW_EXITINFO or register value.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Small(Small),
    Gpa(Gpa),
    /// IOIO SW_EXITINFO1: the port device or any port, type/size/string flags.
    Io {
        device: bool,
        port: u16,
        flags: u8,
    },
    /// AP creation SW_EXITINFO1: vCPU index and request.
    Ap {
        vcpu: u8,
        request: u8,
    },
}

impl Value {
    fn get(self) -> u64 {
        match self {
            Value::Small(s) => s.get(),
            Value::Gpa(g) => g.get(),
            Value::Io { device, port, flags } => {
                let port = if device { cvmm_fuzz::cvm::PORTS.0 + u64::from(port) % 8 } else { u64::from(port) };
                (port << IOIO_PORT_SHIFT) | u64::from(flags)
            }
            Value::Ap { vcpu, request } => (u64::from(vcpu % 4) << 32) | u64::from(request % 4),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Scratch {
    /// In the GHCB's shared buffer, at this offset.
    Buffer(u16),
    /// Elsewhere.
    At(Gpa),
}

/// What the request puts in the GHCB's shared buffer.
#[derive(Arbitrary, Debug)]
enum Buffer {
    Nothing,
    Bytes(Vec<u8>),
    /// A page-state change: header (current and last entry) and entries.
    Psc {
        cur: u16,
        end: u16,
        entries: Vec<(Gpa, u8, bool)>,
    },
}

/// The thread's platform, launched once (its PSP measured the vCPUs and runs the
/// guest; the key chain is the VMM's cached one). Every run starts from the same state:
/// a fresh RMP and, reloading a plan without ranges, every AP waiting to be created.
/// (The PSP's state changes only when a guest message opens, which needs the VMPCK
/// the fuzzer does not have.)
fn platform(mem: &GuestMemoryMmap) -> Arc<EmulatedSnpPlatform> {
    thread_local! {
        static PLATFORM: OnceCell<Arc<EmulatedSnpPlatform>> = const { OnceCell::new() };
    }
    let plan = LaunchPlan { ranges: Vec::new(), vcpus: vec![VcpuState::Snp(SnpVcpu::default()); VCPUS] };
    let platform = PLATFORM.with(|p| {
        p.get_or_init(|| {
            let chain = Arc::new(EmulatedAmdChain::load_or_create_default().expect("AMD chain"));
            let cpuid = CpuidPlatform::from_entries(&[]);
            let launch = PspLaunch { policy: 0x30000, finish: FinishOptions::default(), cpuid, chain };
            let platform = EmulatedSnpPlatform::new(mem, launch).expect("platform");
            platform.load_plan(mem, &plan).expect("plan");
            platform.launch_finish().expect("launch finish");
            Arc::new(platform)
        })
        .clone()
    });
    *platform.rmp() = Rmp::new(mem);
    platform.load_plan(mem, &plan).expect("plan");
    platform
}

fn write_ghcb(mem: &GuestMemoryMmap, gpa: u64, r: &PageRequest) {
    let mut page = vec![0u8; GHCB_SIZE];
    let mut valid = [0u8; 16];
    let mut set = |page: &mut [u8], off: usize, v: u64| {
        page[off..off + 8].copy_from_slice(&v.to_le_bytes());
        let bit = valid_bit(off);
        valid[bit / 8] |= 1 << (bit % 8);
    };
    set(&mut page, OFF_SW_EXIT_CODE, r.exit_code.get());
    set(&mut page, OFF_SW_EXIT_INFO_1, r.info1.get());
    set(&mut page, OFF_SW_EXIT_INFO_2, r.info2.get());
    for (off, v) in [OFF_RAX, OFF_RBX, OFF_RCX, OFF_RDX].into_iter().zip(r.regs) {
        if let Some(v) = v {
            set(&mut page, off, v.get());
        }
    }
    if let Some(s) = r.scratch {
        let v = match s {
            Scratch::Buffer(o) => gpa + (OFF_SHARED_BUFFER + usize::from(o) % SHARED_BUFFER_SIZE) as u64,
            Scratch::At(g) => g.get(),
        };
        set(&mut page, OFF_SW_SCRATCH, v);
    }
    if let Some(flip) = r.valid_flip {
        for (v, f) in valid.iter_mut().zip(flip) {
            *v ^= f;
        }
    }
    page[OFF_VALID_BITMAP..OFF_VALID_BITMAP + 16].copy_from_slice(&valid);
    let buffer = &mut page[OFF_SHARED_BUFFER..OFF_SHARED_BUFFER + SHARED_BUFFER_SIZE];
    match &r.buffer {
        Buffer::Nothing => {}
        Buffer::Bytes(b) => {
            let n = b.len().min(buffer.len());
            buffer[..n].copy_from_slice(&b[..n]);
        }
        Buffer::Psc { cur, end, entries } => {
            buffer[..2].copy_from_slice(&cur.to_le_bytes());
            buffer[2..4].copy_from_slice(&end.to_le_bytes());
            for (i, (at, op, huge)) in entries.iter().take((SHARED_BUFFER_SIZE - PSC_HEADER_SIZE) / 8).enumerate() {
                let e = psc_entry(at.get() >> 12, u64::from(op & 0xf), *huge);
                let o = PSC_HEADER_SIZE + 8 * i;
                buffer[o..o + 8].copy_from_slice(&e.to_le_bytes());
            }
        }
    }
    let usage = r.usage.unwrap_or(0);
    page[OFF_GHCB_USAGE..OFF_GHCB_USAGE + 4].copy_from_slice(&usage.to_le_bytes());
    let version = r.version.unwrap_or(GHCB_PROTOCOL_VERSION);
    page[OFF_PROTOCOL_VERSION..OFF_PROTOCOL_VERSION + 2].copy_from_slice(&version.to_le_bytes());
    guest_write(mem, gpa, &page);
}

/// The MSR-protocol responses the handler may leave in the GHCB MSR.
const MSR_RESPONSES: [u64; 6] =
    [MSR_SEV_INFO_RESP, MSR_CPUID_RESP, MSR_AP_RESET_HOLD_RESP, MSR_REG_GPA_RESP, MSR_PSC_RESP, MSR_HV_FT_RESP];

fuzz_target!(|input: Input| {
    with_machine(|m| {
        let platform = platform(&m.mem);
        for (at, pages) in &input.launched {
            let _ = platform.rmp().launch_update(at.get() & !0xfff, u64::from(*pages) * 0x1000);
        }
        let shared = Arc::new(SharedMemory::all_private(&m.mem));
        for (at, pages) in &input.shared {
            let (gpa, len) = (at.get() & !0xfff, u64::from(*pages) * 0x1000);
            if platform.rmp().set_private(gpa, len, false).is_ok() {
                shared.set_shared(gpa, len, true).expect("the page states and the devices' view agree on RAM");
            }
        }
        let mut exits = SnpVcpuExits::new(0, platform.clone(), shared.clone(), m.cpuid.clone(), m.mem.clone());
        let mut msrs = Msrs::default();
        for op in &input.ops {
            let ended = match op {
                Op::Write { at, bytes } => {
                    guest_write(&m.mem, at.get(), bytes);
                    false
                }
                Op::Rdmsr(msr) => {
                    let _ = exits.rdmsr(msr.index());
                    false
                }
                Op::Wrmsr(msr, v) => {
                    let _ = exits.wrmsr(msr.index(), *v);
                    false
                }
                Op::MsrProtocol(req) => {
                    let value = req.value();
                    exits.wrmsr(MSR_GHCB, value);
                    let result = exits.vmgexit(&mut msrs, &m.pio, &m.mmio);
                    if result.is_ok() && value & MSR_INFO_MASK != 0 {
                        let now = exits.rdmsr(MSR_GHCB).expect("the GHCB MSR reads");
                        assert!(MSR_RESPONSES.contains(&(now & MSR_INFO_MASK)), "MSR protocol answer {now:#x}");
                    }
                    result.is_err()
                }
                Op::Page(r) => {
                    let gpa = if r.unaligned { r.at.get() } else { r.at.get() & !0xfff };
                    let mut ended = false;
                    if r.register {
                        exits.wrmsr(MSR_GHCB, (gpa & !0xfff) | MSR_REG_GPA_REQ);
                        ended = exits.vmgexit(&mut msrs, &m.pio, &m.mmio).is_err();
                    }
                    if !ended {
                        write_ghcb(&m.mem, gpa, r);
                        exits.wrmsr(MSR_GHCB, gpa);
                        ended = exits.vmgexit(&mut msrs, &m.pio, &m.mmio).is_err();
                        if !ended && gpa & MSR_INFO_MASK == 0 {
                            // Answered in the page: SW_EXITINFO1 says success or error.
                            // (An unaligned GHCB address is an MSR-protocol request.)
                            let info1: u64 =
                                m.mem.read_obj(GuestAddress(gpa + OFF_SW_EXIT_INFO_1 as u64)).expect("GHCB");
                            assert!(info1 <= EXITINFO1_ERROR, "SW_EXITINFO1 {info1:#x}");
                        }
                    }
                    ended
                }
                Op::Pvalidate { at, rcx, rdx } => {
                    let mut regs = kvm_regs { rcx: rcx.get(), rdx: rdx.get(), ..Default::default() };
                    let result =
                        exits.platform_instruction(PlatformInstruction::Pvalidate, at.map(Gpa::get), &mut regs);
                    if result.is_ok() {
                        assert_eq!(regs.rip, 4);
                        assert!(
                            [PVALIDATE_SUCCESS, PVALIDATE_FAIL_INPUT, PVALIDATE_FAIL_SIZEMISMATCH].contains(&regs.rax)
                        );
                    }
                    result.is_err()
                }
                Op::Rmpadjust { at, rcx, rdx } => {
                    let mut regs = kvm_regs { rcx: rcx.get(), rdx: *rdx, ..Default::default() };
                    exits.platform_instruction(PlatformInstruction::Rmpadjust, at.map(Gpa::get), &mut regs).is_err()
                }
            };
            if ended {
                break;
            }
        }
        check_page_states(&platform.rmp(), &shared);
    });
});
