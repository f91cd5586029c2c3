//! BatchNorm kernels against the float64 reference (`reference::norm`), which is itself checked
//! against central differences: inference and training forward (statistics, running update,
//! fused activation), both backwards, at odd sizes with NaN-poisoned outputs; bit-identical
//! reruns; a large channel (256·112·112 values) within the loop budget; typed errors for bad
//! input; a BN folded into the convolution before it equals conv → BN; and one step of each mode,
//! BatchNorm2d and 1d, equals PyTorch's own numbers (`tests/fixtures/torch_ops.safetensors`).
mod common;
use common::*;
use headswap::kernels::Activation;
use headswap::kernels::conv::{self, Conv2dShape, ConvScratch};
use headswap::kernels::norm::{self, BatchNorm, BatchNormGrads, BatchNormShape};
use headswap::nn::batchnorm::{BatchNormValues, fold_into_conv};
use headswap::reference::{self, conv as rc, norm as rn};
use headswap::{Gpu, Tensor};

/// (N, C, H, W): BatchNorm1d (H = W = 1) and 2d, each of 1, 7, 33, 127 somewhere; planes shorter
/// than 32 (flat grid), of 32 to 255 (per-plane grid) and of 256 or more values (reductions walk
/// example by example), none a multiple of a workgroup.
const SHAPES: [(usize, usize, usize, usize); 8] =
    [(1, 1, 1, 1), (1, 7, 1, 1), (7, 33, 1, 1), (33, 1, 1, 1), (2, 3, 7, 5), (3, 2, 1, 127), (1, 7, 33, 3), (3, 2, 17, 19)];

/// One layer's values and their GPU copies.
struct Case {
    s: BatchNormShape,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f32,
    gx: Tensor,
    g: [Tensor; 4],
}

impl Case {
    fn new(gpu: &Gpu, (n, c, h, w): (usize, usize, usize, usize), seed: u64) -> Case {
        let s = BatchNormShape { n, c, h, w };
        // an offset, so the mean is not ~0 and the variance is not ~1
        let x = rand_range(seed, s.len(), -1.0, 3.0);
        let gamma = rand_range(seed + 1, c, 0.5, 1.5);
        let beta = rand_vec(seed + 2, c);
        let mean = rand_vec(seed + 3, c);
        let var = rand_range(seed + 4, c, 0.2, 2.0);
        let up = |v: &[f32]| upload(gpu, &[v.len()], v);
        let g = [up(&gamma), up(&beta), up(&mean), up(&var)];
        Case { s, gx: upload(gpu, &[n, c * h * w], &x), x, gamma, beta, mean, var, eps: 1e-3, g }
    }
    fn bn(&self) -> BatchNorm<'_> {
        BatchNorm { shape: self.s, eps: self.eps, gamma: &self.g[0], beta: &self.g[1], running_mean: &self.g[2], running_var: &self.g[3] }
    }
    fn dims(&self) -> (usize, usize, usize) {
        (self.s.n, self.s.c, self.s.h * self.s.w)
    }
    fn f64s(&self) -> [Vec<f64>; 5] {
        [to_f64(&self.x), to_f64(&self.gamma), to_f64(&self.beta), to_f64(&self.mean), to_f64(&self.var)]
    }
}

fn download(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    t.download(gpu).unwrap()
}

#[test]
fn eval_forward_with_each_activation_at_odd_sizes() {
    let gpu = gpu();
    for (i, &shape) in SHAPES.iter().enumerate() {
        let c = Case::new(&gpu, shape, 10 * i as u64);
        let (n, ch, hw) = c.dims();
        let [x, gamma, beta, mean, var] = c.f64s();
        let z = rn::eval_forward(&x, n, ch, hw, &gamma, &beta, &mean, &var, c.eps as f64);
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6, Activation::Silu] {
            let mut y = poisoned(&gpu, &[n, ch * hw]);
            norm::eval_forward(&gpu, &c.bn(), act, &c.gx, &mut y).unwrap();
            let expected: Vec<f64> = z.iter().map(|&v| reference::activate(act, v)).collect();
            assert_close(&format!("eval forward {shape:?} {act:?}"), &download(&gpu, &y), &expected, Tolerance::F32);
        }
        // the affine form is the same function
        let (s, t) = rn::scale_shift(&gamma, &beta, &mean, &var, c.eps as f64);
        let affine: Vec<f64> = x.iter().enumerate().map(|(i, &v)| v * s[(i / hw) % ch] + t[(i / hw) % ch]).collect();
        assert_close(&format!("scale_shift {shape:?}"), &z.iter().map(|&v| v as f32).collect::<Vec<_>>(), &affine, Tolerance::STRICT);
    }
}

