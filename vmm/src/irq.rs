//! KVM interrupt routing for the user-space IOAPIC: GSI -> MSI routes set with
//! KVM_SET_GSI_ROUTING, fed by irqfds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::ioapic::{MsiMessage, MsiRouter};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

/// Keeps the VM's GSI routing table and rewrites it whenever a route changes.
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    routes: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl std::fmt::Debug for KvmMsiRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmMsiRouter").finish_non_exhaustive()
    }
}

impl KvmMsiRouter {
    /// A router for `vm` with no routes.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm, routes: Mutex::new(BTreeMap::new()) }
    }
}

fn routing_entry(gsi: u32, msi: &MsiMessage) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: msi.address as u32,
                address_hi: (msi.address >> 32) as u32,
                data: msi.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

impl MsiRouter for KvmMsiRouter {
    fn set_route(&self, gsi: u32, msi: Option<MsiMessage>) -> std::io::Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        match msi {
            Some(m) => routes.insert(gsi, m),
            None => routes.remove(&gsi),
        };
        let entries: Vec<_> = routes.iter().map(|(g, m)| routing_entry(*g, m)).collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| std::io::Error::other(format!("routing table: {e:?}")))?;
        self.vm.set_gsi_routing(&table).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}
