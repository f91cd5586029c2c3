//! The pipeline cache and the [`Dispatch`]: a kernel launch with its bind group built once.
//!
//! Shader modules are compiled once per [`ShaderSource`] and device; pipelines once per (kernel,
//! override constants). Bind group layouts are shared between every kernel with the same binding shape, so
//! they are created explicitly instead of taken from `layout: None` (which would tie a layout to
//! one pipeline). Every kernel binds a uniform params block at binding 0 and its storage buffers
//! at 1, 2, ... in the order its [`KernelId::bindings`] lists.
//!
//! gpu/ owns the kernel ids ([`KernelId`], [`ShaderSource`], [`Access`]) and knows nothing of the
//! kernels themselves: `kernels/` defines the constants (its `source.rs` the shader sources) and
//! depends on gpu/, never the other way round.

use super::{Gpu, Recorder, Tensor};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

type ConstKey = Vec<(&'static str, u64)>;

/// How a kernel uses a storage binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// The WGSL of one shader module: a name (a file name, unique per module: modules are cached, and
/// compared, by it) and the text in parts, joined with newlines (`common.wgsl`, then the
/// family's file or files).
pub struct ShaderSource {
    pub name: &'static str,
    pub parts: &'static [&'static str],
}

impl ShaderSource {
    /// The module's text: the parts joined with newlines.
    pub fn wgsl(&self) -> String {
        self.parts.join("\n")
    }
}

// By name only: the name identifies the module, and hashing the text would cost every
// pipeline lookup a pass over tens of kilobytes.
impl PartialEq for ShaderSource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ShaderSource {}

impl Hash for ShaderSource {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl std::fmt::Debug for ShaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShaderSource({})", self.name)
    }
}

/// One WGSL entry point: its module, name and binding list (after the params uniform at 0).
/// Launchers name kernels through typed constants of this, never strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelId {
    pub source: &'static ShaderSource,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

impl KernelId {
    /// Whether `gpu`'s device can bind this kernel's storage buffers
    /// (`max_storage_buffers_per_shader_stage`: 8 in WebGPU's default limits). Launchers of fused
    /// kernels that bind more fall back to their separate launches where this is false.
    pub fn fits(&self, gpu: &Gpu) -> bool {
        self.bindings.len() as u64 <= gpu.limits().max_storage_buffers_per_shader_stage as u64
    }
}

/// Compiled modules, pipelines and layouts of one device.
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static ShaderSource, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<&'static [Access], (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<(KernelId, ConstKey), Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// Number of pipelines compiled so far (tests check that a second launch compiles nothing).
    pub fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of shader modules compiled so far: one per [`ShaderSource`] used, however many of
    /// its entry points run.
    pub fn module_count(&self) -> usize {
        self.modules.lock().map(|m| m.len()).unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gpu {
    /// The pipeline cache of this device.
    pub fn pipeline_cache(&self) -> &PipelineCache {
        &self.inner.pipelines
    }

    fn layout_for(&self, bindings: &'static [Access]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut layouts = lock(&self.inner.pipelines.layouts);
        layouts
            .entry(bindings)
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for (i, a) in bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: i as u32 + 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: *a == Access::Read },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                let bgl = self
                    .device()
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("headswap_bgl"), entries: &entries });
                let pl = self.device().create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("headswap_pl"),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }

    /// The compiled pipeline for `kernel` with `constants` (WGSL `override`s), compiled on first use.
    pub(crate) fn pipeline(&self, kernel: KernelId, constants: &[(&'static str, f64)]) -> Result<Arc<wgpu::ComputePipeline>> {
        let key: ConstKey = constants.iter().map(|(n, v)| (*n, v.to_bits())).collect();
        if let Some(p) = lock(&self.inner.pipelines.pipelines).get(&(kernel, key.clone())) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = lock(&self.inner.pipelines.modules);
            match modules.get(kernel.source) {
                Some(m) => m.clone(),
                None => {
                    let src = kernel.source.wgsl();
                    let m = self.scoped(kernel.source.name, || {
                        self.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(kernel.source.name),
                            source: wgpu::ShaderSource::Wgsl(src.into()),
                        })
                    })?;
                    modules.insert(kernel.source, m.clone());
                    m
                }
            }
        };
        let (_, layout) = self.layout_for(kernel.bindings);
        let pipeline = self.scoped(kernel.entry, || {
            self.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
                cache: None,
            })
        })?;
        tracing::debug!(kernel = kernel.entry, ?constants, "compiled pipeline");
        let p = Arc::new(pipeline);
        lock(&self.inner.pipelines.pipelines).insert((kernel, key), p.clone());
        Ok(p)
    }
}

