//! Which matmul [`Variant`] to launch, per adapter and shape class: measured on first use,
//! remembered in memory and in a cache file so later runs start fast.
//!
//! The order of precedence for one product:
//! 1. `HEADSWAP_MATMUL=<name>` ([`Variant::name`]) forces a variant (tests check every one).
//! 2. `HEADSWAP_AUTOTUNE=0` uses the static default: on a CPU adapter (lavapipe, llvmpipe GL)
//!    `block16x16`, elsewhere `tile64`.
//! 3. A choice made earlier for this adapter and class: in memory, else in the cache file.
//! 4. Otherwise the candidates are measured now: each is compiled with the product's own override
//!    constants (so the winner's pipeline is the one the caller then uses), run on zero-filled
//!    scratch buffers of the class's shape (each dimension capped, to keep it short) and timed
//!    with the wait inside the timing; the fastest wins. `tile64` is not measured on CPU adapters,
//!    where workgroup barriers are coroutine switches (shared/PERFORMANCE.md §3.2; it measured
//!    2.7–5 GFLOP/s on lavapipe against 27 for `block16x16`).
//!
//! Cost on lavapipe (2 cores): the eight product classes of a 784→512→256→10 MLP's step take
//! ≈ 1.2 s to measure with Mesa's shader cache warm, ≈ 7 s cold, almost all of it LLVM compiling
//! the candidates on their first launch; with the cache file, a later run measures nothing.
//!
//! A class is the transpose form, a size bucket (powers of 4) of each of M, N and K, and whether
//! each operand can be read as vec4s ([`Problem::vec_a`]). The cache file is
//! `$HEADSWAP_CACHE_DIR/matmul_autotune.json` (else `$XDG_CACHE_HOME/headswap/…`, else
//! `~/.cache/headswap/…`), JSON keyed by [`device_key`], written to a temporary file and
//! renamed into place; a file that cannot be read or parsed is ignored with a warning.
//!
//! The same file (and the same in-memory map) holds the convolution algorithm choices of
//! [`crate::kernels::conv::choose_algo`], under class keys that start with `conv`.
//!
//! Measuring submits and waits, and counts its dispatches in [`Gpu::counters`]: it belongs to
//! building a plan (where [`super::matmul::matmul_dispatch`] is called), never to a timed step.

use super::matmul::{Epilogue, Problem, Variant, build};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Where a choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `HEADSWAP_MATMUL`.
    Forced,
    /// `HEADSWAP_AUTOTUNE=0`, or nothing to measure (an empty product).
    Static,
    /// Chosen earlier in this process.
    Memory,
    /// Read from the cache file.
    CacheFile,
    /// Measured just now.
    Measured,
}

/// The variant for one product and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub variant: Variant,
    pub source: Source,
}

/// Classes measured in this process (tests check that a remembered class is not measured again).
pub fn measurements() -> u64 {
    MEASUREMENTS.load(Ordering::Relaxed)
}

static MEASUREMENTS: AtomicU64 = AtomicU64::new(0);

/// Choices per adapter key, then class key; an adapter is present once its cache file entry was read.
type Choices = HashMap<String, HashMap<String, String>>;

fn state() -> MutexGuard<'static, Choices> {
    static STATE: OnceLock<Mutex<Choices>> = OnceLock::new();
    STATE.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Held while measuring, so two threads do not measure the same class at once.
static MEASURING: Mutex<()> = Mutex::new(());

const FILE_NAME: &str = "matmul_autotune.json";
// 2: the narrow variants tall32x4 and wide4x32 joined the candidates; 4: device keys name the
// device's limits (an older file's keys would never match again: it is replaced, not kept)
const FILE_VERSION: u64 = 4;

/// The cache file's path, from `HEADSWAP_CACHE_DIR`, `XDG_CACHE_HOME` or `HOME`.
pub fn cache_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("HEADSWAP_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("headswap")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("headswap")))?;
    Some(dir.join(FILE_NAME))
}

/// The class key of a product: form, size buckets, vec4 layout.
pub fn class_key(p: &Problem) -> String {
    fn bucket(d: usize) -> u32 {
        match d {
            0..=4 => 0,
            5..=16 => 1,
            17..=64 => 2,
            65..=256 => 3,
            257..=1024 => 4,
            _ => 5,
        }
    }
    format!("{:?} m{} n{} k{} v{}{}", p.t, bucket(p.m), bucket(p.n), bucket(p.k), p.vec_a() as u8, p.vec_b() as u8)
}

