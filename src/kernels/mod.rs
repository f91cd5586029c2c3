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

pub mod augment;
pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod layers;
pub mod loss;
pub mod matmul;
pub mod metrics;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub(crate) mod source;
pub mod tune;
pub mod window;

pub use crate::gpu::Dispatch;
/// The kernel ids are gpu/'s (the pipeline cache keys on them); the launchers here define the
/// constants, and `Kernel` is the name they use.
pub use crate::gpu::{Access, KernelId as Kernel, ShaderSource};
pub use elementwise::{Activation, act_backward, act_forward, add_act, add_assign, bias_add, copy};
/// The matmul's variant chooser under its earlier path; it lives in [`matmul::choose`].
pub use matmul::choose as autotune;
pub use matmul::{Epilogue, Transpose, matmul, matmul_ex};

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

#[cfg(test)]
mod tests {
    use crate::gpu::REQUIRED_LIMITS;

    fn required(name: &str) -> u64 {
        REQUIRED_LIMITS.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name} is not required")).at_least
    }

    /// Every WGSL entry point's workgroup shape and every module's workgroup memory (all its
    /// `var<workgroup>`s together, more than any one entry point uses) are within what
    /// `Gpu::from_device` requires of a device, so no pipeline can fail on a device it accepted.
    #[test]
    fn required_limits_cover_every_workgroup() {
        let files = [
            ("matmul.wgsl", format!("{}\n{}", super::source::MATMUL_WGSL, super::source::MATMUL_SUBGROUP_WGSL)),
            ("elementwise.wgsl", super::source::ELEMENTWISE_WGSL.to_string()),
            ("reduce.wgsl", super::source::REDUCE_WGSL.to_string()),
            ("loss.wgsl", super::source::LOSS_WGSL.to_string()),
            ("optim.wgsl", super::source::OPTIM_WGSL.to_string()),
            ("metrics.wgsl", super::source::METRICS_WGSL.to_string()),
            ("gather.wgsl", super::source::GATHER_WGSL.to_string()),
            ("conv.wgsl", format!("{}\n{}", super::source::WINDOW_WGSL, super::source::CONV_WGSL)),
            ("pool.wgsl", format!("{}\n{}", super::source::WINDOW_WGSL, super::source::POOL_WGSL)),
            ("norm.wgsl", super::source::NORM_WGSL.to_string()),
        ];
        // a `const` or an `override`'s default (matmul's WG_X, WG_Y: set to 8 × 1 by the launcher)
        let value = |src: &str, token: &str| -> u64 {
            if let Ok(v) = token.trim_end_matches('u').parse() {
                return v;
            }
            let decl = src
                .lines()
                .find(|l| (l.starts_with("const ") || l.starts_with("override ")) && l.contains(&format!(" {token}:")))
                .unwrap_or_else(|| panic!("no value for {token}"));
            decl.split('=').nth(1).unwrap().trim().trim_end_matches(';').trim_end_matches('u').parse().unwrap()
        };
        let mut entry_points = 0;
        for (file, src) in &files {
            for at in src.match_indices("@workgroup_size(").map(|(i, _)| i) {
                let args = &src[at + "@workgroup_size(".len()..];
                let args = &args[..args.find(')').unwrap()];
                let mut dims: Vec<u64> = args.split(',').map(|t| value(src, t.trim())).collect();
                dims.resize(3, 1);
                let (x, y, z) = (dims[0], dims[1], dims[2]);
                assert!(x <= required("max_compute_workgroup_size_x"), "{file}: workgroup x {x}");
                assert!(y <= required("max_compute_workgroup_size_y"), "{file}: workgroup y {y}");
                assert!(z <= required("max_compute_workgroup_size_z"), "{file}: workgroup z {z}");
                assert!(x * y * z <= required("max_compute_invocations_per_workgroup"), "{file}: {x}×{y}×{z} invocations");
                entry_points += 1;
            }
            let mut shared = 0;
            for line in src.lines().filter(|l| l.starts_with("var<workgroup>")) {
                let ty = line.split(':').nth(1).unwrap().trim().trim_end_matches(';');
                let ty = ty.split(';').next().unwrap().trim();
                let (elem, count) = match ty.strip_prefix("array<") {
                    Some(rest) => {
                        let rest = rest.trim_end_matches('>');
                        let (elem, n) = rest.rsplit_once(',').unwrap();
                        (elem.trim().to_string(), value(src, n.trim()))
                    }
                    None => (ty.to_string(), 1),
                };
                let bytes = match elem.as_str() {
                    "f32" | "u32" | "i32" | "atomic<u32>" => 4,
                    "vec4<f32>" | "vec4<u32>" => 16,
                    other => panic!("{file}: workgroup element type {other}"),
                };
                shared += bytes * count;
            }
            assert!(shared <= required("max_compute_workgroup_storage_size"), "{file}: {shared} bytes of workgroup memory");
        }
        assert!(entry_points > 40, "found {entry_points} entry points");
    }

    /// Every kernel that binds more storage buffers than `Gpu::from_device` requires has a smaller
    /// form its callers fall back to (the fused heads, the two-range optimizer steps): a new kernel
    /// past the floor must get one too, or raise the floor.
    #[test]
    fn only_kernels_with_a_fallback_bind_more_than_the_required_storage_buffers() {
        let floor = required("max_storage_buffers_per_shader_stage") as usize;
        let sources = [
            include_str!("conv/mod.rs"),
            include_str!("conv/direct.rs"),
            include_str!("conv/im2col.rs"),
            include_str!("pool.rs"),
            include_str!("elementwise.rs"),
            include_str!("gather.rs"),
            include_str!("loss.rs"),
            include_str!("matmul/mod.rs"),
            include_str!("metrics.rs"),
            include_str!("norm.rs"),
            include_str!("optim.rs"),
            include_str!("reduce.rs"),
        ];
        let count = |list: &str| list.split(',').filter(|t| !t.trim().is_empty()).count();
        let mut above = Vec::new();
        let mut kernels = 0;
        for src in sources {
            for (at, _) in src.match_indices("Kernel { source: ") {
                let rest = &src[at..];
                let entry = rest.split('"').nth(1).unwrap();
                let bindings = rest.split("bindings: ").nth(1).unwrap();
                let n = match bindings.strip_prefix("&[") {
                    Some(list) => count(&list[..list.find(']').unwrap()]),
                    None => {
                        // a named list, `const NAME: &[super::Access] = &[...]`
                        let name: String = bindings.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        let decl = src.split(&format!("const {name}: ")).nth(1).unwrap();
                        let list = decl.split("= &[").nth(1).unwrap();
                        count(&list[..list.find(']').unwrap()])
                    }
                };
                kernels += 1;
                if n > floor {
                    above.push(entry);
                }
            }
        }
        assert!(kernels > 40, "found {kernels} kernels");
        above.sort();
        assert_eq!(above, ["adam_2", "head_bce", "head_softmax", "linear_head_bce"]);
    }
}
