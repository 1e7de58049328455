//! The command line, parsed by clap, then checked across flags into an [`Args`] (or a
//! [`ReportArgs`](crate::report::Args)) in which every combination is valid.
//!
//! Every flag keeps the name and meaning it had when the tool was the `softmax`
//! example: scripts depend on them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use wgpu_softmax::{ContextOptions, CrossEntropy, MaskedRows, Options, Reduction, Sampling};

use crate::{Failure, Outcome};

const DEFAULT_ROWS: usize = 4096;
const DEFAULT_COLS: usize = 32000;
const DEFAULT_SEED: u64 = 42;
/// `--max-gpu-mib`'s default.
const DEFAULT_GPU_MIB: u64 = 128;

const USAGE: &str = "\
wgpu-softmax [--rows N] [--cols N] [--seed N] [--log] [--temperature T] [--softcap C]
                    [--causal] [--causal-offset K] [--masked-rows nan|zero]
       wgpu-softmax --input X.npy [--output Y.npy] [--stats S.npy] [--log] [--temperature T]
                    [--softcap C]
                    [--mask M.npy] [--lengths L.npy] [--temperatures R.npy]
                    [--causal] [--causal-offset K] [--masked-rows nan|zero]
       wgpu-softmax --input X.npy --backward --grad DY.npy [--output DX.npy] [--log]
                    [--temperature T]
       wgpu-softmax --input X.npy --sample [--output IDS.npy] [--logprobs LP.npy]
                    [--top-k K] [--top-p P] [--min-p M] [--seed S] [--temperature T]
                    [--softcap C]
                    [--mask M.npy] [--lengths L.npy] [--temperatures R.npy]
                    [--causal] [--causal-offset K] [--masked-rows nan|zero]
       wgpu-softmax --input X.npy --cross-entropy --targets T.npy [--output LOSS.npy]
                    [--reduction none|sum|mean] [--ignore-index I] [--label-smoothing E]
                    [--z-loss W] [--grad DX.npy] [--softcap C] [--temperature T]
                    [--mask M.npy] [--lengths L.npy] [--causal] [--causal-offset K]
       wgpu-softmax --input X.npy --gather IDS.npy [--output LP.npy] [--softcap C]
                    [--temperature T] [--mask M.npy] [--lengths L.npy] [--causal]
       wgpu-softmax report [--size-mib N] [--cols 32,128,...] [--out DIR] [...]";

const ABOUT: &str = "Batched softmax and log-softmax on the GPU (wgpu)";

const LONG_ABOUT: &str = "\
Batched softmax and log-softmax on the GPU (wgpu).

Without --input: softmax of a seeded random normal(0, 3) logit matrix (4096 x 32000
unless --rows/--cols say otherwise), timed, checked against an f64 reference, and
compared with a plain copy kernel's bandwidth.

With --input X.npy: softmax over the last axis of any float .npy array (float16,
float32 or float64; either byte order; C or Fortran order; rank 1 or more), computed in
float32. Writes Y.npy in the input's shape and dtype (little-endian, C order), or
without --output prints a summary. The file streams through in blocks of rows, so files
larger than memory work; a Fortran-order file is read whole (it has no rows to stream).

With --backward: the gradient dx of softmax (or log-softmax) of X.npy, given the
incoming gradient DY.npy: y = softmax(x / T), then dx from y and dy, both on the GPU.

With --sample: one column (token) drawn per row of X.npy from softmax(x / T + mask),
after the top-k, then top-p, then min-p filters (greedy with --top-k 1), on the GPU
without sorting; seeded (--seed, default 42) and reproducible. IDS.npy is int64 of the
input's shape without its last axis (-1 for a row with nothing to draw from: all
masked, or NaN / +inf in it); LP.npy holds each id's float32 log-probability under the
unfiltered softmax.

