//! Several task heads on one trunk: a labels head (with a hidden layer), a classes head and a
//! regression head, weighted, each with unknown targets. The GPU's loss and gradients equal the
//! float64 reference and its central differences, a head of weight 0 gets no gradient, a short
//! run follows the reference trainer, and bad targets are refused naming the head.
mod common;
use common::trainer::{RefOpt, reference_train_with};
use common::*;
use headswap::data::{Dataset, HeadTargets, Targets};
use headswap::kernels::Activation;
use headswap::kernels::loss::{BceReduction, IGNORE_CLASS, RegressionLoss};
use headswap::nn::{DenseSpec, Head, HeadKind, Init, LayerSpec, Network, Trunk};
use headswap::reference::network::{RefHead, RefHeadLoss, RefLayer, loss_and_grads_heads};
use headswap::reference::optim::Adam;
use headswap::train::{BceSettings, Freeze, Optimizer, TrainConfig, Trainer, gradients};
use headswap::{Gpu, Rng};

const D: usize = 5;

fn trunk() -> Trunk {
    Trunk::chain(vec![
        LayerSpec::Dense(DenseSpec { inputs: D, outputs: 8, activation: Activation::Tanh }),
        LayerSpec::Dense(DenseSpec { inputs: 8, outputs: 6, activation: Activation::Tanh }),
    ])
}

/// objects: 3 labels behind a hidden layer (with positive weights, the mean over known labels);
/// scene: 4 classes; distance: 2 values (Huber).
fn heads(w: [f32; 3]) -> Vec<Head> {
    vec![
        Head::labels(3)
            .hidden(4, Activation::Tanh)
            .named("objects")
            .weight(w[0])
            .pos_weight(vec![2.0, 0.5, 1.5])
            .bce_reduction(BceReduction::MeanLabelled),
        Head::classes(4).named("scene").weight(w[1]),
        Head::regression(2, RegressionLoss::Huber(0.5)).named("distance").weight(w[2]),
    ]
}

fn net(gpu: &Gpu, w: [f32; 3], seed: u64) -> Network {
    Network::from_trunk_heads(gpu, D, trunk(), Init::KaimingUniform, &heads(w), seed).unwrap()
}

/// `n` examples; about one in five of each head's targets unknown (a NaN label, class −1, a NaN
/// distance), and example 0 unknown for every head but the regression's first column.
fn data(n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let x = rand_range(seed + 1, n * D, -1.5, 1.5);
    let objects: Vec<f32> = (0..n * 3)
        .map(|i| {
            if i < 3 || r.next_f64() < 0.2 {
                f32::NAN
            } else if r.next_f64() < 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let scene: Vec<u32> = (0..n).map(|i| if i == 0 || r.next_f64() < 0.2 { IGNORE_CLASS } else { r.below(4) as u32 }).collect();
    let distance: Vec<f32> =
        (0..n * 2).map(|i| if i == 1 || r.next_f64() < 0.2 { f32::NAN } else { r.uniform(-2.0, 2.0) as f32 }).collect();
    Dataset {
        x,
        n,
        d: D,
        input_shape: vec![D],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: objects, k: 3 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: distance, k: 2 }),
        ]),
        label_names: Vec::new(),
    }
}

fn ref_layers(net: &Network, values: &[(Vec<f32>, Vec<f32>)]) -> Vec<RefLayer> {
    net.layers().iter().zip(values).map(|(s, (w, b))| RefLayer::new(*s, to_f64(w), to_f64(b))).collect()
}

/// The reference's heads for the examples `rows` of `data`.
fn ref_heads(net: &Network, data: &Dataset, rows: &[u32]) -> Vec<RefHead> {
    net.heads()
        .iter()
        .map(|h| {
            let t = data.targets.head(&h.name).unwrap();
            let pick = |y: &[f32], k: usize| -> Vec<f64> {
                rows.iter().flat_map(|&i| y[i as usize * k..(i as usize + 1) * k].iter().map(|&v| v as f64)).collect()
            };
            let loss = match (t, h.kind) {
                (Targets::Classes { y, .. }, HeadKind::Classes) => RefHeadLoss::Classes(rows.iter().map(|&i| y[i as usize]).collect()),
                (Targets::Labels { y, k }, HeadKind::Labels) => RefHeadLoss::Labels {
                    y: pick(y, *k),
                    pos_weight: h.pos_weight.as_ref().map(|p| to_f64(p)),
                    reduction: h.bce_reduction.unwrap_or_default(),
                },
                (Targets::Regression { y, k }, HeadKind::Regression(kind)) => RefHeadLoss::Regression(pick(y, *k), kind),
                _ => unreachable!("targets of the head's kind"),
            };
            RefHead { output: h.layers.end - 1, weight: h.weight as f64, loss }
        })
        .collect()
}

fn all_rows(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

#[test]
fn heads_are_wired_to_the_trunk_and_named_heads_dot_name() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.5, 2.0], 1);
    // trunk 0, 1; objects 2 (hidden), 3; scene 4; distance 5
    assert_eq!(net.sources(), [vec![0], vec![1], vec![2], vec![3], vec![2], vec![2]]);
    // nn.Sequential indices count the activations, as PyTorch's do
    assert_eq!(net.module_names(), ["0", "2", "heads.objects.0", "heads.objects.2", "heads.scene", "heads.distance"]);
    let h: Vec<(&str, usize, std::ops::Range<usize>)> =
        net.heads().iter().map(|h| (h.name.as_str(), h.outputs, h.layers.clone())).collect();
    assert_eq!(h, [("objects", 3, 2..4), ("scene", 4, 4..5), ("distance", 2, 5..6)]);
    assert_eq!(net.head("scene").map(|h| h.weight), Some(0.5));
    assert_eq!(net.head("distance").map(|h| h.kind), Some(HeadKind::Regression(RegressionLoss::Huber(0.5))));
}

