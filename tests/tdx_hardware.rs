//! A minimal real TDX launch through KVM (`launch::tdx::kvm`), on hosts that can:
//! create a TD, configure it (split irqchip, MapGPA exits), give it guest_memfd memory,
//! `KVM_TDX_INIT_VM` with the host's supported CPUID, a TD HOB, one vCPU (its CPUID from
//! `KVM_TDX_GET_CPUID`, then `KVM_TDX_INIT_VCPU` with the TD HOB's address),
//! `KVM_TDX_INIT_MEM_REGION` of a measured page, the TD HOB and temporary memory, and
//! `KVM_TDX_FINALIZE_VM`. The TD is not run (its "firmware" is a test pattern); the MRTD
//! the plan predicts is printed for comparison with a TD report from a guest launched
//! the same way.
//!
//! On a host without TDX (no TDX VM type, ...) it prints exactly `SKIP: <reason>`, the
//! reason being `launch::tdx::kvm::probe::probe_host`'s error, and checks nothing else.
//! It runs without libtest's harness (`harness = false`) so that a skip is reported as a
//! skip, never counted as a passed test.

use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use launch::measure::tdx::mrtd;
use launch::plan::{Contents, LaunchPlan, PageType, PlanRange, TdxPageType, VcpuState};
use launch::private_memory::GuestRange;
use launch::tdx::hob::{install, TdHob};
use launch::tdx::kvm::options::TdxKvmOptions;
use launch::tdx::kvm::probe::probe_host;
use launch::tdx::kvm::{vcpu_cpuid, TdxKvmLaunch, TdxVmConfig, DEFAULT_GPAW};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// 16 MiB of RAM at 0.
const RAM: GuestRange = GuestRange { gpa: 0, len: 0x100_0000 };
/// A 64 KiB "firmware" region below 4 GiB.
const FLASH: GuestRange = GuestRange { gpa: 0xffff_0000, len: 0x1_0000 };
const TD_HOB: u64 = 0x80_9000;

/// One measured page of known bytes at the top of 4 GiB, the TD HOB and 24 KiB of
/// temporary memory (unmeasured, as OVMF's), one vCPU with RCX = the TD HOB.
fn plan() -> LaunchPlan {
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 5) as u8).collect();
    let range = |gpa, len, t, contents, what: &str| PlanRange {
        gpa,
        len,
        page_type: PageType::Tdx(t),
        contents,
        what: what.into(),
    };
    LaunchPlan {
        ranges: vec![
            range(0xffff_f000, 0x1000, TdxPageType::AddMeasured, Contents::Bytes(Arc::from(page)), "BFV"),
            range(TD_HOB, 0x2000, TdxPageType::AddUnmeasured, Contents::Zero, "TD_HOB"),
            range(0x80_0000, 0x6000, TdxPageType::AddUnmeasured, Contents::Zero, "TempMem"),
        ],
        vcpus: vec![VcpuState::Tdx { rcx: TD_HOB }],
    }
}

fn main() {
    if minimal_td_launch_on_real_hardware() {
        println!("tdx_hardware: 1 passed");
    } else {
        println!("tdx_hardware: 0 passed, 1 skipped");
    }
}

/// Returns false when the test was skipped.
fn minimal_td_launch_on_real_hardware() -> bool {
    let kvm = Kvm::new().expect("/dev/kvm");
    let host = match probe_host(&kvm) {
        Ok(host) => host,
        Err(reason) => {
            println!("SKIP: {reason}");
            return false;
        }
    };
    assert!(!host.capabilities.cpuid_configs.is_empty(), "KVM_TDX_CAPABILITIES lists configurable CPUID leaves");

    let mut plan = plan();
    let options = TdxKvmOptions::parse("tdx-guest,id=tdx0,sept-ve-disable=on").unwrap();
    let mut launch = TdxKvmLaunch::new(host, options).expect("attributes fit the host");
    let vm = launch.create_vm(&kvm).expect("KVM_CREATE_VM(KVM_X86_TDX_VM)");
    launch.configure_vm(&vm, None).expect("split irqchip, MapGPA exits");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(RAM.gpa), RAM.len as usize),
        (GuestAddress(FLASH.gpa), FLASH.len as usize),
    ])
    .unwrap();
    launch.add_memory(&vm, &mem, 0).expect("guest_memfd slots, all private");
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let config = TdxVmConfig { cpuid: supported.as_slice(), xfam: None, gpaw: DEFAULT_GPAW };
    launch.init_vm(&vm, &config).expect("KVM_TDX_INIT_VM");

    let hob = TdHob::for_plan(&plan, &[RAM], &[]).expect("TD HOB");
    install(&mut plan, &hob).expect("TD HOB in its range");
    let expected_mrtd = mrtd(&plan).expect("MRTD");

    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let td_cpuid = launch.td_cpuid(&vcpu).expect("KVM_TDX_GET_CPUID");
    let gpaw_leaf = td_cpuid.as_slice().iter().find(|e| e.function == 0x8000_0008).expect("leaf 0x80000008");
    println!("TD CPUID: {} leaves, 0x80000008 EAX {:#x}", td_cpuid.as_slice().len(), gpaw_leaf.eax);
    vcpu.set_cpuid2(&vcpu_cpuid(&td_cpuid, &supported).unwrap()).expect("KVM_SET_CPUID2");
    launch.init_vcpu(&vcpu, &plan.vcpus[0]).expect("KVM_TDX_INIT_VCPU");

    // A stale shared copy of the measured page, which the launch must drop.
    let memory = launch.memory().unwrap().clone();
    memory.write(0xffff_f000, &[0xee; 16]).unwrap();
    launch.init_mem_regions(&vcpu, &plan).expect("KVM_TDX_INIT_MEM_REGION");
    launch.finalize(&vm).expect("KVM_TDX_FINALIZE_VM");

    let mut page = [0xffu8; 16];
    memory.read(0xffff_f000, &mut page).unwrap();
    assert_eq!(page, [0; 16], "the shared copy of a launched page is dropped");
    println!("launched; expected MRTD {}", hex::encode(expected_mrtd));
    true
}
