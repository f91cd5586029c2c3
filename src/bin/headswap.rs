//! The `headswap` command line. Every failure is one readable line on stderr and a non-zero exit
//! (2 for a usage mistake, 1 for anything else); logs go to stderr under `RUST_LOG`.

use headswap::checkpoint::{self, StorageDtype};
use headswap::data::{self, Channels, Dataset, ImageOptions};
use headswap::demo::{self, DemoConfig, DemoData, Trunk};
use headswap::kernels::Activation;
use headswap::nn::{Head, HeadKind, Network};
use headswap::train::{Freeze, Optimizer, Progress, Schedule, TrainConfig, Trainer};
use headswap::{Error, Gpu};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
headswap — transfer and multi-task learning on any GPU (wgpu)

usage:
  headswap demo      [--data synthetic|digits] [--trunk mlp|cnn|both] [--digits-dir DIR] [--sizes 40,150,600]
                     [--seed N] [--quick] [--json]
                     [--report DIR]
  headswap info      [--json]
  headswap pretrain  --data DATA --out CKPT [--arch mlp|cnn] [--layers 128,64] [--channels 8,16]
                     [--activation relu] [training options]
  headswap finetune  --from CKPT --data DATA --out CKPT [--freeze trunk|all|last:K|auto] [--head-hidden N]
                     [--recipe HEAD_EPOCHS] [--trunk-lr-mult F] [training options]
  headswap train     --init CKPT --data FILE.safetensors --out CKPT --loss softmax|bce [training options]
  headswap resume    --state STATE --data DATA --epochs TOTAL --out CKPT [training options]
  headswap eval      --model CKPT --data DATA [--json]
  headswap predict   --model CKPT IMAGE... [--json]
  headswap bench     [--quick] [--json] [--only k1|t1|t2|t3|c1]

DATA: synthetic-a[:N] (which shape), synthetic-b[:N] (which of 4 shapes are in a scene),
      digits (real digits, one per 16x16 canvas), digits-scenes[:N] (which of 2,3,5,7 appear),
      a folder of class sub-folders of images, a CSV manifest (path,label_1,...), or a .safetensors file
      with x [n, d] and y [n] (classes) or [n, k] (labels, NaN = unknown)
image options: --size 16x16 --rgb
training options: --epochs N --batch N --optimizer sgd|adam|adamw --lr F --momentum F --nesterov
      --weight-decay F --schedule constant|step:EVERY:GAMMA|cosine:WARMUP --val F --early-stop PATIENCE
      --seed N --no-shuffle --pos-weight F,F,.. --threshold F --f16 --json
      --save-state STATE (pretrain, train, resume: weights + optimizer state to resume from)
      --report DIR (demo, pretrain, finetune: PNG charts of the curves and per-label F1)";

