//! 2-D convolution (PyTorch's `nn.Conv2d`), forward and backward, NCHW f32 (kernels in
//! `shaders/conv.wgsl`, float64 references in [`crate::reference::conv`]). Pooling lives in
//! [`super::pool`] (re-exported here under its earlier paths); the window geometry both share is
//! [`Window2d`].
//!
//! * conv: x `[N, C, H, W]`, weight `[O, C/G, KH, KW]` (G groups: output channel o sees the
//!   C/G inputs of its group; G = C = O is depthwise), bias `[O]`, y `[N, O, OH, OW]` with
//!   `OH = (H + PH + PB − KH) / SH + 1` (zero padding PH above and PB below, which may differ:
//!   `F.pad` folded in), and an optional fused activation
//!   `y = act(conv(x, w) + b)`. The backward takes `dy`, the gradient of the **pre-activation**
//!   output (run [`crate::kernels::act_backward`] first when an activation was fused), and gives
//!   dx (optional: the lowest trainable layer skips it), dw and db (optional: a layer without bias).
//! * flatten is [`Tensor::reshape`].
//!
//! Two implementations of the convolution; a [`ConvScratch`] (the scratch buffers, allocated once
//! by the caller) is made for one of them, and the launchers run that one:
//! * [`ConvAlgo::Direct`] (the default, `direct.rs`): one kernel each for y, dx, dw and db. The
//!   forward computes 4 or 8 output channels of one pixel per invocation; dx gathers, per input
//!   pixel and block of 4 input channels, the taps that reach it (a col2im-style gather, no
//!   scatter, no atomics); dw sums, per weight tap and block of 4 output channels, over a slice of
//!   the `N·OH` output rows, and when there are several slices (long batches of large images) a
//!   last kernel adds the slices' partial gradients in slice order. Scratch: those partials only
//!   (at most 16 MiB, usually none).
//!   Grouped convolutions run the same kernels, each channel block inside one group; depthwise
//!   ones have kernels of their own (`dw_*`: one channel per invocation, about 3× faster than
//!   the blocked ones there, whose blocks would hold one useful channel).
//! * [`ConvAlgo::Im2col`] (`im2col.rs`, ungrouped convolutions only): im2col into `cols [chunk·OH·OW, C·KH·KW]`, then the
//!   matmul kernel (`y = cols·Wᵀ` with the bias and activation fused, `dW = dYᵀ·cols`,
//!   `dcols = dY·W`), a permute between the matmul's pixel-major rows and NCHW, and col2im as a
//!   gather. The batch runs in chunks of images so that the scratch stays bounded (64 MiB of
//!   columns) and the matmul's inner dimension for dW (`chunk·OH·OW`) stays within the loop
//!   budget of llvmpipe/lavapipe; per-chunk weight gradients are added in chunk order. A chunk
//!   of more than 1,024 output pixels also splits its weight gradient's inner dimension: one
//!   `dW` product per slice of its rows into a partial gradient, added in slice order with the
//!   chunks' (split-K; `im2col::dw_split_rows` sizes the slices to the caches). Rows of
//!   `C·KH·KW` that are not a multiple of 4 (ResNet's 3-channel 7×7 stem: 147) are padded with
//!   zeros to one where that adds at most 5 % (148), the weight widened to match (`pad_cols`), so
//!   that the matmul reads both operands as vec4s (the stem's forward product 1.31×, its weight
//!   gradient 1.26× on lavapipe: medians of alternating runs, BENCHMARKS.md C2).
//!
//! Both are deterministic (fixed summation order, no atomics) and tested against the same
//! references. A training or inference plan takes the one [`choose_algo`] (`choose.rs`) measured
//! faster for the layer's shape and use on this device (remembered in the autotune cache file,
//! `HEADSWAP_CONV` forces one): which is faster depends on the layer (few input channels favour
//! the direct forward, long `C·KH·KW` rows the matmul) and on the adapter, so it is measured
//! rather than ruled. [`ConvScratch::new`] takes Direct, the default: it needs almost no memory
//! (im2col holds `C·KH·KW` floats per output pixel of a chunk), and it is the simpler code path
//! (one dispatch per gradient, no chunking). Timings of the two on lavapipe and llvmpipe GL are in
//! BENCHMARKS.md ("Measurements behind code choices"); `bench_direct_vs_im2col` in
//! `tests/kernel_conv.rs` measures them on any adapter
//! (`cargo test --test kernel_conv bench_direct_vs_im2col -- --ignored --nocapture`).
//!
//! ```no_run
//! use headswap::{Gpu, Tensor, kernels::{Activation, conv::{self, Conv2dShape, ConvScratch}}};
//! let gpu = Gpu::new()?;
//! let shape = Conv2dShape::new(1, 1, 3, 3, 1, 2, 1, 0); // N, C, H, W, O, kernel, stride, padding
//! let x = Tensor::from_slice(&gpu, &shape.x_shape(), &[1., 2., 3., 4., 5., 6., 7., 8., 9.])?;
//! let w = Tensor::from_slice(&gpu, &shape.w_shape(), &[1., 1., 1., 1.])?;
//! let mut y = Tensor::zeros(&gpu, &shape.y_shape())?;
//! let scratch = ConvScratch::new(&gpu, &shape)?;
//! conv::conv2d_forward(&gpu, &shape, &x, &w, None, Activation::Identity, &mut y, &scratch)?;
//! assert_eq!(y.download(&gpu)?, vec![12., 16., 24., 28.]);
//! # Ok::<(), headswap::Error>(())
//! ```

