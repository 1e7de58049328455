//! `--input X.npy`: softmax (or its gradient) of a file, a block of rows at a time.
//!
//! Every file is opened and checked, and every output started, before the GPU is
//! touched, so a bad file fails fast with nothing but its error on stderr. Then each
//! block of rows is read, computed and written in turn: memory holds a block, never the
//! file. The per-row inputs follow the blocks: a block starting at row `first` takes
//! lengths and temperatures `first..`, mask rows `(first + i) % mask_rows`, and the causal
//! offset moved by `first` (the library counts causal rows from each call's first row).

use std::io::Write;
use std::path::Path;

use wgpu_softmax::half::f16;
use wgpu_softmax::{block_on, Context, HostInputs, HostMask, Options, Sampling, Shape, NO_TOKEN};

use crate::args::{Args, RowFiles};
use crate::npy::{Encode, Float, Kind, NpyFile, Stored};
use crate::output::{self, Output};
use crate::progress::Progress;
use crate::{adapter_line, describe, runtime, say, zeroed, Failure, Outcome};

/// Values of the first row shown by the summary.
const SUMMARY_VALUES: usize = 8;
/// Values of a per-row file checked at a time before the run.
const CHECK_BLOCK: usize = 1 << 20;

/// The input's shape, seen as rows of the last axis.
pub(crate) struct Layout {
    /// As the file gives it (rank >= 1, no empty axis).
    pub shape: Vec<usize>,
    pub rows: usize,
    pub cols: usize,
}

impl Layout {
    /// The axes before the last: the shape of one value per row.
    pub fn leading(&self) -> &[usize] {
        &self.shape[..self.shape.len() - 1]
    }

    /// Rows of each matrix the causal mask applies to: the second-to-last axis (the
    /// whole input for rank 1 and 2).
    fn matrix_rows(&self) -> usize {
        match self.shape.len() {
            0..=2 => self.rows,
            rank => self.shape[rank - 2],
        }
    }

    /// The shape of `--stats`: `(rows, 2)` for rank 1 and 2 (as it always was), else
    /// the leading axes and 2.
    fn stats_shape(&self) -> Vec<usize> {
        match self.shape.len() {
            0..=2 => vec![self.rows, 2],
            _ => self.leading().iter().copied().chain([2]).collect(),
        }
    }

    pub fn describe(&self, what: &str) -> String {
        match self.shape[..] {
            [cols] => format!("shape: {cols} (1-D, one row; {what})"),
            [rows, cols] => format!("shape: {rows} x {cols} ({what})"),
            _ => format!(
                "shape: {} ({} rows of {}; {what})",
                crate::npy::tuple(&self.shape),
                self.rows,
                self.cols
            ),
        }
    }
}

/// A failure of the file given to `flag`, naming both.
pub(crate) fn file_failure(flag: &str, path: &Path, message: impl std::fmt::Display) -> Failure {
    runtime(format!("{flag} {}: {message}", path.display()))
}

