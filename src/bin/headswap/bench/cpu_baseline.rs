//! The CPU baseline trainer of T1–T3: an MLP with ReLU hidden layers, softmax CE or per-label BCE
//! (summed over labels, averaged over examples: the engine's default), SGD with momentum or Adam
//! (PyTorch's update rules), matrix products through the `gemm` crate on every core, elementwise
//! work on one. Not the specification (that is the float64 `headswap::reference`): a fast f32
//! trainer for the same work, so a GPU figure has a CPU figure from the same machine beside it.
//!
//! gemm parallelises on rayon's global pool, whose worker threads outlive the call (asleep when
//! idle: BENCHMARKS.md measured none of their CPU time during later GPU runs). The bench still
//! times every GPU side of a workload before its CPU baselines, so that nothing a baseline
//! leaves behind can be in the way (see `bench`).

use super::median;
use super::table::CpuTrainResult;
use headswap::data::{Dataset, Targets};
use headswap::rng::Rng;
use std::time::Instant;

/// Rows of a batch (the GPU workloads' batch size).
pub const BATCH: usize = 128;

/// `dst[m, n] (row-major) = [dst +] A·B` where `A[i, p] = a[i·a_rs + p·a_cs]` and
/// `B[p, j] = b[p·b_rs + j·b_cs]`, through `gemm::gemm` on every core.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm: dst too small");
    if k > 0 {
        assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs, "gemm: lhs too small");
        assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs, "gemm: rhs too small");
    }
    // SAFETY: the asserts above keep every strided access of `gemm` inside the slices; `dst` does
    // not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32, // dst coefficient (read only with `accumulate`)
            1.0f32, // product coefficient
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Opt {
    Sgd { lr: f32, momentum: f32 },
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
}

