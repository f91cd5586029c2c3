//! headswap as an accelerated backend inside a host program that owns its wgpu device: the host
//! creates the instance, adapter, device and queue (as a game engine or renderer would), hands
//! them to headswap, runs a kernel on a buffer it created itself, then trains on the same device.
//!
//! The host uses `headswap::wgpu`, the wgpu headswap is built on, so the types agree. Two ways to
//! make the device: WebGPU's default limits (`DeviceDescriptor::default()`, what most hosts ask
//! for; every headswap path works there), or every limit the adapter has (room for headswap's
//! larger fused kernels).
//!
//! cargo run --example embed               # the device with WebGPU's default limits
//! cargo run --example embed -- --adapter  # the device with the adapter's limits
use headswap::data::synthetic::{scenes_task_b, shapes_task_a};
use headswap::kernels::{self, Transpose};
use headswap::nn::{Head, Network};
use headswap::train::{Freeze, Optimizer, TrainConfig, Trainer};
use headswap::wgpu::{self, util::DeviceExt};
use headswap::{Gpu, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- the host program's own wgpu setup ---
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let desc = if std::env::args().any(|a| a == "--adapter") {
        // every limit the adapter has (what Gpu::new asks for)
        wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }
    } else {
        // WebGPU's default limits: 8 storage buffers per shader stage, 128 MiB per binding
        wgpu::DeviceDescriptor::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc))?;
    let host_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("host-owned matrix"),
        contents: bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    });

    // --- headswap on the host's device and buffer ---
    // Refused here, naming the limit to request, if the device is below what headswap needs.
    let gpu = Gpu::from_device(device.clone(), queue.clone(), Some(&adapter))?;
    println!(
        "device: {} storage buffers per shader stage (the adapter allows {})",
        gpu.limits().max_storage_buffers_per_shader_stage,
        adapter.limits().max_storage_buffers_per_shader_stage
    );
    let a = Tensor::from_buffer(host_buffer.clone(), 0, &[2, 3])?;
    let mut c = Tensor::zeros(&gpu, &[2, 2])?;
    kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT)?; // A·Aᵀ
    println!("A·Aᵀ on the host's buffer = {:?}", c.download(&gpu)?); // [14, 32, 32, 77]

    // Pretrain, head-swap, fine-tune labels with the trunk frozen, evaluate: on the host's device.
    let mut net = Network::new(&gpu, &[256, 64], Head::classes(8), 3)?;
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: 32, ..TrainConfig::default() };
    let mut trainer = Trainer::new(&gpu, cfg);
    let report = trainer.fit(&mut net, &shapes_task_a(800, 16, 1), 3)?;
    println!("trained on the host's device: loss {:.3} → {:.3}", report.epochs[0].train.loss, report.last().map_or(0.0, |e| e.train.loss));
    net.swap_head(Head::labels(4), 7)?;
    trainer.fine_tune(&mut net, &scenes_task_b(100, 16, 2), Freeze::Trunk, 20)?;
    let m = trainer.evaluate(&net, &scenes_task_b(200, 16, 3))?;
    println!("4 labels after a head-only fine-tune: mean F1 {:.3}", headswap::kernels::metrics::OrNa(m.score()));

    // The host's device is still the host's: it keeps using it after headswap is done.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("host work") });
    encoder.clear_buffer(&host_buffer, 0, None);
    queue.submit(Some(encoder.finish()));
    Ok(())
}