#[test]
fn gradients_of_all_three_kinds_equal_central_differences_of_the_reference() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.5, 2.0], 3);
    let data = data(7, 11);
    let values = net.values().unwrap();
    let layers = ref_layers(&net, &values);
    let x = to_f64(&data.x);
    let heads = ref_heads(&net, &data, &all_rows(data.n));
    let (want_loss, _, want) = loss_and_grads_heads(&layers, net.sources(), &x, data.n, &heads);

    let (loss, got) = gradients(&gpu, &net, &data, &BceSettings::default()).unwrap();
    assert_close("loss", &[loss as f32], &[want_loss], Tolerance::F32);
    // central differences of the float64 reference's Σ w_t·L_t, parameter by parameter
    let h = 1e-6;
    let loss_at = |layers: &[RefLayer]| loss_and_grads_heads(layers, net.sources(), &x, data.n, &heads).0;
    for (i, ((gw, gb), (aw, ab))) in got.iter().zip(&want).enumerate() {
        let fd = |bias: bool, len: usize| -> Vec<f64> {
            (0..len)
                .map(|j| {
                    let mut l = layers.clone();
                    let p = if bias { &mut l[i].b[j] } else { &mut l[i].w[j] };
                    *p += h;
                    let up = loss_at(&l);
                    let p = if bias { &mut l[i].b[j] } else { &mut l[i].w[j] };
                    *p -= 2.0 * h;
                    (up - loss_at(&l)) / (2.0 * h)
                })
                .collect()
        };
        let (fw, fb) = (fd(false, aw.len()), fd(true, ab.len()));
        assert_close(&format!("layer {i} dW vs central differences"), gw, &fw, Tolerance::F32);
        assert_close(&format!("layer {i} db vs central differences"), gb, &fb, Tolerance::F32);
        assert_close(&format!("layer {i} dW vs the reference's backward"), gw, aw, Tolerance::F32);
        assert_close(&format!("layer {i} db vs the reference's backward"), gb, ab, Tolerance::F32);
    }
    // the masks matter: every head has unknown targets in this batch, yet every gradient is finite
    assert!(got.iter().all(|(w, b)| w.iter().chain(b).all(|v| v.is_finite())));
}

#[test]
fn a_head_of_weight_zero_gets_exactly_zero_gradient_and_passes_none_to_the_trunk() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.0, 2.0], 5);
    let data = data(9, 13);
    let (_, got) = gradients(&gpu, &net, &data, &BceSettings::default()).unwrap();
    let scene = net.head("scene").unwrap().layers.clone();
    for i in scene {
        assert!(got[i].0.iter().chain(&got[i].1).all(|&v| v == 0.0), "layer {i} of the weight-0 head has a gradient");
    }
    // the trunk's gradient is that of the other two heads alone
    let values = net.values().unwrap();
    let layers = ref_layers(&net, &values);
    let heads: Vec<RefHead> = ref_heads(&net, &data, &all_rows(data.n)).into_iter().filter(|h| h.output != 4).collect();
    let (_, _, want) = loss_and_grads_heads(&layers, net.sources(), &to_f64(&data.x), data.n, &heads);
    for i in 0..2 {
        assert_close(&format!("trunk layer {i} dW"), &got[i].0, &want[i].0, Tolerance::F32);
        assert_close(&format!("trunk layer {i} db"), &got[i].1, &want[i].1, Tolerance::F32);
    }
}

/// Trains `net` on `data` on the GPU and in the float64 reference (Adam, batches of 4 with a
/// partial last one, 2 epochs) with the learning-rate multipliers `mults`, and compares every
/// layer's values.
fn matches_reference_trainer(net: &mut Network, data: &Dataset, mults: &[Option<f64>], run: impl FnOnce(&mut Trainer, &mut Network)) {
    let gpu = gpu();
    let (batch, epochs, seed) = (4, 2, 7);
    let start = net.values().unwrap();
    let adam = Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: batch, seed, ..TrainConfig::default() };
    let mut trainer = Trainer::new(&gpu, cfg);
    run(&mut trainer, net);
    let got = net.values().unwrap();
    let sources = net.sources().to_vec();
    let grads = |layers: &[RefLayer], xb: &[f64], chunk: &[u32]| {
        loss_and_grads_heads(layers, &sources, xb, chunk.len(), &ref_heads(net, data, chunk)).2
    };
    let want = reference_train_with(&net.layers(), &start, data, &grads, RefOpt::Adam(adam), mults, batch, epochs, seed, None);
    let tol = Tolerance { rel: 1e-5, abs: 1e-5 };
    for (i, ((gw, gb), (ww, wb))) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("layer {i} weight"), gw, ww, tol);
        assert_close(&format!("layer {i} bias"), gb, wb, tol);
    }
}

#[test]
fn a_short_run_matches_the_reference_trainer() {
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 9);
    let data = data(11, 17);
    let all = vec![Some(1.0); net.layers().len()];
    matches_reference_trainer(&mut net, &data, &all, |t, net| {
        t.fit(net, &data, 2).unwrap();
    });
}

#[test]
fn heads_fine_tune_on_the_frozen_trunks_cached_features_like_the_reference() {
    let gpu = gpu();
    let mut net = net(&gpu, [0.3, 1.0, 1.5], 19);
    let data = data(10, 23);
    let mults: Vec<Option<f64>> = (0..net.layers().len()).map(|i| (i >= 2).then_some(1.0)).collect();
    matches_reference_trainer(&mut net, &data, &mults, |t, net| {
        let report = t.fine_tune(net, &data, Freeze::Trunk, 2).unwrap();
        // every head reads the trunk's last output: computed once for all of them
        assert!(report.cached_features);
    });
}

#[test]
fn evaluation_reports_each_heads_weighted_loss_and_metrics() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.5, 2.0], 29);
    let data = data(13, 31);
    let cfg = TrainConfig { batch_size: 64, ..TrainConfig::default() };
    let m = Trainer::new(&gpu, cfg).evaluate(&net, &data).unwrap();
    let values = net.values().unwrap();
    let layers = ref_layers(&net, &values);
    let (total, per_head, _) =
        loss_and_grads_heads(&layers, net.sources(), &to_f64(&data.x), data.n, &ref_heads(&net, &data, &all_rows(data.n)));
    assert_close("total loss", &[m.loss as f32], &[total], Tolerance::F32);
    let names: Vec<&str> = m.heads.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["objects", "scene", "distance"]);
    let got: Vec<f32> = m.heads.iter().map(|h| h.weighted_loss as f32).collect();
    assert_close("per-head w·L", &got, &per_head, Tolerance::F32);

    // accuracy over the examples that have a class, MAE/RMSE over the known distances
    let (_, outs) = headswap::reference::network::forward_graph(&layers, net.sources(), &to_f64(&data.x), data.n);
    let Some(Targets::Classes { y, .. }) = data.targets.head("scene") else { unreachable!() };
    let logits = &outs[4];
    let (mut correct, mut known) = (0, 0);
    for (i, &c) in y.iter().enumerate().filter(|&(_, &c)| c != IGNORE_CLASS) {
        let row = &logits[i * 4..i * 4 + 4];
        let best = (0..4).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        known += 1;
        correct += usize::from(best == c as usize);
    }
    let scene = m.head("scene").unwrap();
    assert_eq!(scene.accuracy, Some(correct as f64 / known as f64));
    let Some(Targets::Regression { y, .. }) = data.targets.head("distance") else { unreachable!() };
    let preds = &outs[5];
    let reg = m.head("distance").unwrap().regression.as_ref().unwrap();
    for j in 0..2 {
        let errs: Vec<f64> = (0..data.n).filter(|&i| !y[i * 2 + j].is_nan()).map(|i| preds[i * 2 + j] - y[i * 2 + j] as f64).collect();
        assert_eq!(reg.support[j], errs.len() as u64);
        let mae = errs.iter().map(|e| e.abs()).sum::<f64>() / errs.len() as f64;
        let rmse = (errs.iter().map(|e| e * e).sum::<f64>() / errs.len() as f64).sqrt();
        assert_close(&format!("MAE {j}"), &[reg.mae[j].unwrap() as f32], &[mae], Tolerance::F32);
        assert_close(&format!("RMSE {j}"), &[reg.rmse[j].unwrap() as f32], &[rmse], Tolerance::F32);
    }
    // per-label confusion at probability 0.5 (logit 0) over the known labels, n/a aware
    let Some(Targets::Labels { y, .. }) = data.targets.head("objects") else { unreachable!() };
    let logits = &outs[3];
    let mut counts = vec![0u32; 3 * 4];
    for i in 0..data.n {
        for j in 0..3 {
            let t = y[i * 3 + j];
            if t.is_nan() {
                continue;
            }
            let slot = match (logits[i * 3 + j] >= 0.0, t >= 0.5) {
                (true, true) => 0,   // TP
                (true, false) => 1,  // FP
                (false, false) => 2, // TN
                (false, true) => 3,  // FN
            };
            counts[j * 4 + slot] += 1;
        }
    }
    let want = headswap::kernels::metrics::LabelMetrics::from_counts(&counts, 3).unwrap();
    assert_eq!(m.head("objects").unwrap().labels.as_ref(), Some(&want));
}

