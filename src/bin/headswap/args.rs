//! The command line's grammar: one clap struct per command, with every option's default in its
//! `--help`, and the value checks that need nothing but the value itself. Checks that relate two
//! options, or an option and a file, live with the commands.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use headswap::kernels::Activation;
use headswap::train::{BatchNormMode, Freeze, HeadWeighting, Schedule};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// What `--data` accepts (a macro, so that the top-level help can extend it with `concat!`).
macro_rules! data_help {
    () => {
        "\
DATA: synthetic-a[:N] (which shape), synthetic-b[:N] (which of 4 shapes are in a scene),
      digits (real digits, one per 16x16 canvas), digits-scenes[:N] (which of 2,3,5,7 appear),
      a folder of class sub-folders of images, a CSV manifest (first line a header path,label_1,...;
      then one image path and 1/0/empty per label per line; a header path,head:label,...,head
      groups the columns by named head), or a .safetensors file
      with x [n, d] and y [n] (classes) or [n, k] (labels, NaN = unknown); predict reads x alone"
    };
}

/// Shown under every command that reads `--data`.
const DATA_HELP: &str = data_help!();

const TOP_HELP: &str = concat!(
    data_help!(),
    "
      eval scores built-in sets on held-out data: the test digits, or synthetic examples from a
      seed stream training never uses; files and folders are scored whole

`headswap <command> --help` lists a command's options and their defaults."
);

#[derive(Parser, Debug)]
#[command(
    name = "headswap",
    version,
    about = "headswap — transfer and multi-task learning on any GPU (wgpu)",
    arg_required_else_help = true,
    after_help = TOP_HELP,
    // `--out a --out b` means b, as a shell alias plus one more flag would give it
    args_override_self = true,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain → head-swap → fine-tune against training from scratch; --street: multi-task
    ///
    /// With --street, the multi-task demo instead: one network with three heads against one
    /// network per task, on synthetic street scenes
    Demo(DemoArgs),
    /// The GPU adapter chosen and the limits the engine uses
    Info(InfoArgs),
    /// Train a new network on DATA
    Pretrain(PretrainArgs),
    /// Swap a model's head for one that fits DATA, then fine-tune it
    #[command(alias = "fine-tune")]
    Finetune(FinetuneArgs),
    /// A fully specified deterministic run from given initial weights and a tensor file
    Train(TrainArgs),
    /// Continue a run saved with --save-state
    Resume(ResumeArgs),
    /// Score a model on DATA
    Eval(EvalArgs),
    /// Classify or label image files, or write the logits (and features) of DATA to a file
    Predict(PredictArgs),
    /// Check every matrix product against a float64 reference, then time it
    Bench(BenchArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoData {
    Synthetic,
    Digits,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoTrunk {
    Mlp,
    Cnn,
    Resnet,
    /// mlp and cnn
    Both,
    /// mlp, cnn and resnet
    All,
}

#[derive(Args, Debug)]
#[command(after_help = "--data digits reads ../shared/data/digits, or --digits-dir, or the folder in HEADSWAP_DIGITS_DIR")]
pub struct DemoArgs {
    /// Synthetic shapes or real handwritten digits
    #[arg(long, value_enum, value_name = "synthetic|digits", hide_possible_values = true, default_value_t = DemoData::Synthetic)]
    pub data: DemoData,
    /// The trunks to compare
    #[arg(long, value_enum, value_name = "mlp|cnn|resnet|both|all", hide_possible_values = true, default_value_t = DemoTrunk::Both)]
    pub trunk: DemoTrunk,
    /// Where the digits are (with --data digits)
    #[arg(long, value_name = "DIR")]
    pub digits_dir: Option<PathBuf>,
    /// The multi-task demo instead: street scenes, one network with three heads (objects,
    /// scene type, object count) against one network per task, on a small and a large trunk
    #[arg(long, conflicts_with_all = ["data", "trunk", "digits_dir", "sizes"])]
    pub street: bool,
    /// Task-B training-set sizes to compare at
    #[arg(long, value_name = "N,..", value_delimiter = ',', value_parser = at_least_one, default_value = "40,150,600")]
    pub sizes: Vec<usize>,
    /// Seeds the data, the networks and the shuffles
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub seed: u64,
    /// A smaller, faster version
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Write index.html with charts into DIR (one sub-folder per trunk; with --street, DIR itself)
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print the adapter and limits as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Mlp,
    Cnn,
}

/// `--arch` for `train --init`: a plain PyTorch state_dict read as Linear layers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainArch {
    Mlp,
}

/// `--arch` where a pretrained model file is read: a plain PyTorch state_dict of Linear layers,
/// or a torchvision ResNet's (`torchvision.models.resnet18().state_dict()`, keys as torchvision
/// names them).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArch {
    Mlp,
    Resnet18,
    Resnet34,
    Resnet50,
}

