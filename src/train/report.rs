//! What a pass over data measured: loss and quality ([`Metrics`]), per epoch ([`EpochReport`])
//! and per run ([`FitReport`]).

use crate::kernels::metrics::{LabelMetrics, RegressionMetrics};
use crate::nn::HeadKind;

/// Loss and quality of a pass over a data set.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Mean of the batch losses.
    pub loss: f64,
    /// Class heads: top-1 accuracy.
    pub accuracy: Option<f64>,
    /// Label heads: per-label precision, recall, F1 and their means (undefined scores are
    /// `None` and left out of the means; see [`LabelMetrics`]).
    pub labels: Option<LabelMetrics>,
    /// A network of named heads: each head's loss and quality, in the network's order (`loss`
    /// above is then `Σ_t w_t·L_t`, and `accuracy` and `labels` are `None`); empty otherwise.
    pub heads: Vec<HeadMetrics>,
}

/// One named head's share of a pass: its weighted loss and its quality.
#[derive(Debug, Clone)]
pub struct HeadMetrics {
    pub name: String,
    pub kind: HeadKind,
    /// Its weight `w` in the network's loss.
    pub weight: f32,
    /// Mean of the batches' `w·L` (0 for a head of weight 0): the head's task loss, before any
    /// learned uncertainty weight.
    pub weighted_loss: f64,
    /// Under uncertainty weighting ([`crate::train::HeadWeighting::Uncertainty`]): the head's
    /// learned log-variance `s` (at the epoch's end in a training report), its learned weight
    /// [`learned_weight`](Self::learned_weight) `exp(−s)`; `None` for a head that never had one.
    pub log_var: Option<f64>,
    /// Classes: top-1 accuracy over the examples that have a class (`None` if none has).
    pub accuracy: Option<f64>,
    /// Labels: per-label precision, recall, F1 (n/a for a label without known values).
    pub labels: Option<LabelMetrics>,
    /// Regression: per-column MAE and RMSE (n/a for a column without known values).
    pub regression: Option<RegressionMetrics>,
}

impl HeadMetrics {
    /// `exp(−s)`, the head's learned uncertainty weight, where it has a log-variance `s`.
    pub fn learned_weight(&self) -> Option<f64> {
        self.log_var.map(|s| (-s).exp())
    }
    /// Accuracy, mean F1 or mean MAE (lower is better for the last), `None` where undefined.
    pub fn score(&self) -> Option<f64> {
        match (&self.labels, &self.regression) {
            (Some(l), _) => l.mean_f1,
            (_, Some(r)) => r.mean_mae,
            _ => self.accuracy,
        }
    }
}

impl Metrics {
    /// The metrics of the head named `name` (a network of named heads).
    pub fn head(&self, name: &str) -> Option<&HeadMetrics> {
        self.heads.iter().find(|h| h.name == name)
    }

    /// Accuracy for class heads, mean F1 for label heads; `None` when there is neither, or when
    /// no label has an F1 (no label had a known positive or a positive prediction), so that a
    /// score nobody could compute is not shown as 0. `None` for a network of named heads, whose
    /// scores differ in kind: see each head's ([`Metrics::heads`], [`HeadMetrics::score`]). Show it with
    /// [`OrNa`](crate::kernels::metrics::OrNa).
    pub fn score(&self) -> Option<f64> {
        match &self.labels {
            Some(l) => l.mean_f1,
            None => self.accuracy,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone)]
pub struct EpochReport {
    pub epoch: usize,
    pub lr: f32,
    pub train: Metrics,
    pub validation: Option<Metrics>,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights the network holds at the end (early stopping), else the last.
    pub best_epoch: Option<usize>,
    /// Index of the lowest trainable layer.
    pub lowest_trainable: usize,
    /// Whether head-only epochs read cached trunk features.
    pub cached_features: bool,
    /// How the cached features were stored on the device ([`crate::train::TrainConfig::frozen_storage`]).
    pub frozen_storage: crate::train::Precision,
    /// How the trunk's weights were stored on the device during the run: f16 when
    /// [`crate::train::TrainConfig::frozen_storage`] is f16 and the whole trunk was frozen, or
    /// the trunk already was ([`crate::nn::Network::set_trunk_storage`]); else f32.
    pub frozen_weights: crate::train::Precision,
    /// Bytes the trunk's weights take on the device ([`crate::nn::Network::trunk_param_bytes`]):
    /// not part of [`bytes_allocated`](Self::bytes_allocated), which counts the run's own state.
    pub frozen_weights_bytes: u64,
    /// Dispatches recorded per training step (full batch), counted by the engine.
    pub dispatches_per_step: f64,
    /// Queue submissions per training step.
    pub submissions_per_step: f64,
    /// Bytes the run allocated on the GPU for its own state (the data set, scratch, gradients,
    /// optimizer moments, cached features, accumulators) and held while it trained, counted by
    /// the engine; the network's parameters are not counted. With cached features the data's raw
    /// inputs are let go before training and not counted (they were held while the features
    /// were computed).
    pub bytes_allocated: u64,
    /// Bytes this replica sends per step in a data-parallel run (the trainable ranges'
    /// gradients, f32; see [`crate::train::Trainer::with_replicas`]); 0 alone.
    pub bytes_exchanged_per_step: u64,
    pub seconds: f64,
}

impl FitReport {
    pub fn last(&self) -> Option<&EpochReport> {
        self.epochs.last()
    }
}
