//! SGD and Adam/AdamW steps against the float64 reference (PyTorch's formulas): several steps
//! with fresh gradients, odd sizes, learning-rate changes through `set`, and the parameters given
//! as a view into a larger arena whose other elements must stay untouched.
mod common;
use common::*;
use headswap::kernels::optim::{self, AdamConfig, OptimStep, ParamRange, SgdConfig};
use headswap::{Gpu, Tensor, reference};

/// f32 steps against f64 math: a few ulps per step, relative to the parameter.
const TOL: Tolerance = Tolerance { rel: 2e-6, abs: 2e-7 };
/// Elements before and after the view in the arena (a multiple of 64: 256-byte aligned).
const PAD: usize = 64;

fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap()
}

/// A parameter arena of `PAD + n + 13` random values and the `n`-element view at `PAD`.
struct Arena {
    all: Tensor,
    view: Tensor,
    init: Vec<f32>,
    n: usize,
}

impl Arena {
    fn new(gpu: &Gpu, n: usize, seed: u64) -> Arena {
        let init = rand_vec(seed, PAD + n + 13);
        let all = upload(gpu, &[init.len()], &init);
        let view = all.view(PAD, &[n]).unwrap();
        Arena { all, view, init, n }
    }
    fn start(&self) -> Vec<f64> {
        to_f64(&self.init[PAD..PAD + self.n])
    }
    /// The view's values, after checking that everything outside it is bit-for-bit unchanged.
    fn values(&self, gpu: &Gpu, what: &str) -> Vec<f32> {
        let all = self.all.download(gpu).unwrap();
        let n = self.n;
        for i in (0..PAD).chain(PAD + n..all.len()) {
            assert_eq!(all[i].to_bits(), self.init[i].to_bits(), "{what}: arena element {i} outside the view changed");
        }
        all[PAD..PAD + n].to_vec()
    }
}

fn check_sgd(cfg: SgdConfig, n: usize, steps: u32, seed: u64) {
    let gpu = gpu();
    let arena = Arena::new(&gpu, n, seed);
    let grads = poisoned(&gpu, &[n]);
    let buf = poisoned(&gpu, &[n]); // step 1 must overwrite it, never read it
    let step = optim::sgd_step(&gpu, &arena.view, &grads, Some(&buf), &cfg).unwrap();
    let rc = reference::optim::Sgd {
        lr: widen(cfg.lr),
        momentum: widen(cfg.momentum),
        dampening: widen(cfg.dampening),
        weight_decay: widen(cfg.weight_decay),
        nesterov: cfg.nesterov,
    };
    let mut p = arena.start();
    let mut rbuf = vec![0.0; n];
    for t in 1..=steps {
        let g = rand_vec(seed * 100 + t as u64, n);
        grads.write(&gpu, &g).unwrap();
        if t > 1 {
            step.set(&gpu, cfg.lr, t).unwrap();
        }
        step.run(&gpu).unwrap();
        reference::optim::sgd_step(&mut p, &to_f64(&g), &mut rbuf, &rc, t);
    }
    let what = format!("sgd {cfg:?} n={n} steps={steps}");
    assert_close(&what, &arena.values(&gpu, &what), &p, TOL);
    if cfg.momentum != 0.0 {
        assert_close(&format!("{what} momentum buffer"), &buf.download(&gpu).unwrap(), &rbuf, TOL);
    }
}

#[test]
fn sgd_plain_one_step() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        check_sgd(SgdConfig::new(0.1), n, 1, 1 + i as u64);
    }
}

#[test]
fn sgd_momentum_three_steps() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        check_sgd(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.05) }, n, 3, 10 + i as u64);
    }
}

#[test]
fn sgd_nesterov_weight_decay_dampening() {
    let cases = [
        SgdConfig { momentum: 0.9, nesterov: true, ..SgdConfig::new(0.05) },
        SgdConfig { weight_decay: 0.01, ..SgdConfig::new(0.1) },
        SgdConfig { momentum: 0.8, dampening: 0.3, ..SgdConfig::new(0.05) },
        SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 5e-4, ..SgdConfig::new(0.01) },
        SgdConfig { momentum: 0.5, dampening: 0.5, weight_decay: 0.1, ..SgdConfig::new(0.2) },
    ];
    for (i, cfg) in cases.into_iter().enumerate() {
        for &n in &[7, 257] {
            check_sgd(cfg, n, 3, 20 + i as u64);
        }
    }
}

