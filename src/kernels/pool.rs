//! Max and average pooling and global average pooling, forward and backward, NCHW f32
//! (kernels in `shaders/pool.wgsl`, float64 references in [`crate::reference::conv`]). The
//! window geometry is [`Window2d`]'s, shared with the convolution.
//!
//! * max pool: stores the argmax of each window (u32, the index `iy·W + ix` in the input plane,
//!   as PyTorch's `return_indices`; ties keep the first index); the backward routes the gradient
//!   there. Average pool counts the padding (`count_include_pad = true`): a window divides by
//!   its taps inside the padded input, `KH·KW` except for the windows `ceil_mode` lets reach past
//!   it (PyTorch's divisor). `ceil_mode` and asymmetric padding (each side at most half the
//!   window, as PyTorch requires of its symmetric padding) are supported; no dilation.
//! * global average pooling: `[N, C, H, W]` to `[N, C]` (`AdaptiveAvgPool2d(1)` + flatten).
//!
//! These are also reachable under their earlier paths, `kernels::conv::{Pool2dShape, ...}`.

use super::reduce::ensure_loop_budget;
use super::window::{WG, Window2d, WindowParams, ensure_f32, fits_grid, slices_for, u32_of};
use super::{Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const MAX_POOL_FORWARD: Kernel = Kernel { source: &source::POOL, entry: "max_pool_forward", bindings: &[R, RW, RW] };
pub(crate) const MAX_POOL_BACKWARD: Kernel = Kernel { source: &source::POOL, entry: "max_pool_backward", bindings: &[R, R, RW] };
pub(crate) const MAX_POOL_BACKWARD_TILED: Kernel =
    Kernel { source: &source::POOL, entry: "max_pool_backward_tiled", bindings: &[R, R, RW] };
pub(crate) const AVG_POOL_FORWARD: Kernel = Kernel { source: &source::POOL, entry: "avg_pool_forward", bindings: &[R, RW] };
pub(crate) const AVG_POOL_BACKWARD: Kernel = Kernel { source: &source::POOL, entry: "avg_pool_backward", bindings: &[R, RW] };
pub(crate) const GLOBAL_AVG_POOL_FORWARD: Kernel = Kernel { source: &source::POOL, entry: "global_avg_pool_forward", bindings: &[R, RW] };
pub(crate) const GLOBAL_AVG_POOL_BACKWARD: Kernel = Kernel { source: &source::POOL, entry: "global_avg_pool_backward", bindings: &[R, RW] };

/// The geometry of a 2-D pooling, PyTorch's `MaxPool2d((kh, kw), (sh, sw), (ph, pw),
/// ceil_mode=ceil)` / `AvgPool2d(...)` applied to `n` images of `c` channels, `h × w`, with the
/// padding below (`pb`) and right (`pr`) allowed to differ from above (`ph`) and left (`pw`).
/// [`Pool2dShape::new`] builds the square, symmetric, floor-mode form; the `with_*` methods
/// change one aspect each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pool2dShape {
    pub n: usize,
    pub c: usize,
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
    /// Padding below ([`Pool2dShape::new`]: `ph`).
    pub pb: usize,
    /// Padding right ([`Pool2dShape::new`]: `pw`).
    pub pr: usize,
    /// PyTorch's `ceil_mode`: the output size rounds up (a last, partial window).
    pub ceil: bool,
}

