//! What a training run is asked to do: which layers train ([`Freeze`]) and every setting besides
//! the network and the data ([`TrainConfig`]), checked in one place.

use super::{BceSettings, Optimizer, Schedule};
use crate::error::{Error, Result};
pub use crate::kernels::augment::Augment;

/// Which layers train during fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Only the head trains; the trunk is frozen (and its features can be cached).
    Trunk,
    /// Everything trains (the trunk at `trunk_lr_mult` × the learning rate).
    All,
    /// The head and the top `k` trunk layers train.
    LastK(usize),
    /// The rule of thumb: with fewer than `TrainConfig::auto_threshold` training examples train
    /// the head only, otherwise fine-tune everything.
    Auto,
}

impl Freeze {
    /// Parses `trunk`, `all`, `last:K`, `auto`.
    pub fn parse(s: &str) -> Option<Freeze> {
        match s {
            "trunk" => Some(Freeze::Trunk),
            "all" | "none" => Some(Freeze::All),
            "auto" => Some(Freeze::Auto),
            _ => s.strip_prefix("last:").and_then(|k| k.parse().ok()).map(Freeze::LastK),
        }
    }
}

/// Which statistics a run's BatchNorm layers normalise with. A frozen BatchNorm always uses its
/// running statistics (Keras's rule for `trainable = False`, torchvision's `FrozenBatchNorm2d`):
/// its output is then a fixed function of its input, so a frozen trunk's features can be cached
/// and its BatchNorms folded into the convolutions before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormMode {
    /// Training mode when every layer trains (pretraining, training from scratch, fine-tuning
    /// everything: what `model.train()` gives a PyTorch user), inference mode when any layer is
    /// frozen (head-only or partial fine-tuning, where the pretrained statistics are kept).
    #[default]
    Auto,
    /// Every trainable BatchNorm normalises with the batch's statistics and updates its running
    /// statistics with its momentum, PyTorch's rule (`model.train()`, fastai's `train_bn`).
    Train,
    /// Every BatchNorm normalises with its running statistics, which stay as they are; γ and β
    /// still train where their layer does (`model.eval()` during training).
    Frozen,
}

impl BatchNormMode {
    /// Parses `auto`, `train`, `frozen`.
    pub fn parse(s: &str) -> Option<BatchNormMode> {
        match s {
            "auto" => Some(BatchNormMode::Auto),
            "train" => Some(BatchNormMode::Train),
            "frozen" | "eval" => Some(BatchNormMode::Frozen),
            _ => None,
        }
    }

    /// Per layer, whether it is a BatchNorm that normalises with the batch's statistics in a run
    /// training the layers `lr_mults` marks (`None`: frozen).
    pub(crate) fn batch_stats(self, layers: &[crate::nn::LayerSpec], lr_mults: &[Option<f32>]) -> Vec<bool> {
        let every_layer_trains = layers.iter().zip(lr_mults).all(|(l, m)| !l.has_params() || m.is_some());
        let train = match self {
            BatchNormMode::Auto => every_layer_trains,
            BatchNormMode::Train => true,
            BatchNormMode::Frozen => false,
        };
        layers.iter().zip(lr_mults).map(|(l, m)| train && m.is_some() && matches!(l, crate::nn::LayerSpec::BatchNorm(_))).collect()
    }
}

/// The precision data that a run only reads is stored in on the device ([`TrainConfig::frozen_storage`]).
/// Arithmetic is f32 either way: values are widened to f32 as they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 4 bytes a value (the default).
    #[default]
    F32,
    /// 2 bytes a value, IEEE binary16 rounded to nearest (ties to even) and kept two to a u32
    /// word, so every adapter gets the saving whether it has `shader-f16` or not (GL has not).
    /// About 3 significant decimal digits; magnitudes beyond 65504 become infinite.
    F16,
}

