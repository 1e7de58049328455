//! The `softmax` command line: a benchmark and self-check on random logits, and a tool
//! for softmax of real data in `.npy` files, float32 or float16 (a float16 input gives
//! a float16 output; arithmetic is float32 either way).
//!
//! ```text
//! cargo run --release --example softmax -- --rows 256 --cols 32000
//! cargo run --release --example softmax -- --input logits.npy --output probs.npy --log
//! cargo run --release --example softmax -- --input logits_f16.npy --output probs_f16.npy
//! cargo run --release --example softmax -- --input scores.npy --mask mask.npy --causal
//! cargo run --release --example softmax -- --input x.npy --backward --grad dy.npy --output dx.npy
//! ```
//!
//! Exit status: 0 on success, 1 for a run-time failure (file, GPU, result out of
//! tolerance), 2 for a bad command line. Every failure is one `error: ...` line on
//! stderr; nothing the user or the GPU does makes it panic.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wgpu_softmax::internals::bandwidth::CopyKernel;
use wgpu_softmax::internals::reference::{self, Tolerance};
use wgpu_softmax::{block_on, half, wgpu};
use wgpu_softmax::{
    Context, ContextOptions, HostInputs, HostMask, MaskedRows, MatrixView, Op, Options, RowInputs,
    Shape,
};

const USAGE: &str = "\
softmax: batched softmax and log-softmax on the GPU (wgpu)

Usage:
  softmax [--rows N] [--cols N] [--seed N] [--log] [--temperature T]
          [--causal] [--causal-offset K] [--masked-rows nan|zero]
      Softmax of a seeded random normal(0, 3) logit matrix: timed, checked against
      an f64 reference, and compared with a plain copy kernel's bandwidth.
  softmax --input X.npy [--output Y.npy] [--stats S.npy] [--log] [--temperature T]
          [--mask M.npy] [--lengths L.npy] [--temperatures R.npy]
          [--causal] [--causal-offset K] [--masked-rows nan|zero]
      Softmax of each row of a float32 or float16 .npy array (1-D: one row; 2-D:
      rows x cols), computed in float32. Writes Y.npy in the input's shape and dtype,
      or without --output prints a summary.
  softmax --input X.npy --backward --grad DY.npy [--output DX.npy] [--log]
          [--temperature T]
      The gradient dx of softmax (or log-softmax) of X.npy, given the incoming
      gradient DY.npy: y = softmax(x / T), then dx from y and dy, both on the GPU.
      Writes DX.npy in the input's shape and dtype, or without --output prints a
      summary.

Flags:
  --input X.npy     read logits from a little-endian float32 ('<f4') or float16
                    ('<f2') .npy file
  --output Y.npy    write the result to Y.npy (only with --input), in the input's
                    dtype: float16 for a float16 input, rounded to nearest even
  --stats S.npy     also write each row's (max, log-sum-exp) of x / T (with every
                    mask and per-row input applied) as a [rows, 2] float32 array
                    (only with --input)
  --backward        compute the gradient dx of the op instead of its output (only
                    with --input and --grad); takes only --log, --temperature
                    and --masked-rows
  --grad DY.npy     the incoming gradient dy for --backward: float32 ('<f4') or
                    float16 ('<f2'), of the input's shape
  --log             log-softmax instead of softmax
  --temperature T   divide the logits by T (finite, > 0; default 1)
  --mask M.npy      add a float32 or float16 mask to x / T (only with --input):
                    [mask_rows, cols], row r adding mask row r % mask_rows, or 1-D
                    [cols] for every row; -inf masks a column out. Its cols must be
                    the input's
  --lengths L.npy   one valid length per row, 1-D int32 ('<i4', >= 0) or uint32
                    ('<u4') (only with --input): columns at or past a row's
                    length are masked out
  --temperatures R.npy
                    one float32 temperature per row, multiplying T (only with
                    --input); a row whose temperature is not finite and > 0
                    comes out NaN
  --causal          causal mask: row i keeps columns j <= i (+ K)
  --causal-offset K the causal mask's offset K, an integer >= 0 (implies --causal)
  --masked-rows nan|zero
                    what a row with every column masked out gives: NaN (default,
                    as PyTorch) or zero probability (0; log-softmax -inf)
  --rows N          rows of the random matrix (default 4096)
  --cols N          columns of the random matrix (default 32000)
  --seed N          seed of the random matrix (default 42)
  --max-gpu-mib N   GPU memory the host path may hold for staging (default 128):
                    the matrix streams through in chunks of N/4 MiB (at least a row)
  -h, --help        print this help

WGPU_BACKEND (vulkan, gl, metal, dx12) restricts the backends searched.
Exit status: 0 success, 1 run-time error (including a file that does not fit the
input: a mask of other cols, a per-row file of other length, a negative length, a
gradient of another shape, a dtype the flag does not take) or result out of
tolerance, 2 bad usage.
";

const DEFAULT_ROWS: usize = 4096;
const DEFAULT_COLS: usize = 32000;
const DEFAULT_SEED: u64 = 42;
/// Standard deviation of the random logits: wide enough that rows have a clear maximum
/// and tiny probabilities, as real logits do.
const LOGIT_SIGMA: f64 = 3.0;
/// Elements per block of the reference check, bounding its f64 buffer to 8 MiB.
const CHECK_BLOCK_ELEMENTS: usize = 1 << 20;
/// Bytes of the GPU-resident benchmark: large enough to dwarf launch overheads, small
/// enough to fit every device's storage binding.
const RESIDENT_BYTES: u64 = 64 << 20;
/// Kernel runs per submission in the resident benchmark.
const RESIDENT_ITERATIONS: u32 = 5;
/// Rounds of the resident benchmark, softmax and copy taking turns.
const RESIDENT_ROUNDS: usize = 5;
/// How long to wait for the benchmark submissions; software adapters are slow.
const GPU_TIMEOUT: Duration = Duration::from_secs(600);
/// Values of the first row shown by the `--input` summary.
const SUMMARY_VALUES: usize = 8;

/// Why the CLI stops early.
#[derive(Debug)]
enum Failure {
    /// A bad command line: exit status 2.
    Usage(String),
    /// Anything failing at run time (files, GPU, a wrong result): exit status 1.
    Runtime(String),
}

type Outcome<T> = Result<T, Failure>;

fn runtime(message: impl Display) -> Failure {
    Failure::Runtime(message.to_string())
}

