//! `C = op(A)·op(B)`, with an optional fused bias add and activation.
//!
//! The product has several kernels, the entry points of `shaders/matmul.wgsl` ([`Variant`]); each
//! is correct for every shape and transpose form, and they differ in speed by adapter: register
//! blocks with vec4 loads on lavapipe (a CPU), workgroup-memory tiles on GPUs. [`matmul_dispatch`]
//! asks [`choose`] which one to use for the shape's class (measured once per
//! adapter, remembered in memory and in a cache file); [`matmul_dispatch_variant`] names one.
//!
//! Either operand may be stored in f16 ([`Operand::F16`]: two halves per u32 word, the first in
//! the low 16 bits, rows of `⌈cols/2⌉` words), the arithmetic staying f32:
//! [`matmul_dispatch_ops`] and [`matmul_dispatch_gathered_ops`] take [`Operand`]s. Every adapter
//! reads them with WGSL's `unpack2x16float`; one with `shader-f16` reads the same bytes as
//! `array<f16>` ([`F16Read`]), with the same results bit for bit (widening an f16 is exact).
//!
//! ```no_run
//! use headswap::kernels::matmul::{self, Operand, Options, Transpose, Epilogue};
//! use headswap::{Gpu, Tensor};
//! let gpu = Gpu::new()?;
//! let x = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.])?;
//! let w16 = matmul::upload_f16(&gpu, [1, 3], &[0.5, -1.0, 0.25])?; // u32 [1, 2]: W [1, 3] in f16
//! let y = Tensor::zeros(&gpu, &[2, 1])?;
//! let d = matmul::matmul_dispatch_ops(&gpu, (&x).into(), Operand::F16 { words: &w16, cols: 3 }, &y, Transpose::NT,
//!                                     Epilogue::default(), Options::default())?;
//! gpu.run("y = x·Wᵀ", &[&d])?;
//! assert_eq!(y.download(&gpu)?, vec![-0.75, -1.5]);
//! # Ok::<(), headswap::Error>(())
//! ```

pub mod choose;

use crate::error::{Error, Result};
use crate::gpu::tensor::DType;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::Activation;
use crate::kernels::gather::IndexedDispatch;
use crate::kernels::{Kernel, R, RW, ensure, source, vec4_view};

// Every variant binds A and B a second time (5, 6) as vec4 arrays (read by the block variants)
// and the index buffer of a gathered operand (7).
const BINDINGS: &[crate::kernels::Access] = &[R, R, R, RW, R, R, R];
const REG4X4: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_reg4x4", bindings: BINDINGS };
const BLOCK8X8: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_block8x8", bindings: BINDINGS };
const BLOCK16X16: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_block16x16", bindings: BINDINGS };
const SG32X8: Kernel = Kernel { source: &source::MATMUL_SUBGROUP, entry: "matmul_sg32x8", bindings: BINDINGS };
const SGTALL32X4: Kernel = Kernel { source: &source::MATMUL_SUBGROUP, entry: "matmul_sgtall32x4", bindings: BINDINGS };
const SGWIDE4X32: Kernel = Kernel { source: &source::MATMUL_SUBGROUP, entry: "matmul_sgwide4x32", bindings: BINDINGS };
const TALL32X4: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_tall32x4", bindings: BINDINGS };
const WIDE4X32: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_wide4x32", bindings: BINDINGS };
const TILE64: Kernel = Kernel { source: &source::MATMUL, entry: "matmul_tile64", bindings: BINDINGS };