With --cross-entropy: each row's loss against its integer target (T.npy, int32 or int64,
one per row), as torch.nn.functional.cross_entropy with reduction, ignore_index and
label_smoothing (plus an optional z-loss), fused on the GPU; LOSS.npy is float32, of
the input's leading shape for --reduction none, else 0-d; --grad writes the gradient
with respect to the logits in the input's shape and dtype.

With --gather: log_softmax of each row at the integer indices of IDS.npy (the input's
leading shape and k), written as float32 in IDS.npy's shape.";

const AFTER_HELP: &str = "\
WGPU_BACKEND (vulkan, gl, metal, dx12) restricts the backends searched.
Progress goes to stderr for runs longer than about a second, only when stderr is a
terminal (--quiet silences it).
Exit status: 0 success, 1 run-time error (including a file that does not fit the
input: a mask of other cols, a per-row file of other length, a negative length, a
gradient of another shape, a dtype the flag does not take) or result out of
tolerance, 2 bad usage.";

/// The whole command line: the softmax flags, or a subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "wgpu-softmax",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub softmax: SoftmaxFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The benchmark report: softmax against a copy kernel and the copy engine, per
    /// shape, on one adapter; writes report.md, report.csv, report.png and scaling.csv.
    Report(crate::report::Flags),
}

