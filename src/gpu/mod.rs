//! The device layer: one [`Gpu`] owns (or borrows from a host program) a wgpu `Device` and
//! `Queue`, the pipeline cache, and the engine's counters.
//!
//! wgpu's rules that shape this module:
//! * Work is recorded into a command encoder and only runs when submitted; a submission has a
//!   fixed CPU cost (BENCHMARKS.md has lavapipe's), so callers batch a whole training step into
//!   one ([`Recorder`]).
//! * A buffer the CPU reads must be `MAP_READ`, and `MAP_READ` buffers cannot be storage buffers:
//!   downloads copy into a staging buffer first (see [`tensor`]).
//! * Validation errors are reported asynchronously; by default wgpu panics on an uncaptured one.
//!   We install a handler that records the error instead, and wrap creation calls in error
//!   scopes, so every failure becomes an [`Error`] naming the kernel.

pub mod adapter;
pub mod pipelines;
pub mod recorder;
pub mod tensor;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use pipelines::{Access, Dispatch, KernelId, PipelineCache, ShaderSource};
pub use recorder::{Recorder, Timestamps};
pub use tensor::Tensor;

/// Counters the engine keeps about its own GPU work. Tests and benchmarks read them to show, for
/// example, that a frozen trunk allocates fewer bytes and launches fewer dispatches.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) bytes_live: AtomicU64,
    pub(crate) bytes_peak: AtomicU64,
    pub(crate) dispatches: AtomicU64,
    pub(crate) submissions: AtomicU64,
    pub(crate) uploads: AtomicU64,
    pub(crate) downloads: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// Bytes in buffers headswap allocated and that are still alive.
    pub bytes_live: u64,
    /// The most `bytes_live` has been.
    pub bytes_peak: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Queue submissions.
    pub submissions: u64,
    /// Host → GPU writes (tensor uploads and parameter writes).
    pub uploads: u64,
    /// GPU → host reads.
    pub downloads: u64,
}

impl Counters {
    pub(crate) fn alloc(&self, bytes: u64) {
        let live = self.bytes_live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bytes_peak.fetch_max(live, Ordering::Relaxed);
    }
    pub(crate) fn free(&self, bytes: u64) {
        self.bytes_live.fetch_sub(bytes, Ordering::Relaxed);
    }
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            bytes_live: self.bytes_live.load(Ordering::Relaxed),
            bytes_peak: self.bytes_peak.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            submissions: self.submissions.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
        }
    }
}

/// A device limit headswap cannot do without: its name in `wgpu::Limits`, the least value it
/// needs, and how to read it.
#[derive(Debug, Clone, Copy)]
pub struct RequiredLimit {
    pub name: &'static str,
    pub at_least: u64,
    pub read: fn(&wgpu::Limits) -> u64,
}

const fn need(name: &'static str, at_least: u64, read: fn(&wgpu::Limits) -> u64) -> RequiredLimit {
    RequiredLimit { name, at_least, read }
}

/// The device limits headswap cannot do without: those of the kernels that have no smaller form
/// (the matrix product binds 7 storage buffers, the BCE loss 7) and of the workgroup shapes and
/// memory of its WGSL. WebGPU's defaults (`wgpu::Limits::default()`) meet them all;
/// `downlevel_defaults()` does not (4 storage buffers per stage). Larger fused kernels are used
/// only where a device allows them.
pub const REQUIRED_LIMITS: &[RequiredLimit] = &[
    need("max_storage_buffers_per_shader_stage", 7, |l| l.max_storage_buffers_per_shader_stage as u64),
    need("max_compute_invocations_per_workgroup", 256, |l| l.max_compute_invocations_per_workgroup as u64),
    need("max_compute_workgroup_size_x", 256, |l| l.max_compute_workgroup_size_x as u64),
    need("max_compute_workgroup_size_y", 16, |l| l.max_compute_workgroup_size_y as u64),
    need("max_compute_workgroup_size_z", 4, |l| l.max_compute_workgroup_size_z as u64),
    need("max_compute_workgroup_storage_size", 8192, |l| l.max_compute_workgroup_storage_size as u64),
    // launches of many workgroups fold into y past 65,535 in x (pipelines::groups_1d)
    need("max_compute_workgroups_per_dimension", 65535, |l| l.max_compute_workgroups_per_dimension as u64),
    need("max_bind_groups", 1, |l| l.max_bind_groups as u64),
    need("max_uniform_buffers_per_shader_stage", 1, |l| l.max_uniform_buffers_per_shader_stage as u64),
];

