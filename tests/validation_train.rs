//! Training refuses settings that cannot mean anything (0 epochs, negative weights, thresholds
//! outside (0, 1), ...) with an error naming the setting, and a training state remembers the
//! run's hyper-parameters so a resume can continue with them.
mod common;
use common::*;
use headswap::Error;
use headswap::data::synthetic::{scenes_task_b, shapes_task_a};
use headswap::nn::{Head, Network};
use headswap::train::{BceSettings, Freeze, Optimizer, RunSettings, Schedule, TrainConfig, Trainer, TrainingState};

fn classes_net() -> Network {
    Network::new(&gpu(), &[256, 16], Head::classes(8), 1).unwrap()
}

fn labels_net() -> Network {
    Network::new(&gpu(), &[256, 16], Head::labels(4), 1).unwrap()
}

/// The error of `cfg` on a short fit of a label head, as text; panics when it is accepted.
fn refused(cfg: TrainConfig) -> String {
    let gpu = gpu();
    let data = scenes_task_b(40, 16, 1);
    let err = Trainer::new(&gpu, cfg.clone()).fit(&mut labels_net(), &data, 1).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{cfg:?}: {err:?}");
    err.to_string()
}

#[test]
fn zero_epochs_are_refused() {
    let gpu = gpu();
    let data = shapes_task_a(40, 16, 1);
    let mut t = Trainer::new(&gpu, TrainConfig::default());
    let m = t.fit(&mut classes_net(), &data, 0).unwrap_err().to_string();
    assert!(m.contains("epochs"), "{m}");
    let m = t.fine_tune(&mut classes_net(), &data, Freeze::Trunk, 0).unwrap_err().to_string();
    assert!(m.contains("epochs"), "{m}");
    assert!(t.fine_tune_recipe(&mut classes_net(), &data, 0, 0).is_err());
    // one empty phase of the recipe is still fine
    t.fine_tune_recipe(&mut classes_net(), &data, 0, 1).unwrap();
}

#[test]
fn negative_or_non_finite_bce_weights_are_refused() {
    for w in [vec![1.0, 2.0, -3.0, 1.0], vec![1.0, 2.0, f32::NAN, 1.0], vec![1.0, f32::INFINITY, 1.0, 1.0]] {
        let bce = BceSettings { pos_weight: Some(w.clone()), ..BceSettings::default() };
        let m = refused(TrainConfig { bce, ..TrainConfig::default() });
        assert!(m.contains("pos_weight"), "{m}");
        let bce = BceSettings { label_weight: Some(w), ..BceSettings::default() };
        let m = refused(TrainConfig { bce, ..TrainConfig::default() });
        assert!(m.contains("label_weight"), "{m}");
    }
    // zero switches a term off: allowed
    let gpu = gpu();
    let bce = BceSettings { pos_weight: Some(vec![0.0, 1.0, 2.0, 1.0]), ..BceSettings::default() };
    Trainer::new(&gpu, TrainConfig { bce, ..TrainConfig::default() }).fit(&mut labels_net(), &scenes_task_b(40, 16, 1), 1).unwrap();
}

#[test]
fn thresholds_outside_zero_one_are_refused_in_training_and_evaluation() {
    let gpu = gpu();
    let data = scenes_task_b(40, 16, 1);
    let classes = shapes_task_a(40, 16, 1);
    for threshold in [f32::NAN, 0.0, 1.0, 2.0, 7.0, -0.5] {
        let m = refused(TrainConfig { threshold, ..TrainConfig::default() });
        assert!(m.contains("threshold"), "{m}");
        let err = Trainer::new(&gpu, TrainConfig { threshold, ..TrainConfig::default() }).evaluate(&labels_net(), &data).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        // a class head never reads the threshold, so only the configuration check sees it
        let cfg = TrainConfig { threshold, ..TrainConfig::default() };
        let err = Trainer::new(&gpu, cfg.clone()).evaluate(&classes_net(), &classes).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        let err = Trainer::new(&gpu, cfg).fit(&mut classes_net(), &classes, 1).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
    }
}

#[test]
fn steps_per_submission_zero_is_refused() {
    let m = refused(TrainConfig { steps_per_submission: 0, ..TrainConfig::default() });
    assert!(m.contains("steps_per_submission"), "{m}");
}

#[test]
fn validation_fraction_outside_zero_one_names_the_field() {
    for f in [1.5, 1.0, -0.1, f32::NAN] {
        let m = refused(TrainConfig { validation_fraction: f, ..TrainConfig::default() });
        assert!(m.contains("validation_fraction"), "{f}: {m}");
        // fine_tune with Freeze::Auto reads the fraction first: the same error
        let gpu = gpu();
        let cfg = TrainConfig { validation_fraction: f, ..TrainConfig::default() };
        let m = Trainer::new(&gpu, cfg).fine_tune(&mut labels_net(), &scenes_task_b(40, 16, 1), Freeze::Auto, 1).unwrap_err().to_string();
        assert!(m.contains("validation_fraction"), "{f}: {m}");
    }
}