impl From<PlainArch> for ModelArch {
    fn from(a: PlainArch) -> ModelArch {
        match a {
            PlainArch::Mlp => ModelArch::Mlp,
        }
    }
}

/// What `--arch` says about a plain state_dict (one help text for finetune, eval and predict).
const MODEL_ARCH_HELP: &str =
    "Read the model file as a plain PyTorch state_dict: mlp (nn.Linear layers), resnet18, resnet34 or resnet50 (torchvision's)";

/// `--normalize`: how image pixels become inputs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Normalize {
    /// Resized to --size, values in [0, 1].
    #[default]
    None,
    /// torchvision's ImageNet evaluation transform at --size: resize the shorter side to
    /// round(max(W, H)·256/224), centre-crop, ImageNet mean/std; RGB.
    Imagenet,
}

impl Normalize {
    pub fn name(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Imagenet => "imagenet",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    Sgd,
    Adam,
    Adamw,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    Softmax,
    Bce,
}

/// The options every training command shares.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Training options")]
pub struct TrainingOptions {
    /// Examples per step
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one)]
    pub batch: usize,
    #[arg(long, value_enum, value_name = "sgd|adam|adamw", hide_possible_values = true, default_value_t = OptimizerName::Sgd)]
    pub optimizer: OptimizerName,
    /// Learning rate [default: 0.05 with sgd, 0.001 with adam and adamw]
    #[arg(long, value_name = "F", value_parser = finite_non_negative)]
    pub lr: Option<f32>,
    /// SGD momentum (sgd only)
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = finite_non_negative)]
    pub momentum: f32,
    /// Nesterov momentum (sgd only)
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay [default: 0, 0.01 with adamw]
    #[arg(long, value_name = "F", value_parser = finite_non_negative)]
    pub weight_decay: Option<f32>,
    /// constant, step:EVERY:GAMMA, cosine or cosine:WARMUP_STEPS
    #[arg(long, value_name = "SPEC", default_value = "constant", value_parser = schedule)]
    pub schedule: Schedule,
    /// Fraction of the data held out for validation each epoch
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = fraction)]
    pub val: f32,
    /// Stop after PATIENCE epochs without a lower val loss, keep the best (needs --val)
    #[arg(long, value_name = "PATIENCE", value_parser = patience)]
    pub early_stop: Option<usize>,
    /// Seeds shuffles, the validation split, new layers and synthetic data
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Keep the data's order (no shuffle each epoch)
    #[arg(long)]
    pub no_shuffle: bool,
    /// Weight of each label's positives in the loss, one per label
    #[arg(long, value_name = "F,..", value_delimiter = ',', value_parser = positive)]
    pub pos_weight: Option<Vec<f32>>,
    /// Probability above which a label counts as present, for F1
    #[arg(long, value_name = "F", default_value_t = 0.5, value_parser = probability)]
    pub threshold: f32,
    /// BatchNorm statistics: auto (the batch's when every layer trains, else the running ones), train or frozen
    #[arg(long, value_name = "auto|train|frozen", default_value = "auto", value_parser = batch_norm)]
    pub batch_norm: BatchNormMode,
    /// Augment every batch on the GPU: torchvision's RandomResizedCrop and RandomHorizontalFlip (needs --no-cache with a frozen trunk)
    #[arg(long)]
    pub augment: bool,
    /// Run a frozen trunk every step instead of computing its outputs once
    #[arg(long)]
    pub no_cache: bool,
    /// Named heads' losses: fixed (Σ w·L) or uncertainty (Σ exp(−s)·w·L + s, s learned per head)
    #[arg(long, value_name = "MODE", default_value = "fixed", value_parser = head_weighting)]
    pub head_weighting: HeadWeighting,
    /// Under mpirun: sum the upper layers' gradients over the ranks while the lowest trainable layer's backward runs (same results)
    #[arg(long)]
    pub overlap_exchange: bool,
    /// Gradient accumulation: run each step's --batch as K micro-batches (one pass each, gradients summed on the GPU), one update (and under mpirun one exchange) per step; same results up to rounding
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least_one)]
    pub accumulate: usize,
    /// Keep what the run only reads on the GPU in f16 (half the bytes; arithmetic stays f32): the frozen trunk's cached features, and with the whole trunk frozen its weights (the saved model keeps them in f16); needs a frozen trunk
    #[arg(long)]
    pub frozen_f16: bool,
}