/// One kernel launch, ready to record: pipeline, bind group (built once) and workgroup counts.
/// Training steps hold a list of these and re-record them every step; nothing is rebuilt.
pub struct Dispatch {
    pub(crate) kernel: KernelId,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    /// The params block the launch was built with (a step may stage a changed copy of it).
    initial_params: Box<[u8]>,
    workgroups: [u32; 3],
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dispatch({} {:?})", self.kernel.entry, self.workgroups)
    }
}

impl Dispatch {
    /// Builds a launch of `kernel`: checks the buffers against its binding list and the device's
    /// limits, gets the cached pipeline, and creates the params buffer and bind group.
    pub(crate) fn new(
        gpu: &Gpu,
        kernel: KernelId,
        constants: &[(&'static str, f64)],
        params: &[u8],
        buffers: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        if buffers.len() != kernel.bindings.len() {
            return Err(Error::Gpu {
                kernel: kernel.entry.into(),
                message: format!("{} buffers bound, the kernel declares {}", buffers.len(), kernel.bindings.len()),
            });
        }
        let limits = gpu.limits();
        if !kernel.fits(gpu) {
            let name = "max_storage_buffers_per_shader_stage";
            return Err(gpu.limit_error(kernel.entry, name, buffers.len() as u64, |l| l.max_storage_buffers_per_shader_stage as u64));
        }
        if let Some(&most) = workgroups.iter().max()
            && most > limits.max_compute_workgroups_per_dimension
        {
            let name = "max_compute_workgroups_per_dimension";
            return Err(gpu.limit_error(kernel.entry, name, most as u64, |l| l.max_compute_workgroups_per_dimension as u64));
        }
        let align = limits.min_storage_buffer_offset_alignment as u64;
        for t in buffers {
            if t.offset() % align != 0 {
                return Err(Error::Gpu {
                    kernel: kernel.entry.into(),
                    message: format!("tensor offset {} is not a multiple of {align}", t.offset()),
                });
            }
            gpu.check_binding_size(kernel.entry, t.bytes())?;
        }
        let pipeline = gpu.pipeline(kernel, constants)?;
        let (bgl, _) = gpu.layout_for(kernel.bindings);
        let size = (params.len() as u64).max(16).next_multiple_of(16);
        let params_buf = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(kernel.entry),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut padded = params.to_vec();
        padded.resize(size as usize, 0);
        gpu.queue().write_buffer(&params_buf, 0, &padded);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params_buf.as_entire_binding() }];
        for (i, t) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: t.binding() });
        }
        let bind_group = gpu.scoped(kernel.entry, || {
            gpu.device().create_bind_group(&wgpu::BindGroupDescriptor { label: Some(kernel.entry), layout: &bgl, entries: &entries })
        })?;
        Ok(Dispatch { kernel, pipeline, bind_group, params: params_buf, initial_params: padded.into(), workgroups })
    }

    /// Rewrites the params block (a learning rate, a step number, a batch offset) without
    /// rebuilding anything; takes effect at the next submission.
    pub(crate) fn write_params(&self, gpu: &Gpu, params: &[u8]) {
        gpu.queue().write_buffer(&self.params, 0, params);
    }

    /// The params block the launch was built with, padded to 16 bytes.
    pub(crate) fn initial_params(&self) -> &[u8] {
        &self.initial_params
    }

    /// The launch's own uniform buffer, for [`StepUniforms`] to copy a step's block into.
    pub(crate) fn params_buffer(&self) -> &wgpu::Buffer {
        &self.params
    }

    /// Records the launch into `pass`; returns the number of dispatches recorded (0 for an
    /// empty launch, else 1) so callers can count their own work.
    pub fn encode(&self, gpu: &Gpu, pass: &mut wgpu::ComputePass<'_>) -> usize {
        if self.workgroups.contains(&0) {
            return 0;
        }
        gpu.inner.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
        1
    }

    /// The kernel's entry-point name.
    pub fn name(&self) -> &'static str {
        self.kernel.entry
    }
}

