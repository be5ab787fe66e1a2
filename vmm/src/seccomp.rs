//! Seccomp-BPF allow-lists for the threads that run a VM: one filter per
//! [`ThreadKind`], built with `seccompiler`; any other system call kills the process.
//!
//! The lists were found by tracing every device path (`strace -f` over the demo guest
//! with every device and over a Linux boot) and by reading the code on each thread;
//! each group below says why it is there. A thread installs its filter itself, as its
//! first act of guest-related work ([`Filter::apply`]); `Vm::run` orders the threads so
//! that no thread inherits a filter it was not meant to have (docs/ARCHITECTURE.md,
//! "Seccomp").

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use thiserror::Error;

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// A vCPU thread: KVM_RUN and the port I/O and MMIO devices it dispatches to.
    Vcpu,
    /// The device event loop: the virtio devices' back ends.
    Devices,
    /// The thread that waits for the VM's end, kicks and joins the vCPUs and stops the
    /// device loop.
    Main,
    /// A TD's GetQuote thread (`crate::quote_thread`): the emulated quoting enclave, or
    /// a connection to the quote generation service, and the notification MSI.
    Quote,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [ThreadKind::Vcpu, ThreadKind::Devices, ThreadKind::Main, ThreadKind::Quote];

    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vCPU",
            ThreadKind::Devices => "device loop",
            ThreadKind::Main => "main",
            ThreadKind::Quote => "GetQuote",
        }
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A filter that could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// seccompiler refused the rules.
    #[error("cannot build the seccomp filter of the {kind} thread: {source}")]
    Compile {
        /// The thread kind.
        kind: ThreadKind,
        /// The error.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter (prctl(PR_SET_NO_NEW_PRIVS) or seccomp(2)).
    #[error("cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        /// The thread kind.
        kind: ThreadKind,
        /// The error.
        #[source]
        source: seccompiler::Error,
    },
}

/// A compiled filter for one thread kind.
#[derive(Debug, Clone)]
pub struct Filter {
    kind: ThreadKind,
    program: BpfProgram,
}

impl Filter {
    /// Builds the filter of `kind`.
    pub fn new(kind: ThreadKind) -> Result<Self, SeccompError> {
        let compile = |source| SeccompError::Compile { kind, source };
        let filter =
            SeccompFilter::new(rules(kind).map_err(compile)?, SeccompAction::KillProcess, SeccompAction::Allow, ARCH)
                .map_err(compile)?;
        let program = BpfProgram::try_from(filter).map_err(compile)?;
        Ok(Self { kind, program })
    }

    /// The thread kind.
    pub fn kind(&self) -> ThreadKind {
        self.kind
    }

    /// Installs the filter on the calling thread (and sets no_new_privs). It stays
    /// for the thread's life and is inherited by the threads it creates afterwards.
    /// Allocates nothing.
    pub fn apply(&self) -> Result<(), SeccompError> {
        seccompiler::apply_filter(&self.program).map_err(|source| SeccompError::Install { kind: self.kind, source })
    }
}

/// Builds the filter of `kind` and installs it on the calling thread.
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    Filter::new(kind)?.apply()
}

const ARCH: TargetArch = TargetArch::x86_64;