/// How images are read (folders and manifests; `--size` also synthetic data).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Image options")]
pub struct ImageArgs {
    /// Size images are resized to (synthetic data: square, 8x8 to 256x256) [default: 16x16]
    #[arg(long, value_name = "WxH", value_parser = size)]
    pub size: Option<(u32, u32)>,
    /// Read images in colour (3 channels) instead of gray
    #[arg(long)]
    pub rgb: bool,
    /// none, or imagenet: torchvision's evaluation transform (resize the shorter side to size·256/224, centre crop, ImageNet mean/std; RGB) [default: none]
    #[arg(long, value_enum, value_name = "none|imagenet", hide_possible_values = true)]
    pub normalize: Option<Normalize>,
}

/// `ImageArgs` where a model's recorded layout is the default.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Image options")]
pub struct ModelImageArgs {
    /// Size images are resized to [default: the size the model was trained at]
    #[arg(long, value_name = "WxH", value_parser = size)]
    pub size: Option<(u32, u32)>,
    /// Read images in colour (3 channels) [default: as the model was trained]
    #[arg(long)]
    pub rgb: bool,
    /// none, or imagenet: torchvision's evaluation transform (resize the shorter side to size·256/224, centre crop, ImageNet mean/std; RGB) [default: as the model was trained]
    #[arg(long, value_enum, value_name = "none|imagenet", hide_possible_values = true)]
    pub normalize: Option<Normalize>,
}

impl From<&ModelImageArgs> for ImageArgs {
    fn from(a: &ModelImageArgs) -> Self {
        ImageArgs { size: a.size, rgb: a.rgb, normalize: a.normalize }
    }
}

#[derive(Args, Debug)]
#[command(after_help = DATA_HELP)]
pub struct PretrainArgs {
    /// The data to train on (see DATA below)
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// Where to write the trained model
    #[arg(long, value_name = "CKPT")]
    pub out: PathBuf,
    /// Dense layers, or 3x3 convolutions and max pooling, then dense layers
    #[arg(long, value_enum, value_name = "mlp|cnn", hide_possible_values = true, default_value_t = Arch::Mlp)]
    pub arch: Arch,
    /// Hidden layer widths [default: 128,64 for mlp, 64 for cnn]
    #[arg(long, value_name = "N,..", value_delimiter = ',', value_parser = at_least_one)]
    pub layers: Option<Vec<usize>>,
    /// Convolution channels (--arch cnn)
    #[arg(long, value_name = "N,..", value_delimiter = ',', value_parser = at_least_one, default_value = "8,16")]
    pub channels: Vec<usize>,
    /// Between layers: relu, leaky_relu[:SLOPE], sigmoid, tanh, gelu, relu6, silu, hardswish, hardsigmoid or identity
    #[arg(long, value_name = "NAME", default_value = "relu", value_parser = activation)]
    pub activation: Activation,
    /// Passes over the data
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = epochs)]
    pub epochs: usize,
    /// Also write a training state (optimizer, epoch, options) that `resume` continues
    #[arg(long, value_name = "STATE")]
    pub save_state: Option<PathBuf>,
    /// Write PNG charts of the training curves (and per-label F1) into DIR
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the run as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Store the model in half precision
    #[arg(long)]
    pub f16: bool,
    #[command(flatten)]
    pub train: TrainingOptions,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Args, Debug)]
