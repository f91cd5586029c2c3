//! The WGSL sources, embedded at compile time, and the shader modules made of them. Every module
//! has `shaders/common.wgsl` prepended, here, the one place that happens.

use crate::gpu::ShaderSource;

pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
pub const MATMUL_SUBGROUP_WGSL: &str = include_str!("../../shaders/matmul_subgroup.wgsl");
/// matmul.wgsl's operand parts (its header): A or B stored as f32, as f16 packed two per u32
/// (every adapter), or as f16 read natively (`shader-f16`, after [`ENABLE_F16_WGSL`]).
pub const MATMUL_A_F32_WGSL: &str = include_str!("../../shaders/matmul_a_f32.wgsl");
pub const MATMUL_B_F32_WGSL: &str = include_str!("../../shaders/matmul_b_f32.wgsl");
pub const MATMUL_A_F16_WGSL: &str = include_str!("../../shaders/matmul_a_f16.wgsl");
pub const MATMUL_B_F16_WGSL: &str = include_str!("../../shaders/matmul_b_f16.wgsl");
pub const MATMUL_A_F16N_WGSL: &str = include_str!("../../shaders/matmul_a_f16n.wgsl");
pub const MATMUL_B_F16N_WGSL: &str = include_str!("../../shaders/matmul_b_f16n.wgsl");
/// `enable f16;`: first in a module that reads f16 natively (a directive must precede everything).
pub const ENABLE_F16_WGSL: &str = include_str!("../../shaders/enable_f16.wgsl");
pub const ELEMENTWISE_WGSL: &str = include_str!("../../shaders/elementwise.wgsl");
pub const REDUCE_WGSL: &str = include_str!("../../shaders/reduce.wgsl");
pub const LOSS_WGSL: &str = include_str!("../../shaders/loss.wgsl");
pub const OPTIM_WGSL: &str = include_str!("../../shaders/optim.wgsl");
pub const METRICS_WGSL: &str = include_str!("../../shaders/metrics.wgsl");
pub const GATHER_WGSL: &str = include_str!("../../shaders/gather.wgsl");
/// Prepended (after common.wgsl) to conv.wgsl and pool.wgsl: their params and window arithmetic.
pub const WINDOW_WGSL: &str = include_str!("../../shaders/window.wgsl");
pub const CONV_WGSL: &str = include_str!("../../shaders/conv.wgsl");
pub const POOL_WGSL: &str = include_str!("../../shaders/pool.wgsl");
pub const NORM_WGSL: &str = include_str!("../../shaders/norm.wgsl");
pub const LAYERS_WGSL: &str = include_str!("../../shaders/layers.wgsl");
pub const AUGMENT_WGSL: &str = include_str!("../../shaders/augment.wgsl");

/// matmul.wgsl with f32 operands (the same module as `matmul_module(false, 0, 0)`: modules are
/// told apart by name).
pub static MATMUL: ShaderSource =
    ShaderSource { name: "matmul.wgsl", parts: &[COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL] };
/// matmul.wgsl + matmul_subgroup.wgsl: only on devices with subgroups.
pub static MATMUL_SUBGROUP: ShaderSource = ShaderSource {
    name: "matmul_subgroup.wgsl",
    parts: &[COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL],
};

macro_rules! module {
    ($name:literal, $($part:expr),*) => {
        ShaderSource { name: $name, parts: &[$($part),*] }
    };
}

/// The matmul modules, `[subgroup][a][b]` with operand storage 0 f32, 1 f16 packed, 2 f16
/// native: `common.wgsl`, A's part, B's part, `matmul.wgsl` (and `matmul_subgroup.wgsl`); the
/// ones reading f16 natively start with `enable f16;`. Pick one with [`matmul_module`].
#[rustfmt::skip]
static MATMUL_MODULES: [[[ShaderSource; 3]; 3]; 2] = [
    [
        [
            module!("matmul.wgsl", COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL),
            module!("matmul[b=f16].wgsl", COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL),
            module!("matmul[b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL),
        ],
        [
            module!("matmul[a=f16].wgsl", COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL),
            module!("matmul[a=f16,b=f16].wgsl", COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL),
            module!("matmul[a=f16,b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL),
        ],
        [
            module!("matmul[a=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL),
            module!("matmul[a=f16n,b=f16].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL),
            module!("matmul[a=f16n,b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL),
        ],
    ],
    [
        [
            module!("matmul_subgroup.wgsl", COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[b=f16].wgsl", COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F32_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
        ],
        [
            module!("matmul_subgroup[a=f16].wgsl", COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[a=f16,b=f16].wgsl", COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[a=f16,b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
        ],
        [
            module!("matmul_subgroup[a=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F32_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[a=f16n,b=f16].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F16_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
            module!("matmul_subgroup[a=f16n,b=f16n].wgsl", ENABLE_F16_WGSL, COMMON_WGSL, MATMUL_A_F16N_WGSL, MATMUL_B_F16N_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL),
        ],
    ],
];

/// The matmul module for operands stored as `a` and `b` (0 f32, 1 f16 packed, 2 f16 native; see
/// [`MATMUL_MODULES`]), with the subgroup variants where `subgroup`.
pub(crate) fn matmul_module(subgroup: bool, a: usize, b: usize) -> &'static ShaderSource {
    &MATMUL_MODULES[subgroup as usize][a][b]
}
pub static ELEMENTWISE: ShaderSource = ShaderSource { name: "elementwise.wgsl", parts: &[COMMON_WGSL, ELEMENTWISE_WGSL] };
pub static REDUCE: ShaderSource = ShaderSource { name: "reduce.wgsl", parts: &[COMMON_WGSL, REDUCE_WGSL] };
pub static LOSS: ShaderSource = ShaderSource { name: "loss.wgsl", parts: &[COMMON_WGSL, LOSS_WGSL] };
pub static OPTIM: ShaderSource = ShaderSource { name: "optim.wgsl", parts: &[COMMON_WGSL, OPTIM_WGSL] };
pub static METRICS: ShaderSource = ShaderSource { name: "metrics.wgsl", parts: &[COMMON_WGSL, METRICS_WGSL] };
pub static GATHER: ShaderSource = ShaderSource { name: "gather.wgsl", parts: &[COMMON_WGSL, GATHER_WGSL] };
pub static CONV: ShaderSource = ShaderSource { name: "conv.wgsl", parts: &[COMMON_WGSL, WINDOW_WGSL, CONV_WGSL] };
pub static POOL: ShaderSource = ShaderSource { name: "pool.wgsl", parts: &[COMMON_WGSL, WINDOW_WGSL, POOL_WGSL] };
pub static NORM: ShaderSource = ShaderSource { name: "norm.wgsl", parts: &[COMMON_WGSL, NORM_WGSL] };
pub static LAYERS: ShaderSource = ShaderSource { name: "layers.wgsl", parts: &[COMMON_WGSL, LAYERS_WGSL] };
pub static AUGMENT: ShaderSource = ShaderSource { name: "augment.wgsl", parts: &[COMMON_WGSL, AUGMENT_WGSL] };
