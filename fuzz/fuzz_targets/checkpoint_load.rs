//! Fuzz target: `headswap::checkpoint::load` on arbitrary bytes (see `headswap_fuzz::checkpoint_bytes`).
#![no_main]

use std::sync::OnceLock;

use headswap_fuzz::{Scratch, checkpoint_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    checkpoint_bytes(SCRATCH.get_or_init(|| Scratch::new("checkpoint_load")), data);
});