#[test]
fn bad_heads_and_targets_are_refused_naming_the_head() {
    let gpu = gpu();
    let err = |r: headswap::Result<Network>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let unnamed = vec![Head::classes(2).named("a"), Head::labels(2)];
    assert!(err(Network::from_trunk_heads(&gpu, D, trunk(), Init::KaimingUniform, &unnamed, 1)).contains("head 1 has no name"));
    let twice = vec![Head::classes(2).named("a"), Head::labels(2).named("a")];
    assert!(err(Network::from_trunk_heads(&gpu, D, trunk(), Init::KaimingUniform, &twice, 1)).contains("two heads are named \"a\""));
    let negative = vec![Head::classes(2).named("a").weight(-1.0)];
    assert!(err(Network::from_trunk_heads(&gpu, D, trunk(), Init::KaimingUniform, &negative, 1)).contains("head \"a\""));

    let short = vec![Head::labels(2).named("a").pos_weight(vec![1.0])];
    assert!(
        err(Network::from_trunk_heads(&gpu, D, trunk(), Init::KaimingUniform, &short, 1))
            .contains("head \"a\": pos_weight has 1 values for 2 labels")
    );
    let on_classes = vec![Head::classes(2).named("a").bce_reduction(BceReduction::MeanAll)];
    assert!(err(Network::from_trunk_heads(&gpu, D, trunk(), Init::KaimingUniform, &on_classes, 1)).contains("for labels heads"));

    let net = net(&gpu, [1.0, 1.0, 1.0], 1);
    let trainer = Trainer::new(&gpu, TrainConfig::default());
    let eval_err = |data: &Dataset| trainer.evaluate(&net, data).err().map(|e| e.to_string()).unwrap_or_default();
    let good = data(6, 3);
    let with = |f: &dyn Fn(&mut Vec<HeadTargets>)| {
        let mut d = good.clone();
        let Targets::Heads(h) = &mut d.targets else { unreachable!() };
        f(h);
        d
    };
    let missing = with(&|h| h.retain(|h| h.name != "distance"));
    assert!(eval_err(&missing).contains("no targets for head \"distance\""), "{}", eval_err(&missing));
    let wrong_kind = with(&|h| h[1].targets = Targets::Labels { y: vec![0.0; 6 * 4], k: 4 });
    assert!(eval_err(&wrong_kind).contains("head \"scene\" is a classes head but its targets are labels"), "{}", eval_err(&wrong_kind));
    let short = with(&|h| h[2].targets = Targets::Regression { y: vec![0.0; 5 * 2], k: 2 });
    assert!(eval_err(&short).contains("head \"distance\""), "{}", eval_err(&short));
    let bad_class = with(&|h| h[1].targets = Targets::Classes { y: vec![0, 1, 7, 0, 1, 2], num_classes: 4 });
    assert!(eval_err(&bad_class).contains("head \"scene\": row 2: class 7"), "{}", eval_err(&bad_class));
    let one_target = Dataset { targets: Targets::Classes { y: vec![0; 6], num_classes: 4 }, ..good.clone() };
    assert!(eval_err(&one_target).contains("3 named heads"), "{}", eval_err(&one_target));
}

#[test]
fn a_network_of_named_heads_saves_and_loads_under_heads_dot_names() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.5, 2.0], 37);
    let dir = TempDir::new("multihead");
    let path = dir.path().join("net.safetensors");
    net.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let names = headswap::checkpoint::load(&path).unwrap().names().map(String::from).collect::<Vec<_>>();
    for n in ["heads.objects.0.weight", "heads.objects.2.bias", "heads.scene.weight", "heads.distance.bias"] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
    // the host-side half of the loader (what the fuzzer drives) reads it too
    let ckpt = headswap::checkpoint::load(&path).unwrap();
    assert_eq!(Network::check_architecture(&ckpt, "net").unwrap(), 6);
    let back = Network::load(&gpu, &path).unwrap();
    assert_eq!(back.heads(), net.heads());
    assert_eq!(back.sources(), net.sources());
    assert_eq!(back.module_names(), net.module_names());
    assert_eq!(back.values().unwrap(), net.values().unwrap());
    // and it trains on as the original does
    let data = data(8, 41);
    let cfg = TrainConfig { batch_size: 3, ..TrainConfig::default() };
    let (mut a, mut b) = (net, back);
    Trainer::new(&gpu, cfg.clone()).fit(&mut a, &data, 1).unwrap();
    Trainer::new(&gpu, cfg).fit(&mut b, &data, 1).unwrap();
    assert_eq!(a.values().unwrap(), b.values().unwrap());
}