/// Softmax (or with `--grad`, its gradient) of the file `path`.
pub fn run(path: &Path, args: &Args) -> Outcome<()> {
    let outputs: Vec<(&str, &Path)> = [
        ("--output", &args.output),
        ("--stats", &args.stats),
        ("--logprobs", &args.logprobs),
        (
            "--grad",
            if args.loss.is_some() {
                &args.grad
            } else {
                &None
            },
        ),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path.as_deref()?)))
    .collect();
    output::check_distinct(&outputs)?;
    let fail = |e| runtime(format!("{}: {e}", path.display()));
    let mut input = NpyFile::open(path).map_err(fail)?;
    let layout = check_input(&input).map_err(fail)?;
    let Kind::Float(dtype) = input.dtype.kind else {
        return Err(fail(format!(
            "the input must be float16, float32 or float64, not {}",
            input.dtype
        )));
    };
    if let Some((ce, targets)) = &args.loss {
        return crate::loss::run(input, path, &layout, dtype, args, (ce, targets));
    }
    if let Some(ids) = &args.gather {
        return crate::loss::gather(input, path, &layout, dtype, args, ids);
    }
    let grad = match args.grad.as_deref() {
        Some(p) => Some((open_grad(p, &layout)?, p)),
        None => None,
    };
    let mut row_inputs = RowSources::open(&args.files, &layout, &args.options)?;
    // Sampled ids are int64, one per row; anything else is the input's shape and dtype.
    let (output_dtype, output_shape) = match args.sample {
        Some(_) => (Stored::I64, layout.leading()),
        None => (Stored::Float(dtype), &layout.shape[..]),
    };
    let mut sinks = Sinks {
        output: args
            .output
            .as_deref()
            .map(|p| Output::create("--output", p, output_dtype, output_shape))
            .transpose()?,
        logprobs: args
            .logprobs
            .as_deref()
            .map(|p| Output::create("--logprobs", p, Float::F32, layout.leading()))
            .transpose()?,
        first_ids: Vec::new(),
        stats: args
            .stats
            .as_deref()
            .map(|p| Output::create("--stats", p, Float::F32, &layout.stats_shape()))
            .transpose()?,
        first_row: Vec::new(),
    };
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    let run = Run {
        ctx: &ctx,
        layout: &layout,
        args,
        path,
    };
    match (dtype, grad, args.sample) {
        (Float::F16, None, Some(s)) => {
            run.sample::<f16>(&mut input, &mut row_inputs, &mut sinks, &s)?
        }
        (_, None, Some(s)) => run.sample::<f32>(&mut input, &mut row_inputs, &mut sinks, &s)?,
        (Float::F16, None, None) => run.forward::<f16>(&mut input, &mut row_inputs, &mut sinks)?,
        (_, None, None) => run.forward::<f32>(&mut input, &mut row_inputs, &mut sinks)?,
        (Float::F16, Some((mut dy, p)), _) => {
            run.backward::<f16>(&mut input, (&mut dy, p), &mut sinks)?
        }
        (_, Some((mut dy, p)), _) => run.backward::<f32>(&mut input, (&mut dy, p), &mut sinks)?,
    }
    match sinks.output {
        Some(output) => output.commit()?,
        None if args.sample.is_some() => {
            print_sample_summary(&ctx, &layout, &sinks.first_ids, args)?
        }
        None => print_summary(&ctx, &layout, dtype, &sinks.first_row, args)?,
    }
    for extra in [sinks.stats, sinks.logprobs].into_iter().flatten() {
        extra.commit()?;
    }
    Ok(())
}

/// `--input` without `--output`: what ran where, and the start of the first row; a
/// gradient is labelled as such, so that dx is not read as probabilities.
fn print_summary(
    ctx: &Context,
    layout: &Layout,
    dtype: Float,
    first_row: &[f32],
    args: &Args,
) -> Outcome<()> {
    let gradient = args.grad.is_some();
    let described = if gradient {
        format!("gradient of {}", describe(&args.options))
    } else {
        describe(&args.options)
    };
    say!("{}", adapter_line(ctx))?;
    say!("{}", layout.describe(&described))?;
    say!("dtype: {0} in, {0} out (float32 arithmetic)", dtype.name())?;
    let shown: Vec<String> = first_row.iter().map(|v| format!("{v:?}")).collect();
    let more = if layout.cols > SUMMARY_VALUES {
        ", ..."
    } else {
        ""
    };
    let label = if gradient {
        "gradient, first row"
    } else {
        "first row"
    };
    say!("{label}: [{}{more}]", shown.join(", "))
}

