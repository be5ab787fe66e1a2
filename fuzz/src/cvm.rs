//! Shared harness of the confidential-guest exit targets (`ghcb`, `tdcall`): a small
//! guest memory (a 64 KiB region and a 2 MiB one, so 2 MiB page operations can
//! succeed), port and MMIO buses with one stateless device each, a stand-in for the
//! vCPU's MSRs, guest addresses the fuzzer picks from (inside RAM, at the MMIO device, or
//! anything), and the check that the emulated RMP and the devices' shared view agree.
//!
//! Guest memory is mapped once per thread and emptied before every run (MADV_DONTNEED:
//! cheap when the run touched few pages), so runs do not see each other's bytes.

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use devices::bus::{Bus, BusDevice};
use devices::virtio::SharedMemory;
use kvm_bindings::kvm_cpuid_entry2;
use launch::snp::emulated::Rmp;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Start and length of the small RAM region.
pub const LOW: (u64, u64) = (0, 0x1_0000);
/// Start and length of the 2 MiB RAM region.
pub const HIGH: (u64, u64) = (0x20_0000, 0x20_0000);
/// The MMIO device's window (the fuzzer's MMIO addresses reach a bit past it).
pub const MMIO: (u64, u64) = (0xd000_0000, 0x1000);
/// The port device's ports.
pub const PORTS: (u64, u64) = (0x3f8, 8);
const PAGE: u64 = 0x1000;

/// A guest-physical address as the fuzzer picks it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Gpa {
    /// In the small region (any byte).
    Low(u16),
    /// In the 2 MiB region.
    High(u32),
    /// A page of the small region.
    LowPage(u8),
    /// A page of the 2 MiB region.
    HighPage(u16),
    /// At (or just past) the MMIO device.
    Mmio(u16),
    /// Anything.
    Raw(u64),
}

impl Gpa {
    /// The address.
    pub fn get(self) -> u64 {
        match self {
            Gpa::Low(o) => LOW.0 + u64::from(o) % LOW.1,
            Gpa::High(o) => HIGH.0 + u64::from(o) % HIGH.1,
            Gpa::LowPage(p) => LOW.0 + (u64::from(p) * PAGE) % LOW.1,
            Gpa::HighPage(p) => HIGH.0 + (u64::from(p) * PAGE) % HIGH.1,
            Gpa::Mmio(o) => MMIO.0 + u64::from(o) % (2 * MMIO.1),
            Gpa::Raw(v) => v,
        }
    }
}

/// A device that remembers nothing: reads return bytes made from the offset.
struct Stateless;

impl BusDevice for Stateless {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8) ^ 0x5a;
        }
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// Everything a run reuses from the thread: guest memory and the buses.
pub struct Machine {
    /// Guest RAM (both regions).
    pub mem: GuestMemoryMmap,
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// CPUID entries (leaf 0, 1, 7.0 and 7.1 (indexed), 0x8000_001f).
    pub cpuid: Arc<[kvm_cpuid_entry2]>,
}

impl Machine {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(LOW.0), LOW.1 as usize),
            (GuestAddress(HIGH.0), HIGH.1 as usize),
        ])
        .expect("guest memory");
        let dev = || -> Arc<Mutex<dyn BusDevice>> { Arc::new(Mutex::new(Stateless)) };
        let mut pio = Bus::new();
        pio.insert(dev(), PORTS.0, PORTS.1).expect("port device");
        let mut mmio = Bus::new();
        mmio.insert(dev(), MMIO.0, MMIO.1).expect("MMIO device");
        let entry = |function, index, flags, eax| kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx: eax ^ 1,
            ecx: eax ^ 2,
            edx: eax ^ 3,
            ..Default::default()
        };
        let cpuid = vec![
            entry(0, 0, 0, 0xd),
            entry(1, 0, 0, 0x00a0_0f11),
            entry(7, 0, 1, 1),
            entry(7, 1, 1, 0x10),
            entry(0x8000_001f, 0, 0, 0x1b),
        ]
        .into();
        Self { mem, pio, mmio, cpuid }
    }

    /// Empties guest memory (every byte reads zero again).
    fn clear(&self) {
        for r in self.mem.iter() {
            let host = r.as_ptr();
            // SAFETY: `host` is the start of this region's anonymous private mapping of
            // `r.len()` bytes, which the memory object owns and keeps mapped; DONTNEED
            // only drops its pages (the next access reads zeros), nothing is unmapped.
            let rc = unsafe { libc::madvise(host.cast(), r.len() as usize, libc::MADV_DONTNEED) };
            assert_eq!(rc, 0, "madvise");
        }
    }
}

