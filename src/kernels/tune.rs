//! The one mechanism behind every kernel choice headswap measures per device: the matmul variant
//! ([`super::matmul::choose`]), the convolution algorithm ([`super::conv::choose_algo`]), the fused or
//! separate linear head step ([`super::loss::choose_linear_head`]) and the optimizer's launch form
//! ([`super::optim::choose_range_launch`]). Each is a [`Tunable`] (its options, by name) asked
//! about one class of shapes (`Ask`); `choose` answers, in this order:
//!
//! 1. the option's environment variable ([`Tunable::ENV`]: `HEADSWAP_MATMUL`, `HEADSWAP_CONV`,
//!    `HEADSWAP_LINEAR_HEAD`, `HEADSWAP_OPTIM_LAUNCH`) forces an option by name; one that cannot
//!    run for this shape on this device gives the ask's fallback, and an unknown name is an error
//!    that lists the names;
//! 2. `HEADSWAP_AUTOTUNE=0` gives the ask's static choice, measuring and writing nothing;
//! 3. a choice made earlier for this device ([`device_key`]) and class: in memory, else in the
//!    cache file;
//! 4. otherwise the candidates are measured now (the caller builds them and times them with
//!    `time_candidates`); the fastest is remembered in memory and in the cache file.
//!
//! The cache file is `$HEADSWAP_CACHE_DIR/matmul_autotune.json` (else
//! `$XDG_CACHE_HOME/headswap/…`, else `~/.cache/headswap/…`), JSON keyed by [`device_key`] and
//! then by class (each kind's class keys start with its own word), written to a temporary file
//! and renamed into place. A file that cannot be read or parsed is ignored with one warning; a
//! folder that cannot be written gets one warning per process, and the choices stay in memory.
//!
//! Measuring submits and waits, and counts its dispatches in [`Gpu::counters`]: it belongs to
//! building a plan, never to a timed step.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Recorder, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// A kernel choice made per device: a few options, each with a name (for the environment
/// variable and the cache file).
pub trait Tunable: Copy + PartialEq + 'static {
    /// The environment variable that forces an option by name.
    const ENV: &'static str;
    /// What the options are, in messages: "matmul variant", "convolution algorithm", ...
    const WHAT: &'static str;
    /// Every option.
    const ALL: &'static [Self];
    /// The option's name in `ENV` and the cache file.
    fn name(self) -> &'static str;
    /// The option called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// Where a choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Its environment variable ([`Tunable::ENV`]).
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

/// One choice to make: for which class of shapes, and what to use without measuring.
pub(crate) struct Ask<'a, T> {
    /// The class key: what the choice is remembered under (starts with the kind's own word).
    pub class: String,
    /// The choice under `HEADSWAP_AUTOTUNE=0`.
    pub static_choice: T,
    /// What a forced option that cannot run here becomes.
    pub fallback: T,
    /// Whether an option can run for this class on this device (a remembered choice it refuses
    /// is measured again).
    pub usable: &'a dyn Fn(T) -> bool,
}

/// Chooses for `ask` (see the module docs for the order); `measure` runs only if nothing forces,
/// pins or remembers a choice, and must return a usable option.
pub(crate) fn choose<T: Tunable>(gpu: &Gpu, ask: Ask<'_, T>, measure: impl FnOnce() -> Result<T>) -> Result<(T, Source)> {
    if let Some(t) = forced::<T>()? {
        return Ok((if (ask.usable)(t) { t } else { ask.fallback }, Source::Forced));
    }
    if disabled() {
        return Ok((ask.static_choice, Source::Static));
    }
    let device = device_key(gpu);
    let recalled =
        || recall(&device, &ask.class).and_then(|(name, source)| Some((T::from_name(&name)?, source))).filter(|(t, _)| (ask.usable)(*t));
    if let Some(found) = recalled() {
        return Ok(found);
    }
    // one lock per kind, held while measuring: two threads do not measure the same class, and
    // the second finds the first's answer; per kind, because measuring one kind can ask another
    // (a convolution's im2col candidate builds matmuls)
    let _measuring = measuring_lock(T::ENV).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = recalled() {
        return Ok(found);
    }
    let t = measure()?;
    MEASUREMENTS.fetch_add(1, Ordering::Relaxed);
    remember(&device, &ask.class, t.name());
    Ok((t, Source::Measured))
}

/// `T::ENV`'s option, if set (empty means unset); an unknown name is an error listing the names.
pub(crate) fn forced<T: Tunable>() -> Result<Option<T>> {
    let Some(name) = std::env::var(T::ENV).ok().filter(|v| !v.is_empty()) else { return Ok(None) };
    T::from_name(&name).map(Some).ok_or_else(|| {
        let names: Vec<&str> = T::ALL.iter().map(|o| o.name()).collect();
        Error::invalid(format!("{}={name} names no {} ({})", T::ENV, T::WHAT, names.join(", ")))
    })
}

/// Whether `HEADSWAP_AUTOTUNE=0` pins every choice to its static one.
pub(crate) fn disabled() -> bool {
    std::env::var("HEADSWAP_AUTOTUNE").is_ok_and(|v| v == "0")
}

