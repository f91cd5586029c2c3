//! Data augmentation on the GPU (`shaders/augment.wgsl`): torchvision's `RandomResizedCrop` to the
//! image's own size and `RandomHorizontalFlip`, drawn per image from a counter-based hash of the
//! run's seed, the step and the image's position in the epoch's order, so nothing but the step and
//! the batch offset changes per step (staged like the optimizer's step number). For training steps
//! whose trunk runs every step: augmented inputs cannot come from cached features. Float64
//! reference: [`crate::reference::augment`].

use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::{StepUniforms, groups_1d};
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const RANDOM_RESIZED_CROP_FLIP: Kernel =
    Kernel { source: &source::AUGMENT, entry: "random_resized_crop_flip", bindings: &[R, RW] };

/// What to draw per image. torchvision's defaults: [`Augment::torchvision`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// `RandomResizedCrop`'s `(scale, ratio)`: the crop's area as a fraction of the image, and its
    /// aspect ratio (width/height), each a `(min, max)` range; `None`: no crop.
    pub crop: Option<((f32, f32), (f32, f32))>,
    /// `RandomHorizontalFlip`'s probability (0: never).
    pub flip: f32,
}

impl Augment {
    /// torchvision's training defaults: `RandomResizedCrop(scale=(0.08, 1.0), ratio=(3/4, 4/3))`
    /// and `RandomHorizontalFlip(0.5)`.
    pub fn torchvision() -> Augment {
        Augment { crop: Some(((0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0))), flip: 0.5 }
    }

    /// `Err(Invalid)` unless the ranges are ordered and positive (scale in (0, 1]) and the flip
    /// probability in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if let Some(((s0, s1), (r0, r1))) = self.crop
            && !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0 && r0 > 0.0 && r0 <= r1 && r1.is_finite())
        {
            return Err(Error::invalid(format!(
                "random resized crop: scale must satisfy 0 < min ≤ max ≤ 1 and ratio 0 < min ≤ max, got scale ({s0}, {s1}), ratio ({r0}, {r1})"
            )));
        }
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(Error::invalid(format!("the flip probability must be in [0, 1], got {}", self.flip)));
        }
        Ok(())
    }
}

/// `Params` in augment.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct AugmentParams {
    rows: u32,
    c: u32,
    h: u32,
    w: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    offset: u32,
    scale_min: f32,
    scale_max: f32,
    log_ratio_min: f32,
    log_ratio_max: f32,
    flip_threshold: u32,
    crop: u32,
    total: u32,
    _pad: u32,
}

/// One augmentation launch over a batch, built once and replayed every step, ready for step 1
/// at offset 0; [`set`](Self::set) / [`stage`](Self::stage) give it a step's values.
#[derive(Debug)]
pub struct AugmentLaunch {
    dispatch: Dispatch,
    params: AugmentParams,
}

impl AugmentLaunch {
    fn params_at(&self, offset: u32, step: u32) -> AugmentParams {
        AugmentParams { offset, step, ..self.params }
    }
    /// Sets the step number and the batch's offset in the epoch's order (next submission).
    pub fn set(&self, gpu: &Gpu, offset: u32, step: u32) {
        self.dispatch.write_params(gpu, bytemuck::bytes_of(&self.params_at(offset, step)));
    }
    /// Stages the step number and offset as the current step's values (several steps per submission).
    pub(crate) fn stage(&self, uniforms: &mut StepUniforms, offset: u32, step: u32) {
        uniforms.set(&self.dispatch, bytemuck::bytes_of(&self.params_at(offset, step)));
    }
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

/// Builds the augmentation of `x` (`rows` images `[C, H, W]`, `chw`) into `y` (same size) with
/// `seed`.
pub fn augment_dispatch(gpu: &Gpu, a: &Augment, seed: u64, chw: [usize; 3], x: &Tensor, y: &Tensor) -> Result<AugmentLaunch> {
    let op = "random_resized_crop_flip";
    a.validate()?;
    let [c, h, w] = chw;
    let per = c * h * w;
    ensure(per > 0 && x.len().is_multiple_of(per), op, || format!("x {:?} is not rows of {c}×{h}×{w} images", x.shape()))?;
    ensure(y.len() == x.len(), op, || format!("y holds {} elements, x {}", y.len(), x.len()))?;
    ensure(x.dtype() == DType::F32 && y.dtype() == DType::F32, op, || "x and y must be f32".into())?;
    ensure(!x.same_buffer(y), op, || "y must not share a buffer with x".into())?;
    let total = u32::try_from(x.len()).map_err(|_| Error::shape(format!("{op}: {} elements exceed 32-bit indices", x.len())))?;
    let ((s0, s1), (r0, r1)) = a.crop.unwrap_or(((1.0, 1.0), (1.0, 1.0)));
    let params = AugmentParams {
        rows: (x.len() / per) as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        step: 1,
        offset: 0,
        scale_min: s0,
        scale_max: s1,
        log_ratio_min: r0.ln(),
        log_ratio_max: r1.ln(),
        flip_threshold: flip_threshold(a.flip),
        crop: a.crop.is_some() as u32,
        total,
        _pad: 0,
    };
    let dispatch = Dispatch::new(gpu, RANDOM_RESIZED_CROP_FLIP, &[], bytemuck::bytes_of(&params), &[x, y], groups_1d(x.len(), 256))?;
    Ok(AugmentLaunch { dispatch, params })
}

/// `round(p·2²⁴)`: a draw below this flips.
pub(crate) fn flip_threshold(p: f32) -> u32 {
    (p.clamp(0.0, 1.0) as f64 * (1u32 << 24) as f64).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_wgsl_size() {
        let wgsl = super::super::wgsl_struct_bytes(source::AUGMENT_WGSL, "Params");
        assert_eq!(std::mem::size_of::<AugmentParams>(), wgsl);
    }
}
