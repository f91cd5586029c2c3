//! The `headswap` command line. Every failure is one readable line on stderr and a non-zero exit
//! (2 for a usage mistake, 1 for anything else); logs go to stderr under `RUST_LOG`.

use headswap::checkpoint::{self, Checkpoint, StorageDtype};
use headswap::data::{self, Dataset, ImageOptions, Targets};
use headswap::demo::{self, DemoConfig, DemoData, Trunk};
use headswap::kernels::Activation;
use headswap::kernels::metrics::OrNa;
use headswap::nn::{Head, HeadKind, Network};
use headswap::train::{FitReport, Freeze, Optimizer, Progress, Schedule, TrainConfig, Trainer, TrainingState};
use headswap::{Error, Gpu};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

const USAGE: &str = "\
headswap — transfer and multi-task learning on any GPU (wgpu)

usage:
  headswap demo      [--data synthetic|digits] [--trunk mlp|cnn|both] [--digits-dir DIR] [--sizes 40,150,600]
                     [--seed N (default 7)] [--quick] [--json] [--report DIR]
  headswap info      [--json]
  headswap pretrain  --data DATA --out CKPT [--arch mlp|cnn] [--layers 128,64] [--channels 8,16]
                     [--activation relu] [training options]
  headswap finetune  --from CKPT --data DATA --out CKPT [--freeze trunk|all|last:K|auto | --recipe HEAD_EPOCHS]
                     [--head-hidden N] [--trunk-lr-mult F] [--arch mlp] [training options]
  headswap train     --init CKPT --data FILE.safetensors --out CKPT --loss softmax|bce [--arch mlp] [training options]
  headswap resume    --state STATE --data DATA --epochs TOTAL --out CKPT [training options]
  headswap eval      --model CKPT --data DATA [--threshold F] [--seed N] [--arch mlp] [--json]
  headswap predict   --model CKPT IMAGE... [--json]
  headswap bench     [--quick] [--json] [--only k1|t1|t2|t3|c1]

DATA: synthetic-a[:N] (which shape), synthetic-b[:N] (which of 4 shapes are in a scene),
      digits (real digits, one per 16x16 canvas), digits-scenes[:N] (which of 2,3,5,7 appear),
      a folder of class sub-folders of images, a CSV manifest (first line a header path,label_1,...;
      then one image path and 1/0/empty per label per line), or a .safetensors file
      with x [n, d] and y [n] (classes) or [n, k] (labels, NaN = unknown)
      eval scores built-in sets on held-out data: the test digits, or synthetic examples from a
      seed stream training never uses; files and folders are scored whole
image options (folders and manifests; --size also synthetic, square): --size 16x16 --rgb
training options: --epochs N --batch N --optimizer sgd|adam|adamw --lr F --momentum F --nesterov
      --weight-decay F --schedule constant|step:EVERY:GAMMA|cosine[:WARMUP] --val F --early-stop PATIENCE (needs --val)
      --seed N --no-shuffle --pos-weight F,F,.. (labels) --threshold F --f16 --json
      --save-state STATE (pretrain, train, resume: weights + optimizer state + these options, to resume from)
      --report DIR (demo, pretrain, finetune: PNG charts of the curves and per-label F1)
--arch mlp (finetune, train, eval): read a plain PyTorch state_dict of nn.Linear layers, --activation between";

/// A CLI failure: a usage mistake, a library error, or a run that must not be saved.
enum CliError {
    Usage(String),
    Lib(Error),
    /// A failure the CLI found itself (e.g. a diverged run), already phrased for the user.
    Failed(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Lib(e)
    }
}

type CliResult<T> = Result<T, CliError>;

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn failed(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
}

/// Set once stdout turns out to be a closed pipe; later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout. A closed pipe (`headswap info | head -1`) is not a failure: the
/// reader has what it wanted, so the rest of the output is dropped and the command still finishes
/// its work (a training run still saves its checkpoint). Any other write error is reported.
fn emit(line: &str) -> CliResult<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::Io { path: "stdout".into(), source: e }.into()),
        Ok(()) => Ok(()),
    }
}