/// More than 65,535 (example, channel) planes: the per-plane grid folds them into y and z.
#[test]
fn eval_forward_folds_many_planes() {
    let gpu = gpu();
    let c = Case::new(&gpu, (1, 66_000, 4, 8), 50);
    let (n, ch, hw) = c.dims();
    let [x, gamma, beta, mean, var] = c.f64s();
    let expected = rn::eval_forward(&x, n, ch, hw, &gamma, &beta, &mean, &var, c.eps as f64);
    let mut y = poisoned(&gpu, &[n, ch * hw]);
    norm::eval_forward(&gpu, &c.bn(), Activation::Identity, &c.gx, &mut y).unwrap();
    assert_close("eval forward with 66,000 planes", &download(&gpu, &y), &expected, Tolerance::F32);
}

#[test]
fn train_forward_statistics_and_running_update_at_odd_sizes() {
    let gpu = gpu();
    for (i, &shape) in SHAPES.iter().enumerate().filter(|(_, s)| s.0 * s.2 * s.3 >= 2) {
        let c = Case::new(&gpu, shape, 100 + 10 * i as u64);
        let (n, ch, hw) = c.dims();
        let [x, gamma, beta, mut run_mean, mut run_var] = c.f64s();
        let r = rn::train_forward(&x, n, ch, hw, &gamma, &beta, c.eps as f64);
        for act in [Activation::Identity, Activation::Hardswish] {
            let (mut saved, mut y) = (poisoned(&gpu, &[2, ch]), poisoned(&gpu, &[n, ch * hw]));
            // no momentum: the running statistics stay as they are, bit for bit
            norm::train_forward(&gpu, &c.bn(), None, act, &c.gx, &mut saved, &mut y).unwrap();
            assert_eq!(download(&gpu, &c.g[2]), c.mean, "{shape:?}: running mean touched without momentum");
            assert_eq!(download(&gpu, &c.g[3]), c.var, "{shape:?}: running var touched without momentum");
            let stats: Vec<f64> = r.mean.iter().chain(&r.invstd).copied().collect();
            assert_close(&format!("saved mean, invstd {shape:?}"), &download(&gpu, &saved), &stats, Tolerance::F32);
            let expected: Vec<f64> = r.y.iter().map(|&v| reference::activate(act, v)).collect();
            assert_close(&format!("train forward {shape:?} {act:?}"), &download(&gpu, &y), &expected, Tolerance::F32);
        }
        // two steps with PyTorch's momentum: the running statistics follow the reference
        let momentum = 0.1;
        for _ in 0..2 {
            let (mut saved, mut y) = (poisoned(&gpu, &[2, ch]), poisoned(&gpu, &[n, ch * hw]));
            norm::train_forward(&gpu, &c.bn(), Some(momentum), Activation::Identity, &c.gx, &mut saved, &mut y).unwrap();
            rn::update_running(&mut run_mean, &r.mean, momentum as f64);
            rn::update_running(&mut run_var, &r.var_unbiased, momentum as f64);
        }
        assert_close(&format!("running mean {shape:?}"), &download(&gpu, &c.g[2]), &run_mean, Tolerance::F32);
        assert_close(&format!("running var {shape:?}"), &download(&gpu, &c.g[3]), &run_var, Tolerance::F32);
    }
}