/// `--sample` without `--output`: what ran where, and the first rows' ids.
fn print_sample_summary(ctx: &Context, layout: &Layout, ids: &[i64], args: &Args) -> Outcome<()> {
    let sampling = args.sample.unwrap_or_else(Sampling::greedy);
    let mut what = format!("sampling seed {}", sampling.seed);
    for (name, value) in [
        ("top-k", sampling.top_k.map(|k| k.to_string())),
        ("top-p", sampling.top_p.map(|p| p.to_string())),
        ("min-p", sampling.min_p.map(|m| m.to_string())),
    ] {
        if let Some(v) = value {
            what += &format!(", {name} {v}");
        }
    }
    say!("{}", adapter_line(ctx))?;
    say!(
        "{}",
        layout.describe(&format!("{what}, {}", describe(&args.options)))
    )?;
    let shown: Vec<String> = ids.iter().map(i64::to_string).collect();
    let more = if layout.rows > SUMMARY_VALUES {
        ", ..."
    } else {
        ""
    };
    say!("ids, first rows: [{}{more}]", shown.join(", "))
}

/// The input's shape as rows of the last axis, refusing what has no such rows.
fn check_input(input: &NpyFile) -> Result<Layout, String> {
    let shape = input.shape.clone();
    let Some(&cols) = shape.last() else {
        return Err(format!(
            "a 0-d array (shape (), one {} value) has no axis to take softmax over; the \
             input needs rank 1 or more",
            input.dtype
        ));
    };
    if shape.contains(&0) {
        return Err(format!(
            "shape {} has an empty axis; every array here needs at least one element",
            input.shape_text()
        ));
    }
    let rows = shape[..shape.len() - 1].iter().product();
    Shape::new(rows, cols).len().map_err(|e| e.to_string())?;
    Ok(Layout { shape, rows, cols })
}

/// `--grad`: dy pairs with x element for element, and dx is written in x's shape, so
/// the shapes must agree exactly (a 1-D `(n,)` is not a `(1, n)`).
fn open_grad(path: &Path, layout: &Layout) -> Outcome<NpyFile> {
    let fail = |e| file_failure("--grad", path, e);
    let grad = NpyFile::open(path).map_err(fail)?;
    if grad.shape != layout.shape {
        return Err(fail(format!(
            "shape {} differs from the input's {}",
            grad.shape_text(),
            crate::npy::tuple(&layout.shape)
        )));
    }
    match grad.dtype.kind {
        Kind::Float(_) => Ok(grad),
        _ => Err(fail(format!(
            "the gradient must be float16, float32 or float64, not {}",
            grad.dtype
        ))),
    }
}

/// The per-row input files, opened and checked against the input's shape.
pub(crate) struct RowSources {
    /// The mask and its row count.
    mask: Option<(NpyFile, usize)>,
    lengths: Option<NpyFile>,
    temperatures: Option<NpyFile>,
    /// A rank >= 3 input's causal offset, applied per matrix through the lengths.
    pub causal_per_matrix: Option<u64>,
    matrix_rows: usize,
}

impl RowSources {
    /// Opens every file given. Sizes and values are checked here rather than left to
    /// the library, so that a wrong file is named and fails before the GPU is touched.
    /// A rank >= 3 input's causal mask counts rows within each matrix, which the
    /// library's (counting from a call's first row) cannot: it goes into the lengths.
    pub fn open(files: &RowFiles, layout: &Layout, options: &Options) -> Outcome<Self> {
        Ok(RowSources {
            mask: files
                .mask
                .as_deref()
                .map(|p| open_mask(p, layout.cols))
                .transpose()?,
            lengths: files
                .lengths
                .as_deref()
                .map(|p| open_lengths(p, layout))
                .transpose()?,
            temperatures: files
                .temperatures
                .as_deref()
                .map(|p| open_temperatures(p, layout))
                .transpose()?,
            causal_per_matrix: options.causal.filter(|_| layout.shape.len() >= 3),
            matrix_rows: layout.matrix_rows(),
        })
    }