#[test]
fn adding_removing_and_swapping_a_head_keeps_the_trunk_and_the_other_heads() {
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 43);
    let before = net.values().unwrap();
    let by_name = |net: &Network, name: &str| -> Vec<(Vec<f32>, Vec<f32>)> {
        net.head(name).unwrap().layers.clone().map(|i| net.layer_values(i).unwrap()).collect()
    };
    let objects = by_name(&net, "objects");
    let distance = by_name(&net, "distance");

    let report = net.add_head(Head::regression(1, RegressionLoss::Mse).named("speed").weight(0.25), 5).unwrap();
    assert_eq!(report.created.len(), 1, "{report}");
    assert_eq!(net.heads().iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["objects", "scene", "distance", "speed"]);
    assert_eq!(net.head("speed").unwrap().layers, 6..7);
    assert_eq!(net.sources()[6], vec![2]);
    assert_eq!(net.values().unwrap()[..6], before[..]);

    net.remove_head("scene").unwrap();
    assert_eq!(net.heads().iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["objects", "distance", "speed"]);
    assert_eq!(net.values().unwrap()[..2], before[..2], "the trunk");
    assert_eq!(by_name(&net, "objects"), objects);
    assert_eq!(by_name(&net, "distance"), distance);
    assert_eq!(net.module_names()[4], "heads.distance");

    net.swap_named_head("objects", Head::labels(5), 9).unwrap();
    let h = net.head("objects").unwrap();
    assert_eq!((h.outputs, h.layers.clone(), h.kind), (5, 2..3, HeadKind::Labels));
    assert_eq!(net.values().unwrap()[..2], before[..2], "the trunk");
    assert_eq!(by_name(&net, "distance"), distance);
    assert_eq!(net.sources(), [vec![0], vec![1], vec![2], vec![2], vec![2]]);

    // refused, leaving the network as it was
    let kept = net.values().unwrap();
    let msg = |r: headswap::Result<headswap::nn::HeadSwapReport>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(net.remove_head("scene")).contains("no head named \"scene\""));
    assert!(msg(net.add_head(Head::classes(2).named("speed"), 1)).contains("a head named \"speed\" already"));
    assert!(msg(net.add_head(Head::classes(2), 1)).contains("needs a name"));
    assert_eq!(net.values().unwrap(), kept);
}

#[test]
fn a_one_head_network_named_then_given_a_second_head_trains_both() {
    let gpu = gpu();
    let mut net = Network::from_trunk(&gpu, D, trunk(), Init::KaimingUniform, Head::labels(3).hidden(4, Activation::Tanh), 3).unwrap();
    let before = net.values().unwrap();
    net.name_head("objects").unwrap();
    assert_eq!(net.module_names(), ["0", "2", "heads.objects.0", "heads.objects.2"]);
    net.add_head(Head::classes(4).named("scene"), 2).unwrap();
    net.add_head(Head::regression(2, RegressionLoss::Huber(0.5)).named("distance"), 4).unwrap();
    assert_eq!(net.values().unwrap()[..4], before[..]);
    let data = data(10, 47);
    let mults = vec![Some(1.0); net.layers().len()];
    matches_reference_trainer(&mut net, &data, &mults, |t, net| {
        t.fit(net, &data, 2).unwrap();
    });
}