/// `Err` naming the first of [`REQUIRED_LIMITS`] that `device` is below.
fn check_requirements(device: &wgpu::Limits, adapter: Option<&wgpu::Limits>) -> Result<()> {
    for r in REQUIRED_LIMITS {
        if (r.read)(device) < r.at_least {
            return Err(limit_error("headswap", r.name, r.at_least, device, adapter, r.read));
        }
    }
    Ok(())
}

fn limit_error(
    what: &str,
    limit_name: &'static str,
    needed: u64,
    device: &wgpu::Limits,
    adapter: Option<&wgpu::Limits>,
    get: impl Fn(&wgpu::Limits) -> u64,
) -> Error {
    Error::DeviceLimit { what: what.into(), limit_name, needed, device: get(device), adapter: adapter.map(get) }
}

/// What `headswap info` prints, and what the engine consults before launching work.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_size: [u32; 3],
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_queries: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "adapter      {}", self.name)?;
        writeln!(f, "backend      {}", self.backend)?;
        writeln!(f, "device type  {}", self.device_type)?;
        writeln!(f, "driver       {} ({})", self.driver, self.driver_info)?;
        writeln!(
            f,
            "max storage buffer binding size  {} bytes ({} MiB)",
            self.max_storage_buffer_binding_size,
            self.max_storage_buffer_binding_size >> 20
        )?;
        writeln!(f, "max buffer size                  {} bytes ({} MiB)", self.max_buffer_size, self.max_buffer_size >> 20)?;
        writeln!(f, "max storage buffers per stage    {}", self.max_storage_buffers_per_shader_stage)?;
        let [x, y, z] = self.max_compute_workgroup_size;
        writeln!(f, "max workgroup size               {x} x {y} x {z} ({} invocations)", self.max_compute_invocations_per_workgroup)?;
        writeln!(f, "max workgroups per dimension     {}", self.max_compute_workgroups_per_dimension)?;
        writeln!(f, "shader-f16                       {}", yes(self.shader_f16))?;
        writeln!(f, "subgroups                        {}", yes(self.subgroups))?;
        write!(f, "timestamp queries                {}", yes(self.timestamp_queries))
    }
}

pub(crate) struct GpuInner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    /// The adapter's limits, where known: a host's device may have requested less
    /// ([`Gpu::from_device`]), and messages about a limit say what the adapter would give.
    pub(crate) adapter_limits: Option<wgpu::Limits>,
    pub(crate) features: wgpu::Features,
    pub(crate) pipelines: PipelineCache,
    pub(crate) counters: Counters,
    /// The first uncaptured wgpu error since the last [`Gpu::check`].
    pub(crate) uncaptured: Arc<Mutex<Option<String>>>,
    /// A reused `MAP_READ` buffer for downloads; grown on demand.
    pub(crate) staging: Mutex<Option<wgpu::Buffer>>,
}

/// A GPU: the device and queue every headswap operation runs on. Cheap to clone (shared).
///
/// ```no_run
/// let gpu = headswap::Gpu::new()?;          // picks an adapter as described in gpu::adapter
/// println!("{}", gpu.summary());
/// # Ok::<(), headswap::Error>(())
/// ```
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} on {:?})", self.inner.info.name, self.inner.info.backend)
    }
}

