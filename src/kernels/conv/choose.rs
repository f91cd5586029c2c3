//! Which convolution algorithm a layer runs: measured per device and shape class through the
//! shared tuner ([`crate::kernels::tune`]). See [`choose_algo`].

use super::{Conv2dShape, ConvAlgo, ConvScratch, conv2d_backward_dispatches, conv2d_forward_dispatches, im2col};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::kernels::{Activation, tune};

/// What a layer does with its convolution, which decides what [`choose_algo`] measures: the
/// forward only (inference, a frozen layer), or the forward and the backward, with dx (a layer
/// with trainable layers below) or without (the lowest trainable layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvUse {
    Forward,
    Train { dx: bool },
}

/// The class key of a convolution's choice: every dimension but the batch, which is bucketed by
/// powers of 4 (a full and a last partial batch usually share a choice), and the use.
pub fn algo_class_key(shape: &Conv2dShape, usage: ConvUse) -> String {
    let bucket = |n: usize| (usize::BITS - n.max(1).leading_zeros()).div_ceil(2);
    let s = shape;
    let u = match usage {
        ConvUse::Forward => "fwd",
        ConvUse::Train { dx: true } => "train dx",
        ConvUse::Train { dx: false } => "train",
    };
    let mut key =
        format!("conv n{} c{} {}x{} o{} k{}x{} s{}x{} p{}x{}", bucket(s.n), s.c, s.h, s.w, s.o, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw);
    // written only when they differ from the symmetric, ungrouped form, so earlier cache entries
    // keep their keys
    if (s.pb, s.pr) != (s.ph, s.pw) {
        key += &format!(" pbr{}x{}", s.pb, s.pr);
    }
    if s.groups != 1 {
        key += &format!(" g{}", s.groups);
    }
    format!("{key} {u}")
}

impl tune::Tunable for ConvAlgo {
    const ENV: &'static str = "HEADSWAP_CONV";
    const WHAT: &'static str = "convolution algorithm";
    const ALL: &'static [ConvAlgo] = &[ConvAlgo::Direct, ConvAlgo::Im2col];
    fn name(self) -> &'static str {
        ConvAlgo::name(self)
    }
}

/// Which algorithm a convolution of `shape` used as `usage` runs on this device, by the
/// autotuner's order ([`crate::kernels::tune`]):
/// 1. `HEADSWAP_CONV=direct|im2col` forces one (im2col falls back to direct where an image has
///    too many output pixels for its chunks);
/// 2. `HEADSWAP_AUTOTUNE=0` gives the default, [`ConvAlgo::Direct`];
/// 3. else the choice made earlier for this device and class ([`algo_class_key`]), in memory or
///    in the autotune cache file;
/// 4. else both are measured now on zero-filled buffers of this shape (the work `usage` names),
///    and the faster is remembered. Neither is consistently faster on lavapipe (see the module
///    docs), hence measuring rather than a rule.
///
/// Call it while building a plan: measuring submits and waits.
pub fn choose_algo(gpu: &Gpu, shape: &Conv2dShape, usage: ConvUse) -> Result<ConvAlgo> {
    shape.validate()?;
    let usable = |a: ConvAlgo| a == ConvAlgo::Direct || im2col::fits(shape);
    let ask =
        tune::Ask { class: algo_class_key(shape, usage), static_choice: ConvAlgo::Direct, fallback: ConvAlgo::Direct, usable: &usable };
    let measure = || if im2col::fits(shape) { measure_algos(gpu, shape, usage) } else { Ok(ConvAlgo::Direct) };
    Ok(tune::choose(gpu, ask, measure)?.0)
}

/// Times both algorithms on `shape` doing what `usage` names; returns the faster.
fn measure_algos(gpu: &Gpu, shape: &Conv2dShape, usage: ConvUse) -> Result<ConvAlgo> {
    let started = std::time::Instant::now();
    let t = |dims: &[usize]| tune::scratch(gpu, dims);
    let (x, w, b, y) = (t(&shape.x_shape())?, t(&shape.w_shape())?, t(&[shape.o])?, t(&shape.y_shape())?);
    let (dx, dw, db) = (t(&shape.x_shape())?, t(&shape.w_shape())?, t(&[shape.o])?);
    let mut candidates = Vec::new();
    for algo in [ConvAlgo::Direct, ConvAlgo::Im2col] {
        let build = || -> Result<(Vec<Dispatch>, ConvScratch)> {
            let scratch = ConvScratch::with_algo(gpu, shape, algo)?;
            let mut d = conv2d_forward_dispatches(gpu, shape, &x, &w, Some(&b), Activation::Relu, &y, &scratch)?;
            if let ConvUse::Train { dx: with_dx } = usage {
                d.extend(conv2d_backward_dispatches(gpu, shape, &x, &w, &y, with_dx.then_some(&dx), &dw, Some(&db), &scratch)?);
            }
            Ok((d, scratch))
        };
        // a form this adapter cannot launch for the shape (a limit) is no candidate; if neither
        // can, the error is the direct form's
        match build() {
            Ok((d, scratch)) => candidates.push((algo, d, scratch)),
            Err(e) => tracing::debug!("conv autotune: {} cannot run {shape:?}: {e}", algo.name()),
        }
    }
    if candidates.is_empty() {
        ConvScratch::with_algo(gpu, shape, ConvAlgo::Direct)?;
        let s = shape;
        return Err(Error::invalid(format!(
            "conv2d: neither algorithm can run {}→{} channels on {}×{} with a {}×{} kernel on this adapter",
            s.c, s.o, s.h, s.w, s.kh, s.kw
        )));
    }
    // one run of a layer's launches per submission: they are heavy enough to outweigh its cost
    let lists: Vec<Vec<&Dispatch>> = candidates.iter().map(|(_, d, _)| d.iter().collect()).collect();
    let secs = tune::time_candidates(gpu, "conv_autotune", &lists, 1)?;
    let algos: Vec<ConvAlgo> = candidates.iter().map(|c| c.0).collect();
    tune::fastest(&algo_class_key(shape, usage), &algos, &secs, started)
        .ok_or_else(|| Error::invalid(format!("conv2d: no algorithm ran {shape:?} on this adapter")))
}