mod choose;
mod direct;
mod im2col;

use super::reduce::ensure_loop_budget;
use super::window::{WG, WindowParams, ensure_f32, slices_for, u32_of};
use super::{Activation, Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

/// Pooling, under its earlier paths (it lives in [`super::pool`]).
pub use super::pool::{
    Pool2dShape, avg_pool2d_backward, avg_pool2d_backward_dispatch, avg_pool2d_forward, avg_pool2d_forward_dispatch,
    global_avg_pool_backward, global_avg_pool_backward_dispatch, global_avg_pool_forward, global_avg_pool_forward_dispatch,
    max_pool2d_backward, max_pool2d_backward_dispatch, max_pool2d_forward, max_pool2d_forward_dispatch,
};
pub use super::window::Window2d;
pub use choose::{ConvUse, algo_class_key, choose_algo};

pub(crate) const CONV_BACKWARD_BIAS: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_bias", bindings: &[R, RW] };
pub(crate) const SUM_PARTS: Kernel = Kernel { source: &source::CONV, entry: "sum_parts", bindings: &[R, RW] };

/// The geometry of a 2-D convolution, PyTorch's `nn.Conv2d(c, o, (kh, kw), (sh, sw), (ph, pw),
/// groups=groups)` applied to a batch of `n` images `h × w`, optionally after an asymmetric zero
/// padding (`F.pad(x, (pw, pr, ph, pb))`, folded into the convolution: `ph`/`pb`/`pw`/`pr` are
/// the padding above, below, left and right).
///
/// With `groups > 1` the channels split into `groups` groups of `C/groups` inputs and
/// `O/groups` outputs each, the weight is `[O, C/groups, KH, KW]`, and output channel `o` sees
/// only the inputs of its group (`groups = C = O`: depthwise). [`Conv2dShape::new`] builds the
/// square, symmetric, ungrouped form; [`Conv2dShape::with_kernel_hw`],
/// [`Conv2dShape::with_stride_hw`], [`Conv2dShape::with_padding`] and
/// [`Conv2dShape::with_groups`] change one aspect each:
///
/// ```
/// use headswap::kernels::conv::Conv2dShape;
/// // CREPE's first layer: F.pad(x, (0, 0, 254, 254)), Conv2d(1, 128, (512, 1), stride (4, 1))
/// let s = Conv2dShape::new(1, 1, 1024, 1, 128, 1, 1, 0).with_kernel_hw(512, 1).with_stride_hw(4, 1).with_padding([254, 254, 0, 0]);
/// assert_eq!(s.y_shape(), [1, 128, 256, 1]);
/// // a MobileNetV2 depthwise 3×3, stride 2
/// let d = Conv2dShape::new(8, 32, 56, 56, 32, 3, 2, 1).with_groups(32);
/// assert_eq!(d.w_shape(), [32, 1, 3, 3]);
/// ```
///
/// Note that [`Default`] gives `groups: 0`, which [`Conv2dShape::validate`] rejects: start from
/// [`Conv2dShape::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Conv2dShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride along the height.
    pub sh: usize,
    /// Stride along the width.
    pub sw: usize,
    /// Zero padding above.
    pub ph: usize,
    /// Zero padding left.
    pub pw: usize,
    /// Zero padding below ([`Conv2dShape::new`]: `ph`).
    pub pb: usize,
    /// Zero padding right ([`Conv2dShape::new`]: `pw`).
    pub pr: usize,
    /// Groups of channels (1: an ordinary convolution; C: depthwise).
    pub groups: usize,
}

