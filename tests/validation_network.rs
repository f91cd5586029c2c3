//! Networks and kernels refuse malformed or oversized requests with a typed error, before any
//! host memory is spent and without changing the network they were asked to change.
mod common;
use common::*;
use headswap::Error;
use headswap::kernels::{self, Transpose};
use headswap::nn::{Activation, Head, Network};

fn values_bits(net: &Network) -> Vec<u32> {
    net.values().unwrap().into_iter().flat_map(|(w, b)| w.into_iter().chain(b)).map(f32::to_bits).collect()
}

#[test]
fn zero_width_head_layers_are_refused_by_new() {
    let gpu = gpu();
    for head in [
        Head::labels(3).hidden(0, Activation::Relu),
        Head::classes(0),
        Head::labels(0),
        Head::classes(4).hidden(8, Activation::Relu).hidden(0, Activation::Relu),
    ] {
        let err = Network::new(&gpu, &[16, 8], head.clone(), 1).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{head:?}: {err:?}");
    }
}

#[test]
fn zero_width_head_layers_are_refused_by_swap_head_and_leave_the_network_unchanged() {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 8], Head::classes(4).hidden(6, Activation::Relu), 1).unwrap();
    let (layers, kind, bits) = (net.head_layers().to_vec(), net.head_kind(), values_bits(&net));
    for head in
        [Head::classes(0), Head::labels(0), Head::labels(3).hidden(0, Activation::Relu), Head::classes(2).hidden(0, Activation::Tanh)]
    {
        let err = net.swap_head(head.clone(), 7).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{head:?}: {err:?}");
        assert!(err.to_string().contains('0'), "{err}");
        assert_eq!(net.head_layers(), &layers[..], "{head:?}: the head changed on error");
        assert_eq!(net.head_kind(), kind);
        assert_eq!(values_bits(&net), bits, "{head:?}: the parameters changed on error");
    }
    // a valid swap still works afterwards
    net.swap_head(Head::labels(3), 7).unwrap();
    assert_eq!(net.output_dim(), 3);
}

#[test]
fn a_trunk_too_large_for_the_adapter_is_refused_before_host_allocation() {
    let gpu = gpu();
    // 2^20 × 2^20 weights are 4 TiB: allocating their initial values on the host would abort.
    let err = Network::new(&gpu, &[256, 1 << 20, 1 << 20], Head::classes(8), 1).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let err = Network::new(&gpu, &[1 << 20, 1 << 20], Head::classes(8), 1).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[test]
fn a_head_too_large_for_the_adapter_is_refused_and_the_network_kept() {
    let gpu = gpu();
    let mut net = Network::new(&gpu, &[16, 1 << 16], Head::classes(4), 1).unwrap();
    let before = net.head_layers().to_vec();
    // 2^16 × 2^20 weights: 256 GiB
    let err = net.swap_head(Head::classes(1 << 20), 2).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(net.head_layers(), &before[..]);
    let err = net.swap_head(Head::classes(4).hidden(1 << 20, Activation::Relu), 2).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[test]
fn matmul_refuses_an_output_sharing_a_buffer_with_an_operand() {
    let gpu = gpu();
    let a = upload(&gpu, &[4, 4], &rand_vec(1, 16));
    let b = upload(&gpu, &[4, 4], &rand_vec(2, 16));
    for (what, operand_is_a) in [("A", true), ("B", false)] {
        let mut c = if operand_is_a { a.clone() } else { b.clone() };
        let err = kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN).unwrap_err();
        let m = err.to_string();
        assert!(matches!(err, Error::Shape { .. }), "{err:?}");
        assert!(!m.contains('\n') && m.contains(&format!("share a buffer with {what}")), "{m}");
    }
    // distinct views of one buffer conflict as well: wgpu tracks usage per buffer
    let big = upload(&gpu, &[64, 4], &rand_vec(3, 256));
    let a2 = big.view(0, &[4, 4]).unwrap();
    let mut c2 = big.view(128, &[4, 4]).unwrap();
    let err = kernels::matmul(&gpu, &a2, &b, &mut c2, Transpose::NN).unwrap_err();
    assert!(err.to_string().contains("share a buffer"), "{err}");
    // and the ordinary case still runs
    let mut c = poisoned(&gpu, &[4, 4]);
    kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN).unwrap();
}
