//! `C = op(A)·op(B)`, with an optional fused bias add and activation.

use super::{Family, Kernel, R, RW, ensure};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::Activation;

pub(crate) const MATMUL_REG4X4: Kernel = Kernel { family: Family::Matmul, entry: "matmul_reg4x4", bindings: &[R, R, R, RW] };

/// Which operands are transposed. `NT` means `C = A·Bᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transpose {
    NN,
    NT,
    TN,
    TT,
}

impl Transpose {
    fn flags(self) -> (bool, bool) {
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
}

/// (M, N, K) of `op(A)·op(B)`, checked against C.
fn dims(a: &Tensor, b: &Tensor, c: &Tensor, t: Transpose) -> Result<(usize, usize, usize)> {
    let op = "matmul";
    ensure(a.shape().len() == 2 && b.shape().len() == 2 && c.shape().len() == 2, op, || {
        format!("operands must be 2-D, got A {:?}, B {:?}, C {:?}", a.shape(), b.shape(), c.shape())
    })?;
    let (ta, tb) = t.flags();
    let (m, ka) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (kb, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    ensure(ka == kb, op, || format!("inner dimensions differ: op(A) is {m}x{ka}, op(B) is {kb}x{n} ({t:?})"))?;
    ensure(c.shape() == [m, n], op, || format!("C is {:?}, op(A)·op(B) is [{m}, {n}]", c.shape()))?;
    Ok((m, n, ka))
}

/// Builds the launch of `C = act(op(A)·op(B) + bias)`.
pub fn matmul_dispatch(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &Tensor, t: Transpose, epi: Epilogue<'_>) -> Result<Dispatch> {
    let (m, n, k) = dims(a, b, c, t)?;
    if let Some(bias) = epi.bias {
        ensure(bias.len() == n, "matmul", || format!("bias has {} elements, C has {n} columns", bias.len()))?;
    }
    let (ta, tb) = t.flags();
    let (wg_x, wg_y) = (8u32, 1u32);
    let constants = [
        ("TRANS_A", ta as u32 as f64),
        ("TRANS_B", tb as u32 as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
        ("ACT", epi.activation.code() as f64),
        ("WG_X", wg_x as f64),
        ("WG_Y", wg_y as f64),
    ];
    let params = MatmulParams { m: m as u32, n: n as u32, k: k as u32, alpha: epi.activation.alpha() };
    let groups = [(n.div_ceil(4) as u32).div_ceil(wg_x), (m.div_ceil(4) as u32).div_ceil(wg_y), 1];
    let bias = epi.bias.unwrap_or(a);
    Dispatch::new(gpu, MATMUL_REG4X4, &constants, bytemuck::bytes_of(&params), &[a, b, bias, c], groups)
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
    #[test]
    fn params_match_wgsl_size() {
        // struct Params { m, n, k: u32, alpha: f32 } = 16 bytes in WGSL
        assert_eq!(std::mem::size_of::<super::MatmulParams>(), 16);
    }
}
