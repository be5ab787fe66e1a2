//! The VMM's side of an emulated SEV-SNP guest: the exits KVM would handle for a real
//! SNP guest, handled here as KVM does them.
//!
//! - The GHCB MSR and SEV_STATUS reads/writes (MSR filter exits).
//! - VMGEXIT (the emulated doorbell, a port write): the GHCB MSR protocol (SEV
//!   information, CPUID, GHCB GPA registration, page-state change, hypervisor
//!   features, termination) and the GHCB page protocol (IOIO, MMIO, MSR, CPUID,
//!   page-state change, guest requests, hypervisor features, termination).
//! - PVALIDATE and RMPADJUST (emulation-failure exits), against the emulated RMP.
//!
//! Guest input is hostile: the GHCB is read once into a local copy (no double fetch),
//! every field is checked (valid bitmap, usage, protocol version, scratch bounds,
//! indexes), and a malformed request gets the GHCB specification's error code in
//! SW_EXITINFO1/2. Only what cannot be answered in the GHCB ends the VM: a GHCB
//! that is not shared memory or not the registered one, an unknown MSR-protocol
//! request, a termination request.

use std::sync::Arc;

use arch::ghcb::*;
use devices::bus::Bus;
use devices::virtio::SharedMemory;
use kvm_bindings::{kvm_cpuid_entry2, kvm_regs};
use kvm_ioctls::VcpuFd;
use launch::snp::emulated::{EmulatedSnpPlatform, PvalidateResult, C_BIT, C_BIT_MASK, SEV_STATUS};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};

use crate::msr::MsrAccess;
use crate::vm::VmEvent;

const PAGE: u64 = 0x1000;
const TWO_MIB: u64 = 0x20_0000;
/// The largest scratch area outside the GHCB a request may use.
const MAX_SCRATCH: u64 = 0x4000;
/// #GP as a GHCB event to inject (SW_EXITINFO2 of a failed MSR access).
const INJECT_GP: u64 = 0x8000_030d;

/// PVALIDATE: `f2 0f 01 ff`; RMPADJUST: `f3 0f 01 fe`.
const PVALIDATE: [u8; 4] = [0xf2, 0x0f, 0x01, 0xff];
const RMPADJUST: [u8; 4] = [0xf3, 0x0f, 0x01, 0xfe];

/// The instructions of the SNP platform the emulated one completes on an
/// emulation-failure exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformInstruction {
    /// PVALIDATE (`f2 0f 01 ff`).
    Pvalidate,
    /// RMPADJUST (`f3 0f 01 fe`).
    Rmpadjust,
}

/// The state of one vCPU's GHCB.
pub struct SnpVcpuExits {
    index: u32,
    platform: Arc<EmulatedSnpPlatform>,
    shared: Arc<SharedMemory>,
    cpuid: Arc<[kvm_cpuid_entry2]>,
    /// All of guest memory: only the platform's own reads (VMSAs) use it.
    mem: GuestMemoryMmap,
    /// The GHCB MSR's current value.
    ghcb_msr: u64,
    /// The GHCB GPA the guest registered, if any.
    registered: Option<u64>,
}

impl std::fmt::Debug for SnpVcpuExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpVcpuExits").field("index", &self.index).field("registered", &self.registered).finish()
    }
}

/// A GHCB request's outcome.
enum Outcome {
    /// Answered in the GHCB: write these fields back.
    Answer,
    /// The guest asked to end the VM, or the request cannot be answered.
    End(VmEvent),
}

/// The GHCB as read once from guest memory, plus what the handler writes back.
struct Ghcb {
    gpa: u64,
    page: Vec<u8>,
    /// Byte ranges of `page` the handler changed.
    dirty: Vec<(usize, usize)>,
}

