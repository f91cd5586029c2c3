//! Where a training step's time goes: the whole step next to the sum of its kernels' times.
//!
//! [`profile_step`] builds the step a [`Trainer`] runs through the trainer's own setup (its
//! configuration checks, training split, learning-rate multipliers per freeze policy, buffers,
//! optimizer and plan, cached trunk features when the trainer would use them) and times it two
//! ways:
//!
//! * **the step**: every dispatch recorded into one compute pass of one encoder, submitted once,
//!   then a wait — the wall time of that, median over the repetitions. (Also, the same steps
//!   submitted back to back with one wait at the end, per step: what a trainer that does not wait
//!   between steps pays.)
//! * **each kernel on its own**: with `Features::TIMESTAMP_QUERY`, every dispatch in its own
//!   compute pass with `timestamp_writes` at its start and end, all of a step in one submission;
//!   without it, CPU wall time around a submission of that one dispatch and a wait, minus the
//!   median of an empty submission and wait measured in the same run. Median per dispatch over
//!   the repetitions.
//!
//! Each repetition times the step and then its dispatches one by one, so both see the same
//! conditions on a machine whose load changes.
//!
//! `step − Σ kernels` is the overhead the step pays beyond its kernels (recording, submission,
//! the driver's per-dispatch cost where the timestamps do not see it). On lavapipe the timestamps
//! themselves include lavapipe's per-dispatch cost of waking its worker threads (tens of µs), so
//! the kernel sum there is an upper bound on the pure compute time.
//!
//! Profiling runs real training steps: the network's trainable parameters change.

use super::{Freeze, RunSetup, Trainer, check_fits, training_split};
use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::{Dispatch, Recorder, Timestamps};
use crate::nn::Network;
use std::collections::HashMap;
use std::time::Instant;

/// How the kernels of a step are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Timestamp queries when the device has them, else CPU wall time.
    Auto,
    /// GPU timestamps written at the start and end of a compute pass holding one dispatch.
    Timestamps,
    /// CPU wall time around submit + wait of one dispatch, minus an empty submit + wait.
    CpuWall,
}

impl Timing {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Timing::Auto => "auto",
            Timing::Timestamps => "timestamps",
            Timing::CpuWall => "cpu-wall",
        }
    }
}

/// What [`profile_step`] measures.
#[derive(Debug, Clone, Copy)]
pub struct ProfileOptions {
    /// Timed repetitions (after two warm-up steps). At least 1.
    pub reps: usize,
    pub timing: Timing,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions { reps: 10, timing: Timing::Auto }
    }
}

/// One dispatch of the step, timed alone.
#[derive(Debug, Clone)]
pub struct DispatchTime {
    /// Position in recording order (gathers first, optimizer last).
    pub index: usize,
    /// Kernel entry point.
    pub kernel: &'static str,
    /// Entry point and workgroup counts, to tell launches of one kernel apart.
    pub detail: String,
    /// Median over the repetitions, milliseconds.
    pub ms: f64,
}

/// All launches of one kernel entry point in a step.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    /// Launches per step.
    pub calls: usize,
    /// Sum of those launches' median times, milliseconds.
    pub total_ms: f64,
}

/// A training step's time next to the sum of its kernels' times.
#[derive(Debug, Clone)]
pub struct StepProfile {
    /// The timing method actually used for the kernels ([`Timing::Timestamps`] or
    /// [`Timing::CpuWall`]).
    pub timing: Timing,
    /// How the kernels were timed, in words (with the empty-submission baseline for CPU timing).
    pub timing_note: String,
    pub reps: usize,
    /// Rows per step.
    pub batch: usize,
    /// Dispatches recorded per step.
    pub dispatches: usize,
    /// Median wall time of one step: one pass, one submission, wait. Milliseconds.
    pub step_ms: f64,
    /// Wall time of `reps` steps submitted back to back with one wait, per step. Milliseconds.
    pub pipelined_step_ms: f64,
    /// Sum over the step's dispatches of each one's median time alone. Milliseconds.
    pub kernel_sum_ms: f64,
    /// Every dispatch, in recording order.
    pub per_dispatch: Vec<DispatchTime>,
    /// Per kernel entry point, the most expensive first.
    pub kernels: Vec<KernelTime>,
}