impl Pool2dShape {
    /// A square window `k × k` with the same stride and padding along both axes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(n: usize, c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Pool2dShape {
        Pool2dShape { n, c, h, w, kh: k, kw: k, sh: stride, sw: stride, ph: pad, pw: pad, pb: pad, pr: pad, ceil: false }
    }

    /// The same with a `kh × kw` window.
    pub fn with_kernel_hw(self, kh: usize, kw: usize) -> Pool2dShape {
        Pool2dShape { kh, kw, ..self }
    }

    /// The same with stride `(sh, sw)`.
    pub fn with_stride_hw(self, sh: usize, sw: usize) -> Pool2dShape {
        Pool2dShape { sh, sw, ..self }
    }

    /// The same with padding `[top, bottom, left, right]`.
    pub fn with_padding(self, [top, bottom, left, right]: [usize; 4]) -> Pool2dShape {
        Pool2dShape { ph: top, pb: bottom, pw: left, pr: right, ..self }
    }

    /// The same with `ceil_mode`.
    pub fn with_ceil_mode(self, ceil: bool) -> Pool2dShape {
        Pool2dShape { ceil, ..self }
    }

    /// The window's geometry (shared with convolution).
    pub fn window(&self) -> Window2d {
        Window2d {
            h: self.h,
            w: self.w,
            kh: self.kh,
            kw: self.kw,
            sh: self.sh,
            sw: self.sw,
            ph: self.ph,
            pw: self.pw,
            pb: self.pb,
            pr: self.pr,
            ceil: self.ceil,
        }
    }

    /// `(OH, OW)`, 0 when the window does not fit.
    pub fn out_hw(&self) -> (usize, usize) {
        self.window().out_hw()
    }

    /// `[N, C, H, W]`
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// `[N, C, OH, OW]`
    pub fn y_shape(&self) -> [usize; 4] {
        let (oh, ow) = self.out_hw();
        [self.n, self.c, oh, ow]
    }

    /// `Err(Shape)` unless sizes and strides are positive, the padding is at most half the
    /// window (PyTorch's rule, so every window holds an input element) and the output is not
    /// empty.
    pub fn validate(&self) -> Result<()> {
        let op = "pool2d";
        let s = self;
        ensure(s.n > 0 && s.c > 0 && s.h > 0 && s.w > 0, op, || {
            format!("every size must be positive: {} images of {} channels, {}×{}", s.n, s.c, s.h, s.w)
        })?;
        let win = s.window();
        win.ensure_positive(op, "window")?;
        ensure(2 * s.ph.max(s.pb) <= s.kh && 2 * s.pw.max(s.pr) <= s.kw, op, || {
            format!(
                "padding (top {}, bottom {}, left {}, right {}) must be at most half the {}×{} window",
                s.ph, s.pb, s.pw, s.pr, s.kh, s.kw
            )
        })?;
        win.ensure_not_empty(op, "window")?;
        u32_of(s.x_shape().iter().product(), op, "N·C·H·W")?;
        win.ensure_indexable(op)
    }

    /// The params block; `scale` (average pooling's 1/(KH·KW)) is 0 where a `ceil_mode`
    /// window reaches past the padded input and the kernels divide each window by its own size.
    fn params(&self, total: usize) -> WindowParams {
        let win = self.window();
        WindowParams {
            n: self.n as u32,
            c: self.c as u32,
            total: total as u32,
            scale: if win.windows_whole() { 1.0 / (self.kh * self.kw) as f32 } else { 0.0 },
            ..win.params()
        }
    }

    /// Whether the windows tile the input exactly: stride = window, no padding, and the input a
    /// whole number of windows (every element in exactly one window).
    pub fn tiles_input(&self) -> bool {
        let (oh, ow) = self.out_hw();
        self.sh == self.kh && self.sw == self.kw && self.padding() == [0; 4] && oh * self.kh == self.h && ow * self.kw == self.w
    }

    /// The padding `[top, bottom, left, right]`.
    pub fn padding(&self) -> [usize; 4] {
        [self.ph, self.pb, self.pw, self.pr]
    }

    /// The tiled kernels' window size constants.
    fn window_consts(&self) -> [(&'static str, f64); 2] {
        [("KH", self.kh as f64), ("KW", self.kw as f64)]
    }

    /// The tiled kernels' grid: 4 × 4 output pixels and 4 planes per workgroup, the planes
    /// looping past 65,535 workgroups.
    fn tiled_grid(&self) -> [u32; 3] {
        let (oh, ow) = self.out_hw();
        [ow.div_ceil(4) as u32, oh.div_ceil(4) as u32, (self.n * self.c).div_ceil(4).clamp(1, 65535) as u32]
    }

    /// Whether the tiled kernels run this pool: windows tiling the input, and an output plane
    /// within the grid's limits (else the flat kernels, which have none).
    fn tiled_kernels_fit(&self, gpu: &Gpu) -> bool {
        let (oh, ow) = self.out_hw();
        self.tiles_input() && fits_grid(gpu, [ow.div_ceil(4), oh.div_ceil(4), 1])
    }

    fn ensure_window_budget(&self, op: &str) -> Result<()> {
        ensure_loop_budget(op, self.window().window_cost(), || format!("a {}×{} window", self.kh, self.kw))
    }

    fn ensure_gather_budget(&self, op: &str) -> Result<()> {
        ensure_loop_budget(op, self.window().gather_cost(), || format!("a {}×{} window", self.kh, self.kw))
    }
}

fn ensure_u32_tensor(t: &Tensor, shape: &[usize], op: &str, name: &str) -> Result<()> {
    ensure(t.shape() == shape, op, || format!("{name} is {:?}, expected {shape:?}", t.shape()))?;
    ensure(t.dtype() == DType::U32, op, || format!("{name} must be u32, it is {:?}", t.dtype()))
}