/// A matmul kernel: one entry point of `shaders/matmul.wgsl`. Every variant computes every shape
/// and transpose form; [`choose`] picks the fastest per adapter and shape class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// As `Block16x16`, with each row of A loaded by one invocation and shared by
    /// `subgroupBroadcast`: 32×8 blocks. Needs subgroups of ≥ 8 invocations.
    Sg32x8,
    /// 8 invocations per workgroup, each a 16×16 block of C; vec4 loads. Best measured on lavapipe.
    Block16x16,
    /// As `Block16x16` with 8×8 blocks: smaller tiles for small outputs, a fifth of the JIT time.
    Block8x8,
    /// 8 invocations of 4×4 blocks stacked down M (32 × 4 per workgroup), vec4 loads: outputs with
    /// few columns (a small head's forward pass).
    Tall32x4,
    /// As `Tall32x4`, the block of B (the same for all 8 invocations) loaded once per subgroup and
    /// shared by `subgroupBroadcast` in the NT form. Needs subgroups of ≥ 8 invocations.
    SgTall32x4,
    /// The same stacked along N (4 × 32): outputs with few rows (a small head's weight gradient).
    Wide4x32,
    /// As `Wide4x32`, the block of A (the same for all 8 invocations) loaded once per subgroup and
    /// shared by `subgroupBroadcast` in the TN form. Needs subgroups of ≥ 8 invocations.
    SgWide4x32,
    /// The simple baseline: a 4×4 block per invocation, scalar loads.
    Reg4x4,
    /// 64×64 tiles through workgroup memory, 256 invocations: the kernel for real GPUs.
    Tile64,
}

impl Variant {
    /// Every variant, in the order the static ranking on a CPU adapter puts them.
    pub const ALL: [Variant; 9] = [
        Variant::Sg32x8,
        Variant::Block16x16,
        Variant::Block8x8,
        Variant::Tall32x4,
        Variant::SgTall32x4,
        Variant::Wide4x32,
        Variant::SgWide4x32,
        Variant::Reg4x4,
        Variant::Tile64,
    ];

    /// The name `HEADSWAP_MATMUL` and the autotune cache file use.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Sg32x8 => "sg32x8",
            Variant::Block16x16 => "block16x16",
            Variant::Block8x8 => "block8x8",
            Variant::Tall32x4 => "tall32x4",
            Variant::SgTall32x4 => "sgtall32x4",
            Variant::Wide4x32 => "wide4x32",
            Variant::SgWide4x32 => "sgwide4x32",
            Variant::Reg4x4 => "reg4x4",
            Variant::Tile64 => "tile64",
        }
    }

    /// The variant called `name` (see [`Variant::name`]).
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The WGSL entry point, as [`Dispatch::name`] reports it.
    pub fn entry(self) -> &'static str {
        self.kernel().entry
    }

    /// The kernel reading operands stored as `a` and `b` (see [`source::matmul_module`]).
    fn kernel_for(self, a: usize, b: usize) -> Kernel {
        let mut k = self.kernel();
        let subgroup = matches!(self, Variant::Sg32x8 | Variant::SgTall32x4 | Variant::SgWide4x32);
        k.source = source::matmul_module(subgroup, a, b);
        k
    }

    fn kernel(self) -> Kernel {
        match self {
            Variant::Sg32x8 => SG32X8,
            Variant::Block16x16 => BLOCK16X16,
            Variant::Block8x8 => BLOCK8X8,
            Variant::Tall32x4 => TALL32X4,
            Variant::SgTall32x4 => SGTALL32X4,
            Variant::Wide4x32 => WIDE4X32,
            Variant::SgWide4x32 => SGWIDE4X32,
            Variant::Reg4x4 => REG4X4,
            Variant::Tile64 => TILE64,
        }
    }

    /// Workgroup counts for an `m × n` output.
    fn groups(self, m: usize, n: usize) -> [u64; 3] {
        let (rows, cols) = match self {
            Variant::Sg32x8 => (32, 64),
            Variant::Block16x16 => (16, 128),
            Variant::Block8x8 => (8, 64),
            Variant::Tall32x4 | Variant::SgTall32x4 => (32, 4),
            Variant::Wide4x32 | Variant::SgWide4x32 => (4, 32),
            Variant::Reg4x4 => (4, 32), // 8×1 invocations of 4×4
            Variant::Tile64 => (64, 64),
        };
        [n.div_ceil(cols) as u64, m.div_ceil(rows) as u64, 1]
    }

    /// Whether the adapter can launch this variant for an `m × n` output (workgroup counts).
    pub fn fits(self, gpu: &Gpu, m: usize, n: usize) -> bool {
        let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
        // A workgroup of 8 must be one subgroup.
        let subgroups = gpu.has(wgpu::Features::SUBGROUP) && gpu.adapter_info().subgroup_min_size >= 8;
        (!matches!(self, Variant::Sg32x8 | Variant::SgTall32x4 | Variant::SgWide4x32) || subgroups)
            && self.groups(m, n).iter().all(|&g| g <= max)
    }
}