impl Conv2dShape {
    /// A square kernel `k × k` with the same stride and padding along both axes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, stride: usize, pad: usize) -> Conv2dShape {
        Conv2dShape { n, c, h, w, o, kh: k, kw: k, sh: stride, sw: stride, ph: pad, pw: pad, pb: pad, pr: pad, groups: 1 }
    }

    /// The same with a `kh × kw` kernel.
    pub fn with_kernel_hw(self, kh: usize, kw: usize) -> Conv2dShape {
        Conv2dShape { kh, kw, ..self }
    }

    /// The same with stride `(sh, sw)`.
    pub fn with_stride_hw(self, sh: usize, sw: usize) -> Conv2dShape {
        Conv2dShape { sh, sw, ..self }
    }

    /// The same with zero padding `[top, bottom, left, right]` (`F.pad(x, (left, right, top,
    /// bottom))` in front of the convolution).
    pub fn with_padding(self, [top, bottom, left, right]: [usize; 4]) -> Conv2dShape {
        Conv2dShape { ph: top, pb: bottom, pw: left, pr: right, ..self }
    }

    /// The same with `groups` groups of channels.
    pub fn with_groups(self, groups: usize) -> Conv2dShape {
        Conv2dShape { groups, ..self }
    }

    /// The padding `[top, bottom, left, right]`.
    pub fn padding(&self) -> [usize; 4] {
        [self.ph, self.pb, self.pw, self.pr]
    }

    /// Input channels per group (`C/groups`, the weight's second dimension).
    pub fn c_per_group(&self) -> usize {
        self.c / self.groups.max(1)
    }

    /// Output channels per group (`O/groups`).
    pub fn o_per_group(&self) -> usize {
        self.o / self.groups.max(1)
    }

    /// Whether this is a depthwise convolution with one output per input channel
    /// (`groups = C = O`), which has kernels of its own.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.groups == self.o
    }

    /// The kernel window's geometry over one input plane (shared with pooling); what is per
    /// channel (C, O) is this shape's.
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
            ceil: false,
        }
    }

    /// `(OH, OW)`; a dimension is 0 when the kernel does not fit the padded input (or a size or
    /// stride is 0). [`Conv2dShape::validate`] rejects such shapes.
    pub fn out_hw(&self) -> (usize, usize) {
        self.window().out_hw()
    }

    /// `[N, C, H, W]`
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// `[O, C/groups, KH, KW]`
    pub fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c_per_group(), self.kh, self.kw]
    }

    /// `[N, O, OH, OW]`
    pub fn y_shape(&self) -> [usize; 4] {
        let (oh, ow) = self.out_hw();
        [self.n, self.o, oh, ow]
    }

    /// `C/groups·KH·KW`, the length of one weight row (the im2col row length) and the terms of
    /// one output's sum.
    pub fn patch_len(&self) -> usize {
        self.c_per_group() * self.kh * self.kw
    }

    /// `Err(Shape)` unless every size and stride is positive, `groups` divides both channel
    /// counts, the output is not empty and every tensor fits 32-bit indices.
    pub fn validate(&self) -> Result<()> {
        let op = "conv2d";
        let s = self;
        ensure(s.n > 0 && s.c > 0 && s.h > 0 && s.w > 0 && s.o > 0, op, || {
            format!("every size must be positive: {} images of {} channels, {}×{}, {} output channels", s.n, s.c, s.h, s.w, s.o)
        })?;
        ensure(s.groups > 0 && s.c.is_multiple_of(s.groups) && s.o.is_multiple_of(s.groups), op, || {
            format!("groups = {} must be positive and divide both the {} input and the {} output channels", s.groups, s.c, s.o)
        })?;
        let win = s.window();
        win.ensure_positive(op, "kernel")?;
        win.ensure_not_empty(op, "kernel")?;
        let x = s.x_shape().iter().product::<usize>();
        let y = s.y_shape().iter().product::<usize>();
        let w = s.w_shape().iter().product::<usize>();
        for (what, v) in [("N·C·H·W", x), ("N·O·OH·OW", y), ("O·C/groups·KH·KW", w)] {
            u32_of(v, op, what)?;
        }
        win.ensure_indexable(op)
    }

    fn params(&self) -> WindowParams {
        WindowParams { n: self.n as u32, c: self.c as u32, o: self.o as u32, groups: self.groups as u32, ..self.window().params() }
    }
}

