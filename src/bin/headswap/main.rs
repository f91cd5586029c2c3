//! The `headswap` command line. Every failure is one readable line on stderr and a non-zero exit
//! (2 for a usage mistake, 1 for anything else); logs go to stderr under `RUST_LOG`.
//!
//! `args` is the grammar (clap), `data` reads `--data`, `model` reads and writes model files,
//! `options` turns training options into a `TrainConfig` and checks outputs before any work,
//! `output` prints (epoch lines as they happen, JSON, reports), `commands` has one file per
//! command, and `bench` is the benchmarks `headswap bench` runs (workloads, CPU baseline, report).

#[macro_use]
mod output;
mod args;
mod bench;
mod commands;
mod data;
mod heads;
mod model;
mod options;
mod replicas;

use args::{Cli, Command, Given};
use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use headswap::{Error, Gpu};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

/// A CLI failure: a usage mistake, a library error, or a run that must not be saved.
pub enum CliError {
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

pub type CliResult<T> = Result<T, CliError>;

pub fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

pub fn failed(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
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
        // colour codes in a log file or a CI log are noise
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let command_name = typed_command(&argv);
    if let Err(e) = replicas::init() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let result = match args::parse(&argv) {
        Ok((cli, given)) => run(cli, &given, &argv),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => Err(usage(clap_message(&e, command_name.as_deref()))),
    };
    // in an MPI job the rank says whose failure it is; the job then ends on every rank
    let (rank, size) = replicas::place();
    let who = if size > 1 { format!("rank {rank} of {size}: ") } else { String::new() };
    let code = match result {
        Ok(()) => {
            replicas::finish();
            return ExitCode::SUCCESS;
        }
        Err(CliError::Usage(m)) => {
            let help = command_name.map_or("headswap --help".to_string(), |c| format!("headswap {c} --help"));
            eprintln!("error: {who}{m} (see `{help}`)");
            2
        }
        Err(CliError::Lib(e)) => {
            eprintln!("error: {who}{e}");
            1
        }
        Err(CliError::Failed(m)) => {
            eprintln!("error: {who}{m}");
            1
        }
    };
    replicas::abort_job(code);
    ExitCode::from(code)
}

fn run(cli: Cli, given: &Given, argv: &[OsString]) -> CliResult<()> {
    use commands::*;
    let (_, size) = replicas::place();
    if size > 1 && !matches!(cli.command, Command::Pretrain(_) | Command::Finetune(_) | Command::Train(_) | Command::Resume(_)) {
        return Err(usage(format!(
            "only pretrain, finetune, train and resume run data-parallel; run this command without mpirun (this job has {size} processes)"
        )));
    }
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Pretrain(a) => pretrain::run(a, given),
        Command::Finetune(a) => finetune::run(a, given),
        Command::Train(a) => train::run(a, given),
        Command::Resume(a) => resume::run(a, given, argv),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// The command named on the command line (its proper name, also when an alias was typed), for
/// pointing a usage error at that command's `--help`.
fn typed_command(argv: &[OsString]) -> Option<String> {
    let typed = argv.get(1)?.to_str()?;
    Cli::command().find_subcommand(typed).map(|c| c.get_name().to_string())
}

/// One line for a clap error, in the words the rest of the CLI uses: "pretrain needs --out
/// <CKPT>", "info does not take --foo", "--out needs a value", else clap's own first line, with
/// its tips (a similar flag, a similar command) on the same line.
pub fn clap_message(e: &clap::Error, command: Option<&str>) -> String {
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    let cmd = command.unwrap_or("headswap");
    let did_you_mean = |kind| text(kind).map_or(String::new(), |s| format!(" (did you mean {s}?)"));
    match (e.kind(), text(ContextKind::InvalidArg)) {
        (ErrorKind::InvalidSubcommand, _) => {
            let name = text(ContextKind::InvalidSubcommand).unwrap_or_default();
            format!("unknown command {name:?}{}", did_you_mean(ContextKind::SuggestedSubcommand))
        }
        (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with('-') => {
            format!("{cmd} does not take {arg}{}", did_you_mean(ContextKind::SuggestedArg))
        }
        (ErrorKind::UnknownArgument, Some(arg)) => format!("{cmd} does not take an argument {arg:?}"),
        (ErrorKind::MissingRequiredArgument, Some(args)) => format!("{cmd} needs {args}"),
        // `--out` given last, with nothing after it
        (ErrorKind::InvalidValue, Some(arg)) if text(ContextKind::InvalidValue).is_some_and(|v| v.is_empty()) => {
            format!("{} needs a value", arg.split(' ').next().unwrap_or(&arg))
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let tips: Vec<&str> = lines.filter_map(|l| l.strip_prefix("tip: ")).collect();
            if tips.is_empty() { first.to_string() } else { format!("{first} ({})", tips.join("; ")) }
        }
    }
}

pub fn gpu() -> CliResult<Gpu> {
    replicas::gpu().map_err(|e| match (e, std::env::var("WGPU_ADAPTER_NAME")) {
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