    /// The mask rows for rows `first..first + rows`: row `r` takes mask row
    /// `r % mask_rows`. The library takes row `i` of a call to mask row
    /// `i % given_rows`, so the block gets `min(mask_rows, rows)` rows starting at
    /// `first % mask_rows`, wrapping: at most two reads, and never more than the block.
    pub fn mask(
        &mut self,
        first: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Option<MaskBlock>, String> {
        let Some((file, mask_rows)) = &mut self.mask else {
            return Ok(None);
        };
        let (mask_rows, count) = (*mask_rows, (*mask_rows).min(rows));
        let start = first % mask_rows;
        let head = count.min(mask_rows - start);
        let ranges = [(start, head), (0, count - head)];
        let f16_file = file.dtype.kind == Kind::Float(Float::F16);
        let mut block = if f16_file {
            MaskBlock::F16(Vec::new(), count)
        } else {
            MaskBlock::F32(Vec::new(), count)
        };
        for (row, n) in ranges.into_iter().filter(|(_, n)| *n > 0) {
            match &mut block {
                MaskBlock::F16(values, _) => {
                    values.extend(file.read_map(row * cols, n * cols, |v: f16| v)?)
                }
                MaskBlock::F32(values, _) => values.extend(file.read_f32(row * cols, n * cols)?),
            }
        }
        Ok(Some(block))
    }

    /// The lengths of rows `first..first + rows`, with a rank >= 3 input's causal mask
    /// folded in (a causal row `i` keeps the columns before `i + offset + 1`).
    pub fn lengths(&mut self, first: usize, rows: usize) -> Result<Option<Vec<u32>>, String> {
        let mut lengths = match &mut self.lengths {
            Some(file) => Some(
                file.read_integers(first, rows)?
                    .into_iter()
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        if let Some(offset) = self.causal_per_matrix {
            let causal = (first..first + rows).map(|r| {
                let i = (r % self.matrix_rows) as u64;
                u32::try_from(i.saturating_add(offset).saturating_add(1)).unwrap_or(u32::MAX)
            });
            lengths = Some(match lengths {
                Some(given) => given
                    .into_iter()
                    .zip(causal)
                    .map(|(a, b)| a.min(b))
                    .collect(),
                None => causal.collect(),
            });
        }
        Ok(lengths)
    }

    pub fn temperatures(&mut self, first: usize, rows: usize) -> Result<Option<Vec<f32>>, String> {
        self.temperatures
            .as_mut()
            .map(|file| file.read_f32(first, rows))
            .transpose()
    }
}

/// A block's mask as the file stores it: a float16 mask goes to the GPU as float16.
pub(crate) enum MaskBlock {
    F32(Vec<f32>, usize),
    F16(Vec<f16>, usize),
}

impl MaskBlock {
    pub fn host(&self) -> HostMask<'_> {
        match self {
            MaskBlock::F32(values, rows) => HostMask::new(values, *rows),
            MaskBlock::F16(values, rows) => HostMask::new(values, *rows),
        }
    }
}

/// `--mask`: float, `[..., cols]`; its leading axes flattened are its rows.
fn open_mask(path: &Path, cols: usize) -> Outcome<(NpyFile, usize)> {
    let fail = |e| file_failure("--mask", path, e);
    let mask = NpyFile::open(path).map_err(fail)?;
    let Kind::Float(_) = mask.dtype.kind else {
        return Err(fail(format!(
            "the mask must be float16, float32 or float64, not {}",
            mask.dtype
        )));
    };
    match mask.shape.last() {
        Some(&c) if c == cols => {}
        Some(&c) => {
            return Err(fail(format!(
                "the mask has {c} columns but the input has {cols}"
            )))
        }
        None => {
            return Err(fail(
                "a 0-d mask has no columns; it needs the input's last axis".into(),
            ))
        }
    }
    let rows = mask.len() / cols;
    if rows == 0 {
        return Err(fail(format!(
            "shape {} holds no mask row",
            mask.shape_text()
        )));
    }
    Ok((mask, rows))
}

/// A per-row file must hold one value per row: 1-D, or the input's leading axes.
pub(crate) fn check_per_row(file: &NpyFile, layout: &Layout) -> Result<(), String> {
    if file.shape == [layout.rows] || file.shape == layout.leading() {
        return Ok(());
    }
    if file.len() != layout.rows {
        return Err(format!(
            "holds {} values but the input has {} rows",
            file.len(),
            layout.rows
        ));
    }
    Err(format!(
        "shape {} is not 1-D: one value per row is needed, as ({},) or the input's \
         leading axes {}",
        file.shape_text(),
        layout.rows,
        crate::npy::tuple(layout.leading())
    ))
}

/// `--lengths`: any integer dtype. Every value is checked here, a block at a time: a
/// negative length has no meaning and one past `u32` cannot be given to the GPU, so
/// both are refused rather than wrapped.
fn open_lengths(path: &Path, layout: &Layout) -> Outcome<NpyFile> {
    let fail = |e| file_failure("--lengths", path, e);
    let mut file = NpyFile::open(path).map_err(fail)?;
    if !matches!(file.dtype.kind, Kind::Int { .. }) {
        return Err(fail(format!(
            "lengths must be an integer dtype (int8 to int64, uint8 to uint64), not {}",
            file.dtype
        )));
    }
    check_per_row(&file, layout).map_err(fail)?;
    for first in (0..layout.rows).step_by(CHECK_BLOCK) {
        let count = CHECK_BLOCK.min(layout.rows - first);
        for (i, n) in file
            .read_integers(first, count)
            .map_err(fail)?
            .into_iter()
            .enumerate()
        {
            let row = first + i;
            if n < 0 {
                return Err(fail(format!("row {row} has a negative length ({n})")));
            }
            if n > i128::from(u32::MAX) {
                return Err(fail(format!(
                    "row {row} has a length of {n}, more than the largest allowed ({})",
                    u32::MAX
                )));
            }
        }
    }
    Ok(file)
}

/// `--temperatures`: one float per row.
fn open_temperatures(path: &Path, layout: &Layout) -> Outcome<NpyFile> {
    let fail = |e| file_failure("--temperatures", path, e);
    let file = NpyFile::open(path).map_err(fail)?;
    if !matches!(file.dtype.kind, Kind::Float(_)) {
        return Err(fail(format!(
            "temperatures must be float16, float32 or float64, not {}",
            file.dtype
        )));
    }
    check_per_row(&file, layout).map_err(fail)?;
    Ok(file)
}

/// Where each block's results go.
struct Sinks {
    output: Option<Output>,
    stats: Option<Output>,
    logprobs: Option<Output>,
    /// The first rows' sampled ids, for the summary without `--output`.
    first_ids: Vec<i64>,
    /// The start of the first row, for the summary without `--output`.
    first_row: Vec<f32>,
}

impl Sinks {
    fn write<T: Encode + wgpu_softmax::Element>(
        &mut self,
        first: usize,
        values: &[T],
    ) -> Outcome<()> {
        if first == 0 {
            self.first_row = values
                .iter()
                .take(SUMMARY_VALUES)
                .map(|v| v.to_f32())
                .collect();
        }
        match &mut self.output {
            Some(output) => output.write(values),
            None => Ok(()),
        }
    }
}

/// The storage types a block goes to the GPU in: f32 (for float32 and float64 files)
/// and f16 (for float16 files, which stay float16 on the GPU and back).
pub(crate) trait Storage:
    wgpu_softmax::Element + Encode + bytemuck::Zeroable + Clone
{
    fn read(file: &mut NpyFile, first: usize, count: usize) -> Result<Vec<Self>, String>;
}

impl Storage for f32 {
    fn read(file: &mut NpyFile, first: usize, count: usize) -> Result<Vec<Self>, String> {
        file.read_f32(first, count)
    }
}

impl Storage for f16 {
    fn read(file: &mut NpyFile, first: usize, count: usize) -> Result<Vec<Self>, String> {
        file.read_map(first, count, |v: f16| v)
    }
}

/// One run over the blocks of an input.
struct Run<'a> {
    ctx: &'a Context,
    layout: &'a Layout,
    args: &'a Args,
    /// The input file, for messages.
    path: &'a Path,
}

impl Run<'_> {
    /// Rows per block: the block budget's worth of f32 rows, at least one.
    fn block_rows(&self) -> usize {
        let row_bytes = (self.layout.cols as u64).saturating_mul(4);
        usize::try_from(self.args.block_bytes / row_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, self.layout.rows)
    }