/// Which operands are transposed. `NT` means `C = A·Bᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transpose {
    NN,
    NT,
    TN,
    TT,
}

impl Transpose {
    pub(crate) fn flags(self) -> (bool, bool) {
        match self {
            Transpose::NN => (false, false),
            Transpose::NT => (false, true),
            Transpose::TN => (true, false),
            Transpose::TT => (true, true),
        }
    }
}

/// What the matmul does to each output before storing it: `act(c + bias[col])`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub activation: Activation,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub alpha: f32,
    /// A gathered operand's first index position (word 4), set per step.
    pub offset: u32,
    /// Halves per stored row of an f16 A, of an f16 B (read by the f16 operand parts only).
    pub lda: u32,
    pub ldb: u32,
    pub _pad: u32,
}

/// One operand of a product, and how it is stored. The arithmetic is f32 either way.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    /// f32: the tensor, 2-D, in its stored shape.
    F32(&'a Tensor),
    /// f16, two halves per u32 word, the first in the low 16 bits: `words` is u32
    /// `[rows, ⌈cols/2⌉]` holding the stored matrix `[rows, cols]`, each row starting on a word (an
    /// odd `cols` leaves the high half of a row's last word unused). What
    /// [`crate::kernels::gather::pack_rows_f16`] writes on the GPU and [`pack_f16`] on the host.
    F16 { words: &'a Tensor, cols: usize },
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Operand<'a> {
        Operand::F32(t)
    }
}

impl<'a> Operand<'a> {
    /// The buffer holding it.
    pub fn tensor(&self) -> &'a Tensor {
        match *self {
            Operand::F32(t) => t,
            Operand::F16 { words, .. } => words,
        }
    }

    /// Whether it is stored in f16.
    pub fn is_f16(&self) -> bool {
        matches!(self, Operand::F16 { .. })
    }

    /// The stored matrix's shape `[rows, cols]`, checked: a 2-D f32 tensor, or u32 words of
    /// `⌈cols/2⌉` per row.
    fn dims(&self, op: &str, name: &str) -> Result<[usize; 2]> {
        match *self {
            Operand::F32(t) => {
                ensure(t.shape().len() == 2, op, || format!("operand {name} must be 2-D, is {:?}", t.shape()))?;
                Ok([t.shape()[0], t.shape()[1]])
            }
            Operand::F16 { words, cols } => {
                let sh = words.shape();
                ensure(words.dtype() == DType::U32 && sh.len() == 2 && sh[1] == cols.div_ceil(2), op, || {
                    format!("f16 operand {name} of {cols} columns must be u32 [rows, {}], is {:?} {sh:?}", cols.div_ceil(2), words.dtype())
                })?;
                Ok([sh[0], cols])
            }
        }
    }

    /// Elements (f32) or halves (f16) from one stored row to the next.
    fn stride(&self) -> usize {
        match *self {
            Operand::F32(t) => t.shape().get(1).copied().unwrap_or(0),
            Operand::F16 { words, .. } => 2 * words.shape().get(1).copied().unwrap_or(0),
        }
    }

    /// The index of its WGSL part: 0 f32, 1 f16 packed, 2 f16 native.
    fn part(&self, read: F16Read) -> usize {
        match (self, read) {
            (Operand::F32(_), _) => 0,
            (Operand::F16 { .. }, F16Read::Packed) => 1,
            (Operand::F16 { .. }, F16Read::Native) => 2,
        }
    }

    /// The buffer again, for the vec4 binding (5 or 6), or a 16-byte stand-in where it holds less
    /// than one vec4 (never read then).
    fn vec_view(&self, gpu: &Gpu) -> Result<Tensor> {
        match *self {
            Operand::F32(t) => vec4_view(gpu, t),
            Operand::F16 { words, .. } if words.len() >= 2 => Ok(words.clone()),
            Operand::F16 { words, .. } => vec4_view(gpu, words),
        }
    }
}