/// A CLI failure: a usage mistake or a library error.
enum CliError {
    Usage(String),
    Lib(Error),
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

/// `--flag value` and `--switch` arguments after the command, plus positionals.
struct Args {
    cmd: String,
    flags: BTreeMap<String, Option<String>>,
    positional: Vec<String>,
    used: std::cell::RefCell<Vec<String>>,
}

const SWITCHES: &[&str] = &["quick", "json", "rgb", "nesterov", "no-shuffle", "f16", "help"];

impl Args {
    fn parse(argv: Vec<String>) -> CliResult<Args> {
        let mut it = argv.into_iter();
        let cmd = it.next().ok_or_else(|| usage("no command given"))?;
        let mut flags = BTreeMap::new();
        let mut positional = Vec::new();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                let value = if SWITCHES.contains(&name.as_str()) {
                    inline
                } else {
                    Some(match inline {
                        Some(v) => v,
                        None => it.next().ok_or_else(|| usage(format!("--{name} needs a value")))?,
                    })
                };
                flags.insert(name, value);
            } else {
                positional.push(a);
            }
        }
        Ok(Args { cmd, flags, positional, used: Default::default() })
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
        self.get(name).ok_or_else(|| usage(format!("{} needs --{name}", self.cmd)))
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
    /// Fails on any flag the command did not read: a typo must not be silently ignored.
    fn finish(&self) -> CliResult<()> {
        let used = self.used.borrow();
        if let Some(unknown) = self.flags.keys().find(|k| !used.contains(k)) {
            return Err(usage(format!("{} does not take --{unknown}", self.cmd)));
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
        println!("{USAGE}");
        return if argv.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let result = Args::parse(argv).and_then(|args| {
        if args.has("help") {
            println!("{USAGE}");
            return Ok(());
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
    }
}

fn gpu() -> CliResult<Gpu> {
    Ok(Gpu::new()?)
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
        println!("{v}");
    } else {
        println!("{s}");
    }
    Ok(())
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
    let report_dir = args.get("report").map(PathBuf::from);
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
            println!("\n{report}");
        }
        reports.push(report);
    }
    if json {
        println!("[{}]", reports.iter().map(|r| r.to_json()).collect::<Vec<_>>().join(","));
    } else {
        println!("\n{}", demo::side_by_side(&reports));
    }
    Ok(())
}

fn image_options(args: &Args) -> CliResult<ImageOptions> {
    let (w, h) = match args.get("size") {
        None => (16, 16),
        Some(s) => {
            let (w, h) = s.split_once('x').ok_or_else(|| usage(format!("--size must look like 16x16, not {s:?}")))?;
            (
                w.parse().map_err(|_| usage(format!("--size: bad width {w:?}")))?,
                h.parse().map_err(|_| usage(format!("--size: bad height {h:?}")))?,
            )
        }
    };
    if w == 0 || h == 0 || w > 4096 || h > 4096 {
        return Err(usage("--size must be between 1x1 and 4096x4096"));
    }
    Ok(if args.has("rgb") { ImageOptions::rgb(w, h) } else { ImageOptions::gray(w, h) })
}

fn split_count(spec: &str, default: usize) -> CliResult<(&str, usize)> {
    match spec.split_once(':') {
        Some((name, n)) => Ok((name, n.parse().map_err(|_| usage(format!("{spec:?}: the count after ':' must be a number")))?)),
        None => Ok((spec, default)),
    }
}

/// Loads a data set from a `DATA` spec (see the usage text).
fn load_data(spec: &str, opts: &ImageOptions, seed: u64) -> CliResult<Dataset> {
    let size = opts.size.0 as usize;
    let path = Path::new(spec);
    let data = if spec.starts_with("synthetic-a") {
        let (_, n) = split_count(spec, 12000)?;
        data::synthetic::shapes_task_a(n, size, seed)
    } else if spec.starts_with("synthetic-b") {
        let (_, n) = split_count(spec, 500)?;
        data::synthetic::scenes_task_b(n, size, seed)
    } else if spec == "digits" || spec.starts_with("digits-scenes") {
        let dir = data::digits::default_dir()
            .ok_or_else(|| Error::InvalidInput(format!("the digits data set was not found; set {}", data::digits::ENV_DIR)))?;
        let digits = data::digits::load(&dir)?;
        let (train, _) = data::digits::fixed_split(&digits);
        if spec == "digits" {
            data::digits::single_as_scene_input(&train, seed)?
        } else {
            let (_, n) = split_count(spec, 500)?;
            data::digits::scenes(&train, n, data::digits::TASK_B_DIGITS, seed)?
        }
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        data::tensor_file::load(path)?
    } else if path.extension().is_some_and(|e| e == "csv") {
        data::manifest::load(path, opts)?
    } else if path.is_dir() {
        data::image_folder::load(path, opts)?
    } else if !path.exists() {
        return Err(Error::Io {
            path: spec.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory, and not a built-in data set name"),
        }
        .into());
    } else {
        return Err(usage(format!("{spec:?}: expected a built-in data set, a folder, a .csv manifest or a .safetensors file")));
    };
    data.validate()?;
    Ok(data)
}

fn train_config(args: &Args) -> CliResult<TrainConfig> {
    let mut cfg = TrainConfig::default();
    let lr_default = match args.get("optimizer").unwrap_or("sgd") {
        "sgd" => 0.05,
        _ => 1e-3,
    };
    let lr: f32 = args.parsed("lr", lr_default)?;
    let mut opt = match args.get("optimizer").unwrap_or("sgd") {
        "sgd" => Optimizer::sgd(lr).momentum(args.parsed("momentum", 0.9)?).nesterov(args.has("nesterov")),
        "adam" => Optimizer::adam(lr),
        "adamw" => Optimizer::adamw(lr),
        other => return Err(usage(format!("--optimizer must be sgd, adam or adamw, not {other:?}"))),
    };
    if let Some(wd) = args.get("weight-decay") {
        opt = opt.weight_decay(wd.parse().map_err(|_| usage(format!("--weight-decay: cannot read {wd:?}")))?);
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
    cfg.threshold = args.parsed("threshold", 0.5f32)?;
    cfg.trunk_lr_mult = args.parsed("trunk-lr-mult", 1.0f32)?;
    cfg.bce.pos_weight = args.list("pos-weight")?;
    cfg.schedule = match args.get("schedule").unwrap_or("constant") {
        "constant" => Schedule::Constant,
        s if s.starts_with("step:") => {
            let p: Vec<&str> = s.split(':').collect();
            match p.as_slice() {
                [_, every, gamma] => Schedule::Step {
                    every_epochs: every.parse().map_err(|_| usage("--schedule step:EVERY:GAMMA"))?,
                    gamma: gamma.parse().map_err(|_| usage("--schedule step:EVERY:GAMMA"))?,
                },
                _ => return Err(usage("--schedule step:EVERY:GAMMA")),
            }
        }
        s if s.starts_with("cosine") => {
            let warmup =
                s.strip_prefix("cosine:").map(|w| w.parse()).transpose().map_err(|_| usage("--schedule cosine:WARMUP_STEPS"))?.unwrap_or(0);
            Schedule::Cosine { warmup_steps: warmup, min_lr: 0.0 }
        }
        other => return Err(usage(format!("unknown --schedule {other:?}"))),
    };
    Ok(cfg)
}

fn storage(args: &Args) -> StorageDtype {
    if args.has("f16") { StorageDtype::F16 } else { StorageDtype::F32 }
}

/// Saves `net` with what `predict` needs to read images the way training did.
fn save(net: &Network, path: &Path, data: &Dataset, opts: &ImageOptions, dtype: StorageDtype) -> CliResult<()> {
    let mut ckpt = net.to_checkpoint()?;
    let shape: Vec<String> = data.input_shape.iter().map(|d| d.to_string()).collect();
    ckpt.metadata.insert("headswap.input_shape".into(), shape.join(","));
    ckpt.metadata.insert("headswap.label_names".into(), serde_json::to_string(&data.label_names).unwrap_or_default());
    ckpt.metadata.insert("headswap.image_size".into(), format!("{}x{}", opts.size.0, opts.size.1));
    ckpt.metadata.insert("headswap.channels".into(), if opts.channels == Channels::Rgb { "rgb" } else { "gray" }.into());
    checkpoint::save(path, &ckpt, dtype)?;
    eprintln!("saved {}", path.display());
    Ok(())
}

fn print_fit(report: &headswap::train::FitReport, json: bool) {
    if json {
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
        let v = serde_json::json!({
            "epochs": epochs, "best_epoch": report.best_epoch, "lowest_trainable_layer": report.lowest_trainable,
            "cached_features": report.cached_features, "dispatches_per_step": report.dispatches_per_step,
            "submissions_per_step": report.submissions_per_step, "bytes_allocated": report.bytes_allocated, "seconds": report.seconds,
        });
        println!("{v}");
    } else {
        for e in &report.epochs {
            let val = e.validation.as_ref().map(|v| format!("  val loss {:.4} score {:.4}", v.loss, v.score())).unwrap_or_default();
            println!(
                "epoch {:>3}  lr {:.5}  loss {:.4}  score {:.4}{val}  {:.1}s  {:.0} samples/s",
                e.epoch + 1,
                e.lr,
                e.train.loss,
                e.train.score(),
                e.seconds,
                e.samples_per_sec
            );
        }
        println!(
            "{} dispatches and {} submission per step; {} bytes of training state on the GPU{}",
            report.dispatches_per_step,
            report.submissions_per_step,
            report.bytes_allocated,
            if report.cached_features { "; head trained on cached trunk features" } else { "" }
        );
    }
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
            bar.set_message(format!("loss {:.4}  score {:.3}  {:.0} samples/s", r.train.loss, r.train.score(), r.samples_per_sec));
            if r.epoch + 1 == total {
                bar.finish_and_clear();
            }
        }
    })
}

