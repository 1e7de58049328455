//! `--cross-entropy` and `--gather`: a row's loss against its target, and log-probabilities
//! at given indices, a block of rows at a time, as `file.rs` runs softmax.
//!
//! The targets (or indices) are read and checked whole before the GPU is touched, so
//! that a bad one is named by its row. A mean is over the whole file's rows not ignored:
//! each block is computed with its losses summed and the gradient scaled by one over
//! the file's count, and the losses are reduced here, in f64.

use std::io::Write;
use std::path::Path;

use wgpu_softmax::half::f16;
use wgpu_softmax::{block_on, Context, CrossEntropy, HostInputs, Reduction, Shape};

use crate::args::Args;
use crate::file::{check_per_row, file_failure, from_row, Layout, MaskBlock, RowSources, Storage};
use crate::npy::{Float, Kind, NpyFile};
use crate::output::Output;
use crate::{adapter_line, describe, runtime, say, zeroed, Outcome};

/// Values shown by a summary.
const SHOWN: usize = 8;

/// Every integer of `file` (`flag`'s), which must be an integer dtype.
fn integers(file: &mut NpyFile, flag: &str, path: &Path) -> Outcome<Vec<i64>> {
    let fail = |e| file_failure(flag, path, e);
    if !matches!(file.dtype.kind, Kind::Int { .. }) {
        return Err(fail(format!(
            "must be an integer dtype, not {}",
            file.dtype
        )));
    }
    let len = file.len();
    file.read_integers(0, len)
        .map_err(fail)?
        .into_iter()
        .map(|v| i64::try_from(v).map_err(|_| fail(format!("{v} does not fit an int64"))))
        .collect()
}

/// A block's mask, lengths and per-row temperatures.
type BlockInputs = (Option<MaskBlock>, Option<Vec<u32>>, Option<Vec<f32>>);

/// What becomes of each block's losses (and gradient): its first row, the losses, the
/// gradient.
type Sink<'a> = &'a mut dyn FnMut(usize, &[f32], Option<Vec<f32>>) -> Outcome<()>;

/// The row inputs of a block, read from their files.
fn block_inputs(
    sources: &mut RowSources,
    first: usize,
    rows: usize,
    cols: usize,
    path: &Path,
) -> Outcome<BlockInputs> {
    let fail = |e| runtime(format!("{}: {e}", path.display()));
    Ok((
        sources.mask(first, rows, cols).map_err(fail)?,
        sources.lengths(first, rows).map_err(fail)?,
        sources.temperatures(first, rows).map_err(fail)?,
    ))
}

/// Rows per block: the block budget's worth of f32 rows, at least one.
fn blocks(args: &Args, layout: &Layout) -> impl Iterator<Item = (usize, usize)> {
    let row_bytes = (layout.cols as u64).saturating_mul(4);
    let step = usize::try_from(args.block_bytes / row_bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, layout.rows);
    let rows = layout.rows;
    (0..rows)
        .step_by(step)
        .map(move |first| (first, step.min(rows - first)))
}

