//! Fuzzes kernel image loading (ELF, PVH note, bzImage) into a small guest memory.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("guest memory");
    if let Ok(k) = firmware::kernel::load_kernel(&mem, &mut Cursor::new(data)) {
        let layout = arch::layout::MemoryLayout::new(32 << 20).expect("layout");
        let _ = firmware::kernel::place_initrd(&layout, &k, 4096);
        let _ = firmware::kernel::cmdline_bytes("console=ttyS0", k.setup_header.as_ref());
    }
});