#[test]
fn sgd_without_momentum_ignores_the_buffer() {
    let gpu = gpu();
    let (n, lr) = (33, 0.25);
    let arena = Arena::new(&gpu, n, 30);
    let g = rand_vec(31, n);
    let grads = upload(&gpu, &[n], &g);
    let buf = poisoned(&gpu, &[n]);
    optim::sgd_step(&gpu, &arena.view, &grads, Some(&buf), &SgdConfig::new(lr)).unwrap().run(&gpu).unwrap();
    let expected: Vec<f64> = arena.start().iter().zip(&g).map(|(&p, &g)| p - 0.25 * g as f64).collect();
    assert_close("sgd plain", &arena.values(&gpu, "sgd plain"), &expected, TOL);
    assert!(buf.download(&gpu).unwrap().iter().all(|v| v.is_nan()), "the unused momentum buffer was written");
}

fn check_adam(cfg: AdamConfig, n: usize, steps: u32, seed: u64, lr_at: impl Fn(u32) -> f32) {
    let gpu = gpu();
    let arena = Arena::new(&gpu, n, seed);
    let grads = poisoned(&gpu, &[n]);
    let m = Tensor::zeros(&gpu, &[n]).unwrap();
    let v = Tensor::zeros(&gpu, &[n]).unwrap();
    let step: OptimStep = optim::adam_step(&gpu, &arena.view, &grads, &m, &v, &cfg).unwrap();
    assert_eq!(step.len(), n);
    let mut rc = reference::optim::Adam {
        lr: widen(cfg.lr),
        beta1: widen(cfg.beta1),
        beta2: widen(cfg.beta2),
        eps: widen(cfg.eps),
        weight_decay: widen(cfg.weight_decay),
        decoupled: cfg.decoupled_weight_decay,
    };
    let mut p = arena.start();
    let (mut rm, mut rv) = (vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        let g = rand_vec(seed * 100 + t as u64, n);
        grads.write(&gpu, &g).unwrap();
        let lr = lr_at(t);
        step.set(&gpu, lr, t).unwrap();
        rc.lr = widen(lr);
        step.run(&gpu).unwrap();
        reference::optim::adam_step(&mut p, &to_f64(&g), &mut rm, &mut rv, &rc, t);
    }
    let what = format!("adam {cfg:?} n={n} steps={steps}");
    assert_close(&what, &arena.values(&gpu, &what), &p, TOL);
    assert_close(&format!("{what} m"), &m.download(&gpu).unwrap(), &rm, Tolerance { rel: 2e-6, abs: 1e-7 });
    assert_close(&format!("{what} v"), &v.download(&gpu).unwrap(), &rv, Tolerance { rel: 2e-6, abs: 1e-9 });
}

#[test]
fn adam_several_steps() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        check_adam(AdamConfig::adam(0.01), n, 5, 40 + i as u64, |_| 0.01);
    }
}

#[test]
fn adamw_several_steps() {
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        check_adam(AdamConfig::adamw(0.01), n, 5, 50 + i as u64, |_| 0.01);
    }
}

#[test]
fn adam_variants_and_schedules() {
    let cases = [
        // L2 weight decay added to the gradient
        AdamConfig { weight_decay: 0.1, ..AdamConfig::adam(0.005) },
        // strong decoupled decay
        AdamConfig { weight_decay: 0.5, ..AdamConfig::adamw(0.02) },
        // 1 − β1 ≥ 0.5: the other branch of ATen's lerp
        AdamConfig { beta1: 0.3, beta2: 0.9, eps: 1e-6, ..AdamConfig::adam(0.01) },
        AdamConfig { beta1: 0.0, ..AdamConfig::adamw(0.01) },
    ];
    for (i, cfg) in cases.into_iter().enumerate() {
        for &n in &[1, 127] {
            // a warm-up then decay schedule: the learning rate changes every step
            check_adam(cfg, n, 6, 60 + i as u64, |t| cfg.lr * [0.25, 0.5, 1.0, 0.8, 0.6, 0.4][t as usize - 1]);
        }
    }
}