#[command(after_help = DATA_HELP)]
pub struct FinetuneArgs {
    /// The model to start from
    #[arg(long, value_name = "CKPT")]
    pub from: String,
    /// The data to fine-tune on (see DATA below)
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// Where to write the fine-tuned model
    #[arg(long, value_name = "CKPT")]
    pub out: PathBuf,
    /// trunk (head only), all, last:K (head + K trunk layers), auto (trunk below 1,000 examples)
    #[arg(long, value_name = "POLICY", default_value = "auto", value_parser = freeze)]
    pub freeze: Freeze,
    /// Train the head alone for HEAD_EPOCHS, then everything for --epochs (instead of --freeze)
    #[arg(long, value_name = "HEAD_EPOCHS", value_parser = clap::value_parser!(usize))]
    pub recipe: Option<usize>,
    /// A hidden layer of N units in the new head
    #[arg(long, value_name = "N", value_parser = head_hidden)]
    pub head_hidden: Option<usize>,
    /// With a model of named heads: replace head NAME by a fresh one, KIND classes, labels or regression[:mse|l1|huber[:DELTA]], N outputs; the others are kept
    #[arg(long, value_name = "NAME=KIND:N", value_parser = crate::heads::parse_swap_head)]
    pub swap_head: Option<(String, crate::heads::SwapHead)>,
    /// With a model of named heads: a head's loss weight (repeatable) [default: the weights --from records]
    #[arg(long, value_name = "NAME=W", value_parser = crate::heads::parse_head_weight)]
    pub head_weight: Vec<(String, f32)>,
    /// Learning-rate multiplier of the trunk when it trains [default: 1, 0.1 with --recipe]
    #[arg(long, value_name = "F", value_parser = finite_non_negative)]
    pub trunk_lr_mult: Option<f32>,
    #[arg(long, value_enum, value_name = "mlp|resnet18|resnet34|resnet50", hide_possible_values = true, help = MODEL_ARCH_HELP)]
    pub arch: Option<ModelArch>,
    /// In the new head's hidden layer, and between the layers of --arch mlp
    #[arg(long, value_name = "NAME", default_value = "relu", value_parser = activation)]
    pub activation: Activation,
    /// Passes over the data
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = epochs)]
    pub epochs: usize,
    /// Write PNG charts of the training curves (and per-label F1) into DIR
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the run as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Store the model in half precision
    #[arg(long)]
    pub f16: bool,
    #[command(flatten)]
    pub train: TrainingOptions,
    #[command(flatten)]
    pub image: ModelImageArgs,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The initial weights
    #[arg(long, value_name = "CKPT")]
    pub init: String,
    /// A .safetensors file with x [n, d] and y [n] (classes) or [n, k] (labels), or y.<head> per named head
    #[arg(long, value_name = "FILE.safetensors")]
    pub data: String,
    /// Where to write the trained model
    #[arg(long, value_name = "CKPT")]
    pub out: PathBuf,
    /// softmax: one class per example; bce: independent labels (per-label sigmoid); not with y.<head> targets, whose heads come from --init
    #[arg(long, value_enum, value_name = "softmax|bce", hide_possible_values = true)]
    pub loss: Option<Loss>,
    /// A named head's loss weight (repeatable) [default: the weights --init records]
    #[arg(long, value_name = "NAME=W", value_parser = crate::heads::parse_head_weight)]
    pub head_weight: Vec<(String, f32)>,
    /// Read --init as a plain PyTorch state_dict of nn.Linear layers
    #[arg(long, value_enum, value_name = "mlp", hide_possible_values = true)]
    pub arch: Option<PlainArch>,
    /// Activation between the layers of --arch mlp
    #[arg(long, value_name = "NAME", default_value = "relu", value_parser = activation)]
    pub activation: Activation,
    /// Passes over the data
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = epochs)]
    pub epochs: usize,
    /// Also write a training state (optimizer, epoch, options) that `resume` continues
    #[arg(long, value_name = "STATE")]
    pub save_state: Option<PathBuf>,
    /// Print the run as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Store the model in half precision
    #[arg(long)]
    pub f16: bool,
    #[command(flatten)]
    pub train: TrainingOptions,
}

