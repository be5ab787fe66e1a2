//! Linux direct boot of confidential guests on the emulated platforms: `cvmm run --tee
//! snp|tdx --emulated --kernel bzImage` runs cvmm's Linux boot firmware, which enters
//! the kernel's 64-bit entry the way the boot protocol says, and `cvmm measure` with the
//! same arguments predicts the launch's measurement.
//!
//! The kernel is a tiny bzImage made here: a valid setup header (protocol 2.15,
//! relocatable, XLF_KERNEL_64) and, at protected-mode offset 0x200, a 64-bit stub that
//! records what it sees at entry (registers, segment selectors, RFLAGS, CR3 and the
//! zero page's fields, following its pointers) into its own memory and ends the VM
//! through the debug-exit port. A confidential guest has no serial port in cvmm, so the
//! test reads the record from guest memory after the run.

mod common;

use std::time::Duration;

use common::{cvmm, hex_of, temp_file, SharedBuf};
use vm_memory::{Bytes, GuestAddress};
use vmm::{build_vm, KernelSource, SnpConfig, TdxConfig, Tee, VmConfig, VmExit};

/// Where the crafted kernel prefers to load (its `pref_address`).
const LOAD: u64 = 0x100_0000;
/// Where its stub writes the record (inside its own `init_size` area).
const RECORD: u64 = LOAD + 0x1000;
const CMDLINE: &str = "console=hvc0 cvmm-linux-test";

/// The entry stub's machine code (x86-64, hand-assembled): RBX = RSI (the zero page),
/// RDI = the record; each `stosq` stores RAX as the record's next u64.
fn entry_stub() -> Vec<u8> {
    const STOSQ: [u8; 2] = [0x48, 0xab];
    let mut c = vec![0x48, 0x89, 0xf3]; // mov rbx, rsi
    c.push(0xbf); // mov edi, RECORD
    c.extend_from_slice(&(RECORD as u32).to_le_bytes());
    let mut step = |code: &[u8]| {
        c.extend_from_slice(code);
        c.extend_from_slice(&STOSQ);
    };
    let zp32 = |off: u32| [&[0x8b, 0x83][..], &off.to_le_bytes()].concat(); // mov eax, [rbx+off]
    let zp64 = |off: u32| [&[0x48, 0x8b, 0x83][..], &off.to_le_bytes()].concat(); // mov rax, [rbx+off]
    let zp8 = |off: u32| [&[0x0f, 0xb6, 0x83][..], &off.to_le_bytes()].concat(); // movzx eax, byte [rbx+off]
    step(&[0xb8, b'L', b'N', b'X', b'!']); // 0: marker
    step(&[0x48, 0x89, 0xf0]); // 1: RSI
    step(&[0x8c, 0xc8]); // 2: CS
    step(&[0x8c, 0xd8]); // 3: DS
    step(&[0x8c, 0xd0]); // 4: SS
    step(&[0x9c, 0x58]); // 5: RFLAGS (pushfq; pop rax)
    step(&[0x0f, 0x20, 0xd8]); // 6: CR3
    step(&zp32(0x202)); // 7: hdr.header ("HdrS")
    step(&zp8(0x210)); // 8: hdr.type_of_loader
    step(&zp32(0x214)); // 9: hdr.code32_start
    step(&zp8(0x1e8)); // 10: e820_entries
    step(&zp32(0x13c)); // 11: cc_blob_address
    step(&[0x8b, 0x00]); // 12: the CC blob's magic (mov eax, [rax])
    step(&zp64(0x250)); // 13: hdr.setup_data
    step(&[0x8b, 0x40, 0x08]); // 14: its type (mov eax, [rax+8])
    step(&zp32(0x228)); // 15: hdr.cmd_line_ptr
    step(&[0x48, 0x8b, 0x00]); // 16: the command line's first 8 bytes
    step(&zp32(0x218)); // 17: hdr.ramdisk_image
    step(&zp32(0x21c)); // 18: hdr.ramdisk_size
    step(&[&zp32(0x218)[..], &[0x48, 0x8b, 0x00]].concat()); // 19: the initrd's first 8 bytes
    step(&[0x48, 0x8d, 0x05, 0, 0, 0, 0]); // 20: RIP after this lea
                                           // 21..: the first 8 e820 entries (lea rsi, [rbx+0x2d0]; mov ecx, 160; rep movsb).
    c.extend_from_slice(&[0x48, 0x8d, 0xb3, 0xd0, 0x02, 0, 0, 0xb9, 160, 0, 0, 0, 0xf3, 0xa4]);
    c.extend_from_slice(&[0xb0, 0x00, 0xe6, 0xf4]); // debug exit with status 0
    c.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt loop
    c
}

/// Offset of the `lea rax, [rip]` in the stub, and its length.
fn lea_rip_end() -> u64 {
    let stub = entry_stub();
    let at = stub.windows(7).position(|w| w == [0x48, 0x8d, 0x05, 0, 0, 0, 0]).expect("lea in the stub");
    (at + 7) as u64
}