/// Runs `f` with the thread's machine, its memory emptied first.
pub fn with_machine<R>(f: impl FnOnce(&Machine) -> R) -> R {
    thread_local! {
        static MACHINE: Machine = Machine::new();
    }
    MACHINE.with(|m| {
        m.clear();
        f(m)
    })
}

/// The guest writing its own memory (any page: neither platform stops it); bytes past
/// the end of a RAM region are dropped.
pub fn guest_write(mem: &GuestMemoryMmap, gpa: u64, bytes: &[u8]) {
    let _ = mem.write(bytes, GuestAddress(gpa));
}

/// The guest copying `len` bytes of its memory (e.g. a TD report into a shared buffer).
pub fn guest_copy(mem: &GuestMemoryMmap, from: u64, to: u64, len: usize) {
    let mut buf = vec![0u8; len];
    if mem.read_slice(&mut buf, GuestAddress(from)).is_ok() {
        guest_write(mem, to, &buf);
    }
}

/// The vCPU's MSRs: a few exist (and keep what is written), the rest refuse access.
#[derive(Default)]
pub struct Msrs(Vec<(u32, u64)>);

/// The MSRs that exist: TSC, APIC_BASE, PAT, EFER, KERNEL_GS_BASE.
const KNOWN_MSRS: [u32; 5] = [0x10, 0x1b, 0x277, 0xc000_0080, 0xc000_0102];

impl vmm::msr::MsrAccess for Msrs {
    fn read_msr(&mut self, index: u32) -> Option<u64> {
        KNOWN_MSRS.contains(&index).then(|| self.0.iter().rev().find(|(i, _)| *i == index).map_or(0, |(_, v)| *v))
    }
    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        if KNOWN_MSRS.contains(&index) {
            self.0.push((index, value));
        }
        KNOWN_MSRS.contains(&index)
    }
}

/// An MSR index as the fuzzer picks it: one of those that exist, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MsrIndex {
    /// One that exists.
    Known(u8),
    /// Anything.
    Raw(u32),
}

impl MsrIndex {
    /// The index.
    pub fn get(self) -> u32 {
        match self {
            MsrIndex::Known(i) => KNOWN_MSRS[usize::from(i) % KNOWN_MSRS.len()],
            MsrIndex::Raw(v) => v,
        }
    }
}

/// Checks what must hold whatever the guest asked: a page is shared in the devices'
/// view exactly when the RMP (SNP) or page table (TDX) says it is not private, and only
/// private pages are validated (accepted) or VMSAs. (The per-page test has no branch,
/// so the coverage instrumentation stays cheap; a failure is then explained page by
/// page.)
pub fn check_page_states(rmp: &Rmp, shared: &SharedMemory) {
    let view = shared.view();
    let view = view.memory();
    let shared_ranges: Vec<(u64, u64)> = view.iter().map(|r| (r.start_addr().0, r.start_addr().0 + r.len())).collect();
    let mut pages = 0;
    for (start, states) in rmp.regions() {
        let mut in_view = vec![0u8; states.len()];
        for &(s, e) in &shared_ranges {
            let first = (s.saturating_sub(start) / PAGE) as usize;
            let end = ((e.saturating_sub(start) / PAGE) as usize).min(states.len());
            in_view.get_mut(first..end).into_iter().for_each(|r| r.fill(1));
        }
        let mut bad = 0u8;
        for (state, &v) in states.iter().zip(&in_view) {
            let is_shared = u8::from(!state.private);
            bad |= (v ^ is_shared) | (is_shared & (u8::from(state.validated) | u8::from(state.vmsa)));
        }
        if bad != 0 {
            for (i, (state, &v)) in states.iter().zip(&in_view).enumerate() {
                let gpa = start + i as u64 * PAGE;
                assert_eq!(v == 1, !state.private, "page {gpa:#x}: RMP {state:?}, devices' view shared={v}");
                assert!(state.private || !(state.validated || state.vmsa), "page {gpa:#x}: shared but {state:?}");
            }
        }
        pages += states.len() as u64;
    }
    assert_eq!(pages, (LOW.1 + HIGH.1) / PAGE, "every RAM page has an RMP entry");
}
