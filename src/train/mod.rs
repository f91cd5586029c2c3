//! Training passes: pretrain, fine-tune under a freeze policy, evaluate.
//!
//! A step is recorded into one compute pass: gather → forward → loss → metrics → backward →
//! optimizer; [`TrainConfig::steps_per_submission`] steps share one command encoder and one queue
//! submission. Pipelines and bind groups are built once per run (see [`plan`]); per step only the
//! batch offset, the learning rate and the step number change, staged for all the submission's
//! steps in one upload and copied into the launches' uniform buffers in front of each step's
//! pass. Loss and metrics accumulate in GPU buffers and are read back once per epoch.

pub mod collective;
mod config;
mod device_data;
mod eval;
pub mod groups;
mod optimizer;
pub mod plan;
pub mod profile;
mod report;
pub mod schedule;
mod state;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::pipelines::StepUniforms;
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Recorder, Tensor};
pub use crate::kernels::optim::Optimizer;
use crate::nn::{HeadKind, Network};
use crate::rng::Rng;
pub use collective::{Collective, ThreadGroup};
pub use config::{Augment, BatchNormMode, Freeze, HeadWeighting, Precision, TrainConfig};
pub(crate) use config::{check_epochs, validate_bce};
pub use device_data::DeviceData;
use eval::{Evaluator, frozen_features, read_metrics};
pub use eval::{
    LayerGrads, gradients, gradients_weighted, gradients_with, predict, predict_features, predict_heads, predict_heads_logits,
    predict_logits,
};
pub use groups::ParamGroups;
use optimizer::Grads;
use optimizer::Optim;
pub use plan::BceSettings;
use plan::{Accumulators, LogVars, Mode, Plan, PlanInputs, Rows, Scratch};
pub use report::{EpochReport, FitReport, HeadMetrics, Metrics};
pub use schedule::Schedule;
pub use state::{
    RunSettings, TRAIN_BATCH_KEY, TRAIN_LOWEST_KEY, TRAIN_LR_MULTS_KEY, TRAIN_N_KEY, TRAIN_OPTIMIZER_KEY, TRAIN_SCHEDULE_KEY,
    TRAIN_SEED_KEY, TRAIN_TRUNK_LR_KEY, TrainingState,
};
use std::time::Instant;

/// Runs training passes over networks.
pub struct Trainer {
    gpu: Gpu,
    pub config: TrainConfig,
    rng: Rng,
    last_state: Option<TrainingState>,
    progress: Option<ProgressFn>,
    /// The other replicas of a data-parallel run, `None` alone.
    replicas: Option<Box<dyn Collective>>,
}