/// The key of `gpu`'s choices in memory and in the cache file: the adapter and driver
/// ([`Gpu::adapter_key`]), whether the device has subgroups — a device created without them
/// (a host's, through [`Gpu::from_device`]) on an adapter that has them cannot run `sg32x8` —
/// and the device limits that decide which kernels can run: a host's device with WebGPU's
/// default limits cannot bind a fused kernel that a device with all the adapter's limits
/// measured faster, so the two never share a choice.
pub fn device_key(gpu: &Gpu) -> String {
    let l = gpu.limits();
    format!(
        "{}|{}|storage buffers {}, binding {}, buffer {}, workgroup {}x{}x{} ({} invocations, {} bytes shared), {} groups",
        gpu.adapter_key(),
        if gpu.has(wgpu::Features::SUBGROUP) { "subgroups" } else { "no subgroups" },
        l.max_storage_buffers_per_shader_stage,
        l.max_storage_buffer_binding_size,
        l.max_buffer_size,
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z,
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_storage_size,
        l.max_compute_workgroups_per_dimension,
    )
}

/// The variant used without measuring.
pub fn static_default(gpu: &Gpu, p: &Problem) -> Variant {
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let ranked: &[Variant] = if cpu { &[Variant::Sg32x8, Variant::Block16x16] } else { &[Variant::Tile64] };
    ranked.iter().copied().find(|v| v.fits(gpu, p.m, p.n)).unwrap_or(Variant::Reg4x4)
}

/// Chooses the variant for `p` (see the module docs for the order of precedence).
pub fn choose(gpu: &Gpu, p: Problem, epi: Epilogue<'_>) -> Result<Choice> {
    if let Some(v) = forced() {
        let variant = if v.fits(gpu, p.m, p.n) { v } else { Variant::Reg4x4 };
        return Ok(Choice { variant, source: Source::Forced });
    }
    if std::env::var("HEADSWAP_AUTOTUNE").is_ok_and(|v| v == "0") || p.m == 0 || p.n == 0 || p.k == 0 {
        return Ok(Choice { variant: static_default(gpu, &p), source: Source::Static });
    }
    let class = class_key(&p);
    let usable = |name: &str| Variant::from_name(name).is_some_and(|v| v.fits(gpu, p.m, p.n));
    let (name, source) = recall_or_measure(gpu, &class, &MEASURING, usable, || Ok(measure(gpu, p, epi, &class)?.name()))?;
    let variant = Variant::from_name(&name).unwrap_or_else(|| static_default(gpu, &p));
    Ok(Choice { variant, source })
}

/// The name remembered for `class` on `gpu` (its [`device_key`]) that `usable` accepts, from
/// memory or the cache file; else `measure`'s, counted in [`measurements`] and remembered. A
/// double-checked lookup: `lock` (one per kind of choice) is held while measuring, so two threads
/// do not measure the same class, and the second finds the first's answer. The matmul's and the
/// convolution's choices ([`crate::kernels::conv::choose_algo`]) both go through it.
pub(crate) fn recall_or_measure(
    gpu: &Gpu,
    class: &str,
    lock: &Mutex<()>,
    usable: impl Fn(&str) -> bool,
    measure: impl FnOnce() -> Result<&'static str>,
) -> Result<(String, Source)> {
    let device = device_key(gpu);
    let recalled = || recall(&device, class).filter(|(name, _)| usable(name));
    if let Some(found) = recalled() {
        return Ok(found);
    }
    let _measuring = lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = recalled() {
        return Ok(found); // another thread measured it while we waited
    }
    let name = measure()?;
    MEASUREMENTS.fetch_add(1, Ordering::Relaxed);
    remember(&device, class, name);
    Ok((name.to_string(), Source::Measured))
}

/// `HEADSWAP_MATMUL`, if it names a variant (an unknown name is reported once and ignored).
fn forced() -> Option<Variant> {
    let name = std::env::var("HEADSWAP_MATMUL").ok().filter(|v| !v.is_empty())?;
    let v = Variant::from_name(&name);
    if v.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            let names: Vec<_> = Variant::ALL.iter().map(|v| v.name()).collect();
            tracing::warn!("HEADSWAP_MATMUL={name} names no matmul variant ({}); ignored", names.join(", "));
        });
    }
    v
}

/// The name chosen for `class` on `adapter` (a device key), from memory, or from the cache file
/// the first time this adapter is seen.
fn recall(adapter: &str, class: &str) -> Option<(String, Source)> {
    let mut st = state();
    let source = if st.contains_key(adapter) {
        Source::Memory
    } else {
        let loaded = load(adapter);
        st.insert(adapter.to_string(), loaded);
        Source::CacheFile
    };
    st[adapter].get(class).map(|name| (name.clone(), source))
}

