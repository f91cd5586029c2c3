//! 2-D convolution (PyTorch's `nn.Conv2d`), max and average pooling and global average pooling,
//! forward and backward, NCHW f32 (kernels in `shaders/conv.wgsl`, float64 references in
//! [`crate::reference::conv`]).
//!
//! * conv: x `[N, C, H, W]`, weight `[O, C, KH, KW]`, bias `[O]`, y `[N, O, OH, OW]` with
//!   `OH = (H + 2·PH − KH) / SH + 1` (zero padding), and an optional fused activation
//!   `y = act(conv(x, w) + b)`. The backward takes `dy`, the gradient of the **pre-activation**
//!   output (run [`crate::kernels::act_backward`] first when an activation was fused), and gives
//!   dx (optional: the lowest trainable layer skips it), dw and db (optional: a layer without bias).
//! * max pool: stores the argmax of each window (u32, the index `iy·W + ix` in the input plane,
//!   as PyTorch's `return_indices`; ties keep the first index); the backward routes the gradient
//!   there. Average pool counts the padding (`count_include_pad = true`). No `ceil_mode`, no
//!   dilation; `PH ≤ KH/2` as PyTorch requires.
//! * flatten is [`Tensor::reshape`].
//!
//! Two implementations of the convolution, chosen by [`ConvScratch`] (which owns the scratch
//! buffers, allocated once by the caller):
//! * [`ConvAlgo::Direct`] (the default): one kernel each for y, dx, dw and db. The forward computes 4 or 8 output
//!   channels of one pixel per invocation; dx gathers, per input pixel and block of 4 input
//!   channels, the taps that reach it (a col2im-style gather, no scatter, no atomics); dw sums,
//!   per weight tap and block of 4 output channels, over a slice of the `N·OH` output rows, and
//!   when there are several slices (long batches of large images) a last kernel adds the slices'
//!   partial gradients in slice order. Scratch: those partials only (at most 16 MiB, usually none).
//! * [`ConvAlgo::Im2col`]: im2col into `cols [chunk·OH·OW, C·KH·KW]`, then the matmul kernel
//!   (`y = cols·Wᵀ` with the bias and activation fused, `dW = dYᵀ·cols`, `dcols = dY·W`), a
//!   permute between the matmul's pixel-major rows and NCHW, and col2im as a gather. The batch
//!   runs in chunks of images so that the scratch stays bounded (64 MiB of columns) and the
//!   matmul's inner dimension for dW (`chunk·OH·OW`) stays within the loop budget of
//!   llvmpipe/lavapipe; per-chunk weight gradients are added in chunk order.
//!
//! Both are deterministic (fixed summation order, no atomics) and tested against the same
//! references. A training or inference plan takes the one [`choose_algo`] measured faster for the
//! layer's shape and use on this device (remembered in the autotune cache file, `HEADSWAP_CONV`
//! forces one); [`ConvScratch::new`] takes Direct, the default: it needs almost no memory (im2col holds `C·KH·KW` floats
//! per output pixel of a chunk: 3 to 9 MiB for the layers of a small CNN at batch 64, more for
//! wider ones), it is the simpler code path (one dispatch per gradient, no chunking), and on
//! lavapipe neither form is consistently faster. At batch 64 (Vulkan lavapipe; GL llvmpipe in
//! brackets) the direct forward took 0.35–0.65× (0.7×) the im2col time on layers with few input
//! channels (1→16 at 28×28 k3, 3→16 at 32×32 k5 s2), the two were within about ±15% at
//! `C·KH·KW` = 144 (16→32 at 14×14), and im2col + matmul was ahead by 15–25% (2×) on the forward
//! at `C·KH·KW` = 288 (32→64 at 7×7). The backward without dx (the lowest trainable layer) was
//! faster direct on every layer (1.2–2.3×); the backward with dx was within ±25% on Vulkan, with
//! im2col up to 1.5× faster on GL.
//! Measured on a shared 2-core machine (noisy); rerun the `bench_direct_vs_im2col` test in
//! `tests/kernel_conv.rs` on the target adapter
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

use super::matmul::{Epilogue, Transpose, matmul_dispatch};
use super::reduce::{LOOP_BUDGET, SLICE_LEN, ensure_loop_budget};
use super::{Activation, Kernel, R, RW, ensure, source};
use crate::error::{Error, Result};
use crate::gpu::pipelines::groups_1d;
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const CONV_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "conv_forward", bindings: &[R, R, R, RW] };
pub(crate) const CONV_BACKWARD_INPUT: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_input", bindings: &[R, R, RW] };
pub(crate) const CONV_BACKWARD_WEIGHT: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_weight", bindings: &[R, R, RW] };
pub(crate) const CONV_BACKWARD_BIAS: Kernel = Kernel { source: &source::CONV, entry: "conv_backward_bias", bindings: &[R, RW] };
pub(crate) const MAX_POOL_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "max_pool_forward", bindings: &[R, RW, RW] };
pub(crate) const MAX_POOL_BACKWARD: Kernel = Kernel { source: &source::CONV, entry: "max_pool_backward", bindings: &[R, R, RW] };
pub(crate) const MAX_POOL_BACKWARD_TILED: Kernel =
    Kernel { source: &source::CONV, entry: "max_pool_backward_tiled", bindings: &[R, R, RW] };