#[test]
fn bad_schedules_and_early_stopping_without_validation_are_refused() {
    let m = refused(TrainConfig { schedule: Schedule::Step { every_epochs: 0, gamma: 0.5 }, ..TrainConfig::default() });
    assert!(m.contains("every_epochs"), "{m}");
    refused(TrainConfig { schedule: Schedule::Step { every_epochs: 1, gamma: f32::NAN }, ..TrainConfig::default() });
    let m = refused(TrainConfig { early_stopping: Some(2), ..TrainConfig::default() });
    assert!(m.contains("early_stopping"), "{m}");
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("headswap-validation-{tag}-{}.safetensors", std::process::id()))
}

#[test]
fn a_training_state_remembers_the_run_settings() {
    let gpu = gpu();
    let data = shapes_task_a(100, 16, 3);
    let optimizers = [Optimizer::sgd(0.01).momentum(0.5).nesterov(true).weight_decay(1e-4), Optimizer::adamw(3e-4), Optimizer::adam(1e-3)];
    let schedules =
        [Schedule::Step { every_epochs: 2, gamma: 0.3 }, Schedule::Cosine { warmup_steps: 3, min_lr: 1e-5 }, Schedule::Constant];
    for (opt, schedule) in optimizers.into_iter().zip(schedules) {
        let cfg = TrainConfig { optimizer: opt, batch_size: 24, schedule, seed: 11, ..TrainConfig::default() };
        let mut net = classes_net();
        let mut t = Trainer::new(&gpu, cfg.clone());
        t.fit(&mut net, &data, 1).unwrap();
        let path = temp_path("settings");
        t.training_state().unwrap().save(&net, &path).unwrap();
        let (_, state) = TrainingState::load(&gpu, &path).unwrap();
        let _ = std::fs::remove_file(&path);
        let want = RunSettings { optimizer: opt, batch_size: 24, schedule, seed: 11, n: 100 };
        assert_eq!(state.run.as_ref(), Some(&want));
        // applying them gives back the run's configuration
        let restored = want.apply(&TrainConfig::default());
        assert_eq!((restored.optimizer, restored.batch_size, restored.schedule, restored.seed), (opt, 24, schedule, 11));
    }
}

#[test]
fn resume_refuses_other_data_and_no_remaining_epochs() {
    let gpu = gpu();
    let data = shapes_task_a(100, 16, 3);
    let cfg = TrainConfig { batch_size: 32, ..TrainConfig::default() };
    let mut net = classes_net();
    let mut t = Trainer::new(&gpu, cfg.clone());
    t.fit(&mut net, &data, 2).unwrap();
    let state = t.training_state().unwrap().clone();
    for epochs in [1, 2] {
        let m = Trainer::new(&gpu, cfg.clone()).resume(&mut net, &data, &state, epochs).unwrap_err().to_string();
        assert!(m.contains("2 epoch"), "{m}");
    }
    let other = shapes_task_a(90, 16, 3);
    let m = Trainer::new(&gpu, cfg.clone()).resume(&mut net, &other, &state, 3).unwrap_err().to_string();
    assert!(m.contains("100") && m.contains("90"), "{m}");
    Trainer::new(&gpu, cfg).resume(&mut net, &data, &state, 3).unwrap();
}

#[test]
fn a_state_saved_without_run_settings_still_loads_and_resumes() {
    let gpu = gpu();
    let data = shapes_task_a(100, 16, 3);
    let cfg = TrainConfig { batch_size: 32, ..TrainConfig::default() };
    let mut net = classes_net();
    let mut t = Trainer::new(&gpu, cfg.clone());
    t.fit(&mut net, &data, 1).unwrap();
    // a state file as written before the settings were saved: no train.optimizer etc.
    let mut c = t.training_state().unwrap().to_checkpoint(&net).unwrap();
    for k in ["train.optimizer", "train.batch_size", "train.schedule", "train.seed", "train.n"] {
        assert!(c.metadata.remove(k).is_some(), "{k} is written");
    }
    let state = TrainingState::from_checkpoint(&c, "old.safetensors").unwrap();
    assert_eq!(state.run, None);
    // without a saved n any data size is taken, as before
    Trainer::new(&gpu, cfg).resume(&mut net, &shapes_task_a(90, 16, 3), &state, 2).unwrap();
    // a half-written settings block is an error, not a silent default
    let mut c = t.training_state().unwrap().to_checkpoint(&net).unwrap();
    c.metadata.remove("train.n");
    assert!(matches!(TrainingState::from_checkpoint(&c, "x").unwrap_err(), Error::Format { .. }));
    let mut c = t.training_state().unwrap().to_checkpoint(&net).unwrap();
    c.metadata.insert("train.optimizer".into(), "sgd lr=abc".into());
    assert!(matches!(TrainingState::from_checkpoint(&c, "x").unwrap_err(), Error::Format { .. }));
}