impl Ghcb {
    fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.page[off..off + 8].try_into().unwrap_or([0; 8]))
    }
    fn valid(&self, off: usize) -> bool {
        let bit = valid_bit(off);
        self.page[OFF_VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }
    fn set(&mut self, off: usize, v: u64) {
        self.page[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self.dirty.push((off, 8));
    }
    fn set_bytes(&mut self, off: usize, bytes: &[u8]) {
        self.page[off..off + bytes.len()].copy_from_slice(bytes);
        self.dirty.push((off, bytes.len()));
    }
    fn error(&mut self, code: u64) {
        self.set(OFF_SW_EXIT_INFO_1, EXITINFO1_ERROR);
        self.set(OFF_SW_EXIT_INFO_2, code);
    }
    fn success(&mut self, info2: Option<u64>) {
        self.set(OFF_SW_EXIT_INFO_1, 0);
        if let Some(v) = info2 {
            self.set(OFF_SW_EXIT_INFO_2, v);
        }
    }
}

impl SnpVcpuExits {
    /// The GHCB state of vCPU `index`.
    pub fn new(
        index: u32,
        platform: Arc<EmulatedSnpPlatform>,
        shared: Arc<SharedMemory>,
        cpuid: Arc<[kvm_cpuid_entry2]>,
        mem: GuestMemoryMmap,
    ) -> Self {
        Self { index, platform, shared, cpuid, mem, ghcb_msr: 0, registered: None }
    }

    /// For an AP: waits until the guest creates it, then gives the vCPU the state of
    /// the guest's VMSA. `false` if the VM ended first or the state cannot be set.
    pub fn wait_for_creation(&self, vcpu: &mut VcpuFd, stopping: &std::sync::atomic::AtomicBool) -> bool {
        if self.index == 0 {
            return true;
        }
        let Some(state) = self.platform.wait_ap_start(self.index, stopping) else { return false };
        log::debug!("vCPU {}: created by the guest, starting at {:#x}", self.index, state.rip);
        let Ok(sregs) = vcpu.get_sregs() else { return false };
        let (regs, sregs) = launch::snp::emulated::vcpu_registers(&state, sregs);
        // An AP waits for INIT/SIPI in KVM's in-kernel LAPIC; a created AP runs at once.
        let runnable = kvm_bindings::kvm_mp_state { mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE };
        vcpu.set_sregs(&sregs).is_ok() && vcpu.set_regs(&regs).is_ok() && vcpu.set_mp_state(runnable).is_ok()
    }

    /// An intercepted RDMSR: the value, or `None` to inject #GP.
    pub fn rdmsr(&self, msr: u32) -> Option<u64> {
        match msr {
            MSR_GHCB => Some(self.ghcb_msr),
            MSR_SEV_STATUS => Some(SEV_STATUS),
            _ => None,
        }
    }

    /// An intercepted WRMSR: whether it is allowed (`false` injects #GP).
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        match msr {
            MSR_GHCB => {
                self.ghcb_msr = value;
                true
            }
            _ => false,
        }
    }

    fn end(&self, message: String) -> VmEvent {
        VmEvent::VcpuFailed { vcpu: self.index, message }
    }

    /// VMGEXIT: serves the request the GHCB MSR describes.
    pub fn vmgexit(&mut self, vcpu: &mut impl MsrAccess, pio: &Bus, mmio: &Bus) -> Result<(), VmEvent> {
        if self.ghcb_msr & MSR_INFO_MASK != 0 {
            return self.msr_protocol();
        }
        let gpa = self.ghcb_msr;
        if let Some(reg) = self.registered {
            if reg != gpa {
                return Err(self.end(format!("the guest used a GHCB at {gpa:#x}, not its registered GHCB {reg:#x}")));
            }
        }
        let mut page = vec![0u8; GHCB_SIZE];
        let view = self.shared.view();
        if !gpa.is_multiple_of(PAGE) || view.memory().read_slice(&mut page, GuestAddress(gpa)).is_err() {
            return Err(self.end(format!("the GHCB at {gpa:#x} is not a shared page of guest memory")));
        }
        let mut ghcb = Ghcb { gpa, page, dirty: Vec::new() };
        match self.page_protocol(&mut ghcb, vcpu, pio, mmio) {
            Outcome::End(e) => Err(e),
            Outcome::Answer => {
                let mem = view.memory();
                for (off, len) in &ghcb.dirty {
                    let at = GuestAddress(gpa + *off as u64);
                    if mem.write_slice(&ghcb.page[*off..off + len], at).is_err() {
                        return Err(self.end(format!("the GHCB at {gpa:#x} stopped being shared memory")));
                    }
                }
                Ok(())
            }
        }
    }

    fn msr_protocol(&mut self) -> Result<(), VmEvent> {
        let v = self.ghcb_msr;
        let data = v >> 12;
        self.ghcb_msr = match v & MSR_INFO_MASK {
            MSR_SEV_INFO_REQ => {
                let version = u64::from(GHCB_PROTOCOL_VERSION);
                (version << 48) | (version << 32) | (u64::from(C_BIT) << 24) | MSR_SEV_INFO_RESP
            }
            MSR_CPUID_REQ => {
                let (function, reg) = ((v >> 32) as u32, (v >> 30) & 3);
                let e = self.cpuid_entry(function, 0);
                let value = [e.0, e.1, e.2, e.3][reg as usize];
                (u64::from(value) << 32) | MSR_CPUID_RESP
            }
            // The SEV-ES AP jump table protocol is not offered: result 0 (not released).
            MSR_AP_RESET_HOLD_REQ => MSR_AP_RESET_HOLD_RESP,
            MSR_REG_GPA_REQ => {
                let gpa = data << 12;
                if self.platform.rmp().state(gpa).is_some() {
                    self.registered = Some(gpa);
                    gpa | MSR_REG_GPA_RESP
                } else {
                    (!0u64 << 12) | MSR_REG_GPA_RESP
                }
            }
            MSR_PSC_REQ => {
                let gfn = data & 0xff_ffff_ffff;
                let op = (v >> 52) & 0xf;
                let error = match self.convert(gfn << 12, PAGE, op) {
                    Ok(()) => 0,
                    Err(()) => 1,
                };
                (error << 32) | MSR_PSC_RESP
            }
            MSR_HV_FT_REQ => ((HV_FT_SNP | HV_FT_SNP_AP_CREATION) << 12) | MSR_HV_FT_RESP,
            MSR_TERM_REQ => {
                return Err(VmEvent::GuestTerminated { vcpu: self.index, set: (v >> 12) & 0xf, code: (v >> 16) & 0xff })
            }
            other => return Err(self.end(format!("unknown GHCB MSR protocol request {other:#x}"))),
        };
        Ok(())
    }

    /// A page-state change of `[gpa, gpa + len)` with operation `op`.
    fn convert(&self, gpa: u64, len: u64, op: u64) -> Result<(), ()> {
        let private = match op {
            PSC_OP_PRIVATE => true,
            PSC_OP_SHARED => false,
            _ => return Err(()),
        };
        self.platform.rmp().set_private(gpa, len, private).map_err(|_| ())?;
        self.shared.set_shared(gpa, len, !private).map_err(|_| ())
    }

    fn cpuid_entry(&self, function: u32, index: u32) -> (u32, u32, u32, u32) {
        self.cpuid
            .iter()
            .find(|e| e.function == function && (e.index == index || e.flags & 1 == 0))
            .map_or((0, 0, 0, 0), |e| (e.eax, e.ebx, e.ecx, e.edx))
    }

    fn page_protocol(&mut self, g: &mut Ghcb, vcpu: &mut impl MsrAccess, pio: &Bus, mmio: &Bus) -> Outcome {
        let usage = u32::from_le_bytes(g.page[OFF_GHCB_USAGE..OFF_GHCB_USAGE + 4].try_into().unwrap_or([0xff; 4]));
        if usage != 0 {
            g.error(ERR_INVALID_USAGE);
            return Outcome::Answer;
        }
        let version = u16::from_le_bytes([g.page[OFF_PROTOCOL_VERSION], g.page[OFF_PROTOCOL_VERSION + 1]]);
        if version != GHCB_PROTOCOL_VERSION {
            g.error(ERR_INVALID_INPUT);
            return Outcome::Answer;
        }
        if ![OFF_SW_EXIT_CODE, OFF_SW_EXIT_INFO_1, OFF_SW_EXIT_INFO_2].iter().all(|&o| g.valid(o)) {
            g.error(ERR_MISSING_INPUT);
            return Outcome::Answer;
        }
        let (code, info1, info2) = (g.u64(OFF_SW_EXIT_CODE), g.u64(OFF_SW_EXIT_INFO_1), g.u64(OFF_SW_EXIT_INFO_2));
        let needs: &[usize] = match code {
            EXIT_IOIO if info1 & IOIO_TYPE_IN == 0 => &[OFF_RAX],
            EXIT_CPUID => &[OFF_RAX, OFF_RCX],
            EXIT_MSR if info1 == 1 => &[OFF_RCX, OFF_RAX, OFF_RDX],
            EXIT_MSR => &[OFF_RCX],
            EXIT_MMIO_READ | EXIT_MMIO_WRITE | EXIT_PSC => &[OFF_SW_SCRATCH],
            EXIT_EXT_GUEST_REQUEST => &[OFF_RAX, OFF_RBX],
            EXIT_AP_CREATION => &[OFF_RAX],
            _ => &[],
        };
        if !needs.iter().all(|&o| g.valid(o)) {
            g.error(ERR_MISSING_INPUT);
            return Outcome::Answer;
        }
        match code {
            EXIT_IOIO => self.ioio(g, info1, pio),
            EXIT_CPUID => {
                let (a, b, c, d) = self.cpuid_entry(g.u64(OFF_RAX) as u32, g.u64(OFF_RCX) as u32);
                for (off, v) in [(OFF_RAX, a), (OFF_RBX, b), (OFF_RCX, c), (OFF_RDX, d)] {
                    g.set(off, u64::from(v));
                }
                g.success(None);
            }
            EXIT_MSR => self.msr(g, info1, vcpu),
            EXIT_MMIO_READ | EXIT_MMIO_WRITE => self.mmio(g, code == EXIT_MMIO_WRITE, info1, info2, mmio),
            EXIT_PSC => self.psc(g),
            EXIT_GUEST_REQUEST | EXIT_EXT_GUEST_REQUEST => {
                self.guest_request(g, code == EXIT_EXT_GUEST_REQUEST, info1, info2)
            }
            EXIT_HV_FEATURES => g.success(Some(HV_FT_SNP | HV_FT_SNP_AP_CREATION)),
            EXIT_AP_CREATION => match info1 & 0xffff_ffff {
                AP_CREATE | AP_CREATE_ON_INIT => {
                    match self.platform.create_ap(info1 >> 32, info2, g.u64(OFF_RAX), &self.mem) {
                        Ok(()) => g.success(None),
                        Err(e) => {
                            log::warn!("vCPU {}: {e}", self.index);
                            g.error(ERR_INVALID_INPUT)
                        }
                    }
                }
                _ => g.error(ERR_INVALID_INPUT),
            },
            EXIT_TERM_REQUEST => {
                return Outcome::End(VmEvent::GuestTerminated {
                    vcpu: self.index,
                    set: (info1 >> 12) & 0xf,
                    code: (info1 >> 16) & 0xff,
                })
            }
            _ => g.error(ERR_INVALID_EVENT),
        }
        Outcome::Answer
    }

    fn ioio(&self, g: &mut Ghcb, info1: u64, pio: &Bus) {
        let size = match info1 & (IOIO_SZ8 | IOIO_SZ16 | IOIO_SZ32) {
            IOIO_SZ8 => 1,
            IOIO_SZ16 => 2,
            IOIO_SZ32 => 4,
            _ => return g.error(ERR_INVALID_INPUT),
        };
        // String I/O needs a scratch area; cvmm's guests never use it.
        if info1 & (IOIO_STR | IOIO_REP) != 0 {
            return g.error(ERR_INVALID_INPUT);
        }
        let port = (info1 >> IOIO_PORT_SHIFT) & 0xffff;
        if info1 & IOIO_TYPE_IN != 0 {
            let mut data = [0u8; 8];
            pio.read(port, &mut data[..size]);
            g.set(OFF_RAX, u64::from_le_bytes(data));
        } else {
            let data = g.u64(OFF_RAX).to_le_bytes();
            pio.write(port, &data[..size]);
        }
        g.success(None);
    }

    fn msr(&self, g: &mut Ghcb, info1: u64, vcpu: &mut impl MsrAccess) {
        let index = g.u64(OFF_RCX) as u32;
        if index == MSR_GHCB || index == MSR_SEV_STATUS || info1 > 1 {
            return g.error(ERR_INVALID_INPUT);
        }
        if info1 == 0 {
            match vcpu.read_msr(index) {
                Some(v) => {
                    g.set(OFF_RAX, v & 0xffff_ffff);
                    g.set(OFF_RDX, v >> 32);
                    g.success(None);
                }
                None => g.error(INJECT_GP),
            }
        } else {
            let data = (g.u64(OFF_RAX) & 0xffff_ffff) | (g.u64(OFF_RDX) << 32);
            if vcpu.write_msr(index, data) {
                g.success(None)
            } else {
                g.error(INJECT_GP)
            }
        }
    }

    /// Where a scratch area of `len` bytes at `scratch` is: an offset into the GHCB's
    /// shared buffer, or `None` for a (checked) area elsewhere in shared memory.
    fn scratch(&self, g: &Ghcb, len: u64) -> Result<Option<usize>, ()> {
        let scratch = g.u64(OFF_SW_SCRATCH);
        let buf = g.gpa + OFF_SHARED_BUFFER as u64;
        let end = scratch.checked_add(len).ok_or(())?;
        if scratch >= buf && end <= buf + SHARED_BUFFER_SIZE as u64 {
            return Ok(Some((scratch - g.gpa) as usize));
        }
        if len <= MAX_SCRATCH
            && self.shared.is_shared(scratch & !(PAGE - 1), (end - (scratch & !(PAGE - 1))).next_multiple_of(PAGE))
        {
            return Ok(None);
        }
        Err(())
    }

    fn mmio(&self, g: &mut Ghcb, write: bool, gpa: u64, len: u64, mmio: &Bus) {
        if !matches!(len, 1 | 2 | 4 | 8) {
            return g.error(ERR_INVALID_INPUT);
        }
        // MMIO requests are for device memory, never for guest RAM (private or not).
        if self.platform.rmp().state(gpa & !(PAGE - 1) & !C_BIT_MASK).is_some() {
            return g.error(ERR_INVALID_INPUT);
        }
        let Ok(place) = self.scratch(g, len) else { return g.error(ERR_INVALID_SCRATCH_AREA) };
        let scratch = g.u64(OFF_SW_SCRATCH);
        let view = self.shared.view();
        let mut data = [0u8; 8];
        let data = &mut data[..len as usize];
        if write {
            match place {
                Some(off) => data.copy_from_slice(&g.page[off..off + len as usize]),
                None => {
                    if view.memory().read_slice(data, GuestAddress(scratch)).is_err() {
                        return g.error(ERR_INVALID_SCRATCH_AREA);
                    }
                }
            }
            mmio.write(gpa, data);
        } else {
            mmio.read(gpa, data);
            match place {
                Some(off) => g.set_bytes(off, data),
                None => {
                    if view.memory().write_slice(data, GuestAddress(scratch)).is_err() {
                        return g.error(ERR_INVALID_SCRATCH_AREA);
                    }
                }
            }
        }
        g.success(None);
    }

    /// An SNP guest request: the request and response pages (and, extended, the
    /// certificate buffer) must be shared pages. The request page is read once; the
    /// emulated PSP opens it and seals the response. A request the PSP refuses gets its
    /// firmware status in SW_EXITINFO2[31:0]; a certificate buffer that is too small gets
    /// the VMM error INVALID_LEN and, in RBX, the pages needed (the request is not sent).
    fn guest_request(&self, g: &mut Ghcb, extended: bool, req: u64, resp: u64) {
        let page_ok = |gpa: u64| gpa.is_multiple_of(PAGE) && self.shared.is_shared(gpa, PAGE);
        if !page_ok(req) || !page_ok(resp) {
            return g.error(ERR_INVALID_INPUT);
        }
        let view = self.shared.view();
        if extended {
            let (buf, pages) = (g.u64(OFF_RAX), g.u64(OFF_RBX));
            let table = match self.platform.psp().chain().cert_table() {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("vCPU {}: no certificate table: {e}", self.index);
                    return g.success(Some(GUEST_REQ_ERR_BUSY));
                }
            };
            let needed = (table.len() as u64).div_ceil(PAGE);
            if pages < needed {
                g.set(OFF_RBX, needed);
                return g.success(Some(GUEST_REQ_ERR_INVALID_LEN));
            }
            if buf % PAGE != 0 || !self.shared.is_shared(buf, needed * PAGE) {
                return g.error(ERR_INVALID_INPUT);
            }
            if view.memory().write_slice(&table, GuestAddress(buf)).is_err() {
                return g.error(ERR_INVALID_INPUT);
            }
        }
        let mut page = vec![0u8; PAGE as usize];
        if view.memory().read_slice(&mut page, GuestAddress(req)).is_err() {
            return g.error(ERR_INVALID_INPUT);
        }
        let answer = self.platform.psp().guest_request(&page);
        match answer {
            Ok(mut response) => {
                response.resize(PAGE as usize, 0);
                if view.memory().write_slice(&response, GuestAddress(resp)).is_err() {
                    return g.error(ERR_INVALID_INPUT);
                }
                g.success(Some(0));
            }
            Err(e) => {
                log::debug!("vCPU {}: {e}", self.index);
                g.success(Some(u64::from(e.fw_status())));
            }
        }
    }

    /// The GHCB page-state change: the structure must lie in the GHCB's shared buffer.
    fn psc(&self, g: &mut Ghcb) {
        let Ok(Some(off)) = self.scratch(g, (PSC_HEADER_SIZE + 8) as u64) else {
            return g.error(ERR_INVALID_SCRATCH_AREA);
        };
        let room = (OFF_SHARED_BUFFER + SHARED_BUFFER_SIZE - off - PSC_HEADER_SIZE) / 8;
        let cur = u16::from_le_bytes([g.page[off], g.page[off + 1]]) as usize;
        let end = u16::from_le_bytes([g.page[off + 2], g.page[off + 3]]) as usize;
        if end >= PSC_MAX_ENTRIES || end >= room || cur > end {
            return g.success(Some(PSC_ERR_INVALID_HDR));
        }
        let mut done = cur;
        let mut result = 0;
        for i in cur..=end {
            let e = g.u64(off + PSC_HEADER_SIZE + 8 * i);
            let gpa = ((e >> 12) & 0xff_ffff_ffff) << 12;
            let op = (e >> 52) & 0xf;
            let len = if e & PSC_ENTRY_2M != 0 { TWO_MIB } else { PAGE };
            if !gpa.is_multiple_of(len) || self.convert(gpa, len, op).is_err() {
                result = PSC_ERR_INVALID_ENTRY;
                break;
            }
            done = i + 1;
        }
        g.set_bytes(off, &(done as u16).to_le_bytes());
        g.success(Some(result));
    }

    /// An emulation failure: PVALIDATE and RMPADJUST are the platform's; anything else
    /// is `None` (the caller reports it).
    pub fn emulation_failure(&mut self, vcpu: &mut VcpuFd) -> Option<Result<(), VmEvent>> {
        let run = vcpu.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR (the caller checked), whose
        // union member is `emulation_failure`; with the instruction-bytes flag its bytes
        // are valid (insn_size of them).
        let (flags, bytes) = unsafe {
            let e = run.__bindgen_anon_1.emulation_failure;
            (e.flags, e.__bindgen_anon_1.__bindgen_anon_1.insn_bytes)
        };
        if flags & u64::from(kvm_bindings::KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) == 0 {
            return None;
        }
        let instruction = if bytes[..4] == PVALIDATE {
            PlatformInstruction::Pvalidate
        } else if bytes[..4] == RMPADJUST {
            PlatformInstruction::Rmpadjust
        } else {
            return None;
        };
        Some(self.emulate_instruction(vcpu, instruction))
    }

    fn emulate_instruction(&mut self, vcpu: &mut VcpuFd, instruction: PlatformInstruction) -> Result<(), VmEvent> {
        let mut regs = vcpu.get_regs().map_err(|e| self.end(format!("KVM_GET_REGS: {e}")))?;
        let gpa = match vcpu.translate_gva(regs.rax) {
            Ok(t) if t.valid != 0 => Some(t.physical_address),
            _ => None,
        };
        self.platform_instruction(instruction, gpa, &mut regs)?;
        vcpu.set_regs(&regs).map_err(|e| self.end(format!("KVM_SET_REGS: {e}")))
    }

    /// PVALIDATE or RMPADJUST with the vCPU's registers `regs` (RAX the page's virtual
    /// address, RCX the page size, RDX the validate or VMSA bit), `gpa` the physical
    /// address RAX translates to (`None`: no mapping), as the instruction does them
    /// against the emulated RMP: the result in RAX (and CF), RIP past the instruction.
    /// `Err` ends the VM (a page that cannot be made private for PVALIDATE).
    pub fn platform_instruction(
        &mut self,
        instruction: PlatformInstruction,
        gpa: Option<u64>,
        regs: &mut kvm_regs,
    ) -> Result<(), VmEvent> {
        let pvalidate = instruction == PlatformInstruction::Pvalidate;
        let huge = match regs.rcx {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        let gpa = gpa.map(|g| g & !C_BIT_MASK);
        const CF: u64 = 1;
        regs.rflags &= !CF;
        regs.rax = match (gpa, huge) {
            (Some(gpa), Some(huge)) if pvalidate => {
                let validate = regs.rdx & 1 != 0;
                let mut rmp = self.platform.rmp();
                let mut result = rmp.pvalidate(gpa, huge, validate);
                if result == PvalidateResult::NotPrivate {
                    // KVM would see a private access to a shared page and the VMM
                    // convert it (KVM_EXIT_MEMORY_FAULT): do the same.
                    let len = if huge { TWO_MIB } else { PAGE };
                    drop(rmp);
                    if self.convert(gpa, len, PSC_OP_PRIVATE).is_err() {
                        return Err(self.end(format!("PVALIDATE of {gpa:#x}: cannot make it private")));
                    }
                    rmp = self.platform.rmp();
                    result = rmp.pvalidate(gpa, huge, validate);
                }
                match result {
                    PvalidateResult::Changed => PVALIDATE_SUCCESS,
                    PvalidateResult::Unchanged => {
                        regs.rflags |= CF;
                        PVALIDATE_SUCCESS
                    }
                    PvalidateResult::FailSizeMismatch => PVALIDATE_FAIL_SIZEMISMATCH,
                    PvalidateResult::FailInput | PvalidateResult::NotPrivate => PVALIDATE_FAIL_INPUT,
                }
            }
            // RMPADJUST: only 4 KiB pages; bit 16 of RDX is the VMSA bit.
            (Some(gpa), Some(false)) => match self.platform.rmp().set_vmsa(gpa, regs.rdx & (1 << 16) != 0) {
                Ok(()) => 0,
                Err(_) => 2, // FAIL_PERMISSION
            },
            _ => PVALIDATE_FAIL_INPUT,
        };
        regs.rip += 4;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use launch::plan::snp::SnpVcpu;
    use launch::plan::{LaunchPlan, VcpuState};
    use launch::snp::cpuid_page::CpuidPlatform;
    use launch::snp::id_block::FinishOptions;
    use launch::snp::psp::PspLaunch;

    /// MSRs that exist: 0x10 (holding 0x1234_5678_9abc) only.
    struct OneMsr(u64);

    impl MsrAccess for OneMsr {
        fn read_msr(&mut self, index: u32) -> Option<u64> {
            (index == 0x10).then_some(self.0)
        }
        fn write_msr(&mut self, index: u32, value: u64) -> bool {
            if index == 0x10 {
                self.0 = value;
            }
            index == 0x10
        }
    }

    /// A launched emulated platform over 4 MiB of guest memory (every page private, not
    /// validated), and vCPU 0's handler.
    fn handler() -> (SnpVcpuExits, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let chain = Arc::new(launch::snp::certs::EmulatedAmdChain::load_or_create_default().unwrap());
        let cpuid = CpuidPlatform::from_entries(&[]);
        let launch = PspLaunch { policy: 0x30000, finish: FinishOptions::default(), cpuid, chain };
        let platform = EmulatedSnpPlatform::new(&mem, launch).unwrap();
        let plan = LaunchPlan { ranges: Vec::new(), vcpus: vec![VcpuState::Snp(SnpVcpu::default()); 2] };
        platform.load_plan(&mem, &plan).unwrap();
        platform.launch_finish().unwrap();
        let shared = Arc::new(SharedMemory::all_private(&mem));
        let leaf = kvm_cpuid_entry2 { function: 1, eax: 0xa00f11, ..Default::default() };
        let exits = SnpVcpuExits::new(0, Arc::new(platform), shared, vec![leaf].into(), mem.clone());
        (exits, mem)
    }

    /// Makes the page at `gpa` shared through the MSR protocol's page-state change.
    fn share(exits: &mut SnpVcpuExits, gpa: u64) {
        exits.wrmsr(MSR_GHCB, (PSC_OP_SHARED << 52) | gpa | MSR_PSC_REQ);
        exits.vmgexit(&mut OneMsr(0), &Bus::new(), &Bus::new()).unwrap();
        assert_eq!(exits.rdmsr(MSR_GHCB), Some(MSR_PSC_RESP), "page-state change succeeded");
    }

    /// A GHCB page at `gpa` asking for an MSR access (RCX index, RAX/RDX value).
    fn msr_ghcb(mem: &GuestMemoryMmap, gpa: u64, write: bool, index: u64, value: u64) {
        let mut page = vec![0u8; GHCB_SIZE];
        let mut put = |off: usize, v: u64| {
            page[off..off + 8].copy_from_slice(&v.to_le_bytes());
            let bit = valid_bit(off);
            page[OFF_VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
        };
        put(OFF_SW_EXIT_CODE, EXIT_MSR);
        put(OFF_SW_EXIT_INFO_1, u64::from(write));
        put(OFF_SW_EXIT_INFO_2, 0);
        put(OFF_RCX, index);
        put(OFF_RAX, value & 0xffff_ffff);
        put(OFF_RDX, value >> 32);
        page[OFF_PROTOCOL_VERSION..OFF_PROTOCOL_VERSION + 2].copy_from_slice(&GHCB_PROTOCOL_VERSION.to_le_bytes());
        mem.write_slice(&page, GuestAddress(gpa)).unwrap();
    }

    fn read_u64(mem: &GuestMemoryMmap, gpa: u64) -> u64 {
        mem.read_obj(GuestAddress(gpa)).unwrap()
    }

    #[test]
    fn ghcb_msr_requests_go_to_the_msr_access_and_a_refused_one_injects_gp() {
        // Arrange: a shared GHCB at 0x10000.
        let (mut exits, mem) = handler();
        share(&mut exits, 0x10000);
        let mut msrs = OneMsr(0x1234_5678_9abc);

        // Act + Assert: a read of MSR 0x10 answers RDX:RAX.
        msr_ghcb(&mem, 0x10000, false, 0x10, 0);
        exits.wrmsr(MSR_GHCB, 0x10000);
        exits.vmgexit(&mut msrs, &Bus::new(), &Bus::new()).unwrap();
        assert_eq!(read_u64(&mem, 0x10000 + OFF_SW_EXIT_INFO_1 as u64), 0);
        assert_eq!(read_u64(&mem, 0x10000 + OFF_RAX as u64), 0x5678_9abc);
        assert_eq!(read_u64(&mem, 0x10000 + OFF_RDX as u64), 0x1234);

        // A write reaches it.
        msr_ghcb(&mem, 0x10000, true, 0x10, 0xaaaa_bbbb_cccc);
        exits.vmgexit(&mut msrs, &Bus::new(), &Bus::new()).unwrap();
        assert_eq!(read_u64(&mem, 0x10000 + OFF_SW_EXIT_INFO_1 as u64), 0);
        assert_eq!(msrs.0, 0xaaaa_bbbb_cccc);

        // An MSR the vCPU refuses: an error with #GP to inject, the MSR untouched.
        msr_ghcb(&mem, 0x10000, true, 0x11, 1);
        exits.vmgexit(&mut msrs, &Bus::new(), &Bus::new()).unwrap();
        assert_eq!(read_u64(&mem, 0x10000 + OFF_SW_EXIT_INFO_1 as u64), EXITINFO1_ERROR);
        assert_eq!(read_u64(&mem, 0x10000 + OFF_SW_EXIT_INFO_2 as u64), INJECT_GP);
        assert_eq!(msrs.0, 0xaaaa_bbbb_cccc);
    }

    #[test]
    fn a_ghcb_in_private_memory_ends_the_vm() {
        let (mut exits, mem) = handler();
        msr_ghcb(&mem, 0x10000, false, 0x10, 0);
        exits.wrmsr(MSR_GHCB, 0x10000);
        let err = exits.vmgexit(&mut OneMsr(0), &Bus::new(), &Bus::new()).unwrap_err();
        assert!(matches!(err, VmEvent::VcpuFailed { vcpu: 0, ref message } if message.contains("not a shared page")));
    }

    #[test]
    fn pvalidate_of_a_shared_page_converts_it_and_validates_it_once() {
        // Arrange: the page at 0x20000 shared.
        let (mut exits, _mem) = handler();
        share(&mut exits, 0x20000);
        let mut regs = kvm_regs { rcx: 0, rdx: 1, rip: 0x1000, ..Default::default() };

        // Act: PVALIDATE (4 KiB, validate), then the same again.
        exits.platform_instruction(PlatformInstruction::Pvalidate, Some(0x20000 | C_BIT_MASK), &mut regs).unwrap();
        let first = (regs.rax, regs.rflags & 1, regs.rip);
        exits.platform_instruction(PlatformInstruction::Pvalidate, Some(0x20000), &mut regs).unwrap();

        // Assert: converted back to private and validated; the second one leaves CF set.
        assert_eq!(first, (PVALIDATE_SUCCESS, 0, 0x1004));
        assert_eq!((regs.rax, regs.rflags & 1, regs.rip), (PVALIDATE_SUCCESS, 1, 0x1008));
        let state = exits.platform.rmp().state(0x20000).unwrap();
        assert!(state.private && state.validated);
        assert!(!exits.shared.is_shared(0x20000, PAGE));
    }

    #[test]
    fn pvalidate_without_a_translation_or_a_size_fails_with_bad_input() {
        let (mut exits, _mem) = handler();
        for (gpa, rcx) in [(None, 0), (Some(0x20000), 2), (Some(0x1000_0000), 0)] {
            let mut regs = kvm_regs { rcx, rdx: 1, ..Default::default() };
            exits.platform_instruction(PlatformInstruction::Pvalidate, gpa, &mut regs).unwrap();
            assert_eq!((regs.rax, regs.rip), (PVALIDATE_FAIL_INPUT, 4), "{gpa:x?} rcx {rcx}");
        }
    }

    #[test]
    fn rmpadjust_needs_a_validated_private_page() {
        let (mut exits, _mem) = handler();
        let mut regs = kvm_regs { rcx: 0, rdx: RMPADJUST_VMSA, ..Default::default() };
        exits.platform_instruction(PlatformInstruction::Rmpadjust, Some(0x30000), &mut regs).unwrap();
        assert_eq!(regs.rax, 2, "FAIL_PERMISSION on a page not validated");
        let mut regs = kvm_regs { rcx: 0, rdx: 1, ..Default::default() };
        exits.platform_instruction(PlatformInstruction::Pvalidate, Some(0x30000), &mut regs).unwrap();
        let mut regs = kvm_regs { rcx: 0, rdx: RMPADJUST_VMSA, ..Default::default() };
        exits.platform_instruction(PlatformInstruction::Rmpadjust, Some(0x30000), &mut regs).unwrap();
        assert_eq!(regs.rax, 0);
        assert!(exits.platform.rmp().state(0x30000).unwrap().vmsa);
    }
}
