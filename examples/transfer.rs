//! The whole transfer-learning story through the public API: pretrain on task A (which shape is
//! shown), swap the head, fine-tune on a small multi-label task B (which of 4 shapes are in a
//! scene) with the trunk frozen, and compare with training on B from scratch.
//!
//! cargo run --example transfer
use headswap::data::synthetic::{scenes_task_b, shapes_task_a};
use headswap::kernels::metrics::OrNa;
use headswap::nn::{Head, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};
use headswap::{Gpu, Result};

fn main() -> Result<()> {
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter_info().name);

    // Task A: plenty of data, 8 classes.
    let task_a = shapes_task_a(6000, 16, 1);
    let mut net = Network::new(&gpu, &[256, 128, 64], Head::classes(8), 42)?;
    let sgd = TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: 64, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, sgd).fit(&mut net, &task_a, 10)?;
    println!("task A: train accuracy {:.1}%", 100.0 * report.last().and_then(|e| e.train.score()).unwrap_or(0.0));

    // Head-swap: a fresh 4-label sigmoid head; the trunk stays on the GPU untouched.
    let swap = net.swap_head(Head::labels(4), 7)?;
    print!("{swap}");

    // Task B: only 60 labelled scenes. Train the new head, trunk frozen (its features are cached).
    let task_b = scenes_task_b(60, 16, 2);
    let test_b = scenes_task_b(1000, 16, 3);
    let adam = TrainConfig { optimizer: Optimizer::adam(3e-3), batch_size: 32, ..TrainConfig::default() };
    let mut trainer = Trainer::new(&gpu, adam.clone());
    let ft = trainer.fine_tune(&mut net, &task_b, Freeze::Trunk, 100)?;
    let transfer = trainer.evaluate(&net, &test_b)?;

    // The same network trained on task B alone.
    let mut scratch = Network::new(&gpu, &[256, 128, 64], Head::labels(4), 42)?;
    let mut trainer = Trainer::new(&gpu, adam);
    trainer.fit(&mut scratch, &task_b, 100)?;
    let alone = trainer.evaluate(&scratch, &test_b)?;

    println!("fine-tune: {} dispatches per step, cached trunk features: {}", ft.dispatches_per_step, ft.cached_features);
    println!("task B mean F1 with transfer: {:.3}", OrNa(transfer.score())); // n/a if no label could be scored
    println!("task B mean F1 from scratch:  {:.3}", OrNa(alone.score()));
    if let Some(labels) = transfer.labels {
        println!("per-label F1 with transfer: {:?}", labels.f1.iter().map(|&f| format!("{:.2}", OrNa(f))).collect::<Vec<_>>());
    }
    Ok(())
}