/// Remembers a measured choice in memory and in the cache file.
fn remember(adapter: &str, class: &str, name: &str) {
    state().entry(adapter.to_string()).or_default().insert(class.to_string(), name.to_string());
    save(adapter, class, name);
}

/// Set once reading the cache file gave a warning: one per process, not one per lookup.
static READ_WARNED: AtomicBool = AtomicBool::new(false);
/// Set once writing the cache file failed: later choices stay in memory and are not written, so
/// an unwritable folder is one warning, not one per class a run measures (a dozen or more).
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

/// Warns about the cache file unless `flag` says this kind of warning was given (later ones go
/// to the debug log).
fn warn_once(flag: &AtomicBool, path: &std::path::Path, message: std::fmt::Arguments<'_>) {
    if flag.swap(true, Ordering::Relaxed) {
        tracing::debug!(path = %path.display(), "{message}");
    } else {
        tracing::warn!(path = %path.display(), "{message}");
    }
}

/// The whole cache file as JSON, or `None` (with a warning, unless it does not exist or is an
/// older version's, which is replaced).
fn read_file(path: &std::path::Path) -> Option<serde_json::Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // no file, or a folder on its path that is a file: no cache yet (writing says if it cannot)
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => return None,
        Err(e) => {
            warn_once(&READ_WARNED, path, format_args!("ignoring the autotune cache: {e}"));
            return None;
        }
    };
    let ignored = |why: &dyn std::fmt::Display| warn_once(&READ_WARNED, path, format_args!("ignoring the autotune cache: {why}"));
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.get("version").and_then(|x| x.as_u64()) == Some(FILE_VERSION) && v.get("adapters").is_some_and(|a| a.is_object()) => {
            Some(v)
        }
        Ok(v) if v.get("version").and_then(|x| x.as_u64()).is_some_and(|n| n < FILE_VERSION) => {
            tracing::debug!(path = %path.display(), "an older autotune cache: replaced as choices are measured");
            None
        }
        Ok(_) => {
            ignored(&format_args!("not a version {FILE_VERSION} cache"));
            None
        }
        Err(e) => {
            ignored(&e);
            None
        }
    }
}

/// This adapter's choices from the cache file (names; ones no longer known are ignored by the caller).
fn load(adapter: &str) -> HashMap<String, String> {
    let Some(path) = cache_path() else { return HashMap::new() };
    let Some(file) = read_file(&path) else { return HashMap::new() };
    let entries = file["adapters"].get(adapter).and_then(|a| a.as_object());
    let choices: HashMap<String, String> =
        entries.into_iter().flatten().filter_map(|(class, v)| Some((class.clone(), v.as_str()?.to_string()))).collect();
    tracing::debug!(path = %path.display(), adapter, n = choices.len(), "autotune cache read");
    choices
}

/// Adds one choice to the cache file: read (another process may have added to it), merge, write
/// a temporary file, rename it over the old one. Failures are warnings; the choice stays in memory.
fn save(adapter: &str, class: &str, name: &str) {
    let Some(path) = cache_path() else { return };
    if WRITE_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut file = read_file(&path).unwrap_or_else(|| serde_json::json!({ "version": FILE_VERSION, "adapters": {} }));
    let adapters = file["adapters"].as_object_mut().expect("checked by read_file");
    let entry = adapters.entry(adapter.to_string()).or_insert_with(|| serde_json::json!({}));
    if !entry.is_object() {
        *entry = serde_json::json!({});
    }
    entry[class] = serde_json::Value::from(name);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        let hint = "the choices measured are kept for this run only; HEADSWAP_CACHE_DIR names another folder";
        warn_once(&WRITE_FAILED, &path, format_args!("could not write the autotune cache ({hint}): {e}"));
    }
}

/// Seconds per training step of each candidate launch list, timed as training records them:
/// several steps in one compute pass and one submission. Each list runs once untimed (that
/// compiles it), then the candidates alternate over three rounds, each keeping its best, so that
/// load on a shared machine hits every candidate alike.
pub(crate) fn time_step_candidates(gpu: &Gpu, label: &str, candidates: &[Vec<&crate::gpu::Dispatch>]) -> Result<Vec<f64>> {
    const STEPS: usize = 8;
    let run = |list: &[&crate::gpu::Dispatch]| -> Result<f64> {
        let t0 = Instant::now();
        let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
            for _ in 0..STEPS {
                for d in list {
                    d.encode(gpu, &mut pass);
                }
            }
        }
        gpu.queue().submit(Some(enc.finish()));
        gpu.sync()?;
        Ok(t0.elapsed().as_secs_f64() / STEPS as f64)
    };
    for list in candidates {
        run(list)?;
    }
    let mut best = vec![f64::INFINITY; candidates.len()];
    for _ in 0..3 {
        for (b, list) in best.iter_mut().zip(candidates) {
            *b = b.min(run(list)?);
        }
    }
    Ok(best)
}

