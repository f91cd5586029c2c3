//! Host-side BatchNorm helpers for inference mode: the per-channel affine form of a BN and its
//! fold into the convolution before it, so a frozen conv → BN costs one launch (torchvision's
//! `FrozenBatchNorm2d`, and `torch.nn.utils.fusion.fuse_conv_bn_eval`).
//!
//! With `s = γ/√(σ² + ε)` per output channel: `W' = W·s`, `b' = β + (b − μ)·s` (`b = 0` for a
//! convolution without bias). Computed in float64 and rounded once to f32.

use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Tensor};
use crate::nn::LayerSpec;

/// One BatchNorm layer's running statistics, read back ([`crate::nn::Network::running_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormStats {
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    /// The training-mode steps the statistics have seen (PyTorch's `num_batches_tracked`).
    pub num_batches_tracked: u64,
}

/// The BatchNorm layers' running statistics (PyTorch's buffers `running_mean`, `running_var`,
/// `num_batches_tracked`): not parameters — no gradient, no optimizer state — but state a
/// training-mode step updates in place on the GPU and a checkpoint carries. One buffer holds every
/// layer's mean and variance, each view on a 256-byte boundary, so a network copies, broadcasts
/// and backs them up in one piece.
#[derive(Clone)]
pub(crate) struct RunningStats {
    pub buf: Tensor,
    /// Per layer: the element offsets of its mean and variance, `None` for other layers.
    pub slots: Vec<Option<(usize, usize)>>,
    /// Per layer: PyTorch's `num_batches_tracked`, the training-mode steps it has seen.
    pub batches: Vec<u64>,
    /// Elements of `buf` in use.
    pub len: usize,
}

impl RunningStats {
    /// Fresh statistics for `layers` (PyTorch's reset: mean 0, variance 1, 0 batches).
    pub fn new(gpu: &Gpu, layers: &[LayerSpec]) -> Result<RunningStats> {
        let mut off = 0;
        let mut slots = Vec::with_capacity(layers.len());
        let mut host = Vec::new();
        for l in layers {
            if let LayerSpec::BatchNorm(b) = l {
                let c = b.channels;
                let (m, v) = (off, (off + c).next_multiple_of(super::ALIGN));
                off = (v + c).next_multiple_of(super::ALIGN);
                host.resize(off, 0.0);
                host[v..v + c].fill(1.0);
                slots.push(Some((m, v)));
            } else {
                slots.push(None);
            }
        }
        gpu.check_binding_size("running statistics", 4 * off as u64)?;
        let buf = Tensor::alloc(gpu, &[off.max(1)], DType::F32, "running_stats")?;
        if off > 0 {
            buf.write(gpu, &host)?;
        }
        Ok(RunningStats { buf, slots, batches: vec![0; layers.len()], len: off })
    }

    /// Layer `i`'s `(running_mean, running_var)` views, `None` if it is no BatchNorm.
    pub fn views(&self, i: usize, channels: usize) -> Result<Option<(Tensor, Tensor)>> {
        match self.slots.get(i).copied().flatten() {
            Some((m, v)) => Ok(Some((self.buf.view(m, &[channels])?, self.buf.view(v, &[channels])?))),
            None => Ok(None),
        }
    }

    /// An independent copy on the GPU (a buffer-to-buffer copy; nothing is read back).
    pub fn try_clone(&self, gpu: &Gpu) -> Result<RunningStats> {
        let buf = Tensor::alloc(gpu, &[self.len.max(1)], DType::F32, "running_stats")?;
        if self.len > 0 {
            let mut rec = crate::gpu::Recorder::new(gpu, "clone_running_stats");
            rec.copy(&self.buf, 0, &buf, 0, self.len)?;
            rec.submit();
        }
        Ok(RunningStats { buf, slots: self.slots.clone(), batches: self.batches.clone(), len: self.len })
    }
}

/// An inference-mode BatchNorm's per-channel tensors (`C` each) and ε.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormValues<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub running_mean: &'a [f32],
    pub running_var: &'a [f32],
    pub eps: f32,
}

