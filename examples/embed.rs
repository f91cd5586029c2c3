//! headswap as an accelerated backend inside a host program that owns its wgpu device: the host
//! creates the instance, adapter, device and queue (as a game engine or renderer would), hands
//! them to headswap, runs a kernel on a buffer it created itself, then trains on the same device.
//!
//! cargo run --example embed
use headswap::kernels::{self, Transpose};
use headswap::nn::{Head, Network};
use headswap::train::{Optimizer, TrainConfig, Trainer};
use headswap::{Gpu, Tensor};
use wgpu::util::DeviceExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- the host program's own wgpu setup ---
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    let host_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("host-owned matrix"),
        contents: bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    });

    // --- headswap on the host's device and buffer ---
    let gpu = Gpu::from_device(device.clone(), queue.clone(), Some(adapter.get_info()));
    let a = Tensor::from_buffer(host_buffer.clone(), 0, &[2, 3])?;
    let mut c = Tensor::zeros(&gpu, &[2, 2])?;
    kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT)?; // A·Aᵀ
    println!("A·Aᵀ on the host's buffer = {:?}", c.download(&gpu)?); // [14, 32, 32, 77]

    let data = headswap::data::synthetic::shapes_task_a(800, 16, 1);
    let mut net = Network::new(&gpu, &[256, 64], Head::classes(8), 3)?;
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05).momentum(0.9), batch_size: 32, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, cfg).fit(&mut net, &data, 3)?;
    println!("trained on the host's device: loss {:.3} → {:.3}", report.epochs[0].train.loss, report.last().map_or(0.0, |e| e.train.loss));

    // The host's device is still the host's: it keeps using it after headswap is done.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("host work") });
    encoder.clear_buffer(&host_buffer, 0, None);
    queue.submit(Some(encoder.finish()));
    Ok(())
}