#[test]
fn a_frozen_head_keeps_its_weights_while_the_others_train_on_cached_features() {
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.7, 1.3], 53);
    let data = data(9, 59);
    let before = net.values().unwrap();
    // only the heads train, the first of them not: the trunk's features are still computed once
    let groups = headswap::train::ParamGroups::new().freeze("heads.objects").train("heads", 1.0);
    let mults: Vec<Option<f64>> = groups.resolve(&net).unwrap().into_iter().map(|m| m.map(f64::from)).collect();
    assert_eq!(mults, [None, None, None, None, Some(1.0), Some(1.0)]);
    matches_reference_trainer(&mut net, &data, &mults, |t, net| {
        let report = t.fine_tune_groups(net, &data, &groups, 2).unwrap();
        assert!(report.cached_features);
    });
    assert_eq!(net.values().unwrap()[..4], before[..4], "the trunk and the frozen head, bit for bit");
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
type RawTensor<'a> = (&'a str, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Writes a safetensors file of `x` `[n, 2]` and the given `(name, dtype, shape, bytes)` tensors
/// with the metadata `heads` (none: `None`).
fn write_file(path: &std::path::Path, n: usize, tensors: &[RawTensor<'_>], heads: Option<&str>) {
    use safetensors::tensor::TensorView;
    let x: Vec<u8> = (0..n * 2).flat_map(|i| (i as f32 * 0.1).to_le_bytes()).collect();
    let mut views = vec![("x".to_string(), TensorView::new(safetensors::Dtype::F32, vec![n, 2], &x).unwrap())];
    for (name, dt, shape, bytes) in tensors {
        views.push((name.to_string(), TensorView::new(*dt, shape.clone(), bytes).unwrap()));
    }
    let meta = heads.map(|h| std::collections::HashMap::from([("heads".to_string(), h.to_string())]));
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[test]
fn a_tensor_file_of_several_heads_reads_and_writes_y_dot_head_tensors() {
    use headswap::data::tensor_file;
    use safetensors::Dtype;
    let dir = TempDir::new("multihead-data");
    let path = dir.path().join("heads.safetensors");
    // as Python writes it: classes as i32 with −1, a [n] f64 regression target, labels with NaN
    let scene: Vec<u8> = [0i32, 2, -1, 1, 2].iter().flat_map(|c| c.to_le_bytes()).collect();
    let distance: Vec<u8> = [1.5f64, f64::NAN, -0.25, 3.0, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let objects = f32_bytes(&[1.0, 0.0, f32::NAN, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    let tensors = [
        ("y.objects", Dtype::F32, vec![5, 2], objects),
        ("y.scene", Dtype::I32, vec![5], scene),
        ("y.distance", Dtype::F64, vec![5], distance),
    ];
    write_file(&path, 5, &tensors, Some("objects:labels,scene:classes,distance:regression"));
    let ds = tensor_file::load(&path).unwrap();
    let Targets::Heads(heads) = &ds.targets else { panic!("expected targets of several heads, got {:?}", ds.targets) };
    assert_eq!(heads.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["objects", "scene", "distance"]);
    assert_eq!(ds.targets.head("scene"), Some(&Targets::Classes { y: vec![0, 2, IGNORE_CLASS, 1, 2], num_classes: 3 }));
    let Some(Targets::Regression { y, k: 1 }) = ds.targets.head("distance") else { panic!("distance: {:?}", ds.targets.head("distance")) };
    assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), [1.5f32, f32::NAN, -0.25, 3.0, 0.0].map(f32::to_bits));
    let Some(Targets::Labels { y, k: 2 }) = ds.targets.head("objects") else { panic!("objects") };
    assert!(y[2].is_nan() && y[3] == 1.0);

    // written back with names for the scenes and read again: the same bits
    let mut ds = ds;
    let Targets::Heads(heads) = &mut ds.targets else { unreachable!() };
    heads[1].label_names = vec!["street".into(), "highway".into(), "park".into()];
    let again = dir.path().join("again.safetensors");
    tensor_file::save(&again, &ds).unwrap();
    let back = tensor_file::load(&again).unwrap();
    assert_eq!(format!("{back:?}"), format!("{ds:?}"));

    // a network of those heads trains on it
    let gpu = gpu();
    let heads = [
        Head::labels(2).named("objects"),
        Head::classes(3).named("scene").weight(0.5),
        Head::regression(1, RegressionLoss::Mse).named("distance"),
    ];
    let mut net = Network::from_trunk_heads(&gpu, 2, Trunk::default(), Init::KaimingUniform, &heads, 1).unwrap();
    let report = Trainer::new(&gpu, TrainConfig { batch_size: 2, ..TrainConfig::default() }).fit(&mut net, &back, 2).unwrap();
    assert_eq!(report.epochs[1].train.heads.len(), 3);
    // the network learns the names of the outputs from the data
    assert_eq!(net.head("scene").unwrap().label_names.as_deref(), Some(&["street".to_string(), "highway".into(), "park".into()][..]));
    assert_eq!(net.head("objects").unwrap().label_names, None);
    assert!(report.epochs[1].train.loss.is_finite());
}

#[test]
fn bad_head_files_are_errors_naming_the_head_and_the_row() {
    use headswap::data::tensor_file;
    use safetensors::Dtype;
    let dir = TempDir::new("multihead-bad");
    let path = dir.path().join("bad.safetensors");
    let classes = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|c| c.to_le_bytes()).collect() };
    let err = |tensors: &[RawTensor<'_>], heads: &str| {
        write_file(&path, 3, tensors, Some(heads));
        tensor_file::load(&path).err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into())
    };
    let scene = ("y.scene", Dtype::I64, vec![3], classes(&[0, 1, 1]));
    let cases: Vec<(Vec<RawTensor<'_>>, &str, &str)> = vec![
        (
            vec![scene.clone()],
            "scene:classes,distance:regression",
            "head \"distance\" is listed in the metadata heads but the file has no tensor \"y.distance\"",
        ),
        (
            vec![("y.scene", Dtype::F32, vec![3, 2], f32_bytes(&[0.0; 6]))],
            "scene:classes",
            "head \"scene\" is a classes head but \"y.scene\" holds F32 values of shape [3, 2]",
        ),
        (
            vec![("y.objects", Dtype::I64, vec![3], classes(&[0, 1, 1]))],
            "objects:labels",
            "head \"objects\" is a labels head but \"y.objects\" holds I64",
        ),
        (
            vec![scene.clone(), ("y.distance", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0]))],
            "scene:classes,distance:regression",
            "head \"distance\": tensor \"y.distance\" has shape [2], but x has 3 rows",
        ),
        (vec![("y.scene", Dtype::I64, vec![3], classes(&[0, 1, -4]))], "scene:classes", "head \"scene\", row 2: class -4"),
        (
            vec![("y.objects", Dtype::F32, vec![3, 2], f32_bytes(&[0.0, 1.0, 1.0, 2.0, 0.0, 0.0]))],
            "objects:labels",
            "head \"objects\": row 1, label 1",
        ),
        (vec![scene.clone()], "scene:boxes", "head \"scene\" has kind \"boxes\""),
        (vec![scene.clone()], "scene:classes,scene:classes", "lists head \"scene\" twice"),
    ];
    for (tensors, heads, want) in cases {
        let got = err(&tensors, heads);
        assert!(got.contains(want), "{heads}: expected {want:?} in {got:?}");
        assert!(got.contains("bad.safetensors"), "the error names the file: {got}");
    }
    // a network's head without targets in the data, named
    write_file(&path, 3, &[scene], Some("scene:classes"));
    let ds = tensor_file::load(&path).unwrap();
    let gpu = gpu();
    let heads = [Head::classes(2).named("scene"), Head::labels(1).named("objects")];
    let net = Network::from_trunk_heads(&gpu, 2, Trunk::default(), Init::KaimingUniform, &heads, 1).unwrap();
    let e = Trainer::new(&gpu, TrainConfig::default()).evaluate(&net, &ds).unwrap_err().to_string();
    assert!(e.contains("no targets for head \"objects\""), "{e}");
}

#[test]
fn a_run_resumes_after_a_head_edit_with_the_other_layers_optimizer_state() {
    let gpu = gpu();
    let data = data(12, 61);
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 4, seed: 3, ..TrainConfig::default() };
    let mut a = net(&gpu, [1.0, 0.5, 2.0], 67);
    let mut trainer = Trainer::new(&gpu, cfg.clone());
    trainer.fit(&mut a, &data, 1).unwrap();
    let state = trainer.training_state().unwrap().clone();
    let mut b = a.try_clone().unwrap();
    let mut c = a.try_clone().unwrap();
    // a: the second epoch with the scene head's weight 0; b: with the scene head removed
    a.set_head_weight("scene", 0.0).unwrap();
    trainer.resume(&mut a, &data, &state, 2).unwrap();
    let before = b.module_names();
    let report = b.remove_head("scene").unwrap();
    let edited = state.after_head_edit(&before, &report, &b, &cfg.optimizer).unwrap();
    assert_eq!(edited.lr_mults.len(), 5);
    assert!(edited.optimizer_state.iter().all(|(n, _)| !n.starts_with("heads.scene")));
    Trainer::new(&gpu, cfg.clone()).resume(&mut b, &data, &edited, 2).unwrap();
    let (va, vb) = (a.values().unwrap(), b.values().unwrap());
    assert_eq!(va[..4], vb[..4], "the trunk and the objects head, bit for bit");
    assert_eq!(va[5], vb[4], "the distance head, bit for bit");

    // a swapped head starts from fresh optimizer buffers, the others keep theirs
    let before = c.module_names();
    let report = c.swap_named_head("distance", Head::regression(2, RegressionLoss::L1), 5).unwrap();
    assert_eq!(report.created_modules, ["heads.distance"]);
    let edited = state.after_head_edit(&before, &report, &c, &cfg.optimizer).unwrap();
    for (name, values) in &edited.optimizer_state {
        let saved = state.optimizer_state.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if name.starts_with("heads.distance.") {
            assert!(values.iter().all(|&v| v == 0.0), "{name} is fresh");
        } else {
            assert_eq!(Some(values), saved, "{name} is kept");
        }
    }
    let start = c.values().unwrap();
    Trainer::new(&gpu, cfg).resume(&mut c, &data, &edited, 2).unwrap();
    assert_ne!(c.values().unwrap()[5], start[5], "the new head trained");
}

