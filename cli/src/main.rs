//! `wgpu-softmax`: batched softmax and log-softmax on any wgpu adapter, from the command
//! line. Three uses:
//!
//! ```text
//! wgpu-softmax                                   # the self-check: seeded 4096 x 32000
//! wgpu-softmax -i logits.npy -o probs.npy --log  # a .npy file, any float dtype and rank
//! wgpu-softmax report                            # the benchmark report
//! ```
//!
//! Exit status: 0 on success, 1 for a run-time failure (file, GPU, result out of
//! tolerance), 2 for a bad command line. Every failure is one `error: ...` line on
//! stderr; nothing the user or the GPU does makes it panic.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use wgpu_softmax::{Context, MaskedRows, Op, Options};

mod args;
mod file;
mod generated;
mod loss;
mod loss_bench;
mod npy;
mod output;
mod progress;
mod report;
mod sample_bench;

/// Why the CLI stops early.
#[derive(Debug)]
pub enum Failure {
    /// A bad command line: exit status 2.
    Usage(String),
    /// Anything failing at run time (files, GPU, a wrong result): exit status 1.
    Runtime(String),
}

/// The result of every step that can stop the CLI.
pub type Outcome<T> = Result<T, Failure>;

/// A run-time failure with this message.
pub fn runtime(message: impl Display) -> Failure {
    Failure::Runtime(message.to_string())
}

/// `println!` that reports a closed stdout (e.g. `| head -1`) instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
            .map_err(|e| $crate::runtime(format!("cannot write to stdout: {e}")))
    };
}

fn main() -> ExitCode {
    let result = match args::Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => clap_failure(e),
    };
    let (message, code) = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => (format!("{m} (see --help)"), 2),
        Err(Failure::Runtime(m)) => (m, 1),
    };
    // wgpu's messages span lines; the contract is one line per failure. If even stderr
    // is gone, the exit status still tells.
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(std::io::stderr(), "error: {line}");
    ExitCode::from(code)
}

fn run(cli: args::Cli) -> Outcome<()> {
    match cli.command {
        Some(args::Command::Report(report)) => report::run(report.check()?),
        None => {
            let args = cli.softmax.check()?;
            match &args.input {
                Some(path) => file::run(path, &args),
                None => generated::run(&args),
            }
        }
    }
}

/// `--help` and `--version` print and succeed; any other clap error becomes a usage
/// failure of one line: the error's first paragraph, without clap's usage and tips.
fn clap_failure(error: clap::Error) -> Outcome<()> {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        return write!(std::io::stdout(), "{}", error.render())
            .map_err(|e| runtime(format!("cannot write to stdout: {e}")));
    }
    let rendered = error.render().to_string();
    let first = rendered.split("\n\n").next().unwrap_or_default();
    let first = first.trim().strip_prefix("error:").unwrap_or(first).trim();
    Err(Failure::Usage(first.to_string()))
}

/// The adapter the run uses, as one line.
pub fn adapter_line(ctx: &Context) -> String {
    let info = ctx.adapter_info();
    // GL adapters leave `driver` empty and put everything in `driver_info`.
    let driver: Vec<&str> = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    format!(
        "adapter: {} ({:?}, {:?}, driver {})",
        info.name,
        info.backend,
        info.device_type,
        driver.join(" ")
    )
}

/// The options a summary line names: the op and temperature always, the causal mask
/// and masked-row policy only when they are asked for.
pub fn describe(options: &Options) -> String {
    let op = if options.op == Op::LogSoftmax {
        "log-softmax"
    } else {
        "softmax"
    };
    let mut text = format!("op {op}, temperature {}", options.temperature);
    if let Some(offset) = options.causal {
        text += &format!(", causal offset {offset}");
    }
    if options.masked_rows == MaskedRows::Zero {
        text += ", masked rows zero";
    }
    if let Some(cap) = options.softcap {
        text += &format!(", soft-cap {cap}");
    }
    text
}

/// A zeroed vector, or an error instead of an abort when memory runs out (the shape
/// comes from the user).
pub fn zeroed<T: bytemuck::Zeroable + Clone>(len: usize) -> Outcome<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        runtime(format!(
            "cannot allocate {len} values ({} MiB)",
            (len as u64).saturating_mul(std::mem::size_of::<T>() as u64) >> 20
        ))
    })?;
    v.resize(len, T::zeroed());
    Ok(v)
}