/// `Σ r·y` of the reference forward, for central differences.
fn weighted(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Central differences (ε = 1e-6) of `loss` over every element of `v`.
fn central(v: &mut [f64], loss: &mut dyn FnMut(&[f64]) -> f64) -> Vec<f64> {
    let eps = 1e-6;
    (0..v.len())
        .map(|j| {
            let orig = v[j];
            v[j] = orig + eps;
            let up = loss(v);
            v[j] = orig - eps;
            let down = loss(v);
            v[j] = orig;
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// The reference backward equals central differences of the reference forward, both modes.
#[test]
fn reference_backward_matches_finite_differences() {
    for (training, shape) in [(true, (3, 2, 2, 3)), (true, (5, 3, 1, 1)), (false, (2, 3, 1, 5))] {
        let (n, c, hw) = (shape.0, shape.1, shape.2 * shape.3);
        let len = n * c * hw;
        let mut x = to_f64(&rand_range(7, len, -1.0, 3.0));
        let mut gamma = to_f64(&rand_range(8, c, 0.5, 1.5));
        let mut beta = to_f64(&rand_vec(9, c));
        let (mean, var) = (to_f64(&rand_vec(10, c)), to_f64(&rand_range(11, c, 0.2, 2.0)));
        let r = to_f64(&rand_vec(12, len));
        let eps = 1e-3;
        let fwd = |x: &[f64], g: &[f64], b: &[f64]| {
            if training { rn::train_forward(x, n, c, hw, g, b, eps).y } else { rn::eval_forward(x, n, c, hw, g, b, &mean, &var, eps) }
        };
        let (m, inv) = if training {
            let t = rn::train_forward(&x, n, c, hw, &gamma, &beta, eps);
            (t.mean, t.invstd)
        } else {
            (mean.clone(), var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect())
        };
        let (dx, dgamma, dbeta) = rn::backward(&r, &x, n, c, hw, &gamma, &m, &inv, training);
        let (g0, b0, x0) = (gamma.clone(), beta.clone(), x.clone());
        let fd_x = central(&mut x, &mut |x| weighted(&fwd(x, &g0, &b0), &r));
        let fd_g = central(&mut gamma, &mut |g| weighted(&fwd(&x0, g, &b0), &r));
        let fd_b = central(&mut beta, &mut |b| weighted(&fwd(&x0, &g0, b), &r));
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let tol = Tolerance { rel: 1e-5, abs: 1e-6 };
        let what = if training { "training" } else { "inference" };
        assert_close(&format!("{what} dx vs finite differences"), &f32s(&dx), &fd_x, tol);
        assert_close(&format!("{what} dgamma vs finite differences"), &f32s(&dgamma), &fd_g, tol);
        assert_close(&format!("{what} dbeta vs finite differences"), &f32s(&dbeta), &fd_b, tol);
    }
}

#[test]
fn train_backward_at_odd_sizes() {
    let gpu = gpu();
    for (i, &shape) in SHAPES.iter().enumerate().filter(|(_, s)| s.0 * s.2 * s.3 >= 2) {
        let c = Case::new(&gpu, shape, 200 + 10 * i as u64);
        let (n, ch, hw) = c.dims();
        let [x, gamma, beta, ..] = c.f64s();
        let r = rn::train_forward(&x, n, ch, hw, &gamma, &beta, c.eps as f64);
        let dy = rand_vec(300 + i as u64, n * ch * hw);
        let (dx, dgamma, dbeta) = rn::backward(&to_f64(&dy), &x, n, ch, hw, &gamma, &r.mean, &r.invstd, true);

        let (mut saved, mut y) = (poisoned(&gpu, &[2, ch]), poisoned(&gpu, &[n, ch * hw]));
        norm::train_forward(&gpu, &c.bn(), Some(0.1), Activation::Identity, &c.gx, &mut saved, &mut y).unwrap();
        let gdy = upload(&gpu, &[n, ch * hw], &dy);
        let (gdx, gdg, gdb) = (poisoned(&gpu, &[n, ch * hw]), poisoned(&gpu, &[ch]), poisoned(&gpu, &[ch]));
        let grads = BatchNormGrads { dx: Some(&gdx), dgamma: Some(&gdg), dbeta: Some(&gdb) };
        norm::train_backward(&gpu, &c.bn(), &gdy, &c.gx, &saved, &grads).unwrap();
        assert_close(&format!("train dgamma {shape:?}"), &download(&gpu, &gdg), &dgamma, Tolerance::F32);
        assert_close(&format!("train dbeta {shape:?}"), &download(&gpu, &gdb), &dbeta, Tolerance::F32);
        // dy − mean(dy) − x̂·mean(dy·x̂) cancels: an absolute floor at the f32 level of the terms
        assert_close(&format!("train dx {shape:?}"), &download(&gpu, &gdx), &dx, Tolerance { rel: 1e-4, abs: 1e-5 });

        // without dx (nothing below trains): the parameter gradients alone
        let (gdg2, gdb2) = (poisoned(&gpu, &[ch]), poisoned(&gpu, &[ch]));
        let grads = BatchNormGrads { dx: None, dgamma: Some(&gdg2), dbeta: Some(&gdb2) };
        assert_eq!(norm::train_backward_dispatches(&gpu, &c.bn(), &gdy, &c.gx, &saved, &grads).unwrap().len(), 1);
        norm::train_backward(&gpu, &c.bn(), &gdy, &c.gx, &saved, &grads).unwrap();
        assert_eq!(download(&gpu, &gdg2), download(&gpu, &gdg), "{shape:?}: dgamma differs between runs");
    }
}

#[test]
fn eval_backward_at_odd_sizes() {
    let gpu = gpu();
    for (i, &shape) in SHAPES.iter().enumerate() {
        let c = Case::new(&gpu, shape, 400 + 10 * i as u64);
        let (n, ch, hw) = c.dims();
        let [x, gamma, _, mean, var] = c.f64s();
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + c.eps as f64).sqrt()).collect();
        let dy = rand_vec(500 + i as u64, n * ch * hw);
        let (dx, dgamma, dbeta) = rn::backward(&to_f64(&dy), &x, n, ch, hw, &gamma, &mean, &invstd, false);
        let gdy = upload(&gpu, &[n, ch * hw], &dy);
        let (gdx, gdg, gdb) = (poisoned(&gpu, &[n, ch * hw]), poisoned(&gpu, &[ch]), poisoned(&gpu, &[ch]));
        let grads = BatchNormGrads { dx: Some(&gdx), dgamma: Some(&gdg), dbeta: Some(&gdb) };
        norm::eval_backward(&gpu, &c.bn(), &gdy, &c.gx, &grads).unwrap();
        assert_close(&format!("eval dx {shape:?}"), &download(&gpu, &gdx), &dx, Tolerance::F32);
        assert_close(&format!("eval dgamma {shape:?}"), &download(&gpu, &gdg), &dgamma, Tolerance::F32);
        assert_close(&format!("eval dbeta {shape:?}"), &download(&gpu, &gdb), &dbeta, Tolerance::F32);
        // a frozen BN in inference mode only passes the gradient down: one launch
        let grads = BatchNormGrads { dx: Some(&gdx), dgamma: None, dbeta: None };
        assert_eq!(norm::eval_backward_dispatches(&gpu, &c.bn(), &gdy, &c.gx, &grads).unwrap().len(), 1);
    }
}

/// The same step twice gives the same bits (fixed-order reductions, no atomics).
#[test]
fn reruns_are_bit_identical() {
    let gpu = gpu();
    let c = Case::new(&gpu, (9, 5, 13, 11), 600);
    let (n, ch, hw) = c.dims();
    let dy = upload(&gpu, &[n, ch * hw], &rand_vec(601, n * ch * hw));
    let run = || {
        let (mut saved, mut y) = (poisoned(&gpu, &[2, ch]), poisoned(&gpu, &[n, ch * hw]));
        norm::train_forward(&gpu, &c.bn(), None, Activation::Identity, &c.gx, &mut saved, &mut y).unwrap();
        let (gdx, gdg, gdb) = (poisoned(&gpu, &[n, ch * hw]), poisoned(&gpu, &[ch]), poisoned(&gpu, &[ch]));
        let grads = BatchNormGrads { dx: Some(&gdx), dgamma: Some(&gdg), dbeta: Some(&gdb) };
        norm::train_backward(&gpu, &c.bn(), &dy, &c.gx, &saved, &grads).unwrap();
        [&saved, &y, &gdx, &gdg, &gdb].map(|t| download(&gpu, t).iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
    };
    assert_eq!(run(), run());
}

/// ResNet's first BN at batch 256 and 112×112: 3.2 million values per channel, within the loop
/// budget, and still accurate.
#[test]
fn a_large_channel_stays_within_the_loop_budget() {
    let gpu = gpu();
    let c = Case::new(&gpu, (256, 2, 112, 112), 700);
    let (n, ch, hw) = c.dims();
    let [x, gamma, beta, ..] = c.f64s();
    let r = rn::train_forward(&x, n, ch, hw, &gamma, &beta, c.eps as f64);
    let (mut saved, mut y) = (poisoned(&gpu, &[2, ch]), poisoned(&gpu, &[n, ch * hw]));
    norm::train_forward(&gpu, &c.bn(), Some(0.1), Activation::Identity, &c.gx, &mut saved, &mut y).unwrap();
    let stats: Vec<f64> = r.mean.iter().chain(&r.invstd).copied().collect();
    assert_close("saved mean, invstd at 256×112×112", &download(&gpu, &saved), &stats, Tolerance::F32);
    let dy_host = rand_vec(701, n * ch * hw);
    let (_, dgamma, dbeta) = rn::backward(&to_f64(&dy_host), &x, n, ch, hw, &gamma, &r.mean, &r.invstd, true);
    let dy = upload(&gpu, &[n, ch * hw], &dy_host);
    let (gdg, gdb) = (poisoned(&gpu, &[ch]), poisoned(&gpu, &[ch]));
    norm::train_backward(&gpu, &c.bn(), &dy, &c.gx, &saved, &BatchNormGrads { dx: None, dgamma: Some(&gdg), dbeta: Some(&gdb) }).unwrap();
    // sums of 3.2 million terms of both signs: absolute error relative to the terms' scale
    assert_close("dgamma at 256×112×112", &download(&gpu, &gdg), &dgamma, Tolerance { rel: 1e-4, abs: 1e-2 });
    assert_close("dbeta at 256×112×112", &download(&gpu, &gdb), &dbeta, Tolerance { rel: 1e-4, abs: 1e-2 });
    // past the budget: an error naming it, not a silently wrong sum
    let big = BatchNormShape { n: 1024, c: 1, h: 112, w: 112 };
    let x = Tensor::zeros(&gpu, &[big.len()]).unwrap();
    let saved = Tensor::zeros(&gpu, &[2]).unwrap();
    let one = upload(&gpu, &[1], &[1.0]);
    let bn = BatchNorm { shape: big, eps: 1e-5, gamma: &one, beta: &one, running_mean: &one, running_var: &one };
    let Err(err) = norm::train_stats_dispatch(&gpu, &bn, Some(0.1), &x, &saved) else { panic!("over the loop budget") };
    assert!(err.to_string().contains("loop iterations"), "{err}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let c = Case::new(&gpu, (1, 3, 1, 1), 800);
    let saved = poisoned(&gpu, &[2, 3]);
    let y = poisoned(&gpu, &[1, 3]);
    // one value per channel cannot be trained on (PyTorch refuses it too)
    let err = norm::train_stats_dispatch(&gpu, &c.bn(), Some(0.1), &c.gx, &saved).err().unwrap();
    assert!(err.to_string().contains("more than one value per channel"), "{err}");
    // wrong lengths, shared buffers, bad momentum and eps, half the parameter gradients
    let c = Case::new(&gpu, (2, 3, 1, 1), 801);
    let short = upload(&gpu, &[2], &[1.0, 1.0]);
    let bn = BatchNorm { gamma: &short, ..c.bn() };
    assert!(norm::eval_forward_dispatch(&gpu, &bn, Activation::Identity, &c.gx, &poisoned(&gpu, &[2, 3])).is_err());
    assert!(norm::eval_forward_dispatch(&gpu, &c.bn(), Activation::Identity, &c.gx, &y).is_err());
    assert!(norm::eval_forward_dispatch(&gpu, &c.bn(), Activation::Identity, &c.gx, &c.gx).is_err());
    assert!(norm::train_stats_dispatch(&gpu, &c.bn(), Some(1.5), &c.gx, &saved).is_err());
    assert!(norm::train_stats_dispatch(&gpu, &c.bn(), Some(0.1), &c.gx, &poisoned(&gpu, &[3])).is_err());
    let bn = BatchNorm { eps: -1.0, ..c.bn() };
    assert!(norm::eval_forward_dispatch(&gpu, &bn, Activation::Identity, &c.gx, &poisoned(&gpu, &[2, 3])).is_err());
    let dg = poisoned(&gpu, &[3]);
    let half = BatchNormGrads { dx: None, dgamma: Some(&dg), dbeta: None };
    assert!(norm::eval_backward_dispatches(&gpu, &c.bn(), &c.gx, &c.gx, &half).is_err());
    assert!(norm::train_backward_dispatches(&gpu, &c.bn(), &c.gx, &c.gx, &saved, &half).is_err());
}

/// A BN folded into the convolution before it (W' = W·s, b' = β + (b − μ)·s) gives what conv →
/// BN gives, with and without a conv bias, the activation fused after either.
#[test]
fn folded_conv_equals_conv_then_batch_norm() {
    let gpu = gpu();
    for (i, bias) in [true, false].into_iter().enumerate() {
        let s = Conv2dShape::new(3, 4, 9, 7, 5, 3, 1, 1);
        let seed = 900 + 10 * i as u64;
        let (x, w, b) =
            (rand_vec(seed, s.x_shape().iter().product()), rand_vec(seed + 1, s.w_shape().iter().product()), rand_vec(seed + 2, s.o));
        let (gamma, beta) = (rand_range(seed + 3, s.o, 0.5, 1.5), rand_vec(seed + 4, s.o));
        let (mean, var) = (rand_vec(seed + 5, s.o), rand_range(seed + 6, s.o, 0.2, 2.0));
        let eps = 1e-5;
        let values = BatchNormValues { gamma: &gamma, beta: &beta, running_mean: &mean, running_var: &var, eps };
        let (wf, bf) = fold_into_conv(&w, bias.then_some(&b[..]), &values).unwrap();
        let act = Activation::Relu;

        // float64: conv → BN → ReLU
        let (oh, ow) = s.out_hw();
        let z = rc::conv2d_forward(&s, &to_f64(&x), &to_f64(&w), bias.then_some(&to_f64(&b)[..]));
        let bn_z = rn::eval_forward(&z, s.n, s.o, oh * ow, &to_f64(&gamma), &to_f64(&beta), &to_f64(&mean), &to_f64(&var), eps as f64);
        let expected: Vec<f64> = bn_z.iter().map(|&v| reference::activate(act, v)).collect();

        let (gx, scratch) = (upload(&gpu, &s.x_shape(), &x), ConvScratch::new(&gpu, &s).unwrap());
        // GPU: the folded conv, ReLU fused
        let (gwf, gbf) = (upload(&gpu, &s.w_shape(), &wf), upload(&gpu, &[s.o], &bf));
        let mut folded = poisoned(&gpu, &s.y_shape());
        conv::conv2d_forward(&gpu, &s, &gx, &gwf, Some(&gbf), act, &mut folded, &scratch).unwrap();
        // GPU: conv, then the inference BN with ReLU fused
        let (gw, gb) = (upload(&gpu, &s.w_shape(), &w), upload(&gpu, &[s.o], &b));
        let mut conv_out = poisoned(&gpu, &s.y_shape());
        conv::conv2d_forward(&gpu, &s, &gx, &gw, bias.then_some(&gb), Activation::Identity, &mut conv_out, &scratch).unwrap();
        let up = |v: &[f32]| upload(&gpu, &[v.len()], v);
        let (tg, tb, tm, tv) = (up(&gamma), up(&beta), up(&mean), up(&var));
        let bn = BatchNorm {
            shape: BatchNormShape { n: s.n, c: s.o, h: oh, w: ow },
            eps,
            gamma: &tg,
            beta: &tb,
            running_mean: &tm,
            running_var: &tv,
        };
        let mut unfolded = poisoned(&gpu, &s.y_shape());
        norm::eval_forward(&gpu, &bn, act, &conv_out, &mut unfolded).unwrap();

        let what = if bias { "with conv bias" } else { "without conv bias" };
        assert_close(&format!("folded conv {what}"), &download(&gpu, &folded), &expected, Tolerance::F32);
        assert_close(&format!("conv → BN {what}"), &download(&gpu, &unfolded), &expected, Tolerance::F32);
    }
}

/// The GPU fold (`norm::fold_conv_dispatches`, what a plan runs for a frozen conv → BN) equals
/// the float64 fold at odd sizes, with and without a conv bias, its outputs poisoned first.
#[test]
fn the_gpu_fold_equals_the_float64_fold_at_odd_sizes() {
    let gpu = gpu();
    for (k, &(o, per)) in [(1usize, 1usize), (7, 1), (33, 9), (5, 127), (127, 33)].iter().enumerate() {
        for bias in [true, false] {
            let seed = 700 + 10 * k as u64 + bias as u64;
            let case = Case::new(&gpu, (1, o, 1, 1), seed);
            let w = rand_vec(seed + 7, o * per);
            let b = rand_vec(seed + 8, o);
            let (gw, gb) = (upload(&gpu, &[o, per], &w), upload(&gpu, &[o], &b));
            let (fw, fb) = (poisoned(&gpu, &[o, per]), poisoned(&gpu, &[o]));
            let d = norm::fold_conv_dispatches(&gpu, &case.bn(), &gw, bias.then_some(&gb), &fw, &fb).unwrap();
            gpu.run("fold", &d.iter().collect::<Vec<_>>()).unwrap();
            let [_, gamma, beta, mean, var] = case.f64s();
            let (s, t) = rn::scale_shift(&gamma, &beta, &mean, &var, case.eps as f64);
            let want_w: Vec<f64> = w.iter().enumerate().map(|(i, &v)| v as f64 * s[i / per]).collect();
            let want_b: Vec<f64> = (0..o).map(|c| t[c] + if bias { b[c] as f64 * s[c] } else { 0.0 }).collect();
            let what = format!("fold of {o}×{per} weights, bias {bias}");
            assert_close(&format!("{what}: weights"), &download(&gpu, &fw), &want_w, Tolerance::F32);
            assert_close(&format!("{what}: bias"), &download(&gpu, &fb), &want_b, Tolerance::F32);
        }
    }
}

/// One step of each mode equals what PyTorch computes (torch 2.15, `torch.native_batch_norm` in
/// float64, gradients by autograd; `scripts/torch_ops_fixture.py`): the output, the saved
/// statistics, the running statistics after PyTorch's momentum update, and dx, dγ, dβ; the
/// float64 reference too. BatchNorm2d `[4, 3, 3, 2]` and BatchNorm1d `[5, 4]`, eps 1e-5,
/// momentum 0.1.
#[test]
fn one_step_of_each_mode_equals_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_ops.safetensors");
    let torch = headswap::checkpoint::load(&path).unwrap();
    let gpu = gpu();
    for prefix in ["bn2d", "bn1d"] {
        let t = |name: &str| torch.get(&format!("{prefix}.{name}")).unwrap_or_else(|| panic!("{prefix}.{name} missing")).clone();
        let x = t("x");
        let (n, c) = (x.shape[0], x.shape[1]);
        let hw: usize = x.shape[2..].iter().product();
        let s = BatchNormShape { n, c, h: hw, w: 1 };
        let up = |v: &[f32]| upload(&gpu, &[v.len()], v);
        let (gamma, beta, mean, var, dy) = (t("gamma").data, t("beta").data, t("running_mean").data, t("running_var").data, t("dy").data);
        let (gg, gb, gm, gv, gx, gdy) = (up(&gamma), up(&beta), up(&mean), up(&var), up(&x.data), up(&dy));
        let bn = BatchNorm { shape: s, eps: 1e-5, gamma: &gg, beta: &gb, running_mean: &gm, running_var: &gv };
        let want = |name: &str| to_f64(&t(name).data);
        let tol = Tolerance::F32;

        // inference
        let mut y = poisoned(&gpu, &[s.len()]);
        norm::eval_forward(&gpu, &bn, Activation::Identity, &gx, &mut y).unwrap();
        assert_close(&format!("{prefix} eval y"), &download(&gpu, &y), &want("eval.y"), tol);
        let (gdx, gdg, gdb) = (poisoned(&gpu, &[s.len()]), poisoned(&gpu, &[c]), poisoned(&gpu, &[c]));
        norm::eval_backward(&gpu, &bn, &gdy, &gx, &BatchNormGrads { dx: Some(&gdx), dgamma: Some(&gdg), dbeta: Some(&gdb) }).unwrap();
        for (name, got) in [("eval.dx", &gdx), ("eval.dgamma", &gdg), ("eval.dbeta", &gdb)] {
            assert_close(&format!("{prefix} {name}"), &download(&gpu, got), &want(name), tol);
        }

        // training: statistics, running update, output, backward
        let (mut saved, mut y) = (poisoned(&gpu, &[2, c]), poisoned(&gpu, &[s.len()]));
        norm::train_forward(&gpu, &bn, Some(0.1), Activation::Identity, &gx, &mut saved, &mut y).unwrap();
        assert_close(&format!("{prefix} train y"), &download(&gpu, &y), &want("train.y"), tol);
        let stats: Vec<f64> = want("train.save_mean").into_iter().chain(want("train.save_invstd")).collect();
        assert_close(&format!("{prefix} save_mean, save_invstd"), &download(&gpu, &saved), &stats, tol);
        assert_close(&format!("{prefix} running_mean"), &download(&gpu, &gm), &want("train.running_mean"), tol);
        assert_close(&format!("{prefix} running_var"), &download(&gpu, &gv), &want("train.running_var"), tol);
        let (gdx, gdg, gdb) = (poisoned(&gpu, &[s.len()]), poisoned(&gpu, &[c]), poisoned(&gpu, &[c]));
        let grads = BatchNormGrads { dx: Some(&gdx), dgamma: Some(&gdg), dbeta: Some(&gdb) };
        norm::train_backward(&gpu, &bn, &gdy, &gx, &saved, &grads).unwrap();
        for (name, got) in [("train.dx", &gdx), ("train.dgamma", &gdg), ("train.dbeta", &gdb)] {
            assert_close(&format!("{prefix} {name}"), &download(&gpu, got), &want(name), tol);
        }
        // one training-mode forward counts one batch (the host keeps num_batches_tracked)
        assert_eq!(torch.get_int(&format!("{prefix}.train.num_batches_tracked")).unwrap().data, vec![1]);

        // the float64 reference, to the precision the fixture holds (F64 read as f32)
        let [x64, g64, b64, m64, v64] = [&x.data, &gamma, &beta, &mean, &var].map(|v| to_f64(v));
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let close = Tolerance { rel: 1e-6, abs: 1e-6 };
        let r = rn::train_forward(&x64, n, c, hw, &g64, &b64, 1e-5);
        assert_close(&format!("{prefix} reference train y"), &f32s(&r.y), &want("train.y"), close);
        let (mut rm, mut rv) = (m64.clone(), v64.clone());
        rn::update_running(&mut rm, &r.mean, 0.1);
        rn::update_running(&mut rv, &r.var_unbiased, 0.1);
        assert_close(&format!("{prefix} reference running_var"), &f32s(&rv), &want("train.running_var"), close);
        let (dx, dg, _) = rn::backward(&to_f64(&dy), &x64, n, c, hw, &g64, &r.mean, &r.invstd, true);
        assert_close(&format!("{prefix} reference train dx"), &f32s(&dx), &want("train.dx"), close);
        assert_close(&format!("{prefix} reference train dgamma"), &f32s(&dg), &want("train.dgamma"), close);
        let y = rn::eval_forward(&x64, n, c, hw, &g64, &b64, &m64, &v64, 1e-5);
        assert_close(&format!("{prefix} reference eval y"), &f32s(&y), &want("eval.y"), close);
    }
}