/// The flags of a softmax run, as given.
#[derive(clap::Args, Debug)]
pub struct SoftmaxFlags {
    /// Read logits from X.npy: float16, float32 or float64, either byte order, C or
    /// Fortran order, rank >= 1 (the op runs over the last axis)
    #[arg(short, long, value_name = "X.npy", help_heading = "Files")]
    input: Option<PathBuf>,
    /// Write the result to Y.npy (only with --input), in the input's shape and dtype:
    /// float16 rounded to nearest even, float64 widened from the float32 result
    #[arg(short, long, value_name = "Y.npy", help_heading = "Files")]
    output: Option<PathBuf>,
    /// Also write each row's (max, log-sum-exp) of x / T (with every mask and per-row
    /// input applied) as a float32 array of the input's leading axes and 2 (rows x 2
    /// for 1-D and 2-D inputs; only with --input)
    #[arg(short, long, value_name = "S.npy", help_heading = "Files")]
    stats: Option<PathBuf>,
    /// Add a float mask to x / T (only with --input): [..., cols], whose rows repeat
    /// over the input's rows (row r adds mask row r % mask_rows; a mask of the input's
    /// trailing axes broadcasts over the leading ones); -inf masks a column out
    #[arg(short, long, value_name = "M.npy", help_heading = "Files")]
    mask: Option<PathBuf>,
    /// One valid length per row, any integer dtype (only with --input): columns at or
    /// past a row's length are masked out; negative lengths are refused
    #[arg(long, value_name = "L.npy", help_heading = "Files")]
    lengths: Option<PathBuf>,
    /// One float temperature per row (float16/32/64), multiplying T (only with
    /// --input); a row whose temperature is not finite and > 0 comes out NaN
    #[arg(long, value_name = "R.npy", help_heading = "Files")]
    temperatures: Option<PathBuf>,
    /// Compute the gradient dx of the op instead of its output (needs --input and
    /// --grad); takes only --log, --temperature and --masked-rows
    #[arg(long, help_heading = "Backward pass")]
    backward: bool,
    /// The incoming gradient dy for --backward: float16/32/64, of the input's shape; with
    /// --cross-entropy, the file the loss's gradient is written to
    #[arg(long, value_name = "DY.npy", help_heading = "Backward pass")]
    grad: Option<PathBuf>,
    /// Compute each row's cross-entropy against --targets (needs --input)
    #[arg(long, help_heading = "Cross-entropy")]
    cross_entropy: bool,
    /// Integer targets, one per row (int32 or int64)
    #[arg(long, value_name = "T.npy", help_heading = "Cross-entropy")]
    targets: Option<PathBuf>,
    /// none, sum or mean (over the rows not ignored) [default: mean]
    #[arg(
        long,
        value_name = "none|sum|mean",
        hide_possible_values = true,
        help_heading = "Cross-entropy"
    )]
    reduction: Option<ReductionArg>,
    /// Rows whose target is I give loss 0 and gradient 0 [default: -100]
    #[arg(
        long,
        value_name = "I",
        allow_negative_numbers = true,
        help_heading = "Cross-entropy"
    )]
    ignore_index: Option<i64>,
    /// Label smoothing E in [0, 1] [default: 0]
    #[arg(
        long,
        value_name = "E",
        allow_negative_numbers = true,
        help_heading = "Cross-entropy"
    )]
    label_smoothing: Option<f32>,
    /// z-loss weight W >= 0: adds W * logsumexp^2 per row [default: 0]
    #[arg(
        long,
        value_name = "W",
        allow_negative_numbers = true,
        help_heading = "Cross-entropy"
    )]
    z_loss: Option<f32>,
    /// Log-probabilities at the integer indices of IDS.npy ([..., k], the input's
    /// leading shape and k) instead of softmax; --output gets them (float32)
    #[arg(long, value_name = "IDS.npy", help_heading = "Cross-entropy")]
    gather: Option<PathBuf>,
    /// Draw one column per row instead of computing softmax (needs --input); --output
    /// gets the ids (int64)
    #[arg(long, help_heading = "Sampling")]
    sample: bool,
    /// Keep the K most probable entries of each row (ties with the K-th kept); 1 is
    /// greedy
    #[arg(long, value_name = "K", value_parser = parse_count, help_heading = "Sampling")]
    top_k: Option<usize>,
    /// Keep the smallest head of each row holding P of its mass (0 < P <= 1)
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    top_p: Option<f32>,
    /// Keep entries at least M times as probable as the row's most probable (0 <= M <= 1)
    #[arg(
        long,
        value_name = "M",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    min_p: Option<f32>,
    /// Write each drawn id's log-probability (float32, the shape of the ids)
    #[arg(long, value_name = "LP.npy", help_heading = "Sampling")]
    logprobs: Option<PathBuf>,
    /// Log-softmax instead of softmax
    #[arg(short, long)]
    log: bool,
    /// Divide the logits by T (finite, > 0; default 1)
    #[arg(short, long, value_name = "T", value_parser = parse_temperature, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Soft-cap the logits to C * tanh(x / C) first, before the temperature and the
    /// mask (finite, > 0); +-inf logits become +-C; --backward differentiates through it
    #[arg(long, value_name = "C", value_parser = parse_softcap, allow_negative_numbers = true)]
    softcap: Option<f32>,
    /// Causal mask: row i keeps columns j <= i (+ K); i counts rows along the
    /// second-to-last axis (within each matrix of a rank >= 3 input)
    #[arg(long)]
    causal: bool,
    /// The causal mask's offset K, an integer >= 0 (implies --causal)
    #[arg(long, value_name = "K", value_parser = parse_offset, allow_negative_numbers = true)]
    causal_offset: Option<u64>,
    /// What a row with every column masked out gives: NaN (as PyTorch) or zero
    /// probability (0; log-softmax -inf)
    #[arg(
        long,
        value_name = "nan|zero",
        default_value = "nan",
        hide_possible_values = true
    )]
    masked_rows: MaskedRowsArg,
    /// Rows of the random matrix [default: 4096]
    #[arg(long, value_name = "N", value_parser = parse_count, help_heading = "Random matrix")]
    rows: Option<usize>,
    /// Columns of the random matrix [default: 32000]
    #[arg(long, value_name = "N", value_parser = parse_count, help_heading = "Random matrix")]
    cols: Option<usize>,
    /// Seed of the random matrix, or of the sampler with --sample [default: 42]
    #[arg(long, value_name = "N", help_heading = "Random matrix")]
    seed: Option<u64>,
    /// GPU memory the host path may hold for staging [default: 128]: the matrix streams
    /// through the GPU in chunks of N/4 MiB and through the files in blocks of N/4 MiB
    /// of float32 rows (at least a row each)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    max_gpu_mib: Option<usize>,
    /// No progress on stderr
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReductionArg {
    None,
    Sum,
    Mean,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MaskedRowsArg {
    Nan,
    Zero,
}

/// A checked command line of a softmax run: every combination here is valid.
pub struct Args {
    pub input: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    /// `--backward`'s gradient file: when given, `--input` computes the gradient.
    pub grad: Option<PathBuf>,
    /// `--sample`'s draw: when given, `--input` samples ids (written to `output`).
    pub sample: Option<Sampling>,
    /// `--logprobs`: the drawn ids' log-probabilities.
    pub logprobs: Option<PathBuf>,
    /// `--cross-entropy`: the loss, its targets file (the gradient goes to `grad`).
    pub loss: Option<(CrossEntropy, PathBuf)>,
    /// `--gather`: the indices file.
    pub gather: Option<PathBuf>,
    pub files: RowFiles,
    pub options: Options,
    pub rows: usize,
    pub cols: usize,
    pub seed: u64,
    pub context: ContextOptions,
    /// Bytes of float32 rows read, computed and written at a time by `--input`.
    pub block_bytes: u64,
    /// Progress on stderr, if it is a terminal.
    pub progress: bool,
}

/// The per-row input files (`--mask`, `--lengths`, `--temperatures`): their sizes
/// depend on the input's shape, so only `--input` can take them.
#[derive(Default)]
pub struct RowFiles {
    pub mask: Option<PathBuf>,
    pub lengths: Option<PathBuf>,
    pub temperatures: Option<PathBuf>,
}

impl SoftmaxFlags {
    /// Checks the flags against each other and settles the defaults.
    pub fn check(self) -> Outcome<Args> {
        self.check_backward()?;
        let sample = self.check_sample()?;
        let loss = self.check_loss()?;
        if self.gather.is_some() {
            let not_with = [
                ("--log", self.log),
                ("--stats", self.stats.is_some()),
                ("--sample", self.sample),
                ("--cross-entropy", self.cross_entropy),
                ("--grad", self.grad.is_some()),
            ];
            if let Some((flag, _)) = not_with.iter().find(|(_, given)| *given) {
                return Err(Failure::Usage(format!("--gather does not take {flag}")));
            }
            if self.input.is_none() {
                return Err(Failure::Usage("--gather needs --input X.npy".into()));
            }
        }
        if self.input.is_some() && (self.rows.is_some() || self.cols.is_some()) {
            return Err(Failure::Usage(
                "--rows and --cols make a random matrix; they do not go with --input".into(),
            ));
        }
        let needs_input = [
            ("--output", self.output.is_some()),
            ("--stats", self.stats.is_some()),
            ("--mask", self.mask.is_some()),
            ("--lengths", self.lengths.is_some()),
            ("--temperatures", self.temperatures.is_some()),
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
        let masked_rows = match self.masked_rows {
            MaskedRowsArg::Nan => MaskedRows::Nan,
            MaskedRowsArg::Zero => MaskedRows::Zero,
        };
        options = options
            .with_temperature(self.temperature.unwrap_or(1.0))
            .with_masked_rows(masked_rows);
        if let Some(offset) = self.causal_offset.or(self.causal.then_some(0)) {
            options = options.with_causal(offset);
        }
        if let Some(cap) = self.softcap {
            options = options.with_softcap(cap);
        }
        let gpu_bytes = self.max_gpu_mib.map_or(DEFAULT_GPU_MIB << 20, |mib| {
            (mib as u64).saturating_mul(1 << 20)
        });
        // Two chunks in flight, each a device buffer and a readback buffer.
        let chunk_bytes = gpu_bytes / 4;
        Ok(Args {
            input: self.input,
            output: self.output,
            stats: self.stats,
            grad: self.grad,
            sample,
            logprobs: self.logprobs,
            loss,
            gather: self.gather,
            files: RowFiles {
                mask: self.mask,
                lengths: self.lengths,
                temperatures: self.temperatures,
            },
            options,
            rows: self.rows.unwrap_or(DEFAULT_ROWS),
            cols: self.cols.unwrap_or(DEFAULT_COLS),
            seed: self.seed.unwrap_or(DEFAULT_SEED),
            context: ContextOptions::default().with_host_chunk_bytes(chunk_bytes),
            block_bytes: chunk_bytes,
            progress: !self.quiet,
        })
    }

    /// `--backward` and `--grad` come together, with `--input`. The gradient kernel
    /// applies only the op and scalar temperature, so every other forward input is
    /// refused rather than silently left out of dx.
    fn check_backward(&self) -> Outcome<()> {
        match (self.backward, self.grad.is_some()) {
            (false, false) => return Ok(()),
            // With --cross-entropy, --grad names the gradient written.
            (false, true) if self.cross_entropy => return Ok(()),
            (false, true) => {
                return Err(Failure::Usage(
                    "--grad needs --backward (or --cross-entropy)".into(),
                ))
            }
            (true, false) => return Err(Failure::Usage("--backward needs --grad DY.npy".into())),
            (true, true) => {}
        }
        if self.input.is_none() {
            return Err(Failure::Usage("--backward needs --input X.npy".into()));
        }
        let forward_only = [
            ("--mask", self.mask.is_some()),
            ("--lengths", self.lengths.is_some()),
            ("--temperatures", self.temperatures.is_some()),
            (
                "--causal or --causal-offset",
                self.causal || self.causal_offset.is_some(),
            ),
            ("--stats", self.stats.is_some()),
        ];
        match forward_only.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(Failure::Usage(format!(
                "--backward does not take {flag}: the backward pass takes only --log, \
                 --temperature, --softcap and --masked-rows (for the forward pass it \
                 differentiates)"
            ))),
            None => Ok(()),
        }
    }
}

impl SoftmaxFlags {
    /// `--cross-entropy` needs `--input` and `--targets`, and takes the forward op's row
    /// inputs, not `--log`, `--stats`, `--backward` or `--sample`; its settings need it.
    fn check_loss(&self) -> Outcome<Option<(CrossEntropy, PathBuf)>> {
        let settings = [
            ("--targets", self.targets.is_some()),
            ("--reduction", self.reduction.is_some()),
            ("--ignore-index", self.ignore_index.is_some()),
            ("--label-smoothing", self.label_smoothing.is_some()),
            ("--z-loss", self.z_loss.is_some()),
        ];
        if !self.cross_entropy {
            return match settings.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(Failure::Usage(format!("{flag} needs --cross-entropy"))),
                None => Ok(None),
            };
        }
        let Some(targets) = self.targets.clone() else {
            return Err(Failure::Usage(
                "--cross-entropy needs --targets T.npy".into(),
            ));
        };
        if self.input.is_none() {
            return Err(Failure::Usage("--cross-entropy needs --input X.npy".into()));
        }
        let not_with = [
            ("--log", self.log),
            ("--stats", self.stats.is_some()),
            ("--backward", self.backward),
            ("--sample", self.sample),
        ];
        if let Some((flag, _)) = not_with.iter().find(|(_, given)| *given) {
            return Err(Failure::Usage(format!(
                "--cross-entropy does not take {flag}"
            )));
        }
        let mut ce = CrossEntropy::default().with_reduction(match self.reduction {
            Some(ReductionArg::None) => Reduction::None,
            Some(ReductionArg::Sum) => Reduction::Sum,
            Some(ReductionArg::Mean) | None => Reduction::Mean,
        });
        if let Some(i) = self.ignore_index {
            ce = ce.with_ignore_index(i);
        }
        if let Some(e) = self.label_smoothing {
            ce = ce.with_label_smoothing(e);
        }
        if let Some(w) = self.z_loss {
            ce = ce.with_z_loss(w);
        }
        ce.validate().map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(Some((ce, targets)))
    }

    /// `--sample` needs `--input` and takes the forward op's row inputs, not `--log`,
    /// `--stats` or the backward pass; the filters and `--logprobs` need `--sample`.
    fn check_sample(&self) -> Outcome<Option<Sampling>> {
        let filters = [
            ("--top-k", self.top_k.is_some()),
            ("--top-p", self.top_p.is_some()),
            ("--min-p", self.min_p.is_some()),
            ("--logprobs", self.logprobs.is_some()),
        ];
        if !self.sample {
            return match filters.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(Failure::Usage(format!("{flag} needs --sample"))),
                None => Ok(None),
            };
        }
        if self.input.is_none() {
            return Err(Failure::Usage("--sample needs --input X.npy".into()));
        }
        let not_with = [
            ("--log", self.log),
            ("--stats", self.stats.is_some()),
            ("--backward", self.backward),
        ];
        if let Some((flag, _)) = not_with.iter().find(|(_, given)| *given) {
            return Err(Failure::Usage(format!("--sample does not take {flag}")));
        }
        let mut sampling = Sampling::new(self.seed.unwrap_or(DEFAULT_SEED));
        if let Some(k) = self.top_k {
            sampling = sampling.with_top_k(u32::try_from(k).unwrap_or(u32::MAX));
        }
        if let Some(p) = self.top_p {
            sampling = sampling.with_top_p(p);
        }
        if let Some(m) = self.min_p {
            sampling = sampling.with_min_p(m);
        }
        sampling
            .validate()
            .map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(Some(sampling))
    }
}