#[test]
fn one_dispatch_over_a_large_arena() {
    // 274 workgroups with a partial last one
    check_adam(AdamConfig::adamw(1e-3), 70_001, 2, 70, |_| 1e-3);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let gpu = gpu();
    let p = upload(&gpu, &[7], &[0.0; 7]);
    let g = upload(&gpu, &[7], &[0.0; 7]);
    let short = upload(&gpu, &[6], &[0.0; 6]);
    let labels = Tensor::from_u32(&gpu, &[7], &[0; 7]).unwrap();
    let momentum = SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) };
    assert!(optim::sgd_step(&gpu, &p, &g, None, &momentum).is_err(), "momentum without a buffer");
    assert!(optim::sgd_step(&gpu, &p, &short, None, &SgdConfig::new(0.1)).is_err(), "length mismatch");
    assert!(optim::sgd_step(&gpu, &p, &labels, None, &SgdConfig::new(0.1)).is_err(), "u32 gradients");
    assert!(optim::sgd_step(&gpu, &p, &p, None, &SgdConfig::new(0.1)).is_err(), "grads aliasing params");
    assert!(optim::adam_step(&gpu, &p, &g, &short, &p, &AdamConfig::adam(0.1)).is_err(), "short moment");
    let m = Tensor::zeros(&gpu, &[7]).unwrap();
    let v = Tensor::zeros(&gpu, &[7]).unwrap();
    let step = optim::adam_step(&gpu, &p, &g, &m, &v, &AdamConfig::adam(0.1)).unwrap();
    assert!(step.set(&gpu, 0.1, 0).is_err(), "step 0");
    assert!(step.set(&gpu, f32::NAN, 1).is_err(), "NaN learning rate");
}

#[test]
fn pipelines_are_compiled_once() {
    let gpu = private_gpu();
    let p = upload(&gpu, &[7], &rand_vec(1, 7));
    let g = upload(&gpu, &[7], &rand_vec(2, 7));
    let (m, v) = (Tensor::zeros(&gpu, &[7]).unwrap(), Tensor::zeros(&gpu, &[7]).unwrap());
    optim::adam_step(&gpu, &p, &g, &m, &v, &AdamConfig::adam(0.1)).unwrap().run(&gpu).unwrap();
    let before = gpu.pipeline_cache().len();
    for cfg in [AdamConfig::adamw(0.1), AdamConfig { beta1: 0.5, ..AdamConfig::adam(0.2) }] {
        optim::adam_step(&gpu, &p, &g, &m, &v, &cfg).unwrap().run(&gpu).unwrap();
    }
    assert_eq!(gpu.pipeline_cache().len(), before, "another Adam config compiled a new pipeline");
}

// ---- Two parameter ranges in one dispatch (the trainer's head and trunk arenas) ----

/// The optimizer a two-range test runs.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Rule {
    fn state_len(&self) -> usize {
        match self {
            Rule::Sgd(c) => (c.momentum != 0.0) as usize,
            Rule::Adam(_) => 2,
        }
    }
    fn lr(&self) -> f32 {
        match self {
            Rule::Sgd(c) => c.lr,
            Rule::Adam(c) => c.lr,
        }
    }
    fn build(&self, gpu: &Gpu, ranges: &[ParamRange]) -> headswap::Result<OptimStep> {
        match self {
            Rule::Sgd(c) => optim::sgd_step_ranges(gpu, ranges, c),
            Rule::Adam(c) => optim::adam_step_ranges(gpu, ranges, c),
        }
    }
    /// The f64 reference step over one range at learning rate `lr`.
    fn reference(&self, p: &mut [f64], g: &[f64], state: &mut [Vec<f64>], lr: f32, t: u32) {
        match self {
            Rule::Sgd(c) => {
                let rc = reference::optim::Sgd {
                    lr: widen(lr),
                    momentum: widen(c.momentum),
                    dampening: widen(c.dampening),
                    weight_decay: widen(c.weight_decay),
                    nesterov: c.nesterov,
                };
                let mut none = vec![0.0; p.len()];
                let buf = state.first_mut().unwrap_or(&mut none);
                reference::optim::sgd_step(p, g, buf, &rc, t);
            }
            Rule::Adam(c) => {
                let rc = reference::optim::Adam {
                    lr: widen(lr),
                    beta1: widen(c.beta1),
                    beta2: widen(c.beta2),
                    eps: widen(c.eps),
                    weight_decay: widen(c.weight_decay),
                    decoupled: c.decoupled_weight_decay,
                };
                let (m, v) = state.split_at_mut(1);
                reference::optim::adam_step(p, g, &mut m[0], &mut v[0], &rc, t);
            }
        }
    }
}