#[test]
fn predict_heads_gives_each_heads_probabilities_or_values() {
    let gpu = gpu();
    let net = net(&gpu, [1.0, 0.5, 2.0], 71);
    let n = 7;
    let x = rand_range(73, n * D, -1.5, 1.5);
    // batches of 3: a partial last one
    let got = headswap::train::predict_heads(&net, &x, n, 3).unwrap();
    let values = net.values().unwrap();
    let (_, outs) = headswap::reference::network::forward_graph(&ref_layers(&net, &values), net.sources(), &to_f64(&x), n);
    assert_eq!(got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["objects", "scene", "distance"]);
    let sigmoid: Vec<f64> = outs[3].iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
    assert_close("objects", &got[0].1, &sigmoid, Tolerance::F32);
    let softmax: Vec<f64> = outs[4]
        .chunks(4)
        .flat_map(|r| {
            let s: f64 = r.iter().map(|v| v.exp()).sum();
            r.iter().map(move |v| v.exp() / s)
        })
        .collect();
    assert_close("scene", &got[1].1, &softmax, Tolerance::F32);
    assert_close("distance", &got[2].1, &outs[5], Tolerance::F32);
    assert!(headswap::train::predict(&net, &x, n, 3).unwrap_err().to_string().contains("predict_heads"));
}

/// The same deterministic run in PyTorch (`scripts/multihead_fixture.py`, float64): the network
/// of three heads loaded from its initial state_dict, trained 2 epochs with Adam on batches of
/// 4 in order, ends with PyTorch's parameters and epoch losses.
#[test]
fn a_short_run_equals_pytorchs() {
    use headswap::checkpoint::{self, Checkpoint, NamedTensor};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_multihead_train.safetensors");
    let torch = checkpoint::load(&path).unwrap();
    let get = |name: &str| torch.get(name).unwrap_or_else(|| panic!("{name} missing from the fixture")).clone();
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 1);
    let mut init = Checkpoint::new();
    for name in net.param_names() {
        let t = get(&format!("init.{name}"));
        init.push(NamedTensor::new(name, t.shape.clone(), t.data.clone()).unwrap()).unwrap();
    }
    let report = net.load_state_dict(&init, headswap::nn::LoadOptions { strict: true, ..Default::default() }, "fixture").unwrap();
    assert!(report.is_exact(), "{report}");
    let n = 10;
    let scene: Vec<u32> = get("y.scene").data.iter().map(|&c| if c < 0.0 { IGNORE_CLASS } else { c as u32 }).collect();
    let data = Dataset {
        x: get("x").data,
        n,
        d: D,
        input_shape: vec![D],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: get("y.objects").data, k: 3 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: get("y.distance").data, k: 2 }),
        ]),
        label_names: Vec::new(),
    };
    let cfg = TrainConfig { optimizer: Optimizer::adam(0.01), batch_size: 4, shuffle: false, ..TrainConfig::default() };
    let fit = Trainer::new(&gpu, cfg).fit(&mut net, &data, 2).unwrap();
    let losses: Vec<f32> = fit.epochs.iter().map(|e| e.train.loss as f32).collect();
    assert_close("epoch losses", &losses, &to_f64(&get("epoch_loss").data), Tolerance::F32);
    let trained = net.to_checkpoint().unwrap();
    for name in net.param_names() {
        let got = &trained.get(&name).unwrap().data;
        assert_close(&format!("{name} after training"), got, &to_f64(&get(&format!("final.{name}")).data), Tolerance::F32);
        let moved = got.iter().zip(&get(&format!("init.{name}")).data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(moved > 1e-3, "{name} trained (moved {moved})");
    }
}

#[test]
fn validation_and_early_stopping_score_every_head_on_cached_features() {
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 79);
    let data = data(20, 83);
    let cfg = TrainConfig { validation_fraction: 0.3, early_stopping: Some(1), batch_size: 4, ..TrainConfig::default() };
    let report = Trainer::new(&gpu, cfg).fine_tune(&mut net, &data, Freeze::Trunk, 3).unwrap();
    assert!(report.cached_features);
    for e in &report.epochs {
        let v = e.validation.as_ref().unwrap();
        assert_eq!(v.heads.len(), 3);
        let sum: f64 = v.heads.iter().map(|h| h.weighted_loss).sum();
        assert!((v.loss - sum).abs() <= 1e-12 * sum.abs().max(1.0), "the loss is the heads' Σ w·L");
        assert!(v.head("distance").unwrap().regression.as_ref().unwrap().mean_mae.is_some());
    }
    assert!(net.set_label_names(Some(vec!["a".into()])).is_err());
    net.set_head_label_names("scene", Some(vec!["street".into(), "road".into(), "park".into(), "yard".into()])).unwrap();
    assert!(net.set_head_label_names("scene", Some(vec!["street".into()])).is_err());
}

// ---- Uncertainty weighting (Kendall, Gal & Cipolla 2018): L = Σ_t exp(−s_t)·w_t·L_t + s_t ----

use headswap::gpu::Tensor;
use headswap::reference::network::loss_and_grads_heads_uncertainty;
use headswap::train::{HeadWeighting, gradients_weighted};

#[test]
fn uncertainty_scale_kernel_matches_the_reference_at_odd_sizes() {
    let gpu = gpu();
    for (case, &n) in [1usize, 7, 33, 127].iter().enumerate() {
        let seed = 300 + case as u64;
        let heads = 3;
        let s = rand_range(seed, heads, -2.0, 2.0);
        let loss = rand_range(seed + 1, 1, 0.0, 3.0);
        let g = rand_range(seed + 2, n, -1.0, 1.0);
        let log_var = Tensor::from_slice(&gpu, &[heads], &s).unwrap();
        let batch_loss = Tensor::from_slice(&gpu, &[1], &loss).unwrap();
        let dlogits = Tensor::from_slice(&gpu, &[n], &g).unwrap();
        let dlog_var = poisoned(&gpu, &[heads]);
        let k = case % heads;
        headswap::kernels::loss::uncertainty_scale(&gpu, &log_var, k, true, &batch_loss, &dlogits, &dlog_var).unwrap();
        let scale = (-(s[k] as f64)).exp();
        let want: Vec<f64> = g.iter().map(|&v| v as f64 * scale).collect();
        assert_close(&format!("n={n} scaled gradient"), &dlogits.download(&gpu).unwrap(), &want, Tolerance::F32);
        let got = dlog_var.download(&gpu).unwrap();
        assert_close(&format!("n={n} ds"), &got[k..k + 1], &[1.0 - scale * loss[0] as f64], Tolerance::F32);
        // only the head's own entry is written
        assert!(got.iter().enumerate().all(|(j, v)| j == k || v.is_nan()), "n={n}: {got:?}");
        // an inactive head (weight 0): ds = 0
        headswap::kernels::loss::uncertainty_scale(&gpu, &log_var, k, false, &batch_loss, &dlogits, &dlog_var).unwrap();
        assert_eq!(dlog_var.download(&gpu).unwrap()[k], 0.0);
    }
}