/// How a convolution is computed (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConvAlgo {
    /// Direct kernels, no scratch memory.
    #[default]
    Direct,
    /// im2col + the matmul kernel, in chunks of images.
    Im2col,
}

/// The scratch buffers of one convolution shape, allocated once by the caller (a training plan
/// keeps one per layer). [`ConvAlgo::Direct`]: the per-slice weight gradients when the
/// `N·OH·OW` reduction is split (long batches of large images), else nothing.
/// [`ConvAlgo::Im2col`]: the column buffer of one chunk of images (reused for the column
/// gradient), its pixel-major product (`[chunk·OH·OW, O]`) and, when the batch takes several
/// chunks or a chunk's weight gradient is split (split-K), the partial weight gradients.
#[derive(Debug)]
pub struct ConvScratch {
    shape: Conv2dShape,
    algo: ConvAlgo,
    /// Images per chunk (im2col).
    chunk: usize,
    /// Slices of the direct weight gradient and the `N·OH` rows each one sums.
    dw_slices: usize,
    dw_rows: usize,
    cols: Option<Tensor>,
    rows: Option<Tensor>,
    parts: Option<Tensor>,
    /// im2col's forward weight widened to padded rows (`im2col::forward_row_len`), where the
    /// forward pads its columns.
    wpad: Option<Tensor>,
    /// Elements between two partial weight gradients in `parts` (im2col: a multiple of 64
    /// floats, so each view is bindable at the 256-byte offset alignment).
    part_stride: usize,
    /// im2col: rows (output pixels) of a chunk that one weight-gradient product sums over; a
    /// chunk with more runs several products into `parts` (split-K, `im2col::dw_split_rows`).
    dw_split_rows: usize,
}

impl ConvScratch {
    /// Scratch for the default algorithm ([`ConvAlgo::Direct`]: no buffers).
    pub fn new(gpu: &Gpu, shape: &Conv2dShape) -> Result<ConvScratch> {
        Self::with_algo(gpu, shape, ConvAlgo::default())
    }

