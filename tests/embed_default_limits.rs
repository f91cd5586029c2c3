//! A host program that creates its device with WebGPU's default limits
//! (`wgpu::DeviceDescriptor::default()`: 8 storage buffers per shader stage, 128 MiB per storage
//! binding, 256 invocations per workgroup, 16 KiB of workgroup memory) and hands it to headswap:
//! every path works there, choosing the kernels that fit.
use headswap::data::synthetic::{scenes_task_b, shapes_task_a};
use headswap::nn::{Activation, CnnBuilder, Head, Init, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};
use headswap::wgpu;
use headswap::{Error, Gpu};

/// The suite's adapter (`WGPU_BACKEND` picks it), as a host would request it.
fn host_adapter() -> wgpu::Adapter {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("the host needs an adapter")
}

/// A device with `limits` on `adapter`, handed to headswap.
fn host_gpu(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> headswap::Result<Gpu> {
    let desc = wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("host device");
    Gpu::from_device(device, queue, Some(adapter))
}

/// The form `examples/embed.rs` shows first: `DeviceDescriptor::default()`, WebGPU's default limits.
fn default_limits_gpu() -> (wgpu::Adapter, Gpu) {
    let adapter = host_adapter();
    // lavapipe and llvmpipe (GL) both give the defaults; an adapter that cannot is a failure here,
    // not a skip, so that this test never silently passes on less
    assert!(
        wgpu::Limits::default().check_limits(&adapter.limits()),
        "{} cannot give WebGPU's default limits: {:?}",
        adapter.get_info().name,
        adapter.limits()
    );
    let gpu = host_gpu(&adapter, wgpu::Limits::default()).expect("headswap accepts a device with WebGPU's default limits");
    assert_eq!(gpu.limits().max_storage_buffers_per_shader_stage, 8);
    (adapter, gpu)
}

fn sgd(batch: usize) -> TrainConfig {
    TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: batch, ..TrainConfig::default() }
}

/// The same network on another device, with the same values (to evaluate it there).
fn copy_to(gpu: &Gpu, net: &Network) -> Network {
    Network::from_layers(gpu, net.trunk_layers().to_vec(), net.head_layers().to_vec(), net.head_kind(), &net.values().unwrap()).unwrap()
}

fn falls(report: &headswap::train::FitReport, what: &str) {
    let (first, last) = (report.epochs[0].train.loss, report.last().unwrap().train.loss);
    assert!(first.is_finite() && last.is_finite() && last < first, "{what}: loss {first} → {last}");
}

/// Pretrain (classes), head-swap, fine-tune (labels) head-only on cached features and with
/// everything trainable, evaluate; and fit labels from scratch: all on a device with WebGPU's
/// default limits. Small batches take the fused head kernels where a device allows them
/// (`head_bce` binds 9 storage buffers, `linear_head_bce` 12), so these are the paths that failed.
#[test]
fn every_training_path_runs_within_webgpu_default_limits() {
    let (adapter, gpu) = default_limits_gpu();
    let mut net = Network::new(&gpu, &[256, 32, 16], Head::classes(8), 3).unwrap();
    let mut trainer = Trainer::new(&gpu, sgd(32));
    falls(&trainer.fit(&mut net, &shapes_task_a(512, 16, 1), 3).unwrap(), "fit classes");

    net.swap_head(Head::labels(4), 7).unwrap();
    let task_b = scenes_task_b(96, 16, 2);
    let head_only = trainer.fine_tune(&mut net, &task_b, Freeze::Trunk, 8).unwrap();
    assert!(head_only.cached_features, "the frozen trunk's features were not cached");
    falls(&head_only, "fine-tune, trunk frozen");
    // everything trainable, with Adam: two parameter ranges (head and trunk) of three buffers each
    let mut adam = Trainer::new(&gpu, TrainConfig { optimizer: Optimizer::adam(1e-3), batch_size: 16, ..TrainConfig::default() });
    falls(&adam.fine_tune(&mut net, &task_b, Freeze::All, 4).unwrap(), "fine-tune, everything trainable");

    let test = scenes_task_b(64, 16, 3);
    let m = trainer.evaluate(&net, &test).unwrap();
    let labels = m.labels.as_ref().expect("per-label metrics");
    assert_eq!(labels.f1.len(), 4);
    assert!(m.loss.is_finite() && labels.f1.iter().flatten().all(|f| (0.0..=1.0).contains(f)), "{m:?}");

    // The same weights evaluated on a device with all the adapter's limits (where the fused
    // kernels run) give the same loss and counts.
    let full = host_gpu(&adapter, adapter.limits()).unwrap();
    let there = Trainer::new(&full, sgd(32)).evaluate(&copy_to(&full, &net), &test).unwrap();
    assert!((there.loss - m.loss).abs() <= 1e-4 * m.loss.abs().max(1.0), "loss {} here, {} with the adapter's limits", m.loss, there.loss);
    assert_eq!(there.labels.unwrap().f1, labels.f1);

    // labels from scratch, with a last partial batch
    let mut fresh = Network::new(&gpu, &[256, 16], Head::labels(4), 5).unwrap();
    falls(&Trainer::new(&gpu, sgd(24)).fit(&mut fresh, &task_b, 4).unwrap(), "fit labels");
}

