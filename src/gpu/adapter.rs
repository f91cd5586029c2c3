//! Adapter choice. Follows wgpu's own environment conventions so that a user who knows wgpu
//! needs to learn nothing new:
//!
//! * `WGPU_BACKEND` — comma list (`vulkan`, `gl`, `metal`, `dx12`); empty counts as unset.
//! * `WGPU_ADAPTER_NAME` — case-insensitive substring of the adapter's name.
//! * `WGPU_POWER_PREF` — `high` (default: discrete first) or `low` (integrated first).
//!
//! Without them the order is: a hardware GPU on a native backend, then a software Vulkan adapter
//! (lavapipe), then GL (a hardware GL driver before llvmpipe).

use crate::error::{Error, Result};
use wgpu::{Backend, Backends, DeviceType, PowerPreference};

/// The backends asked for: `WGPU_BACKEND` when it names at least one, else every native backend.
pub fn requested_backends() -> Backends {
    backends_from(std::env::var("WGPU_BACKEND").ok().as_deref())
}

/// [`requested_backends`] for a given value of `WGPU_BACKEND`: unset, empty or naming nothing
/// known means every backend (an empty variable must not select no backend at all).
pub fn backends_from(value: Option<&str>) -> Backends {
    match value {
        Some(s) if !s.trim().is_empty() => {
            let b = Backends::from_comma_list(s);
            if b.is_empty() { Backends::all() } else { b }
        }
        _ => Backends::all(),
    }
}

