//! torchvision architectures with random weights and non-default BatchNorm statistics, and
//! their float64 reference forward: shared by tests/models.rs and tests/nn_f16.rs.

use super::{gpu, to_f64};
use headswap::Rng;
use headswap::nn::models::Arch;
use headswap::nn::{Head, Init, LayerSpec, LoadOptions, Network};
use headswap::reference::network::{RefLayer, forward_graph};

/// `arch` at `h`×`w` with a 1000-class head, Kaiming weights from `seed`, and BatchNorm γ, β and
/// running statistics drawn away from their defaults (so folding and eval mode are exercised).
pub fn torchvision_model(arch: Arch, h: usize, w: usize, seed: u64) -> Network {
    let gpu = gpu();
    let trunk = arch.trunk(3, h, w).unwrap();
    let mut net = Network::from_trunk(&gpu, 3 * h * w, trunk, Init::KaimingUniform, arch.head(Head::classes(1000)), seed).unwrap();
    let mut sd = net.to_checkpoint().unwrap();
    let mut rng = Rng::new(seed + 1);
    for t in sd.tensors.iter_mut() {
        let (lo, hi) = if t.name.ends_with("running_var") {
            (0.5, 1.5)
        } else if t.name.ends_with("running_mean") {
            (-0.2, 0.2)
        } else if net.buffer_names().iter().any(|b| b.strip_suffix("running_mean") == t.name.strip_suffix("weight")) {
            (0.6, 1.2) // γ
        } else if net.buffer_names().iter().any(|b| b.strip_suffix("running_mean") == t.name.strip_suffix("bias")) {
            (-0.1, 0.1) // β
        } else {
            continue;
        };
        t.data = (0..t.data.len()).map(|_| rng.uniform(lo, hi) as f32).collect();
    }
    let report = net.load_state_dict(&sd, LoadOptions { strict: true, ..Default::default() }, "random").unwrap();
    assert!(report.is_exact());
    net
}

/// The float64 reference forward of `net`'s values (evaluation mode) on `n` examples `x`.
pub fn reference_logits(net: &Network, x: &[f32], n: usize) -> Vec<f64> {
    let layers: Vec<RefLayer> = net
        .layers()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (w, b) = net.layer_values(i).unwrap();
            let mut r = RefLayer::new(*spec, to_f64(&w), to_f64(&b));
            if let LayerSpec::BatchNorm(_) = spec {
                let s = net.running_stats(i).unwrap().unwrap();
                r.running = to_f64(&s.running_mean).into_iter().chain(to_f64(&s.running_var)).collect();
            }
            r
        })
        .collect();
    let (_, a) = forward_graph(&layers, net.sources(), &to_f64(x), n);
    a.last().unwrap().clone()
}