/// `println!` through [`emit`]: `outln!("...")?`.
macro_rules! outln {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

/// `--flag value` and `--switch` arguments after the command, plus positionals.
#[derive(Clone)]
struct Args {
    cmd: String,
    flags: BTreeMap<String, Option<String>>,
    positional: Vec<String>,
    used: std::cell::RefCell<Vec<String>>,
    /// A flag given last with no value. Reported only if the command takes it, so that
    /// `info --foo` says "does not take --foo" rather than "--foo needs a value".
    missing_value: Option<String>,
}

const SWITCHES: &[&str] = &["quick", "json", "rgb", "nesterov", "no-shuffle", "f16", "help"];

impl Args {
    fn parse(argv: Vec<String>) -> CliResult<Args> {
        let mut it = argv.into_iter();
        let cmd = it.next().ok_or_else(|| usage("no command given"))?;
        let mut flags = BTreeMap::new();
        let mut positional = Vec::new();
        let mut missing_value = None;
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                let value = if SWITCHES.contains(&name.as_str()) {
                    inline
                } else {
                    match inline.or_else(|| it.next()) {
                        Some(v) => Some(v),
                        None => {
                            missing_value = Some(name.clone());
                            None
                        }
                    }
                };
                flags.insert(name, value);
            } else {
                positional.push(a);
            }
        }
        Ok(Args { cmd, flags, positional, used: Default::default(), missing_value })
    }

    /// These arguments with `saved` filling in every flag not given now (`resume`: the saved
    /// run's options, which flags given on the command line override).
    fn with_saved(&self, saved: &BTreeMap<String, Option<String>>) -> Args {
        let mut merged = self.clone();
        for (k, v) in saved {
            merged.flags.entry(k.clone()).or_insert_with(|| v.clone());
        }
        merged
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.used.borrow_mut().push(name.to_string());
        self.flags.get(name).and_then(|v| v.as_deref())
    }
    fn has(&self, name: &str) -> bool {
        self.used.borrow_mut().push(name.to_string());
        self.flags.contains_key(name)
    }
    fn required(&self, name: &str) -> CliResult<&str> {
        self.get(name).ok_or_else(|| {
            if self.missing_value.as_deref() == Some(name) {
                usage(format!("--{name} needs a value"))
            } else {
                usage(format!("{} needs --{name}", self.cmd))
            }
        })
    }
    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> CliResult<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| usage(format!("--{name}: cannot read {v:?}"))),
        }
    }
    fn list<T: std::str::FromStr>(&self, name: &str) -> CliResult<Option<Vec<T>>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .split(',')
                .map(|p| p.trim().parse().map_err(|_| usage(format!("--{name}: cannot read {p:?} in {v:?}"))))
                .collect::<CliResult<Vec<T>>>()
                .map(Some),
        }
    }
    /// [`Args::list`] of sizes that must all be at least 1 (layer widths, channel counts).
    fn sizes(&self, name: &str) -> CliResult<Option<Vec<usize>>> {
        let v: Option<Vec<usize>> = self.list(name)?;
        if v.as_ref().is_some_and(|v| v.contains(&0)) {
            return Err(usage(format!("--{name}: every value must be at least 1")));
        }
        Ok(v)
    }

    /// Fails on any flag the command did not read: a typo must not be silently ignored.
    fn finish(&self) -> CliResult<()> {
        let used = self.used.borrow();
        if let Some(unknown) = self.flags.keys().find(|k| !used.contains(k)) {
            return Err(usage(format!("{} does not take --{unknown}", self.cmd)));
        }
        if let Some(name) = &self.missing_value {
            return Err(usage(format!("--{name} needs a value")));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    // Mesa's implicit Vulkan "device select" layer probes for a Wayland display and prints
    // "error: XDG_RUNTIME_DIR is invalid" on a headless machine, which reads like our failure.
    // headswap chooses its adapter itself, so the layer is not needed.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: first statement of main, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv[0] == "--help" || argv[0] == "-h" || argv[0] == "help" {
        let _ = emit(USAGE);
        return if argv.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let result = Args::parse(argv).and_then(|args| {
        if args.has("help") {
            return emit(USAGE);
        }
        match args.cmd.as_str() {
            "demo" => cmd_demo(&args),
            "info" => cmd_info(&args),
            "pretrain" => cmd_pretrain(&args),
            "finetune" | "fine-tune" => cmd_finetune(&args),
            "train" => cmd_train(&args),
            "resume" => cmd_resume(&args),
            "eval" => cmd_eval(&args),
            "predict" => cmd_predict(&args),
            "bench" => cmd_bench(&args),
            other => Err(usage(format!("unknown command {other:?}"))),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m} (see `headswap --help`)");
            ExitCode::from(2)
        }
        Err(CliError::Lib(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn gpu() -> CliResult<Gpu> {
    Gpu::new().map_err(|e| match (e, std::env::var("WGPU_ADAPTER_NAME")) {
        (Error::NoAdapter { .. }, Ok(name)) if !name.trim().is_empty() => no_adapter_named(&name),
        (e, _) => e.into(),
    })
}

/// `WGPU_ADAPTER_NAME` matched nothing: name every adapter on every backend asked for, so the
/// user can pick a name that works (the library's message lists only the last backend tried,
/// and suggests installing a driver, which does not help here).
fn no_adapter_named(name: &str) -> CliError {
    let backends = headswap::gpu::adapter::requested_backends();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let found: Vec<String> = pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|a| {
            let info = a.get_info();
            format!("{} ({:?})", info.name, info.backend)
        })
        .collect();
    let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
    failed(format!("no GPU adapter's name contains WGPU_ADAPTER_NAME={name:?}; adapters found: {found}"))
}

fn cmd_info(args: &Args) -> CliResult<()> {
    let json = args.has("json");
    args.finish()?;
    let s = gpu()?.summary();
    if json {
        let v = serde_json::json!({
            "adapter": s.name, "backend": s.backend, "device_type": s.device_type, "driver": s.driver,
            "driver_info": s.driver_info, "max_storage_buffer_binding_size": s.max_storage_buffer_binding_size,
            "max_buffer_size": s.max_buffer_size, "max_storage_buffers_per_shader_stage": s.max_storage_buffers_per_shader_stage,
            "max_compute_workgroup_size": s.max_compute_workgroup_size,
            "max_compute_invocations_per_workgroup": s.max_compute_invocations_per_workgroup,
            "shader_f16": s.shader_f16, "subgroups": s.subgroups, "timestamp_queries": s.timestamp_queries,
        });
        outln!("{v}")
    } else {
        outln!("{s}")
    }
}

fn cmd_demo(args: &Args) -> CliResult<()> {
    let data = match args.get("data").unwrap_or("synthetic") {
        "synthetic" => DemoData::Synthetic,
        "digits" => DemoData::Digits(args.get("digits-dir").map(PathBuf::from)),
        other => return Err(usage(format!("--data must be synthetic or digits, not {other:?}"))),
    };
    let mut cfg = DemoConfig { data, ..DemoConfig::default() };
    if let Some(s) = args.list("sizes")? {
        cfg.sizes = s;
    }
    cfg.seed = args.parsed("seed", cfg.seed)?;
    cfg.quick = args.has("quick");
    let trunks = match args.get("trunk").unwrap_or("both") {
        "mlp" => vec![Trunk::Mlp],
        "cnn" => vec![Trunk::Cnn],
        "both" => vec![Trunk::Mlp, Trunk::Cnn],
        other => return Err(usage(format!("--trunk must be mlp, cnn or both, not {other:?}"))),
    };
    let json = args.has("json");
    let report_dir = report_dir(args)?;
    args.finish()?;
    let gpu = gpu()?;
    let mut reports = Vec::new();
    for trunk in trunks {
        let cfg = DemoConfig { trunk, ..cfg.clone() };
        let report = demo::run(&gpu, &cfg, &mut |line| eprintln!("{line}"))?;
        if let Some(dir) = &report_dir {
            let sub = dir.join(if trunk == Trunk::Mlp { "mlp" } else { "cnn" });
            let files = headswap::report::demo_report(&sub, &report)?;
            eprintln!("report: {}", files.last().map_or(sub.clone(), |p| p.clone()).display());
        }
        if !json {
            outln!("\n{report}")?;
        }
        reports.push(report);
    }
    if json {
        outln!("[{}]", reports.iter().map(|r| r.to_json()).collect::<Vec<_>>().join(","))
    } else {
        outln!("\n{}", demo::side_by_side(&reports))
    }
}

/// Where a data set comes from, which decides what the image options mean for it and whether a
/// model trained on it can read image files (`predict`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DataKind {
    Synthetic,
    Digits,
    /// A folder of class sub-folders or a CSV manifest: images read at `--size`.
    Images,
    /// A `.safetensors` file of feature vectors: no images involved.
    Tensor,
}

/// Which part of a built-in data set to draw: training commands take the training part, `eval`
/// the held-out part, so that it never scores examples a model was trained on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Split {
    Train,
    HeldOut,
}

/// A data set as loaded from `--data`.
struct Loaded {
    data: Dataset,
    kind: DataKind,
}

const BUILT_IN: &str = "synthetic-a[:N], synthetic-b[:N], digits, digits-scenes[:N]";

/// A built-in data set named by `spec`: `(name, count)`. The name must match exactly, so a typo
/// such as `synthetic-abc` is an error rather than `synthetic-a`.
fn built_in(spec: &str) -> CliResult<Option<(&str, Option<usize>)>> {
    let (name, count) = match spec.split_once(':') {
        Some((name, n)) => (name, Some(n)),
        None => (spec, None),
    };
    let known = ["synthetic-a", "synthetic-b", "digits", "digits-scenes"];
    if !known.contains(&name) {
        let looks_built_in = name.starts_with("synthetic") || name.starts_with("digits");
        if looks_built_in && !Path::new(spec).exists() {
            return Err(usage(format!("unknown built-in data set {spec:?} (built-in: {BUILT_IN})")));
        }
        return Ok(None);
    }
    let count = match count {
        None => None,
        Some(_) if name == "digits" => return Err(usage("--data digits takes no count: it is every digit of the split")),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(usage(format!("{spec:?}: the count after ':' must be a number of at least 1"))),
        },
    };
    Ok(Some((name, count)))
}

fn data_kind(spec: &str) -> CliResult<DataKind> {
    Ok(match built_in(spec)? {
        Some((name, _)) if name.starts_with("synthetic") => DataKind::Synthetic,
        Some(_) => DataKind::Digits,
        None if spec.ends_with(".safetensors") => DataKind::Tensor,
        None => DataKind::Images,
    })
}

/// `--size` / `--rgb` for data of `kind`. They shape images read from files; synthetic data is
/// drawn square and gray at any `--size` from 8 to 256; digits and tensor files have a fixed
/// layout, so the options would silently do nothing there (and be recorded in the checkpoint).
fn image_options(args: &Args, kind: DataKind) -> CliResult<ImageOptions> {
    let size = args.get("size").map(parse_size).transpose()?;
    let rgb = args.has("rgb");
    match kind {
        DataKind::Images => {
            let (w, h) = size.unwrap_or((16, 16));
            Ok(if rgb { ImageOptions::rgb(w, h) } else { ImageOptions::gray(w, h) })
        }
        DataKind::Synthetic => {
            if rgb {
                return Err(usage("--rgb applies only to image folders and CSV manifests; synthetic data is gray"));
            }
            let (w, h) = size.unwrap_or((16, 16));
            let range = data::synthetic::MIN_SIZE..=data::synthetic::MAX_SIZE;
            if w != h || !range.contains(&(w as usize)) {
                return Err(usage(format!(
                    "synthetic data is drawn square, from {0}x{0} to {1}x{1}; --size {w}x{h} is not",
                    range.start(),
                    range.end()
                )));
            }
            Ok(ImageOptions::gray(w, h))
        }
        DataKind::Digits | DataKind::Tensor => {
            if size.is_some() || rgb {
                let what = if kind == DataKind::Digits { "the built-in digits (16x16 gray)" } else { "a .safetensors file" };
                return Err(usage(format!("--size and --rgb apply only to image folders and CSV manifests, not to {what}")));
            }
            Ok(ImageOptions::gray(16, 16))
        }
    }
}

fn parse_size(s: &str) -> CliResult<(u32, u32)> {
    let (w, h) = s.split_once('x').ok_or_else(|| usage(format!("--size must look like 16x16, not {s:?}")))?;
    let w: u32 = w.parse().map_err(|_| usage(format!("--size: bad width {w:?}")))?;
    let h: u32 = h.parse().map_err(|_| usage(format!("--size: bad height {h:?}")))?;
    if w == 0 || h == 0 || w > 4096 || h > 4096 {
        return Err(usage("--size must be between 1x1 and 4096x4096"));
    }
    Ok((w, h))
}

/// The seed `eval` draws synthetic data from: a stream of its own, derived from `--seed`, that the
/// training commands (which use `--seed` itself) do not draw from.
fn held_out_seed(seed: u64) -> u64 {
    seed ^ 0xE7A1_5EED_0000_0000
}

/// Loads `--data` (see the usage text), the `split` part of a built-in set.
fn load_data(args: &Args, split: Split, seed: u64) -> CliResult<Loaded> {
    let spec = args.required("data")?;
    let kind = data_kind(spec)?;
    let opts = image_options(args, kind)?;
    let data = match built_in(spec)? {
        Some((name, count)) => load_built_in(name, count, &opts, split, seed)?,
        None => load_file(spec, &opts)?,
    };
    data.validate()?;
    Ok(Loaded { data, kind })
}

fn load_built_in(name: &str, count: Option<usize>, opts: &ImageOptions, split: Split, seed: u64) -> CliResult<Dataset> {
    let seed = if split == Split::HeldOut { held_out_seed(seed) } else { seed };
    let size = opts.size.0 as usize;
    Ok(match name {
        "synthetic-a" => data::synthetic::try_shapes_task_a(count.unwrap_or(12000), size, seed)?,
        "synthetic-b" => data::synthetic::try_scenes_task_b(count.unwrap_or(500), size, seed)?,
        _ => {
            let dir = data::digits::default_dir()
                .ok_or_else(|| Error::InvalidInput(format!("the digits data set was not found; set {}", data::digits::ENV_DIR)))?;
            let (train, test) = data::digits::fixed_split(&data::digits::load(&dir)?);
            let digits = if split == Split::HeldOut { test } else { train };
            if name == "digits" {
                data::digits::single_as_scene_input(&digits, seed)?
            } else {
                data::digits::scenes(&digits, count.unwrap_or(500), data::digits::TASK_B_DIGITS, seed)?
            }
        }
    })
}

fn load_file(spec: &str, opts: &ImageOptions) -> CliResult<Dataset> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "safetensors") {
        Ok(data::tensor_file::load(path)?)
    } else if path.extension().is_some_and(|e| e == "csv") {
        Ok(data::manifest::load(path, opts)?)
    } else if path.is_dir() {
        Ok(data::image_folder::load(path, opts)?)
    } else if !path.exists() {
        Err(Error::Io {
            path: spec.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory, and not a built-in data set name"),
        }
        .into())
    } else {
        Err(usage(format!("{spec:?}: expected a built-in data set, a folder, a .csv manifest or a .safetensors file")))
    }
}