pub(crate) const AVG_POOL_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "avg_pool_forward", bindings: &[R, RW] };
pub(crate) const AVG_POOL_BACKWARD: Kernel = Kernel { source: &source::CONV, entry: "avg_pool_backward", bindings: &[R, RW] };
pub(crate) const GLOBAL_AVG_POOL_FORWARD: Kernel = Kernel { source: &source::CONV, entry: "global_avg_pool_forward", bindings: &[R, RW] };
pub(crate) const GLOBAL_AVG_POOL_BACKWARD: Kernel = Kernel { source: &source::CONV, entry: "global_avg_pool_backward", bindings: &[R, RW] };
pub(crate) const IM2COL: Kernel = Kernel { source: &source::CONV, entry: "im2col", bindings: &[R, RW] };
pub(crate) const IM2COL_ROWS: Kernel = Kernel { source: &source::CONV, entry: "im2col_rows", bindings: &[R, RW] };
pub(crate) const COL2IM: Kernel = Kernel { source: &source::CONV, entry: "col2im", bindings: &[R, RW] };
pub(crate) const COL2IM_ROWS: Kernel = Kernel { source: &source::CONV, entry: "col2im_rows", bindings: &[R, RW] };
pub(crate) const NCHW_TRANSPOSE: Kernel = Kernel { source: &source::CONV, entry: "nchw_transpose", bindings: &[R, RW] };
pub(crate) const SUM_PARTS: Kernel = Kernel { source: &source::CONV, entry: "sum_parts", bindings: &[R, RW] };

/// Invocations per workgroup of every conv.wgsl kernel.
const WG: u32 = 64;
/// Input channels per invocation of `conv_backward_input` (`CB` in conv.wgsl), output channels
/// per invocation of `conv_backward_weight`.
const CHANNEL_BLOCK: usize = 4;
/// Bytes of the per-slice weight gradients of the direct backward, at most (unless the loop
/// budget needs more slices).
const DW_PARTS_MAX_BYTES: usize = 16 << 20;

/// Rows (`images·OH·OW`) of one im2col chunk: bounds the matmul's inner dimension for dW
/// (about 1.25 loop iterations per element) well within [`LOOP_BUDGET`].
const IM2COL_MAX_ROWS: usize = 32_768;
/// Bytes of the im2col buffer of one chunk, at most (unless one image alone needs more).
const IM2COL_MAX_BYTES: usize = 64 << 20;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ConvParams {
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
}

fn u32_of(v: usize, op: &str, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(format!("{op}: {what} = {v} does not fit the kernels' 32-bit indices")))
}

/// Loop iterations of a window nest, `rows` outer iterations of `cols` inner ones, counted as
/// lavapipe counts them: a loop of t trips costs t + 2 (its exit test runs as one more iteration,
/// and lanes that leave at different trips keep the loop going; col2im_rows was measured to stop
/// after 18 per channel for a 3 × 3 nest that runs 9 inner and 3 outer trips), so
/// rows·(cols + 2) + rows + 2, plus one for the enclosing loop's own trip.
fn nest_cost(rows: usize, cols: usize) -> usize {
    rows * (cols + 2) + rows + 3
}

