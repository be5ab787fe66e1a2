//! Fuzzes the emulated TDX platform's TDCALL handler (`vmm::tdx::TdxVcpuExits::tdcall`)
//! with sequences of TDCALLs (TDG.VP.INFO, TDG.MEM.PAGE.ACCEPT, TDG.MR.RTMR.EXTEND,
//! TDG.MR.REPORT, and TDG.VP.VMCALL's MapGPA, GetQuote, ReportFatalError,
//! SetupEventNotifyInterrupt, GetTdVmCallInfo, CPUID, HLT, IO, RDMSR, WRMSR, MMIO) and
//! the guest's own writes and copies in its memory (a TD report copied into a GetQuote
//! buffer gets quoted), over a small guest memory whose pages the launch and the requests
//! make private, shared or accepted. Every TDCALL that does not end the VM must move RIP
//! past the instruction and answer with a status the TDX module or the GHCI defines; at
//! the end of the run the page states and the devices' shared view must agree.
#![no_main]

use std::cell::OnceCell;
use std::sync::Arc;

use arbitrary::Arbitrary;
use arch::tdcall::*;
use cvmm_fuzz::cvm::{check_page_states, guest_copy, guest_write, with_machine, Gpa, MsrIndex, Msrs};
use devices::virtio::SharedMemory;
use kvm_bindings::kvm_regs;
use launch::tdx::certs::EmulatedIntelChain;
use launch::tdx::emulated::{EmulatedTdxPlatform, TdxModuleConfig, SHARED_BIT};
use launch::tdx::quote::QuotingEnclave;
use libfuzzer_sys::fuzz_target;
use vm_memory::GuestMemoryMmap;
use vmm::tdx::{TdcallOutcome, TdxVcpuExits};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Ranges the launch added (private, accepted): first page and page count.
    launched: Vec<(Gpa, u8)>,
    /// Ranges the guest made shared before the requests (first page, page count).
    shared: Vec<(Gpa, u8)>,
    /// What the guest does, in order; a TDCALL that ends the VM ends the run.
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The guest writes its memory.
    Write { at: Gpa, bytes: Vec<u8> },
    /// The guest copies within its memory (up to 4 KiB).
    Copy { from: Gpa, to: Gpa, len: u16 },
    /// The guest prepares a GetQuote buffer at `at`: the header (version 1, TD report
    /// length) and, when given, the TD report it copies from `report`.
    QuoteRequest { at: Gpa, report: Option<Gpa> },
    /// A TDCALL.
    Tdcall(Box<Tdcall>),
}

