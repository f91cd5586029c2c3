//! The device layer: adapter facts, limits turned into errors before wgpu sees them, wgpu
//! validation errors returned as errors naming the kernel, counters.
mod common;
use common::*;
use headswap::kernels::{self, Transpose};
use headswap::{Error, Tensor};

#[test]
fn summary_names_the_adapter_and_limits() {
    let gpu = gpu();
    let s = gpu.summary();
    assert!(!s.name.is_empty());
    assert!(s.max_storage_buffer_binding_size > 0 && s.max_buffer_size > 0);
    let text = s.to_string();
    for key in ["adapter", "backend", "max storage buffer binding size", "shader-f16", "subgroups", "timestamp queries"] {
        assert!(text.contains(key), "`headswap info` misses {key}: {text}");
    }
}

#[test]
fn a_tensor_beyond_the_binding_limit_is_a_clear_error() {
    let gpu = gpu();
    let limit = gpu.limits().max_storage_buffer_binding_size;
    let elems = (limit / 4 + 1) as usize;
    match Tensor::zeros(&gpu, &[elems]) {
        Err(Error::TooLarge { bytes, limit: l, limit_name, .. }) => {
            assert!(bytes > l);
            assert!(limit_name.contains("max_storage_buffer_binding_size") || limit_name.contains("max_buffer_size"));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // and a network too large for the adapter
    let err = headswap::nn::Network::new(&gpu, &[1 << 16, 1 << 10], headswap::nn::Head::classes(2), 0).unwrap_err();
    assert!(err.to_string().contains("bytes"), "{err}");
}

#[test]
fn misaligned_views_and_bad_shapes_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let big = Tensor::zeros(&gpu, &[1024]).unwrap();
    let a = big.view(1, &[4, 4]).unwrap(); // 4 bytes in: not a valid binding offset
    let b = upload(&gpu, &[4, 4], &[1.0; 16]);
    let mut c = Tensor::zeros(&gpu, &[4, 4]).unwrap();
    let err = kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN).unwrap_err();
    assert!(err.to_string().contains("matmul"), "{err}");
    assert!(big.view(1000, &[100]).is_err());
    assert!(upload(&gpu, &[2, 2], &[1.0; 4]).reshape(&[3]).is_err());
    assert!(Tensor::from_slice(&gpu, &[2, 2], &[1.0; 3]).is_err());
}

#[test]
fn counters_see_dispatches_and_bytes() {
    let gpu = gpu();
    let before = gpu.counters();
    let a = upload(&gpu, &[8, 8], &rand_vec(1, 64));
    let mut c = Tensor::zeros(&gpu, &[8, 8]).unwrap();
    kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NN).unwrap();
    let after = gpu.counters();
    assert!(after.dispatches > before.dispatches && after.submissions > before.submissions);
    assert!(after.bytes_peak >= 2 * 256);
}