fn measuring_lock(kind: &'static str) -> &'static Mutex<()> {
    static LOCKS: OnceLock<Mutex<HashMap<&'static str, &'static Mutex<()>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(kind).or_insert_with(|| Box::leak(Box::new(Mutex::new(()))))
}

/// Classes measured in this process, every kind together (tests check that a remembered class
/// is not measured again).
pub fn measurements() -> u64 {
    MEASUREMENTS.load(Ordering::Relaxed)
}

static MEASUREMENTS: AtomicU64 = AtomicU64::new(0);

/// Seconds per run of each candidate launch list, timed as training records them: `reps` copies
/// of the list in one compute pass and one submission, the wait inside the timing. Each list runs
/// once untimed first (lavapipe compiles there); one that fails there (a driver's limit) is left
/// out with a warning and gets an infinite time. Then the candidates alternate over three rounds,
/// each keeping its best, so that load elsewhere on a shared machine hits every candidate alike;
/// after the first round, one over 3× the fastest is not run again.
pub(crate) fn time_candidates(gpu: &Gpu, label: &str, candidates: &[Vec<&Dispatch>], reps: usize) -> Result<Vec<f64>> {
    let reps = reps.max(1);
    let run = |list: &[&Dispatch]| -> Result<f64> {
        let t0 = Instant::now();
        let mut rec = Recorder::new(gpu, label);
        rec.pass(label, (0..reps).flat_map(|_| list.iter().copied()));
        // not counted in the engine's submissions: measuring is no part of a step
        rec.submit_uncounted();
        gpu.sync()?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    };
    let mut best = vec![f64::INFINITY; candidates.len()];
    let mut live: Vec<bool> = Vec::with_capacity(candidates.len());
    for (i, list) in candidates.iter().enumerate() {
        match run(list) {
            Ok(_) => live.push(true),
            Err(e) => {
                tracing::warn!(label, candidate = i, "autotune leaves out a candidate that failed to run: {e}");
                live.push(false);
            }
        }
    }
    for round in 0..3 {
        for ((b, list), _) in best.iter_mut().zip(candidates).zip(&live).filter(|(_, l)| **l) {
            *b = b.min(run(list)?);
        }
        if round == 0 {
            let fastest = best.iter().copied().fold(f64::INFINITY, f64::min);
            for (l, b) in live.iter_mut().zip(&best) {
                *l = *l && *b <= 3.0 * fastest;
            }
        }
    }
    Ok(best)
}

/// The option with the least time (the first among equals), or `None` if none ran; logs the times.
pub(crate) fn fastest<T: Tunable>(class: &str, options: &[T], secs: &[f64], started: Instant) -> Option<T> {
    let (i, _) = secs.iter().enumerate().filter(|(_, t)| t.is_finite()).min_by(|a, b| a.1.total_cmp(b.1))?;
    let times: Vec<String> =
        options.iter().zip(secs).filter(|(_, t)| t.is_finite()).map(|(o, t)| format!("{} {:.3} ms", o.name(), 1e3 * t)).collect();
    let chosen = options[i].name();
    tracing::info!(class, times = %times.join(", "), chosen, ms = started.elapsed().as_millis() as u64, "{} autotune", T::WHAT);
    Some(options[i])
}

/// A zero-filled scratch tensor outside the engine's byte accounting (so measuring does not show
/// in a plan's memory figures).
pub(crate) fn scratch(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("autotune_scratch"),
        size: 4 * n.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    Tensor::from_buffer(buffer, 0, shape)
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

// ---- the cache file ----------------------------------------------------------------------------

/// Choices per device key, then class key; a device is present once its cache file entry was read.
type Choices = HashMap<String, HashMap<String, String>>;

fn state() -> MutexGuard<'static, Choices> {
    static STATE: OnceLock<Mutex<Choices>> = OnceLock::new();
    STATE.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

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

/// The name chosen for `class` on `device` (a device key), from memory, or from the cache file
/// the first time this device is seen.
fn recall(device: &str, class: &str) -> Option<(String, Source)> {
    let mut st = state();
    let source = if st.contains_key(device) {
        Source::Memory
    } else {
        let loaded = load(device);
        st.insert(device.to_string(), loaded);
        Source::CacheFile
    };
    st[device].get(class).map(|name| (name.clone(), source))
}

/// Remembers a measured choice in memory and in the cache file.
fn remember(device: &str, class: &str, name: &str) {
    state().entry(device.to_string()).or_default().insert(class.to_string(), name.to_string());
    save(device, class, name);
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

/// This device's choices from the cache file (names; ones no longer known are ignored by the caller).
fn load(device: &str) -> HashMap<String, String> {
    let Some(path) = cache_path() else { return HashMap::new() };
    let Some(file) = read_file(&path) else { return HashMap::new() };
    let entries = file["adapters"].get(device).and_then(|a| a.as_object());
    let choices: HashMap<String, String> =
        entries.into_iter().flatten().filter_map(|(class, v)| Some((class.clone(), v.as_str()?.to_string()))).collect();
    tracing::debug!(path = %path.display(), device, n = choices.len(), "autotune cache read");
    choices
}

/// Adds one choice to the cache file: read (another process may have added to it), merge, write
/// a temporary file, rename it over the old one. Failures are warnings; the choice stays in memory.
fn save(device: &str, class: &str, name: &str) {
    let Some(path) = cache_path() else { return };
    if WRITE_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut file = read_file(&path).unwrap_or_else(|| serde_json::json!({ "version": FILE_VERSION, "adapters": {} }));
    let Some(devices) = file["adapters"].as_object_mut() else { return };
    let entry = devices.entry(device.to_string()).or_insert_with(|| serde_json::json!({}));
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