/// One range's buffers: parameters as a view into an arena, poisoned gradients, state buffers
/// (momentum is poisoned, as step 1 must overwrite it; Adam's moments start at zero).
struct RangeBufs {
    arena: Arena,
    grads: Tensor,
    state: Vec<Tensor>,
}

impl RangeBufs {
    fn new(gpu: &Gpu, rule: &Rule, n: usize, seed: u64) -> RangeBufs {
        let state = (0..rule.state_len())
            .map(|_| if matches!(rule, Rule::Sgd(_)) { poisoned(gpu, &[n]) } else { Tensor::zeros(gpu, &[n]).unwrap() })
            .collect();
        RangeBufs { arena: Arena::new(gpu, n, seed), grads: poisoned(gpu, &[n]), state }
    }
}

/// Steps ranges a (n_a) and b (n_b, at `mult` × the rate) together for `steps` steps under a
/// changing learning rate, against the f64 reference of each range; then returns the final
/// parameters and state for the bit-for-bit comparison with separate single-range steps.
fn check_two_ranges(rule: Rule, n_a: usize, n_b: usize, mult: f32, steps: u32, seed: u64, together: bool) -> Vec<Vec<f32>> {
    let gpu = gpu();
    let bufs = [RangeBufs::new(&gpu, &rule, n_a, seed), RangeBufs::new(&gpu, &rule, n_b, seed + 1)];
    let states: Vec<Vec<&Tensor>> = bufs.iter().map(|b| b.state.iter().collect()).collect();
    let ranges: Vec<ParamRange> = bufs
        .iter()
        .zip(&states)
        .zip([1.0, mult])
        .map(|((b, s), lr_mult)| ParamRange { params: &b.arena.view, grads: &b.grads, state: s, lr_mult })
        .collect();
    let steps_built: Vec<OptimStep> = if together {
        let step = rule.build(&gpu, &ranges).unwrap();
        assert_eq!((step.ranges(), step.len()), (2, n_a + n_b));
        vec![step]
    } else {
        ranges.iter().map(|r| rule.build(&gpu, &[ParamRange { lr_mult: 1.0, ..*r }]).unwrap()).collect()
    };
    let mut p: Vec<Vec<f64>> = bufs.iter().map(|b| b.arena.start()).collect();
    let mut st: Vec<Vec<Vec<f64>>> = [n_a, n_b].iter().map(|&n| vec![vec![0.0; n]; rule.state_len()]).collect();
    for t in 1..=steps {
        let lr = rule.lr() * [0.5, 1.0, 0.75, 0.25][(t as usize - 1) % 4];
        for (k, b) in bufs.iter().enumerate() {
            let g = rand_vec(seed * 1000 + 10 * t as u64 + k as u64, b.arena.n);
            b.grads.write(&gpu, &g).unwrap();
            let lr_k = if k == 0 { lr } else { lr * mult };
            rule.reference(&mut p[k], &to_f64(&g), &mut st[k], lr_k, t);
        }
        if together {
            steps_built[0].set(&gpu, lr, t).unwrap();
        } else {
            steps_built[0].set(&gpu, lr, t).unwrap();
            steps_built[1].set(&gpu, lr * mult, t).unwrap();
        }
        for s in &steps_built {
            s.run(&gpu).unwrap();
        }
    }
    let mut out = Vec::new();
    for (k, b) in bufs.iter().enumerate() {
        let what = format!("{rule:?} two ranges ({n_a}, {n_b}) × {mult}, range {k}");
        let got = b.arena.values(&gpu, &what);
        assert_close(&what, &got, &p[k], TOL);
        out.push(got);
        for (j, s) in b.state.iter().enumerate() {
            let got = s.download(&gpu).unwrap();
            // as the single-range tests: Adam's v is tiny (≈ (1 − β2)·g²), so its abs floor is too
            let tol = match (rule, j) {
                (Rule::Sgd(_), _) => TOL,
                (Rule::Adam(_), 0) => Tolerance { rel: 2e-6, abs: 1e-7 },
                (Rule::Adam(_), _) => Tolerance { rel: 2e-6, abs: 1e-9 },
            };
            assert_close(&format!("{what} state {j}"), &got, &st[k][j], tol);
            out.push(got);
        }
    }
    out
}