/// `--cross-entropy`: the loss (and with `--grad` its gradient) of the file at `path`.
pub fn run(
    mut input: NpyFile,
    path: &Path,
    layout: &Layout,
    dtype: Float,
    args: &Args,
    (ce, targets_path): (&CrossEntropy, &Path),
) -> Outcome<()> {
    let fail = |e| file_failure("--targets", targets_path, e);
    let mut file = NpyFile::open(targets_path).map_err(fail)?;
    check_per_row(&file, layout).map_err(fail)?;
    let targets = integers(&mut file, "--targets", targets_path)?;
    for (row, &t) in targets.iter().enumerate() {
        if t != ce.ignore_index && !(0..layout.cols as i64).contains(&t) {
            return Err(fail(format!(
                "row {row}: target {t} is outside [0, {}) and not the ignore index {}",
                layout.cols, ce.ignore_index
            )));
        }
    }
    let valid = targets.iter().filter(|&&t| t != ce.ignore_index).count();
    let mut sources = RowSources::open(&args.files, layout, &args.options)?;
    let loss_shape: &[usize] = match ce.reduction {
        Reduction::None => layout.leading(),
        _ => &[],
    };
    let mut loss_out = args
        .output
        .as_deref()
        .map(|p| Output::create("--output", p, Float::F32, loss_shape))
        .transpose()?;
    let mut grad_out = args
        .grad
        .as_deref()
        .map(|p| Output::create("--grad", p, dtype, &layout.shape))
        .transpose()?;
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    let mut sum = 0.0f64;
    let mut first_losses = Vec::new();
    let each = Loss {
        ctx: &ctx,
        layout,
        args,
        path,
        targets: &targets,
        // Blocks sum; the mean's scale is the whole file's.
        ce: ce
            .with_reduction(Reduction::Sum)
            .with_grad_scale(match ce.reduction {
                Reduction::Mean if valid > 0 => 1.0 / valid as f32,
                _ => 1.0,
            }),
    };
    let mut sink = |first: usize, losses: &[f32], grad: Option<Vec<f32>>| -> Outcome<()> {
        sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
        if first == 0 {
            first_losses = losses.iter().copied().take(SHOWN).collect();
        }
        if let (Some(out), Reduction::None) = (&mut loss_out, ce.reduction) {
            out.write(losses)?;
        }
        if let (Some(out), Some(g)) = (&mut grad_out, grad) {
            out.write(&g)?;
        }
        Ok(())
    };
    if dtype == Float::F16 {
        each.blocks::<f16>(&mut input, &mut sources, grad_out_given(args), &mut sink)?;
    } else {
        each.blocks::<f32>(&mut input, &mut sources, grad_out_given(args), &mut sink)?;
    }
    let reduced = match ce.reduction {
        Reduction::Mean => sum / valid as f64,
        _ => sum,
    };
    if let Some(mut out) = loss_out {
        if ce.reduction != Reduction::None {
            out.write(&[reduced as f32])?;
        }
        out.commit()?;
    } else {
        say!("{}", adapter_line(&ctx))?;
        say!(
            "{}",
            layout.describe(&format!("cross-entropy, {}", describe(&args.options)))
        )?;
        let name = match ce.reduction {
            Reduction::Mean => format!("mean over {valid} rows not ignored"),
            Reduction::Sum => "sum".into(),
            _ => "sum (reduction none)".into(),
        };
        say!("loss ({name}): {reduced}")?;
        let shown: Vec<String> = first_losses.iter().map(|v| format!("{v:?}")).collect();
        say!("per row, first rows: [{}]", shown.join(", "))?;
    }
    if let Some(out) = grad_out {
        out.commit()?;
    }
    Ok(())
}

fn grad_out_given(args: &Args) -> bool {
    args.grad.is_some()
}

/// One cross-entropy run over the blocks of an input.
struct Loss<'a> {
    ctx: &'a Context,
    layout: &'a Layout,
    args: &'a Args,
    path: &'a Path,
    targets: &'a [i64],
    ce: CrossEntropy,
}

impl Loss<'_> {
    fn blocks<S: Storage>(
        &self,
        input: &mut NpyFile,
        sources: &mut RowSources,
        with_grad: bool,
        sink: Sink<'_>,
    ) -> Outcome<()> {
        let fail = |e| runtime(format!("{}: {e}", self.path.display()));
        let cols = self.layout.cols;
        let mut options = self.args.options;
        if sources.causal_per_matrix.is_some() {
            options.causal = None;
        }
        for (first, rows) in blocks(self.args, self.layout) {
            let x = S::read(input, first * cols, rows * cols).map_err(fail)?;
            let (mask, lengths, temperatures) =
                block_inputs(sources, first, rows, cols, self.path)?;
            let inputs = HostInputs {
                mask: mask.as_ref().map(MaskBlock::host),
                lengths: lengths.as_deref(),
                temperatures: temperatures.as_deref(),
                ..HostInputs::default()
            };
            let mut losses = zeroed::<f32>(rows)?;
            let mut grad = if with_grad {
                Some(zeroed::<f32>(rows * cols)?)
            } else {
                None
            };
            block_on(self.ctx.cross_entropy(
                &x,
                &self.targets[first..first + rows],
                &mut losses,
                grad.as_deref_mut(),
                Shape::new(rows, cols),
                &from_row(&options, first),
                &self.ce,
                inputs,
            ))
            .map_err(runtime)?;
            sink(first, &losses, grad)?;
        }
        Ok(())
    }
}

