//! Bias add and activations, forward and backward.

use super::{Kernel, R, RW, ensure, source};
use crate::error::Result;
use crate::gpu::pipelines::groups_1d;
use crate::gpu::{Dispatch, Gpu, Tensor};

pub(crate) const BIAS_ADD: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "bias_add", bindings: &[R, RW] };
pub(crate) const ACT_FORWARD: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "act_forward", bindings: &[R, RW] };
pub(crate) const ACT_BACKWARD: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "act_backward", bindings: &[R, R, RW] };
pub(crate) const ADD_ACT: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "add_act", bindings: &[R, R, RW] };
pub(crate) const ADD_ASSIGN: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "add_assign", bindings: &[R, RW] };
pub(crate) const COPY: Kernel = Kernel { source: &source::ELEMENTWISE, entry: "copy", bindings: &[R, RW] };

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// f(x) = x
    #[default]
    Identity,
    Relu,
    /// f(x) = x for x > 0, slope·x otherwise (PyTorch's default slope is 0.01).
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    /// GELU, tanh approximation (PyTorch `approximate='tanh'`).
    Gelu,
    /// f(x) = min(max(x, 0), 6) (PyTorch `ReLU6`, i.e. `hardtanh(x, 0, 6)`); f' = 1 on (0, 6), 0
    /// elsewhere, kinks included (PyTorch's `hardtanh_backward`).
    Relu6,
    /// SiLU (swish): f(x) = x·σ(x); f' = σ(x)·(1 + x·(1 − σ(x))).
    Silu,
    /// f(x) = x·relu6(x + 3)/6 (PyTorch `Hardswish`); f' = 0 for x ≤ −3, x/3 + 1/2 on (−3, 3),
    /// 1 for x ≥ 3: PyTorch's `hardswish_backward` since pytorch/pytorch#148049 (2025; before
    /// it, PyTorch gave −1/2 at x = −3 and 3/2 at x = 3).
    Hardswish,
    /// f(x) = relu6(x + 3)/6 (PyTorch `Hardsigmoid`); f' = 1/6 on (−3, 3), 0 elsewhere, kinks
    /// included (PyTorch's `hardsigmoid_backward`).
    Hardsigmoid,
}

