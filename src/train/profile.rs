//! Where a training step's time goes: the whole step next to the sum of its kernels' times.
//!
//! [`profile_step`] builds the same step a [`Trainer`] runs (the same `Plan`, the same optimizer
//! dispatches, cached trunk features when the trainer would use them) and times it two ways:
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

use super::optimizer::Optim;
use super::plan::{Plan, PlanInputs};
use super::{DeviceData, Freeze, StepBuffers, Trainer, check_fits};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
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
    check_fits(net, data)?;
    let cfg = &trainer.config;
    if cfg.batch_size == 0 {
        return Err(Error::invalid("batch size must be at least 1"));
    }
    let gpu = trainer.gpu.clone();
    let reps = opts.reps.max(1);
    let lr_mults = trainer.layer_lr_mults(net, data, freeze)?;

    // The same setup as Trainer::run, without validation.
    let train = DeviceData::upload(&gpu, data)?;
    let sb = StepBuffers::new(&gpu, net, &train, cfg, &lr_mults)?;
    let b = sb.b;
    sb.acc.reset(&gpu)?;
    sb.indices.write_u32(&gpu, &crate::rng::Rng::new(cfg.seed).permutation(train.n))?;
    let optim = Optim::new(&gpu, net, &sb.grads, cfg.optimizer, false)?;
    let inputs = PlanInputs { optimizer: Some(&optim), ..sb.inputs(net, &train, cfg) };
    let plan = Plan::build(&gpu, &inputs, b)?;
    let full_batches = (train.n / b).max(1);
    let lr = cfg.optimizer.lr();
    let mut step_no: u32 = 0;
    // Points the step at the next batch and advances the optimizer's step count, as the trainer
    // does before recording each step.
    let mut prepare = |rep: usize| -> Result<()> {
        step_no += 1;
        plan.set_step(&gpu, (rep % full_batches) * b, lr, step_no)
    };
    let list: Vec<&Dispatch> = plan.dispatch_list();
    let record_step = |enc: &mut wgpu::CommandEncoder| -> usize {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile_step"), timestamp_writes: None });
        list.iter().map(|d| d.encode(&gpu, &mut pass)).sum()
    };

    // Warm-up.
    let mut dispatches = 0;
    for rep in 0..2 {
        prepare(rep)?;
        let mut enc = encoder(&gpu, "profile_warmup");
        dispatches = record_step(&mut enc);
        gpu.submit(enc);
        gpu.sync()?;
    }

    let use_timestamps = match opts.timing {
        Timing::Auto => gpu.has(wgpu::Features::TIMESTAMP_QUERY),
        Timing::Timestamps => {
            if !gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
                return Err(Error::invalid("timestamp timing asked for, but the device has no TIMESTAMP_QUERY"));
            }
            true
        }
        Timing::CpuWall => false,
    };
    let count = 2 * list.len() as u32;
    if use_timestamps && count > wgpu::QUERY_SET_MAX_QUERIES {
        return Err(Error::invalid(format!(
            "a step of {} dispatches needs more than {} timestamp queries",
            list.len(),
            wgpu::QUERY_SET_MAX_QUERIES
        )));
    }
    let stamps = if use_timestamps { Some(Timestamps::new(&gpu, count)) } else { None };
    let period_ns = gpu.queue().get_timestamp_period() as f64;
    // CPU timing subtracts what an empty submission and wait costs.
    let empty_ms = if use_timestamps {
        0.0
    } else {
        let mut empty = Vec::with_capacity(reps);
        for _ in 0..reps.max(5) {
            let t0 = Instant::now();
            let mut enc = encoder(&gpu, "profile_empty");
            drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("empty"), timestamp_writes: None }));
            gpu.submit(enc);
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
        let mut enc = encoder(&gpu, "profile_step");
        record_step(&mut enc);
        gpu.submit(enc);
        gpu.sync()?;
        steps.push(t0.elapsed().as_secs_f64() * 1e3);

        // Each dispatch alone (the same batch again).
        plan.set_offset(&gpu, (rep % full_batches) * b)?;
        match &stamps {
            Some(stamps) => {
                let mut enc = encoder(&gpu, "profile_kernels");
                for (i, d) in list.iter().enumerate() {
                    let writes = wgpu::ComputePassTimestampWrites {
                        query_set: &stamps.set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    };
                    let mut pass =
                        enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(d.name()), timestamp_writes: Some(writes) });
                    d.encode(&gpu, &mut pass);
                }
                stamps.resolve(&mut enc);
                gpu.submit(enc);
                let ticks = stamps.read(&gpu)?;
                for (i, s) in samples.iter_mut().enumerate() {
                    let (begin, end) = (ticks[2 * i], ticks[2 * i + 1]);
                    s.push(end.saturating_sub(begin) as f64 * period_ns * 1e-6);
                }
            }
            None => {
                for (i, d) in list.iter().enumerate() {
                    let t0 = Instant::now();
                    let mut enc = encoder(&gpu, d.name());
                    {
                        let mut pass =
                            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(d.name()), timestamp_writes: None });
                        d.encode(&gpu, &mut pass);
                    }
                    gpu.submit(enc);
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
        let mut enc = encoder(&gpu, "profile_step");
        record_step(&mut enc);
        gpu.submit(enc);
    }
    gpu.sync()?;
    let pipelined_step_ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;

    let (timing, timing_note) = if use_timestamps {
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

fn encoder(gpu: &Gpu, label: &str) -> wgpu::CommandEncoder {
    gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
}

/// A timestamp query set with its resolve and read-back buffers.
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

impl Timestamps {
    fn new(gpu: &Gpu, count: u32) -> Timestamps {
        let bytes = (count as u64 * 8).next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT);
        let set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile_timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let buffer = |label, usage| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let resolve = buffer("profile_resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer("profile_readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Timestamps { set, resolve, readback, count }
    }

    fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        enc.resolve_query_set(&self.set, 0..self.count, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, self.count as u64 * 8);
    }

    /// Waits for the submitted work and reads the ticks.
    fn read(&self, gpu: &Gpu) -> Result<Vec<u64>> {
        let size = self.count as u64 * 8;
        let slice = self.readback.slice(0..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync()?;
        rx.recv()
            .map_err(|_| Error::Device("timestamp map callback never ran".into()))?
            .map_err(|e| Error::Device(format!("mapping the timestamp buffer failed: {e}")))?;
        let ticks = {
            let view = slice.get_mapped_range().map_err(|e| Error::Device(format!("{e}")))?;
            view.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect::<Vec<u64>>()
        };
        self.readback.unmap();
        Ok(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;
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
        if gpu.has(wgpu::Features::TIMESTAMP_QUERY) {
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
}