#[derive(Args, Debug)]
#[command(after_help = "The saved run's training options apply unless given again;\n\
                        the defaults shown are for a state file that records none.")]
pub struct ResumeArgs {
    /// The training state written by --save-state
    #[arg(long, value_name = "STATE")]
    pub state: PathBuf,
    /// The same data the saved run trained on
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// The total number of epochs, counting those already done
    #[arg(long, value_name = "TOTAL", value_parser = epochs)]
    pub epochs: usize,
    /// Where to write the trained model
    #[arg(long, value_name = "CKPT")]
    pub out: PathBuf,
    /// Also write a new training state
    #[arg(long, value_name = "STATE")]
    pub save_state: Option<PathBuf>,
    /// Print the run as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Store the model in half precision
    #[arg(long)]
    pub f16: bool,
    #[command(flatten)]
    pub train: TrainingOptions,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Args, Debug)]
#[command(after_help = DATA_HELP)]
pub struct EvalArgs {
    /// The model to score
    #[arg(long, value_name = "CKPT")]
    pub model: String,
    /// The data to score it on; built-in sets are scored on held-out data (see DATA below)
    #[arg(long, value_name = "DATA")]
    pub data: String,
    /// Probability above which a label counts as present
    #[arg(long, value_name = "F", default_value_t = 0.5, value_parser = probability)]
    pub threshold: f32,
    /// Seeds the held-out synthetic data
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, value_name = "mlp|resnet18|resnet34|resnet50", hide_possible_values = true, help = MODEL_ARCH_HELP)]
    pub arch: Option<ModelArch>,
    /// Activation between the layers of --arch mlp
    #[arg(long, value_name = "NAME", default_value = "relu", value_parser = activation)]
    pub activation: Activation,
    /// Print the scores as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub image: ModelImageArgs,
}