/// How the kernels read f16 operands: the same bytes, the same f32 values, the same results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum F16Read {
    /// u32 words widened with `unpack2x16float`: every adapter.
    Packed,
    /// `array<f16>`: needs the device feature `shader-f16` (lavapipe has it, GL not).
    Native,
}

impl F16Read {
    /// The default on `gpu`: [`F16Read::Native`] where the device has `shader-f16`, else
    /// [`F16Read::Packed`]; `HEADSWAP_F16_READ=packed|native` overrides it (native where the
    /// device lacks the feature is an error, as is an unknown value).
    pub fn default_for(gpu: &Gpu) -> Result<F16Read> {
        let native = gpu.has(wgpu::Features::SHADER_F16);
        match std::env::var("HEADSWAP_F16_READ").ok().as_deref() {
            None | Some("") => Ok(if native { F16Read::Native } else { F16Read::Packed }),
            Some("packed") => Ok(F16Read::Packed),
            Some("native") => F16Read::Native.check(gpu).map(|_| F16Read::Native),
            Some(other) => Err(Error::invalid(format!("HEADSWAP_F16_READ={other}: expected packed or native"))),
        }
    }

    fn check(self, gpu: &Gpu) -> Result<()> {
        ensure(self == F16Read::Packed || gpu.has(wgpu::Features::SHADER_F16), "matmul", || {
            "reading f16 operands natively needs the device feature shader-f16, which this device lacks".into()
        })
    }
}

/// Choices of [`matmul_dispatch_ops`] and [`matmul_dispatch_gathered_ops`] left to the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The kernel variant; `None`: the one [`choose`] picks for the product's shape class (on f32
    /// operands of that class: f16 operands use the same choice).
    pub variant: Option<Variant>,
    /// How f16 operands are read; `None`: [`F16Read::default_for`].
    pub f16_read: Option<F16Read>,
}

/// `data` (`[rows, cols]`, row-major f32) rounded to f16 (to nearest, ties to even: the `half`
/// crate's `f16::from_f32`) and packed for [`Operand::F16`]: u32 `[rows, ⌈cols/2⌉]`, the first
/// half of each pair in the low 16 bits, an odd row's last high half 0.
pub fn pack_f16(rows: usize, cols: usize, data: &[f32]) -> Result<Vec<u32>> {
    if data.len() != rows * cols {
        return Err(Error::invalid(format!("pack_f16: {} values for a {rows}x{cols} matrix", data.len())));
    }
    let h = |v: f32| half::f16::from_f32(v).to_bits() as u32;
    Ok(data
        .chunks(cols.max(1))
        .take(rows)
        .flat_map(|row| row.chunks(2).map(move |p| h(p[0]) | (p.get(1).map_or(0, |&v| h(v)) << 16)))
        .collect())
}

/// Uploads `data` (`[rows, cols]` f32) as the words of an [`Operand::F16`] (see [`pack_f16`]).
pub fn upload_f16(gpu: &Gpu, [rows, cols]: [usize; 2], data: &[f32]) -> Result<Tensor> {
    let words = pack_f16(rows, cols, data)?;
    Tensor::from_u32(gpu, &[rows, cols.div_ceil(2)], &words)
}

/// Which operand of a gathered product ([`matmul_dispatch_gathered`]) is read through the index
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gathered {
    /// op(A)'s row i is row `indices[offset + i]` of A `[n, K]` (A not transposed).
    A,
    /// op(B)'s row kk is row `indices[offset + kk]` of B `[n, N]` (B not transposed).
    B,
}