/// The line `eval` prints about what it scores, so nobody mistakes training data for a test.
fn describe_split(spec: &str, kind: DataKind, data: &Dataset) -> String {
    match kind {
        DataKind::Digits => format!("evaluating on held-out digits: {} examples from the fixed split's test digits", data.n),
        DataKind::Synthetic => format!("evaluating on held-out synthetic data: {} examples from a seed stream training never uses", data.n),
        DataKind::Images | DataKind::Tensor => format!("evaluating on all {} examples of {spec}", data.n),
    }
}

/// `--epochs`, at least 1: zero epochs would save an untrained model as if it were trained.
fn epochs(args: &Args, default: usize) -> CliResult<usize> {
    let e = args.parsed("epochs", default)?;
    if e == 0 {
        return Err(usage("--epochs must be at least 1"));
    }
    Ok(e)
}

/// `--threshold`: a probability strictly between 0 and 1 (at 0 or 1 every label is decided).
fn threshold(args: &Args) -> CliResult<f32> {
    let t: f32 = args.parsed("threshold", 0.5f32)?;
    if !(t > 0.0 && t < 1.0) {
        return Err(usage(format!("--threshold must be between 0 and 1 (exclusive), not {t}")));
    }
    Ok(t)
}

fn schedule(spec: &str) -> CliResult<Schedule> {
    let bad_step = || usage(format!("--schedule step:EVERY:GAMMA takes EVERY ≥ 1 epochs and a GAMMA > 0, not {spec:?}"));
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
            let warmup_steps = warmup.parse().map_err(|_| usage(format!("--schedule cosine:WARMUP_STEPS, not {spec:?}")))?;
            Ok(Schedule::Cosine { warmup_steps, min_lr: 0.0 })
        }
        _ => Err(usage(format!("unknown --schedule {spec:?} (constant, step:EVERY:GAMMA, cosine or cosine:WARMUP)"))),
    }
}