/// `--report DIR`: training curves, and per-label F1 bars for a label head.
fn write_report(dir: Option<&Path>, name: &str, report: &headswap::train::FitReport, label_names: &[String]) -> CliResult<()> {
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

fn cmd_pretrain(args: &Args) -> CliResult<()> {
    let opts = image_options(args)?;
    let cfg = train_config(args)?;
    let data = load_data(args.required("data")?, &opts, cfg.seed)?;
    let out = PathBuf::from(args.required("out")?);
    let arch = args.get("arch").unwrap_or("mlp").to_string();
    let channels: Vec<usize> = args.list("channels")?.unwrap_or_else(|| vec![8, 16]);
    let layers: Vec<usize> = args.list("layers")?.unwrap_or_else(|| if arch == "cnn" { vec![64] } else { vec![128, 64] });
    let act = activation(args)?;
    let epochs = args.parsed("epochs", 10usize)?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let report_dir = args.get("report").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    let gpu = gpu()?;
    let head = head_for(&data, None, act);
    let mut net = match arch.as_str() {
        "mlp" => {
            let mut sizes = vec![data.d];
            sizes.extend(layers);
            Network::mlp(&gpu, &sizes, act, Default::default(), head, cfg.seed)?
        }
        "cnn" => {
            let trunk = demo::cnn_trunk(&data.input_shape, &channels, &layers, act)?;
            Network::from_specs(&gpu, data.d, trunk, Default::default(), head, cfg.seed)?
        }
        other => return Err(usage(format!("--arch must be mlp or cnn, not {other:?}"))),
    };
    eprintln!("network: {}", net.layers().iter().map(|l| l.describe()).collect::<Vec<_>>().join(" | "));
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.fit(&mut net, &data, epochs)?;
    print_fit(&report, json);
    write_report(report_dir.as_deref(), "pretrain", &report, &data.label_names)?;
    save_state(&trainer, &net, state_out.as_deref())?;
    save(&net, &out, &data, &opts, dtype)
}

/// `--save-state PATH`: a training checkpoint (weights + optimizer state, epoch, RNG position)
/// that `headswap resume` continues exactly.
fn save_state(trainer: &Trainer, net: &Network, path: Option<&Path>) -> CliResult<()> {
    if let (Some(p), Some(state)) = (path, trainer.training_state()) {
        state.save(net, p)?;
        eprintln!("saved training state {}", p.display());
    }
    Ok(())
}

fn cmd_resume(args: &Args) -> CliResult<()> {
    let opts = image_options(args)?;
    let cfg = train_config(args)?;
    let data = load_data(args.required("data")?, &opts, cfg.seed)?;
    let state_path = PathBuf::from(args.required("state")?);
    let out = PathBuf::from(args.required("out")?);
    let epochs = args.parsed("epochs", 10usize)?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    let gpu = gpu()?;
    let (mut net, state) = headswap::train::TrainingState::load(&gpu, &state_path)?;
    eprintln!("resuming at epoch {} (step {}) of {epochs}", state.epoch, state.step);
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.resume(&mut net, &data, &state, epochs)?;
    print_fit(&report, json);
    save_state(&trainer, &net, state_out.as_deref())?;
    save(&net, &out, &data, &opts, dtype)
}

fn load_model(gpu: &Gpu, path: &str) -> CliResult<Network> {
    Ok(Network::load(gpu, Path::new(path))?)
}

fn cmd_finetune(args: &Args) -> CliResult<()> {
    let opts = image_options(args)?;
    let cfg = train_config(args)?;
    let data = load_data(args.required("data")?, &opts, cfg.seed)?;
    let from = args.required("from")?.to_string();
    let out = PathBuf::from(args.required("out")?);
    let freeze_s = args.get("freeze").unwrap_or("auto");
    let freeze = Freeze::parse(freeze_s).ok_or_else(|| usage(format!("--freeze must be trunk, all, last:K or auto, not {freeze_s:?}")))?;
    let hidden = args.get("head-hidden").map(|h| h.parse()).transpose().map_err(|_| usage("--head-hidden takes a number of units"))?;
    let act = activation(args)?;
    let recipe =
        args.get("recipe").map(|h| h.parse::<usize>()).transpose().map_err(|_| usage("--recipe takes the number of head-only epochs"))?;
    let epochs = args.parsed("epochs", 10usize)?;
    let report_dir = args.get("report").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    let gpu = gpu()?;
    let mut net = load_model(&gpu, &from)?;
    let swap = net.swap_head(head_for(&data, hidden, act), cfg.seed)?;
    eprint!("{swap}");
    let mut trainer = trainer(&gpu, cfg);
    match recipe {
        Some(head_epochs) => {
            let (a, b) = trainer.fine_tune_recipe(&mut net, &data, head_epochs, epochs)?;
            print_fit(&a, json);
            print_fit(&b, json);
            write_report(report_dir.as_deref(), "finetune_head", &a, &data.label_names)?;
            write_report(report_dir.as_deref(), "finetune_all", &b, &data.label_names)?;
        }
        None => {
            let lowest = trainer.lowest_trainable(&net, &data, freeze)?;
            eprintln!("training layers {lowest}.. of {} (freeze {freeze_s})", net.layers().len());
            let report = trainer.fine_tune(&mut net, &data, freeze, epochs)?;
            print_fit(&report, json);
            write_report(report_dir.as_deref(), "finetune", &report, &data.label_names)?;
        }
    }
    save(&net, &out, &data, &opts, dtype)
}

fn cmd_train(args: &Args) -> CliResult<()> {
    let opts = image_options(args)?;
    let cfg = train_config(args)?;
    let data_path = args.required("data")?;
    if !data_path.ends_with(".safetensors") {
        return Err(usage("train --data takes a .safetensors file with x and y"));
    }
    let data = load_data(data_path, &opts, cfg.seed)?;
    let init = args.required("init")?.to_string();
    let out = PathBuf::from(args.required("out")?);
    let kind = match args.required("loss")? {
        "softmax" => HeadKind::Classes,
        "bce" => HeadKind::Labels,
        other => return Err(usage(format!("--loss must be softmax or bce, not {other:?}"))),
    };
    let epochs = args.parsed("epochs", 1usize)?;
    let state_out = args.get("save-state").map(PathBuf::from);
    let json = args.has("json");
    let dtype = storage(args);
    args.finish()?;
    let gpu = gpu()?;
    let mut net = load_model(&gpu, &init)?;
    net.set_head_kind(kind);
    let mut trainer = trainer(&gpu, cfg);
    let report = trainer.fit(&mut net, &data, epochs)?;
    print_fit(&report, json);
    save_state(&trainer, &net, state_out.as_deref())?;
    save(&net, &out, &data, &opts, dtype)
}

fn cmd_eval(args: &Args) -> CliResult<()> {
    let opts = image_options(args)?;
    let seed = args.parsed("seed", 0u64)?;
    let data = load_data(args.required("data")?, &opts, seed)?;
    let model = args.required("model")?.to_string();
    let json = args.has("json");
    let threshold = args.parsed("threshold", 0.5f32)?;
    args.finish()?;
    let gpu = gpu()?;
    let net = load_model(&gpu, &model)?;
    let trainer = Trainer::new(&gpu, TrainConfig { threshold, ..TrainConfig::default() });
    let m = trainer.evaluate(&net, &data)?;
    if json {
        let labels =
            m.labels.as_ref().map(|l| serde_json::json!({"f1": l.f1, "precision": l.precision, "recall": l.recall, "mean_f1": l.mean_f1}));
        println!("{}", serde_json::json!({"examples": data.n, "loss": m.loss, "accuracy": m.accuracy, "labels": labels}));
    } else {
        println!("{} examples, loss {:.4}", data.n, m.loss);
        if let Some(a) = m.accuracy {
            println!("accuracy {:.2}%", 100.0 * a);
        }
        if let Some(l) = &m.labels {
            for (j, f1) in l.f1.iter().enumerate() {
                let name = data.label_names.get(j).cloned().unwrap_or_else(|| j.to_string());
                println!("{name:>12}  F1 {f1:.3}  precision {:.3}  recall {:.3}", l.precision[j], l.recall[j]);
            }
            println!("{:>12}  F1 {:.3}", "mean", l.mean_f1);
        }
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
    let names: Vec<String> = meta("headswap.label_names").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
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
            println!("{p}: {}", shown.join("  "));
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
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
    if opts.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}
