//! The 2-D window geometry that convolution ([`super::conv`]) and pooling ([`super::pool`])
//! share, the params block of their shaders, and the launch arithmetic both use.
//!
//! A convolution and a pooling slide the same window over the same NCHW planes: `KH × KW` taps,
//! stride `(SH, SW)`, zero padding `(PH, PW)`, giving `OH = (H + 2·PH − KH) / SH + 1` rows of
//! output (and `OW` likewise). [`Window2d`] is that geometry, once: its output size, its
//! validity, its fields of the params block, and the loop lengths of a window and of its gather
//! (the taps that reach one input element). What is per channel (a convolution's input and
//! output channels) stays with [`super::conv::Conv2dShape`] and [`super::pool::Pool2dShape`].
//! On the WGSL side the same lives in `shaders/window.wgsl`, prepended to `conv.wgsl` and
//! `pool.wgsl`: the params struct, `window(s)`, `taps(...)` and the sliced reductions.

use super::ensure;
use super::reduce::{SLICE_LEN, ensure_loop_budget};
use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Gpu, Tensor};

/// Invocations per workgroup of the one-dimensional conv.wgsl and pool.wgsl kernels (`WG` there).
pub(crate) const WG: u32 = 64;

/// The params block of every conv.wgsl and pool.wgsl kernel (`struct Params` in window.wgsl):
/// a window's geometry, the channel counts, and per-kernel extras.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct WindowParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
    pub alpha: f32,
    pub scale: f32,
    pub pb: u32,
    pub pr: u32,
    pub groups: u32,
    pub _pad: u32,
}

/// A `kh × kw` window with stride `(sh, sw)` and zero padding `ph` above, `pb` below, `pw` left
/// and `pr` right sliding over `h × w` input planes (PyTorch's `kernel_size`, `stride`,
/// `padding`, and `F.pad`'s asymmetric padding; no dilation). With `ceil` (pooling's
/// `ceil_mode`) the output size rounds up, as PyTorch's: a last window may reach past the bottom
/// (right) padding, but never starts in it.
///
/// Only the top and left padding move the taps (output `oy` reads input rows from
/// `oy·SH − PH`); the bottom and right padding and `ceil` only decide how many outputs there are,
/// so the kernels need `PB`/`PR` only where a window's size counts (average pooling's divisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Window2d {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Padding above.
    pub ph: usize,
    /// Padding left.
    pub pw: usize,
    /// Padding below.
    pub pb: usize,
    /// Padding right.
    pub pr: usize,
    /// PyTorch's `ceil_mode` (pooling).
    pub ceil: bool,
}

/// Output size of one dimension (PyTorch's `pooling_output_shape_pad_lr` without dilation), 0
/// when the window does not fit (or a size is 0).
fn out_len(input: usize, k: usize, stride: usize, lo: usize, hi: usize, ceil: bool) -> usize {
    let padded = input + lo + hi;
    if stride == 0 || k == 0 || input == 0 || padded < k {
        return 0;
    }
    let span = padded - k;
    let mut out = if ceil { span.div_ceil(stride) } else { span / stride } + 1;
    // ceil_mode: the last window must start inside the input or the leading padding
    if ceil && (out - 1) * stride >= input + lo {
        out -= 1;
    }
    out
}

impl Window2d {
    /// `(OH, OW)`; a dimension is 0 when the window does not fit the padded input (or a size or
    /// stride is 0).
    pub fn out_hw(&self) -> (usize, usize) {
        (out_len(self.h, self.kh, self.sh, self.ph, self.pb, self.ceil), out_len(self.w, self.kw, self.sw, self.pw, self.pr, self.ceil))
    }

    /// Whether every window lies inside the padded input (no `ceil_mode` overhang): each then
    /// covers `KH·KW` taps of input or padding.
    pub fn windows_whole(&self) -> bool {
        let (oh, ow) = self.out_hw();
        oh == 0
            || ow == 0
            || ((oh - 1) * self.sh + self.kh <= self.h + self.ph + self.pb && (ow - 1) * self.sw + self.kw <= self.w + self.pw + self.pr)
    }