fn train_config(args: &Args) -> CliResult<TrainConfig> {
    let mut cfg = TrainConfig::default();
    let lr_default = match args.get("optimizer").unwrap_or("sgd") {
        "sgd" => 0.05,
        _ => 1e-3,
    };
    let lr: f32 = args.parsed("lr", lr_default)?;
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(usage(format!("--lr must be a finite number ≥ 0, not {lr}")));
    }
    let mut opt = match args.get("optimizer").unwrap_or("sgd") {
        "sgd" => Optimizer::sgd(lr).momentum(non_negative("momentum", args.parsed("momentum", 0.9)?)?).nesterov(args.has("nesterov")),
        "adam" => Optimizer::adam(lr),
        "adamw" => Optimizer::adamw(lr),
        other => return Err(usage(format!("--optimizer must be sgd, adam or adamw, not {other:?}"))),
    };
    if let Some(wd) = args.get("weight-decay") {
        opt =
            opt.weight_decay(non_negative("weight-decay", wd.parse().map_err(|_| usage(format!("--weight-decay: cannot read {wd:?}")))?)?);
    }
    cfg.optimizer = opt;
    cfg.batch_size = args.parsed("batch", 64usize)?;
    if cfg.batch_size == 0 {
        return Err(usage("--batch must be at least 1"));
    }
    cfg.seed = args.parsed("seed", 0u64)?;
    cfg.shuffle = !args.has("no-shuffle");
    cfg.validation_fraction = args.parsed("val", 0.0f32)?;
    if !(0.0..1.0).contains(&cfg.validation_fraction) {
        return Err(usage("--val must be in [0, 1)"));
    }
    cfg.early_stopping =
        args.get("early-stop").map(|p| p.parse()).transpose().map_err(|_| usage("--early-stop takes a number of epochs"))?;
    if cfg.early_stopping == Some(0) {
        return Err(usage("--early-stop is the number of epochs without improvement to wait; give at least 1"));
    }
    if cfg.early_stopping.is_some() && cfg.validation_fraction == 0.0 {
        return Err(usage("--early-stop watches the validation loss: give --val F too (e.g. --val 0.2)"));
    }
    cfg.threshold = threshold(args)?;
    cfg.trunk_lr_mult = non_negative("trunk-lr-mult", args.parsed("trunk-lr-mult", 1.0f32)?)?;
    cfg.bce.pos_weight = args.list("pos-weight")?;
    if let Some(w) = cfg.bce.pos_weight.as_ref().and_then(|w| w.iter().find(|w| !(w.is_finite() && **w > 0.0))) {
        return Err(usage(format!("--pos-weight values must be positive numbers, not {w}")));
    }
    cfg.schedule = schedule(args.get("schedule").unwrap_or("constant"))?;
    Ok(cfg)
}

/// `--pos-weight` weighs each label's positives, so it needs label data with that many labels.
fn check_pos_weight(cfg: &TrainConfig, data: &Dataset) -> CliResult<()> {
    match (&cfg.bce.pos_weight, &data.targets) {
        (None, _) => Ok(()),
        (Some(_), Targets::Classes { .. }) => {
            Err(usage("--pos-weight weighs the positives of each label; --data has one class per example, not labels"))
        }
        (Some(w), Targets::Labels { k, .. }) if w.len() != *k => {
            Err(usage(format!("--pos-weight has {} values; --data has {k} labels", w.len())))
        }
        _ => Ok(()),
    }
}

fn storage(args: &Args) -> StorageDtype {
    if args.has("f16") { StorageDtype::F16 } else { StorageDtype::F32 }
}