/// `SLICES` for a sliced reduction of `outputs` results, where `iterations(s)` is the loop count
/// of one slice when each output is split in `s`: the smallest power of two (≤ 64) keeping a
/// slice under [`SLICE_LEN`], raised while there are fewer than 256 invocations in all and the
/// slices stay long, and checked against the loop budget.
fn slices_for(op: &str, outputs: usize, iterations: impl Fn(usize) -> usize) -> Result<u32> {
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
fn ensure_tensor(t: &Tensor, shape: &[usize], op: &str, name: &str) -> Result<()> {
    ensure(t.shape() == shape, op, || format!("{name} is {:?}, expected {shape:?}", t.shape()))?;
    ensure(t.dtype() == DType::F32, op, || format!("{name} must be f32, it is {:?}", t.dtype()))
}

/// Output size of one dimension, 0 when the window does not fit (or a size is 0).
fn out_len(input: usize, k: usize, stride: usize, pad: usize) -> usize {
    if stride == 0 || k == 0 || input == 0 || input + 2 * pad < k { 0 } else { (input + 2 * pad - k) / stride + 1 }
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// The geometry of a 2-D convolution, PyTorch's `nn.Conv2d(c, o, (kh, kw), (sh, sw), (ph, pw))`
/// applied to a batch of `n` images `h × w`.
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
    /// Zero padding above and below.
    pub ph: usize,
    /// Zero padding left and right.
    pub pw: usize,
}

impl Conv2dShape {
    /// A square kernel `k × k` with the same stride and padding along both axes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, stride: usize, pad: usize) -> Conv2dShape {
        Conv2dShape { n, c, h, w, o, kh: k, kw: k, sh: stride, sw: stride, ph: pad, pw: pad }
    }

    /// `(OH, OW)`; a dimension is 0 when the kernel does not fit the padded input (or a size or
    /// stride is 0). [`Conv2dShape::validate`] rejects such shapes.
    pub fn out_hw(&self) -> (usize, usize) {
        (out_len(self.h, self.kh, self.sh, self.ph), out_len(self.w, self.kw, self.sw, self.pw))
    }

    /// `[N, C, H, W]`
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// `[O, C, KH, KW]`
    pub fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }

    /// `[N, O, OH, OW]`
    pub fn y_shape(&self) -> [usize; 4] {
        let (oh, ow) = self.out_hw();
        [self.n, self.o, oh, ow]
    }

    /// `C·KH·KW`, the length of one weight row (the im2col row length).
    pub fn patch_len(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// `Err(Shape)` unless every size and stride is positive, the output is not empty and every
    /// tensor fits 32-bit indices.
    pub fn validate(&self) -> Result<()> {
        let op = "conv2d";
        let s = self;
        ensure(s.n > 0 && s.c > 0 && s.h > 0 && s.w > 0 && s.o > 0, op, || {
            format!("every size must be positive: {} images of {} channels, {}×{}, {} output channels", s.n, s.c, s.h, s.w, s.o)
        })?;
        ensure(s.kh > 0 && s.kw > 0 && s.sh > 0 && s.sw > 0, op, || {
            format!("kernel and stride must be positive: kernel {}×{}, stride {}×{}", s.kh, s.kw, s.sh, s.sw)
        })?;
        let (oh, ow) = s.out_hw();
        ensure(oh > 0 && ow > 0, op, || {
            format!(
                "a {}×{} kernel does not fit a {}×{} input padded by ({}, {}): the output would be empty",
                s.kh, s.kw, s.h, s.w, s.ph, s.pw
            )
        })?;
        let x = s.x_shape().iter().product::<usize>();
        let y = s.y_shape().iter().product::<usize>();
        let w = s.w_shape().iter().product::<usize>();
        for (what, v) in [("N·C·H·W", x), ("N·O·OH·OW", y), ("O·C·KH·KW", w), ("H + 2·PH", s.h + 2 * s.ph), ("W + 2·PW", s.w + 2 * s.pw)]
        {
            u32_of(v, op, what)?;
        }
        Ok(())
    }

    fn params(&self) -> ConvParams {
        let (oh, ow) = self.out_hw();
        ConvParams {
            n: self.n as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            o: self.o as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            sh: self.sh as u32,
            sw: self.sw as u32,
            ph: self.ph as u32,
            pw: self.pw as u32,
            oh: oh as u32,
            ow: ow as u32,
            ..ConvParams::default()
        }
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
/// chunks, the per-chunk weight gradients.
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
    /// Elements between two partial weight gradients in `parts` (im2col: a multiple of 64
    /// floats, so each view is bindable at the 256-byte offset alignment).
    part_stride: usize,
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
            part_stride: 0,
        };
        if algo == ConvAlgo::Direct {
            let (slices, rows) = weight_slices(shape)?;
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
        ensure(im2col_fits(shape), "conv2d im2col", || {
            format!("one image has {plane} output pixels, more than the {IM2COL_MAX_ROWS} of one chunk; use ConvAlgo::Direct")
        })?;
        let by_rows = IM2COL_MAX_ROWS / plane;
        let by_bytes = IM2COL_MAX_BYTES / (plane * patch * 4).max(1);
        s.chunk = shape.n.min(by_rows).min(by_bytes).max(1);
        let rows = s.chunk * plane;
        s.cols = Some(Tensor::alloc(gpu, &[rows, patch], DType::F32, "conv_im2col_cols")?);
        s.rows = Some(Tensor::alloc(gpu, &[rows, shape.o], DType::F32, "conv_im2col_rows")?);
        let chunks = shape.n.div_ceil(s.chunk);
        if chunks > 1 {
            s.part_stride = (shape.o * patch).next_multiple_of(64);
            s.parts = Some(Tensor::alloc(gpu, &[chunks, s.part_stride], DType::F32, "conv_im2col_dw_parts")?);
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
        [&self.cols, &self.rows, &self.parts].iter().filter_map(|t| t.as_ref()).map(|t| t.bytes()).sum()
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
        let (oh, ow) = self.shape.out_hw();
        let rows = b * oh * ow;
        let (Some(cols), Some(out)) = (&self.cols, &self.rows) else {
            return Err(Error::invalid("conv2d: the scratch holds no im2col buffers"));
        };
        Ok((cols.view(0, &[rows, self.shape.patch_len()])?, out.view(0, &[rows, self.shape.o])?))
    }
}

/// What a layer does with its convolution, which decides what [`choose_algo`] measures: the
/// forward only (inference, a frozen layer), or the forward and the backward, with dx (a layer
/// with trainable layers below) or without (the lowest trainable layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvUse {
    Forward,
    Train { dx: bool },
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
    format!("conv n{} c{} {}x{} o{} k{}x{} s{}x{} p{}x{} {u}", bucket(s.n), s.c, s.h, s.w, s.o, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw)
}

