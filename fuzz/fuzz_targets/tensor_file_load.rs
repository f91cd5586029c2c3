//! Fuzz target: `headswap::data::tensor_file::load` on arbitrary bytes (see `headswap_fuzz::tensor_file_bytes`).
#![no_main]

use std::sync::OnceLock;

use headswap_fuzz::{Scratch, tensor_file_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    tensor_file_bytes(SCRATCH.get_or_init(|| Scratch::new("tensor_file_load")), data);
});
