//! The WGSL sources, embedded at compile time. Families that use activations get
//! `shaders/common.wgsl` prepended here, the one place that happens.

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
pub const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
pub const MATMUL_SUBGROUP: &str = include_str!("../../shaders/matmul_subgroup.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
pub const LOSS: &str = include_str!("../../shaders/loss.wgsl");
pub const OPTIM: &str = include_str!("../../shaders/optim.wgsl");
pub const METRICS: &str = include_str!("../../shaders/metrics.wgsl");
pub const GATHER: &str = include_str!("../../shaders/gather.wgsl");
pub const CONV: &str = include_str!("../../shaders/conv.wgsl");