    /// `Err(Shape)` naming `op` unless the window (`what`: "kernel" or "window") and the stride
    /// are positive.
    pub(crate) fn ensure_positive(&self, op: &str, what: &str) -> Result<()> {
        let s = self;
        ensure(s.kh > 0 && s.kw > 0 && s.sh > 0 && s.sw > 0, op, || {
            format!("{what} and stride must be positive: {what} {}×{}, stride {}×{}", s.kh, s.kw, s.sh, s.sw)
        })
    }

    /// `Err(Shape)` naming `op` unless the window fits the padded input at least once.
    pub(crate) fn ensure_not_empty(&self, op: &str, what: &str) -> Result<()> {
        let s = self;
        let (oh, ow) = s.out_hw();
        ensure(oh > 0 && ow > 0, op, || {
            format!(
                "a {}×{} {what} does not fit a {}×{} input padded by (top {}, bottom {}, left {}, right {}): the output would be empty",
                s.kh, s.kw, s.h, s.w, s.ph, s.pb, s.pw, s.pr
            )
        })
    }

    /// `Err(Shape)` unless the padded extents fit the kernels' 32-bit coordinates.
    pub(crate) fn ensure_indexable(&self, op: &str) -> Result<()> {
        u32_of(self.h + self.ph + self.pb + self.kh, op, "H + padding + KH")?;
        u32_of(self.w + self.pw + self.pr + self.kw, op, "W + padding + KW")?;
        Ok(())
    }

    /// The geometry's fields of the params block (the rest zero).
    pub(crate) fn params(&self) -> WindowParams {
        let (oh, ow) = self.out_hw();
        WindowParams {
            h: self.h as u32,
            w: self.w as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            sh: self.sh as u32,
            sw: self.sw as u32,
            ph: self.ph as u32,
            pw: self.pw as u32,
            pb: self.pb as u32,
            pr: self.pr as u32,
            oh: oh as u32,
            ow: ow as u32,
            ..WindowParams::default()
        }
    }

    /// Loop iterations of one pass over the whole window (see [`nest_cost`]).
    pub(crate) fn window_cost(&self) -> usize {
        nest_cost(self.kh, self.kw)
    }

    /// Taps per axis that reach one input element, at most (`taps()` in window.wgsl visits
    /// every `stride`-th tap); with stride 1 the whole window.
    pub(crate) fn gather_taps(&self) -> (usize, usize) {
        (self.kh.div_ceil(self.sh), self.kw.div_ceil(self.sw))
    }

    /// Loop iterations of one gather (see [`nest_cost`]).
    pub(crate) fn gather_cost(&self) -> usize {
        let (ty, tx) = self.gather_taps();
        nest_cost(ty, tx)
    }
}

pub(crate) fn u32_of(v: usize, op: &str, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(format!("{op}: {what} = {v} does not fit the kernels' 32-bit indices")))
}

/// Loop iterations of a window nest, `rows` outer iterations of `cols` inner ones, counted as
/// lavapipe counts them: a loop of t trips costs t + 2 (its exit test runs as one more iteration,
/// and lanes that leave at different trips keep the loop going; col2im_rows was measured to stop
/// after 18 per channel for a 3 × 3 nest that runs 9 inner and 3 outer trips), so
/// rows·(cols + 2) + rows + 2, plus one for the enclosing loop's own trip.
pub(crate) fn nest_cost(rows: usize, cols: usize) -> usize {
    rows * (cols + 2) + rows + 3
}

/// `SLICES` for a sliced reduction of `outputs` results, where `iterations(s)` is the loop count
/// of one slice when each output is split in `s`: the smallest power of two (≤ 64) keeping a
/// slice under [`SLICE_LEN`], raised while there are fewer than 256 invocations in all and the
/// slices stay long, and checked against the loop budget.
pub(crate) fn slices_for(op: &str, outputs: usize, iterations: impl Fn(usize) -> usize) -> Result<u32> {
    let mut s = 1;
    while s < WG as usize && iterations(s) > SLICE_LEN {
        s *= 2;
    }
    while s < WG as usize && outputs * s < 256 && iterations(s * 2) >= 256 {
        s *= 2;
    }
    ensure_loop_budget(op, iterations(s) + s + 8, || format!("a reduction of {outputs} outputs"))?;
    Ok(s as u32)
}