/// The network `net(w)` with the log-variances `s` set on its heads.
fn weighted_net(gpu: &Gpu, w: [f32; 3], s: [f32; 3], seed: u64) -> Network {
    let mut n = net(gpu, w, seed);
    for (name, s) in ["objects", "scene", "distance"].iter().zip(s) {
        n.set_head_log_var(name, Some(s)).unwrap();
    }
    n
}

#[test]
fn uncertainty_gradients_and_d_log_var_equal_central_differences_of_the_reference() {
    let gpu = gpu();
    // the scene head of weight 0 is left out of the loss, its s included
    for w in [[1.0, 0.5, 2.0], [1.0, 0.0, 2.0]] {
        let s = [0.3f32, -0.4, 0.7];
        let net = weighted_net(&gpu, w, s, 71);
        let data = data(7, 73);
        let layers = ref_layers(&net, &net.values().unwrap());
        let x = to_f64(&data.x);
        let heads = ref_heads(&net, &data, &all_rows(data.n));
        let s64 = to_f64(&s);
        let (want_loss, _, want, want_ds) = loss_and_grads_heads_uncertainty(&layers, net.sources(), &x, data.n, &heads, &s64);
        let (loss, got, ds) = gradients_weighted(&gpu, &net, &data, &BceSettings::default(), HeadWeighting::Uncertainty).unwrap();
        assert_close("loss", &[loss as f32], &[want_loss], Tolerance::F32);
        assert_close("dL/ds vs the reference", &ds, &want_ds, Tolerance::F32);
        let h = 1e-6;
        let loss_at = |layers: &[RefLayer], s: &[f64]| loss_and_grads_heads_uncertainty(layers, net.sources(), &x, data.n, &heads, s).0;
        let fd_s: Vec<f64> = (0..3)
            .map(|t| {
                let (mut up, mut down) = (s64.clone(), s64.clone());
                up[t] += h;
                down[t] -= h;
                (loss_at(&layers, &up) - loss_at(&layers, &down)) / (2.0 * h)
            })
            .collect();
        assert_close("dL/ds vs central differences", &ds, &fd_s, Tolerance::F32);
        if w[1] == 0.0 {
            assert_eq!(ds[1], 0.0, "a head of weight 0 is not in the loss");
        }
        for (i, ((gw, gb), (aw, ab))) in got.iter().zip(&want).enumerate() {
            let fd = |bias: bool, len: usize| -> Vec<f64> {
                (0..len)
                    .map(|j| {
                        let mut l = layers.clone();
                        let p = if bias { &mut l[i].b[j] } else { &mut l[i].w[j] };
                        *p += h;
                        let up = loss_at(&l, &s64);
                        let p = if bias { &mut l[i].b[j] } else { &mut l[i].w[j] };
                        *p -= 2.0 * h;
                        (up - loss_at(&l, &s64)) / (2.0 * h)
                    })
                    .collect()
            };
            assert_close(&format!("w={w:?} layer {i} dW vs central differences"), gw, &fd(false, aw.len()), Tolerance::F32);
            assert_close(&format!("w={w:?} layer {i} db vs central differences"), gb, &fd(true, ab.len()), Tolerance::F32);
            assert_close(&format!("w={w:?} layer {i} dW vs the reference"), gw, aw, Tolerance::F32);
            assert_close(&format!("w={w:?} layer {i} db vs the reference"), gb, ab, Tolerance::F32);
        }
    }
}

#[test]
fn uncertainty_weighting_follows_the_reference_optimizer_trajectory() {
    use headswap::reference::optim::adam_step;
    use std::cell::RefCell;
    let gpu = gpu();
    let (batch, epochs, seed) = (4, 2, 7);
    let mut net = weighted_net(&gpu, [1.0, 0.5, 2.0], [0.2, -0.3, 0.0], 79);
    let data = data(11, 83);
    let start = net.values().unwrap();
    // weight decay on the network's parameters, none on the log-variances (their own group)
    let adam = Adam { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: false };
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.05).weight_decay(0.01),
        batch_size: batch,
        seed,
        head_weighting: HeadWeighting::Uncertainty,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&gpu, cfg);
    let report = trainer.fit(&mut net, &data, epochs).unwrap();

    let sources = net.sources().to_vec();
    // the reference's log-variances and their Adam moments, updated once per step
    let s = RefCell::new((vec![0.2, -0.3, 0.0], vec![0.0; 3], vec![0.0; 3], 0u32));
    let s_adam = Adam { weight_decay: 0.0, ..adam };
    let grads = |layers: &[RefLayer], xb: &[f64], chunk: &[u32]| {
        let mut st = s.borrow_mut();
        let (_, _, g, ds) = loss_and_grads_heads_uncertainty(layers, &sources, xb, chunk.len(), &ref_heads(&net, &data, chunk), &st.0);
        let (p, m, v, t) = &mut *st;
        *t += 1;
        adam_step(p, &ds, m, v, &s_adam, *t);
        g
    };
    let all = vec![Some(1.0); net.layers().len()];
    let want = reference_train_with(&net.layers(), &start, &data, &grads, RefOpt::Adam(adam), &all, batch, epochs, seed, None);
    let tol = Tolerance { rel: 1e-5, abs: 1e-5 };
    for (i, ((gw, gb), (ww, wb))) in net.values().unwrap().iter().zip(&want).enumerate() {
        assert_close(&format!("layer {i} weight"), gw, ww, tol);
        assert_close(&format!("layer {i} bias"), gb, wb, tol);
    }
    let got_s: Vec<f32> = net.heads().iter().map(|h| h.log_var.unwrap()).collect();
    assert_close("learned log-variances", &got_s, &s.borrow().0, tol);
    // the report shows them: each head's learned weight exp(−s) at the last epoch
    let last = report.last().unwrap();
    for (h, s) in last.train.heads.iter().zip(&got_s) {
        assert_eq!(h.log_var, Some(*s as f64));
        assert_eq!(h.learned_weight(), Some((-(*s as f64)).exp()));
    }
}