/// A bzImage: one setup sector after the boot sector, then the protected-mode part
/// (`hlt` up to the 64-bit entry at 0x200, then the stub).
fn bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    b[0x1f1] = 1; // setup_sects
    b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    b[0x211] = 0x01; // loadflags: LOADED_HIGH
    b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    b[0x234] = 1; // relocatable_kernel
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
    b[0x258..0x260].copy_from_slice(&LOAD.to_le_bytes()); // pref_address
    b[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    let mut pm = vec![0xf4u8; 0x200];
    pm.extend(entry_stub());
    b.extend(pm);
    b
}

fn initrd() -> Vec<u8> {
    let mut i = b"INITRD:)".to_vec();
    i.resize(0x2345, 0x5a);
    i
}

fn config(tee: Tee) -> VmConfig {
    let kernel = temp_file("bzImage", &bzimage());
    let initrd_path = kernel.with_file_name("initrd");
    std::fs::write(&initrd_path, initrd()).unwrap();
    VmConfig {
        memory: 64 << 20,
        kernel: KernelSource::File(kernel),
        initrd: Some(initrd_path),
        cmdline: Some(CMDLINE.into()),
        tee,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// Runs `config` and returns the stub's record (u64 values, then the e820 bytes).
fn boot(config: &VmConfig) -> (Vec<u64>, Vec<u8>) {
    let console = SharedBuf::default();
    let mut vm = build_vm(config, Box::new(console.clone())).expect("build");
    let exit = vm.run().expect("run");
    assert_eq!(exit, VmExit::GuestExit(0), "console: {}", console.text());
    let mut record = vec![0u8; 21 * 8 + 160];
    vm.guest_memory().read_slice(&mut record, GuestAddress(RECORD)).unwrap();
    let values = record[..168].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    (values, record[168..].to_vec())
}

/// The e820 entries the stub copied: (addr, size, type).
fn e820(bytes: &[u8], n: usize) -> Vec<(u64, u64, u32)> {
    bytes
        .chunks(20)
        .take(n)
        .map(|e| {
            let u = |r: std::ops::Range<usize>| u64::from_le_bytes(e[r].try_into().unwrap());
            (u(0..8), u(8..16), u32::from_le_bytes(e[16..20].try_into().unwrap()))
        })
        .collect()
}

/// What both platforms must show at entry.
fn check_common_entry_state(v: &[u64], e820_bytes: &[u8]) {
    assert_eq!(&v[0].to_le_bytes()[..4], b"LNX!", "the stub ran: {v:x?}");
    assert_eq!(v[1], 0x7000, "RSI = the zero page");
    assert_eq!((v[2], v[3], v[4]), (0x10, 0x18, 0x18), "CS = __BOOT_CS, DS = SS = __BOOT_DS");
    assert_eq!(v[5] & (1 << 9), 0, "interrupts off: RFLAGS {:#x}", v[5]);
    assert_eq!(v[6] & !0xfff, 0x9000, "on the firmware's identity page tables");
    assert_eq!(&(v[7] as u32).to_le_bytes(), b"HdrS");
    assert_eq!(v[8], 0xff, "type_of_loader");
    assert_eq!(v[9], LOAD, "code32_start");
    assert_eq!(v[15], 0x20000, "cmd_line_ptr");
    assert_eq!(&v[16].to_le_bytes(), &CMDLINE.as_bytes()[..8]);
    assert_eq!(v[18], initrd().len() as u64, "ramdisk_size");
    assert_eq!(v[17] % 0x1000, 0);
    assert!(v[17] >= LOAD + 0x10_0000 && v[17] + v[18] <= 64 << 20, "initrd at {:#x}", v[17]);
    assert_eq!(&v[19].to_le_bytes(), b"INITRD:)");
    assert_eq!(v[20], LOAD + 0x200 + lea_rip_end(), "entered at startup_64 = code32_start + 0x200");
    // e820: the kernel and initrd in RAM, the firmware's 1-8 MiB reserved.
    let map = e820(e820_bytes, (v[10] as usize).min(8));
    let kind = |gpa: u64| map.iter().find(|&&(a, l, _)| a <= gpa && gpa < a + l).map(|e| e.2);
    assert!(v[10] >= 4, "e820 entries: {}", v[10]);
    assert_eq!(kind(LOAD), Some(1), "{map:x?}");
    assert_eq!(kind(v[17]), Some(1), "{map:x?}");
    assert_eq!(kind(0x20_0000), Some(2), "{map:x?}");
    assert_eq!(kind(0x40_0000), Some(2), "the shared bounce region: {map:x?}");
}

#[test]
fn snp_firmware_enters_the_kernel_with_boot_params_and_the_cc_blob() {
    let config = config(Tee::Snp(SnpConfig { emulated: true, ..Default::default() }));
    let (v, e820_bytes) = boot(&config);
    check_common_entry_state(&v, &e820_bytes);
    assert_ne!(v[11], 0, "cc_blob_address");
    assert_eq!(v[12], 0x4544_4d41, "the CC blob's magic, \"AMDE\"");
    assert_eq!(v[13], 0xf000, "setup_data");
    assert_eq!(v[14], 7, "SETUP_CC_BLOB");
    let map = e820(&e820_bytes, v[10] as usize);
    let kind = |gpa: u64| map.iter().find(|&&(a, l, _)| a <= gpa && gpa < a + l).map(|e| e.2);
    assert_eq!((kind(0x3000), kind(0x4000)), (Some(2), Some(2)), "secrets and CPUID pages reserved: {map:x?}");
}

#[test]
fn tdx_firmware_enters_the_kernel_with_boot_params() {
    let config = config(Tee::Tdx(TdxConfig::new(true)));
    let (v, e820_bytes) = boot(&config);
    check_common_entry_state(&v, &e820_bytes);
    assert_eq!((v[11], v[13]), (0, 0), "no CC blob or setup_data in a TD");
    let map = e820(&e820_bytes, v[10] as usize);
    let kind = |gpa: u64| map.iter().find(|&&(a, l, _)| a <= gpa && gpa < a + l).map(|e| e.2);
    assert_eq!(kind(0x8000), Some(2), "the TD HOB is reserved: {map:x?}");
}

/// `cvmm measure` arguments for `config`'s kernel, initrd and command line.
fn measure_args(tee: &str, config: &VmConfig) -> Vec<String> {
    let KernelSource::File(kernel) = &config.kernel else { unreachable!() };
    let initrd = config.initrd.as_ref().unwrap();
    let mut args: Vec<String> = ["measure", "--tee", tee, "--emulated", "--memory", "64M"].map(String::from).into();
    args.extend(["--kernel".into(), kernel.display().to_string(), "--initrd".into(), initrd.display().to_string()]);
    args.extend(["--cmdline".into(), CMDLINE.into()]);
    args
}

#[test]
fn snp_launch_digest_of_a_linux_boot_equals_cvmm_measure() {
    let config = config(Tee::Snp(SnpConfig { emulated: true, ..Default::default() }));
    let vm = build_vm(&config, Box::new(SharedBuf::default())).expect("build");
    let launched = vm.launch_measurement().expect("an SNP launch has a measurement");
    assert_eq!(vmm::snp_measurement(&config).expect("measure").1, launched);
    let args = measure_args("snp", &config);
    let out = cvmm().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    // `cvmm run` with the same arguments boots it: the stub ends the VM with status 0.
    let run = cvmm().arg("run").args(&args[1..]).args(["--timeout", "60"]).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    // The kernel, initrd and command line are measured: change one, the digest changes.
    let mut other = args.clone();
    *other.last_mut().unwrap() = "console=hvc0 cvmm-linux-tesT".into();
    let out = cvmm().args(&other).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    let other_initrd = VmConfig { initrd: Some(temp_file("initrd2", b"other")), ..config.clone() };
    assert_ne!(vmm::snp_measurement(&other_initrd).expect("measure").1, launched);
}

#[test]
fn tdx_mrtd_of_a_linux_boot_equals_cvmm_measure() {
    let config = config(Tee::Tdx(TdxConfig::new(true)));
    let vm = build_vm(&config, Box::new(SharedBuf::default())).expect("build");
    let launched = vm.launch_measurement().expect("a TD has an MRTD");
    assert_eq!(vmm::tdx_measurement(&config).expect("measure").1, launched);
    let out = cvmm().args(measure_args("tdx", &config)).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    let mut kernel = bzimage();
    *kernel.last_mut().unwrap() ^= 1;
    let other_kernel = VmConfig { kernel: KernelSource::File(temp_file("bzImage", &kernel)), ..config.clone() };
    assert_ne!(vmm::tdx_measurement(&other_kernel).expect("measure").1, launched, "the kernel is measured");
}

#[test]
fn a_bzimage_without_the_64_bit_entry_is_refused_for_a_confidential_guest() {
    let mut image = bzimage();
    image[0x236] = 0; // xloadflags: no XLF_KERNEL_64
    let config =
        VmConfig { kernel: KernelSource::File(temp_file("bzImage", &image)), ..config(Tee::Tdx(TdxConfig::new(true))) };
    let Err(err) = build_vm(&config, Box::new(SharedBuf::default())) else {
        panic!("a bzImage without a 64-bit entry booted")
    };
    assert!(err.to_string().contains("64-bit entry"), "{err}");
}

#[test]
fn application_processors_validate_their_share_then_stay_parked_while_the_bsp_enters_linux() {
    let snp = VmConfig { vcpus: 4, ..config(Tee::Snp(SnpConfig { emulated: true, ..Default::default() })) };
    let console = SharedBuf::default();
    let mut vm = build_vm(&snp, Box::new(console.clone())).expect("build");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0), "console: {}", console.text());
    let platform = vm.snp_platform().expect("emulated SNP");
    assert_eq!(platform.aps_started(), 3);
    // All of RAM but the 4 MiB bounce region is validated before the kernel runs.
    assert_eq!(platform.rmp().validated_pages(), (64 << 20) / 4096 - 1024);

    let tdx = VmConfig { vcpus: 2, ..config(Tee::Tdx(TdxConfig::new(true))) };
    let (v, e820_bytes) = boot(&tdx);
    check_common_entry_state(&v, &e820_bytes);
}
