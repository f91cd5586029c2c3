//! A run stopped after some epochs, saved to a training checkpoint, loaded and resumed ends with
//! exactly the weights of a run that never stopped (optimizer moments, step count and shuffle
//! position all restored).
mod common;
use common::*;
use headswap::nn::{Head, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer, TrainingState};

fn bits(net: &Network) -> Vec<u32> {
    net.values().unwrap().into_iter().flat_map(|(w, b)| w.into_iter().chain(b)).map(f32::to_bits).collect()
}

#[test]
fn stopped_and_resumed_equals_uninterrupted() {
    let gpu = gpu();
    let data = headswap::data::synthetic::shapes_task_a(300, 16, 3);
    for opt in [Optimizer::adam(1e-3), Optimizer::sgd(0.05).momentum(0.9).nesterov(true)] {
        let cfg = TrainConfig { optimizer: opt, batch_size: 32, seed: 9, ..TrainConfig::default() };
        let mut straight = Network::new(&gpu, &[256, 32, 16], Head::classes(8), 1).unwrap();
        Trainer::new(&gpu, cfg.clone()).fit(&mut straight, &data, 4).unwrap();

        let mut first = Network::new(&gpu, &[256, 32, 16], Head::classes(8), 1).unwrap();
        let mut trainer = Trainer::new(&gpu, cfg.clone());
        trainer.fit(&mut first, &data, 2).unwrap();
        let path = std::env::temp_dir().join(format!("headswap-resume-{}.safetensors", std::process::id()));
        trainer.training_state().unwrap().save(&first, &path).unwrap();
        drop((first, trainer));

        let (mut resumed, state) = TrainingState::load(&gpu, &path).unwrap();
        assert_eq!(state.epoch, 2);
        let report = Trainer::new(&gpu, cfg).resume(&mut resumed, &data, &state, 4).unwrap();
        assert_eq!(report.epochs.len(), 2, "resume runs the remaining epochs only");
        assert_eq!(bits(&straight), bits(&resumed), "{opt:?}: the resumed run diverged from the uninterrupted one");
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn resuming_a_fine_tune_keeps_the_frozen_trunk_and_optimizer_shape() {
    let gpu = gpu();
    let data = headswap::data::synthetic::scenes_task_b(120, 16, 4);
    let mut net = Network::new(&gpu, &[256, 32, 16], Head::labels(4), 2).unwrap();
    let cfg = TrainConfig { optimizer: Optimizer::adam(1e-3), batch_size: 16, seed: 3, ..TrainConfig::default() };
    let mut t = Trainer::new(&gpu, cfg.clone());
    t.fine_tune(&mut net, &data, Freeze::Trunk, 1).unwrap();
    let state = t.training_state().unwrap().clone();
    assert_eq!(state.lowest_trainable, 2);
    // a state from another optimizer does not fit: a clear error, not garbage
    let wrong = TrainConfig { optimizer: Optimizer::sgd(0.1), ..cfg };
    let err = Trainer::new(&gpu, wrong).resume(&mut net, &data, &state, 2).unwrap_err();
    assert!(err.to_string().contains("optimizer state"), "{err}");
}
