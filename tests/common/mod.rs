//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The `cvmm` binary built for this test run.
pub fn cvmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvmm"))
}

/// A console writer the test can read back.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Load address and entry point of [`tiny_elf`] images.
pub const TINY_ELF_BASE: u64 = 0x20_0000;

/// A minimal static 64-bit x86-64 ELF whose one PT_LOAD segment is `code`, loaded
/// and entered (in long mode, cvmm's 64-bit entry) at [`TINY_ELF_BASE`].
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 0x78];
    e[0..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little endian
    e[6] = 1; // EV_CURRENT
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&TINY_ELF_BASE.to_le_bytes()); // e_entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut e[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&TINY_ELF_BASE.to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&TINY_ELF_BASE.to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
    ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes()); // p_align
    e.extend_from_slice(code);
    e
}

/// Writes `bytes` to a fresh file in a temporary directory and returns its path.
pub fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvmm-test-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Guest code: `mov al, status; out 0xf4, al; hlt`.
pub fn exit_with(status: u8) -> Vec<u8> {
    vec![0xb0, status, 0xe6, 0xf4, 0xf4]
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count once exited threads have left /proc (a joined thread's task entry
/// can outlive pthread_join by a moment); polls up to two seconds for `expected`.
pub fn settled_thread_count(expected: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let n = thread_count();
        if n == expected || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// cvmm's cache of test images: $CVMM_CACHE_DIR or ~/.cache/cvmm.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CVMM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/cvmm"))
}

/// The tiny Linux test kernel: $CVMM_TEST_KERNEL or the cached build of
/// scripts/build-test-kernel.sh. Missing, it fails the test (never a skip).
pub fn test_kernel() -> PathBuf {
    let path = std::env::var_os("CVMM_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("test-kernel/vmlinux"));
    assert!(
        path.is_file(),
        "test kernel {} is missing: run scripts/build-test-kernel.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Debian's stock bzImage: $CVMM_DEBIAN_BZIMAGE or the newest one cached by
/// scripts/fetch-debian-kernel.sh. Missing, it fails the test (never a skip).
pub fn debian_bzimage() -> PathBuf {
    if let Some(p) = std::env::var_os("CVMM_DEBIAN_BZIMAGE") {
        return PathBuf::from(p);
    }
    let dir = cache_dir().join("debian-kernel");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok()).map(|e| e.path().join("vmlinuz")).filter(|p| p.is_file()).max()
    });
    found.unwrap_or_else(|| {
        panic!("no Debian bzImage under {}: run scripts/fetch-debian-kernel.sh (scripts/test.sh does)", dir.display())
    })
}

/// Console and log of a Linux boot that was stopped once it had printed enough.
pub struct LinuxBoot {
    /// stdout lines (the guest's consoles), up to the one that ended the boot.
    pub lines: Vec<String>,
    /// Everything cvmm wrote to stderr.
    pub stderr: String,
}

/// Boots the test kernel with `cvmm run ARGS --kernel <test kernel>` (plus a 300 s
/// watchdog), streams its console, and stops the VM as soon as `done(lines)` holds;
/// fails the test, with the console and stderr, if that never happens within 240 s.
pub fn boot_linux_until(args: &[&str], mut done: impl FnMut(&[String]) -> bool) -> LinuxBoot {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = cvmm()
        .args(["run", "--timeout", "300"])
        .args(args)
        .arg("--kernel")
        .arg(test_kernel())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut lines = Vec::new();
    let finished = loop {
        if done(&lines) {
            break true;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let status = child.wait().unwrap();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        finished,
        "Linux never printed what was looked for (status {status}); console:\n{}\nstderr:\n{stderr}",
        lines.join("\n")
    );
    LinuxBoot { lines, stderr }
}

/// Lowercase hex of `bytes`.
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// What follows `prefix` on each console line that starts with it.
pub fn field<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

/// The console lines `<prefix><n> <hex>` (the demo guest's evidence), checked to be in
/// order, joined into bytes.
pub fn numbered_hex(console: &str, prefix: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (n, line) in field(console, prefix).into_iter().enumerate() {
        let (index, hex) = line.split_once(' ').unwrap();
        assert_eq!(index.parse::<usize>().unwrap(), n, "{prefix} lines in order");
        bytes.extend(unhex(hex));
    }
    bytes
}