#[derive(Arbitrary, Debug)]
struct Tdcall {
    leaf: Leaf,
    /// RCX, RDX, R8, R10 (TDG.VP.VMCALL: 0 for the GHCI's standard calls).
    rcx: Value,
    rdx: Value,
    r8: Value,
    r10: Value,
    /// R11: TDG.VP.VMCALL's sub-function.
    r11: SubFunction,
    /// R12 to R15.
    r12: Value,
    r13: Value,
    r14: Value,
    r15: Value,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Leaf {
    VpVmcall,
    VpInfo,
    RtmrExtend,
    MrReport,
    PageAccept,
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SubFunction {
    GetTdVmCallInfo,
    MapGpa,
    GetQuote,
    ReportFatalError,
    SetupEventNotify,
    Cpuid,
    Hlt,
    Io,
    Rdmsr,
    Wrmsr,
    Mmio,
    Raw(u64),
}

/// A register value.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    /// 0 to 255 (sizes, directions, indexes, vectors, levels).
    Small(u8),
    /// A private (shared bit clear) guest-physical address.
    Private(Gpa),
    /// The same with the shared bit set.
    Shared(Gpa),
    /// A length in pages (0 to 79: GetQuote takes at most 64).
    Pages(u8),
    /// A port: the port device's or any.
    Port { device: bool, port: u16 },
    /// An MSR index.
    Msr(MsrIndex),
    /// Anything.
    Raw(u64),
}

impl Value {
    fn get(self) -> u64 {
        match self {
            Value::Small(v) => u64::from(v),
            Value::Private(g) => g.get(),
            Value::Shared(g) => g.get() | SHARED_BIT,
            Value::Pages(n) => u64::from(n % 80) * 0x1000,
            Value::Port { device, port } => {
                if device {
                    cvmm_fuzz::cvm::PORTS.0 + u64::from(port) % cvmm_fuzz::cvm::PORTS.1
                } else {
                    u64::from(port)
                }
            }
            Value::Msr(i) => u64::from(i.get()),
            Value::Raw(v) => v,
        }
    }
}

impl Tdcall {
    fn regs(&self) -> kvm_regs {
        let rax = match self.leaf {
            Leaf::VpVmcall => TDG_VP_VMCALL,
            Leaf::VpInfo => TDG_VP_INFO,
            Leaf::RtmrExtend => TDG_MR_RTMR_EXTEND,
            Leaf::MrReport => TDG_MR_REPORT,
            Leaf::PageAccept => TDG_MEM_PAGE_ACCEPT,
            Leaf::Raw(v) => v,
        };
        let r11 = match self.r11 {
            SubFunction::GetTdVmCallInfo => TDVMCALL_GET_TD_VM_CALL_INFO,
            SubFunction::MapGpa => TDVMCALL_MAP_GPA,
            SubFunction::GetQuote => TDVMCALL_GET_QUOTE,
            SubFunction::ReportFatalError => TDVMCALL_REPORT_FATAL_ERROR,
            SubFunction::SetupEventNotify => TDVMCALL_SETUP_EVENT_NOTIFY,
            SubFunction::Cpuid => EXIT_REASON_CPUID,
            SubFunction::Hlt => EXIT_REASON_HLT,
            SubFunction::Io => EXIT_REASON_IO,
            SubFunction::Rdmsr => EXIT_REASON_RDMSR,
            SubFunction::Wrmsr => EXIT_REASON_WRMSR,
            SubFunction::Mmio => EXIT_REASON_EPT_VIOLATION,
            SubFunction::Raw(v) => v,
        };
        kvm_regs {
            rax,
            rcx: self.rcx.get(),
            rdx: self.rdx.get(),
            r8: self.r8.get(),
            r10: self.r10.get(),
            r11,
            r12: self.r12.get(),
            r13: self.r13.get(),
            r14: self.r14.get(),
            r15: self.r15.get(),
            rip: 0x1000,
            ..Default::default()
        }
    }
}

/// The thread's platform (the emulated Intel chain is the VMM's cached one, its quoting
/// enclave made once). Every run starts from a fresh page table and TDX module.
fn platform(mem: &GuestMemoryMmap) -> Arc<EmulatedTdxPlatform> {
    thread_local! {
        static QE: OnceCell<(Arc<EmulatedIntelChain>, Arc<QuotingEnclave>)> = const { OnceCell::new() };
    }
    let (chain, qe) = QE.with(|q| {
        q.get_or_init(|| {
            let chain = EmulatedIntelChain::load_or_create_default().expect("Intel chain");
            let qe = QuotingEnclave::new(&chain).expect("quoting enclave");
            (Arc::new(chain), Arc::new(qe))
        })
        .clone()
    });
    let platform = EmulatedTdxPlatform::new(mem, &TdxModuleConfig::default(), 2, chain, qe);
    platform.finalize().expect("finalize");
    Arc::new(platform)
}

/// The statuses TDG.VP.VMCALL leaves in R10.
const VMCALL_STATUSES: [u64; 4] = [TDVMCALL_SUCCESS, TDVMCALL_RETRY, TDVMCALL_INVALID_OPERAND, TDVMCALL_ALIGN_ERROR];
/// The statuses the module's own leaves leave in RAX.
const MODULE_STATUSES: [u64; 4] = [TDX_SUCCESS, TDX_OPERAND_INVALID, TDX_PAGE_ALREADY_ACCEPTED, TDX_PAGE_SIZE_MISMATCH];

fuzz_target!(|input: Input| {
    with_machine(|m| {
        let platform = platform(&m.mem);
        for (at, pages) in &input.launched {
            let _ = platform.pages().launch_update(at.get() & !0xfff, u64::from(*pages) * 0x1000);
        }
        let shared = Arc::new(SharedMemory::all_private(&m.mem));
        for (at, pages) in &input.shared {
            let (gpa, len) = (at.get() & !0xfff, u64::from(*pages) * 0x1000);
            if platform.pages().set_private(gpa, len, false).is_ok() {
                shared.set_shared(gpa, len, true).expect("the page states and the devices' view agree on RAM");
            }
        }
        let mut exits = TdxVcpuExits::new(1, platform.clone(), shared.clone(), m.cpuid.clone(), m.mem.clone());
        let mut msrs = Msrs::default();
        for op in &input.ops {
            match op {
                Op::Write { at, bytes } => guest_write(&m.mem, at.get(), bytes),
                Op::Copy { from, to, len } => guest_copy(&m.mem, from.get(), to.get(), usize::from(*len) % 0x1001),
                Op::QuoteRequest { at, report } => {
                    let mut header = [0u8; QUOTE_HEADER_SIZE];
                    header[0] = 1;
                    header[16..20].copy_from_slice(&(TDREPORT_SIZE as u32).to_le_bytes());
                    guest_write(&m.mem, at.get(), &header);
                    if let Some(report) = report {
                        guest_copy(&m.mem, report.get(), at.get() + QUOTE_HEADER_SIZE as u64, TDREPORT_SIZE);
                    }
                }
                Op::Tdcall(call) => {
                    let mut regs = call.regs();
                    let leaf = regs.rax;
                    match exits.tdcall(&mut regs, &mut msrs, &m.pio, &m.mmio) {
                        TdcallOutcome::End(_) => break,
                        TdcallOutcome::Continue | TdcallOutcome::Park | TdcallOutcome::Idle => {
                            assert_eq!(regs.rip, 0x1004, "RIP moves past TDCALL");
                            if leaf == TDG_VP_VMCALL {
                                assert_eq!(regs.rax, TDX_SUCCESS, "TDG.VP.VMCALL itself succeeds");
                                assert!(VMCALL_STATUSES.contains(&regs.r10), "TDVMCALL status {:#x}", regs.r10);
                            } else {
                                assert!(MODULE_STATUSES.contains(&regs.rax), "TDCALL status {:#x}", regs.rax);
                            }
                        }
                    }
                }
            }
        }
        check_page_states(&platform.pages(), &shared);
    });
});