/// The KVM ioctls of a vCPU thread (kvm-bindings has no request numbers; these are
/// `_IO(KVMIO, 0x80)`, `_IOR(KVMIO, 0x81, struct kvm_regs)` and
/// `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)`, checked against kvm-ioctls in tests).
const KVM_RUN: u64 = 0xae80;
const KVM_GET_REGS: u64 = 0x8090_ae81;
const KVM_SET_GSI_ROUTING: u64 = 0x4008_ae6a;
/// The emulated SNP platform's vCPU exits: `_IOW(KVMIO, 0x82, struct kvm_regs)`,
/// `_IOWR(KVMIO, 0x85, struct kvm_translation)`, `_IOWR(KVMIO, 0x88, struct kvm_msrs)`,
/// `_IOW(KVMIO, 0x89, struct kvm_msrs)`.
const KVM_SET_REGS: u64 = 0x4090_ae82;
const KVM_TRANSLATE: u64 = 0xc018_ae85;
const KVM_GET_MSRS: u64 = 0xc008_ae88;
const KVM_SET_MSRS: u64 = 0x4008_ae89;
/// An SNP AP's start from its VMSA: `_IOR(KVMIO, 0x83, struct kvm_sregs)`,
/// `_IOW(KVMIO, 0x84, struct kvm_sregs)`.
const KVM_GET_SREGS: u64 = 0x8138_ae83;
const KVM_SET_SREGS: u64 = 0x4138_ae84;
/// `_IOW(KVMIO, 0x99, struct kvm_mp_state)`: a created AP becomes runnable.
const KVM_SET_MP_STATE: u64 = 0x4004_ae99;
/// `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)`: a real SNP guest's page-state
/// changes (KVM_HC_MAP_GPA_RANGE, memory faults) convert pages from the vCPU's thread.
const KVM_SET_MEMORY_ATTRIBUTES: u64 = 0x4020_aed2;
/// `_IOW(KVMIO, 0xa5, struct kvm_msi)`: a GetQuote completion's notification.
const KVM_SIGNAL_MSI: u64 = 0x4020_aea5;

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// The allow-list of `kind`.
fn rules(kind: ThreadKind) -> Result<Rules, seccompiler::BackendError> {
    let mut r = Rules::new();
    common(&mut r)?;
    match kind {
        ThreadKind::Vcpu => {
            // KVM_RUN; KVM_GET_REGS (the rip in an internal-error report); the user-space
            // IOAPIC rewrites the VM's MSI routes when the guest programs it; the emulated
            // SNP platform's PVALIDATE/RMPADJUST (translate the address, complete the
            // instruction) and GHCB MSR requests. Nothing else: in particular no ioctl
            // that creates or changes memory or vCPUs.
            let ioctls = [
                KVM_RUN,
                KVM_GET_REGS,
                KVM_SET_GSI_ROUTING,
                KVM_SET_REGS,
                KVM_TRANSLATE,
                KVM_GET_MSRS,
                KVM_SET_MSRS,
                KVM_GET_SREGS,
                KVM_SET_SREGS,
                KVM_SET_MP_STATE,
                KVM_SET_MEMORY_ATTRIBUTES,
            ];
            allow_if_any(&mut r, libc::SYS_ioctl, 1, &ioctls)?;
            // A converted page's old backing is discarded: a hole punched in the
            // guest_memfd (fallocate), or the shared mapping's pages dropped (madvise,
            // allowed to every thread).
            allow(&mut r, &[libc::SYS_fallocate]);
        }
        ThreadKind::Devices => {
            // The event loop: epoll over queue eventfds and host sockets; connections are
            // added and removed as vsock opens and closes them.
            allow(&mut r, &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, libc::SYS_epoll_ctl]);
            // Eventfds, tap frames, vsock streams, the console's output (write is common).
            allow(&mut r, &[libc::SYS_read]);
            // virtio-blk: reads and writes straight to guest memory, flush, discard.
            allow(&mut r, &[libc::SYS_preadv, libc::SYS_pwritev, libc::SYS_fdatasync, libc::SYS_fallocate]);
            // virtio-net on a Unix datagram socket (send, a burst per sendmmsg, recv); on a tap (one writev per
            // frame); on files (a writev of records per burst, ftruncate to cut a short
            // write back to whole records, rx records read with pread).
            allow(&mut r, &[libc::SYS_sendto, libc::SYS_sendmmsg, libc::SYS_recvfrom]);
            allow(&mut r, &[libc::SYS_writev, libc::SYS_ftruncate, libc::SYS_pread64]);
            // virtio-vsock: a guest connection opens a Unix stream socket to PATH_port,
            // made non-blocking (std's set_nonblocking is ioctl(FIONBIO)), shut down and
            // closed. Only AF_UNIX stream sockets; no bind, listen or accept.
            let unix_stream = SeccompRule::new(vec![
                cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                cond(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_STREAM as u64)?,
            ])?;
            r.insert(libc::SYS_socket, vec![unix_stream]);
            allow(&mut r, &[libc::SYS_connect, libc::SYS_shutdown]);
            allow_if_any(&mut r, libc::SYS_ioctl, 1, &[libc::FIONBIO])?;
        }
        ThreadKind::Main => {
            // Kicking vCPU threads out of KVM_RUN: pthread_kill is getpid + tgkill with
            // the kick signal (SIGABRT stays allowed by `common`).
            allow_if_any(&mut r, libc::SYS_tgkill, 2, &[kick_signal(), libc::SIGABRT as u64])?;
        }
        ThreadKind::Quote => {
            // The jobs' queue is a channel (futex, in `common`). Forwarding a TD report
            // to the quote generation service: a stream socket to its Unix or vsock
            // address, with send and receive timeouts; std's UnixStream sends with
            // sendto(MSG_NOSIGNAL) and receives with recvfrom, the vsock stream uses
            // write (common) and read (traced with strace over the test's fake QGS);
            // closed. No bind, listen or accept, no other address family.
            let stream_of = |family: i32| -> Result<SeccompRule, seccompiler::BackendError> {
                SeccompRule::new(vec![
                    cond(0, SeccompCmpOp::Eq, family as u64)?,
                    cond(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_STREAM as u64)?,
                ])
            };
            r.insert(libc::SYS_socket, vec![stream_of(libc::AF_UNIX)?, stream_of(libc::AF_VSOCK)?]);
            allow(&mut r, &[libc::SYS_connect, libc::SYS_read, libc::SYS_recvfrom, libc::SYS_sendto]);
            let timeouts = [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO]
                .iter()
                .map(|opt| {
                    SeccompRule::new(vec![
                        cond(1, SeccompCmpOp::Eq, libc::SOL_SOCKET as u64)?,
                        cond(2, SeccompCmpOp::Eq, *opt as u64)?,
                    ])
                })
                .collect::<Result<_, _>>()?;
            r.insert(libc::SYS_setsockopt, timeouts);
            // The completion's notification: KVM_SIGNAL_MSI on the VM, nothing else.
            allow_if_any(&mut r, libc::SYS_ioctl, 1, &[KVM_SIGNAL_MSI])?;
        }
    }
    Ok(r)
}