/// A convolutional trunk, pretrained and fine-tuned head-only, on the same kind of device.
#[test]
fn a_cnn_trains_within_webgpu_default_limits() {
    let (_, gpu) = default_limits_gpu();
    let trunk = CnnBuilder::new(1, 16, 16)
        .conv(4, 3, 1, 1, Activation::Relu)
        .max_pool(2, 2)
        .conv(8, 3, 1, 1, Activation::Relu)
        .global_avg_pool()
        .dense(16, Activation::Relu)
        .build()
        .unwrap();
    let mut net = Network::from_specs(&gpu, 256, trunk, Init::KaimingUniform, Head::classes(8), 11).unwrap();
    let mut trainer = Trainer::new(&gpu, sgd(32));
    falls(&trainer.fit(&mut net, &shapes_task_a(256, 16, 4), 3).unwrap(), "fit a CNN");
    net.swap_head(Head::labels(4), 9).unwrap();
    let report = trainer.fine_tune(&mut net, &scenes_task_b(64, 16, 5), Freeze::Trunk, 6).unwrap();
    assert!(report.cached_features);
    falls(&report, "fine-tune a CNN's head");
}

/// A device below what headswap cannot do without (4 storage buffers per stage: the matrix
/// product binds 7) is refused by `from_device` itself, naming the limit to request and what the
/// adapter would give; not later, in the middle of a run.
#[test]
fn a_device_too_small_for_headswap_is_refused_up_front() {
    let adapter = host_adapter();
    let limits = wgpu::Limits::downlevel_defaults();
    assert!(limits.check_limits(&adapter.limits()));
    let err = host_gpu(&adapter, limits.clone()).expect_err("a device with 4 storage buffers per stage was accepted");
    let adapter_allows = adapter.limits().max_storage_buffers_per_shader_stage as u64;
    match &err {
        Error::DeviceLimit { limit_name, needed, device, adapter, .. } => {
            assert_eq!((*limit_name, *needed, *device, *adapter), ("max_storage_buffers_per_shader_stage", 7, 4, Some(adapter_allows)));
        }
        other => panic!("expected a DeviceLimit error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("the device allows 4") && text.contains(&format!("the adapter allows {adapter_allows}")), "{text}");
    assert!(!text.contains("the adapter allows 4"), "{text}");
    // without the adapter, the message cannot say what it would give, and says so
    let desc = wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let text = Gpu::from_device(device, queue, None).expect_err("accepted without an adapter").to_string();
    assert!(text.contains("max_storage_buffers_per_shader_stage") && text.contains("the device allows 4"), "{text}");
}

/// A fused kernel launched directly (the kernel library's API) on a device that cannot bind it is
/// an error that blames the device's requested limits, not the adapter, which allows more.
#[test]
fn a_kernel_past_the_device_limits_names_the_device_and_the_adapter() {
    use headswap::kernels::loss::{BceOptions, HeadOutputs, head_bce_dispatch};
    use headswap::{Tensor, gpu::tensor::DType};
    let (adapter, gpu) = default_limits_gpu();
    let (m, k) = (7, 3);
    let logits = Tensor::zeros(&gpu, &[m, k]).unwrap();
    let targets = Tensor::zeros(&gpu, &[m, k]).unwrap();
    let dlogits = Tensor::zeros(&gpu, &[m, k]).unwrap();
    let acc = Tensor::zeros(&gpu, &[1]).unwrap();
    let counts = Tensor::alloc(&gpu, &[k, 4], DType::U32, "counts").unwrap();
    let db = Tensor::zeros(&gpu, &[k]).unwrap();
    let out = HeadOutputs { dlogits: &dlogits, loss_acc: &acc, counts: &counts, db: Some(&db) };
    let err = head_bce_dispatch(&gpu, &logits, &targets, &BceOptions::default(), 0.5, &out).expect_err("head_bce binds 9 of 8");
    let text = err.to_string();
    let adapter_allows = adapter.limits().max_storage_buffers_per_shader_stage;
    assert!(adapter_allows > 8, "the adapter allows only {adapter_allows}: this test needs one that allows more than the device");
    assert!(
        text.contains("head_bce")
            && text.contains("≥ 9")
            && text.contains("the device allows 8 (requested by the program that created it")
            && text.contains(&format!("the adapter allows {adapter_allows}")),
        "{text}"
    );
}

/// The autotuner's choices are remembered per device: a device with fewer limits than another on
/// the same adapter has its own key, so a choice measured where a fused kernel fits is never
/// reused where it does not.
#[test]
fn the_autotune_key_differs_for_a_limited_device() {
    use headswap::kernels::autotune::device_key;
    let (adapter, limited) = default_limits_gpu();
    let full = host_gpu(&adapter, adapter.limits()).unwrap();
    assert_ne!(limited.limits().max_storage_buffers_per_shader_stage, full.limits().max_storage_buffers_per_shader_stage);
    assert_eq!(limited.adapter_key(), full.adapter_key(), "the same adapter and driver");
    assert_ne!(device_key(&limited), device_key(&full));
    // and it is a function of the device, not of the Gpu value
    assert_eq!(device_key(&full), device_key(&host_gpu(&adapter, adapter.limits()).unwrap()));
}