/// One product's shape as the kernels see it: `op(A)` is `m × k`, `op(B)` is `k × n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub t: Transpose,
}

impl Problem {
    /// Whether the block variants can read A as vec4s: K and A's contiguous dimension are
    /// multiples of 4 (then every row of the stored A starts 16-byte aligned).
    pub fn vec_a(&self) -> bool {
        let (ta, _) = self.t.flags();
        self.k.is_multiple_of(4) && self.m * self.k >= 4 && (!ta || self.m.is_multiple_of(4))
    }
    /// The same for B.
    pub fn vec_b(&self) -> bool {
        let (_, tb) = self.t.flags();
        self.k.is_multiple_of(4) && self.n * self.k >= 4 && (tb || self.n.is_multiple_of(4))
    }
}

/// (M, N, K) of `op(A)·op(B)`, checked against C and the bias.
fn check(a: Operand<'_>, b: Operand<'_>, c: &Tensor, t: Transpose, epi: &Epilogue<'_>) -> Result<Problem> {
    let op = "matmul";
    ensure(c.shape().len() == 2, op, || format!("C must be 2-D, is {:?}", c.shape()))?;
    let (sa, sb) = (a.dims(op, "A")?, b.dims(op, "B")?);
    let (ta, tb) = t.flags();
    let (m, ka) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (kb, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    ensure(ka == kb, op, || format!("inner dimensions differ: op(A) is {m}x{ka}, op(B) is {kb}x{n} ({t:?})"))?;
    ensure(c.shape() == [m, n], op, || format!("C is {:?}, op(A)·op(B) is [{m}, {n}]", c.shape()))?;
    if let Some(bias) = epi.bias {
        ensure(bias.len() == n, op, || format!("bias has {} elements, C has {n} columns", bias.len()))?;
    }
    check_output_alone(op, a.tensor(), b.tensor(), c, epi)?;
    Ok(Problem { m, n, k: ka, t })
}

/// C is bound read-write and the operands read-only; wgpu tracks usage per buffer, so C sharing a
/// buffer with any operand (even at a distinct range) is a usage conflict that wgpu reports as a
/// long validation dump. Refuse it here, in one line.
fn check_output_alone(op: &str, a: &Tensor, b: &Tensor, c: &Tensor, epi: &Epilogue<'_>) -> Result<()> {
    ensure(c.dtype() == DType::F32, op, || format!("C must be f32, is {:?}", c.dtype()))?;
    let shared = [("A", Some(a)), ("B", Some(b)), ("the bias", epi.bias)]
        .into_iter()
        .filter_map(|(name, t)| t.filter(|t| t.same_buffer(c)).map(|_| name))
        .collect::<Vec<_>>();
    ensure(shared.is_empty(), op, || {
        format!("C must not share a buffer with {} (write the product into a separate tensor)", shared.join(" or "))
    })
}

/// (M, N, K) of a gathered product: the gathered operand's stored rows are the data set's, and
/// its logical rows (M for A, K for B) are the batch, `indices[offset ..]`.
fn check_gathered(
    a: Operand<'_>,
    b: Operand<'_>,
    c: &Tensor,
    t: Transpose,
    epi: &Epilogue<'_>,
    side: Gathered,
    indices: &Tensor,
) -> Result<Problem> {
    let op = "matmul (gathered)";
    ensure(c.shape().len() == 2, op, || format!("C must be 2-D, is {:?}", c.shape()))?;
    let (sa, sb) = (a.dims(op, "A")?, b.dims(op, "B")?);
    ensure(indices.dtype() == crate::gpu::tensor::DType::U32 && indices.shape().len() == 1, op, || {
        format!("indices must be a u32 vector, are {:?} {:?}", indices.dtype(), indices.shape())
    })?;
    let (ta, tb) = t.flags();
    let (m, n) = (c.shape()[0], c.shape()[1]);
    let k = match side {
        Gathered::A => {
            ensure(!ta, op, || format!("a gathered A is read row by row: it cannot be transposed ({t:?})"))?;
            sa[1]
        }
        Gathered::B => {
            ensure(!tb, op, || format!("a gathered B is read row by row: it cannot be transposed ({t:?})"))?;
            if ta { sa[0] } else { sa[1] }
        }
    };
    // the operand that is not gathered has its full logical shape
    let (a_rows, a_cols) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (b_rows, b_cols) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    let (a_ok, b_ok) = match side {
        Gathered::A => (a_cols == k, b_rows == k && b_cols == n),
        Gathered::B => (a_rows == m && a_cols == k, b_cols == n),
    };
    ensure(a_ok && b_ok, op, || format!("A {sa:?} and B {sb:?} ({t:?}, {side:?} gathered) do not make C {:?}", c.shape()))?;
    let batch = if side == Gathered::A { m } else { k };
    ensure(batch <= indices.len(), op, || format!("a batch of {batch} rows needs at least {batch} indices, there are {}", indices.len()))?;
    if let Some(bias) = epi.bias {
        ensure(bias.len() == n, op, || format!("bias has {} elements, C has {n} columns", bias.len()))?;
    }
    check_output_alone(op, a.tensor(), b.tensor(), c, epi)?;
    ensure(!indices.same_buffer(c), op, || "C must not share a buffer with the indices".into())?;
    Ok(Problem { m, n, k, t })
}

/// The launch of `variant` for a checked problem, reading `gather`'s operand through its index
/// buffer where given.
pub(crate) fn build(gpu: &Gpu, v: Variant, a: &Tensor, b: &Tensor, c: &Tensor, p: Problem, epi: Epilogue<'_>) -> Result<Dispatch> {
    build_gathered(gpu, v, a.into(), b.into(), c, p, epi, None, F16Read::Packed)
}

#[allow(clippy::too_many_arguments)]
fn build_gathered(
    gpu: &Gpu,
    v: Variant,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &Tensor,
    p: Problem,
    epi: Epilogue<'_>,
    gather: Option<(Gathered, &Tensor)>,
    read: F16Read,
) -> Result<Dispatch> {
    let (ta, tb) = p.t.flags();
    let side = gather.map(|g| g.0);
    let mut constants = vec![
        ("TRANS_A", ta as u32 as f64),
        ("TRANS_B", tb as u32 as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
        ("ACT", epi.activation.code() as f64),
        ("GATHER_A", (side == Some(Gathered::A)) as u32 as f64),
        ("GATHER_B", (side == Some(Gathered::B)) as u32 as f64),
    ];
    let params = params_of(p, epi, a, b);
    let [x, y, z] = v.groups(p.m, p.n);
    // Dispatch::new reports counts past the adapter's limit; saturate instead of wrapping.
    let groups = [x, y, z].map(|g| g.min(u32::MAX as u64) as u32);
    let bias = epi.bias.unwrap_or(a.tensor());
    let params = bytemuck::bytes_of(&params);
    let (a4, b4) = (a.vec_view(gpu)?, b.vec_view(gpu)?);
    let rows = gather.map_or(&a4, |g| g.1);
    match v {
        Variant::Reg4x4 => constants.extend([("WG_X", 8.0), ("WG_Y", 1.0)]),
        Variant::Block8x8
        | Variant::Block16x16
        | Variant::Sg32x8
        | Variant::Tall32x4
        | Variant::SgTall32x4
        | Variant::Wide4x32
        | Variant::SgWide4x32 => constants.extend([("VEC_A", p.vec_a() as u32 as f64), ("VEC_B", p.vec_b() as u32 as f64)]),
        Variant::Tile64 => {}
    }
    let kernel = v.kernel_for(a.part(read), b.part(read));
    Dispatch::new(gpu, kernel, &constants, params, &[a.tensor(), b.tensor(), bias, c, &a4, &b4, rows], groups)
}

fn params_of(p: Problem, epi: Epilogue<'_>, a: Operand<'_>, b: Operand<'_>) -> MatmulParams {
    let (m, n, k) = (p.m as u32, p.n as u32, p.k as u32);
    let (lda, ldb) = (a.stride() as u32, b.stride() as u32);
    MatmulParams { m, n, k, alpha: epi.activation.alpha(), offset: 0, lda, ldb, _pad: 0 }
}

/// Builds `C = act(op(A)·op(B) + bias)` with one operand read through an index buffer: with
/// [`Gathered::A`], op(A)'s row i is row `indices[offset + i]` of A `[n, K]`; with [`Gathered::B`],
/// op(B)'s row kk is row `indices[offset + kk]` of B `[n, N]` (the gathered operand is not
/// transposed; `n` is any number of stored rows). A training step reads its batch of the data set
/// this way instead of copying it out first. The offset starts at 0; set it per step on the
/// returned launch. The variant is the one [`choose`] chose for the plain product of this shape.
/// Indices must be below `n` (an index past it reads an unspecified value of the buffer).
#[allow(clippy::too_many_arguments)]
pub fn matmul_dispatch_gathered(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    t: Transpose,
    epi: Epilogue<'_>,
    side: Gathered,
    indices: &Tensor,
) -> Result<IndexedDispatch> {
    matmul_dispatch_gathered_ops(gpu, a.into(), b.into(), c, t, epi, side, indices, Options::default())
}

/// As [`matmul_dispatch_gathered`], with the kernel variant named by the caller (tests).
#[allow(clippy::too_many_arguments)]
pub fn matmul_dispatch_gathered_variant(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    t: Transpose,
    epi: Epilogue<'_>,
    side: Gathered,
    indices: &Tensor,
    variant: Variant,
) -> Result<IndexedDispatch> {
    let opts = Options { variant: Some(variant), ..Options::default() };
    matmul_dispatch_gathered_ops(gpu, a.into(), b.into(), c, t, epi, side, indices, opts)
}

/// As [`matmul_dispatch_gathered`], with operands stored in f32 or f16 ([`Operand`]; the gathered
/// one's stored rows are read through the index buffer either way) and the [`Options`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_dispatch_gathered_ops(
    gpu: &Gpu,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &Tensor,
    t: Transpose,
    epi: Epilogue<'_>,
    side: Gathered,
    indices: &Tensor,
    opts: Options,
) -> Result<IndexedDispatch> {
    let p = check_gathered(a, b, c, t, &epi, side, indices)?;
    let (v, read) = resolve(gpu, p, epi, a, b, opts)?;
    let d = build_gathered(gpu, v, a, b, c, p, epi, Some((side, indices)), read)?;
    let batch = if side == Gathered::A { p.m } else { p.k };
    Ok(IndexedDispatch::new(d, bytemuck::cast(params_of(p, epi, a, b)), 4, indices.len(), batch))
}

/// The variant and f16 reading for a checked product.
fn resolve(gpu: &Gpu, p: Problem, epi: Epilogue<'_>, a: Operand<'_>, b: Operand<'_>, opts: Options) -> Result<(Variant, F16Read)> {
    let read = match opts.f16_read {
        _ if !a.is_f16() && !b.is_f16() => F16Read::Packed, // nothing in f16: unused
        Some(r) => {
            r.check(gpu)?;
            r
        }
        None => F16Read::default_for(gpu)?,
    };
    let v = match opts.variant {
        Some(v) => {
            ensure(v.fits(gpu, p.m, p.n), "matmul", || {
                format!("variant {} cannot launch a {}x{} output on this adapter", v.name(), p.m, p.n)
            })?;
            v
        }
        None => choose::choose(gpu, p, epi)?.variant,
    };
    Ok((v, read))
}

/// Builds the launch of `C = act(op(A)·op(B) + bias)` with the variant [`choose`]
/// chooses for this adapter and shape class (which may measure the candidates the first time a
/// class is seen: call it while building a plan, not inside a timed step).
pub fn matmul_dispatch(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &Tensor, t: Transpose, epi: Epilogue<'_>) -> Result<Dispatch> {
    matmul_dispatch_ops(gpu, a.into(), b.into(), c, t, epi, Options::default())
}

/// Builds the launch of `C = act(op(A)·op(B) + bias)` with operands stored in f32 or f16
/// ([`Operand`]), f32 arithmetic, and the [`Options`] (the defaults: the autotuned variant, f16
/// read natively where the device can). C and the bias are f32.
pub fn matmul_dispatch_ops(
    gpu: &Gpu,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &Tensor,
    t: Transpose,
    epi: Epilogue<'_>,
    opts: Options,
) -> Result<Dispatch> {
    let p = check(a, b, c, t, &epi)?;
    let (v, read) = resolve(gpu, p, epi, a, b, opts)?;
    build_gathered(gpu, v, a, b, c, p, epi, None, read)
}

/// As [`matmul_dispatch`], with the kernel variant named by the caller (tests, benchmarks).
pub fn matmul_dispatch_variant(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    t: Transpose,
    epi: Epilogue<'_>,
    variant: Variant,
) -> Result<Dispatch> {
    matmul_dispatch_ops(gpu, a.into(), b.into(), c, t, epi, Options { variant: Some(variant), ..Options::default() })
}

/// `C = op(A)·op(B)`, run at once.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &mut Tensor, t: Transpose) -> Result<()> {
    matmul_ex(gpu, a, b, c, t, Epilogue::default())
}