impl BatchNormValues<'_> {
    /// Channels, after checking the four tensors agree and the statistics are usable
    /// (finite, `σ² + ε > 0`).
    fn channels(&self) -> Result<usize> {
        let c = self.gamma.len();
        let lens = [self.beta.len(), self.running_mean.len(), self.running_var.len()];
        if lens.iter().any(|&l| l != c) {
            return Err(Error::shape(format!(
                "batch norm: gamma has {c} channels, beta {}, running_mean {}, running_var {}",
                lens[0], lens[1], lens[2]
            )));
        }
        for (ch, &v) in self.running_var.iter().enumerate() {
            let d = v as f64 + self.eps as f64;
            if !(d.is_finite() && d > 0.0) {
                return Err(Error::invalid(format!("batch norm: channel {ch} has running_var {v} with eps {}: no inverse std", self.eps)));
            }
        }
        Ok(c)
    }

    /// `(s, t)` per channel, float64: the BN is `y = x·s + t`.
    pub fn scale_shift(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let c = self.channels()?;
        let s: Vec<f64> = (0..c).map(|i| self.gamma[i] as f64 / (self.running_var[i] as f64 + self.eps as f64).sqrt()).collect();
        let t = (0..c).map(|i| self.beta[i] as f64 - self.running_mean[i] as f64 * s[i]).collect();
        Ok((s, t))
    }
}

/// Folds `bn` into the convolution (weights `[O, …]`, `O` output channels, any per-channel size;
/// `bias` `[O]` or none): returns `(W', b')`, the conv that computes conv → BN in one.
pub fn fold_into_conv(weight: &[f32], bias: Option<&[f32]>, bn: &BatchNormValues) -> Result<(Vec<f32>, Vec<f32>)> {
    let (s, _) = bn.scale_shift()?;
    let o = s.len();
    if o == 0 || !weight.len().is_multiple_of(o) {
        return Err(Error::shape(format!("batch norm fold: {} weights do not split into {o} output channels", weight.len())));
    }
    if let Some(b) = bias
        && b.len() != o
    {
        return Err(Error::shape(format!("batch norm fold: the conv bias has {} values, the batch norm {o} channels", b.len())));
    }
    let per = weight.len() / o;
    let w: Vec<f32> = weight.iter().enumerate().map(|(i, &v)| (v as f64 * s[i / per]) as f32).collect();
    let b = (0..o)
        .map(|i| {
            let b = bias.map_or(0.0, |b| b[i] as f64);
            (bn.beta[i] as f64 + (b - bn.running_mean[i] as f64) * s[i]) as f32
        })
        .collect();
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_by_hand() {
        // s = 2/√(3 + 1) = 1 and 8/√(15 + 1) = 2: every value is exact
        let bn = BatchNormValues { gamma: &[2.0, 8.0], beta: &[1.0, -1.0], running_mean: &[0.5, 2.0], running_var: &[3.0, 15.0], eps: 1.0 };
        let (s, t) = bn.scale_shift().unwrap();
        assert_eq!((s, t), (vec![1.0, 2.0], vec![0.5, -5.0]));
        let (w, b) = fold_into_conv(&[1.0, 2.0, 3.0, 4.0], Some(&[10.0, 20.0]), &bn).unwrap();
        assert_eq!(w, vec![1.0, 2.0, 6.0, 8.0]);
        assert_eq!(b, vec![1.0 + 9.5, -1.0 + 18.0 * 2.0]);
        let (_, b) = fold_into_conv(&[1.0, 2.0, 3.0, 4.0], None, &bn).unwrap();
        assert_eq!(b, vec![0.5, -5.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let bn = BatchNormValues { gamma: &[1.0, 1.0], beta: &[0.0, 0.0], running_mean: &[0.0, 0.0], running_var: &[1.0, 1.0], eps: 1e-5 };
        assert!(fold_into_conv(&[1.0, 2.0, 3.0], None, &bn).is_err());
        assert!(fold_into_conv(&[1.0, 2.0], Some(&[1.0]), &bn).is_err());
        let short = BatchNormValues { beta: &[0.0], ..bn };
        assert!(short.scale_shift().unwrap_err().to_string().contains("beta 1"));
        let negative = BatchNormValues { running_var: &[1.0, -1.0], ..bn };
        assert!(negative.scale_shift().unwrap_err().to_string().contains("channel 1"));
        let nan = BatchNormValues { running_var: &[f32::NAN, 1.0], ..bn };
        assert!(nan.scale_shift().is_err());
    }
}