impl Precision {
    /// Parses `f32`, `f16`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "f16" => Some(Precision::F16),
            _ => None,
        }
    }

    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// Everything a training run needs besides the network and the data.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub batch_size: usize,
    pub schedule: Schedule,
    /// A new seeded shuffle every epoch (else the data's order).
    pub shuffle: bool,
    /// Seeds the shuffles and the validation split.
    pub seed: u64,
    /// Fraction of the data held out for validation each epoch (0 = none).
    pub validation_fraction: f32,
    /// Stop after this many epochs without a better validation loss, keeping the best weights.
    pub early_stopping: Option<usize>,
    /// Loss settings for label heads.
    pub bce: BceSettings,
    /// Probability threshold for label metrics.
    pub threshold: f32,
    /// Learning-rate multiplier of trainable trunk layers in fine-tuning (discriminative rates).
    pub trunk_lr_mult: f32,
    /// [`Freeze::Auto`]: fewer training examples than this → head only.
    pub auto_threshold: usize,
    /// With the whole trunk frozen, compute its outputs once and train the head on them.
    pub cache_features: bool,
    /// Training steps recorded into one queue submission (≥ 1). Each step still reads its own
    /// batch offset and learning rate; more steps per submission amortise the submission's fixed
    /// cost, which dominates small steps (a head trained on cached features).
    pub steps_per_submission: usize,
    /// Which statistics the BatchNorm layers use ([`BatchNormMode::Auto`] by default).
    pub batch_norm: BatchNormMode,
    /// Augments every training batch on the GPU before the first layer (torchvision's
    /// RandomResizedCrop and RandomHorizontalFlip, [`Augment::torchvision`]); `None` by default.
    /// Each step's draws follow from `seed`, the step and each image's place in the epoch's
    /// order. It needs the trunk computed every step: with a frozen trunk whose features would be
    /// cached, set `cache_features = false`.
    pub augment: Option<Augment>,
    /// How a network of named heads weighs its heads' losses: each head's fixed weight
    /// ([`HeadWeighting::Fixed`], the default), or learned uncertainty weights on top of it
    /// ([`HeadWeighting::Uncertainty`]). A network's only head ignores it.
    pub head_weighting: HeadWeighting,
    /// Data-parallel runs ([`Trainer::with_replicas`](super::Trainer::with_replicas)): split each
    /// step's gradient submission in two and sum the upper layers' gradients over the replicas
    /// while the device computes the lowest trainable layer's (the same bits as without). Off by
    /// default: on a 2-core host with lavapipe it did not pay (BENCHMARKS.md). Ignored alone.
    pub overlap_exchange: bool,
    /// Gradient accumulation (≥ 1, default 1): one optimizer step of `batch_size` examples runs
    /// as this many passes (micro-batches) of about `batch_size / accumulate_steps` examples each,
    /// which bounds the activation memory of a pass. `batch_size` stays the batch of one optimizer
    /// step (and, data parallel, the global one), so the result does not depend on this setting
    /// beyond rounding: each micro-batch's loss is scaled by its share of the step's (examples, or
    /// known targets where the loss counts those), its gradients are summed on the device (no
    /// readback), and the update (data parallel: the exchange too) runs once per step. BatchNorm
    /// in training mode normalises each micro-batch with its own statistics (as PyTorch does);
    /// dropout draws the masks of the whole batch. The validation split is still evaluated in
    /// batches of `batch_size` (forward only). Not with learned uncertainty weighting, nor with
    /// `overlap_exchange`.
    pub accumulate_steps: usize,
    /// How what a run only reads is stored on the device ([`Precision::F32`] by default).
    /// [`Precision::F16`] stores, at half the bytes:
    /// - the frozen layers' cached features (any frozen layers below the lowest trainable one,
    ///   with `cache_features`); the head still computes in f32 on them, widened as each batch
    ///   is gathered. The data's raw inputs are let go once the features are cached, at either
    ///   precision;
    /// - the trunk's weights, when the whole trunk is frozen (head-only fine-tuning, cached or
    ///   not): the run stores the trunk in f16 ([`crate::nn::Network::set_trunk_storage`])
    ///   before it computes anything, and the network keeps it so (saved with
    ///   `headswap.trunk_storage = f16`); widen it back to train the trunk later. A run that
    ///   fails to set up leaves the trunk's f32 values untouched. With only part of the trunk
    ///   frozen, the trunk's weights stay f32 (its trainable layers need them) and only the
    ///   features are stored in f16 ([`FitReport::frozen_weights`](super::FitReport::frozen_weights)
    ///   says which).
    ///
    /// A run with neither (nothing frozen, or part of the trunk trainable without cached
    /// features) is refused.
    ///
    /// ```no_run
    /// use headswap::train::{Freeze, Precision, TrainConfig, Trainer};
    /// # fn run(gpu: &headswap::Gpu, net: &mut headswap::nn::Network, data: &headswap::data::Dataset) -> headswap::Result<()> {
    /// let cfg = TrainConfig { frozen_storage: Precision::F16, ..TrainConfig::default() };
    /// let report = Trainer::new(gpu, cfg).fine_tune(net, data, Freeze::Trunk, 10)?;
    /// assert_eq!(report.frozen_storage, Precision::F16);
    /// # Ok(()) }
    /// ```
    pub frozen_storage: Precision,
}

/// How the losses of a network's named heads are combined into the one loss a step minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadWeighting {
    /// `L = Σ_t w_t·L_t`, `w_t` each head's fixed [`weight`](crate::nn::HeadInfo::weight).
    #[default]
    Fixed,
    /// Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) in its widely used
    /// form `L = Σ_t exp(−s_t)·w_t·L_t + s_t`, one learned log-variance `s_t` per head of weight
    /// `w_t > 0` (a head of weight 0 is left out, `s_t` included). Kendall's ½ in front of a
    /// regression head's term is not used: every kind gets the same form (the ½ only rescales
    /// `exp(−s_t)` by a constant, which `s_t` absorbs up to a shift). The `s_t` train with the
    /// run's optimizer and learning rate in their own parameter group, without weight decay;
    /// they start at the network's [`log_var`](crate::nn::HeadInfo::log_var) or 0, and the run
    /// leaves the learned values there (saved with the network).
    Uncertainty,
}