/// Builds max pooling: y `[N, C, OH, OW]` and argmax (u32, same shape: the index `iy·W + ix` of
/// each window's maximum in its input plane; ties keep the first, a NaN wins) from x.
pub fn max_pool2d_forward_dispatch(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &Tensor, argmax: &Tensor) -> Result<Dispatch> {
    let op = "max_pool2d_forward";
    shape.validate()?;
    ensure_f32(x, &shape.x_shape(), op, "x")?;
    ensure_f32(y, &shape.y_shape(), op, "y")?;
    ensure_u32_tensor(argmax, &shape.y_shape(), op, "argmax")?;
    shape.ensure_window_budget(op)?;
    let total = y.len();
    let p = shape.params(total);
    Dispatch::new(gpu, MAX_POOL_FORWARD, &[], bytemuck::bytes_of(&p), &[x, y, argmax], groups_1d(total, WG))
}

/// Max pooling, run at once.
pub fn max_pool2d_forward(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &mut Tensor, argmax: &mut Tensor) -> Result<()> {
    gpu.run("max_pool2d_forward", &[&max_pool2d_forward_dispatch(gpu, shape, x, y, argmax)?])
}

/// Builds the max-pool gradient: `dx[n, c, j] = Σ dy` over the windows whose argmax is `j`
/// (dx is overwritten). Windows that tile the input exactly ([`Pool2dShape::tiles_input`]) take
/// a scatter, one invocation per window; others a gather, one per input element.
pub fn max_pool2d_backward_dispatch(gpu: &Gpu, shape: &Pool2dShape, dy: &Tensor, argmax: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "max_pool2d_backward";
    shape.validate()?;
    ensure_f32(dy, &shape.y_shape(), op, "dy")?;
    ensure_u32_tensor(argmax, &shape.y_shape(), op, "argmax")?;
    ensure_f32(dx, &shape.x_shape(), op, "dx")?;
    let total = dx.len();
    let p = shape.params(total);
    if shape.tiled_kernels_fit(gpu) {
        shape.ensure_window_budget(op)?;
        return Dispatch::new(
            gpu,
            MAX_POOL_BACKWARD_TILED,
            &shape.window_consts(),
            bytemuck::bytes_of(&p),
            &[dy, argmax, dx],
            shape.tiled_grid(),
        );
    }
    shape.ensure_gather_budget(op)?;
    let planes = (shape.n * shape.c).clamp(1, 65535) as u32;
    let groups = [shape.w.div_ceil(8) as u32, shape.h.div_ceil(8) as u32, planes];
    Dispatch::new(gpu, MAX_POOL_BACKWARD, &[], bytemuck::bytes_of(&p), &[dy, argmax, dx], groups)
}

/// The max-pool gradient, run at once.
pub fn max_pool2d_backward(gpu: &Gpu, shape: &Pool2dShape, dy: &Tensor, argmax: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("max_pool2d_backward", &[&max_pool2d_backward_dispatch(gpu, shape, dy, argmax, dx)?])
}

/// Builds average pooling (the padding counts: a window divides by KH·KW, or by its taps inside
/// the padded input where `ceil_mode` lets it reach past).
pub fn avg_pool2d_forward_dispatch(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_forward";
    shape.validate()?;
    ensure_f32(x, &shape.x_shape(), op, "x")?;
    ensure_f32(y, &shape.y_shape(), op, "y")?;
    shape.ensure_window_budget(op)?;
    let total = y.len();
    let p = shape.params(total);
    Dispatch::new(gpu, AVG_POOL_FORWARD, &[], bytemuck::bytes_of(&p), &[x, y], groups_1d(total, WG))
}

/// Average pooling, run at once.
pub fn avg_pool2d_forward(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("avg_pool2d_forward", &[&avg_pool2d_forward_dispatch(gpu, shape, x, y)?])
}

/// Builds the average-pool gradient: `dx = Σ dy / divisor` over the windows holding each element.
pub fn avg_pool2d_backward_dispatch(gpu: &Gpu, shape: &Pool2dShape, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_backward";
    shape.validate()?;
    ensure_f32(dy, &shape.y_shape(), op, "dy")?;
    ensure_f32(dx, &shape.x_shape(), op, "dx")?;
    shape.ensure_gather_budget(op)?;
    let total = dx.len();
    let p = shape.params(total);
    Dispatch::new(gpu, AVG_POOL_BACKWARD, &[], bytemuck::bytes_of(&p), &[dy, dx], groups_1d(total, WG))
}

/// The average-pool gradient, run at once.
pub fn avg_pool2d_backward(gpu: &Gpu, shape: &Pool2dShape, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("avg_pool2d_backward", &[&avg_pool2d_backward_dispatch(gpu, shape, dy, dx)?])
}

