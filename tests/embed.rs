//! Embedding: a host program that owns its wgpu device and queue hands them to headswap; the
//! kernel library then runs on the host's own buffers, and training runs on the same device.
mod common;
use common::*;
use headswap::kernels::{self, Transpose};
use headswap::{Gpu, Tensor};
use wgpu::util::DeviceExt;

fn host_device() -> (wgpu::Adapter, wgpu::Device, wgpu::Queue) {
    // The host chooses its adapter the way its own code does; here: the same backends as the suite.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("the host needs an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).expect("host device");
    (adapter, device, queue)
}

#[test]
fn kernels_run_on_a_host_device_and_host_buffers() {
    let (adapter, device, queue) = host_device();
    let (m, k, n) = (7, 33, 5);
    let a = rand_vec(1, m * k);
    let b = rand_vec(2, n * k);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let host_a =
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("host a"), contents: bytemuck::cast_slice(&a), usage });
    // b sits 256 bytes into a larger host buffer, after other host data
    let mut b_padded = vec![123.0f32; 64];
    b_padded.extend(&b);
    let host_b = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("host b"),
        contents: bytemuck::cast_slice(&b_padded),
        usage,
    });
    let host_c =
        device.create_buffer(&wgpu::BufferDescriptor { label: Some("host c"), size: (m * n * 4) as u64, usage, mapped_at_creation: false });

    let gpu = Gpu::from_device(device.clone(), queue.clone(), Some(&adapter)).unwrap();
    let ta = Tensor::from_buffer(host_a, 0, &[m, k]).unwrap();
    let tb = Tensor::from_buffer(host_b.clone(), 256, &[n, k]).unwrap();
    let mut tc = Tensor::from_buffer(host_c.clone(), 0, &[m, n]).unwrap();
    tc.fill(&gpu, f32::NAN).unwrap();
    kernels::matmul(&gpu, &ta, &tb, &mut tc, Transpose::NT).unwrap();
    let expected = headswap::reference::matmul(&to_f64(&a), &to_f64(&b), m, n, k, Transpose::NT);
    assert_close("matmul on host buffers", &tc.download(&gpu).unwrap(), &expected, Tolerance::F32);
    // the host's data before the view is untouched
    let head = Tensor::from_buffer(host_b, 0, &[64]).unwrap().download(&gpu).unwrap();
    assert!(head.iter().all(|&v| v == 123.0));
    // a view that does not fit the host buffer is an error, not a panic
    assert!(Tensor::from_buffer(host_c, 0, &[m, n + 1]).is_err());
}

#[test]
fn training_runs_on_a_host_device() {
    let (adapter, device, queue) = host_device();
    let gpu = Gpu::from_device(device, queue, Some(&adapter)).unwrap();
    let data = headswap::data::synthetic::shapes_task_a(256, 16, 1);
    let mut net = headswap::nn::Network::new(&gpu, &[256, 32], headswap::nn::Head::classes(8), 3).unwrap();
    let cfg = headswap::train::TrainConfig { batch_size: 32, ..Default::default() };
    let report = headswap::train::Trainer::new(&gpu, cfg).fit(&mut net, &data, 3).unwrap();
    assert!(report.last().unwrap().train.loss < report.epochs[0].train.loss);
}