type ProgressFn = Box<dyn FnMut(Progress<'_>)>;

/// What a progress callback hears: every recorded step (no GPU readback involved) and every
/// finished epoch.
#[derive(Debug)]
pub enum Progress<'a> {
    Step { epoch: usize, step: usize, steps_per_epoch: usize, epochs: usize },
    Epoch(&'a EpochReport),
}

impl Trainer {
    pub fn new(gpu: &Gpu, config: TrainConfig) -> Trainer {
        let rng = Rng::new(config.seed);
        Trainer { gpu: gpu.clone(), config, rng, last_state: None, progress: None, replicas: None }
    }

    /// Makes this trainer one replica of a data-parallel run (see [`collective`]): every replica
    /// runs the same calls on the same data with the same configuration; `batch_size` stays the
    /// global batch, each replica computes the gradients of its share of it, the trainable
    /// ranges' gradients are averaged over the replicas at the "gradients ready" point, and every
    /// replica applies the same update. The parameters start as replica 0's; loss and metrics are
    /// combined once per epoch. Frozen parameters are never exchanged.
    ///
    /// The result equals one replica training with the whole batch up to rounding, under every
    /// loss and reduction (each replica's gradient is weighted by its share of the batch's rows,
    /// or of its known labels under `MeanLabelled`). One step per submission: the exchange reads
    /// the gradients back every step.
    ///
    /// ```no_run
    /// use headswap::{Gpu, nn::{Head, Network}, train::{ThreadGroup, TrainConfig, Trainer}};
    /// # let data = headswap::data::synthetic::scenes_task_b(64, 16, 2);
    /// // two replicas in one process, one thread each (an MPI run uses headswap::distributed::Mpi)
    /// let group = ThreadGroup::new(2)?;
    /// std::thread::scope(|s| {
    ///     for replica in group {
    ///         let data = &data;
    ///         s.spawn(move || -> headswap::Result<()> {
    ///             let gpu = Gpu::new()?;
    ///             let mut net = Network::new(&gpu, &[256, 64], Head::labels(4), 1)?;
    ///             Trainer::new(&gpu, TrainConfig::default()).with_replicas(replica).fit(&mut net, data, 2)?;
    ///             Ok(())
    ///         });
    ///     }
    /// });
    /// # Ok::<(), headswap::Error>(())
    /// ```
    pub fn with_replicas(mut self, replicas: impl Collective + 'static) -> Trainer {
        self.replicas = Some(Box::new(replicas));
        self
    }

    /// Calls `f` after every recorded step and every epoch (progress bars, logging).
    pub fn with_progress(mut self, f: impl FnMut(Progress<'_>) + 'static) -> Trainer {
        self.progress = Some(Box::new(f));
        self
    }

    /// The shuffle generator's state (saved with training checkpoints so a resumed run
    /// continues the same shuffles).
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.state()
    }
    /// Restores [`Trainer::rng_state`].
    pub fn set_rng_state(&mut self, s: [u64; 4]) {
        self.rng = Rng::from_state(s);
    }

    /// Trains every layer (pretraining, or training from scratch).
    pub fn fit(&mut self, net: &mut Network, data: &Dataset, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        let every = ParamGroups::new().train("*", 1.0).resolve(net)?;
        self.run(net, data, every, epochs, None)
    }

    /// Fine-tunes under `freeze`. Frozen layers stay resident and untouched: no gradients, no
    /// optimizer state, no backward work below the lowest trainable layer.
    pub fn fine_tune(&mut self, net: &mut Network, data: &Dataset, freeze: Freeze, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        self.fine_tune_phase(net, data, freeze, epochs)
    }

    /// [`Trainer::fine_tune`] allowing 0 epochs: one phase of the recipe may be empty.
    fn fine_tune_phase(&mut self, net: &mut Network, data: &Dataset, freeze: Freeze, epochs: usize) -> Result<FitReport> {
        // Freeze::Auto reads validation_fraction before the run validates the configuration
        self.config.validate()?;
        let mults = self.layer_lr_mults(net, data, freeze)?;
        self.run(net, data, mults, epochs, None)
    }

    /// Fine-tunes the layers `groups` selects, each at its group's learning-rate multiplier
    /// (PyTorch's param groups, fastai's discriminative rates); every other layer stays frozen
    /// and resident, with no gradient or optimizer memory. Backward stops below the lowest
    /// trainable layer and only passes gradients through frozen layers above it; the outputs of
    /// the frozen layers below it are computed once and cached (with `cache_features`).
    pub fn fine_tune_groups(&mut self, net: &mut Network, data: &Dataset, groups: &ParamGroups, epochs: usize) -> Result<FitReport> {
        check_epochs(epochs)?;
        self.config.validate()?;
        let mults = groups.resolve(net)?;
        self.run(net, data, mults, epochs, None)
    }

    /// Per layer, the learning-rate multiplier `freeze` trains it at, `None` where frozen: the
    /// head at the base rate, trainable trunk layers at `trunk_lr_mult`.
    pub(crate) fn layer_lr_mults(&self, net: &Network, data: &Dataset, freeze: Freeze) -> Result<Vec<Option<f32>>> {
        let lowest = self.lowest_trainable(net, data, freeze)?;
        ParamGroups::of_freeze(net, lowest, self.config.trunk_lr_mult).resolve(net)
    }

    /// fastai's `fine_tune` recipe in one call: `head_epochs` with the trunk frozen, then
    /// `full_epochs` with everything trainable at half the learning rate, the trunk at
    /// `trunk_lr_mult` of that (0.1 if it is left at 1).
    pub fn fine_tune_recipe(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        head_epochs: usize,
        full_epochs: usize,
    ) -> Result<(FitReport, FitReport)> {
        check_epochs(head_epochs.saturating_add(full_epochs))?;
        let first = self.fine_tune_phase(net, data, Freeze::Trunk, head_epochs)?;
        let saved = self.config.clone();
        self.config.optimizer = saved.optimizer.with_lr(saved.optimizer.lr() / 2.0);
        if self.config.trunk_lr_mult == 1.0 {
            self.config.trunk_lr_mult = 0.1;
        }
        let second = self.fine_tune_phase(net, data, Freeze::All, full_epochs);
        self.config = saved;
        Ok((first, second?))
    }

    /// The index of the lowest layer `freeze` trains.
    pub fn lowest_trainable(&self, net: &Network, data: &Dataset, freeze: Freeze) -> Result<usize> {
        let t = net.trunk.len();
        Ok(match freeze {
            Freeze::Trunk => t,
            Freeze::All => 0,
            Freeze::LastK(k) => {
                if k > t {
                    return Err(Error::invalid(format!("last:{k} asks for more trunk layers than the {t} there are")));
                }
                t - k
            }
            Freeze::Auto => {
                let n_train = ((1.0 - self.config.validation_fraction as f64) * data.n as f64) as usize;
                if n_train < self.config.auto_threshold { t } else { 0 }
            }
        })
    }

    /// Loss and metrics of `net` on `data` (no training).
    pub fn evaluate(&self, net: &Network, data: &Dataset) -> Result<Metrics> {
        self.config.validate()?;
        check_fits(net, data)?;
        let gpu = &self.gpu;
        let dev = DeviceData::upload(gpu, data)?;
        let bce = bce_tensors(gpu, &self.config.bce, net)?;
        let eval = Evaluator::new(gpu, net, &dev, &dev.x, 0, self.config.batch_size, &self.config, &bce)?;
        eval.run(gpu, net)
    }

    /// Continues a run from `state` (see [`Trainer::training_state`]) until `epochs` epochs in
    /// all: the same optimizer moments, step count, shuffle stream and trainable layers, so the
    /// result equals a run that never stopped. The trainer's own configuration is used; to
    /// continue with the saved hyper-parameters, build it from [`RunSettings::apply`] on
    /// `state.run`. Refuses `epochs` not beyond the epochs already done, and data of another
    /// size than the saved run's.
    pub fn resume(&mut self, net: &mut Network, data: &Dataset, state: &TrainingState, epochs: usize) -> Result<FitReport> {
        let named;
        let state = if state.optimizer_state.iter().any(|(n, _)| n.starts_with("state.")) {
            named = TrainingState { optimizer_state: state.named_optimizer_state(net, &self.config.optimizer)?, ..state.clone() };
            &named
        } else {
            state
        };
        if epochs <= state.epoch {
            return Err(Error::invalid(format!(
                "the saved run has done {} epoch(s) already; ask for more epochs in all (got {epochs})",
                state.epoch
            )));
        }
        if let Some(run) = &state.run
            && run.n != data.n
        {
            return Err(Error::invalid(format!(
                "the saved run trained on {} examples, this data has {}: resume it on the same data",
                run.n, data.n
            )));
        }
        if state.lr_mults.len() != net.layers().len() {
            return Err(Error::invalid(format!(
                "the saved run trained a network of {} layers, this one has {}",
                state.lr_mults.len(),
                net.layers().len()
            )));
        }
        self.rng = Rng::from_state(state.rng);
        self.run(net, data, state.lr_mults.clone(), epochs, Some(state))
    }

    /// The state at the end of the last run: what a training checkpoint holds besides the weights.
    pub fn training_state(&self) -> Option<&TrainingState> {
        self.last_state.as_ref()
    }

    fn run(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        lr_mults: Vec<Option<f32>>,
        epochs: usize,
        resume: Option<&TrainingState>,
    ) -> Result<FitReport> {
        let result = self.run_replica(net, data, lr_mults, epochs, resume);
        // a replica that stops must not leave the others waiting for its gradients
        if let (Err(e), Some(r)) = (&result, self.replicas.as_deref()) {
            r.fail(&e.to_string());
        }
        result
    }

    fn run_replica(
        &mut self,
        net: &mut Network,
        data: &Dataset,
        lr_mults: Vec<Option<f32>>,
        epochs: usize,
        resume: Option<&TrainingState>,
    ) -> Result<FitReport> {
        self.config.validate()?;
        check_fits(net, data)?;
        let lowest = lowest_of(&lr_mults)?;
        check_trunk_storage(net, lowest)?;
        let cfg = self.config.clone();
        let gpu = self.gpu.clone();
        let _span = tracing::info_span!("fit", lowest, epochs).entered();
        let started = Instant::now();

        let (train_data, val_data) = training_split(&cfg, data);
        let replicas = self.replicas.as_deref().filter(|r| r.size() > 1);
        if let Some(r) = replicas {
            if cfg.batch_size < r.size() {
                return Err(Error::invalid(format!(
                    "the batch of {} is smaller than the {} replicas: every replica needs a share of it",
                    cfg.batch_size,
                    r.size()
                )));
            }
            if cfg.head_weighting == HeadWeighting::Uncertainty && net.is_multi_head() {
                // each replica's ∂L/∂s_t = 1 − exp(−s_t)·w_t·L_t would count the 1 once per
                // replica, and the log-variances are not in the exchanged gradient range
                return Err(Error::invalid(
                    "learned uncertainty weighting (HeadWeighting::Uncertainty) is not supported in data-parallel training yet: train with fixed head weights, or on one process",
                ));
            }
            collective::broadcast_parameters(&gpu, net, r)?;
        }
        // a replica computes its share of each batch (all of it when it is alone)
        let (rank, size) = replicas.map_or((0, 1), |r| (r.rank(), r.size()));
        let k = cfg.accumulate_steps;
        if k > 1 && cfg.batch_size.min(train_data.n) < k * size {
            return Err(Error::invalid(format!(
                "the batch of {} is smaller than accumulate_steps {k} × {size} replica(s): every replica needs a share of every micro-batch",
                cfg.batch_size.min(train_data.n)
            )));
        }
        // f16 storage for what the run only reads: with the whole trunk frozen, its weights too
        // (the network keeps them in f16 afterwards, see TrainConfig::frozen_storage); a run
        // that fails to set up gets the f32 values back, untouched
        let f32_trunk = (cfg.frozen_storage == Precision::F16 && lowest >= net.trunk_layers().len()).then(|| net.trunk_params.clone());
        if f32_trunk.is_some() {
            net.set_trunk_storage(Precision::F16)?;
        }
        let setup = RunSetup::new(&gpu, net, &train_data, &cfg, &lr_mults, resume, (rank, size));
        if let (Err(_), Some(arena)) = (&setup, f32_trunk.clone()) {
            net.trunk_params = arena;
        }
        drop(f32_trunk);
        let setup = setup?;
        let (train, sb, optim) = (&setup.train, &setup.sb, &setup.optim);
        let StepBuffers { first, cached, b, .. } = *sb;
        let rem = train.n % b;
        let mut val = val_data.as_ref().map(|v| DeviceData::upload(&gpu, v)).transpose()?;
        let val_x = match (&val, cached) {
            (Some(v), true) => Some(frozen_features(&gpu, net, v, first, cfg.batch_size, cfg.frozen_storage)?),
            (Some(v), false) => Some(v.x.clone()),
            _ => None,
        };
        if let (Some(v), true) = (&mut val, cached) {
            v.x.release();
        }
        let evaluator = match (&val, &val_x) {
            (Some(v), Some(vx)) => Some(Evaluator::new(&gpu, net, v, vx, first, cfg.batch_size, &cfg, &sb.bce)?),
            _ => None,
        };
        // What this run allocated for itself, counted from its own tensors (a process-wide counter
        // would also see other work on the same device).
        let mut owned: Vec<&Tensor> = vec![&sb.indices];
        owned.extend(train.tensors());
        owned.extend(sb.train_x.tensors());
        owned.extend(sb.scratch.tensors());
        owned.extend(sb.grads.tensors());
        owned.extend(sb.acc.tensors());
        owned.extend(optim.tensors());
        if let Some(lv) = &sb.log_vars {
            owned.extend(lv.tensors());
        }
        if let Some(v) = &val {
            owned.extend(v.tensors());
        }
        if let Some(vx) = &val_x {
            owned.extend(vx.tensors());
        }
        if let Some(e) = &evaluator {
            owned.extend(e.tensors());
        }
        // gradient accumulation's running sum of the step's passes
        let grad_sum = if k > 1 { Some(optimizer::GradSum::new(&gpu, &sb.grads)?) } else { None };
        if let Some(g) = &grad_sum {
            owned.extend(g.tensors());
        }
        let after_pass = |i: usize, n: usize| grad_sum.as_ref().map_or(&[][..], |g| g.after_pass(i, n));
        let bytes_allocated = Tensor::total_allocation(&owned);

        let steps_per_epoch = train.n.div_ceil(b);
        let total_steps = steps_per_epoch * epochs;
        let mut reports = Vec::new();
        // Each run starts fresh optimizer state (as a new torch.optim optimizer would), so its
        // step count — SGD's first-step momentum rule, Adam's bias correction — starts at 1.
        let mut opt_step: u32 = resume.map_or(0, |r| r.step);
        let start_epoch = resume.map_or(0, |r| r.epoch);
        let mut best: Option<(f64, usize)> = None;
        let mut since_best = 0;
        let (mut step_dispatches, mut step_submits, mut counted_steps) = (0u64, 0u64, 0u64);
        let per_submission = if replicas.is_some() { 1 } else { cfg.steps_per_submission };
        let exchange = replicas.map(|_| collective::GradExchange::new(&gpu, net, &sb.grads, cfg.overlap_exchange)).transpose()?;
        // Training-mode BatchNorms update their running statistics every step: early stopping
        // keeps those of the best epoch with its weights.
        let bn_trains = sb.batch_stats.contains(&true);
        let best_running = match (cfg.early_stopping, bn_trains) {
            (Some(_), true) => Some(Tensor::alloc(&gpu, net.running.buf.shape(), DType::F32, "best_running_stats")?),
            _ => None,
        };
        let mut best_steps = 0u64;
        let mut all_steps = 0u64;
        // training-mode forwards: one per step, one per non-empty micro-batch accumulating
        let mut all_passes = 0u64;
        let mut uniforms = StepUniforms::default();
        for epoch in start_epoch..epochs {
            let _e = tracing::info_span!("epoch", epoch).entered();
            let t0 = Instant::now();
            let order: Vec<u32> = if cfg.shuffle { self.rng.permutation(train.n) } else { (0..train.n as u32).collect() };
            sb.indices.write_u32(&gpu, &order)?;
            sb.acc.reset(&gpu)?;
            let mut lr = cfg.optimizer.lr();
            // the rows of step `s`'s batch
            let batch_rows = |s: usize| if s == steps_per_epoch - 1 && rem > 0 { rem } else { b };
            let mut first_step = 0;
            while first_step < steps_per_epoch {
                // alone several steps per submission; data parallel one (`per_submission`)
                let steps = first_step..(first_step + per_submission).min(steps_per_epoch);
                uniforms.clear();
                // per step, this replica's passes: (offset in the batch, rows) of its share of each
                // micro-batch (the whole batch's share without accumulation); none where it has no share
                let mut step_passes = Vec::with_capacity(steps.len());
                for s in steps.clone() {
                    let global = epoch * steps_per_epoch + s;
                    lr = cfg.schedule.lr(cfg.optimizer.lr(), global, epoch, total_steps);
                    opt_step += 1;
                    let batch = &order[s * b..s * b + batch_rows(s)];
                    let passes = collective::passes(batch.len(), k, rank, size);
                    if passes.is_empty() {
                        // a replica without rows records no launches, but its update's uniforms;
                        // the offset only has to be valid
                        uniforms.begin_step();
                        setup.full.stage(&mut uniforms, 0, lr, opt_step)?;
                    }
                    for &(offset, rows) in &passes {
                        uniforms.begin_step();
                        let plan = setup.plan(rows)?;
                        plan.stage(&mut uniforms, s * b + offset, lr, opt_step)?;
                        if k > 1 || (replicas.is_some() && net.is_multi_head()) {
                            // each loss is a mean over its pass's examples (or known targets, per
                            // named head): scaled by the pass's share of the step's, the passes'
                            // and the replicas' sum is the batch's
                            let shares = if net.is_multi_head() {
                                collective::head_shares(net, &cfg.bce, &train_data, batch, offset, rows)?
                            } else {
                                vec![collective::share_weight(&cfg.bce, &train_data, batch, offset, rows)]
                            };
                            plan.stage_head_shares(&mut uniforms, s * b + offset, &shares)?;
                        }
                    }
                    all_passes += (0..k).filter(|&j| collective::share(batch.len(), j, k).1 > 0).count() as u64;
                    step_passes.push((s, passes));
                }
                uniforms.upload(&gpu);
                if let (Some(r), Some(exchange)) = (replicas, &exchange) {
                    // data parallel: this replica's share of the batch → gradients ready → the
                    // replicas' mean gradient → the same update everywhere
                    let (s, passes) = &step_passes[0];
                    let s = *s;
                    let update = passes.last().map_or(Ok(&setup.full), |&(_, rows)| setup.plan(rows))?;
                    let (mut recorded, submits) = if k == 1 {
                        let (offset, rows) = passes.first().copied().unwrap_or((0, 0));
                        // named heads weighed their losses by this replica's shares already
                        let weight = if net.is_multi_head() {
                            1.0
                        } else {
                            collective::share_weight(&cfg.bce, &train_data, &order[s * b..s * b + batch_rows(s)], offset, rows)
                        };
                        exchange.step(&gpu, update, &uniforms, &sb.grads, r, rows > 0, weight)?
                    } else {
                        // every pass summed into the gradients on the device, then one exchange
                        let mut rec = Recorder::new(&gpu, "train_gradients");
                        let mut recorded = 0;
                        for (i, &(_, rows)) in passes.iter().enumerate() {
                            uniforms.record(&mut rec, i);
                            let plan = setup.plan(rows)?;
                            recorded += rec.pass("train_pass", plan.gradient_dispatches().chain(after_pass(i, passes.len())));
                        }
                        if passes.is_empty() {
                            uniforms.record(&mut rec, 0);
                        }
                        (recorded, exchange.exchange_recorded(&gpu, rec, &sb.grads, r, !passes.is_empty())?)
                    };
                    let mut rec = Recorder::new(&gpu, "train_update");
                    recorded += rec.pass("train_update", update.update_dispatches());
                    rec.submit();
                    if batch_rows(s) == b {
                        step_dispatches += recorded as u64;
                        counted_steps += 1;
                    }
                    step_submits += submits + 1;
                } else {
                    // one encoder and one submission for these steps; each pass's uniform copies
                    // go in front of its own compute pass, the update after the step's last pass
                    let mut rec = Recorder::new(&gpu, "train_steps");
                    let mut u = 0;
                    for (s, passes) in &step_passes {
                        let mut recorded = 0;
                        for (i, &(_, rows)) in passes.iter().enumerate() {
                            uniforms.record(&mut rec, u);
                            u += 1;
                            let plan = setup.plan(rows)?;
                            let last = i + 1 == passes.len();
                            let update = plan.update_dispatches().filter(move |_| last);
                            recorded += rec.pass("train_step", plan.gradient_dispatches().chain(after_pass(i, passes.len())).chain(update));
                        }
                        if batch_rows(*s) == b {
                            step_dispatches += recorded as u64;
                            counted_steps += 1;
                        }
                    }
                    rec.submit();
                    step_submits += 1;
                }
                all_steps += steps.len() as u64;
                if let Some(p) = self.progress.as_mut() {
                    for s in steps.clone() {
                        p(Progress::Step { epoch, step: s, steps_per_epoch, epochs });
                    }
                }
                first_step = steps.end;
            }
            gpu.check("training step")?;
            let mut train_metrics = read_metrics(&gpu, &sb.acc, net, steps_per_epoch, replicas, k > 1)?;
            let mut validation = evaluator.as_ref().map(|e| e.run(&gpu, net)).transpose()?;
            if let Some(lv) = &sb.log_vars {
                // read with the epoch's metrics: the learned weights so far
                let s = lv.params.download(&gpu)?;
                for m in std::iter::once(&mut train_metrics).chain(validation.as_mut()) {
                    for (h, s) in m.heads.iter_mut().zip(&s) {
                        h.log_var = Some(*s as f64);
                    }
                }
            }
            let seconds = t0.elapsed().as_secs_f64();
            tracing::info!(epoch, loss = train_metrics.loss, score = train_metrics.score(), seconds, "epoch done");
            if let Some(v) = &validation {
                if !v.loss.is_finite() || !train_metrics.loss.is_finite() {
                    tracing::warn!("non-finite loss at epoch {epoch}");
                }
                if best.is_none_or(|(bl, _)| v.loss < bl) {
                    best = Some((v.loss, epoch));
                    since_best = 0;
                    if cfg.early_stopping.is_some() {
                        optim.backup(&gpu, false)?;
                        if let Some(b) = &best_running {
                            let mut rec = Recorder::new(&gpu, "best_running_stats");
                            rec.copy_all(&net.running.buf, b)?;
                            rec.submit();
                            best_steps = all_passes;
                        }
                    }
                } else {
                    since_best += 1;
                }
            }
            reports.push(EpochReport {
                epoch,
                lr,
                train: train_metrics,
                validation,
                seconds,
                samples_per_sec: train.n as f64 / seconds.max(1e-9),
            });
            if let (Some(p), Some(r)) = (self.progress.as_mut(), reports.last()) {
                p(Progress::Epoch(r));
            }
            if let Some(patience) = cfg.early_stopping
                && since_best >= patience
                && best.is_some()
            {
                tracing::info!(epoch, "early stopping");
                break;
            }
        }
        // training-mode steps behind the running statistics the network keeps
        let mut tracked_steps = all_passes;
        let best_epoch = match (cfg.early_stopping, best) {
            (Some(_), Some((_, e))) => {
                optim.backup(&gpu, true)?;
                if let Some(b) = &best_running {
                    let mut rec = Recorder::new(&gpu, "best_running_stats");
                    rec.copy_all(b, &net.running.buf)?;
                    rec.submit();
                    tracked_steps = best_steps;
                }
                Some(e)
            }
            _ => reports.last().map(|r| r.epoch),
        };
        // PyTorch's num_batches_tracked: one per training-mode forward
        for (count, _) in net.running.batches.iter_mut().zip(&sb.batch_stats).filter(|(_, t)| **t) {
            *count += tracked_steps;
        }
        if let Some(r) = replicas.filter(|_| bn_trains) {
            // each replica normalised its own share of the batches; like DDP's broadcast_buffers,
            // rank 0's running statistics are everyone's
            collective::broadcast_running_stats(&gpu, net, r)?;
        }
        gpu.sync()?;
        if let Some(lv) = &sb.log_vars {
            // the learned log-variances (those of the best epoch with early stopping) stay with
            // the network, which saves them
            let s = lv.params.download(&gpu)?;
            for (h, s) in net.heads.iter_mut().zip(s) {
                h.log_var = Some(s);
            }
        }
        record_data_layout(net, data);
        self.last_state = Some(TrainingState {
            epoch: reports.last().map_or(start_epoch, |r: &EpochReport| r.epoch + 1),
            step: opt_step,
            rng: self.rng.state(),
            lowest_trainable: lowest,
            optimizer_state: optim.named_state(&gpu, net, &sb.grads)?,
            lr_mults,
            run: Some(RunSettings::of(&cfg, data.n)),
        });
        Ok(FitReport {
            epochs: reports,
            best_epoch,
            lowest_trainable: lowest,
            cached_features: cached,
            frozen_storage: if cached { cfg.frozen_storage } else { Precision::F32 },
            frozen_weights: net.trunk_storage(),
            frozen_weights_bytes: net.trunk_param_bytes(),
            dispatches_per_step: step_dispatches as f64 / counted_steps.max(1) as f64,
            submissions_per_step: step_submits as f64 / all_steps.max(1) as f64,
            bytes_allocated,
            bytes_exchanged_per_step: exchange.as_ref().map_or(0, |e| 4 * e.len() as u64),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

pub(crate) fn check_fits(net: &Network, data: &Dataset) -> Result<()> {
    data.validate()?;
    if data.d != net.input_dim() {
        return Err(Error::shape(format!("the data has {} input features, the network takes {}", data.d, net.input_dim())));
    }
    if net.is_multi_head() {
        return check_head_targets(net, data);
    }
    match (&data.targets, net.head_kind) {
        (crate::data::Targets::Classes { num_classes, .. }, HeadKind::Classes) if *num_classes <= net.output_dim() => Ok(()),
        (crate::data::Targets::Classes { num_classes, .. }, HeadKind::Classes) => {
            Err(Error::shape(format!("the data has {num_classes} classes, the head has {} outputs", net.output_dim())))
        }
        (crate::data::Targets::Labels { k, .. }, HeadKind::Labels) if *k == net.output_dim() => Ok(()),
        (crate::data::Targets::Labels { k, .. }, HeadKind::Labels) => {
            Err(Error::shape(format!("the data has {k} labels, the head has {} outputs", net.output_dim())))
        }
        (crate::data::Targets::Classes { .. }, HeadKind::Labels) => Err(Error::invalid(
            "the data has one class per example but the head predicts independent labels (a softmax head, Head::classes, is needed)",
        )),
        (crate::data::Targets::Labels { .. }, HeadKind::Classes) => Err(Error::invalid(
            "the data has several labels per example but the head is a softmax classifier (a per-label sigmoid head, Head::labels, is needed)",
        )),
        (t, k) => Err(Error::invalid(format!("the data has {} targets, the network's one head is a {} head", t.kind_name(), k.name()))),
    }
}

/// Every named head of `net` has targets in `data` of its kind and width (extra targets are
/// ignored); the error names the head.
fn check_head_targets(net: &Network, data: &Dataset) -> Result<()> {
    use crate::data::Targets;
    if !matches!(data.targets, Targets::Heads(_)) {
        return Err(Error::invalid(format!(
            "the network has {} named heads but the data has one {} target per example (Targets::Heads is needed)",
            net.heads().len(),
            data.targets.kind_name()
        )));
    }
    for h in net.heads() {
        let t = data.targets.head(&h.name).ok_or_else(|| Error::invalid(format!("the data has no targets for head {:?}", h.name)))?;
        let fits = match (t, h.kind) {
            (Targets::Classes { num_classes, .. }, HeadKind::Classes) => *num_classes <= h.outputs,
            (Targets::Labels { k, .. }, HeadKind::Labels) | (Targets::Regression { k, .. }, HeadKind::Regression(_)) => *k == h.outputs,
            _ => {
                return Err(Error::invalid(format!("head {:?} is a {} head but its targets are {}", h.name, h.kind.name(), t.kind_name())));
            }
        };
        if !fits {
            return Err(Error::shape(format!(
                "head {:?} has {} outputs but its targets have {} {}",
                h.name,
                h.outputs,
                t.num_outputs(),
                if h.kind == HeadKind::Classes { "classes" } else { "columns" }
            )));
        }
    }
    Ok(())
}

/// The data a run trains on, and the held-out part it validates on (`validation_fraction` of it,
/// split with `seed`).
pub(crate) fn training_split(cfg: &TrainConfig, data: &Dataset) -> (Dataset, Option<Dataset>) {
    if cfg.validation_fraction > 0.0 {
        let (t, v) = data.split(cfg.validation_fraction, cfg.seed);
        (t, Some(v))
    } else {
        (data.clone(), None)
    }
}

/// A run's training step, set up one way for [`Trainer`] and for [`profile::profile_step`], which
/// must time the step the trainer runs: the training data on the device, the step's buffers, the
/// optimizer (its state restored from `resume`), and the plans of a full batch and of the last,
/// partial one.
pub(crate) struct RunSetup {
    pub train: DeviceData,
    pub sb: StepBuffers,
    pub optim: Optim,
    pub full: Plan,
    pub partial: Option<Plan>,
    /// With gradient accumulation, the plans of the other pass sizes ([`RunSetup::plan`]).
    pub extra: Vec<Plan>,
}

impl RunSetup {
    /// `train_data`: the run's training split ([`training_split`]); `lr_mults`: per layer, the
    /// learning-rate multiplier of a trainable layer, `None` if frozen.
    pub fn new(
        gpu: &Gpu,
        net: &Network,
        train_data: &Dataset,
        cfg: &TrainConfig,
        lr_mults: &[Option<f32>],
        resume: Option<&TrainingState>,
        replica: (usize, usize),
    ) -> Result<RunSetup> {
        let mut train = DeviceData::upload(gpu, train_data)?;
        let sb = StepBuffers::new(gpu, net, &train, cfg, lr_mults)?;
        if sb.cached {
            // the steps read the cached features: the raw inputs are not read again
            train.x.release();
        }
        let optim = Optim::new(gpu, net, &sb.grads, cfg.optimizer, cfg.early_stopping.is_some(), sb.log_vars.as_ref())?;
        if let Some(r) = resume {
            optim.restore_state(gpu, net, &sb.grads, &r.optimizer_state)?;
        }
        let inputs = PlanInputs { optimizer: Some(&optim), ..sb.inputs(net, &train, cfg) };
        // this replica's share of a full batch and of the last, partial one (all of them alone);
        // accumulating, of each micro-batch of them
        let (rank, size) = replica;
        let k = cfg.accumulate_steps;
        let rows = |n: usize| -> Vec<usize> { collective::passes(n, k, rank, size).into_iter().map(|p| p.1).collect() };
        let full_rows = rows(sb.b).into_iter().max().unwrap_or(0);
        let full = Plan::build(gpu, &inputs, full_rows.max(1))?;
        let mut others: Vec<usize> = rows(sb.b).into_iter().chain(rows(train.n % sb.b)).filter(|&r| r != full_rows).collect();
        others.sort_unstable();
        others.dedup();
        let (partial, extra) = if k == 1 {
            (others.first().map(|&r| Plan::build(gpu, &inputs, r)).transpose()?, Vec::new())
        } else {
            (None, others.into_iter().map(|r| Plan::build(gpu, &inputs, r)).collect::<Result<_>>()?)
        };
        Ok(RunSetup { train, sb, optim, full, partial, extra })
    }

    /// The plan of a pass over `rows` examples.
    pub fn plan(&self, rows: usize) -> Result<&Plan> {
        std::iter::once(&self.full)
            .chain(&self.partial)
            .chain(&self.extra)
            .find(|p| p.rows == rows)
            .ok_or_else(|| Error::invalid(format!("no step plan for a pass of {rows} rows")))
    }
}

/// The buffers a run's step plans read, built one way for [`Trainer`] and for
/// [`profile::profile_step`], which must time the step the trainer runs.
pub(crate) struct StepBuffers {
    /// The first layer a step computes: the trunk's depth when training on cached features.
    pub first: usize,
    pub cached: bool,
    /// The full batch (of one optimizer step).
    pub b: usize,
    pub mode: Mode,
    /// The step's inputs: the data, or the frozen trunk's features computed once.
    pub train_x: Rows,
    pub bce: (Option<Tensor>, Option<Tensor>),
    pub scratch: Scratch,
    pub grads: Grads,
    pub acc: Accumulators,
    /// The epoch's shuffled order, read by the gathers.
    pub indices: Tensor,
    /// Per layer: a BatchNorm in training mode (see [`BatchNormMode`]).
    pub batch_stats: Vec<bool>,
    /// The augmentation of the batch and the images' `[C, H, W]`.
    pub augment: Option<(Augment, [usize; 3])>,
    /// Uncertainty weighting's log-variances ([`HeadWeighting::Uncertainty`]).
    pub log_vars: Option<LogVars>,
}

impl StepBuffers {
    /// `lr_mults`: per layer, the learning-rate multiplier of a trainable layer, `None` if frozen.
    pub fn new(gpu: &Gpu, net: &Network, train: &DeviceData, cfg: &TrainConfig, lr_mults: &[Option<f32>]) -> Result<StepBuffers> {
        let lowest = lowest_of(lr_mults)?;
        // (also for step profiles, which set up a run without fitting)
        check_trunk_storage(net, lowest)?;
        // Every layer below the lowest trainable one is frozen and nothing flows back into it:
        // its outputs for the data set are computed once and stay resident for the whole run.
        // (With residual connections, only where no layer from `lowest` on reads an earlier output.)
        // Named heads each read the trunk's output: with the trunk frozen, a frozen head before the
        // lowest trainable one still runs on the same cached features, from the trunk's top on.
        let t = net.trunk.len();
        let cut = if net.is_cut(lowest) {
            lowest
        } else if net.is_multi_head() && lowest >= t && net.is_cut(t) {
            t
        } else {
            0
        };
        let cached = cfg.cache_features && lowest > 0 && cut > 0;
        let mut first = if cached { cut } else { 0 };
        // dropout right below the lowest trainable layer (a head's `Dropout, Linear`) draws its
        // masks every step: the cached features stop below it, and the step starts there
        while first > 0 && matches!(net.layers()[first - 1], crate::nn::LayerSpec::Dropout(_)) && net.is_cut(first - 1) {
            first -= 1;
        }
        let cached = cached && first > 0;
        let bce = bce_tensors(gpu, &cfg.bce, net)?;
        if cfg.frozen_storage == Precision::F16 && !cached && lowest < t {
            return Err(Error::invalid(
                "f16 storage applies to what the run only reads, the frozen trunk's cached features and, when the whole trunk is frozen, its weights, and this run has neither: it needs frozen layers below the lowest trainable one and cache_features on (the command line's --frozen-f16 without --no-cache or --augment), or the whole trunk frozen",
            ));
        }
        let b = cfg.batch_size.min(train.n);
        // a pass computes one micro-batch (the whole batch without accumulation)
        let micro = b.div_ceil(cfg.accumulate_steps.max(1));
        let train_x = if cached { frozen_features(gpu, net, train, first, micro, cfg.frozen_storage)? } else { train.x.clone() };
        let mode = Mode::Train { lowest };
        let batch_stats = cfg.batch_norm.batch_stats(&net.layers(), lr_mults);
        let augment = match cfg.augment {
            None => None,
            Some(_) if cached => {
                return Err(Error::invalid(
                    "augmentation changes the trunk's inputs every step, so its outputs cannot be computed once and cached: set cache_features = false (the command line's --no-cache; the frozen trunk then runs every step), or train part of the trunk",
                ));
            }
            Some(a) => Some((
                a,
                plan::image_input(net).ok_or_else(|| {
                    Error::invalid(format!(
                        "augmentation crops and flips images: the network's first layer ({}) does not read [C, H, W] images",
                        net.layers()[0].describe()
                    ))
                })?,
            )),
        };
        let scratch = Scratch::new(gpu, net, first, micro, mode, train, &batch_stats, augment.is_some())?;
        let grads = Grads::new(gpu, net, lr_mults)?;
        let acc = Accumulators::for_net(gpu, net)?;
        let indices = Tensor::alloc(gpu, &[train.n], DType::U32, "batch_indices")?;
        let log_vars = match cfg.head_weighting {
            HeadWeighting::Fixed => None,
            HeadWeighting::Uncertainty => Some(LogVars::new(gpu, net)?),
        };
        Ok(StepBuffers { first, cached, b, mode, train_x, bce, scratch, grads, acc, indices, batch_stats, augment, log_vars })
    }

    pub fn inputs<'a>(&'a self, net: &'a Network, train: &'a DeviceData, cfg: &'a TrainConfig) -> PlanInputs<'a> {
        PlanInputs {
            net,
            mode: self.mode,
            first: self.first,
            source_x: &self.train_x,
            source_y: &train.y,
            source_heads: &train.heads,
            indices: &self.indices,
            scratch: &self.scratch,
            grads: Some(&self.grads),
            acc: &self.acc,
            bce: &cfg.bce,
            bce_tensors: &self.bce,
            threshold: cfg.threshold,
            optimizer: None,
            seed: cfg.seed,
            augment: self.augment,
            log_vars: self.log_vars.as_ref(),
        }
    }
}

pub(crate) fn bce_tensors(gpu: &Gpu, bce: &BceSettings, net: &Network) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if net.is_multi_head() && (bce.pos_weight.is_some() || bce.label_weight.is_some()) {
        return Err(Error::invalid(
            "pos_weight and label_weight apply to a network's only head; a network of named heads weighs each head (Head::weight)",
        ));
    }
    let k = net.output_dim();
    let make = |v: &Option<Vec<f32>>, what: &str| -> Result<Option<Tensor>> {
        match v {
            Some(v) if net.head_kind == HeadKind::Labels => {
                if v.len() != k {
                    return Err(Error::shape(format!("{what} has {} values for {k} labels", v.len())));
                }
                Ok(Some(Tensor::from_slice(gpu, &[k], v)?))
            }
            _ => Ok(None),
        }
    };
    Ok((make(&bce.pos_weight, "pos_weight")?, make(&bce.label_weight, "label_weight")?))
}

/// Records on `net` what the data it was trained on says about its inputs and outputs, so that a
/// model saved from the library keeps them: the class or label names (where the data names every
/// output) and the shape of one example (kept where the network already records an image layout
/// of that shape, which says more).
fn record_data_layout(net: &mut Network, data: &Dataset) {
    if let crate::data::Targets::Heads(targets) = &data.targets {
        for h in net.heads.iter_mut() {
            if let Some(t) = targets.iter().find(|t| t.name == h.name).filter(|t| t.label_names.len() == h.outputs) {
                h.label_names = Some(t.label_names.clone());
            }
        }
    }
    if data.label_names.len() == net.output_dim() {
        // the count was just checked, so this cannot fail
        let _ = net.set_label_names(Some(data.label_names.clone()));
    }
    let shape = &data.input_shape;
    if net.input_layout().is_none_or(|l| l.shape() != *shape) {
        let _ = net.set_input_layout(Some(crate::nn::InputLayout::Shape(shape.clone())));
    }
}

/// The lowest layer that trains.
/// Refuses a run that would train a layer of a trunk stored in f16: trainable parameters and
/// their optimizer state are f32 (widen the trunk back first, or freeze it).
fn check_trunk_storage(net: &Network, lowest: usize) -> Result<()> {
    let t = net.trunk_layers().len();
    if net.trunk_storage() == Precision::F16 && lowest < t {
        return Err(Error::invalid(format!(
            "the trunk's parameters are stored in f16 and this run would train trunk layer {lowest} ({}): trainable parameters stay f32; widen the trunk first (Network::set_trunk_storage(Precision::F32)) or freeze it (head-only fine-tuning)",
            net.trunk_layers()[lowest].describe()
        )));
    }
    Ok(())
}

fn lowest_of(lr_mults: &[Option<f32>]) -> Result<usize> {
    lr_mults.iter().position(Option::is_some).ok_or_else(|| Error::invalid("nothing to train: every layer with parameters is frozen"))
}