/// Mesa's implicit Vulkan "device select" layer connects to Wayland while the instance
/// enumerates devices, and libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in
/// the environment." on a headless machine (twice), which reads like a headswap failure. headswap
/// chooses its adapter itself, so the layer has nothing to add: switch it off through its own
/// variable, `NODEVICE_SELECT=1`, as the `headswap` CLI does, when
///
/// * Vulkan is requested, `XDG_RUNTIME_DIR` is unset (no Wayland session to find anyway) and
///   the user has not set `NODEVICE_SELECT` either way; and
/// * the process has a single thread. Changing the environment is only sound while no other
///   thread can read it (C's `getenv` takes no lock); with one thread, none can. A program that
///   has started threads keeps the message (set `NODEVICE_SELECT=1` yourself to avoid it).
pub(crate) fn quiet_device_select_layer(backends: Backends) {
    let env = |k: &str| std::env::var_os(k);
    if should_quiet(backends, env("NODEVICE_SELECT").is_some(), env("XDG_RUNTIME_DIR").is_some()) && single_threaded() {
        // SAFETY: this process has one thread (checked just above, and only this thread could
        // start another), so nothing reads the environment while it changes.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// The environment half of [`quiet_device_select_layer`]'s rule (testable without threads).
fn should_quiet(backends: Backends, nodevice_select_set: bool, xdg_runtime_dir_set: bool) -> bool {
    backends.contains(Backends::VULKAN) && !nodevice_select_set && !xdg_runtime_dir_set
}

/// Whether this process runs exactly one thread; `false` where that cannot be told.
fn single_threaded() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Lower is better. Separate from the selection so it can be unit-tested without adapters.
pub fn rank(backend: Backend, device_type: DeviceType, power: PowerPreference) -> u32 {
    let gl = backend == Backend::Gl;
    let hardware_rank = match (device_type, power) {
        (DeviceType::DiscreteGpu, PowerPreference::LowPower) => 1,
        (DeviceType::IntegratedGpu, PowerPreference::LowPower) => 0,
        (DeviceType::DiscreteGpu, _) => 0,
        (DeviceType::IntegratedGpu, _) => 1,
        (DeviceType::VirtualGpu, _) => 2,
        (DeviceType::Other, _) => 3,
        (DeviceType::Cpu, _) => 4,
    };
    let software = device_type == DeviceType::Cpu;
    // hardware native < software native < hardware GL < software GL
    let class = match (gl, software) {
        (false, false) => 0,
        (false, true) => 1,
        (true, false) => 2,
        (true, true) => 3,
    };
    class * 10 + hardware_rank
}

pub(crate) fn backend_names(b: Backends) -> String {
    let mut names = Vec::new();
    for (flag, name) in [(Backends::VULKAN, "vulkan"), (Backends::GL, "gl"), (Backends::METAL, "metal"), (Backends::DX12, "dx12")] {
        if b.contains(flag) {
            names.push(name);
        }
    }
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// Picks the adapter following the rules in the module docs: among the best-ranked adapters (the
/// same class, e.g. several identical GPUs), the one at `nth` modulo their number, so that the
/// replicas of a data-parallel run on one machine (`nth` = local rank) take one GPU each.
pub(crate) fn choose(instance: &wgpu::Instance, backends: Backends, nth: usize) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let name_filter = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.trim().is_empty());
    let power = PowerPreference::from_env().unwrap_or(PowerPreference::HighPerformance);
    let mut seen = Vec::new();
    let mut best: Option<(u32, Vec<wgpu::Adapter>)> = None;
    for adapter in adapters {
        let info = adapter.get_info();
        seen.push(format!("{} ({:?})", info.name, info.backend));
        if let Some(f) = &name_filter
            && !info.name.to_lowercase().contains(&f.to_lowercase())
        {
            continue;
        }
        let r = rank(info.backend, info.device_type, power);
        tracing::debug!(name = %info.name, backend = ?info.backend, rank = r, "adapter candidate");
        match &mut best {
            Some((br, same)) if r == *br => same.push(adapter),
            Some((br, _)) if r > *br => {}
            _ => best = Some((r, vec![adapter])),
        }
    }
    match best {
        Some((_, mut same)) => {
            let k = nth % same.len();
            Ok(same.swap_remove(k))
        }
        None => {
            let mut tried = backend_names(backends);
            if let Some(f) = name_filter {
                tried.push_str(&format!("; WGPU_ADAPTER_NAME={f:?} matched none of [{}]", seen.join(", ")));
            }
            Err(Error::NoAdapter { tried })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_backend_variable_means_unset() {
        assert_eq!(backends_from(None), Backends::all());
        assert_eq!(backends_from(Some("")), Backends::all());
        assert_eq!(backends_from(Some("  ")), Backends::all());
        assert_eq!(backends_from(Some("vulkan")), Backends::VULKAN);
        assert_eq!(backends_from(Some("gl")), Backends::GL);
        assert_eq!(backends_from(Some("vk,gl")), Backends::VULKAN | Backends::GL);
        assert_eq!(backend_names(Backends::VULKAN | Backends::GL), "vulkan, gl");
    }

    #[test]
    fn device_select_layer_is_quieted_only_when_nobody_chose() {
        assert!(should_quiet(Backends::all(), false, false));
        assert!(!should_quiet(Backends::all(), true, false), "an explicit NODEVICE_SELECT is the user's");
        assert!(!should_quiet(Backends::all(), false, true), "with a Wayland session the layer may matter");
        assert!(!should_quiet(Backends::GL, false, false), "GL does not load Vulkan layers");
    }

    #[test]
    fn hardware_before_software_before_gl() {
        let p = PowerPreference::HighPerformance;
        let discrete_vk = rank(Backend::Vulkan, DeviceType::DiscreteGpu, p);
        let integrated_vk = rank(Backend::Vulkan, DeviceType::IntegratedGpu, p);
        let lavapipe = rank(Backend::Vulkan, DeviceType::Cpu, p);
        let gl_hw = rank(Backend::Gl, DeviceType::IntegratedGpu, p);
        let llvmpipe = rank(Backend::Gl, DeviceType::Cpu, p);
        assert!(discrete_vk < integrated_vk);
        assert!(integrated_vk < lavapipe);
        assert!(lavapipe < gl_hw);
        assert!(gl_hw < llvmpipe);
        let low = PowerPreference::LowPower;
        assert!(rank(Backend::Vulkan, DeviceType::IntegratedGpu, low) < rank(Backend::Vulkan, DeviceType::DiscreteGpu, low));
    }
}