/// `[N, C, H, W]` of a global-pool input, checked to be 4-D, f32, non-empty and 32-bit indexable.
fn global_dims(x: &Tensor, op: &str, name: &str) -> Result<[usize; 4]> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape(format!("{op}: {name} must be [N, C, H, W], it is {:?}", x.shape())));
    };
    ensure(x.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", x.dtype()))?;
    ensure(!x.is_empty(), op, || format!("{name} {:?} is empty", x.shape()))?;
    u32_of(x.len(), op, "N·C·H·W")?;
    Ok([n, c, h, w])
}

/// Builds global average pooling: `y[n, c] = mean over (h, w) of x[n, c, h, w]`; x `[N, C, H, W]`,
/// y `[N, C]`.
pub fn global_avg_pool_forward_dispatch(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "global_avg_pool_forward";
    let [n, c, h, w] = global_dims(x, op, "x")?;
    ensure_f32(y, &[n, c], op, "y")?;
    let hw = h * w;
    let outputs = n * c;
    let slices = slices_for(op, outputs, |k| hw.div_ceil(k) / 4 + 8)?;
    let p = WindowParams {
        n: n as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        total: outputs as u32,
        scale: 1.0 / hw as f32,
        ..WindowParams::default()
    };
    Dispatch::new(
        gpu,
        GLOBAL_AVG_POOL_FORWARD,
        &[("SLICES", slices as f64)],
        bytemuck::bytes_of(&p),
        &[x, y],
        groups_1d(outputs, WG / slices),
    )
}

/// Global average pooling, run at once.
pub fn global_avg_pool_forward(gpu: &Gpu, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("global_avg_pool_forward", &[&global_avg_pool_forward_dispatch(gpu, x, y)?])
}

/// Builds the global-average-pool gradient: `dx[n, c, h, w] = dy[n, c] / (H·W)`.
pub fn global_avg_pool_backward_dispatch(gpu: &Gpu, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "global_avg_pool_backward";
    let [n, c, h, w] = global_dims(dx, op, "dx")?;
    ensure_f32(dy, &[n, c], op, "dy")?;
    let total = dx.len();
    let p = WindowParams {
        n: n as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        total: total as u32,
        scale: 1.0 / (h * w) as f32,
        ..WindowParams::default()
    };
    Dispatch::new(gpu, GLOBAL_AVG_POOL_BACKWARD, &[], bytemuck::bytes_of(&p), &[dy, dx], groups_1d(total, WG))
}

/// The global-average-pool gradient, run at once.
pub fn global_avg_pool_backward(gpu: &Gpu, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("global_avg_pool_backward", &[&global_avg_pool_backward_dispatch(gpu, dy, dx)?])
}

pub(crate) const ADAPTIVE_AVG_POOL_FORWARD: Kernel =
    Kernel { source: &source::POOL, entry: "adaptive_avg_pool_forward", bindings: &[R, RW] };
pub(crate) const ADAPTIVE_AVG_POOL_BACKWARD: Kernel =
    Kernel { source: &source::POOL, entry: "adaptive_avg_pool_backward", bindings: &[R, RW] };

/// PyTorch's `AdaptiveAvgPool2d((oh, ow))` over `n` images of `c` channels, `h × w`: output row
/// `oy` averages input rows `[⌊oy·h/oh⌋, ⌈(oy+1)·h/oh⌉)`, columns likewise (windows may overlap
/// and differ in size; `oh = ow = 1` is global average pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AdaptivePool2dShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl AdaptivePool2dShape {
    /// `[N, C, H, W]`
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    /// `[N, C, OH, OW]`
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }

    /// `Err(Shape)` unless every size is positive and the indices fit 32 bits.
    pub fn validate(&self) -> Result<()> {
        let op = "adaptive_avg_pool2d";
        let s = self;
        ensure(s.n > 0 && s.c > 0 && s.h > 0 && s.w > 0 && s.oh > 0 && s.ow > 0, op, || {
            format!("every size must be positive: {} images of {} channels, {}×{} to {}×{}", s.n, s.c, s.h, s.w, s.oh, s.ow)
        })?;
        // checked: the sizes may come from a checkpoint
        let volume = |d: [usize; 4]| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).unwrap_or(usize::MAX);
        u32_of(volume(s.x_shape()), op, "N·C·H·W")?;
        u32_of(volume(s.y_shape()), op, "N·C·OH·OW")?;
        // (i + 1)·out + out in the window arithmetic
        u32_of((s.h + 1) * (s.oh + 1), op, "(H + 1)·(OH + 1)")?;
        u32_of((s.w + 1) * (s.ow + 1), op, "(W + 1)·(OW + 1)")?;
        Ok(())
    }

    /// The largest window along each axis: `⌈h/oh⌉ + 1` rows at most (one more where the
    /// windows straddle), columns likewise.
    fn largest_window(&self) -> (usize, usize) {
        (self.h.div_ceil(self.oh) + 1, self.w.div_ceil(self.ow) + 1)
    }

    /// Outputs whose windows hold one input element, per axis, at most.
    fn largest_reach(&self) -> (usize, usize) {
        (self.oh.div_ceil(self.h) + 1, self.ow.div_ceil(self.w) + 1)
    }

    fn params(&self, total: usize) -> WindowParams {
        WindowParams {
            n: self.n as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            oh: self.oh as u32,
            ow: self.ow as u32,
            total: total as u32,
            ..WindowParams::default()
        }
    }
}