    /// Scratch for `algo`.
    pub fn with_algo(gpu: &Gpu, shape: &Conv2dShape, algo: ConvAlgo) -> Result<ConvScratch> {
        shape.validate()?;
        let mut s = ConvScratch {
            shape: *shape,
            algo,
            chunk: shape.n,
            dw_slices: 1,
            dw_rows: 0,
            cols: None,
            rows: None,
            parts: None,
            wpad: None,
            part_stride: 0,
            dw_split_rows: usize::MAX,
        };
        if algo == ConvAlgo::Direct {
            let (slices, rows) = direct::weight_slices(shape)?;
            (s.dw_slices, s.dw_rows) = (slices, rows);
            if slices > 1 {
                s.part_stride = shape.o * shape.patch_len();
                s.parts = Some(Tensor::alloc(gpu, &[slices, s.part_stride], DType::F32, "conv_dw_slices")?);
            }
            return Ok(s);
        }
        let (oh, ow) = shape.out_hw();
        let plane = oh * ow;
        let patch = shape.patch_len();
        s.chunk = im2col::images_per_chunk(shape)?;
        let rows = s.chunk * plane;
        let row_len = im2col::forward_row_len(gpu, shape, s.chunk);
        s.cols = Some(Tensor::alloc(gpu, &[rows, row_len], DType::F32, "conv_im2col_cols")?);
        if row_len != patch {
            s.wpad = Some(Tensor::alloc(gpu, &[shape.o, row_len], DType::F32, "conv_im2col_padded_weight")?);
        }
        s.rows = Some(Tensor::alloc(gpu, &[rows, shape.o], DType::F32, "conv_im2col_rows")?);
        let chunks = shape.n.div_ceil(s.chunk);
        // the weight gradient's rows: the padded ones where the batch is one chunk (im2col::backward)
        let dw_len = if chunks == 1 { row_len } else { patch };
        s.dw_split_rows = im2col::dw_split_rows(shape, rows, dw_len, chunks);
        let parts = chunks * rows.div_ceil(s.dw_split_rows);
        if parts > 1 {
            s.part_stride = (shape.o * dw_len).next_multiple_of(64);
            s.parts = Some(Tensor::alloc(gpu, &[parts, s.part_stride], DType::F32, "conv_im2col_dw_parts")?);
        }
        Ok(s)
    }

    /// The algorithm these buffers serve.
    pub fn algo(&self) -> ConvAlgo {
        self.algo
    }

    /// The shape these buffers were made for.
    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }

    /// Images per im2col chunk (the batch for [`ConvAlgo::Direct`]).
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Bytes of GPU memory held.
    pub fn bytes(&self) -> u64 {
        [&self.cols, &self.rows, &self.parts, &self.wpad].iter().filter_map(|t| t.as_ref()).map(|t| t.bytes()).sum()
    }

    fn check(&self, shape: &Conv2dShape, op: &str) -> Result<()> {
        ensure(self.shape == *shape, op, || format!("the scratch was made for {:?}, the call is for {shape:?}", self.shape))
    }

    /// (first image, images) of each chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.shape.n).step_by(self.chunk).map(|n0| (n0, self.chunk.min(self.shape.n - n0)))
    }

    /// Views of `cols` and `rows` for a chunk of `b` images (offset 0: always aligned).
    fn views(&self, b: usize) -> Result<(Tensor, Tensor)> {
        self.views_with(b, self.shape.patch_len())
    }

    /// The same with column rows of `row_len` values (the forward's padded rows).
    fn views_with(&self, b: usize, row_len: usize) -> Result<(Tensor, Tensor)> {
        let (oh, ow) = self.shape.out_hw();
        let rows = b * oh * ow;
        let (Some(cols), Some(out)) = (&self.cols, &self.rows) else {
            return Err(Error::invalid("conv2d: the scratch holds no im2col buffers"));
        };
        Ok((cols.view(0, &[rows, row_len])?, out.view(0, &[rows, self.shape.o])?))
    }
}