impl HeadWeighting {
    /// `fixed` or `uncertainty`.
    pub fn parse(s: &str) -> Option<HeadWeighting> {
        match s {
            "fixed" => Some(HeadWeighting::Fixed),
            "uncertainty" => Some(HeadWeighting::Uncertainty),
            _ => None,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::sgd(0.05).momentum(0.9),
            batch_size: 64,
            schedule: Schedule::Constant,
            shuffle: true,
            seed: 0,
            validation_fraction: 0.0,
            early_stopping: None,
            bce: BceSettings::default(),
            threshold: 0.5,
            trunk_lr_mult: 1.0,
            auto_threshold: 1000,
            cache_features: true,
            steps_per_submission: 16,
            batch_norm: BatchNormMode::Auto,
            augment: None,
            head_weighting: HeadWeighting::Fixed,
            overlap_exchange: false,
            accumulate_steps: 1,
            frozen_storage: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Checks every setting before a run starts, so a bad value is refused with its name instead
    /// of surfacing later as an empty split, a NaN loss or meaningless metrics. The one place
    /// where a configuration is validated: every training and evaluation entry point calls it.
    pub fn validate(&self) -> Result<()> {
        match &self.optimizer {
            Optimizer::Sgd(c) => c.validate()?,
            Optimizer::Adam(c) => c.validate()?,
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        if self.steps_per_submission == 0 {
            return Err(Error::invalid("steps_per_submission must be at least 1"));
        }
        if self.accumulate_steps == 0 {
            return Err(Error::invalid("accumulate_steps must be at least 1 (1: no accumulation)"));
        }
        if self.accumulate_steps > 1 && self.head_weighting == HeadWeighting::Uncertainty {
            return Err(Error::invalid(
                "gradient accumulation (accumulate_steps > 1) is not supported with learned uncertainty weighting (HeadWeighting::Uncertainty): its weights depend on each pass's loss",
            ));
        }
        if self.accumulate_steps > 1 && self.overlap_exchange {
            return Err(Error::invalid(
                "accumulate_steps > 1 and overlap_exchange are two ways to hide the data-parallel exchange; use one of them",
            ));
        }
        // NaN fails every comparison, so the ranges are written as "inside" tests
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::invalid(format!("validation_fraction must be in [0, 1), got {}", self.validation_fraction)));
        }
        if self.early_stopping.is_some() && self.validation_fraction == 0.0 {
            return Err(Error::invalid("early_stopping needs a validation split (validation_fraction > 0)"));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::invalid(format!("threshold must be a probability in (0, 1), got {}", self.threshold)));
        }
        if !(self.trunk_lr_mult >= 0.0 && self.trunk_lr_mult.is_finite()) {
            return Err(Error::invalid(format!("trunk_lr_mult must be finite and ≥ 0, got {}", self.trunk_lr_mult)));
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        validate_bce(&self.bce)?;
        validate_schedule(&self.schedule)
    }
}

/// Negative or non-finite weights turn the loss negative or NaN; zero is allowed (it switches a
/// label or its positive term off).
pub(crate) fn validate_bce(bce: &BceSettings) -> Result<()> {
    for (name, weights) in [("pos_weight", &bce.pos_weight), ("label_weight", &bce.label_weight)] {
        if let Some(bad) = weights.iter().flatten().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::invalid(format!("{name} values must be finite and ≥ 0, got {bad}")));
        }
    }
    Ok(())
}

fn validate_schedule(s: &Schedule) -> Result<()> {
    match *s {
        Schedule::Constant => Ok(()),
        Schedule::Step { every_epochs, gamma } => {
            if every_epochs == 0 || !(gamma > 0.0 && gamma.is_finite()) {
                return Err(Error::invalid(format!(
                    "a step schedule needs every_epochs ≥ 1 and a finite gamma > 0, got {every_epochs} and {gamma}"
                )));
            }
            Ok(())
        }
        Schedule::Cosine { min_lr, .. } if !(min_lr >= 0.0 && min_lr.is_finite()) => {
            Err(Error::invalid(format!("a cosine schedule's min_lr must be finite and ≥ 0, got {min_lr}")))
        }
        Schedule::Cosine { .. } => Ok(()),
    }
}

pub(crate) fn check_epochs(epochs: usize) -> Result<()> {
    if epochs == 0 { Err(Error::invalid("epochs must be at least 1")) } else { Ok(()) }
}