impl StepProfile {
    /// `step_ms / kernel_sum_ms`: 1.0 means no overhead beyond the kernels.
    pub fn overhead_ratio(&self) -> f64 {
        self.step_ms / self.kernel_sum_ms.max(1e-12)
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Profiles one training step of `net` on `data` under `freeze`, as `trainer` would run it
/// (its batch size, optimizer, loss settings and `cache_features`). The first full batch of a
/// seeded shuffle is used; each repetition steps to the next batch. See the module docs.
pub fn profile_step(trainer: &Trainer, net: &Network, data: &Dataset, freeze: Freeze, opts: ProfileOptions) -> Result<StepProfile> {
    let cfg = &trainer.config;
    cfg.validate()?;
    check_fits(net, data)?;
    let gpu = trainer.gpu.clone();
    let reps = opts.reps.max(1);
    let lr_mults = trainer.layer_lr_mults(net, data, freeze)?;

    // The trainer's own setup (its training split, buffers, optimizer and plan); the step is
    // the plan of a full batch, over the first epoch's shuffle.
    let (train_data, _) = training_split(cfg, data);
    let setup = RunSetup::new(&gpu, net, &train_data, cfg, &lr_mults, None, (0, 1))?;
    let (train, sb, plan) = (&setup.train, &setup.sb, &setup.full);
    let b = sb.b;
    sb.acc.reset(&gpu)?;
    let order: Vec<u32> = if cfg.shuffle { crate::rng::Rng::new(cfg.seed).permutation(train.n) } else { (0..train.n as u32).collect() };
    sb.indices.write_u32(&gpu, &order)?;
    let full_batches = (train.n / b).max(1);
    let lr = cfg.optimizer.lr();
    let mut step_no: u32 = 0;
    // Points the step at the next batch and advances the optimizer's step count, as the trainer
    // does before recording each step.
    let mut prepare = |rep: usize| -> Result<()> {
        step_no += 1;
        plan.set_step(&gpu, (rep % full_batches) * b, lr, step_no)
    };
    let list: Vec<&Dispatch> = plan.dispatches().collect();
    // The step as the trainer records it: every dispatch in one compute pass, one submission.
    let submit_step = |label: &str| -> usize {
        let mut rec = Recorder::new(&gpu, label);
        let recorded = rec.pass("profile_step", list.iter().copied());
        rec.submit();
        recorded
    };

    // Warm-up.
    let mut dispatches = 0;
    for rep in 0..2 {
        prepare(rep)?;
        dispatches = submit_step("profile_warmup");
        gpu.sync()?;
    }

    let use_timestamps = match opts.timing {
        Timing::Auto => gpu.has_timestamps(),
        Timing::Timestamps => true,
        Timing::CpuWall => false,
    };
    let stamps = if use_timestamps { Some(Timestamps::new(&gpu, list.len())?) } else { None };
    // CPU timing subtracts what an empty submission and wait costs.
    let empty_ms = if use_timestamps {
        0.0
    } else {
        let mut empty = Vec::with_capacity(reps);
        for _ in 0..reps.max(5) {
            let t0 = Instant::now();
            let mut rec = Recorder::new(&gpu, "profile_empty");
            rec.pass("empty", []);
            rec.submit();
            gpu.sync()?;
            empty.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        median(&mut empty)
    };

    // Each repetition times the whole step and then each of its dispatches alone, so that both
    // see the same conditions on a machine whose load changes.
    let mut steps = Vec::with_capacity(reps);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); list.len()];
    for rep in 0..reps {
        // The whole step: one pass, one submission, wait.
        let t0 = Instant::now();
        prepare(rep)?;
        submit_step("profile_step");
        gpu.sync()?;
        steps.push(t0.elapsed().as_secs_f64() * 1e3);

        // Each dispatch alone (the same batch again).
        plan.set_offset(&gpu, (rep % full_batches) * b)?;
        match &stamps {
            Some(stamps) => {
                // every dispatch in its own timed pass, all of the step in one submission
                let mut rec = Recorder::new(&gpu, "profile_kernels");
                for (i, d) in list.iter().enumerate() {
                    rec.timed_pass(d, stamps, i as u32);
                }
                rec.resolve(stamps);
                rec.submit();
                for (s, ms) in samples.iter_mut().zip(stamps.pass_ms(&gpu)?) {
                    s.push(ms);
                }
            }
            None => {
                for (i, d) in list.iter().enumerate() {
                    let t0 = Instant::now();
                    let mut rec = Recorder::new(&gpu, d.name());
                    rec.pass(d.name(), [*d]);
                    rec.submit();
                    gpu.sync()?;
                    samples[i].push((t0.elapsed().as_secs_f64() * 1e3 - empty_ms).max(0.0));
                }
            }
        }
    }
    let step_ms = median(&mut steps);

    // The same steps back to back, one wait at the end.
    let t0 = Instant::now();
    for rep in 0..reps {
        prepare(rep)?;
        submit_step("profile_step");
    }
    gpu.sync()?;
    let pipelined_step_ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;

    let (timing, timing_note) = if use_timestamps {
        let period_ns = Timestamps::period_ns(&gpu);
        (Timing::Timestamps, format!("GPU timestamps at the start and end of one compute pass per dispatch (period {period_ns} ns)"))
    } else {
        (Timing::CpuWall, format!("CPU wall time of submit + wait per dispatch, minus an empty submit + wait ({:.1} µs)", empty_ms * 1e3))
    };
    gpu.check("profile_step")?;

    let per_dispatch: Vec<DispatchTime> = list
        .iter()
        .zip(samples.iter_mut())
        .enumerate()
        .map(|(index, (d, s))| DispatchTime { index, kernel: d.name(), detail: format!("{d:?}"), ms: median(s) })
        .collect();
    let kernel_sum_ms = per_dispatch.iter().map(|d| d.ms).sum();
    let mut by_kernel: HashMap<&'static str, (usize, f64)> = HashMap::new();
    for d in &per_dispatch {
        let e = by_kernel.entry(d.kernel).or_default();
        e.0 += 1;
        e.1 += d.ms;
    }
    let mut kernels: Vec<KernelTime> =
        by_kernel.into_iter().map(|(kernel, (calls, total_ms))| KernelTime { kernel, calls, total_ms }).collect();
    kernels.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.kernel.cmp(b.kernel)));
    Ok(StepProfile { timing, timing_note, reps, batch: b, dispatches, step_ms, pipelined_step_ms, kernel_sum_ms, per_dispatch, kernels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;
    use crate::gpu::Gpu;
    use crate::nn::Head;
    use crate::train::TrainConfig;

    fn data(n: usize, d: usize, classes: usize) -> Dataset {
        let mut rng = crate::rng::Rng::new(3);
        Dataset {
            x: (0..n * d).map(|_| rng.uniform(0.0, 1.0) as f32).collect(),
            n,
            d,
            input_shape: vec![d],
            targets: Targets::Classes { y: (0..n).map(|i| (i % classes) as u32).collect(), num_classes: classes },
            label_names: (0..classes).map(|i| format!("c{i}")).collect(),
        }
    }

    #[test]
    fn every_dispatch_is_timed_and_the_trunk_cache_shortens_the_step() {
        let gpu = Gpu::new().expect("the test suite needs a GPU adapter");
        let data = data(40, 8, 3);
        let net = Network::new(&gpu, &[8, 16, 12], Head::classes(3), 1).unwrap();
        let cfg = TrainConfig { batch_size: 16, ..TrainConfig::default() };
        let trainer = Trainer::new(&gpu, cfg.clone());
        let mut timings = vec![Timing::CpuWall];
        if gpu.has_timestamps() {
            timings.push(Timing::Timestamps);
        }
        for timing in timings {
            let p = profile_step(&trainer, &net, &data, Freeze::All, ProfileOptions { reps: 2, timing }).unwrap();
            assert_eq!(p.timing, timing);
            assert_eq!(p.batch, 16);
            assert_eq!(p.per_dispatch.len(), p.dispatches, "{timing:?}: one time per recorded dispatch");
            assert_eq!(p.kernels.iter().map(|k| k.calls).sum::<usize>(), p.dispatches);
            let sum: f64 = p.kernels.iter().map(|k| k.total_ms).sum();
            assert!((sum - p.kernel_sum_ms).abs() <= 1e-9 * sum.max(1.0));
            assert!(p.step_ms > 0.0 && p.pipelined_step_ms > 0.0 && p.kernel_sum_ms.is_finite());
            assert!(p.kernels.windows(2).all(|w| w[0].total_ms >= w[1].total_ms));
            assert!(p.kernels.iter().any(|k| k.kernel.starts_with("matmul")), "{:?}", p.kernels);
        }
        // Head only, with cached trunk features: no trunk layers in the step.
        let all = profile_step(&trainer, &net, &data, Freeze::All, ProfileOptions { reps: 1, timing: Timing::CpuWall }).unwrap();
        let head = profile_step(&trainer, &net, &data, Freeze::Trunk, ProfileOptions { reps: 1, timing: Timing::CpuWall }).unwrap();
        assert!(head.dispatches < all.dispatches, "head-only {} vs all {}", head.dispatches, all.dispatches);
    }

    /// With a validation split the trainer steps over the training part only, so its full batch
    /// can be smaller than the configured one; the profile times that step, not one over all the
    /// data, under every freeze policy (LastK included, where the two once disagreed).
    #[test]
    fn the_profiled_step_is_the_step_the_trainer_runs() {
        let gpu = Gpu::new().expect("the test suite needs a GPU adapter");
        let data = data(20, 8, 3);
        let cfg = TrainConfig { batch_size: 16, validation_fraction: 0.5, ..TrainConfig::default() };
        for freeze in [Freeze::All, Freeze::Trunk, Freeze::LastK(1)] {
            let mut net = Network::new(&gpu, &[8, 16, 12], Head::classes(3), 1).unwrap();
            let p =
                profile_step(&Trainer::new(&gpu, cfg.clone()), &net, &data, freeze, ProfileOptions { reps: 1, timing: Timing::CpuWall })
                    .unwrap();
            let report = Trainer::new(&gpu, cfg.clone()).fine_tune(&mut net, &data, freeze, 1).unwrap();
            assert_eq!(p.batch, 10, "{freeze:?}: the training split's 10 rows make the full batch");
            assert_eq!(p.dispatches as f64, report.dispatches_per_step, "{freeze:?}: the trainer's step has as many dispatches");
            assert_eq!(p.per_dispatch.len(), p.dispatches);
        }
    }

    #[test]
    fn a_configuration_the_trainer_refuses_is_refused() {
        let gpu = Gpu::new().expect("the test suite needs a GPU adapter");
        let net = Network::new(&gpu, &[8, 16, 12], Head::classes(3), 1).unwrap();
        let cfg = TrainConfig { threshold: 1.5, ..TrainConfig::default() };
        let trainer = Trainer::new(&gpu, cfg);
        let err = profile_step(&trainer, &net, &data(20, 8, 3), Freeze::All, ProfileOptions { reps: 1, timing: Timing::CpuWall });
        assert!(matches!(err, Err(crate::Error::InvalidInput(_))), "{err:?}");
    }
}
