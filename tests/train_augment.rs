//! Training with GPU augmentation (`TrainConfig::augment`): every step's batch is the reference's
//! RandomResizedCrop + flip of the step's images (the trajectory equals the float64 reference
//! trainer's fed the reference augmentation, several steps per submission or one), reruns are
//! bit-identical, and it is refused — saying why — where the trunk's features would be cached,
//! and for a network that does not read images.
mod common;
use common::trainer::{RefOpt, reference_train_augmented};
use common::*;
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::kernels::Activation;
use headswap::nn::{CnnBuilder, Head, HeadKind, Init, LayerSpec, Network};
use headswap::reference::optim::Sgd;
use headswap::train::{Augment, Freeze, Optimizer, TrainConfig, Trainer};

const CHW: [usize; 3] = [2, 9, 7];

fn data(n: usize, seed: u64) -> Dataset {
    let d = CHW.iter().product();
    let mut r = Rng::new(seed);
    Dataset {
        x: rand_range(seed + 1, n * d, -1.0, 1.0),
        n,
        d,
        input_shape: CHW.to_vec(),
        targets: Targets::Classes { y: (0..n).map(|_| r.below(3) as u32).collect(), num_classes: 3 },
        label_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

/// A network, its layers, its wiring and its initial values.
type Built = (Network, Vec<LayerSpec>, Vec<Vec<usize>>, Vec<(Vec<f32>, Vec<f32>)>);

fn net(seed: u64) -> Built {
    let [c, h, w] = CHW;
    let trunk = CnnBuilder::new(c, h, w).conv(4, 3, 1, 1, Activation::Tanh).global_avg_pool().build_graph().unwrap();
    let head = vec![LayerSpec::Dense(headswap::nn::DenseSpec { inputs: 4, outputs: 3, activation: Activation::Identity })];
    let all: Vec<LayerSpec> = trunk.layers.iter().chain(&head).copied().collect();
    let mut rng = Rng::new(seed);
    let values: Vec<_> = all.iter().map(|s| Init::KaimingUniform.layer(s, &mut rng)).collect();
    let net = Network::from_graph_layers(&gpu(), trunk, head, HeadKind::Classes, &values).unwrap();
    let sources = net.sources().to_vec();
    (net, all, sources, values)
}

#[test]
fn augmented_training_follows_the_reference_trajectory() {
    let data = data(10, 3);
    let a = Augment::torchvision();
    let mut results = Vec::new();
    for per_submission in [16, 1] {
        let (mut net, specs, sources, values) = net(5);
        let cfg = TrainConfig {
            optimizer: Optimizer::sgd(0.1),
            batch_size: 4,
            seed: 11,
            augment: Some(a),
            steps_per_submission: per_submission,
            ..Default::default()
        };
        Trainer::new(&gpu(), cfg).fit(&mut net, &data, 2).unwrap();
        let want = reference_train_augmented(
            &specs,
            &sources,
            &values,
            &data,
            RefOpt::Sgd(Sgd { lr: 0.1, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }),
            &vec![Some(1.0); specs.len()],
            4,
            2,
            11,
            Some((a, CHW)),
        );
        let got = net.values().unwrap();
        for (i, ((gw, gb), (ww, wb))) in got.iter().zip(&want).enumerate() {
            assert_close(
                &format!("layer {i} weight after 2 epochs ({per_submission} steps per submission)"),
                gw,
                ww,
                Tolerance { rel: 1e-4, abs: 1e-5 },
            );
            assert_close(&format!("layer {i} bias"), gb, wb, Tolerance { rel: 1e-4, abs: 1e-5 });
        }
        results.push(got);
    }
    assert_eq!(results[0], results[1], "staged and one-step submissions train the same bits");
    // the augmentation changed the trajectory: without it the weights end elsewhere
    let (mut plain, ..) = net(5);
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.1), batch_size: 4, seed: 11, ..Default::default() };
    Trainer::new(&gpu(), cfg).fit(&mut plain, &data, 2).unwrap();
    assert_ne!(plain.values().unwrap(), results[0]);
}

#[test]
fn augmentation_is_refused_where_features_would_be_cached_or_nothing_reads_images() {
    let data = data(6, 4);
    let (mut n1, ..) = net(1);
    let cfg = TrainConfig { augment: Some(Augment::torchvision()), batch_size: 3, ..Default::default() };
    let err = Trainer::new(&gpu(), cfg.clone()).fine_tune(&mut n1, &data, Freeze::Trunk, 1).unwrap_err().to_string();
    assert!(err.contains("cached") && err.contains("cache_features = false"), "{err}");
    // with the cache off, the frozen trunk runs every step on the augmented images
    let before = n1.layer_values(0).unwrap();
    let cfg_nocache = TrainConfig { cache_features: false, ..cfg.clone() };
    let report = Trainer::new(&gpu(), cfg_nocache).fine_tune(&mut n1, &data, Freeze::Trunk, 2).unwrap();
    assert!(!report.cached_features);
    assert_eq!(n1.layer_values(0).unwrap(), before, "the frozen trunk stays");
    // a network whose first layer is dense reads no images
    let mut mlp = Network::new(&gpu(), &[data.d, 5], Head::classes(3), 1).unwrap();
    let err = Trainer::new(&gpu(), cfg).fit(&mut mlp, &data, 1).unwrap_err().to_string();
    assert!(err.contains("does not read [C, H, W] images"), "{err}");
}
