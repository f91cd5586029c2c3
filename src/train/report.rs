//! What a pass over data measured: loss and quality ([`Metrics`]), per epoch ([`EpochReport`])
//! and per run ([`FitReport`]).

use crate::kernels::metrics::LabelMetrics;

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
}

impl Metrics {
    /// Accuracy for class heads, mean F1 for label heads; `None` when there is neither, or when
    /// no label has an F1 (no label had a known positive or a positive prediction), so that a
    /// score nobody could compute is not shown as 0. Show it with
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
    /// Dispatches recorded per training step (full batch), counted by the engine.
    pub dispatches_per_step: f64,
    /// Queue submissions per training step.
    pub submissions_per_step: f64,
    /// Bytes the run allocated on the GPU for its own state (scratch, gradients, optimizer
    /// moments, cached features, accumulators), counted by the engine.
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