/// A zero-filled scratch tensor outside the engine's byte accounting (so measuring does not show
/// in a plan's memory figures).
pub(crate) fn scratch(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("matmul_autotune_scratch"),
        size: 4 * n.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    Tensor::from_buffer(buffer, 0, shape)
}

/// Measures the candidates for `p`'s class and returns the fastest.
fn measure(gpu: &Gpu, p: Problem, epi: Epilogue<'_>, class: &str) -> Result<Variant> {
    let start = Instant::now();
    // The class's shape with each dimension capped, to a multiple of every tile (keeping the
    // remainder mod 4, so the vec4 layout is the class's own).
    let cap = |d: usize, lim: usize| if d <= lim { d } else { lim + d % 4 };
    let q = Problem { m: cap(p.m, 128), n: cap(p.n, 256), k: cap(p.k, 256), ..p };
    let (ta, tb) = q.t.flags();
    let a = scratch(gpu, &if ta { [q.k, q.m] } else { [q.m, q.k] })?;
    let b = scratch(gpu, &if tb { [q.n, q.k] } else { [q.k, q.n] })?;
    let c = scratch(gpu, &[q.m, q.n])?;
    let bias = match epi.bias {
        Some(_) => Some(scratch(gpu, &[q.n])?),
        None => None,
    };
    let epi = Epilogue { bias: bias.as_ref(), activation: epi.activation };
    // Enough launches per submission that the submission's own cost does not decide.
    let flops = 2.0 * (q.m * q.n * q.k) as f64;
    let reps = (32e6 / flops).ceil().clamp(1.0, 32.0) as usize;
    let run = |d: &crate::gpu::Dispatch| -> Result<f64> {
        let t0 = Instant::now();
        let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("matmul_autotune") });
        {
            let desc = wgpu::ComputePassDescriptor { label: Some("matmul_autotune"), timestamp_writes: None };
            let mut pass = enc.begin_compute_pass(&desc);
            for _ in 0..reps {
                d.encode(gpu, &mut pass);
            }
        }
        gpu.queue().submit(Some(enc.finish()));
        gpu.sync()?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    };
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    // A candidate that fails to build or run (a driver's limit, say) is left out, not an error.
    let mut candidates = Vec::new();
    for v in Variant::ALL.into_iter().filter(|&v| v.fits(gpu, q.m, q.n) && !(cpu && v == Variant::Tile64)) {
        // The first launch is untimed: lavapipe compiles the shader there.
        match build(gpu, v, &a, &b, &c, q, epi).and_then(|d| run(&d).map(|_| d)) {
            Ok(d) => candidates.push((v, d, f64::INFINITY)),
            Err(e) => tracing::warn!(variant = v.name(), "matmul autotune skips a candidate: {e}"),
        }
    }
    // Three interleaved rounds (so a burst of load elsewhere hits every candidate alike); after
    // the first, candidates over 3× the best are dropped.
    for round in 0..3 {
        for (_, d, best) in candidates.iter_mut() {
            *best = run(d).map_or(f64::INFINITY, |t| best.min(t));
        }
        let fastest = candidates.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
        candidates.retain(|c| c.2.is_finite() && (round > 0 || c.2 <= 3.0 * fastest));
    }
    let Some(&(v, _, _)) = candidates.iter().min_by(|x, y| x.2.total_cmp(&y.2)) else {
        tracing::warn!(class, "matmul autotune: no candidate ran; using the static default");
        return Ok(static_default(gpu, &p));
    };
    let report: Vec<String> = candidates.iter().map(|(v, _, t)| format!("{} {:.1}", v.name(), flops / t / 1e9)).collect();
    tracing::info!(
        class,
        shape = %format!("{}x{}x{}", q.m, q.n, q.k),
        gflops = %report.join(", "),
        chosen = v.name(),
        ms = start.elapsed().as_millis() as u64,
        "matmul autotune"
    );
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Transpose;

    #[test]
    fn class_keys_separate_forms_sizes_and_layouts() {
        let p = |m, n, k, t| Problem { m, n, k, t };
        assert_eq!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(100, 300, 700, Transpose::NT)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(128, 512, 784, Transpose::TN)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NT)), class_key(&p(128, 512, 20, Transpose::NT)));
        assert_ne!(class_key(&p(128, 512, 784, Transpose::NN)), class_key(&p(128, 510, 784, Transpose::NN)));
    }
}