impl ConvAlgo {
    /// `direct` or `im2col`.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Direct => "direct",
            ConvAlgo::Im2col => "im2col",
        }
    }

    /// The algorithm called `name` (see [`ConvAlgo::name`]).
    pub fn from_name(name: &str) -> Option<ConvAlgo> {
        [ConvAlgo::Direct, ConvAlgo::Im2col].into_iter().find(|a| a.name() == name)
    }
}

/// Builds `y = act(conv(x, w) + b)`: x `[N, C, H, W]`, w `[O, C, KH, KW]`, b `[O]` (or none),
/// y `[N, O, OH, OW]`, with the algorithm of `scratch` (made for this shape).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_dispatches(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    y: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let op = "conv2d_forward";
    shape.validate()?;
    scratch.check(shape, op)?;
    ensure_f32(x, &shape.x_shape(), op, "x")?;
    ensure_f32(w, &shape.w_shape(), op, "weight")?;
    if let Some(b) = b {
        ensure_f32(b, &[shape.o], op, "bias")?;
    }
    ensure_f32(y, &shape.y_shape(), op, "y")?;
    match scratch.algo {
        ConvAlgo::Direct => Ok(vec![direct::forward(gpu, shape, x, w, b, act, y)?]),
        ConvAlgo::Im2col => im2col::forward(gpu, shape, x, w, b, act, y, scratch),
    }
}

/// `y = act(conv(x, w) + b)`, run at once.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    y: &mut Tensor,
    scratch: &ConvScratch,
) -> Result<()> {
    let d = conv2d_forward_dispatches(gpu, shape, x, w, b, act, y, scratch)?;
    gpu.run("conv2d_forward", &d.iter().collect::<Vec<_>>())
}

/// Builds the gradients of a convolution from `dy` (`[N, O, OH, OW]`, the gradient of the
/// pre-activation output): `dx` `[N, C, H, W]` (skipped when `None`), `dw` `[O, C, KH, KW]`
/// and `db` `[O]` (skipped when `None`). Every output is overwritten, not accumulated.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_dispatches(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: &Tensor,
    db: Option<&Tensor>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    backward_dispatches(gpu, shape, x, w, dy, dx, Some(dw), db, scratch)
}

/// The input gradient `dx` alone of a frozen convolution that backward passes through (a
/// trainable layer lies below it): no weight or bias gradient is computed, and `x` is not read.
pub fn conv2d_backward_input_dispatches(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    backward_dispatches(gpu, shape, x, w, dy, Some(dx), None, None, scratch)
}

#[allow(clippy::too_many_arguments)]
fn backward_dispatches(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: Option<&Tensor>,
    db: Option<&Tensor>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward";
    shape.validate()?;
    scratch.check(shape, op)?;
    ensure_f32(x, &shape.x_shape(), op, "x")?;
    ensure_f32(w, &shape.w_shape(), op, "weight")?;
    ensure_f32(dy, &shape.y_shape(), op, "dy")?;
    if let Some(dx) = dx {
        ensure_f32(dx, &shape.x_shape(), op, "dx")?;
    }
    if let Some(dw) = dw {
        ensure_f32(dw, &shape.w_shape(), op, "dw")?;
    }
    if let Some(db) = db {
        ensure_f32(db, &[shape.o], op, "db")?;
    }
    let mut out = match scratch.algo {
        ConvAlgo::Direct => {
            let mut v = Vec::new();
            if let Some(dx) = dx {
                v.push(direct::backward_input(gpu, shape, dy, w, dx)?);
            }
            if let Some(dw) = dw {
                v.extend(direct::backward_weight(gpu, shape, x, dy, dw, scratch)?);
            }
            v
        }
        ConvAlgo::Im2col => im2col::backward(gpu, shape, x, w, dy, dx, dw, scratch)?,
    };
    if let Some(db) = db {
        out.push(backward_bias(gpu, shape, dy, db)?);
    }
    Ok(out)
}