impl Opt {
    pub fn adam(lr: f32) -> Opt {
        Opt::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

struct Layer {
    inputs: usize,
    outputs: usize,
    relu: bool,
    /// `[outputs, inputs]`, then the bias: one flat parameter vector.
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Layer {
    fn w(&self) -> &[f32] {
        &self.p[..self.outputs * self.inputs]
    }
}

/// Forward through `layers[from..]` for `rows` rows of `x`; `acts[i]` receives layer i's
/// output `[rows, outputs]` (after ReLU for hidden layers, logits for the last).
fn forward(layers: &[Layer], from: usize, x: &[f32], rows: usize, acts: &mut [Vec<f32>]) {
    for i in from..layers.len() {
        let l = &layers[i];
        let (before, rest) = acts.split_at_mut(i);
        let input: &[f32] = if i == from { x } else { &before[i - 1] };
        let out = &mut rest[0];
        out.resize(rows * l.outputs, 0.0);
        // out = input · Wᵀ: op(B)[p, j] = W[j, p].
        gemm_f32(out, rows, l.outputs, l.inputs, input, l.inputs, 1, l.w(), 1, l.inputs, false);
        let bias = &l.p[l.outputs * l.inputs..];
        for row in out.chunks_exact_mut(l.outputs) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
                if l.relu && *v < 0.0 {
                    *v = 0.0;
                }
            }
        }
    }
}

/// Trains a fresh MLP of layer widths `sizes` (the first `trunk_len` layers are the trunk) on
/// `data` for `epochs` epochs, batch [`BATCH`], a new seeded shuffle every epoch; layers below
/// `lowest` stay frozen, and with `cache` and a frozen trunk the trunk's features are computed
/// once and the head trains on them.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    data: &Dataset,
    sizes: &[usize],
    trunk_len: usize,
    lowest: usize,
    cache: bool,
    opt: Opt,
    epochs: usize,
    seed: u64,
) -> CpuTrainResult {
    let started = Instant::now();
    let mut init = Rng::new(seed ^ 0xc0);
    let nl = sizes.len() - 1;
    let mut layers: Vec<Layer> = (0..nl)
        .map(|i| {
            let (fan_in, out) = (sizes[i], sizes[i + 1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let len = fan_in * out + out;
            Layer {
                inputs: fan_in,
                outputs: out,
                relu: i + 1 < nl,
                p: (0..len).map(|_| init.uniform(-bound, bound) as f32).collect(),
                g: vec![0.0; len],
                m: vec![0.0; len],
                v: vec![0.0; len],
            }
        })
        .collect();
    let n = data.n;
    let b = BATCH.min(n);
    let out_dim = sizes[nl];
    let mut acts: Vec<Vec<f32>> = vec![Vec::new(); nl];
    // Cached trunk features: computed once, the head trains on them.
    let cached = cache && lowest >= trunk_len && trunk_len > 0;
    let first = if cached { trunk_len } else { 0 };
    let source: Vec<f32> = if cached {
        let mut f = vec![0.0; n * sizes[trunk_len]];
        let mut tmp: Vec<Vec<f32>> = vec![Vec::new(); nl];
        let w = sizes[trunk_len];
        for start in (0..n).step_by(b) {
            let rows = b.min(n - start);
            forward(&layers[..trunk_len], 0, &data.x[start * data.d..(start + rows) * data.d], rows, &mut tmp[..trunk_len]);
            f[start * w..(start + rows) * w].copy_from_slice(&tmp[trunk_len - 1]);
        }
        f
    } else {
        data.x.clone()
    };
    let d_in = sizes[first];
    let mut shuffle = Rng::new(seed);
    let mut xb = vec![0.0f32; b * d_in];
    let mut da: Vec<Vec<f32>> = vec![Vec::new(); nl];
    let mut epoch_rates = Vec::new();
    let mut last_loss = f64::NAN;
    let mut step: i32 = 0;
    for _ in 0..epochs {
        let t0 = Instant::now();
        let order = shuffle.permutation(n);
        let mut loss_sum = 0.0f64;
        let mut batches = 0;
        for chunk in order.chunks(b) {
            let rows = chunk.len();
            xb.resize(rows * d_in, 0.0);
            for (r, &i) in chunk.iter().enumerate() {
                let i = i as usize;
                xb[r * d_in..(r + 1) * d_in].copy_from_slice(&source[i * d_in..(i + 1) * d_in]);
            }
            forward(&layers, first, &xb, rows, &mut acts);
            // Loss and dlogits into da[last].
            let logits = &acts[nl - 1];
            let dl = &mut da[nl - 1];
            dl.resize(rows * out_dim, 0.0);
            let scale = 1.0 / rows as f32;
            let mut loss = 0.0f64;
            match &data.targets {
                Targets::Classes { y, .. } => {
                    for (r, &i) in chunk.iter().enumerate() {
                        let z = &logits[r * out_dim..(r + 1) * out_dim];
                        let g = &mut dl[r * out_dim..(r + 1) * out_dim];
                        let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                        let target = y[i as usize] as usize;
                        loss += (sum.ln() + max - z[target]) as f64;
                        for (j, (gv, zv)) in g.iter_mut().zip(z).enumerate() {
                            *gv = ((zv - max).exp() / sum - if j == target { 1.0 } else { 0.0 }) * scale;
                        }
                    }
                }
                Targets::Labels { y, k } => {
                    for (r, &i) in chunk.iter().enumerate() {
                        for j in 0..*k {
                            let z = logits[r * out_dim + j];
                            let t = y[i as usize * k + j];
                            loss += (z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()) as f64;
                            dl[r * out_dim + j] = (1.0 / (1.0 + (-z).exp()) - t) * scale;
                        }
                    }
                }
                Targets::Regression { .. } | Targets::Heads(_) => unreachable!("the CPU baseline trains classes or labels"),
            }
            loss_sum += loss / rows as f64;
            batches += 1;
            // Backward down to `lowest`.
            for i in (lowest..nl).rev() {
                let (below, rest) = da.split_at_mut(i);
                let dz = &mut rest[0];
                let l = &layers[i];
                if l.relu {
                    for (g, a) in dz.iter_mut().zip(&acts[i]) {
                        if *a <= 0.0 {
                            *g = 0.0;
                        }
                    }
                }
                let input: &[f32] = if i == first { &xb } else { &acts[i - 1] };
                let (o, n_in) = (l.outputs, l.inputs);
                let layer = &mut layers[i];
                let (gw, gb) = layer.g.split_at_mut(o * n_in);
                // dW[o, in] = dzᵀ · input: op(A)[j, r] = dz[r, j].
                gemm_f32(gw, o, n_in, rows, dz, 1, o, input, n_in, 1, false);
                gb.fill(0.0);
                for row in dz.chunks_exact(o) {
                    for (s, v) in gb.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                if i > lowest {
                    let da_below = &mut below[i - 1];
                    da_below.resize(rows * n_in, 0.0);
                    // da_below[rows, in] = dz · W.
                    gemm_f32(da_below, rows, n_in, o, dz, o, 1, layer.w(), n_in, 1, false);
                }
            }
            step += 1;
            for l in &mut layers[lowest..] {
                update(l, opt, step);
            }
        }
        last_loss = loss_sum / batches.max(1) as f64;
        epoch_rates.push(n as f64 / t0.elapsed().as_secs_f64().max(1e-9));
    }
    let timed = if epoch_rates.len() > 1 { &epoch_rates[1..] } else { &epoch_rates[..] };
    CpuTrainResult {
        samples_per_sec: median(timed),
        epoch_samples_per_sec: epoch_rates.clone(),
        end_to_end_samples_per_sec: (n * epochs) as f64 / started.elapsed().as_secs_f64().max(1e-9),
        final_loss: last_loss,
    }
}

fn update(l: &mut Layer, opt: Opt, step: i32) {
    match opt {
        Opt::Sgd { lr, momentum } => {
            for ((p, g), m) in l.p.iter_mut().zip(&l.g).zip(l.m.iter_mut()) {
                *m = if step == 1 { *g } else { momentum * *m + g };
                *p -= lr * *m;
            }
        }
        Opt::Adam { lr, beta1, beta2, eps } => {
            let bc1 = 1.0 - beta1.powi(step);
            let bc2_sqrt = (1.0 - beta2.powi(step)).sqrt();
            let step_size = lr / bc1;
            for (((p, g), m), v) in l.p.iter_mut().zip(&l.g).zip(l.m.iter_mut()).zip(l.v.iter_mut()) {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_baseline_learns() {
        // Two classes separated by the sign of the first feature.
        let mut rng = Rng::new(5);
        let (n, d) = (256, 4);
        let x: Vec<f32> = (0..n * d).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let y = (0..n).map(|i| (x[i * d] > 0.0) as u32).collect();
        let data = Dataset {
            x,
            n,
            d,
            input_shape: vec![d],
            targets: Targets::Classes { y, num_classes: 2 },
            label_names: vec!["neg".into(), "pos".into()],
        };
        let first = fit(&data, &[4, 16, 2], 1, 0, false, Opt::Sgd { lr: 0.1, momentum: 0.9 }, 1, 0);
        let later = fit(&data, &[4, 16, 2], 1, 0, false, Opt::Sgd { lr: 0.1, momentum: 0.9 }, 30, 0);
        assert!(later.final_loss < 0.5 * first.final_loss, "{} → {}", first.final_loss, later.final_loss);
        let adam = fit(&data, &[4, 16, 2], 1, 0, false, Opt::adam(0.01), 30, 0);
        assert!(adam.final_loss < 0.5 * first.final_loss, "adam {} → {}", first.final_loss, adam.final_loss);
        assert_eq!(later.epoch_samples_per_sec.len(), 30);
    }
}