impl Activation {
    /// One of each kind (LeakyReLU at PyTorch's default slope), in code order.
    pub const ALL: [Activation; 10] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Relu6,
        Activation::Silu,
        Activation::Hardswish,
        Activation::Hardsigmoid,
    ];
    /// The code `common.wgsl` uses.
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu(_) => 2,
            Activation::Sigmoid => 3,
            Activation::Tanh => 4,
            Activation::Gelu => 5,
            Activation::Relu6 => 6,
            Activation::Silu => 7,
            Activation::Hardswish => 8,
            Activation::Hardsigmoid => 9,
        }
    }
    /// The LeakyReLU slope (0 for the others).
    pub fn alpha(self) -> f32 {
        match self {
            Activation::LeakyRelu(a) => a,
            _ => 0.0,
        }
    }
    /// Whether f'(z) can be computed from a = f(z): false for GELU, SiLU and Hardswish (not
    /// monotonic: one output, two slopes) and LeakyReLU with slope ≤ 0. A training step keeps the
    /// pre-activation of the layers where it is false (`train::plan`), and `act_backward` refuses
    /// `from_output` for them.
    ///
    /// ReLU6 qualifies exactly (0 < a < 6 ⇔ 0 < z < 6). Hardsigmoid does up to f32 rounding:
    /// within 2 ulps below z = 3, z + 3 rounds to 6 and a = 1, read as the flat part (slope 0
    /// where the input form gives 1/6).
    pub fn grad_from_output(self) -> bool {
        match self {
            Activation::Gelu | Activation::Silu | Activation::Hardswish => false,
            Activation::LeakyRelu(a) => a > 0.0,
            _ => true,
        }
    }
    /// The name used in checkpoints and on the command line.
    pub fn name(self) -> String {
        match self {
            Activation::Identity => "identity".into(),
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu(a) => format!("leaky_relu:{a}"),
            Activation::Sigmoid => "sigmoid".into(),
            Activation::Tanh => "tanh".into(),
            Activation::Gelu => "gelu".into(),
            Activation::Relu6 => "relu6".into(),
            Activation::Silu => "silu".into(),
            Activation::Hardswish => "hardswish".into(),
            Activation::Hardsigmoid => "hardsigmoid".into(),
        }
    }
    /// Parses [`Activation::name`]'s output (`leaky_relu` alone means slope 0.01).
    pub fn parse(s: &str) -> Option<Activation> {
        Some(match s {
            "identity" | "none" | "linear" => Activation::Identity,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu(0.01),
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "gelu" => Activation::Gelu,
            "relu6" => Activation::Relu6,
            "silu" => Activation::Silu,
            "hardswish" => Activation::Hardswish,
            "hardsigmoid" => Activation::Hardsigmoid,
            _ => {
                let slope = s.strip_prefix("leaky_relu:")?.parse().ok()?;
                Activation::LeakyRelu(slope)
            }
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ElementwiseParams {
    pub n: u32,
    pub cols: u32,
    pub alpha: f32,
    pub _pad: u32,
}

fn params(n: usize, cols: usize, act: Activation) -> ElementwiseParams {
    ElementwiseParams { n: n as u32, cols: cols.max(1) as u32, alpha: act.alpha(), _pad: 0 }
}

/// `x[r, c] += bias[c]` in place; x is `[rows, cols]`.
pub fn bias_add_dispatch(gpu: &Gpu, bias: &Tensor, x: &Tensor) -> Result<Dispatch> {
    let cols = *x.shape().last().unwrap_or(&0);
    ensure(bias.len() == cols, "bias_add", || format!("bias has {} elements, x {:?} has {cols} columns", bias.len(), x.shape()))?;
    let p = params(x.len(), cols, Activation::Identity);
    Dispatch::new(gpu, BIAS_ADD, &[], bytemuck::bytes_of(&p), &[bias, x], groups_1d(x.len(), 256))
}

/// `x[r, c] += bias[c]`, run at once.
pub fn bias_add(gpu: &Gpu, bias: &Tensor, x: &mut Tensor) -> Result<()> {
    gpu.run("bias_add", &[&bias_add_dispatch(gpu, bias, x)?])
}

/// `y = act(x)`.
pub fn act_forward_dispatch(gpu: &Gpu, act: Activation, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    ensure(x.shape() == y.shape(), "act_forward", || format!("x is {:?}, y is {:?}", x.shape(), y.shape()))?;
    let p = params(x.len(), 1, act);
    Dispatch::new(gpu, ACT_FORWARD, &[("ACT", act.code() as f64)], bytemuck::bytes_of(&p), &[x, y], groups_1d(x.len(), 256))
}

/// `y = act(x)`, run at once.
pub fn act_forward(gpu: &Gpu, act: Activation, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("act_forward", &[&act_forward_dispatch(gpu, act, x, y)?])
}

/// `dx = dy · act'(z)`; with `from_output`, `input` holds `a = act(z)` instead of `z`.
pub fn act_backward_dispatch(gpu: &Gpu, act: Activation, dy: &Tensor, input: &Tensor, dx: &Tensor, from_output: bool) -> Result<Dispatch> {
    ensure(dy.shape() == input.shape() && dy.shape() == dx.shape(), "act_backward", || {
        format!("dy {:?}, input {:?}, dx {:?} must agree", dy.shape(), input.shape(), dx.shape())
    })?;
    if from_output && !act.grad_from_output() {
        return Err(crate::Error::invalid(format!("the gradient of {} cannot be computed from its output", act.name())));
    }
    let p = params(dy.len(), 1, act);
    let consts = [("ACT", act.code() as f64), ("FROM_OUTPUT", from_output as u32 as f64)];
    Dispatch::new(gpu, ACT_BACKWARD, &consts, bytemuck::bytes_of(&p), &[dy, input, dx], groups_1d(dy.len(), 256))
}

/// `dx = dy · act'(input)`, run at once.
pub fn act_backward(gpu: &Gpu, act: Activation, dy: &Tensor, input: &Tensor, dx: &mut Tensor, from_output: bool) -> Result<()> {
    gpu.run("act_backward", &[&act_backward_dispatch(gpu, act, dy, input, dx, from_output)?])
}

/// `y = act(a + b)`: a residual connection's sum. `a`, `b` and `y` have one length; `y` must
/// not share a buffer with either summand.
pub fn add_act_dispatch(gpu: &Gpu, act: Activation, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch> {
    ensure(a.len() == b.len() && a.len() == y.len(), "add_act", || {
        format!("a {:?}, b {:?}, y {:?} must agree", a.shape(), b.shape(), y.shape())
    })?;
    ensure(!y.same_buffer(a) && !y.same_buffer(b), "add_act", || "y must not share a buffer with a summand".into())?;
    let p = params(a.len(), 1, act);
    Dispatch::new(gpu, ADD_ACT, &[("ACT", act.code() as f64)], bytemuck::bytes_of(&p), &[a, b, y], groups_1d(a.len(), 256))
}

/// `y = act(a + b)`, run at once.
pub fn add_act(gpu: &Gpu, act: Activation, a: &Tensor, b: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("add_act", &[&add_act_dispatch(gpu, act, a, b, y)?])
}

/// `y += x` (accumulates a gradient where a value feeds several layers).
pub fn add_assign_dispatch(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    same_length_apart("add_assign", x, y)?;
    let p = params(x.len(), 1, Activation::Identity);
    Dispatch::new(gpu, ADD_ASSIGN, &[], bytemuck::bytes_of(&p), &[x, y], groups_1d(x.len(), 256))
}

/// `y += x`, run at once.
pub fn add_assign(gpu: &Gpu, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("add_assign", &[&add_assign_dispatch(gpu, x, y)?])
}

/// `y = x`: a copy recorded as a launch, so it can sit between the launches of one compute pass.
pub fn copy_dispatch(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    same_length_apart("copy", x, y)?;
    let p = params(x.len(), 1, Activation::Identity);
    Dispatch::new(gpu, COPY, &[], bytemuck::bytes_of(&p), &[x, y], groups_1d(x.len(), 256))
}

/// `y = x`, run at once.
pub fn copy(gpu: &Gpu, x: &Tensor, y: &mut Tensor) -> Result<()> {
    gpu.run("copy", &[&copy_dispatch(gpu, x, y)?])
}

/// wgpu refuses one buffer bound read-only and read-write in one launch: say so in one line.
fn same_length_apart(op: &str, x: &Tensor, y: &Tensor) -> Result<()> {
    ensure(x.len() == y.len(), op, || format!("x {:?} and y {:?} differ in length", x.shape(), y.shape()))?;
    ensure(!x.same_buffer(y), op, || "x and y must not share a buffer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn params_match_wgsl_size() {
        assert_eq!(std::mem::size_of::<ElementwiseParams>(), 16);
    }
    #[test]
    fn activation_names_round_trip() {
        for a in Activation::ALL {
            assert_eq!(Activation::parse(&a.name()), Some(a));
        }
        assert_eq!(Activation::parse("leaky_relu:0.2"), Some(Activation::LeakyRelu(0.2)));
        assert_eq!(Activation::parse("relu7"), None);
    }
    #[test]
    fn codes_are_distinct_and_match_common_wgsl() {
        let src = super::source::COMMON_WGSL;
        for a in Activation::ALL {
            assert_eq!(Activation::ALL.iter().filter(|b| b.code() == a.code()).count(), 1, "{a:?}");
            // every non-identity code has a case in `activate`
            assert!(a.code() == 0 || src.contains(&format!("case {}u:", a.code())), "{a:?} has no case in common.wgsl");
        }
    }
}