/// Whether im2col can run `shape`: one image's output pixels fit one chunk of columns.
fn im2col_fits(shape: &Conv2dShape) -> bool {
    let (oh, ow) = shape.out_hw();
    oh * ow <= IM2COL_MAX_ROWS
}

impl super::tune::Tunable for ConvAlgo {
    const ENV: &'static str = "HEADSWAP_CONV";
    const WHAT: &'static str = "convolution algorithm";
    const ALL: &'static [ConvAlgo] = &[ConvAlgo::Direct, ConvAlgo::Im2col];
    fn name(self) -> &'static str {
        ConvAlgo::name(self)
    }
}

/// Which algorithm a convolution of `shape` used as `usage` runs on this device, by the
/// autotuner's order ([`super::tune`]):
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
    let usable = |a: ConvAlgo| a == ConvAlgo::Direct || im2col_fits(shape);
    let ask = super::tune::Ask {
        class: algo_class_key(shape, usage),
        static_choice: ConvAlgo::Direct,
        fallback: ConvAlgo::Direct,
        usable: &usable,
    };
    let measure = || if im2col_fits(shape) { measure_algos(gpu, shape, usage) } else { Ok(ConvAlgo::Direct) };
    Ok(super::tune::choose(gpu, ask, measure)?.0)
}