/// `--gather`: log-probabilities at the indices of `ids_path`.
pub fn gather(
    mut input: NpyFile,
    path: &Path,
    layout: &Layout,
    dtype: Float,
    args: &Args,
    ids_path: &Path,
) -> Outcome<()> {
    let fail = |e| file_failure("--gather", ids_path, e);
    let mut file = NpyFile::open(ids_path).map_err(fail)?;
    let shape = file.shape.clone();
    let k = match shape.split_last() {
        Some((&k, lead)) if lead == layout.leading() && k > 0 => k,
        _ => {
            return Err(fail(format!(
                "shape {} must be the input's leading axes {} and a count of indices",
                file.shape_text(),
                crate::npy::tuple(layout.leading())
            )))
        }
    };
    let ids = integers(&mut file, "--gather", ids_path)?;
    if let Some((i, &t)) = ids
        .iter()
        .enumerate()
        .find(|(_, &t)| !(0..layout.cols as i64).contains(&t))
    {
        return Err(fail(format!(
            "row {}: index {t} is outside [0, {})",
            i / k,
            layout.cols
        )));
    }
    let mut sources = RowSources::open(&args.files, layout, &args.options)?;
    let mut out = args
        .output
        .as_deref()
        .map(|p| Output::create("--output", p, Float::F32, &shape))
        .transpose()?;
    let ctx = block_on(Context::new(args.context.clone())).map_err(runtime)?;
    let cols = layout.cols;
    let mut options = args.options;
    if sources.causal_per_matrix.is_some() {
        options.causal = None;
    }
    let mut shown = Vec::new();
    let fail_in = |e| runtime(format!("{}: {e}", path.display()));
    for (first, rows) in blocks(args, layout) {
        let (mask, lengths, temperatures) = block_inputs(&mut sources, first, rows, cols, path)?;
        let inputs = HostInputs {
            mask: mask.as_ref().map(MaskBlock::host),
            lengths: lengths.as_deref(),
            temperatures: temperatures.as_deref(),
            ..HostInputs::default()
        };
        let mut lp = zeroed::<f32>(rows * k)?;
        let block_ids = &ids[first * k..(first + rows) * k];
        let shape = Shape::new(rows, cols);
        let block_options = from_row(&options, first);
        if dtype == Float::F16 {
            let x = f16::read(&mut input, first * cols, rows * cols).map_err(fail_in)?;
            block_on(ctx.gather_log_probs(&x, block_ids, k, &mut lp, shape, &block_options, inputs))
        } else {
            let x = f32::read(&mut input, first * cols, rows * cols).map_err(fail_in)?;
            block_on(ctx.gather_log_probs(&x, block_ids, k, &mut lp, shape, &block_options, inputs))
        }
        .map_err(runtime)?;
        if first == 0 {
            shown = lp.iter().copied().take(SHOWN).collect();
        }
        if let Some(out) = &mut out {
            out.write(&lp)?;
        }
    }
    match out {
        Some(out) => out.commit(),
        None => {
            say!("{}", adapter_line(&ctx))?;
            say!(
                "{}",
                layout.describe(&format!(
                    "log-probabilities at {k} indices per row, {}",
                    describe(&args.options)
                ))
            )?;
            let text: Vec<String> = shown.iter().map(|v| format!("{v:?}")).collect();
            say!("first values: [{}]", text.join(", "))
        }
    }
}