fn two_range_rules() -> Vec<Rule> {
    vec![
        Rule::Sgd(SgdConfig::new(0.1)),
        Rule::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.05) }),
        Rule::Sgd(SgdConfig { momentum: 0.8, nesterov: true, weight_decay: 1e-3, ..SgdConfig::new(0.05) }),
        Rule::Adam(AdamConfig::adam(0.01)),
        Rule::Adam(AdamConfig { weight_decay: 0.1, ..AdamConfig::adamw(0.01) }),
    ]
}

#[test]
fn two_ranges_in_one_dispatch_match_the_reference() {
    // sizes around the 256-wide workgroup, the boundary between the ranges inside a workgroup
    let sizes = [(1, 7), (33, 1), (127, 257), (256, 33), (70_001, 129)];
    for (i, rule) in two_range_rules().into_iter().enumerate() {
        for (j, &(n_a, n_b)) in sizes.iter().enumerate() {
            let mult = [0.1, 1.0, 0.0, 2.5, 0.5][j];
            check_two_ranges(rule, n_a, n_b, mult, 4, 200 + 10 * i as u64 + j as u64, true);
        }
    }
}

#[test]
fn two_ranges_equal_two_separate_steps_bit_for_bit() {
    for (i, rule) in two_range_rules().into_iter().enumerate() {
        let seed = 300 + i as u64;
        let together = check_two_ranges(rule, 300, 77, 0.1, 5, seed, true);
        let apart = check_two_ranges(rule, 300, 77, 0.1, 5, seed, false);
        for (k, (a, b)) in together.iter().zip(&apart).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{rule:?}: buffer {k} differs between one two-range dispatch and two single-range ones");
        }
    }
}

#[test]
fn bad_ranges_are_errors() {
    let gpu = gpu();
    let t = |n: usize| upload(&gpu, &[n], &vec![0.0; n]);
    let (p, g, m, v) = (t(7), t(7), t(7), t(7));
    let (p2, g2, m2, v2) = (t(5), t(5), t(5), t(5));
    let adam = AdamConfig::adam(0.1);
    let (mv, mv2, m_only, m2m2) = ([&m, &v], [&m2, &v2], [&m], [&m2, &m2]);
    let ok = [ParamRange::new(&p, &g, &mv), ParamRange::new(&p2, &g2, &mv2)];
    assert!(optim::adam_step_ranges(&gpu, &ok, &adam).is_ok());
    assert!(optim::adam_step_ranges(&gpu, &[], &adam).is_err(), "no range");
    assert!(optim::adam_step_ranges(&gpu, &[ok[0], ok[1], ok[0]], &adam).is_err(), "three ranges");
    let short_state = [ParamRange::new(&p, &g, &m_only), ok[1]];
    assert!(optim::adam_step_ranges(&gpu, &short_state, &adam).is_err(), "one moment missing");
    let cross_alias = [ok[0], ParamRange::new(&p2, &p, &mv2)];
    assert!(optim::adam_step_ranges(&gpu, &cross_alias, &adam).is_err(), "range b's grads are range a's params");
    let shared_state = [ok[0], ParamRange::new(&p2, &g2, &m2m2)];
    assert!(optim::adam_step_ranges(&gpu, &shared_state, &adam).is_err(), "m and v the same buffer");
    // two views of one arena may be ranges only where they do not overlap (views at 256-byte
    // aligned offsets, as a binding needs)
    let arena = t(200);
    let (a0, a1, a2) = (arena.view(0, &[70]).unwrap(), arena.view(64, &[7]).unwrap(), arena.view(128, &[5]).unwrap());
    let g70 = t(70);
    let sgd = SgdConfig::new(0.1);
    assert!(optim::sgd_step_ranges(&gpu, &[ParamRange::new(&a0, &g70, &[]), ParamRange::new(&a1, &g, &[])], &sgd).is_err(), "overlap");
    assert!(
        optim::sgd_step_ranges(&gpu, &[ParamRange::new(&a0, &g70, &[]), ParamRange::new(&a2, &g2, &[])], &sgd).is_ok(),
        "disjoint views"
    );
    // a rate that overflows f32 only once multiplied by a range's multiplier
    let huge = optim::adam_step_ranges(&gpu, &[ok[0], ParamRange { lr_mult: 1e20, ..ok[1] }], &adam).unwrap();
    assert!(huge.set(&gpu, 1e20, 2).is_err(), "lr × multiplier = inf");
    let neg = [ParamRange { lr_mult: -1.0, ..ok[0] }, ok[1]];
    assert!(optim::adam_step_ranges(&gpu, &neg, &adam).is_err(), "negative multiplier");
    let momentum = SgdConfig { momentum: 0.9, ..sgd };
    assert!(optim::sgd_step_ranges(&gpu, &[ParamRange::new(&p, &g, &[])], &momentum).is_err(), "momentum without a buffer");
}