#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Images are read at the size, channels and normalisation the model was trained at.\n\
     --data DATA --out FILE.safetensors writes logits [n, k] (and features [n, d]) for every example of DATA,\n\
     in its order; a .safetensors DATA needs only x.\n\n",
    data_help!()
))]
pub struct PredictArgs {
    /// The model
    #[arg(long, value_name = "CKPT")]
    pub model: String,
    /// Image files (PNG or JPEG)
    #[arg(value_name = "IMAGE", required_unless_present = "data", conflicts_with = "data")]
    pub images: Vec<String>,
    /// Every example of DATA instead of image files (see DATA below); needs --out
    #[arg(long, value_name = "DATA", requires = "out")]
    pub data: Option<String>,
    /// Write the logits [n, k] of --data's examples to this safetensors file (logits.<head> per named head)
    #[arg(long, value_name = "FILE.safetensors", requires = "data")]
    pub out: Option<PathBuf>,
    /// Also write the trunk's outputs, the features the head reads, as features [n, d]
    #[arg(long, requires = "out")]
    pub features: bool,
    #[arg(long, value_enum, value_name = "mlp|resnet18|resnet34|resnet50", hide_possible_values = true, help = MODEL_ARCH_HELP)]
    pub arch: Option<ModelArch>,
    /// Activation between the layers of --arch mlp
    #[arg(long, value_name = "NAME", default_value = "relu", value_parser = activation)]
    pub activation: Activation,
    /// Examples per forward pass (--data)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one)]
    pub batch: usize,
    /// Probability above which a label counts as present (label heads)
    #[arg(long, value_name = "F", default_value_t = 0.5, value_parser = probability)]
    pub threshold: f32,
    /// Print the predictions as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub image: ModelImageArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Smaller workloads, fewer repetitions
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Run only these workloads: k1, t1, t2, t3, c1, c2 (ResNet-18, minutes; never run by default), c2-64 (C2's 64×64 rows alone: features in f32 and the fine-tune step), dp (mpirun -np 1,2,4 of this binary; needs --features distributed and mpirun), comma-separated [default: k1,t1,t2,t3,c1,dp]
    #[arg(long, value_name = "LIST")]
    pub only: Option<String>,
    /// Seeds the data, the networks and the shuffles
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<String>,
    #[command(subcommand)]
    pub kernel: Option<BenchKernel>,
}

#[derive(Subcommand, Debug)]
pub enum BenchKernel {
    /// Time one kernel on this adapter at a shape you choose: every variant checked, then timed
    Kernel(BenchKernelArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelOp {
    Matmul,
    Conv2d,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  headswap bench kernel matmul --shape 4096x4096x4096 --form nn --variant all\n  headswap bench kernel conv2d --shape 32x64x56x56 --filters 64 --kernel 3 --padding 1\n  headswap bench kernel conv2d --shape 32x96x56x56 --filters 96 --kernel 3 --padding 1 --groups 96"
)]
pub struct BenchKernelArgs {
    /// The kernel family
    #[arg(value_enum, value_name = "matmul|conv2d", hide_possible_values = true)]
    pub op: KernelOp,
    /// matmul: C[M×N] = A[M×K]·B[K×N] as MxNxK; conv2d: the input as NxCxHxW
    #[arg(long, value_name = "SHAPE")]
    pub shape: String,
    /// matmul: nn, nt (C = A·Bᵀ) or tn (C = Aᵀ·B)
    #[arg(long, value_name = "nn|nt|tn", default_value = "nn")]
    pub form: String,
    /// conv2d: output channels
    #[arg(long, value_name = "O")]
    pub filters: Option<usize>,
    /// conv2d: the square kernel's size
    #[arg(long, value_name = "K")]
    pub kernel: Option<usize>,
    /// conv2d: stride
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub stride: usize,
    /// conv2d: zero padding on every side
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub padding: usize,
    /// conv2d: channel groups (dividing C and O; C = O = G is depthwise)
    #[arg(long, value_name = "G", default_value_t = 1)]
    pub groups: usize,
    /// matmul: a variant's name or all; conv2d: direct, im2col or all
    #[arg(long, value_name = "NAME|all", default_value = "all")]
    pub variant: String,
    /// matmul: also time the product with A, B or both stored in f16 (f32 arithmetic), beside f32
    #[arg(long, value_name = "f32|f16a|f16b|f16ab", default_value = "f32")]
    pub storage: String,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Fewer timed repetitions
    #[arg(long)]
    pub quick: bool,
    /// Seeds the operands
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

/// The options the user typed for the command, long name → raw value (`None` for a switch):
/// what `--save-state` records and what `resume` knows was given now rather than defaulted.
#[derive(Debug, Clone, Default)]
pub struct Given(pub BTreeMap<String, Option<String>>);

impl Given {
    pub fn of(matches: &ArgMatches) -> Given {
        let mut given = BTreeMap::new();
        let Some((name, sub)) = matches.subcommand() else { return Given(given) };
        let cli = Cli::command();
        let Some(cmd) = cli.find_subcommand(name) else { return Given(given) };
        for arg in cmd.get_arguments() {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
            if sub.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let value = if arg.get_action().takes_values() {
                let raw: Vec<String> = sub.get_raw(id).into_iter().flatten().map(|v| v.to_string_lossy().into_owned()).collect();
                Some(raw.join(","))
            } else {
                None
            };
            given.insert(long.to_string(), value);
        }
        Given(given)
    }