/// A count of at least 1 (`--rows`, `--cols`, `--max-gpu-mib`).
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a valid number")),
    }
}

/// The library checks the temperature too, but only once the GPU is up; checking here
/// makes it a usage error, reported at once.
fn parse_temperature(text: &str) -> Result<f32, String> {
    let t: f32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a valid number"))?;
    if Options::softmax().with_temperature(t).validate().is_ok() {
        Ok(t)
    } else {
        Err(format!(
            "must be finite and > 0 (at least about 2.9e-39), got {text}"
        ))
    }
}

/// `--softcap`: finite and > 0, checked before the GPU is up.
fn parse_softcap(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!("must be finite and > 0, got {text}")),
    }
}

/// `--causal-offset`: rows count from 0, so a negative offset has no meaning; it is
/// refused rather than read as "no causal mask".
fn parse_offset(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("must be an integer >= 0, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn equals_forms_and_short_flags_parse_as_the_long_ones() {
        let long = Cli::try_parse_from(["wgpu-softmax", "--input", "x.npy", "--log"]).unwrap();
        let short = Cli::try_parse_from(["wgpu-softmax", "-i", "x.npy", "-l"]).unwrap();
        let equals = Cli::try_parse_from(["wgpu-softmax", "--input=x.npy", "--log"]).unwrap();
        for cli in [long, short, equals] {
            let args = cli.softmax.check().unwrap_or_else(|_| panic!("valid"));
            assert_eq!(args.input, Some(PathBuf::from("x.npy")));
            assert_eq!(args.options.op, wgpu_softmax::Op::LogSoftmax);
        }
    }

    #[test]
    fn a_causal_offset_given_before_a_bare_causal_is_kept() {
        let cli = Cli::try_parse_from(["wgpu-softmax", "--causal-offset", "3", "--causal"]);
        let args = cli
            .unwrap()
            .softmax
            .check()
            .unwrap_or_else(|_| panic!("valid"));
        assert_eq!(args.options.causal, Some(3));
    }
}
