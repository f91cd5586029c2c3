//! The kernel library: one launcher per operation, usable on its own (a host program's buffers,
//! see [`crate::Gpu::from_device`] and [`crate::Tensor::from_buffer`]) and by the trainer.
//!
//! Every launcher follows the same four steps: check shapes and limits, get the cached pipeline,
//! bind, dispatch. Each op has two forms:
//! * `op(&gpu, ...)` runs at once in its own submission (the library API);
//! * `op_dispatch(&gpu, ...)` returns a [`Dispatch`] to record later, many per submission (what
//!   the trainer builds once and replays every step).
//!
//! ```
//! use headswap::{Gpu, Tensor, kernels::{self, Transpose}};
//! let gpu = Gpu::new()?;
//! let a = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.])?;
//! let b = Tensor::from_slice(&gpu, &[3, 1], &[1., 1., 1.])?;
//! let mut c = Tensor::zeros(&gpu, &[2, 1])?;
//! kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN)?;
//! assert_eq!(c.download(&gpu)?, vec![6., 15.]);
//! # Ok::<(), headswap::Error>(())
//! ```

pub mod autotune;
pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod loss;
pub mod matmul;
pub mod metrics;
pub mod optim;
pub mod reduce;
pub(crate) mod source;

pub use crate::gpu::Dispatch;
pub use elementwise::{Activation, act_backward, act_forward, add_act, add_assign, bias_add, copy};
pub use matmul::{Epilogue, Transpose, matmul, matmul_ex};

/// How a kernel uses a storage binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A WGSL file in `shaders/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Matmul,
    /// matmul.wgsl + matmul_subgroup.wgsl: only on devices with subgroups.
    MatmulSubgroup,
    Elementwise,
    Reduce,
    Loss,
    Optim,
    Metrics,
    Gather,
    Conv,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul.wgsl",
            Family::MatmulSubgroup => "matmul_subgroup.wgsl",
            Family::Elementwise => "elementwise.wgsl",
            Family::Reduce => "reduce.wgsl",
            Family::Loss => "loss.wgsl",
            Family::Optim => "optim.wgsl",
            Family::Metrics => "metrics.wgsl",
            Family::Gather => "gather.wgsl",
            Family::Conv => "conv.wgsl",
        }
    }

    /// The module source: the family's file, after `common.wgsl`.
    pub(crate) fn source(self) -> String {
        let body = match self {
            Family::Matmul => source::MATMUL,
            Family::MatmulSubgroup => return format!("{}\n{}\n{}", source::COMMON, source::MATMUL, source::MATMUL_SUBGROUP),
            Family::Elementwise => source::ELEMENTWISE,
            Family::Reduce => source::REDUCE,
            Family::Loss => source::LOSS,
            Family::Optim => source::OPTIM,
            Family::Metrics => source::METRICS,
            Family::Gather => source::GATHER,
            Family::Conv => source::CONV,
        };
        format!("{}\n{}", source::COMMON, body)
    }
}

/// One WGSL entry point: its family, name and binding list (after the params uniform at 0).
/// Launchers name kernels through typed constants, never strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub family: Family,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

pub(crate) const R: Access = Access::Read;
pub(crate) const RW: Access = Access::ReadWrite;

/// `t` to bind a second time as an array of vec4s, or, where `t` holds fewer than 4 elements
/// (less than one vec4, which a binding must hold), a 16-byte stand-in the kernel never touches.
pub(crate) fn vec4_view(gpu: &crate::gpu::Gpu, t: &crate::gpu::Tensor) -> crate::Result<crate::gpu::Tensor> {
    if t.len() >= 4 {
        return Ok(t.clone());
    }
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("vec4_stand_in"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    crate::gpu::Tensor::from_buffer(buffer, 0, &[4])
}

/// Shape check helper: `Err(Shape)` naming `op` unless `cond`.
pub(crate) fn ensure(cond: bool, op: &str, msg: impl FnOnce() -> String) -> crate::Result<()> {
    if cond { Ok(()) } else { Err(crate::Error::shape(format!("{op}: {}", msg()))) }
}

/// Bytes of WGSL struct `name` in `src` whose fields are all 4-byte scalars: the params-struct
/// size tests compare it with the `#[repr(C)]` Rust struct.
#[cfg(test)]
pub(crate) fn wgsl_struct_bytes(src: &str, name: &str) -> usize {
    let start = src.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("struct {name} not found"));
    let body = &src[start..];
    let body = &body[..body.find('}').expect("struct end")];
    let fields = body.lines().skip(1).map(|l| l.split("//").next().unwrap_or("")).filter(|l| l.contains(':'));
    fields
        .map(|l| match l.split(':').nth(1).unwrap_or("").trim().trim_end_matches(',') {
            "u32" | "f32" | "i32" => 4,
            ty => panic!("{name}: unexpected field type {ty}"),
        })
        .sum()
}