/// The per-step uniform blocks (batch offset, learning rate, step number) of several training
/// steps recorded into one submission.
///
/// A uniform written with `queue.write_buffer` takes effect at the next submission, so every step
/// of one submission would see the last value written. Instead, each step's blocks are staged side
/// by side in one upload buffer (one `write_buffer` per submission) and copied into the launches'
/// own uniform buffers in front of that step's compute pass: the copies are ordered with the
/// dispatches inside the command buffer, so each step reads its own values.
#[derive(Default)]
pub(crate) struct StepUniforms {
    staging: Option<wgpu::Buffer>,
    bytes: Vec<u8>,
    /// Per step: (offset in `bytes`, destination uniform buffer, length).
    steps: Vec<Vec<(u64, wgpu::Buffer, u64)>>,
}

impl StepUniforms {
    /// Forgets the staged steps (the upload buffer is kept for the next submission).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.steps.clear();
    }

    /// Starts the next step's blocks.
    pub fn begin_step(&mut self) {
        self.steps.push(Vec::new());
    }

    /// Stages `params` as the current step's uniform block of `dispatch`.
    pub fn set(&mut self, dispatch: &Dispatch, params: &[u8]) {
        let at = self.bytes.len() as u64;
        let len = (params.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        self.bytes.extend_from_slice(params);
        self.bytes.resize((at + len) as usize, 0);
        if self.steps.is_empty() {
            self.begin_step();
        }
        if let Some(step) = self.steps.last_mut() {
            step.push((at, dispatch.params_buffer().clone(), len));
        }
    }

    /// Uploads every staged block (one write); call once, before recording the steps' copies.
    pub fn upload(&mut self, gpu: &Gpu) {
        let need = (self.bytes.len() as u64).max(16);
        if self.staging.as_ref().is_none_or(|b| b.size() < need) {
            self.staging = Some(gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("step_uniforms"),
                size: need.next_power_of_two(),
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        if let Some(staging) = &self.staging
            && !self.bytes.is_empty()
        {
            gpu.queue().write_buffer(staging, 0, &self.bytes);
        }
    }

    /// Records the copies that give step `step` (0-based, in staging order) its uniforms; record
    /// them before that step's compute pass.
    pub fn record(&self, rec: &mut Recorder<'_>, step: usize) {
        let (Some(staging), Some(copies)) = (&self.staging, self.steps.get(step)) else { return };
        for (at, dst, len) in copies {
            rec.copy_buffer(staging, *at, dst, 0, *len);
        }
    }
}

/// Workgroup counts covering `n` items at `per_group` items per workgroup, folded into y (and z)
/// when x would pass the 65,535 limit. Kernels rebuild the flat index from `num_workgroups`.
pub(crate) fn groups_1d(n: usize, per_group: u32) -> [u32; 3] {
    let groups = n.div_ceil(per_group as usize) as u64;
    if groups <= 65535 {
        return [groups as u32, 1, 1];
    }
    let y = groups.div_ceil(65535);
    [65535, y as u32, 1]
}