/// The gradients of a convolution, run at once.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    gpu: &Gpu,
    shape: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&mut Tensor>,
    dw: &mut Tensor,
    db: Option<&mut Tensor>,
    scratch: &ConvScratch,
) -> Result<()> {
    let d = conv2d_backward_dispatches(gpu, shape, x, w, dy, dx.map(|t| &*t), dw, db.map(|t| &*t), scratch)?;
    gpu.run("conv2d_backward", &d.iter().collect::<Vec<_>>())
}

/// `dw[i] = Σ_q parts[q·stride + i]` in q order.
fn sum_parts(gpu: &Gpu, parts: &Tensor, dw: &Tensor, count: usize, stride: usize) -> Result<Dispatch> {
    ensure_loop_budget("conv2d_backward (dw)", count + 2, || format!("{count} partial gradients"))?;
    let p = WindowParams { n: count as u32, c: stride as u32, total: dw.len() as u32, ..WindowParams::default() };
    Dispatch::new(gpu, SUM_PARTS, &[], bytemuck::bytes_of(&p), &[parts, dw], groups_1d(dw.len(), WG))
}

fn backward_bias(gpu: &Gpu, s: &Conv2dShape, dy: &Tensor, db: &Tensor) -> Result<Dispatch> {
    let op = "conv2d_backward (db)";
    let (oh, ow) = s.out_hw();
    let len = s.n * oh * ow;
    // unrolled by 4, plus a tail and the segment loop per image
    let slices = slices_for(op, s.o, |k| len.div_ceil(k) / 4 + 2 * (s.n.div_ceil(k) + 1) + 4)?;
    let p = WindowParams { total: s.o as u32, ..s.params() };
    let groups = groups_1d(s.o, WG / slices);
    Dispatch::new(gpu, CONV_BACKWARD_BIAS, &[("SLICES", slices as f64)], bytemuck::bytes_of(&p), &[dy, db], groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        let s = Conv2dShape::new(1, 3, 13, 11, 4, 3, 2, 1);
        assert_eq!(s.out_hw(), (7, 6));
        assert_eq!(Conv2dShape::new(1, 3, 13, 11, 4, 5, 1, 0).out_hw(), (9, 7));
        assert_eq!(Conv2dShape::new(1, 1, 3, 3, 1, 5, 1, 0).out_hw(), (0, 0));
        assert!(Conv2dShape::new(1, 1, 3, 3, 1, 5, 1, 0).validate().is_err());
        assert!(Conv2dShape::new(1, 1, 3, 3, 1, 3, 0, 0).validate().is_err());
        // asymmetric padding: only the sum of each axis' two sides counts for the size
        let s = Conv2dShape::new(1, 1, 10, 8, 1, 3, 1, 0).with_padding([2, 0, 0, 1]);
        assert_eq!(s.out_hw(), (10, 7));
        assert_eq!(Conv2dShape::new(1, 1, 9, 1, 1, 1, 1, 0).with_kernel_hw(5, 1).with_stride_hw(2, 1).out_hw(), (3, 1));
    }

    #[test]
    fn groups_must_divide_both_channel_counts() {
        let s = Conv2dShape::new(1, 6, 5, 5, 9, 3, 1, 1);
        assert!(s.with_groups(3).validate().is_ok());
        assert_eq!(s.with_groups(3).w_shape(), [9, 2, 3, 3]);
        for g in [0, 2, 4, 6] {
            let e = s.with_groups(g).validate().unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{e:?}");
            assert!(e.to_string().contains("conv2d") && e.to_string().contains("groups"), "{e}");
        }
        assert!(Conv2dShape::new(1, 6, 5, 5, 6, 3, 1, 1).with_groups(6).is_depthwise());
        assert!(!Conv2dShape::new(1, 6, 5, 5, 12, 3, 1, 1).with_groups(6).is_depthwise());
    }
}
