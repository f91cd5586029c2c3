//! Fuzz target: PyTorch's `.pth` reader (`headswap::checkpoint::pth`) on arbitrary bytes, as a
//! whole file and as the pickle of a well-formed torch zip (see `headswap_fuzz::pth_bytes`).
#![no_main]

use std::sync::OnceLock;

use headswap_fuzz::{Scratch, pth_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    pth_bytes(SCRATCH.get_or_init(|| Scratch::new("pth_load")), data);
});