/// `println!` that reports a closed stdout (e.g. `| head -1`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
            .map_err(|e| runtime(format!("cannot write to stdout: {e}")))
    };
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args_os().skip(1)).and_then(|command| match command {
        Command::Help => write!(std::io::stdout(), "{USAGE}")
            .map_err(|e| runtime(format!("cannot write to stdout: {e}"))),
        Command::Run(args) => run(&args),
    });
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

// ---------------------------------------------------------------------------------------
// Command line

/// What the command line asks for.
enum Command {
    Help,
    /// Boxed: `Args` is large next to `Help`, and it is made once.
    Run(Box<Args>),
}

/// A checked command line: every combination here is valid.
struct Args {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    stats: Option<PathBuf>,
    /// `--backward`'s gradient file: when given, `--input` computes the gradient.
    grad: Option<PathBuf>,
    files: RowFiles,
    options: Options,
    rows: usize,
    cols: usize,
    seed: u64,
    context: ContextOptions,
}

/// The per-row input files (`--mask`, `--lengths`, `--temperatures`): their sizes
/// depend on the input's shape, so only `--input` can take them.
#[derive(Default)]
struct RowFiles {
    mask: Option<PathBuf>,
    lengths: Option<PathBuf>,
    temperatures: Option<PathBuf>,
}

/// The command line as given, before the checks across flags.
#[derive(Default)]
struct Parsed {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    stats: Option<PathBuf>,
    backward: bool,
    grad: Option<PathBuf>,
    files: RowFiles,
    rows: Option<usize>,
    cols: Option<usize>,
    seed: Option<u64>,
    log: bool,
    temperature: Option<f32>,
    causal: Option<u64>,
    masked_rows: MaskedRows,
    context: ContextOptions,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Outcome<Command> {
    let mut args = args.into_iter();
    let mut parsed = Parsed::default();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.to_str() else {
            return Err(Failure::Usage(format!("unexpected argument {arg:?}")));
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        parsed.apply(flag, &mut args)?;
    }
    parsed.finish().map(|args| Command::Run(Box::new(args)))
}

impl Parsed {
    /// Takes one flag and, if it has one, its value.
    fn apply(&mut self, flag: &str, args: &mut impl Iterator<Item = OsString>) -> Outcome<()> {
        let path = |args: &mut _| value(args, flag).map(PathBuf::from).map(Some);
        match flag {
            "--log" => self.log = true,
            "--input" => self.input = path(args)?,
            "--output" => self.output = path(args)?,
            "--stats" => self.stats = path(args)?,
            "--backward" => self.backward = true,
            "--grad" => self.grad = path(args)?,
            "--mask" => self.files.mask = path(args)?,
            "--lengths" => self.files.lengths = path(args)?,
            "--temperatures" => self.files.temperatures = path(args)?,
            // A bare --causal keeps an offset given before it.
            "--causal" => self.causal = self.causal.or(Some(0)),
            "--causal-offset" => self.causal = Some(parse_offset(&text_value(args, flag)?)?),
            "--masked-rows" => self.masked_rows = parse_masked_rows(&text_value(args, flag)?)?,
            "--temperature" => {
                self.temperature = Some(parse_temperature(&text_value(args, flag)?)?)
            }
            "--rows" => self.rows = Some(parse_count(flag, &text_value(args, flag)?)?),
            "--cols" => self.cols = Some(parse_count(flag, &text_value(args, flag)?)?),
            "--seed" => self.seed = Some(parse_number(flag, &text_value(args, flag)?)?),
            "--max-gpu-mib" => {
                let mib = parse_count(flag, &text_value(args, flag)?)? as u64;
                // Two chunks in flight, each a device buffer and a readback buffer.
                self.context.host_chunk_bytes = mib.saturating_mul(1 << 20) / 4;
            }
            _ if flag.starts_with('-') => {
                return Err(Failure::Usage(format!("unknown flag {flag}")))
            }
            _ => return Err(Failure::Usage(format!("unexpected argument {flag:?}"))),
        }
        Ok(())
    }

    /// Checks the flags against each other and settles the defaults.
    fn finish(self) -> Outcome<Args> {
        self.check_backward()?;
        if self.input.is_some() && (self.rows.is_some() || self.cols.is_some()) {
            return Err(Failure::Usage(
                "--rows and --cols make a random matrix; they do not go with --input".into(),
            ));
        }
        let needs_input = [
            ("--output", self.output.is_some()),
            ("--stats", self.stats.is_some()),
            ("--mask", self.files.mask.is_some()),
            ("--lengths", self.files.lengths.is_some()),
            ("--temperatures", self.files.temperatures.is_some()),
        ];
        if self.input.is_none() {
            if let Some((flag, _)) = needs_input.iter().find(|(_, given)| *given) {
                return Err(Failure::Usage(format!("{flag} needs --input")));
            }
        }
        let mut options = if self.log {
            Options::log_softmax()
        } else {
            Options::softmax()
        };
        options = options
            .with_temperature(self.temperature.unwrap_or(1.0))
            .with_masked_rows(self.masked_rows);
        if let Some(offset) = self.causal {
            options = options.with_causal(offset);
        }
        Ok(Args {
            input: self.input,
            output: self.output,
            stats: self.stats,
            grad: self.grad,
            files: self.files,
            options,
            rows: self.rows.unwrap_or(DEFAULT_ROWS),
            cols: self.cols.unwrap_or(DEFAULT_COLS),
            seed: self.seed.unwrap_or(DEFAULT_SEED),
            context: self.context,
        })
    }

    /// `--backward` and `--grad` come together, with `--input`. The gradient kernel
    /// applies only the op and scalar temperature, so every other forward input is
    /// refused rather than silently left out of dx.
    fn check_backward(&self) -> Outcome<()> {
        match (self.backward, self.grad.is_some()) {
            (false, false) => return Ok(()),
            (false, true) => return Err(Failure::Usage("--grad needs --backward".into())),
            (true, false) => return Err(Failure::Usage("--backward needs --grad DY.npy".into())),
            (true, true) => {}
        }
        if self.input.is_none() {
            return Err(Failure::Usage("--backward needs --input X.npy".into()));
        }
        let forward_only = [
            ("--mask", self.files.mask.is_some()),
            ("--lengths", self.files.lengths.is_some()),
            ("--temperatures", self.files.temperatures.is_some()),
            ("--causal or --causal-offset", self.causal.is_some()),
            ("--stats", self.stats.is_some()),
        ];
        match forward_only.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(Failure::Usage(format!(
                "--backward does not take {flag}: the backward pass takes only --log, \
                 --temperature and --masked-rows (for the forward pass it differentiates)"
            ))),
            None => Ok(()),
        }
    }
}