#[test]
fn the_launch_form_is_measured_once_and_remembered() {
    use headswap::kernels::autotune;
    use headswap::kernels::optim::{Optimizer, RangeLaunch, choose_range_launch};
    let gpu = gpu();
    let opt = Optimizer::adam(1e-3);
    // one range: nothing to choose, nothing measured
    let before = autotune::measurements();
    assert_eq!(choose_range_launch(&gpu, &opt, &[1000]).unwrap(), RangeLaunch::OneDispatch);
    assert_eq!(autotune::measurements(), before);
    let first = choose_range_launch(&gpu, &opt, &[300, 5000]).unwrap();
    let after_first = autotune::measurements();
    // the same size class again: recalled, not measured
    assert_eq!(choose_range_launch(&gpu, &opt, &[290, 4100]).unwrap(), first);
    assert_eq!(autotune::measurements(), after_first, "a second measurement for the same class");
    // both forms step alike
    let t = |n: usize, seed: u64| upload(&gpu, &[n], &rand_vec(seed, n));
    for launch in [RangeLaunch::OneDispatch, RangeLaunch::PerRange] {
        let (p, g, m, v) = (t(33, 1), t(33, 2), Tensor::zeros(&gpu, &[33]).unwrap(), Tensor::zeros(&gpu, &[33]).unwrap());
        let (p2, g2, m2, v2) = (t(7, 3), t(7, 4), Tensor::zeros(&gpu, &[7]).unwrap(), Tensor::zeros(&gpu, &[7]).unwrap());
        let (mv, mv2) = ([&m, &v], [&m2, &v2]);
        let ranges = [ParamRange::new(&p, &g, &mv), ParamRange { lr_mult: 0.5, ..ParamRange::new(&p2, &g2, &mv2) }];
        let steps = opt.steps(&gpu, &ranges, launch).unwrap();
        assert_eq!(steps.len(), if launch == RangeLaunch::OneDispatch { 1 } else { 2 });
        steps.iter().for_each(|s| s.run(&gpu).unwrap());
        let mut expect = to_f64(&rand_vec(3, 7));
        let (mut rm, mut rv) = (vec![0.0; 7], vec![0.0; 7]);
        let rc = reference::optim::Adam { lr: widen(0.5 * 1e-3), beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
        reference::optim::adam_step(&mut expect, &to_f64(&rand_vec(4, 7)), &mut rm, &mut rv, &rc, 1);
        assert_close(&format!("{launch:?}: range b at half the rate"), &p2.download(&gpu).unwrap(), &expect, TOL);
    }
}

// ---- PyTorch's operation order in f32 ----
// The f64 comparisons above bound the error; these replay PyTorch's single-tensor kernels in f32
// on the host, operation by operation without FMA, and require the GPU to land within a few ulps
// (WGSL allows 2.5-ulp division and sqrt and contracted multiply-adds). lavapipe and llvmpipe
// have been seen to match bit for bit; the test prints how many elements do.

fn sgd_f32_replica(p: &mut [f32], g: &[f32], buf: &mut [f32], c: &SgdConfig, t: u32) {
    let one_minus_dampening = (1.0 - widen(c.dampening)) as f32;
    for i in 0..p.len() {
        let mut gi = g[i];
        if c.weight_decay != 0.0 {
            gi += c.weight_decay * p[i];
        }
        if c.momentum != 0.0 {
            buf[i] = if t == 1 { gi } else { buf[i] * c.momentum + one_minus_dampening * gi };
            gi = if c.nesterov { gi + c.momentum * buf[i] } else { buf[i] };
        }
        p[i] += -c.lr * gi;
    }
}

fn adam_f32_replica(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamConfig, lr: f32, t: u32) {
    let (lr64, b1, b2) = (widen(lr), widen(c.beta1), widen(c.beta2));
    let step_size = lr64 / (1.0 - b1.powf(t as f64));
    let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
    let w = (1.0 - b1) as f32;
    let c2 = (1.0 - b2) as f32;
    for i in 0..p.len() {
        let mut gi = g[i];
        if c.weight_decay != 0.0 {
            if c.decoupled_weight_decay {
                p[i] *= (1.0 - lr64 * widen(c.weight_decay)) as f32;
            } else {
                gi += c.weight_decay * p[i];
            }
        }
        m[i] = if w.abs() < 0.5 { m[i] + w * (gi - m[i]) } else { gi - (gi - m[i]) * (1.0 - w) };
        v[i] = v[i] * c.beta2 + c2 * gi * gi;
        let denom = v[i].sqrt() / bc2_sqrt + c.eps;
        p[i] += (-step_size) as f32 * m[i] / denom;
    }
}

/// Distance in representable f32 values.
fn ulps(a: f32, b: f32) -> i64 {
    let ord = |x: f32| {
        let bits = x.to_bits();
        if bits >> 31 == 1 { -((bits & 0x7fff_ffff) as i64) } else { bits as i64 }
    };
    (ord(a) - ord(b)).abs()
}

fn assert_within_ulps(what: &str, gpu_values: &[f32], host: &[f32], max: i64) {
    let d: Vec<i64> = gpu_values.iter().zip(host).map(|(&a, &b)| ulps(a, b)).collect();
    let same = d.iter().filter(|&&u| u == 0).count();
    let worst = d.iter().copied().max().unwrap_or(0);
    eprintln!("{what}: {same}/{} bit-identical to the f32 replica, worst {worst} ulp", d.len());
    assert!(worst <= max, "{what}: {worst} ulps from PyTorch's f32 operation order (allowed {max})");
}

#[test]
fn sgd_matches_pytorch_f32_operation_order() {
    let gpu = gpu();
    let n = 1031;
    for cfg in [
        SgdConfig::new(0.1),
        SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 1e-4, ..SgdConfig::new(0.05) },
        SgdConfig { momentum: 0.8, dampening: 0.3, weight_decay: 0.01, ..SgdConfig::new(0.05) },
    ] {
        let mut p = rand_vec(1, n);
        let gp = upload(&gpu, &[n], &p);
        let grads = poisoned(&gpu, &[n]);
        let buf = poisoned(&gpu, &[n]);
        let mut hbuf = vec![0f32; n];
        let step = optim::sgd_step(&gpu, &gp, &grads, Some(&buf), &cfg).unwrap();
        for t in 1..=10 {
            let g = rand_vec(100 + t as u64, n);
            grads.write(&gpu, &g).unwrap();
            step.set(&gpu, cfg.lr, t).unwrap();
            step.run(&gpu).unwrap();
            sgd_f32_replica(&mut p, &g, &mut hbuf, &cfg, t);
        }
        assert_within_ulps(&format!("{cfg:?}"), &gp.download(&gpu).unwrap(), &p, 4);
    }
}