/// Checks before training that `path` can be written, so a typo in `--out` does not throw away
/// a finished run: its folder must exist and accept a new file, and it must not be a folder.
fn check_writable(flag: &str, path: &Path) -> CliResult<()> {
    if path.is_dir() {
        return Err(usage(format!("--{flag} {} is a folder; give a file name", path.display())));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(failed(format!("--{flag} {}: the folder {} does not exist", path.display(), dir.display())));
    }
    let probe = dir.join(format!(".headswap-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| failed(format!("--{flag} {}: cannot write in {}: {e}", path.display(), dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `--flag`'s value when it is a finite number ≥ 0, else a usage error naming the flag.
fn non_negative(flag: &str, v: f32) -> CliResult<f32> {
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(usage(format!("--{flag} must be a finite number ≥ 0, not {v}"))) }
}

/// `--report DIR`, created and checked to be writable before any training, so that a bad path
/// cannot cost a finished run.
fn report_dir(args: &Args) -> CliResult<Option<PathBuf>> {
    let Some(dir) = args.get("report").map(PathBuf::from) else { return Ok(None) };
    if dir.exists() && !dir.is_dir() {
        return Err(usage(format!("--report {} is a file; give a folder for the report", dir.display())));
    }
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("--report {}: cannot create the folder: {e}", dir.display())))?;
    let probe = dir.join(format!(".headswap-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| failed(format!("--report {}: cannot write in it: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(Some(dir))
}

/// Whether two paths name the same file (as written, or once made absolute; an existing file
/// also through its canonical path).
fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || std::path::absolute(a).ok() == std::path::absolute(b).ok()
        || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// `--out` and `--save-state`: both writable, and not the same file (the checkpoint would
/// silently replace the state file).
fn check_outputs(out: &Path, state: Option<&Path>) -> CliResult<()> {
    check_writable("out", out)?;
    if let Some(state) = state {
        check_writable("save-state", state)?;
        if same_path(out, state) {
            return Err(usage("--save-state and --out must be different files"));
        }
    }
    Ok(())
}

/// Refuses to keep a run whose loss went non-finite in or before the epoch whose weights the
/// network holds: saving it would replace a good file at `--out` with NaN weights.
fn check_converged(report: &FitReport) -> CliResult<()> {
    let not_finite =
        |e: &&headswap::train::EpochReport| !e.train.loss.is_finite() || e.validation.as_ref().is_some_and(|v| !v.loss.is_finite());
    let held = report.best_epoch.or(report.last().map(|e| e.epoch));
    match report.epochs.iter().find(not_finite) {
        Some(e) if held.is_none_or(|h| e.epoch <= h) => {
            let loss = if e.train.loss.is_finite() { e.validation.as_ref().map_or(e.train.loss, |v| v.loss) } else { e.train.loss };
            Err(failed(format!("training diverged (loss {loss} at epoch {}); nothing saved — try a lower --lr", e.epoch + 1)))
        }
        _ => Ok(()),
    }
}

/// Every parameter finite: the last guard before a checkpoint is written.
fn check_finite_weights(ckpt: &Checkpoint) -> CliResult<()> {
    let bad = ckpt.names().find(|n| ckpt.get(n).is_some_and(|t| t.data.iter().any(|v| !v.is_finite())));
    match bad {
        Some(name) => Err(failed(format!("training diverged (non-finite weights in {name}); nothing saved — try a lower --lr"))),
        None => Ok(()),
    }
}

/// The image layout `predict` must read files in, for a model trained on `loaded`: the data's
/// own `[C, H, W]`, and none for feature vectors from a tensor file.
fn image_layout(loaded: &Loaded) -> Option<(usize, usize, usize)> {
    match (loaded.kind, loaded.data.input_shape.as_slice()) {
        (DataKind::Tensor, _) => None,
        (_, &[c, h, w]) if c == 1 || c == 3 => Some((c, h, w)),
        _ => None,
    }
}

/// Saves `net` with what `predict` and `eval` need: the input shape, the class or label names,
/// and for image data the size and channels to read images at.
fn save(net: &Network, path: &Path, loaded: &Loaded, dtype: StorageDtype) -> CliResult<()> {
    let mut ckpt = net.to_checkpoint()?;
    check_finite_weights(&ckpt)?;
    let data = &loaded.data;
    let shape: Vec<String> = data.input_shape.iter().map(|d| d.to_string()).collect();
    ckpt.metadata.insert("headswap.input_shape".into(), shape.join(","));
    ckpt.metadata.insert(LABEL_NAMES_KEY.into(), serde_json::to_string(&data.label_names).unwrap_or_default());
    if let Some((c, h, w)) = image_layout(loaded) {
        ckpt.metadata.insert("headswap.image_size".into(), format!("{w}x{h}"));
        ckpt.metadata.insert("headswap.channels".into(), if c == 3 { "rgb" } else { "gray" }.into());
    }
    checkpoint::save(path, &ckpt, dtype)?;
    eprintln!("saved {}", path.display());
    Ok(())
}

const LABEL_NAMES_KEY: &str = "headswap.label_names";

/// "15", "0.0638": a per-step ratio to three significant digits.
fn three_digits(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn fit_json(report: &FitReport) -> serde_json::Value {
    let epochs: Vec<serde_json::Value> = report
        .epochs
        .iter()
        .map(|e| {
            serde_json::json!({
                "epoch": e.epoch, "lr": e.lr, "loss": e.train.loss, "score": e.train.score(),
                "val_loss": e.validation.as_ref().map(|v| v.loss), "val_score": e.validation.as_ref().map(|v| v.score()),
                "seconds": e.seconds, "samples_per_sec": e.samples_per_sec,
            })
        })
        .collect();
    serde_json::json!({
        "epochs": epochs, "best_epoch": report.best_epoch, "lowest_trainable_layer": report.lowest_trainable,
        "cached_features": report.cached_features, "dispatches_per_step": report.dispatches_per_step,
        "submissions_per_step": report.submissions_per_step, "bytes_allocated": report.bytes_allocated, "seconds": report.seconds,
    })
}

fn print_fit(report: &FitReport, json: bool) -> CliResult<()> {
    if json {
        return outln!("{}", fit_json(report));
    }
    for e in &report.epochs {
        let val = e.validation.as_ref().map(|v| format!("  val loss {:.4} score {:.4}", v.loss, OrNa(v.score()))).unwrap_or_default();
        outln!(
            "epoch {:>3}  lr {:.5}  loss {:.4}  score {:.4}{val}  {:.1}s  {:.0} samples/s",
            e.epoch + 1,
            e.lr,
            e.train.loss,
            OrNa(e.train.score()),
            e.seconds,
            e.samples_per_sec
        )?;
    }
    // with early stopping the network keeps the best epoch's weights, which need not be the last
    // epoch's (whether or not the patience ran out before the epochs asked for)
    if let (Some(best), Some(last)) = (report.best_epoch, report.last())
        && best != last.epoch
    {
        outln!("kept the weights of epoch {} (lowest validation loss), not those of the last epoch, {}", best + 1, last.epoch + 1)?;
    }
    outln!(
        "{} dispatches and {} submission per step; {} bytes of training state on the GPU{}",
        three_digits(report.dispatches_per_step),
        three_digits(report.submissions_per_step),
        report.bytes_allocated,
        if report.cached_features { "; head trained on cached trunk features" } else { "" }
    )
}

/// A trainer that draws a progress bar (steps of the current epoch, last epoch's loss and
/// samples/s) on stderr when stderr is a terminal.
fn trainer(gpu: &Gpu, cfg: TrainConfig) -> Trainer {
    let bar = indicatif::ProgressBar::new(1);
    if let Ok(style) = indicatif::ProgressStyle::with_template("epoch {prefix:>7} [{bar:30}] {pos:>5}/{len} steps  {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut total = 0;
    Trainer::new(gpu, cfg).with_progress(move |p| match p {
        Progress::Step { epoch, step, steps_per_epoch, epochs } => {
            total = epochs;
            bar.set_length(steps_per_epoch as u64);
            bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
            bar.set_position(step as u64 + 1);
        }
        Progress::Epoch(r) => {
            bar.set_message(format!("loss {:.4}  score {:.3}  {:.0} samples/s", r.train.loss, OrNa(r.train.score()), r.samples_per_sec));
            if r.epoch + 1 == total {
                bar.finish_and_clear();
            }
        }
    })
}

/// `--report DIR`: training curves, and per-label F1 bars for a label head.
fn write_report(dir: Option<&Path>, name: &str, report: &FitReport, label_names: &[String]) -> CliResult<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let curves = dir.join(format!("{name}_curves.png"));
    headswap::report::training_curves(&curves, name, report)?;
    eprintln!("report: {}", curves.display());
    let last = report.last().map(|e| e.validation.as_ref().unwrap_or(&e.train));
    if let Some(labels) = last.and_then(|m| m.labels.as_ref()) {
        let names: Vec<String> =
            if label_names.len() == labels.f1.len() { label_names.to_vec() } else { (0..labels.f1.len()).map(|i| i.to_string()).collect() };
        let bars = dir.join(format!("{name}_label_f1.png"));
        headswap::report::label_f1_bars(&bars, &format!("{name}: per-label F1"), &names, &labels.f1)?;
        eprintln!("report: {}", bars.display());
    }
    Ok(())
}

fn activation(args: &Args) -> CliResult<Activation> {
    let name = args.get("activation").unwrap_or("relu");
    Activation::parse(name).ok_or_else(|| usage(format!("unknown --activation {name:?} (relu, leaky_relu, sigmoid, tanh, gelu, identity)")))
}

fn head_for(data: &Dataset, hidden: Option<usize>, act: Activation) -> Head {
    let k = data.num_outputs();
    let head = if data.targets.is_multi_label() { Head::labels(k) } else { Head::classes(k) };
    match hidden {
        Some(h) => head.hidden(h, act),
        None => head,
    }
}

fn head_kind_of(data: &Dataset) -> HeadKind {
    if data.targets.is_multi_label() { HeadKind::Labels } else { HeadKind::Classes }
}

/// A training run needs at least two classes: a one-class softmax has nothing to learn.
fn check_trainable(data: &Dataset) -> CliResult<()> {
    if let Targets::Classes { num_classes: 1, .. } = data.targets {
        let name = data.label_names.first().map_or(String::new(), |n| format!(" ({n:?})"));
        return Err(failed(format!("--data has only one class{name}: a classifier needs at least two")));
    }
    Ok(())
}

/// The flags `--save-state` records with a run, so that `resume` continues with the same
/// optimizer, schedule, batches and data unless a flag given to `resume` overrides one.
const RUN_FLAGS: &[&str] = &[
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight-decay",
    "batch",
    "seed",
    "no-shuffle",
    "val",
    "early-stop",
    "threshold",
    "pos-weight",
    "schedule",
    "size",
    "rgb",
];
const RUN_FLAGS_KEY: &str = "headswap.run_flags";
const RUN_EXAMPLES_KEY: &str = "headswap.run_examples";

/// `--save-state PATH`: a training checkpoint (weights + optimizer state, epoch, RNG position)
/// plus the run's options and data size, which `headswap resume` continues exactly.
fn save_state(trainer: &Trainer, net: &Network, path: Option<&Path>, args: &Args, data: &Dataset) -> CliResult<()> {
    let (Some(p), Some(state)) = (path, trainer.training_state()) else { return Ok(()) };
    let mut c = state.to_checkpoint(net)?;
    let flags: BTreeMap<&String, &Option<String>> = args.flags.iter().filter(|(k, _)| RUN_FLAGS.contains(&k.as_str())).collect();
    c.metadata.insert(RUN_FLAGS_KEY.into(), serde_json::to_string(&flags).unwrap_or_default());
    c.metadata.insert(RUN_EXAMPLES_KEY.into(), data.n.to_string());
    // always f32, as TrainingState::save: Adam's moments would underflow in f16
    checkpoint::save(p, &c, StorageDtype::F32)?;
    eprintln!("saved training state {}", p.display());
    Ok(())
}

/// The network `--arch`/`--layers`/`--channels` describe, for `data`.
fn new_network(
    gpu: &Gpu,
    data: &Dataset,
    arch: &str,
    layers: Vec<usize>,
    channels: &[usize],
    act: Activation,
    seed: u64,
) -> CliResult<Network> {
    let head = head_for(data, None, act);
    match arch {
        "mlp" => {
            let mut sizes = vec![data.d];
            sizes.extend(layers);
            Ok(Network::mlp(gpu, &sizes, act, Default::default(), head, seed)?)
        }
        "cnn" => {
            let trunk = demo::cnn_trunk(&data.input_shape, channels, &layers, act)?;
            Ok(Network::from_specs(gpu, data.d, trunk, Default::default(), head, seed)?)
        }
        other => Err(usage(format!("--arch must be mlp or cnn, not {other:?}"))),
    }
}

fn cmd_pretrain(args: &Args) -> CliResult<()> {
    let cfg = train_config(args)?;
    let loaded = load_data(args, Split::Train, cfg.seed)?;
    check_trainable(&loaded.data)?;
    check_pos_weight(&cfg, &loaded.data)?;
    let out = PathBuf::from(args.required("out")?);
    let arch = args.get("arch").unwrap_or("mlp").to_string();
    let channels: Vec<usize> = args.sizes("channels")?.unwrap_or_else(|| vec![8, 16]);
    let layers: Vec<usize> = args.sizes("layers")?.unwrap_or_else(|| if arch == "cnn" { vec![64] } else { vec![128, 64] });
    let act = activation(args)?;
    let epochs = epochs(args, 10)?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let report_dir = report_dir(args)?;
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    check_outputs(&out, state_out.as_deref())?;
    let gpu = gpu()?;
    let mut net = new_network(&gpu, &loaded.data, &arch, layers, &channels, act, cfg.seed)?;
    eprintln!("network: {}", net.layers().iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | "));
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.fit(&mut net, &loaded.data, epochs)?;
    print_fit(&report, json)?;
    check_converged(&report)?;
    write_report(report_dir.as_deref(), "pretrain", &report, &loaded.data.label_names)?;
    save_state(&trainer, &net, state_out.as_deref(), args, &loaded.data)?;
    save(&net, &out, &loaded, dtype)
}

/// The saved run's options from a state file's metadata (none for a state written before they
/// were recorded).
fn saved_run_flags(ckpt: &Checkpoint) -> BTreeMap<String, Option<String>> {
    ckpt.metadata.get(RUN_FLAGS_KEY).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
}

fn cmd_resume(args: &Args) -> CliResult<()> {
    let state_path = PathBuf::from(args.required("state")?);
    let origin = state_path.display().to_string();
    let ckpt = checkpoint::load(&state_path)?;
    let saved = saved_run_flags(&ckpt);
    let restored: Vec<String> = saved
        .iter()
        .filter(|(k, _)| !args.flags.contains_key(*k))
        .map(|(k, v)| v.as_ref().map_or(format!("--{k}"), |v| format!("--{k} {v}")))
        .collect();
    let args = &args.with_saved(&saved);
    let cfg = train_config(args)?;
    let loaded = load_data(args, Split::Train, cfg.seed)?;
    check_pos_weight(&cfg, &loaded.data)?;
    let out = PathBuf::from(args.required("out")?);
    if same_path(&out, &state_path) {
        return Err(usage("--out would replace the state file given to --state; write the model to another file"));
    }
    let epochs: usize = args.required("epochs")?.parse().map_err(|_| usage("--epochs takes the total number of epochs"))?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    let state = TrainingState::from_checkpoint(&ckpt, &origin)?;
    if epochs <= state.epoch {
        return Err(usage(format!("--epochs is the total: the saved run has done {} epochs, so give more than that", state.epoch)));
    }
    if let Some(n) = ckpt.metadata.get(RUN_EXAMPLES_KEY).and_then(|n| n.parse::<usize>().ok())
        && n != loaded.data.n
    {
        return Err(failed(format!("the saved run trained on {n} examples, --data has {}: resume needs the same data", loaded.data.n)));
    }
    check_outputs(&out, state_out.as_deref())?;
    let gpu = gpu()?;
    let mut net = Network::from_checkpoint(&gpu, &ckpt, &origin)?;
    if !restored.is_empty() {
        eprintln!("the saved run's options: {}", restored.join(" "));
    } else if !ckpt.metadata.contains_key(RUN_FLAGS_KEY) {
        // a state file from before the options were recorded: only the flags given now apply
        eprintln!("{origin} records no training options; using the flags given now");
    }
    eprintln!("resuming at epoch {} (step {}) of {epochs}", state.epoch, state.step);
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.resume(&mut net, &loaded.data, &state, epochs)?;
    print_fit(&report, json)?;
    check_converged(&report)?;
    save_state(&trainer, &net, state_out.as_deref(), args, &loaded.data)?;
    save(&net, &out, &loaded, dtype)
}

/// A model file to read, and how to read it when it is a plain PyTorch state_dict.
struct ModelSource {
    path: String,
    /// `--arch mlp`: read a plain state_dict as nn.Linear layers with `act` between them.
    arch: Option<String>,
    act: Activation,
}

fn model_source(args: &Args, flag: &str) -> CliResult<ModelSource> {
    let path = args.required(flag)?.to_string();
    let arch = args.get("arch").map(str::to_string);
    if arch.as_deref().is_some_and(|a| a != "mlp") {
        return Err(usage("--arch mlp is the only layout a plain state_dict can be read as (nn.Linear layers)"));
    }
    Ok(ModelSource { path, arch, act: activation(args)? })
}

/// `args`, plus the image size and channels the model at `model_path` was trained at when the
/// data is images read at a chosen size (folders, manifests, synthetic) and neither `--size` nor
/// `--rgb` is given: eval and finetune then read images as the model's training did.
fn with_model_image_options(args: &Args, model_path: &str, spec: &str) -> CliResult<Args> {
    let kind = data_kind(spec)?;
    if !matches!(kind, DataKind::Images | DataKind::Synthetic) {
        return Ok(args.clone());
    }
    // a file that does not load is reported by load_model, with its own message
    let Ok(ckpt) = checkpoint::load(Path::new(model_path)) else { return Ok(args.clone()) };
    // each option given overrides only itself; synthetic data is drawn square or not at all
    let mut saved = BTreeMap::new();
    if let Some(size) = ckpt.metadata.get("headswap.image_size")
        && !args.flags.contains_key("size")
        && (kind == DataKind::Images || size.split_once('x').is_some_and(|(w, h)| w == h))
    {
        saved.insert("size".to_string(), Some(size.clone()));
    }
    if ckpt.metadata.get("headswap.channels").map(String::as_str) == Some("rgb") && kind == DataKind::Images {
        saved.insert("rgb".to_string(), None);
    }
    Ok(args.with_saved(&saved))
}

/// Reads a headswap checkpoint, or with `--arch mlp` a plain PyTorch state_dict of Linear layers
/// whose last layer is the head (of `kind`). Returns the checkpoint too, for its metadata.
fn load_model(gpu: &Gpu, src: &ModelSource, kind: HeadKind) -> CliResult<(Network, Checkpoint)> {
    let ckpt = checkpoint::load(Path::new(&src.path))?;
    let has_arch = ckpt.metadata.contains_key(checkpoint::LAYERS_KEY);
    let net = match (&src.arch, has_arch) {
        (None, true) => Network::from_checkpoint(gpu, &ckpt, &src.path)?,
        (Some(_), false) => Network::from_state_dict(gpu, &ckpt, src.act, kind, 1, &src.path)?,
        (Some(_), true) => return Err(usage(format!("--arch is for plain state_dicts; {} records its own architecture", src.path))),
        (None, false) => {
            return Err(failed(format!(
                "{}: no headswap architecture in the metadata (a plain PyTorch state_dict?); add --arch mlp to read it as \
                 nn.Linear layers with --activation (relu by default) between them",
                src.path
            )));
        }
    };
    Ok((net, ckpt))
}

/// The model's head and the data's targets must be the same kind; said in CLI terms (the
/// library's own message speaks of `Head::labels`).
fn check_head_kind(net: &Network, data: &Dataset) -> CliResult<()> {
    match (net.head_kind(), data.targets.is_multi_label()) {
        (HeadKind::Classes, true) => Err(failed(
            "the model picks one class per example, but --data has several labels per example; \
             train a label head on it first with `headswap finetune --from MODEL --data DATA --out NEW`",
        )),
        (HeadKind::Labels, false) => Err(failed(
            "the model predicts independent labels, but --data has one class per example; \
             train a class head on it first with `headswap finetune --from MODEL --data DATA --out NEW`",
        )),
        _ => Ok(()),
    }
}

/// The class or label names a checkpoint was trained with (empty when it has none).
fn model_names(ckpt: &Checkpoint) -> Vec<String> {
    ckpt.metadata.get(LABEL_NAMES_KEY).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
}

/// Puts `data`'s classes or labels in the model's order by name, so that a folder with only some
/// of the classes, renamed folders, or manifest columns in another order are scored against the
/// right outputs. Without names on either side the match stays positional.
fn align_to_model(mut data: Dataset, names: &[String], outputs: usize) -> CliResult<Dataset> {
    // Data without names (a tensor file without label_names), or a model trained on such data,
    // is matched by position, and says so.
    if names.is_empty() || data.label_names.is_empty() {
        if names.len() != data.label_names.len() {
            eprintln!("matched the data's outputs to the model's by position: one of them has no names");
        }
        return Ok(data);
    }
    if names == data.label_names || names.len() != outputs {
        return Ok(data);
    }
    let unknown: Vec<&str> = data.label_names.iter().filter(|n| !names.contains(n)).map(String::as_str).collect();
    let what = if data.targets.is_multi_label() { "labels" } else { "classes" };
    if !unknown.is_empty() {
        return Err(failed(format!(
            "--data has {what} the model does not know: {}; the model knows {}",
            unknown.join(", "),
            names.join(", ")
        )));
    }
    match &mut data.targets {
        Targets::Classes { y, num_classes } => {
            let to_model: Vec<u32> = data.label_names.iter().map(|n| names.iter().position(|m| m == n).unwrap_or(0) as u32).collect();
            y.iter_mut().for_each(|c| *c = to_model[*c as usize]);
            *num_classes = names.len();
        }
        Targets::Labels { y, k } => {
            if data.label_names.len() != names.len() {
                let missing: Vec<&str> = names.iter().filter(|n| !data.label_names.contains(n)).map(String::as_str).collect();
                return Err(failed(format!("--data lacks labels the model predicts: {}", missing.join(", "))));
            }
            let from: Vec<usize> = names.iter().map(|m| data.label_names.iter().position(|n| n == m).unwrap_or(0)).collect();
            let old = std::mem::take(y);
            *y = old.chunks_exact(*k).flat_map(|row| from.iter().map(|&j| row[j]).collect::<Vec<_>>()).collect();
        }
    }
    eprintln!("matched the data's {what} to the model's by name");
    data.label_names = names.to_vec();
    data.validate()?;
    Ok(data)
}

fn cmd_finetune(args: &Args) -> CliResult<()> {
    let from = model_source(args, "from")?;
    let args = &with_model_image_options(args, &from.path, args.required("data")?)?;
    let cfg = train_config(args)?;
    let loaded = load_data(args, Split::Train, cfg.seed)?;
    check_trainable(&loaded.data)?;
    check_pos_weight(&cfg, &loaded.data)?;
    let out = PathBuf::from(args.required("out")?);
    let freeze_given = args.get("freeze");
    let freeze_s = freeze_given.unwrap_or("auto");
    let freeze = Freeze::parse(freeze_s).ok_or_else(|| usage(format!("--freeze must be trunk, all, last:K or auto, not {freeze_s:?}")))?;
    let hidden =
        args.get("head-hidden").map(|h| h.parse::<usize>()).transpose().map_err(|_| usage("--head-hidden takes a number of units"))?;
    if hidden == Some(0) {
        return Err(usage("--head-hidden must be at least 1 unit (leave it out for a head without a hidden layer)"));
    }
    let recipe =
        args.get("recipe").map(|h| h.parse::<usize>()).transpose().map_err(|_| usage("--recipe takes the number of head-only epochs"))?;
    if recipe.is_some() && freeze_given.is_some() {
        return Err(usage("--recipe sets its own freezing (head only, then everything); leave out --freeze"));
    }
    let epochs = epochs(args, 10)?;
    let report_dir = report_dir(args)?;
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    check_outputs(&out, None)?;
    let gpu = gpu()?;
    let data = &loaded.data;
    let (mut net, _) = load_model(&gpu, &from, head_kind_of(data))?;
    let swap = net.swap_head(head_for(data, hidden, from.act), cfg.seed)?;
    eprint!("{swap}");
    let mut trainer = trainer(&gpu, cfg);
    match recipe {
        Some(head_epochs) => {
            let (a, b) = trainer.fine_tune_recipe(&mut net, data, head_epochs, epochs)?;
            if json {
                // one JSON document for the run: the head-only pass, then the full one
                outln!("{}", serde_json::json!({"head_only": fit_json(&a), "all": fit_json(&b)}))?;
            } else {
                print_fit(&a, false)?;
                print_fit(&b, false)?;
            }
            check_converged(&a)?;
            check_converged(&b)?;
            write_report(report_dir.as_deref(), "finetune_head", &a, &data.label_names)?;
            write_report(report_dir.as_deref(), "finetune_all", &b, &data.label_names)?;
        }
        None => {
            let lowest = trainer.lowest_trainable(&net, data, freeze)?;
            eprintln!("training layers {lowest}.. of {} (freeze {freeze_s})", net.layers().len());
            let report = trainer.fine_tune(&mut net, data, freeze, epochs)?;
            print_fit(&report, json)?;
            check_converged(&report)?;
            write_report(report_dir.as_deref(), "finetune", &report, &data.label_names)?;
        }
    }
    save(&net, &out, &loaded, dtype)
}

fn cmd_train(args: &Args) -> CliResult<()> {
    let cfg = train_config(args)?;
    let data_path = args.required("data")?;
    if !data_path.ends_with(".safetensors") {
        return Err(usage("train --data takes a .safetensors file with x and y"));
    }
    let loaded = load_data(args, Split::Train, cfg.seed)?;
    check_pos_weight(&cfg, &loaded.data)?;
    let init = model_source(args, "init")?;
    let out = PathBuf::from(args.required("out")?);
    let kind = match args.required("loss")? {
        "softmax" => HeadKind::Classes,
        "bce" => HeadKind::Labels,
        other => return Err(usage(format!("--loss must be softmax or bce, not {other:?}"))),
    };
    if kind != head_kind_of(&loaded.data) {
        let (loss, other, has) = if kind == HeadKind::Classes { ("softmax", "bce", "labels") } else { ("bce", "softmax", "classes") };
        return Err(usage(format!("--loss {loss} does not fit --data, which has {has}: use --loss {other}")));
    }
    let epochs = epochs(args, 1)?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    check_outputs(&out, state_out.as_deref())?;
    let gpu = gpu()?;
    let (mut net, ckpt) = load_model(&gpu, &init, kind)?;
    net.set_head_kind(kind);
    let data = align_to_model(loaded.data, &model_names(&ckpt), net.output_dim())?;
    let loaded = Loaded { data, ..loaded };
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.fit(&mut net, &loaded.data, epochs)?;
    print_fit(&report, json)?;
    check_converged(&report)?;
    save_state(&trainer, &net, state_out.as_deref(), args, &loaded.data)?;
    save(&net, &out, &loaded, dtype)
}

fn cmd_eval(args: &Args) -> CliResult<()> {
    let seed = args.parsed("seed", 0u64)?;
    let spec = args.required("data")?.to_string();
    let src = model_source(args, "model")?;
    let args = &with_model_image_options(args, &src.path, &spec)?;
    let loaded = load_data(args, Split::HeldOut, seed)?;
    let json = args.has("json");
    let threshold = threshold(args)?;
    args.finish()?;
    let gpu = gpu()?;
    let (net, ckpt) = load_model(&gpu, &src, head_kind_of(&loaded.data))?;
    check_head_kind(&net, &loaded.data)?;
    eprintln!("{}", describe_split(&spec, loaded.kind, &loaded.data));
    let data = align_to_model(loaded.data, &model_names(&ckpt), net.output_dim())?;
    let trainer = Trainer::new(&gpu, TrainConfig { threshold, ..TrainConfig::default() });
    let m = trainer.evaluate(&net, &data)?;
    if json {
        let labels = m.labels.as_ref().map(|l| {
            serde_json::json!({"names": data.label_names, "f1": l.f1, "precision": l.precision, "recall": l.recall, "mean_f1": l.mean_f1})
        });
        let classes = if data.targets.is_multi_label() { serde_json::Value::Null } else { serde_json::json!(data.label_names) };
        return outln!(
            "{}",
            serde_json::json!({"examples": data.n, "loss": m.loss, "accuracy": m.accuracy, "classes": classes, "labels": labels})
        );
    }
    outln!("{} examples, loss {:.4}", data.n, m.loss)?;
    if let Some(a) = m.accuracy {
        outln!("accuracy {:.2}%", 100.0 * a)?;
    }
    if let Some(l) = &m.labels {
        for (j, f1) in l.f1.iter().enumerate() {
            let name = data.label_names.get(j).cloned().unwrap_or_else(|| j.to_string());
            outln!("{name:>12}  F1 {:.3}  precision {:.3}  recall {:.3}", OrNa(*f1), OrNa(l.precision[j]), OrNa(l.recall[j]))?;
        }
        outln!("{:>12}  F1 {:.3}", "mean", OrNa(l.mean_f1))?;
    }
    Ok(())
}

fn cmd_predict(args: &Args) -> CliResult<()> {
    let model = args.required("model")?.to_string();
    let json = args.has("json");
    args.finish()?;
    if args.positional.is_empty() {
        return Err(usage("predict needs at least one image"));
    }
    let ckpt = checkpoint::load(Path::new(&model))?;
    let meta = |k: &str| ckpt.metadata.get(k).cloned();
    let (w, h) = meta("headswap.image_size")
        .and_then(|s| s.split_once('x').and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))))
        .ok_or_else(|| Error::Format {
            path: model.clone(),
            message: "no image size in the metadata: this model was not trained on images".into(),
        })?;
    let opts = if meta("headswap.channels").as_deref() == Some("rgb") { ImageOptions::rgb(w, h) } else { ImageOptions::gray(w, h) };
    let names: Vec<String> = meta(LABEL_NAMES_KEY).and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let gpu = gpu()?;
    let net = Network::from_checkpoint(&gpu, &ckpt, &model)?;
    let mut x = Vec::new();
    for p in &args.positional {
        x.extend(data::image_folder::load_image(Path::new(p), &opts)?);
    }
    let probs = headswap::train::predict(&net, &x, args.positional.len(), 64)?;
    let k = net.output_dim();
    let mut out = Vec::new();
    for (i, p) in args.positional.iter().enumerate() {
        let row = &probs[i * k..(i + 1) * k];
        let named: Vec<(String, f32)> =
            row.iter().enumerate().map(|(j, &v)| (names.get(j).cloned().unwrap_or_else(|| j.to_string()), v)).collect();
        if json {
            out.push(
                serde_json::json!({"image": p, "probabilities": named.iter().map(|(n, v)| (n.clone(), *v)).collect::<BTreeMap<_, _>>()}),
            );
        } else {
            let shown: Vec<String> = match net.head_kind() {
                HeadKind::Classes => {
                    let best = named.iter().cloned().fold(("".to_string(), f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
                    vec![format!("{} ({:.3})", best.0, best.1)]
                }
                HeadKind::Labels => named.iter().map(|(n, v)| format!("{n}{} {v:.3}", if *v >= 0.5 { "✓" } else { "" })).collect(),
            };
            outln!("{p}: {}", shown.join("  "))?;
        }
    }
    if json {
        outln!("{}", serde_json::Value::Array(out))?;
    }
    Ok(())
}

fn cmd_bench(args: &Args) -> CliResult<()> {
    let opts = headswap::bench::BenchOptions {
        quick: args.has("quick"),
        json: args.has("json"),
        only: args.get("only").map(str::to_string),
        seed: args.parsed("seed", 0u64)?,
    };
    args.finish()?;
    let gpu = gpu()?;
    let report = headswap::bench::run(&gpu, &opts)?;
    if opts.json { outln!("{}", report.to_json()) } else { outln!("{report}") }
}
