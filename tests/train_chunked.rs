//! A data set larger than one storage binding is split into chunks of whole rows and batches are
//! gathered from every chunk. `HEADSWAP_MAX_BINDING_BYTES` lowers the binding limit so the test
//! runs on small data; the chunked run must give bit-identical weights to the unchunked one,
//! with cached trunk features (also chunked) and without, and with the features stored in f16.
mod common;
use common::*;
use headswap::nn::{Head, Network};
use headswap::train::{Freeze, Optimizer, Precision, TrainConfig, Trainer};

fn run(multi_label: bool) -> (Vec<u32>, f64) {
    let gpu = gpu();
    let data = if multi_label {
        headswap::data::synthetic::scenes_task_b(203, 16, 1)
    } else {
        headswap::data::synthetic::shapes_task_a(203, 16, 1)
    };
    let head = if multi_label { Head::labels(4) } else { Head::classes(8) };
    let mut net = Network::new(&gpu, &[256, 24, 12], head, 5).unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(0.05).momentum(0.9),
        batch_size: 16,
        seed: 2,
        validation_fraction: 0.2,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&gpu, cfg);
    let dispatches = t.fit(&mut net, &data, 2).unwrap().dispatches_per_step;
    t.fine_tune(&mut net, &data, Freeze::Trunk, 2).unwrap();
    (net.values().unwrap().into_iter().flat_map(|(w, b)| w.into_iter().chain(b)).map(f32::to_bits).collect(), dispatches)
}

/// A head-only fine-tune on features cached in f16: (weights as bits, dispatches per step).
fn run_f16() -> (Vec<u32>, f64) {
    let gpu = gpu();
    let data = headswap::data::synthetic::scenes_task_b(203, 16, 1);
    let mut net = Network::new(&gpu, &[256, 24, 12], Head::labels(4), 5).unwrap();
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(0.05).momentum(0.9),
        batch_size: 16,
        seed: 2,
        validation_fraction: 0.2,
        frozen_storage: Precision::F16,
        ..TrainConfig::default()
    };
    let report = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data, Freeze::Trunk, 2).unwrap();
    assert!(report.cached_features && report.frozen_storage == Precision::F16);
    (net.values().unwrap().into_iter().flat_map(|(w, b)| w.into_iter().chain(b)).map(f32::to_bits).collect(), report.dispatches_per_step)
}

#[test]
fn chunked_data_trains_exactly_like_one_buffer() {
    for multi_label in [false, true] {
        let whole = run(multi_label);
        // 256 inputs × 4 bytes = 1 KiB per row: 10 KiB chunks hold 10 rows, so 203 rows make 21
        // chunks, and the 12-wide trunk features 4 chunks.
        // SAFETY: this test binary has this one test; no other thread reads the environment.
        unsafe { std::env::set_var("HEADSWAP_MAX_BINDING_BYTES", "10240") };
        let chunked = run(multi_label);
        unsafe { std::env::remove_var("HEADSWAP_MAX_BINDING_BYTES") };
        assert_eq!(whole.0, chunked.0, "chunked data changed the result (multi_label: {multi_label})");
        // one gather per chunk per step: the split really happened
        assert!(chunked.1 > whole.1 + 10.0, "dispatches per step {} vs {}", chunked.1, whole.1);
    }
    // f16 features: 12 values in 6 words, 24 bytes a row; 1 KiB chunks hold 42 rows, so the 163
    // training rows' features make 4 chunks, each packed and gathered on its own (the inputs,
    // 1 KiB a row, one chunk each)
    let whole = run_f16();
    // SAFETY: as above
    unsafe { std::env::set_var("HEADSWAP_MAX_BINDING_BYTES", "1024") };
    let chunked = std::panic::catch_unwind(run_f16);
    unsafe { std::env::remove_var("HEADSWAP_MAX_BINDING_BYTES") };
    let chunked = chunked.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(whole.0, chunked.0, "chunked f16 features changed the result");
    assert!(chunked.1 >= whole.1 + 3.0, "dispatches per step {} vs {}", chunked.1, whole.1);
}