/// `C = act(op(A)·op(B) + bias)`, run at once.
pub fn matmul_ex(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &mut Tensor, t: Transpose, epi: Epilogue<'_>) -> Result<()> {
    let d = matmul_dispatch(gpu, a, b, c, t, epi)?;
    gpu.run("matmul", &[&d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_wgsl_size() {
        assert_eq!(crate::kernels::wgsl_struct_bytes(crate::kernels::source::MATMUL_WGSL, "Params"), std::mem::size_of::<MatmulParams>());
    }

    #[test]
    fn every_operand_module_has_its_own_name_and_enables_f16_where_native() {
        let mut names = std::collections::HashSet::new();
        for sg in [false, true] {
            for a in 0..3 {
                for b in 0..3 {
                    let m = source::matmul_module(sg, a, b);
                    assert!(names.insert(m.name), "{} twice", m.name);
                    assert_eq!(m.parts[0] == source::ENABLE_F16_WGSL, a == 2 || b == 2, "{}", m.name);
                    assert_eq!(m.parts.contains(&source::MATMUL_SUBGROUP_WGSL), sg, "{}", m.name);
                }
            }
        }
        assert_eq!(source::matmul_module(false, 0, 0).wgsl(), source::MATMUL.wgsl());
        assert_eq!(source::matmul_module(true, 0, 0).wgsl(), source::MATMUL_SUBGROUP.wgsl());
    }

    #[test]
    fn names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_name(v.name()), Some(v));
            assert!(v.entry().starts_with("matmul_"));
        }
        assert_eq!(Variant::from_name("nope"), None);
    }

    #[test]
    fn vec4_layout_rules() {
        let p = |m, n, k, t| Problem { m, n, k, t };
        assert!(p(128, 512, 784, Transpose::NT).vec_a() && p(128, 512, 784, Transpose::NT).vec_b());
        assert!(p(128, 10, 256, Transpose::NT).vec_b(), "Bᵀ is contiguous along K");
        assert!(!p(128, 10, 256, Transpose::NN).vec_b(), "B rows of 10 are not 16-byte aligned");
        assert!(!p(10, 256, 128, Transpose::TN).vec_a(), "Aᵀ rows of 10 are not 16-byte aligned");
        assert!(!p(8, 8, 6, Transpose::NN).vec_a(), "K % 4 != 0");
        assert!(!p(1, 1, 0, Transpose::NN).vec_a(), "an empty operand has no vec4");
    }
}