/// The value after `flag`. A following flag is not taken as the value, so that
/// `--input --log` reports the missing file name instead of reading a file `--log`.
fn value(args: &mut impl Iterator<Item = OsString>, flag: &str) -> Outcome<OsString> {
    match args.next() {
        Some(v) if !v.to_string_lossy().starts_with("--") => Ok(v),
        _ => Err(Failure::Usage(format!("{flag} needs a value"))),
    }
}

fn text_value(args: &mut impl Iterator<Item = OsString>, flag: &str) -> Outcome<String> {
    value(args, flag)?
        .into_string()
        .map_err(|v| Failure::Usage(format!("{flag}: {v:?} is not valid text")))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Outcome<T> {
    text.parse()
        .map_err(|_| Failure::Usage(format!("{flag}: {text:?} is not a valid number")))
}

fn parse_count(flag: &str, text: &str) -> Outcome<usize> {
    match parse_number(flag, text)? {
        0 => Err(Failure::Usage(format!("{flag} must be at least 1, got 0"))),
        n => Ok(n),
    }
}

/// The library checks the temperature too, but only once the GPU is up; checking here
/// makes it a usage error, reported at once.
fn parse_temperature(text: &str) -> Outcome<f32> {
    let t: f32 = parse_number("--temperature", text)?;
    if Options::softmax().with_temperature(t).validate().is_ok() {
        Ok(t)
    } else {
        Err(Failure::Usage(format!(
            "--temperature must be finite and > 0 (at least about 2.9e-39), got {text}"
        )))
    }
}

/// `--causal-offset`: rows count from 0, so a negative offset has no meaning; it is
/// refused rather than read as "no causal mask".
fn parse_offset(text: &str) -> Outcome<u64> {
    text.parse().map_err(|_| {
        Failure::Usage(format!(
            "--causal-offset must be an integer >= 0, got {text:?}"
        ))
    })
}

fn parse_masked_rows(text: &str) -> Outcome<MaskedRows> {
    match text {
        "nan" => Ok(MaskedRows::Nan),
        "zero" => Ok(MaskedRows::Zero),
        _ => Err(Failure::Usage(format!(
            "--masked-rows must be nan or zero, got {text:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Modes

fn run(args: &Args) -> Outcome<()> {
    check_outputs(args)?;
    match &args.input {
        Some(path) => run_file(path, args),
        None => run_generated(args),
    }
}

/// Every output file must be its own: two flags naming one file would have the second
/// write silently replace the first. Checked before anything is read or written, so a
/// clash writes nothing.
fn check_outputs(args: &Args) -> Outcome<()> {
    let outputs: Vec<(&str, &Path)> = [("--output", &args.output), ("--stats", &args.stats)]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path.as_deref()?)))
        .collect();
    for (i, &(first, a)) in outputs.iter().enumerate() {
        for &(second, b) in &outputs[i + 1..] {
            if same_file(a, b) {
                return Err(runtime(format!(
                    "{first} {} and {second} {} name the same file; give each output its own",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    Ok(())
}

/// Whether two paths name one file: the same path, or the same file once resolved
/// (`y.npy` and `./y.npy`, a symbolic link and its target).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// `path` made absolute with every link resolved; a file not there yet is resolved
/// through its directory, and a link to one through the link (writing follows it).
/// None where the directory is not there either (writing there fails anyway).
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut path = path.to_path_buf();
    // Linux follows at most 40 links.
    for _ in 0..40 {
        if let Ok(resolved) = std::fs::canonicalize(&path) {
            return Some(resolved);
        }
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        // A relative target is relative to the link's directory.
        path = path
            .parent()
            .map_or(target.clone(), |dir| dir.join(&target));
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

fn op_name(options: &Options) -> &'static str {
    if options.op == Op::LogSoftmax {
        "log-softmax"
    } else {
        "softmax"
    }
}

fn adapter_line(ctx: &Context) -> String {
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

/// A zeroed vector, or an error instead of an abort when memory runs out (the shape
/// comes from the user).
fn zeroed<T: bytemuck::Zeroable + Clone>(len: usize) -> Outcome<Vec<T>> {
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

/// The element types an `--input` file may hold: read, computed on and written back
/// as the same type (float32 or float16).
trait Logit: npy::Element + wgpu_softmax::Element {}

impl<T: npy::Element + wgpu_softmax::Element> Logit for T {}

/// The library's name of `T`, for the summary.
fn dtype_name<T: Logit>() -> &'static str {
    <T as wgpu_softmax::Element>::DTYPE.name()
}

/// 16-bit `data` widened to f32 (exactly), for the gradient, which the backward pass
/// takes in f32 whatever the input's dtype.
fn widen<T: Logit>(data: &[T]) -> Outcome<Vec<f32>> {
    let mut wide = zeroed(data.len())?;
    for (w, v) in wide.iter_mut().zip(data) {
        *w = v.to_f32();
    }
    Ok(wide)
}

/// An f32 result stored as `T`, rounded to nearest even (f32 results stay as they
/// are, in place).
fn narrow<T: Logit>(data: Vec<f32>) -> Vec<T> {
    data.into_iter()
        .map(<T as wgpu_softmax::Element>::from_f32)
        .collect()
}

/// `--input`: the files are read and checked before the GPU is touched, so a bad file
/// fails fast and with nothing but the error on stderr.
fn run_file(path: &Path, args: &Args) -> Outcome<()> {
    let fail = |e| runtime(format!("{}: {e}", path.display()));
    let raw = npy::open(path).map_err(fail)?;
    match raw.dtype {
        npy::Dtype::F32 => run_typed::<f32>(raw.decode().map_err(fail)?, args),
        npy::Dtype::F16 => run_typed::<half::f16>(raw.decode().map_err(fail)?, args),
        other => Err(fail(format!(
            "the file holds {other} values; the input must be {} or {}",
            npy::Dtype::F32,
            npy::Dtype::F16
        ))),
    }
}

/// `--input` once its dtype is known: the result has the input's dtype.
fn run_typed<T: Logit>(array: npy::Array<T>, args: &Args) -> Outcome<()> {
    let grad = args
        .grad
        .as_deref()
        .map(|p| load_grad(p, &array))
        .transpose()?;
    let row_data = RowData::load(&args.files, array.shape)?;
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    let result = match &grad {
        Some(dy) => compute_backward(&ctx, &array, dy, &args.options)?,
        None => compute_file(&ctx, &array, &row_data, args)?,
    };
    match &args.output {
        Some(out) => npy::write(out, array.shape, array.is_vector, &result)
            .map_err(|e| runtime(format!("cannot write {}: {e}", out.display()))),
        None => print_summary(&ctx, &array, &result, &args.options, grad.is_some()),
    }
}

/// `--grad`: dy pairs with x element for element, and dx is written in x's shape, so
/// the NumPy shapes must agree exactly (a 1-D `(n,)` is not a `(1, n)`). float16 is
/// widened to f32 (exactly), as the backward pass takes.
fn load_grad<T>(path: &Path, input: &npy::Array<T>) -> Outcome<Vec<f32>> {
    let fail = |e| file_failure("--grad", path, e);
    let raw = npy::open(path).map_err(fail)?;
    if (raw.shape, raw.is_vector) != (input.shape, input.is_vector) {
        return Err(fail(format!(
            "shape {} differs from the input's {}",
            raw.shape_text(),
            input.shape_text()
        )));
    }
    match raw.dtype {
        npy::Dtype::F32 => Ok(raw.decode::<f32>().map_err(fail)?.data),
        npy::Dtype::F16 => widen(&raw.decode::<half::f16>().map_err(fail)?.data),
        other => Err(fail(format!(
            "the gradient must be {} or {}, not {other}",
            npy::Dtype::F32,
            npy::Dtype::F16
        ))),
    }
}

/// `--backward`: the library's gradient takes the forward output, not the logits, so
/// the forward op runs first with the same options (op and temperature). The input goes
/// to the GPU in its own dtype; y comes back as f32 (not rounded to a float16 input's
/// dtype), dy is f32 (widened from float16), and dx is computed in f32 and rounded to
/// the input's dtype.
fn compute_backward<T: Logit>(
    ctx: &Context,
    array: &npy::Array<T>,
    dy: &[f32],
    options: &Options,
) -> Outcome<Vec<T>> {
    let (shape, len) = (array.shape, array.data.len());
    let mut y = zeroed::<f32>(len)?;
    block_on(ctx.run(&array.data, &mut y, shape, options, HostInputs::default()))
        .map_err(runtime)?;
    let mut dx = zeroed::<f32>(len)?;
    block_on(ctx.run_backward(&y, dy, &mut dx, shape, options)).map_err(runtime)?;
    drop(y);
    Ok(narrow(dx))
}

/// The GPU part of `--input`, writing `--stats` on the way. The input's own dtype goes
/// to the GPU and the result comes back in it; the statistics are float32 whatever the
/// input's dtype.
fn compute_file<T: Logit>(
    ctx: &Context,
    array: &npy::Array<T>,
    row_data: &RowData,
    args: &Args,
) -> Outcome<Vec<T>> {
    let (shape, options) = (array.shape, &args.options);
    let mut result = zeroed(array.data.len())?;
    let inputs = row_data.host_inputs();
    let Some(path) = &args.stats else {
        block_on(ctx.run(&array.data, &mut result, shape, options, inputs)).map_err(runtime)?;
        return Ok(result);
    };
    let mut stats = zeroed::<[f32; 2]>(shape.rows)?;
    let inputs = inputs.with_stats_out(&mut stats);
    block_on(ctx.run(&array.data, &mut result, shape, options, inputs)).map_err(runtime)?;
    let flat: &[f32] = bytemuck::cast_slice(&stats);
    npy::write(path, Shape::new(stats.len(), 2), false, flat)
        .map_err(|e| runtime(format!("cannot write {}: {e}", path.display())))?;
    Ok(result)
}

/// `--input` without `--output`: what ran where, and the start of the first row;
/// `gradient` labels both as the backward pass's, so dx is not read as probabilities.
fn print_summary<T: Logit>(
    ctx: &Context,
    array: &npy::Array<T>,
    result: &[T],
    options: &Options,
    gradient: bool,
) -> Outcome<()> {
    say!("{}", adapter_line(ctx))?;
    let Shape { rows, cols } = array.shape;
    let described = if gradient {
        format!("gradient of {}", describe(options))
    } else {
        describe(options)
    };
    if array.is_vector {
        say!("shape: {cols} (1-D, one row; {described})")?;
    } else {
        say!("shape: {rows} x {cols} ({described})")?;
    }
    let dtype = dtype_name::<T>();
    say!("dtype: {dtype} in, {dtype} out (float32 arithmetic)")?;
    let shown: Vec<String> = result
        .iter()
        .take(cols.min(SUMMARY_VALUES))
        .map(|v| format!("{:?}", v.to_f32()))
        .collect();
    let more = if cols > SUMMARY_VALUES { ", ..." } else { "" };
    let label = if gradient {
        "gradient, first row"
    } else {
        "first row"
    };
    say!("{label}: [{}{more}]", shown.join(", "))
}

/// The options a summary line names: the op and temperature always, the causal mask
/// and masked-row policy only when they are asked for.
fn describe(options: &Options) -> String {
    let mut text = format!(
        "op {}, temperature {}",
        op_name(options),
        options.temperature
    );
    if let Some(offset) = options.causal {
        text += &format!(", causal offset {offset}");
    }
    if options.masked_rows == MaskedRows::Zero {
        text += ", masked rows zero";
    }
    text
}

/// No `--input`: the benchmark and self-check.
fn run_generated(args: &Args) -> Outcome<()> {
    let shape = Shape::new(args.rows, args.cols);
    let len = shape.len().map_err(runtime)?;
    let input = random_logits(len, args.seed)?;
    let mut output = zeroed(len)?;
    let options = &args.options;
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    say!("{}", adapter_line(&ctx))?;
    say!(
        "shape: {} x {} ({})",
        shape.rows,
        shape.cols,
        describe(options)
    )?;
    // The first call builds the pipeline, which depends on the row length only: one
    // row keeps shader compilation out of the timing.
    let first_row = Shape::new(1, shape.cols);
    block_on(ctx.run(
        &input[..shape.cols],
        &mut output[..shape.cols],
        first_row,
        options,
        HostInputs::default(),
    ))
    .map_err(runtime)?;
    let start = Instant::now();
    block_on(ctx.run(&input, &mut output, shape, options, HostInputs::default()))
        .map_err(runtime)?;
    let seconds = start.elapsed().as_secs_f64();
    say!(
        "time: {:.1} ms (host path: upload, compute, readback)",
        seconds * 1e3
    )?;
    say!(
        "throughput: {:.1} M elements/s, {:.2} GB/s (read + write of f32)",
        len as f64 / seconds / 1e6,
        len as f64 * 8.0 / seconds / 1e9
    )?;
    check(&input, &output, shape.cols, options)?;
    bench_resident(&ctx, &input, shape, options)
}

/// Compares with the f64 reference a block of rows at a time: a full-size f64 copy of
/// the default matrix would take another gigabyte.
fn check(input: &[f32], output: &[f32], cols: usize, options: &Options) -> Outcome<()> {
    let tolerance = Tolerance::for_op(options.op);
    let block = cols * (CHECK_BLOCK_ELEMENTS / cols).max(1);
    let mut max_error = 0.0f64;
    let mut first_bad = None;
    for (i, (x, y)) in input.chunks(block).zip(output.chunks(block)).enumerate() {
        let block_options = causal_from_row(options, i * block / cols);
        let expected = reference::softmax_f64_with(x, cols, &block_options, &HostInputs::default());
        max_error = max_error.max(reference::max_abs_error(y, &expected));
        if first_bad.is_none() {
            first_bad = reference::first_mismatch(y, &expected, tolerance)
                .map(|(at, got, want)| (i * block + at, got, want));
        }
    }
    let verdict = if first_bad.is_none() { "ok" } else { "FAILED" };
    say!(
        "max abs error vs f64 reference: {max_error:.1e} (tolerance {:e} + {:e}*|r|): {verdict}",
        tolerance.abs,
        tolerance.rel
    )?;
    match first_bad {
        None => Ok(()),
        Some((at, got, want)) => Err(runtime(format!(
            "element [{}, {}] is {got}, the f64 reference {want}: outside the tolerance",
            at / cols,
            at % cols
        ))),
    }
}

/// `options` for a block of rows starting at `first_row`: the reference counts causal
/// rows from the first row it is given, so the offset moves by the rows before it.
fn causal_from_row(options: &Options, first_row: usize) -> Options {
    match options.causal {
        Some(offset) => options.with_causal(offset.saturating_add(first_row as u64)),
        None => *options,
    }
}

// ---------------------------------------------------------------------------------------
// Per-row inputs

/// The per-row inputs read from their files and checked against the input's shape.
#[derive(Default)]
struct RowData {
    /// The mask's values and its row count.
    mask: Option<(Mask, usize)>,
    lengths: Option<Vec<u32>>,
    temperatures: Option<Vec<f32>>,
}

impl RowData {
    /// Reads every file given. Sizes are checked here rather than left to the library,
    /// so that a wrong file is named and fails before the GPU is touched.
    fn load(files: &RowFiles, shape: Shape) -> Outcome<Self> {
        Ok(RowData {
            mask: files
                .mask
                .as_deref()
                .map(|p| load_mask(p, shape.cols))
                .transpose()?,
            lengths: files
                .lengths
                .as_deref()
                .map(|p| load_lengths(p, shape.rows))
                .transpose()?,
            temperatures: files
                .temperatures
                .as_deref()
                .map(|p| load_temperatures(p, shape.rows))
                .transpose()?,
        })
    }

    fn host_inputs(&self) -> HostInputs<'_> {
        HostInputs {
            mask: self.mask.as_ref().map(|(mask, rows)| match mask {
                Mask::F32(m) => HostMask::new(m, *rows),
                Mask::F16(m) => HostMask::new(m, *rows),
            }),
            lengths: self.lengths.as_deref(),
            temperatures: self.temperatures.as_deref(),
            ..HostInputs::default()
        }
    }
}

/// A mask's values as the file stores them: a float16 mask goes to the GPU as float16.
enum Mask {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

/// A failure of the file given to `flag`, naming both.
fn file_failure(flag: &str, path: &Path, message: impl Display) -> Failure {
    runtime(format!("{flag} {}: {message}", path.display()))
}

/// `--mask`: `[mask_rows, cols]` float32 or float16, or `[cols]` for one row shared by
/// all.
fn load_mask(path: &Path, cols: usize) -> Outcome<(Mask, usize)> {
    let fail = |e| file_failure("--mask", path, e);
    let raw = npy::open(path).map_err(fail)?;
    if raw.shape.cols != cols {
        return Err(fail(format!(
            "the mask has {} columns but the input has {cols}",
            raw.shape.cols
        )));
    }
    let rows = raw.shape.rows;
    let mask = match raw.dtype {
        npy::Dtype::F32 => Mask::F32(raw.decode().map_err(fail)?.data),
        npy::Dtype::F16 => Mask::F16(raw.decode().map_err(fail)?.data),
        other => {
            return Err(fail(format!(
                "the mask must be {} or {}, not {other}",
                npy::Dtype::F32,
                npy::Dtype::F16
            )))
        }
    };
    Ok((mask, rows))
}

/// `--lengths`: int32 or uint32, as NumPy and PyTorch users hold lengths; a negative
/// int32 length has no meaning and is refused rather than wrapped to a huge one.
fn load_lengths(path: &Path, rows: usize) -> Outcome<Vec<u32>> {
    let fail = |e| file_failure("--lengths", path, e);
    let raw = npy::open(path).map_err(fail)?;
    match raw.dtype {
        npy::Dtype::U32 => per_row::<u32>(raw, rows).map_err(fail),
        npy::Dtype::I32 => {
            let signed = per_row::<i32>(raw, rows).map_err(fail)?;
            signed
                .iter()
                .enumerate()
                .map(|(row, &n)| {
                    u32::try_from(n)
                        .map_err(|_| fail(format!("row {row} has a negative length ({n})")))
                })
                .collect()
        }
        other => Err(fail(format!(
            "lengths must be int32 ('<i4') or uint32 ('<u4'), not {other}"
        ))),
    }
}

/// `--temperatures`: one float32 per row.
fn load_temperatures(path: &Path, rows: usize) -> Outcome<Vec<f32>> {
    let fail = |e| file_failure("--temperatures", path, e);
    per_row::<f32>(npy::open(path).map_err(fail)?, rows).map_err(fail)
}

/// The values of a 1-D file holding one value per input row.
fn per_row<T: npy::Element>(raw: npy::Raw, rows: usize) -> Result<Vec<T>, String> {
    if !raw.is_vector {
        return Err(format!(
            "shape {} is not 1-D: one value per row is needed",
            raw.shape_text()
        ));
    }
    if raw.shape.cols != rows {
        return Err(format!(
            "holds {} values but the input has {rows} rows",
            raw.shape.cols
        ));
    }
    Ok(raw.decode::<T>()?.data)
}

// ---------------------------------------------------------------------------------------
// Random logits

/// SplitMix64 (Steele, Lea and Flood, 2014): a few lines, seedable, and plenty random
/// for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm in Box-Muller stays finite.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// `len` normal(0, LOGIT_SIGMA) values by Box-Muller, two per pair of uniforms.
fn random_logits(len: usize, seed: u64) -> Outcome<Vec<f32>> {
    let mut rng = SplitMix64(seed);
    let mut data = zeroed(len)?;
    for pair in data.chunks_mut(2) {
        let radius = LOGIT_SIGMA * (-2.0 * rng.next_unit().ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * rng.next_unit()).sin_cos();
        for (slot, v) in pair.iter_mut().zip([cos, sin]) {
            *slot = (radius * v) as f32;
        }
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------
// GPU-resident benchmark

/// Runs `f` inside wgpu error scopes: a validation, out-of-memory or internal error
/// comes back as an `error:` line instead of reaching wgpu's default handler, which
/// panics.
fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Outcome<T> {
    let scopes = [
        wgpu::ErrorFilter::OutOfMemory,
        wgpu::ErrorFilter::Validation,
        wgpu::ErrorFilter::Internal,
    ]
    .map(|filter| device.push_error_scope(filter));
    let value = f();
    // Scopes nest, so all are popped, innermost first, before any result is looked at.
    let popped: Vec<_> = scopes.into_iter().rev().map(|s| s.pop()).collect();
    for error in popped {
        if let Some(e) = block_on(error) {
            return Err(runtime(format!("wgpu: {e}")));
        }
    }
    Ok(value)
}

/// Times softmax against a plain copy of the same bytes, both on data already on the
/// GPU: the host path's time includes PCIe transfers, which say nothing of the kernel.
fn bench_resident(ctx: &Context, input: &[f32], shape: Shape, options: &Options) -> Outcome<()> {
    let caps = ctx.caps();
    // A multiple of 16, so rounding the buffers up to whole vec4s stays in the budget.
    let budget = RESIDENT_BYTES
        .min(caps.max_storage_binding_size)
        .min(caps.max_buffer_size)
        & !15;
    let row_bytes = shape.cols as u64 * 4;
    let rows = usize::try_from(budget / row_bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, shape.rows);
    let resident = Shape::new(rows, shape.cols);
    let elements = rows * shape.cols;
    let bytes = (elements as u64 * 4).next_multiple_of(16);

    let device = ctx.device();
    let (src, dst) = scoped(device, || {
        let buffer = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (
            buffer("softmax cli resident in"),
            buffer("softmax cli resident out"),
        );
        ctx.queue()
            .write_buffer(&src, 0, bytemuck::cast_slice(&input[..elements]));
        (src, dst)
    })?;
    let copy_kernel = CopyKernel::new(device, ctx.queue())
        .and_then(|k| k.bind(&src, &dst, bytes))
        .map_err(runtime)?;

    let softmax = |encoder: &mut wgpu::CommandEncoder| {
        ctx.encode(
            encoder,
            MatrixView::new(&src),
            MatrixView::new(&dst),
            resident,
            options,
            &RowInputs::NONE,
        )
        .map_err(runtime)
    };
    let copy = |encoder: &mut wgpu::CommandEncoder| {
        copy_kernel.record(encoder);
        Ok(())
    };
    let (softmax_rate, copy_rate, ratio) = compare_rates(ctx, elements, softmax, copy)?;
    say!(
        "resident softmax: {:.1} M elements/s ({} x {} on the GPU, {} runs per submission, \
         median of {} rounds)",
        softmax_rate / 1e6,
        resident.rows,
        resident.cols,
        RESIDENT_ITERATIONS,
        RESIDENT_ROUNDS
    )?;
    say!("copy kernel: {:.1} M elements/s", copy_rate / 1e6)?;
    say!("softmax / copy: {ratio:.2} (median of the per-round ratios)")
}

/// One warm-up run of each (pipeline creation, first touch of the buffers), then
/// `RESIDENT_ROUNDS` rounds in which each records `RESIDENT_ITERATIONS` runs into one
/// submission, timed from submit until the GPU is done. The two take turns within a
/// round, so a slow spell of a shared machine hits both: their ratio is taken per round.
/// Returns both median rates (elements/s) and the median ratio.
fn compare_rates(
    ctx: &Context,
    elements: usize,
    mut softmax: impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
    mut copy: impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
) -> Outcome<(f64, f64, f64)> {
    submit_and_wait(ctx, 1, &mut softmax)?;
    submit_and_wait(ctx, 1, &mut copy)?;
    let rate = |seconds: f64| elements as f64 * f64::from(RESIDENT_ITERATIONS) / seconds;
    let (mut s, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESIDENT_ROUNDS {
        let a = rate(submit_and_wait(ctx, RESIDENT_ITERATIONS, &mut softmax)?);
        let b = rate(submit_and_wait(ctx, RESIDENT_ITERATIONS, &mut copy)?);
        s.push(a);
        c.push(b);
        r.push(a / b);
    }
    Ok((median(s), median(c), median(r)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn submit_and_wait(
    ctx: &Context,
    iterations: u32,
    record: &mut impl FnMut(&mut wgpu::CommandEncoder) -> Outcome<()>,
) -> Outcome<f64> {
    let device = ctx.device();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("softmax cli benchmark"),
    });
    for _ in 0..iterations {
        record(&mut encoder)?;
    }
    let start = Instant::now();
    let submission = scoped(device, || ctx.queue().submit([encoder.finish()]))?;
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(GPU_TIMEOUT),
        })
        .map_err(|e| runtime(format!("waiting for the GPU: {e}")))?;
    Ok(start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// .npy files

/// A minimal reader and writer of NumPy's `.npy` format (versions 1.0 to 3.0) for
/// little-endian arrays of rank 1 or 2, C order: float32, float16, int32 and uint32 are
/// read, float32 and float16 written.
mod npy {
    use std::fmt;
    use std::io::Write;
    use std::path::Path;

    use wgpu_softmax::{half, Shape};

    const MAGIC: &[u8] = b"\x93NUMPY";
    /// NumPy pads the header so the data starts on a 64-byte boundary.
    const ALIGN: usize = 64;

    /// The element types the reader knows, each decoded (and written) by an
    /// [`Element`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Dtype {
        F16,
        F32,
        I32,
        U32,
    }

    impl Dtype {
        const ALL: [Dtype; 4] = [Dtype::F16, Dtype::F32, Dtype::I32, Dtype::U32];

        /// The little-endian descr NumPy writes for it.
        fn descr(self) -> &'static str {
            match self {
                Dtype::F16 => "<f2",
                Dtype::F32 => "<f4",
                Dtype::I32 => "<i4",
                Dtype::U32 => "<u4",
            }
        }

        /// Bytes per element.
        fn size(self) -> usize {
            match self {
                Dtype::F16 => 2,
                Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            }
        }
    }

    impl fmt::Display for Dtype {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let name = match self {
                Dtype::F16 => "float16",
                Dtype::F32 => "float32",
                Dtype::I32 => "int32",
                Dtype::U32 => "uint32",
            };
            write!(f, "{name} ('{}')", self.descr())
        }
    }

    /// An element type the reader decodes and the writer encodes: its bytes are
    /// `DTYPE.size()` little-endian bytes.
    pub trait Element: Sized + Copy {
        const DTYPE: Dtype;
        /// The value of `DTYPE.size()` bytes.
        fn from_le(bytes: &[u8]) -> Self;
        /// The value's `DTYPE.size()` bytes.
        fn to_le(self) -> impl AsRef<[u8]>;
    }

    /// `N` bytes as an array; every caller passes chunks of exactly the dtype's size.
    fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(bytes);
        a
    }

    macro_rules! element {
        ($type:ty, $dtype:ident) => {
            impl Element for $type {
                const DTYPE: Dtype = Dtype::$dtype;
                fn from_le(bytes: &[u8]) -> Self {
                    <$type>::from_le_bytes(array(bytes))
                }
                fn to_le(self) -> impl AsRef<[u8]> {
                    self.to_le_bytes()
                }
            }
        };
    }
    element!(f32, F32);
    element!(i32, I32);
    element!(u32, U32);

    /// float16, as its bits.
    impl Element for half::f16 {
        const DTYPE: Dtype = Dtype::F16;
        fn from_le(bytes: &[u8]) -> Self {
            half::f16::from_le_bytes(array(bytes))
        }
        fn to_le(self) -> impl AsRef<[u8]> {
            self.to_le_bytes()
        }
    }

    /// An array read from a file.
    pub struct Array<T> {
        /// 1-D arrays are one row.
        pub shape: Shape,
        /// Whether the file held a 1-D array, so the output can keep that shape.
        pub is_vector: bool,
        pub data: Vec<T>,
    }

    impl<T> Array<T> {
        /// The shape as NumPy writes it, for messages.
        pub fn shape_text(&self) -> String {
            describe_shape(self.shape, self.is_vector)
        }
    }

    /// A checked file whose values are not decoded yet: the caller picks the element
    /// type from `dtype`, or refuses it.
    pub struct Raw {
        pub shape: Shape,
        pub is_vector: bool,
        pub dtype: Dtype,
        bytes: Vec<u8>,
        /// Where the data starts in `bytes`.
        data_at: usize,
    }

    impl Raw {
        /// The values as `T`, or an error if the file holds another dtype.
        pub fn decode<T: Element>(self) -> Result<Array<T>, String> {
            if self.dtype != T::DTYPE {
                return Err(format!(
                    "the file holds {} values; {} is needed",
                    self.dtype,
                    T::DTYPE
                ));
            }
            let data = self.bytes[self.data_at..]
                .chunks_exact(T::DTYPE.size())
                .map(T::from_le)
                .collect();
            Ok(Array {
                shape: self.shape,
                is_vector: self.is_vector,
                data,
            })
        }

        /// The shape as NumPy writes it, for messages.
        pub fn shape_text(&self) -> String {
            describe_shape(self.shape, self.is_vector)
        }
    }

    /// Reads and checks a file of any dtype the reader knows.
    pub fn open(path: &Path) -> Result<Raw, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        parse(bytes)
    }

    fn parse(bytes: Vec<u8>) -> Result<Raw, String> {
        if !bytes.starts_with(MAGIC) {
            return Err("not an .npy file (no \\x93NUMPY magic)".into());
        }
        let truncated = || "truncated .npy header".to_string();
        let (len, start) = match bytes.get(MAGIC.len()) {
            Some(1) => (le_u16(&bytes, 8).ok_or_else(truncated)? as usize, 10),
            Some(2 | 3) => (le_u32(&bytes, 8).ok_or_else(truncated)? as usize, 12),
            Some(v) => return Err(format!("unsupported .npy format version {v}")),
            None => return Err(truncated()),
        };
        let header = bytes.get(start..start + len).ok_or_else(truncated)?;
        let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
        let (shape, is_vector, dtype) = parse_header(header)?;
        let data_at = start + len;
        check_data_len(bytes.len() - data_at, shape, is_vector, dtype)?;
        Ok(Raw {
            shape,
            is_vector,
            dtype,
            bytes,
            data_at,
        })
    }

    /// The data must be exactly the shape's bytes: fewer is a truncated file, more is
    /// not what the header says.
    fn check_data_len(
        actual: usize,
        shape: Shape,
        is_vector: bool,
        dtype: Dtype,
    ) -> Result<(), String> {
        // Shape::len checks that the count of 4-byte elements fits a usize; 2-byte
        // elements take fewer bytes still.
        let needed = shape.len().map_err(|e| e.to_string())? * dtype.size();
        if actual == needed {
            return Ok(());
        }
        Err(format!(
            "shape {} needs {needed} bytes of data but the file has {actual}{}",
            describe_shape(shape, is_vector),
            if actual < needed { " (truncated)" } else { "" },
        ))
    }

    fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
    }

    fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    }

    /// Checks the header dict and returns the matrix shape, whether it is 1-D, and the
    /// dtype.
    fn parse_header(header: &str) -> Result<(Shape, bool, Dtype), String> {
        let mut parser = Parser { rest: header };
        let entries = parser.dict()?;
        if !parser.rest.trim().is_empty() {
            return Err("malformed .npy header: text after the dict".into());
        }
        let field = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("the .npy header lacks '{key}'"))
        };
        let dtype = parse_dtype(field("descr")?)?;
        match field("fortran_order")? {
            Value::Bool(false) => {}
            Value::Bool(true) => {
                return Err("Fortran-order (column-major) arrays are not supported".into())
            }
            _ => return Err("malformed .npy header: 'fortran_order' is not a bool".into()),
        }
        let Value::Tuple(dims) = field("shape")? else {
            return Err("malformed .npy header: 'shape' is not a tuple".into());
        };
        let (shape, is_vector) = match dims[..] {
            [cols] => (Shape::new(1, cols), true),
            [rows, cols] => (Shape::new(rows, cols), false),
            _ => {
                return Err(format!(
                    "shape {} has rank {}; only 1-D (one row) and 2-D (rows, cols) arrays \
                     are supported",
                    tuple(dims),
                    dims.len()
                ))
            }
        };
        if shape.is_empty() {
            return Err(format!(
                "shape {} has an empty axis; every array here needs at least one element",
                tuple(dims)
            ));
        }
        Ok((shape, is_vector, dtype))
    }

    fn parse_dtype(descr: &Value) -> Result<Dtype, String> {
        let Value::Str(d) = descr else {
            return Err("malformed .npy header: 'descr' is not a string".into());
        };
        if let Some(dtype) = Dtype::ALL.into_iter().find(|t| t.descr() == d) {
            return Ok(dtype);
        }
        if d.starts_with('>') {
            Err(format!(
                "big-endian data ('{d}') is not supported; save it little-endian"
            ))
        } else {
            // The reader does not know which file this is, so it names every use.
            Err(format!(
                "unsupported dtype '{d}': arrays are float32 ('<f4') or float16 ('<f2'), \
                 or for --lengths int32 ('<i4') or uint32 ('<u4')"
            ))
        }
    }

    /// A Python tuple, as NumPy writes shapes: `(3,)`, `(2, 3)`.
    fn tuple(dims: &[usize]) -> String {
        match dims {
            [one] => format!("({one},)"),
            _ => format!(
                "({})",
                dims.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn describe_shape(shape: Shape, is_vector: bool) -> String {
        if is_vector {
            tuple(&[shape.cols])
        } else {
            tuple(&[shape.rows, shape.cols])
        }
    }

    /// The values an `.npy` header dict holds.
    enum Value {
        Str(String),
        Bool(bool),
        Tuple(Vec<usize>),
    }

    /// A recursive-descent parser of the Python literal subset NumPy writes.
    struct Parser<'a> {
        rest: &'a str,
    }

    impl Parser<'_> {
        fn error(&self) -> String {
            let near: String = self.rest.chars().take(20).collect();
            format!("malformed .npy header near {near:?}")
        }

        /// Skips white space and takes `token` if it comes next.
        fn eat(&mut self, token: &str) -> bool {
            self.rest = self.rest.trim_start();
            match self.rest.strip_prefix(token) {
                Some(rest) => {
                    self.rest = rest;
                    true
                }
                None => false,
            }
        }

        fn expect(&mut self, token: &str) -> Result<(), String> {
            if self.eat(token) {
                Ok(())
            } else {
                Err(self.error())
            }
        }

        /// `{key: value, ...}`, trailing comma allowed. A key given twice keeps its
        /// last value, as in Python (NumPy reads the header with `ast.literal_eval`).
        fn dict(&mut self) -> Result<Vec<(String, Value)>, String> {
            self.expect("{")?;
            let mut entries: Vec<(String, Value)> = Vec::new();
            while !self.eat("}") {
                let key = self.string()?;
                self.expect(":")?;
                let value = self.value()?;
                match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = value,
                    None => entries.push((key, value)),
                }
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
            Ok(entries)
        }

        fn value(&mut self) -> Result<Value, String> {
            if self.eat("True") {
                Ok(Value::Bool(true))
            } else if self.eat("False") {
                Ok(Value::Bool(false))
            } else if self.rest.starts_with('(') {
                self.tuple().map(Value::Tuple)
            } else {
                self.string().map(Value::Str)
            }
        }

        /// A quoted string without escapes (NumPy's keys and dtype strings have none).
        fn string(&mut self) -> Result<String, String> {
            self.rest = self.rest.trim_start();
            let quote = match self.rest.chars().next() {
                Some(q @ ('\'' | '"')) => q,
                _ => return Err(self.error()),
            };
            let body = &self.rest[1..];
            let end = body.find(quote).ok_or_else(|| self.error())?;
            self.rest = &body[end + 1..];
            Ok(body[..end].to_string())
        }

        /// `()`, `(n,)`, `(a, b)`, `(a, b,)`: non-negative integers.
        fn tuple(&mut self) -> Result<Vec<usize>, String> {
            self.expect("(")?;
            let mut items = Vec::new();
            while !self.eat(")") {
                let digits = self.rest.len()
                    - self
                        .rest
                        .trim_start_matches(|c: char| c.is_ascii_digit())
                        .len();
                let item = self.rest[..digits].parse().map_err(|_| self.error())?;
                self.rest = &self.rest[digits..];
                items.push(item);
                if !self.eat(",") {
                    self.expect(")")?;
                    break;
                }
            }
            Ok(items)
        }
    }

    /// Writes `data` as a version 1.0 file of `T`'s dtype (`<f4`, `<f2`, ...) and the
    /// given shape (1-D if `is_vector`).
    pub fn write<T: Element>(
        path: &Path,
        shape: Shape,
        is_vector: bool,
        data: &[T],
    ) -> std::io::Result<()> {
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
            T::DTYPE.descr(),
            describe_shape(shape, is_vector)
        );
        // Magic, version and length take 10 bytes; the header ends with '\n'.
        let unpadded = MAGIC.len() + 4 + header.len() + 1;
        header.extend(std::iter::repeat_n(
            ' ',
            unpadded.next_multiple_of(ALIGN) - unpadded,
        ));
        header.push('\n');
        let len = u16::try_from(header.len()).map_err(std::io::Error::other)?;
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        file.write_all(MAGIC)?;
        file.write_all(&[1, 0])?;
        file.write_all(&len.to_le_bytes())?;
        file.write_all(header.as_bytes())?;
        for &v in data {
            file.write_all(v.to_le().as_ref())?;
        }
        file.flush()
    }
}