/// Checks that `t` has exactly `shape` and is f32.
pub(crate) fn ensure_f32(t: &Tensor, shape: &[usize], op: &str, name: &str) -> Result<()> {
    ensure(t.shape() == shape, op, || format!("{name} is {:?}, expected {shape:?}", t.shape()))?;
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", t.dtype()))
}

/// Whether a grid of `groups` workgroups fits the adapter's per-dimension limit.
pub(crate) fn fits_grid(gpu: &Gpu, groups: [usize; 3]) -> bool {
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    groups.iter().all(|&g| g <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_wgsl_size() {
        let wgsl = super::super::source::WINDOW_WGSL;
        assert_eq!(std::mem::size_of::<WindowParams>(), super::super::wgsl_struct_bytes(wgsl, "Params"));
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        let win = |h, w, k, s, p| Window2d { h, w, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, pb: p, pr: p, ceil: false };
        assert_eq!(win(13, 11, 3, 2, 1).out_hw(), (7, 6));
        assert_eq!(win(13, 11, 5, 1, 0).out_hw(), (9, 7));
        assert_eq!(win(13, 11, 2, 2, 0).out_hw(), (6, 5));
        assert_eq!(win(3, 3, 5, 1, 0).out_hw(), (0, 0));
        assert_eq!(win(3, 3, 3, 0, 0).out_hw(), (0, 0));
        assert!(win(3, 3, 5, 1, 0).ensure_not_empty("t", "kernel").is_err());
        assert!(win(3, 3, 3, 0, 0).ensure_positive("t", "kernel").is_err());
        // a 3-wide window at stride 2: at most 2 taps reach one input element
        assert_eq!(win(9, 9, 3, 2, 1).gather_taps(), (2, 2));
        assert_eq!(win(9, 9, 3, 1, 1).gather_taps(), (3, 3));
        // asymmetric padding: F.pad(x, (0, 0, 254, 254)) then a 512×1 kernel at stride 4 (CREPE)
        let crepe = Window2d { h: 1024, w: 1, kh: 512, kw: 1, sh: 4, sw: 1, ph: 254, pb: 254, ..Window2d::default() };
        assert_eq!(crepe.out_hw(), (256, 1));
        let lopsided = Window2d { h: 10, w: 10, kh: 3, kw: 3, sh: 1, sw: 1, ph: 2, pb: 0, pw: 0, pr: 1, ceil: false };
        assert_eq!(lopsided.out_hw(), (10, 9));
    }

    #[test]
    fn ceil_mode_follows_pytorch() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True) on 112×112 (GoogLeNet): 56; floor gives 55
        let pool = |h: usize, k: usize, s: usize, p: usize, ceil: bool| {
            Window2d { h, w: h, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, pb: p, pr: p, ceil }.out_hw().0
        };
        assert_eq!(pool(112, 3, 2, 0, true), 56);
        assert_eq!(pool(112, 3, 2, 0, false), 55);
        assert_eq!(pool(7, 2, 2, 0, true), 4);
        assert_eq!(pool(6, 2, 2, 0, true), 3);
        // the last window would start in the right padding: dropped (out 3, not 4)
        assert_eq!(pool(5, 2, 2, 1, true), 3);
        assert_eq!(pool(5, 2, 2, 1, false), 3);
        let w = Window2d { h: 7, w: 7, kh: 2, kw: 2, sh: 2, sw: 2, ceil: true, ..Window2d::default() };
        assert!(!w.windows_whole());
        assert!(Window2d { ceil: false, ..w }.windows_whole());
    }

    #[test]
    fn slices_keep_the_loop_budget() {
        assert_eq!(slices_for("t", 10_000, |_| 10).unwrap(), 1);
        let s = slices_for("t", 1, |k| 100_000usize.div_ceil(k)).unwrap();
        assert!(100_000usize.div_ceil(s as usize) <= SLICE_LEN);
        assert!(slices_for("t", 1, |k| 10_000_000usize.div_ceil(k)).is_err());
    }
}
