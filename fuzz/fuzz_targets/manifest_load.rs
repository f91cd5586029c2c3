//! Fuzz target: `headswap::data::manifest::load` on arbitrary bytes (see `headswap_fuzz::manifest_bytes`).
#![no_main]

use std::sync::OnceLock;

use headswap_fuzz::{Scratch, manifest_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    manifest_bytes(SCRATCH.get_or_init(|| Scratch::new("manifest_load")), data);
});
