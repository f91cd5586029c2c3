//! The float64 reference trainer for trajectory tests: the trainer's shuffles (one permutation
//! per epoch from `Rng::new(seed)`), the same batches, per-layer learning-rate multipliers
//! (`None` = frozen), any wiring, dropout's masks (from the seed, the step and the batch's
//! position).
use headswap::Rng;
use headswap::data::{Dataset, Targets};
use headswap::nn::LayerSpec;
use headswap::reference::layers::dropout_mask;
use headswap::reference::network::{RefGrads, RefLayer, RefLoss, loss_and_grads_graph};
use headswap::reference::optim::{Adam, Sgd, adam_step, sgd_step};

#[derive(Clone, Copy, Debug)]
pub enum RefOpt {
    Sgd(Sgd),
    Adam(Adam),
}

/// Trains `specs` (with `values` and wiring `sources`) on class data as the GPU trainer would and
/// returns every layer's (weight, bias).
#[allow(clippy::too_many_arguments)]
pub fn reference_train(
    specs: &[LayerSpec],
    sources: &[Vec<usize>],
    values: &[(Vec<f32>, Vec<f32>)],
    data: &Dataset,
    opt: RefOpt,
    mults: &[Option<f64>],
    batch: usize,
    epochs: usize,
    seed: u64,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    reference_train_augmented(specs, sources, values, data, opt, mults, batch, epochs, seed, None)
}

/// [`reference_train`] with every batch augmented first (`augment`: the settings and the
/// images' `[C, H, W]`), as `TrainConfig::augment` does: step `t`'s draws at the batch's offset.
#[allow(clippy::too_many_arguments)]
pub fn reference_train_augmented(
    specs: &[LayerSpec],
    sources: &[Vec<usize>],
    values: &[(Vec<f32>, Vec<f32>)],
    data: &Dataset,
    opt: RefOpt,
    mults: &[Option<f64>],
    batch: usize,
    epochs: usize,
    seed: u64,
    augment: Option<(headswap::train::Augment, [usize; 3])>,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let Targets::Classes { y, .. } = &data.targets else { panic!("the reference trainer takes class data") };
    let grads = |layers: &[RefLayer], xb: &[f64], chunk: &[u32]| {
        let yb: Vec<u32> = chunk.iter().map(|&i| y[i as usize]).collect();
        loss_and_grads_graph(layers, sources, xb, chunk.len(), &RefLoss::Softmax(yb)).1
    };
    reference_train_with(specs, values, data, &grads, opt, mults, batch, epochs, seed, augment)
}

/// The gradients of a batch: `(layers, the batch's inputs, its rows of the data set)`.
pub type BatchGrads<'a> = dyn Fn(&[RefLayer], &[f64], &[u32]) -> RefGrads + 'a;

/// [`reference_train_augmented`] with the gradients of a batch from `grads(layers, x, rows of
/// the batch)` (any loss: several heads, masks).
#[allow(clippy::too_many_arguments)]
pub fn reference_train_with(
    specs: &[LayerSpec],
    values: &[(Vec<f32>, Vec<f32>)],
    data: &Dataset,
    grads_of: &BatchGrads<'_>,
    opt: RefOpt,
    mults: &[Option<f64>],
    batch: usize,
    epochs: usize,
    seed: u64,
    augment: Option<(headswap::train::Augment, [usize; 3])>,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let mut layers: Vec<RefLayer> = specs.iter().zip(values).map(|(sp, (w, b))| RefLayer::new(*sp, f64s(w), f64s(b))).collect();
    let mut state: Vec<[Vec<f64>; 4]> =
        layers.iter().map(|l| [vec![0.0; l.w.len()], vec![0.0; l.w.len()], vec![0.0; l.b.len()], vec![0.0; l.b.len()]]).collect();
    let d = data.d;
    let mut rng = Rng::new(seed);
    let mut t = 0;
    for _ in 0..epochs {
        let order = rng.permutation(data.n);
        for (c, chunk) in order.chunks(batch).enumerate() {
            let m = chunk.len();
            let mut xb: Vec<f64> = chunk.iter().flat_map(|&i| f64s(&data.x[i as usize * d..(i as usize + 1) * d])).collect();
            if let Some((a, [ch, h, w])) = &augment {
                xb = headswap::reference::augment::augment(a, seed, t + 1, (c * batch) as u32, *ch, *h, *w, &xb);
            }
            // dropout: this step's masks made explicit (step t + 1, the batch at c·batch of the order)
            for l in layers.iter_mut() {
                if let LayerSpec::Dropout(dr) = l.spec {
                    l.w = dropout_mask(seed, t + 1, (c * batch) as u32, m, dr.features, dr.p as f64);
                }
            }
            let grads = grads_of(&layers, &xb, chunk);
            t += 1;
            for (li, (gw, gb)) in grads.iter().enumerate() {
                let Some(mult) = mults[li] else { continue };
                let [s0, s1, s2, s3] = &mut state[li];
                let l = &mut layers[li];
                match opt {
                    RefOpt::Sgd(c) => {
                        let c = Sgd { lr: c.lr * mult, ..c };
                        sgd_step(&mut l.w, gw, s0, &c, t);
                        sgd_step(&mut l.b, gb, s2, &c, t);
                    }
                    RefOpt::Adam(c) => {
                        let c = Adam { lr: c.lr * mult, ..c };
                        adam_step(&mut l.w, gw, s0, s1, &c, t);
                        adam_step(&mut l.b, gb, s2, s3, &c, t);
                    }
                }
            }
        }
    }
    // a dropout layer has no parameters (its `w` held the last mask)
    layers.into_iter().map(|l| if matches!(l.spec, LayerSpec::Dropout(_)) { (Vec::new(), l.b) } else { (l.w, l.b) }).collect()
}
