//! The optimizer's two launch forms inside real training: one dispatch over the head and the
//! trunk ranges, or one dispatch per range (which `choose_range_launch` picks per device). Both
//! must train bit for bit alike. Its own test binary: the form is forced through
//! `HEADSWAP_OPTIM_LAUNCH`, a process-wide variable, set here by a single test.
mod common;
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::nn::{Head, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};

/// 12-D inputs, 3 classes that depend on the inputs.
fn data(n: usize, seed: u64) -> Dataset {
    let d = 12;
    let mut r = Rng::new(seed);
    let x: Vec<f32> = (0..n * d).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
    let y = (0..n).map(|i| ((x[i * d] + x[i * d + 1] > 0.0) as u32) + (x[i * d + 2] > 0.5) as u32).collect();
    Dataset { x, n, d, input_shape: vec![d], targets: Targets::Classes { y, num_classes: 3 }, label_names: vec![] }
}

/// Every layer's weights and bias after a full fine-tune (trunk at a tenth of the head's rate),
/// the epoch losses and the dispatches per step.
fn fine_tune(launch: &str, optimizer: Optimizer) -> (Vec<Vec<f32>>, Vec<f64>, f64) {
    // SAFETY of the environment write: this binary's only test, no other thread reads it
    unsafe { std::env::set_var("HEADSWAP_OPTIM_LAUNCH", launch) };
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[12, 20, 9], Head::classes(3), 11).unwrap();
    let cfg = TrainConfig { optimizer, batch_size: 16, seed: 3, trunk_lr_mult: 0.1, ..TrainConfig::default() };
    // 70 samples: four full batches and a partial one of 6
    let r = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data(70, 4), Freeze::All, 3).unwrap();
    assert_eq!(r.lowest_trainable, 0);
    let layers = (0..3).flat_map(|l| {
        let (w, b) = net.layer_values(l).unwrap();
        [w, b]
    });
    (layers.collect(), r.epochs.iter().map(|e| e.train.loss).collect(), r.dispatches_per_step)
}

#[test]
fn one_dispatch_and_one_per_range_train_alike() {
    for optimizer in [Optimizer::sgd(0.1).momentum(0.9), Optimizer::adamw(0.01), Optimizer::sgd(0.2)] {
        let (one, one_loss, one_d) = fine_tune("one", optimizer);
        let (per, per_loss, per_d) = fine_tune("per-range", optimizer);
        for (k, (a, b)) in one.iter().zip(&per).enumerate() {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{optimizer:?}: tensor {k} differs between the forms");
        }
        assert_eq!(one_loss, per_loss, "{optimizer:?}: epoch losses");
        assert!(one_loss.iter().all(|l| l.is_finite()) && one_loss[2] < one_loss[0], "{optimizer:?}: losses {one_loss:?}");
        assert_eq!(per_d, one_d + 1.0, "{optimizer:?}: one more launch per step for two ranges");
    }
    unsafe { std::env::set_var("HEADSWAP_OPTIM_LAUNCH", "sideways") };
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[12, 9], Head::classes(3), 1).unwrap();
    let err = Trainer::new(&gpu, TrainConfig::default()).fine_tune(&mut net, &data(20, 1), Freeze::All, 1).unwrap_err();
    assert!(err.to_string().contains("HEADSWAP_OPTIM_LAUNCH=sideways"), "{err}");
}
