//! The WGSL sources, embedded at compile time, and the shader modules made of them. Every module
//! has `shaders/common.wgsl` prepended, here, the one place that happens.

use crate::gpu::ShaderSource;

pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
pub const MATMUL_SUBGROUP_WGSL: &str = include_str!("../../shaders/matmul_subgroup.wgsl");
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

pub static MATMUL: ShaderSource = ShaderSource { name: "matmul.wgsl", parts: &[COMMON_WGSL, MATMUL_WGSL] };
/// matmul.wgsl + matmul_subgroup.wgsl: only on devices with subgroups.
pub static MATMUL_SUBGROUP: ShaderSource =
    ShaderSource { name: "matmul_subgroup.wgsl", parts: &[COMMON_WGSL, MATMUL_WGSL, MATMUL_SUBGROUP_WGSL] };
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