    pub fn has(&self, long: &str) -> bool {
        self.0.contains_key(long)
    }
}

/// Parses `argv` (program name first) into the command and what was typed.
pub fn parse(argv: &[OsString]) -> Result<(Cli, Given), clap::Error> {
    let matches = Cli::command().try_get_matches_from(argv)?;
    let given = Given::of(&matches);
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    Ok((cli, given))
}

// ---- value parsers: each message completes clap's "invalid value 'V' for '--flag <V>': ..." ----

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--epochs`, at least 1: zero epochs would save an untrained model as if it were trained.
fn epochs(s: &str) -> Result<usize, String> {
    at_least_one(s)
}

fn patience(s: &str) -> Result<usize, String> {
    at_least_one(s).map_err(|e| format!("{e} (the number of epochs without improvement to wait)"))
}

fn head_hidden(s: &str) -> Result<usize, String> {
    at_least_one(s).map_err(|e| format!("{e} (leave --head-hidden out for a head without a hidden layer)"))
}

fn float(s: &str) -> Result<f32, String> {
    s.trim().parse::<f32>().map_err(|e| e.to_string())
}

fn finite_non_negative(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err("must be a finite number ≥ 0".into()) }
}

fn positive(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err("values must be positive numbers".into()) }
}

/// A probability strictly between 0 and 1 (at 0 or 1 every label is decided).
fn probability(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if v > 0.0 && v < 1.0 { Ok(v) } else { Err("must be between 0 and 1 (exclusive)".into()) }
}

fn fraction(s: &str) -> Result<f32, String> {
    let v = float(s)?;
    if (0.0..1.0).contains(&v) { Ok(v) } else { Err("must be in [0, 1)".into()) }
}

fn activation(s: &str) -> Result<Activation, String> {
    Activation::parse(s)
        .ok_or_else(|| "not one of relu, leaky_relu[:SLOPE], sigmoid, tanh, gelu, relu6, silu, hardswish, hardsigmoid, identity".into())
}

fn head_weighting(s: &str) -> Result<HeadWeighting, String> {
    HeadWeighting::parse(s).ok_or_else(|| "must be fixed or uncertainty".into())
}

fn batch_norm(s: &str) -> Result<BatchNormMode, String> {
    BatchNormMode::parse(s).ok_or_else(|| "must be auto, train or frozen".into())
}

fn freeze(s: &str) -> Result<Freeze, String> {
    Freeze::parse(s).ok_or_else(|| "must be trunk, all, last:K or auto".into())
}

fn size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("must look like 16x16")?;
    let w: u32 = w.parse().map_err(|_| format!("bad width {w:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height {h:?}"))?;
    if w == 0 || h == 0 || w > 4096 || h > 4096 {
        return Err("must be between 1x1 and 4096x4096".into());
    }
    Ok((w, h))
}

fn schedule(spec: &str) -> Result<Schedule, String> {
    let bad_step = || "step:EVERY:GAMMA takes EVERY ≥ 1 epochs and a GAMMA > 0".to_string();
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["constant"] => Ok(Schedule::Constant),
        ["step", every, gamma] => {
            let every_epochs: usize = every.parse().map_err(|_| bad_step())?;
            let gamma: f32 = gamma.parse().map_err(|_| bad_step())?;
            if every_epochs == 0 || !(gamma.is_finite() && gamma > 0.0) {
                return Err(bad_step());
            }
            Ok(Schedule::Step { every_epochs, gamma })
        }
        ["cosine"] => Ok(Schedule::Cosine { warmup_steps: 0, min_lr: 0.0 }),
        ["cosine", warmup] => {
            let warmup_steps = warmup.parse().map_err(|_| "cosine:WARMUP takes a number of steps".to_string())?;
            Ok(Schedule::Cosine { warmup_steps, min_lr: 0.0 })
        }
        _ => Err("unknown schedule (constant, step:EVERY:GAMMA, cosine or cosine:WARMUP)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