/// What every thread needs from the Rust and glibc runtime.
fn common(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    // Locks, condition variables, channels, joins.
    allow(r, &[libc::SYS_futex, libc::SYS_sched_yield]);
    // The allocator (brk, mmap/munmap/mremap, madvise, mprotect on arena growth) and a
    // thread's exit (stack and signal stack released). Never executable memory.
    allow(r, &[libc::SYS_brk, libc::SYS_munmap, libc::SYS_mremap, libc::SYS_madvise]);
    let no_exec = SeccompRule::new(vec![cond(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?])?;
    r.insert(libc::SYS_mmap, vec![no_exec.clone()]);
    r.insert(libc::SYS_mprotect, vec![no_exec]);
    // Signals: the kick handler returns with rt_sigreturn; thread exit and pthread_kill
    // mask signals; std removes a thread's alternate signal stack when it ends;
    // a syscall interrupted by a signal restarts.
    allow(r, &[libc::SYS_rt_sigprocmask, libc::SYS_rt_sigreturn, libc::SYS_sigaltstack, libc::SYS_restart_syscall]);
    // Time (the vDSO usually answers; the syscalls are its fallback) and
    // std::thread::sleep.
    allow(r, &[libc::SYS_clock_gettime, libc::SYS_gettimeofday, libc::SYS_clock_nanosleep]);
    // Hash-map seeds and virtio-rng.
    allow(r, &[libc::SYS_getrandom]);
    // Output: the guest's serial and virtio console, logging and panic messages on
    // stderr, eventfd signals (irqfds, queue notifications, the device loop's exit).
    allow(r, &[libc::SYS_write]);
    // Dropping fds (a vCPU fd and its kvm_run mapping, device files and sockets);
    // std checks an fd is open with fcntl(F_GETFD) before closing it.
    allow(r, &[libc::SYS_close]);
    allow_if_any(r, libc::SYS_fcntl, 1, &[libc::F_GETFD as u64, libc::F_GETFL as u64, libc::F_SETFL as u64])?;
    // Ending: thread exit, process exit, and abort() (raise(SIGABRT) = getpid, gettid,
    // tgkill) so that a panic in a release build still ends with SIGABRT.
    allow(r, &[libc::SYS_exit, libc::SYS_exit_group, libc::SYS_getpid, libc::SYS_gettid]);
    allow_if_any(r, libc::SYS_tgkill, 2, &[libc::SIGABRT as u64])?;
    Ok(())
}

/// The signal that kicks vCPUs (SIGRTMIN, a runtime value in glibc).
fn kick_signal() -> u64 {
    crate::vcpu::kick_signal() as u64
}

fn allow(r: &mut Rules, syscalls: &[libc::c_long]) {
    for s in syscalls {
        r.insert(*s, Vec::new());
    }
}

/// Allows `syscall` when its argument `arg` (compared as 32 bits, as the kernel reads
/// ioctl requests, fcntl commands and signal numbers) is one of `values`.
fn allow_if_any(
    r: &mut Rules,
    syscall: libc::c_long,
    arg: u8,
    values: &[u64],
) -> Result<(), seccompiler::BackendError> {
    let rules =
        values.iter().map(|v| SeccompRule::new(vec![cond(arg, SeccompCmpOp::Eq, *v)?])).collect::<Result<_, _>>()?;
    r.insert(syscall, rules);
    Ok(())
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            let f = Filter::new(kind).unwrap();
            assert_eq!(f.kind(), kind);
            assert!(!f.program.is_empty());
        }
    }

    #[test]
    fn kvm_request_numbers_match_the_kernel_layout() {
        use std::mem::size_of;
        // _IOC(dir, type 0xae, nr, size): dir in bits 30-31 (1 = write, 2 = read).
        let ioc = |dir: u64, nr: u64, size: usize| (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
        assert_eq!(KVM_RUN, ioc(0, 0x80, 0));
        assert_eq!(KVM_GET_REGS, ioc(2, 0x81, size_of::<kvm_bindings::kvm_regs>()));
        assert_eq!(KVM_SET_GSI_ROUTING, ioc(1, 0x6a, size_of::<kvm_bindings::kvm_irq_routing>()));
        assert_eq!(KVM_SET_REGS, ioc(1, 0x82, size_of::<kvm_bindings::kvm_regs>()));
        assert_eq!(KVM_TRANSLATE, ioc(3, 0x85, size_of::<kvm_bindings::kvm_translation>()));
        assert_eq!(KVM_GET_MSRS, ioc(3, 0x88, size_of::<kvm_bindings::kvm_msrs>()));
        assert_eq!(KVM_SET_MSRS, ioc(1, 0x89, size_of::<kvm_bindings::kvm_msrs>()));
        assert_eq!(KVM_GET_SREGS, ioc(2, 0x83, size_of::<kvm_bindings::kvm_sregs>()));
        assert_eq!(KVM_SET_SREGS, ioc(1, 0x84, size_of::<kvm_bindings::kvm_sregs>()));
        assert_eq!(KVM_SET_MP_STATE, ioc(1, 0x99, size_of::<kvm_bindings::kvm_mp_state>()));
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, ioc(1, 0xd2, size_of::<kvm_bindings::kvm_memory_attributes>()));
        assert_eq!(KVM_SIGNAL_MSI, ioc(1, 0xa5, size_of::<kvm_bindings::kvm_msi>()));
    }

    #[test]
    fn only_the_main_thread_may_send_the_kick_signal() {
        let kick = SeccompRule::new(vec![cond(2, SeccompCmpOp::Eq, kick_signal()).unwrap()]).unwrap();
        let allows_kick = |kind| rules(kind).unwrap()[&libc::SYS_tgkill].contains(&kick);
        assert!(allows_kick(ThreadKind::Main));
        assert!(!allows_kick(ThreadKind::Vcpu));
        assert!(!allows_kick(ThreadKind::Devices));
        assert!(!allows_kick(ThreadKind::Quote));
    }

    #[test]
    fn only_vcpu_threads_may_issue_kvm_ioctls_and_only_devices_and_quotes_may_open_sockets() {
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        let devices = rules(ThreadKind::Devices).unwrap();
        let main = rules(ThreadKind::Main).unwrap();
        let quote = rules(ThreadKind::Quote).unwrap();
        assert_eq!(vcpu[&libc::SYS_ioctl].len(), 11);
        assert_eq!(devices[&libc::SYS_ioctl].len(), 1, "FIONBIO only");
        assert_eq!(quote[&libc::SYS_ioctl].len(), 1, "KVM_SIGNAL_MSI only");
        assert!(!main.contains_key(&libc::SYS_ioctl));
        assert!(devices.contains_key(&libc::SYS_socket));
        assert_eq!(quote[&libc::SYS_socket].len(), 2, "Unix and vsock streams");
        for s in [libc::SYS_bind, libc::SYS_listen, libc::SYS_accept4, libc::SYS_openat, libc::SYS_execve] {
            assert!(!quote.contains_key(&s), "syscall {s}");
        }
        for r in [&vcpu, &main] {
            for s in [libc::SYS_socket, libc::SYS_connect, libc::SYS_openat, libc::SYS_execve, libc::SYS_clone3] {
                assert!(!r.contains_key(&s), "syscall {s}");
            }
        }
    }
}