/// Builds adaptive average pooling: y `[N, C, OH, OW]` from x `[N, C, H, W]`.
pub fn adaptive_avg_pool2d_forward_dispatch(gpu: &Gpu, shape: &AdaptivePool2dShape, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "adaptive_avg_pool2d_forward";
    shape.validate()?;
    ensure_f32(x, &shape.x_shape(), op, "x")?;
    ensure_f32(y, &shape.y_shape(), op, "y")?;
    let (rows, cols) = shape.largest_window();
    ensure_loop_budget(op, super::window::nest_cost(rows, cols), || format!("a {rows}×{cols} window"))?;
    let total = y.len();
    Dispatch::new(gpu, ADAPTIVE_AVG_POOL_FORWARD, &[], bytemuck::bytes_of(&shape.params(total)), &[x, y], groups_1d(total, WG))
}

/// Adaptive average pooling, run at once.
pub fn adaptive_avg_pool2d_forward(gpu: &Gpu, shape: &AdaptivePool2dShape, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("adaptive_avg_pool2d_forward", &[&adaptive_avg_pool2d_forward_dispatch(gpu, shape, x, y)?])
}

/// Builds the adaptive-average-pool gradient: each input element gathers `dy / area` of the
/// windows holding it (dx is overwritten).
pub fn adaptive_avg_pool2d_backward_dispatch(gpu: &Gpu, shape: &AdaptivePool2dShape, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "adaptive_avg_pool2d_backward";
    shape.validate()?;
    ensure_f32(dy, &shape.y_shape(), op, "dy")?;
    ensure_f32(dx, &shape.x_shape(), op, "dx")?;
    let (rows, cols) = shape.largest_reach();
    ensure_loop_budget(op, super::window::nest_cost(rows, cols), || format!("{rows}×{cols} windows per input element"))?;
    let total = dx.len();
    Dispatch::new(gpu, ADAPTIVE_AVG_POOL_BACKWARD, &[], bytemuck::bytes_of(&shape.params(total)), &[dy, dx], groups_1d(total, WG))
}

/// The adaptive-average-pool gradient, run at once.
pub fn adaptive_avg_pool2d_backward(gpu: &Gpu, shape: &AdaptivePool2dShape, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("adaptive_avg_pool2d_backward", &[&adaptive_avg_pool2d_backward_dispatch(gpu, shape, dy, dx)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        assert_eq!(Pool2dShape::new(1, 1, 13, 11, 2, 2, 0).out_hw(), (6, 5));
        assert!(Pool2dShape::new(1, 1, 13, 11, 2, 2, 2).validate().is_err());
        assert_eq!(Pool2dShape::new(1, 1, 112, 112, 3, 2, 0).with_ceil_mode(true).out_hw(), (56, 56));
        // CREPE: MaxPool2d((2, 1), (2, 1))
        assert_eq!(Pool2dShape::new(1, 1, 255, 1, 1, 1, 0).with_kernel_hw(2, 1).with_stride_hw(2, 1).out_hw(), (127, 1));
        let lopsided = Pool2dShape::new(1, 1, 7, 7, 3, 2, 0).with_padding([1, 0, 0, 2]);
        assert_eq!(lopsided.out_hw(), (3, 4));
        assert!(lopsided.validate().is_err(), "right padding 2 is more than half of 3");
        // the divisor is per window only where ceil_mode overhangs the padded input
        let ceil = Pool2dShape::new(1, 1, 7, 7, 2, 2, 0).with_ceil_mode(true);
        assert_eq!(ceil.params(1).scale, 0.0);
        assert_eq!(Pool2dShape::new(1, 1, 8, 8, 2, 2, 0).with_ceil_mode(true).params(1).scale, 0.25);
    }
}