    /// `(first row, rows)` of each block, in order.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (rows, step) = (self.layout.rows, self.block_rows());
        (0..rows)
            .step_by(step)
            .map(move |first| (first, step.min(rows - first)))
    }

    fn progress(&self, what: &str) -> Progress {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let message = format!("{what} of {name}");
        Progress::bar(
            self.args.progress,
            self.layout.rows as u64,
            "rows",
            &message,
        )
    }

    fn forward<S: Storage>(
        &self,
        input: &mut NpyFile,
        row_inputs: &mut RowSources,
        sinks: &mut Sinks,
    ) -> Outcome<()> {
        let fail = |e| runtime(format!("{}: {e}", self.path.display()));
        let cols = self.layout.cols;
        let mut options = self.args.options;
        if row_inputs.causal_per_matrix.is_some() {
            // The lengths carry it.
            options.causal = None;
        }
        let bar = self.progress("softmax");
        for (first, rows) in self.blocks() {
            let x = S::read(input, first * cols, rows * cols).map_err(fail)?;
            let mut y = zeroed::<S>(rows * cols)?;
            let mask = row_inputs.mask(first, rows, cols).map_err(fail)?;
            let lengths = row_inputs.lengths(first, rows).map_err(fail)?;
            let temperatures = row_inputs.temperatures(first, rows).map_err(fail)?;
            let mut stats = match sinks.stats {
                Some(_) => zeroed::<[f32; 2]>(rows)?,
                None => Vec::new(),
            };
            let mut inputs = HostInputs {
                mask: mask.as_ref().map(MaskBlock::host),
                lengths: lengths.as_deref(),
                temperatures: temperatures.as_deref(),
                ..HostInputs::default()
            };
            if sinks.stats.is_some() {
                inputs = inputs.with_stats_out(&mut stats);
            }
            let block_options = from_row(&options, first);
            let shape = Shape::new(rows, cols);
            block_on(self.ctx.run(&x, &mut y, shape, &block_options, inputs)).map_err(runtime)?;
            drop(x);
            sinks.write(first, &y)?;
            if let Some(out) = &mut sinks.stats {
                out.write(bytemuck::cast_slice::<[f32; 2], f32>(&stats))?;
            }
            bar.inc(rows as u64);
        }
        Ok(())
    }

    /// `--sample`: one id per row (and its log-probability), each block drawn with its
    /// first row as the generator's row offset, so the ids do not depend on the block
    /// size.
    fn sample<S: Storage>(
        &self,
        input: &mut NpyFile,
        row_inputs: &mut RowSources,
        sinks: &mut Sinks,
        sampling: &Sampling,
    ) -> Outcome<()> {
        let fail = |e| runtime(format!("{}: {e}", self.path.display()));
        let cols = self.layout.cols;
        let mut options = self.args.options;
        if row_inputs.causal_per_matrix.is_some() {
            options.causal = None;
        }
        let bar = self.progress("sampling");
        for (first, rows) in self.blocks() {
            let x = S::read(input, first * cols, rows * cols).map_err(fail)?;
            let mask = row_inputs.mask(first, rows, cols).map_err(fail)?;
            let lengths = row_inputs.lengths(first, rows).map_err(fail)?;
            let temperatures = row_inputs.temperatures(first, rows).map_err(fail)?;
            let inputs = HostInputs {
                mask: mask.as_ref().map(MaskBlock::host),
                lengths: lengths.as_deref(),
                temperatures: temperatures.as_deref(),
                ..HostInputs::default()
            };
            let mut ids = zeroed::<u32>(rows)?;
            let mut lp = zeroed::<f32>(if sinks.logprobs.is_some() { rows } else { 0 })?;
            let row_offset = u32::try_from(first)
                .map_err(|_| runtime(format!("{first} rows exceed the generator's row count")))?;
            let block_sampling = sampling.with_row_offset(row_offset);
            let logprobs = sinks.logprobs.as_ref().map(|_| &mut lp[..]);
            block_on(self.ctx.sample(
                &x,
                &mut ids,
                logprobs,
                Shape::new(rows, cols),
                &from_row(&options, first),
                &block_sampling,
                inputs,
            ))
            .map_err(runtime)?;
            let ids: Vec<i64> = ids
                .iter()
                .map(|&id| if id == NO_TOKEN { -1 } else { i64::from(id) })
                .collect();
            if first == 0 {
                sinks.first_ids = ids.iter().copied().take(SUMMARY_VALUES).collect();
            }
            if let Some(out) = &mut sinks.output {
                out.write(&ids)?;
            }
            if let Some(out) = &mut sinks.logprobs {
                out.write(&lp)?;
            }
            bar.inc(rows as u64);
        }
        Ok(())
    }

    /// `--backward`: the library's gradient takes the forward output, not the logits,
    /// so each block runs the forward op first with the same options (op and
    /// temperature). The input goes to the GPU in its storage type; y comes back as f32
    /// (not rounded to a float16 input's dtype), dy is f32, and dx is computed in f32
    /// and written in the input's dtype.
    fn backward<S: Storage>(
        &self,
        input: &mut NpyFile,
        (grad, grad_path): (&mut NpyFile, &Path),
        sinks: &mut Sinks,
    ) -> Outcome<()> {
        let fail = |e| runtime(format!("{}: {e}", self.path.display()));
        let grad_fail = |e| file_failure("--grad", grad_path, e);
        let (cols, options) = (self.layout.cols, &self.args.options);
        let bar = self.progress("gradient");
        for (first, rows) in self.blocks() {
            let shape = Shape::new(rows, cols);
            let x = S::read(input, first * cols, rows * cols).map_err(fail)?;
            let mut y = zeroed::<f32>(rows * cols)?;
            block_on(
                self.ctx
                    .run(&x, &mut y, shape, options, HostInputs::default()),
            )
            .map_err(runtime)?;
            // A soft-cap's slope needs the logits themselves (as f32).
            let logits: Option<Vec<f32>> = options
                .softcap
                .map(|_| x.iter().map(|v| v.to_f32()).collect());
            drop(x);
            let dy = grad
                .read_f32(first * cols, rows * cols)
                .map_err(grad_fail)?;
            let mut dx = zeroed::<f32>(rows * cols)?;
            match &logits {
                Some(x) => block_on(
                    self.ctx
                        .run_backward_capped(x, &y, &dy, &mut dx, shape, options),
                ),
                None => block_on(self.ctx.run_backward(&y, &dy, &mut dx, shape, options)),
            }
            .map_err(runtime)?;
            // The summary shows dx as it is stored.
            let stored: Vec<S> = dx.iter().map(|&v| S::from_f32(v)).collect();
            sinks.write(first, &stored)?;
            bar.inc(rows as u64);
        }
        Ok(())
    }
}

/// `options` for a block starting at `first_row`: the library counts causal rows from
/// the first row it is given, so the offset moves by the rows before it.
pub(crate) fn from_row(options: &Options, first_row: usize) -> Options {
    match options.causal {
        Some(offset) => options.with_causal(offset.saturating_add(first_row as u64)),
        None => *options,
    }
}