#[test]
fn adam_matches_pytorch_f32_operation_order() {
    let gpu = gpu();
    let n = 1031;
    for cfg in [
        AdamConfig::adam(0.01),
        AdamConfig::adamw(0.01),
        AdamConfig { weight_decay: 0.1, ..AdamConfig::adam(0.005) },
        AdamConfig { beta1: 0.3, beta2: 0.9, ..AdamConfig::adamw(0.01) },
    ] {
        let mut p = rand_vec(1, n);
        let gp = upload(&gpu, &[n], &p);
        let grads = poisoned(&gpu, &[n]);
        let (m, v) = (Tensor::zeros(&gpu, &[n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
        let (mut hm, mut hv) = (vec![0f32; n], vec![0f32; n]);
        let step = optim::adam_step(&gpu, &gp, &grads, &m, &v, &cfg).unwrap();
        for t in 1..=10 {
            let g = rand_vec(100 + t as u64, n);
            grads.write(&gpu, &g).unwrap();
            let lr = cfg.lr / t as f32;
            step.set(&gpu, lr, t).unwrap();
            step.run(&gpu).unwrap();
            adam_f32_replica(&mut p, &g, &mut hm, &mut hv, &cfg, lr, t);
        }
        assert_within_ulps(&format!("{cfg:?}"), &gp.download(&gpu).unwrap(), &p, 4);
    }
}