impl Gpu {
    /// Chooses an adapter (see [`adapter`]) and creates a device with every limit the adapter has,
    /// and the optional features headswap can use (subgroups, shader-f16, timestamp queries).
    pub fn new() -> Result<Gpu> {
        let backends = adapter::requested_backends();
        adapter::quiet_device_select_layer(backends);
        // GL is only ever the last choice: look at the native backends first, so that a machine
        // with Vulkan never initialises EGL (which is slow and noisy on a headless machine).
        let native = backends - wgpu::Backends::GL;
        let mut found = Err(Error::NoAdapter { tried: adapter::backend_names(backends) });
        for set in [native, backends & wgpu::Backends::GL] {
            if set.is_empty() {
                continue;
            }
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = set;
            let instance = wgpu::Instance::new(desc);
            match adapter::choose(&instance, set) {
                Ok(a) => {
                    found = Ok(a);
                    break;
                }
                Err(Error::NoAdapter { tried }) if tried.contains("matched none") => {
                    found = Err(Error::NoAdapter { tried });
                }
                Err(_) => {}
            }
        }
        let adapter = found?;
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let features = adapter.features() & wanted;
        let device_desc = wgpu::DeviceDescriptor {
            label: Some("headswap"),
            required_features: features,
            required_limits: adapter.limits(),
            ..Default::default()
        };
        // an adapter below what headswap needs is refused before a device is made on it
        check_requirements(&adapter.limits(), Some(&adapter.limits()))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&device_desc)).map_err(|e| Error::RequestDevice(e.to_string()))?;
        Ok(Self::build(device, queue, adapter.get_info(), Some(adapter.limits())))
    }

    /// Wraps a `Device` and `Queue` that a host program already owns (a game engine, a renderer,
    /// another compute crate). headswap then runs its kernels on that device, on the host's own
    /// buffers if it likes (see [`Tensor::from_buffer`]). Pass the `adapter` the device came from
    /// if you have it: it names the adapter in messages and in the autotune cache, and a message
    /// about a limit then says what the adapter would allow.
    ///
    /// Every training and evaluation path works within WebGPU's default limits
    /// (`wgpu::DeviceDescriptor::default()`): where a fused kernel binds more storage buffers than
    /// the device allows, the separate launches run instead. A device below what headswap cannot
    /// do without ([`REQUIRED_LIMITS`]; `wgpu::Limits::downlevel_defaults()`'s 4 storage buffers
    /// per stage, say) is refused here, with an error naming the limit to request.
    ///
    /// ```no_run
    /// use headswap::{Gpu, wgpu};
    /// let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    /// let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
    ///     .expect("an adapter");
    /// // WebGPU's default limits, as most hosts request them...
    /// let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
    ///     .expect("a device");
    /// let gpu = Gpu::from_device(device, queue, Some(&adapter))?;
    /// // ...or every limit the adapter has (what Gpu::new requests): more room for fused kernels
    /// let desc = wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() };
    /// let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("a device");
    /// let gpu = Gpu::from_device(device, queue, Some(&adapter))?;
    /// # Ok::<(), headswap::Error>(())
    /// ```
    ///
    /// headswap installs an uncaptured-error handler on the device so validation errors become
    /// [`Error`]s instead of panics; a host that wants its own handler can set it afterwards.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, adapter: Option<&wgpu::Adapter>) -> Result<Gpu> {
        let adapter_limits = adapter.map(|a| a.limits());
        check_requirements(&device.limits(), adapter_limits.as_ref())?;
        let info = adapter.map(|a| a.get_info()).unwrap_or_else(|| {
            let mut i = wgpu::AdapterInfo::new(wgpu::DeviceType::Other, wgpu::Backend::Noop);
            i.name = "host-provided device".into();
            i
        });
        Ok(Self::build(device, queue, info, adapter_limits))
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo, adapter_limits: Option<wgpu::Limits>) -> Gpu {
        let uncaptured: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            tracing::error!("uncaptured wgpu error: {e}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let limits = device.limits();
        let features = device.features();
        tracing::info!(adapter = %info.name, backend = ?info.backend, "headswap device ready");
        Gpu {
            inner: Arc::new(GpuInner {
                pipelines: PipelineCache::default(),
                device,
                queue,
                info,
                limits,
                adapter_limits,
                features,
                counters: Counters::default(),
                uncaptured,
                staging: Mutex::new(None),
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// The device's limits: what headswap respects (a host's device may have fewer than its
    /// adapter; see [`Gpu::adapter_limits`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// The adapter's limits, where known ([`Gpu::new`] requests all of them; a host's device, see
    /// [`Gpu::from_device`], may have requested fewer).
    pub fn adapter_limits(&self) -> Option<&wgpu::Limits> {
        self.inner.adapter_limits.as_ref()
    }
    /// An error saying that `what` needs the limit `limit_name` (read by `get`) to be at least
    /// `needed`, with the device's value and the adapter's.
    pub(crate) fn limit_error(&self, what: &str, limit_name: &'static str, needed: u64, get: impl Fn(&wgpu::Limits) -> u64) -> Error {
        limit_error(what, limit_name, needed, &self.inner.limits, self.inner.adapter_limits.as_ref(), get)
    }
    /// The adapter's wgpu description.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// Whether the device has `feature` enabled.
    pub fn has(&self, feature: wgpu::Features) -> bool {
        self.inner.features.contains(feature)
    }
    /// Whether the device can write timestamps at the start and end of a compute pass
    /// (`Features::TIMESTAMP_QUERY`; see [`Timestamps`]).
    pub fn has_timestamps(&self) -> bool {
        self.has(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// A snapshot of the engine's counters (bytes allocated, dispatches, submissions, ...).
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// What `headswap info` prints.
    pub fn summary(&self) -> AdapterSummary {
        let i = &self.inner.info;
        let l = &self.inner.limits;
        AdapterSummary {
            name: i.name.clone(),
            backend: format!("{:?}", i.backend),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_size: [l.max_compute_workgroup_size_x, l.max_compute_workgroup_size_y, l.max_compute_workgroup_size_z],
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            shader_f16: self.has(wgpu::Features::SHADER_F16),
            subgroups: self.has(wgpu::Features::SUBGROUP),
            timestamp_queries: self.has_timestamps(),
        }
    }

    /// A key naming this adapter and driver, for caches of per-adapter choices (matmul variants).
    pub fn adapter_key(&self) -> String {
        let i = &self.inner.info;
        format!("{}|{:?}|{}|{}", i.name, i.backend, i.driver, i.driver_info)
    }

    /// Checks that `bytes` fit in one storage binding and one buffer of this adapter.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = &self.inner.limits;
        if bytes > l.max_buffer_size {
            return Err(Error::TooLarge { what: what.into(), bytes, limit: l.max_buffer_size, limit_name: "max_buffer_size" });
        }
        let bind = l.max_storage_buffer_binding_size;
        if bytes > bind {
            return Err(Error::TooLarge { what: what.into(), bytes, limit: bind, limit_name: "max_storage_buffer_binding_size" });
        }
        Ok(())
    }

    /// Records `dispatches` into one compute pass of one command encoder and submits it once.
    /// Does not wait; use [`Gpu::sync`] (or a download) to wait for the result.
    pub fn run(&self, label: &str, dispatches: &[&Dispatch]) -> Result<()> {
        let mut rec = Recorder::new(self, label);
        rec.pass(label, dispatches.iter().copied());
        rec.submit();
        self.check(label)
    }

    /// Submits one finished encoder, counting it. Most callers record through a [`Recorder`]
    /// instead, which ends here.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.inner.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.inner.queue.submit(Some(encoder.finish()))
    }

    /// Waits until every submitted command has finished.
    pub fn sync(&self) -> Result<()> {
        self.inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Device(e.to_string()))?;
        self.check("sync")
    }

    /// Returns (and clears) the first uncaptured wgpu error, as an error naming `what`.
    pub fn check(&self, what: &str) -> Result<()> {
        let mut slot = self.inner.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(Error::Gpu { kernel: what.into(), message }),
            None => Ok(()),
        }
    }

    /// Runs `f` inside a validation + out-of-memory error scope and turns a captured error into
    /// [`Error::Gpu`] naming `what`.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.inner.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.inner.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(Error::Gpu { kernel: what.into(), message: e.to_string() }),
            None => Ok(out),
        }
    }
}