#[test]
fn learned_log_variances_save_load_and_resume() {
    let gpu = gpu();
    let data = data(12, 89);
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.02),
        batch_size: 4,
        seed: 5,
        head_weighting: HeadWeighting::Uncertainty,
        ..TrainConfig::default()
    };
    // fixed weights never give a network log-variances, and its checkpoint has none
    let mut fixed = net(&gpu, [1.0, 0.5, 2.0], 97);
    Trainer::new(&gpu, TrainConfig { head_weighting: HeadWeighting::Fixed, ..cfg.clone() }).fit(&mut fixed, &data, 1).unwrap();
    assert!(fixed.heads().iter().all(|h| h.log_var.is_none()));

    let mut a = net(&gpu, [1.0, 0.5, 2.0], 97);
    let mut trainer = Trainer::new(&gpu, cfg.clone());
    trainer.fit(&mut a, &data, 1).unwrap();
    assert!(a.heads().iter().all(|h| h.log_var.is_some_and(|s| s != 0.0)), "{:?}", a.heads());
    let state = trainer.training_state().unwrap().clone();
    assert!(state.optimizer_state.iter().any(|(n, v)| n == "heads.scene.log_var.exp_avg" && v.len() == 1));
    let dir = TempDir::new("multihead_logvar");
    let path = dir.path().join("net.safetensors");
    a.save(&path, headswap::checkpoint::StorageDtype::F32).unwrap();
    let mut b = Network::load(&gpu, &path).unwrap();
    assert_eq!(b.heads(), a.heads(), "the log-variances come back bit for bit");
    // resuming both for a second epoch gives the same bits
    trainer.resume(&mut a, &data, &state, 2).unwrap();
    Trainer::new(&gpu, cfg.clone()).resume(&mut b, &data, &state, 2).unwrap();
    assert_eq!(a.values().unwrap(), b.values().unwrap());
    assert_eq!(a.heads(), b.heads());

    // a one-head network refuses the option with a readable error
    let mut one = Network::new(&gpu, &[D, 6], Head::classes(4), 1).unwrap();
    let d1 = Dataset { targets: Targets::Classes { y: vec![0; 12], num_classes: 4 }, ..data.clone() };
    let e = Trainer::new(&gpu, cfg).fit(&mut one, &d1, 1).unwrap_err().to_string();
    assert!(e.contains("named heads"), "{e}");
}

/// `scripts/multihead_fixture.py --uncertainty`: PyTorch (float64) training the fixture's network
/// under `Σ_t exp(−s_t)·w_t·L_t + s_t` with the log-variances an `nn.Parameter` in their own Adam
/// param group (no weight decay), from s = [0.2, −0.3, 0.1]: the same parameters and learned s.
#[test]
fn a_short_uncertainty_weighted_run_equals_pytorchs() {
    use headswap::checkpoint::{self, Checkpoint, NamedTensor};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_multihead_uncertainty.safetensors");
    let torch = checkpoint::load(&path).unwrap();
    let get = |name: &str| torch.get(name).unwrap_or_else(|| panic!("{name} missing from the fixture")).clone();
    let gpu = gpu();
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 1);
    let mut init = Checkpoint::new();
    for name in net.param_names() {
        let t = get(&format!("init.{name}"));
        init.push(NamedTensor::new(name, t.shape.clone(), t.data.clone()).unwrap()).unwrap();
    }
    net.load_state_dict(&init, headswap::nn::LoadOptions { strict: true, ..Default::default() }, "fixture").unwrap();
    for (name, s) in ["objects", "scene", "distance"].iter().zip(get("init.log_var").data) {
        net.set_head_log_var(name, Some(s)).unwrap();
    }
    let scene: Vec<u32> = get("y.scene").data.iter().map(|&c| if c < 0.0 { IGNORE_CLASS } else { c as u32 }).collect();
    let data = Dataset {
        x: get("x").data,
        n: 10,
        d: D,
        input_shape: vec![D],
        targets: Targets::Heads(vec![
            HeadTargets::new("objects", Targets::Labels { y: get("y.objects").data, k: 3 }),
            HeadTargets::new("scene", Targets::Classes { y: scene, num_classes: 4 }),
            HeadTargets::new("distance", Targets::Regression { y: get("y.distance").data, k: 2 }),
        ]),
        label_names: Vec::new(),
    };
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.01),
        batch_size: 4,
        shuffle: false,
        head_weighting: HeadWeighting::Uncertainty,
        ..TrainConfig::default()
    };
    Trainer::new(&gpu, cfg).fit(&mut net, &data, 2).unwrap();
    let trained = net.to_checkpoint().unwrap();
    for name in net.param_names() {
        let got = &trained.get(&name).unwrap().data;
        assert_close(&format!("{name} after training"), got, &to_f64(&get(&format!("final.{name}")).data), Tolerance::F32);
    }
    let s: Vec<f32> = net.heads().iter().map(|h| h.log_var.unwrap()).collect();
    let want = to_f64(&get("final.log_var").data);
    assert_close("learned log-variances", &s, &want, Tolerance::F32);
    // they moved: the comparison is not of the starting values
    assert!(s.iter().zip(&get("init.log_var").data).all(|(a, b)| (a - b).abs() > 1e-2), "{s:?}");
}

#[test]
fn a_head_edit_keeps_the_other_heads_log_variance_state_and_starts_the_new_ones() {
    let gpu = gpu();
    let data = data(12, 101);
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.01),
        batch_size: 4,
        seed: 3,
        head_weighting: HeadWeighting::Uncertainty,
        ..TrainConfig::default()
    };
    let mut net = net(&gpu, [1.0, 0.5, 2.0], 103);
    let mut trainer = Trainer::new(&gpu, cfg.clone());
    trainer.fit(&mut net, &data, 1).unwrap();
    let state = trainer.training_state().unwrap().clone();
    let before = net.module_names();
    let kept = net.head("objects").unwrap().log_var;
    let report = net.swap_named_head("distance", Head::regression(2, RegressionLoss::L1), 5).unwrap();
    assert_eq!(net.head("distance").unwrap().log_var, None, "a new head has no learned weight yet");
    assert_eq!(net.head("objects").unwrap().log_var, kept);
    let edited = state.after_head_edit(&before, &report, &net, &cfg.optimizer).unwrap();
    for (name, values) in edited.optimizer_state.iter().filter(|(n, _)| n.contains(".log_var.")) {
        let saved = state.optimizer_state.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if name.starts_with("heads.distance.") {
            assert_eq!(values, &vec![0.0], "{name} is fresh");
        } else {
            assert_eq!(Some(values), saved, "{name} is kept");
        }
    }
    assert_eq!(edited.optimizer_state.iter().filter(|(n, _)| n.contains(".log_var.")).count(), 6);
    Trainer::new(&gpu, cfg).resume(&mut net, &data, &edited, 2).unwrap();
    assert!(net.head("distance").unwrap().log_var.is_some_and(|s| s != 0.0));
}