/// Times both algorithms on `shape` doing what `usage` names; returns the faster.
fn measure_algos(gpu: &Gpu, shape: &Conv2dShape, usage: ConvUse) -> Result<ConvAlgo> {
    let started = std::time::Instant::now();
    let t = |dims: &[usize]| super::tune::scratch(gpu, dims);
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
    let secs = super::tune::time_candidates(gpu, "conv_autotune", &lists, 1)?;
    let algos: Vec<ConvAlgo> = candidates.iter().map(|c| c.0).collect();
    super::tune::fastest(&algo_class_key(shape, usage), &algos, &secs, started)
        .ok_or_else(|| Error::invalid(format!("conv2d: no algorithm ran {shape:?} on this adapter")))
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
    ensure_tensor(x, &shape.x_shape(), op, "x")?;
    ensure_tensor(w, &shape.w_shape(), op, "weight")?;
    if let Some(b) = b {
        ensure_tensor(b, &[shape.o], op, "bias")?;
    }
    ensure_tensor(y, &shape.y_shape(), op, "y")?;
    match scratch.algo {
        ConvAlgo::Direct => Ok(vec![forward_direct(gpu, shape, x, w, b, act, y)?]),
        ConvAlgo::Im2col => forward_im2col(gpu, shape, x, w, b, act, y, scratch),
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
    ensure_tensor(x, &shape.x_shape(), op, "x")?;
    ensure_tensor(w, &shape.w_shape(), op, "weight")?;
    ensure_tensor(dy, &shape.y_shape(), op, "dy")?;
    if let Some(dx) = dx {
        ensure_tensor(dx, &shape.x_shape(), op, "dx")?;
    }
    if let Some(dw) = dw {
        ensure_tensor(dw, &shape.w_shape(), op, "dw")?;
    }
    if let Some(db) = db {
        ensure_tensor(db, &[shape.o], op, "db")?;
    }
    let mut out = match scratch.algo {
        ConvAlgo::Direct => {
            let mut v = Vec::new();
            if let Some(dx) = dx {
                v.push(backward_input_direct(gpu, shape, dy, w, dx)?);
            }
            if let Some(dw) = dw {
                v.extend(backward_weight_direct(gpu, shape, x, dy, dw, scratch)?);
            }
            v
        }
        ConvAlgo::Im2col => backward_im2col(gpu, shape, x, w, dy, dx, dw, scratch)?,
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

/// Workgroups `[pixels / 64, channel blocks, images]` of the direct kernels.
fn grid(op: &str, pixels: usize, blocks: usize, images: usize) -> Result<[u32; 3]> {
    let g = [pixels.div_ceil(WG as usize), blocks, images];
    ensure(g.iter().all(|&v| v <= 65_535), op, || format!("{g:?} workgroups: each dimension must stay within 65,535"))?;
    Ok(g.map(|v| v as u32))
}

fn forward_direct(gpu: &Gpu, s: &Conv2dShape, x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: Activation, y: &Tensor) -> Result<Dispatch> {
    let op = "conv2d_forward";
    ensure_loop_budget(op, s.c * nest_cost(s.kh, s.kw) + 8, || format!("C·KH·KW = {}", s.patch_len()))?;
    let (oh, ow) = s.out_hw();
    // 8 output channels per invocation where there are that many (fewer gathers of x per FMA)
    let ob = if s.o >= 8 { 8 } else { 4 };
    let p = ConvParams { alpha: act.alpha(), ..s.params() };
    let consts =
        [("ACT", act.code() as f64), ("HAS_BIAS", b.is_some() as u32 as f64), ("OB", ob as f64), ("KH", s.kh as f64), ("KW", s.kw as f64)];
    let groups = grid(op, oh * ow, s.o.div_ceil(ob), s.n)?;
    Dispatch::new(gpu, CONV_FORWARD, &consts, bytemuck::bytes_of(&p), &[x, w, b.unwrap_or(w), y], groups)
}

fn backward_input_direct(gpu: &Gpu, s: &Conv2dShape, dy: &Tensor, w: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "conv2d_backward (dx)";
    let (ty, tx) = if s.sh == 1 && s.sw == 1 { (s.kh, s.kw) } else { (s.kh.div_ceil(s.sh), s.kw.div_ceil(s.sw)) };
    ensure_loop_budget(op, s.o * nest_cost(ty, tx) + CHANNEL_BLOCK, || format!("O = {} output channels", s.o))?;
    let groups = grid(op, s.h * s.w, s.c.div_ceil(CHANNEL_BLOCK), s.n)?;
    let consts = [("KH", s.kh as f64), ("KW", s.kw as f64)];
    Dispatch::new(gpu, CONV_BACKWARD_INPUT, &consts, bytemuck::bytes_of(&s.params()), &[dy, w, dx], groups)
}

/// (slices, rows per slice) of the direct weight gradient: each slice sums whole rows (n, oy)
/// of OW pixels, about [`SLICE_LEN`] loop iterations, with the partial gradients under
/// [`DW_PARTS_MAX_BYTES`] unless the loop budget needs more slices.
fn weight_slices(s: &Conv2dShape) -> Result<(usize, usize)> {
    let op = "conv2d_backward (dw)";
    let (oh, ow) = s.out_hw();
    let rows = s.n * oh;
    let per_row = ow + 3;
    let mut per_slice = (SLICE_LEN / per_row).max(1);
    let by_memory = (DW_PARTS_MAX_BYTES / (4 * s.o * s.patch_len())).clamp(1, 4096);
    if rows.div_ceil(per_slice) > by_memory {
        per_slice = rows.div_ceil(by_memory);
    }
    ensure_loop_budget(op, per_slice * per_row + 8, || format!("N·OH·OW = {} in at most {by_memory} slices", rows * ow))?;
    Ok((rows.div_ceil(per_slice), per_slice))
}

fn backward_weight_direct(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward (dw)";
    let (slices, per_slice) = (scratch.dw_slices, scratch.dw_rows);
    let p = ConvParams { total: per_slice as u32, ..s.params() };
    let groups = grid(op, s.patch_len(), s.o.div_ceil(CHANNEL_BLOCK), slices)?;
    let Some(parts) = &scratch.parts else {
        return Ok(vec![Dispatch::new(gpu, CONV_BACKWARD_WEIGHT, &[], bytemuck::bytes_of(&p), &[x, dy, dw], groups)?]);
    };
    let partial = Dispatch::new(gpu, CONV_BACKWARD_WEIGHT, &[], bytemuck::bytes_of(&p), &[x, dy, parts], groups)?;
    Ok(vec![partial, sum_parts(gpu, parts, dw, slices, scratch.part_stride)?])
}

/// `dw[i] = Σ_q parts[q·stride + i]` in q order.
fn sum_parts(gpu: &Gpu, parts: &Tensor, dw: &Tensor, count: usize, stride: usize) -> Result<Dispatch> {
    ensure_loop_budget("conv2d_backward (dw)", count + 2, || format!("{count} partial gradients"))?;
    let p = ConvParams { n: count as u32, c: stride as u32, total: dw.len() as u32, ..ConvParams::default() };
    Dispatch::new(gpu, SUM_PARTS, &[], bytemuck::bytes_of(&p), &[parts, dw], groups_1d(dw.len(), WG))
}

fn backward_bias(gpu: &Gpu, s: &Conv2dShape, dy: &Tensor, db: &Tensor) -> Result<Dispatch> {
    let op = "conv2d_backward (db)";
    let (oh, ow) = s.out_hw();
    let len = s.n * oh * ow;
    // unrolled by 4, plus a tail and the segment loop per image
    let slices = slices_for(op, s.o, |k| len.div_ceil(k) / 4 + 2 * (s.n.div_ceil(k) + 1) + 4)?;
    let p = ConvParams { total: s.o as u32, ..s.params() };
    let groups = groups_1d(s.o, WG / slices);
    Dispatch::new(gpu, CONV_BACKWARD_BIAS, &[("SLICES", slices as f64)], bytemuck::bytes_of(&p), &[dy, db], groups)
}

/// Whether a grid of `groups` workgroups fits the adapter's per-dimension limit.
fn fits_grid(gpu: &Gpu, groups: [usize; 3]) -> bool {
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    groups.iter().all(|&g| g <= max)
}

/// im2col of the `b` images from `n0` into `cols`: one invocation per output pixel writing its
/// row, where that row's loop fits the loop budget and the image its grid; else one per column
/// element.
fn im2col(gpu: &Gpu, s: &Conv2dShape, x: &Tensor, cols: &Tensor, n0: usize, b: usize) -> Result<Dispatch> {
    let p = ConvParams { n: b as u32, total: n0 as u32, ..s.params() };
    let (oh, ow) = s.out_hw();
    let groups = [ow.div_ceil(8), oh.div_ceil(8), b];
    if s.c * nest_cost(s.kh, s.kw) + 2 <= LOOP_BUDGET && fits_grid(gpu, groups) {
        let groups = groups.map(|g| g as u32);
        let consts = [("IC", s.c as f64), ("KH", s.kh as f64), ("KW", s.kw as f64)];
        return Dispatch::new(gpu, IM2COL_ROWS, &consts, bytemuck::bytes_of(&p), &[x, cols], groups);
    }
    Dispatch::new(gpu, IM2COL, &[], bytemuck::bytes_of(&p), &[x, cols], groups_1d(cols.len(), WG))
}

/// dx of the `b` images from `n0`, gathered from `dcols`: one invocation per input pixel for all
/// its channels, where that loop fits the loop budget and the image its grid; else one per
/// element.
fn col2im(gpu: &Gpu, s: &Conv2dShape, dcols: &Tensor, dx: &Tensor, n0: usize, b: usize) -> Result<Dispatch> {
    let p = ConvParams { n: b as u32, total: n0 as u32, ..s.params() };
    let (ty, tx) = (s.kh.div_ceil(s.sh), s.kw.div_ceil(s.sw));
    let groups = [s.w.div_ceil(8), s.h.div_ceil(8), b];
    if s.c * nest_cost(ty, tx) + 2 <= LOOP_BUDGET && fits_grid(gpu, groups) {
        let groups = groups.map(|g| g as u32);
        return Dispatch::new(gpu, COL2IM_ROWS, &[("IC", s.c as f64)], bytemuck::bytes_of(&p), &[dcols, dx], groups);
    }
    Dispatch::new(gpu, COL2IM, &[], bytemuck::bytes_of(&p), &[dcols, dx], groups_1d(b * s.c * s.h * s.w, WG))
}

/// `dst[b, k, r] = src[b, r, k]` for `b` images, the NCHW side offset by image `n0`: from
/// pixel-major `[b, OH·OW, O]` to NCHW `y` (`to_nchw`), or from NCHW `dy` to pixel-major.
fn transpose(gpu: &Gpu, s: &Conv2dShape, src: &Tensor, dst: &Tensor, n0: usize, b: usize, to_nchw: bool) -> Result<Dispatch> {
    let (oh, ow) = s.out_hw();
    let plane = (oh * ow) as u32;
    let (r, k) = if to_nchw { (plane, s.o as u32) } else { (s.o as u32, plane) };
    let p = ConvParams { n: b as u32, h: r, w: k, c: (!to_nchw) as u32, total: n0 as u32, ..ConvParams::default() };
    Dispatch::new(gpu, NCHW_TRANSPOSE, &[], bytemuck::bytes_of(&p), &[src, dst], [r.div_ceil(8), k.div_ceil(8), b as u32])
}

#[allow(clippy::too_many_arguments)]
fn forward_im2col(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    y: &Tensor,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let w2 = w.reshape(&[s.o, s.patch_len()])?;
    let mut out = Vec::new();
    for (n0, nb) in scratch.chunks() {
        let (cols, rows) = scratch.views(nb)?;
        out.push(im2col(gpu, s, x, &cols, n0, nb)?);
        out.push(matmul_dispatch(gpu, &cols, &w2, &rows, Transpose::NT, Epilogue { bias: b, activation: act })?);
        out.push(transpose(gpu, s, &rows, y, n0, nb, true)?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn backward_im2col(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: Option<&Tensor>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let patch = s.patch_len();
    let w2 = w.reshape(&[s.o, patch])?;
    let mut out = Vec::new();
    for (k, (n0, nb)) in scratch.chunks().enumerate() {
        let (cols, rows) = scratch.views(nb)?;
        out.push(transpose(gpu, s, dy, &rows, n0, nb, false)?);
        // a frozen layer (no dw) only needs dx, which does not read the columns of x
        if let Some(dw) = dw {
            out.push(im2col(gpu, s, x, &cols, n0, nb)?);
            let target = match &scratch.parts {
                Some(parts) => parts.view(k * scratch.part_stride, &[s.o, patch])?,
                None => dw.reshape(&[s.o, patch])?,
            };
            out.push(matmul_dispatch(gpu, &rows, &cols, &target, Transpose::TN, Epilogue::default())?);
        }
        if let Some(dx) = dx {
            // dcols = dY·W into the column buffer (its columns are no longer needed), then gather
            out.push(matmul_dispatch(gpu, &rows, &w2, &cols, Transpose::NN, Epilogue::default())?);
            out.push(col2im(gpu, s, &cols, dx, n0, nb)?);
        }
    }
    if let (Some(parts), Some(dw)) = (&scratch.parts, dw) {
        out.push(sum_parts(gpu, parts, dw, s.n.div_ceil(scratch.chunk), scratch.part_stride)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pooling

/// The geometry of a 2-D pooling, PyTorch's `MaxPool2d((kh, kw), (sh, sw), (ph, pw))` /
/// `AvgPool2d(...)` applied to `n` images of `c` channels, `h × w`.
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
    pub ph: usize,
    pub pw: usize,
}

impl Pool2dShape {
    /// A square window `k × k` with the same stride and padding along both axes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(n: usize, c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Pool2dShape {
        Pool2dShape { n, c, h, w, kh: k, kw: k, sh: stride, sw: stride, ph: pad, pw: pad }
    }

    /// `(OH, OW)`, 0 when the window does not fit.
    pub fn out_hw(&self) -> (usize, usize) {
        (out_len(self.h, self.kh, self.sh, self.ph), out_len(self.w, self.kw, self.sw, self.pw))
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
        ensure(s.kh > 0 && s.kw > 0 && s.sh > 0 && s.sw > 0, op, || {
            format!("window and stride must be positive: window {}×{}, stride {}×{}", s.kh, s.kw, s.sh, s.sw)
        })?;
        ensure(2 * s.ph <= s.kh && 2 * s.pw <= s.kw, op, || {
            format!("padding ({}, {}) must be at most half the {}×{} window", s.ph, s.pw, s.kh, s.kw)
        })?;
        let (oh, ow) = s.out_hw();
        ensure(oh > 0 && ow > 0, op, || {
            format!(
                "a {}×{} window does not fit a {}×{} input padded by ({}, {}): the output would be empty",
                s.kh, s.kw, s.h, s.w, s.ph, s.pw
            )
        })?;
        u32_of(s.x_shape().iter().product(), op, "N·C·H·W")?;
        u32_of(s.h + 2 * s.ph, op, "H + 2·PH")?;
        u32_of(s.w + 2 * s.pw, op, "W + 2·PW")?;
        Ok(())
    }

    fn params(&self, total: usize) -> ConvParams {
        let (oh, ow) = self.out_hw();
        ConvParams {
            n: self.n as u32,
            c: self.c as u32,
            h: self.h as u32,
            w: self.w as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            sh: self.sh as u32,
            sw: self.sw as u32,
            ph: self.ph as u32,
            pw: self.pw as u32,
            oh: oh as u32,
            ow: ow as u32,
            total: total as u32,
            scale: 1.0 / (self.kh * self.kw) as f32,
            ..ConvParams::default()
        }
    }

    /// Whether the windows tile the input exactly: stride = window, no padding, and the input a
    /// whole number of windows (every element in exactly one window).
    pub fn tiles_input(&self) -> bool {
        let (oh, ow) = self.out_hw();
        self.sh == self.kh && self.sw == self.kw && self.ph == 0 && self.pw == 0 && oh * self.kh == self.h && ow * self.kw == self.w
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
        ensure_loop_budget(op, nest_cost(self.kh, self.kw), || format!("a {}×{} window", self.kh, self.kw))
    }

    fn ensure_gather_budget(&self, op: &str) -> Result<()> {
        let (ty, tx) = (self.kh.div_ceil(self.sh), self.kw.div_ceil(self.sw));
        ensure_loop_budget(op, nest_cost(ty, tx), || format!("a {}×{} window", self.kh, self.kw))
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
    ensure_tensor(x, &shape.x_shape(), op, "x")?;
    ensure_tensor(y, &shape.y_shape(), op, "y")?;
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
    ensure_tensor(dy, &shape.y_shape(), op, "dy")?;
    ensure_u32_tensor(argmax, &shape.y_shape(), op, "argmax")?;
    ensure_tensor(dx, &shape.x_shape(), op, "dx")?;
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

/// Builds average pooling (the padding counts: every window divides by KH·KW).
pub fn avg_pool2d_forward_dispatch(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_forward";
    shape.validate()?;
    ensure_tensor(x, &shape.x_shape(), op, "x")?;
    ensure_tensor(y, &shape.y_shape(), op, "y")?;
    shape.ensure_window_budget(op)?;
    let total = y.len();
    let p = shape.params(total);
    Dispatch::new(gpu, AVG_POOL_FORWARD, &[], bytemuck::bytes_of(&p), &[x, y], groups_1d(total, WG))
}

/// Average pooling, run at once.
pub fn avg_pool2d_forward(gpu: &Gpu, shape: &Pool2dShape, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("avg_pool2d_forward", &[&avg_pool2d_forward_dispatch(gpu, shape, x, y)?])
}

/// Builds the average-pool gradient: `dx = Σ dy / (KH·KW)` over the windows holding each element.
pub fn avg_pool2d_backward_dispatch(gpu: &Gpu, shape: &Pool2dShape, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_backward";
    shape.validate()?;
    ensure_tensor(dy, &shape.y_shape(), op, "dy")?;
    ensure_tensor(dx, &shape.x_shape(), op, "dx")?;
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
    ensure_tensor(y, &[n, c], op, "y")?;
    let hw = h * w;
    let outputs = n * c;
    let slices = slices_for(op, outputs, |k| hw.div_ceil(k) / 4 + 8)?;
    let p = ConvParams {
        n: n as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        total: outputs as u32,
        scale: 1.0 / hw as f32,
        ..ConvParams::default()
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
    ensure_tensor(dy, &[n, c], op, "dy")?;
    let total = dx.len();
    let p = ConvParams {
        n: n as u32,
        c: c as u32,
        h: h as u32,
        w: w as u32,
        total: total as u32,
        scale: 1.0 / (h * w) as f32,
        ..ConvParams::default()
    };
    Dispatch::new(gpu, GLOBAL_AVG_POOL_BACKWARD, &[], bytemuck::bytes_of(&p), &[dy, dx], groups_1d(total, WG))
}

/// The global-average-pool gradient, run at once.
pub fn global_avg_pool_backward(gpu: &Gpu, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    gpu.run("global_avg_pool_backward", &[&global_avg_pool_backward_dispatch(gpu, dy, dx)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_wgsl_size() {
        // struct Params { 14 × u32, alpha: f32, scale: f32 } = 64 bytes in WGSL
        assert_eq!(std::mem::size_of::<ConvParams>(), 64);
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        let s = Conv2dShape::new(1, 3, 13, 11, 4, 3, 2, 1);
        assert_eq!(s.out_hw(), (7, 6));
        assert_eq!(Conv2dShape::new(1, 3, 13, 11, 4, 5, 1, 0).out_hw(), (9, 7));
        assert_eq!(Conv2dShape::new(1, 1, 3, 3, 1, 5, 1, 0).out_hw(), (0, 0));
        assert!(Conv2dShape::new(1, 1, 3, 3, 1, 5, 1, 0).validate().is_err());
        assert!(Conv2dShape::new(1, 1, 3, 3, 1, 3, 0, 0).validate().is_err());
        assert_eq!(Pool2dShape::new(1, 1, 13, 11, 2, 2, 0).out_hw(), (6, 5));
        assert!(Pool2dShape::new(1, 1, 13, 11, 2, 2, 2).validate().is_err());
    }

    #[test]
    fn slices_keep_the_loop_budget() {
        assert_eq!(slices_for("t", 10_000, |_| 10).unwrap(), 1);
        let s = slices_for("t", 1, |k| 100_000usize.div_ceil(k)).unwrap();
        assert!(100_000usize.div_ceil(s as usize) <= SLICE_LEN);
        assert!(slices_for("t", 1, |k| 10_000_000usize.div_ceil(k)).is_err());
    }
}
