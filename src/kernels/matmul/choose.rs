//! Which matmul [`Variant`] to launch, per adapter and shape class: measured on first use,
//! remembered in memory and in a cache file so later runs start fast.
//!
//! The order of precedence for one product is [`crate::kernels::tune`]'s, the mechanism every per-device
//! kernel choice shares:
//! 1. `HEADSWAP_MATMUL=<name>` ([`Variant::name`]) forces a variant (tests check every one; one
//!    the device cannot launch for the shape gives `reg4x4`; an unknown name is an error).
//! 2. `HEADSWAP_AUTOTUNE=0` uses the static default: on a CPU adapter (lavapipe, llvmpipe GL)
//!    `block16x16`, elsewhere `tile64`.
//! 3. A choice made earlier for this device and class: in memory, else in the cache file.
//! 4. Otherwise the candidates are measured now: each is compiled with the product's own override
//!    constants (so the winner's pipeline is the one the caller then uses), run on zero-filled
//!    scratch buffers of the class's shape (each dimension capped, to keep it short) and timed
//!    with the wait inside the timing; the fastest wins. `tile64` is not measured on CPU adapters,
//!    where workgroup barriers are coroutine switches and it is far behind the register-block
//!    variants (shared/PERFORMANCE.md §3.2; figures in BENCHMARKS.md).
//!
//! Measuring costs seconds on lavapipe, almost all of it LLVM compiling the candidates on their
//! first launch (BENCHMARKS.md, "Measurements behind code choices"); with the cache file, a later
//! run measures nothing.
//!
//! A class is the transpose form, a size bucket (powers of 4) of each of M, N and K, and whether
//! each operand can be read as vec4s ([`Problem::vec_a`]). The cache file ([`cache_path`]) holds
//! every kind's choices, keyed by [`device_key`].

use super::{Epilogue, Problem, Variant, build};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::tune::{self, Ask, Tunable};
use std::time::Instant;

pub use crate::kernels::tune::{Source, cache_path, device_key, measurements};

/// The variant for one product and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub variant: Variant,
    pub source: Source,
}

/// The class key of a product: form, size buckets, vec4 layout.
pub fn class_key(p: &Problem) -> String {
    fn bucket(d: usize) -> u32 {
        match d {
            0..=4 => 0,
            5..=16 => 1,
            17..=64 => 2,
            65..=256 => 3,
            257..=1024 => 4,
            _ => 5,
        }
    }
    format!("{:?} m{} n{} k{} v{}{}", p.t, bucket(p.m), bucket(p.n), bucket(p.k), p.vec_a() as u8, p.vec_b() as u8)
}

/// The variant used without measuring.
pub fn static_default(gpu: &Gpu, p: &Problem) -> Variant {
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let ranked: &[Variant] = if cpu { &[Variant::Sg32x8, Variant::Block16x16] } else { &[Variant::Tile64] };
    ranked.iter().copied().find(|v| v.fits(gpu, p.m, p.n)).unwrap_or(Variant::Reg4x4)
}

impl Tunable for Variant {
    const ENV: &'static str = "HEADSWAP_MATMUL";
    const WHAT: &'static str = "matmul variant";
    const ALL: &'static [Variant] = &Variant::ALL;
    fn name(self) -> &'static str {
        Variant::name(self)
    }
}

/// Chooses the variant for `p` (see the module docs for the order of precedence).
pub fn choose(gpu: &Gpu, p: Problem, epi: Epilogue<'_>) -> Result<Choice> {
    let static_choice = static_default(gpu, &p);
    let usable = |v: Variant| v.fits(gpu, p.m, p.n);
    if p.m == 0 || p.n == 0 || p.k == 0 {
        // nothing to measure
        return Ok(match tune::forced::<Variant>()? {
            Some(v) => Choice { variant: if usable(v) { v } else { Variant::Reg4x4 }, source: Source::Forced },
            None => Choice { variant: static_choice, source: Source::Static },
        });
    }
    let ask = Ask { class: class_key(&p), static_choice, fallback: Variant::Reg4x4, usable: &usable };
    let class = ask.class.clone();
    let (variant, source) = tune::choose(gpu, ask, || measure(gpu, p, epi, &class))?;
    Ok(Choice { variant, source })
}

/// Measures the candidates for `p`'s class and returns the fastest.
fn measure(gpu: &Gpu, p: Problem, epi: Epilogue<'_>, class: &str) -> Result<Variant> {
    let start = Instant::now();
    // The class's shape with each dimension capped, to a multiple of every tile (keeping the
    // remainder mod 4, so the vec4 layout is the class's own).
    let cap = |d: usize, lim: usize| if d <= lim { d } else { lim + d % 4 };
    let q = Problem { m: cap(p.m, 128), n: cap(p.n, 256), k: cap(p.k, 256), ..p };
    let (ta, tb) = q.t.flags();
    let a = tune::scratch(gpu, &if ta { [q.k, q.m] } else { [q.m, q.k] })?;
    let b = tune::scratch(gpu, &if tb { [q.n, q.k] } else { [q.k, q.n] })?;
    let c = tune::scratch(gpu, &[q.m, q.n])?;
    let bias = match epi.bias {
        Some(_) => Some(tune::scratch(gpu, &[q.n])?),
        None => None,
    };
    let epi = Epilogue { bias: bias.as_ref(), activation: epi.activation };
    // Enough launches per submission that the submission's own cost does not decide.
    let flops = 2.0 * (q.m * q.n * q.k) as f64;
    let reps = (32e6 / flops).ceil().clamp(1.0, 32.0) as usize;
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    // A candidate that fails to build (a driver's limit, say) is left out, not an error.
    let mut variants = Vec::new();
    let mut dispatches = Vec::new();
    for v in Variant::ALL.into_iter().filter(|&v| v.fits(gpu, q.m, q.n) && !(cpu && v == Variant::Tile64)) {
        match build(gpu, v, &a, &b, &c, q, epi) {
            Ok(d) => {
                variants.push(v);
                dispatches.push(d);
            }
            Err(e) => tracing::warn!(variant = v.name(), "matmul autotune skips a candidate: {e}"),
        }
    }
    let lists: Vec<Vec<&crate::gpu::Dispatch>> = dispatches.iter().map(|d| vec![d]).collect();
    let secs = tune::time_candidates(gpu, "matmul_autotune", &lists, reps)?;
    let shape = format!("{class} ({}x{}x{}, {:.1} MFLOP)", q.m, q.n, q.k, flops / 1e6);
    Ok(tune::fastest(&shape, &variants, &secs, start).unwrap_or_else(|| {
        tracing::warn!(class, "matmul autotune: no candidate ran; using the static default");
        static_default(gpu, &p)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Transpose;

    #[test]
    fn class_keys_separate_forms_sizes_and_layouts() {
        let p = |m, n, k, t| Problem { m, n, k, t };
        assert_eq!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(100, 300, 700, Transpose::NT)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(128, 512, 784, Transpose::TN)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(128, 512, 20, Transpose::NT)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NN)), class_key(&p(128, 510, 784, Transpose::NN)));
    }
}
