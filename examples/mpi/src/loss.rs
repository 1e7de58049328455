//! Issue 19, 2(b): cross-entropy with targets anywhere in a vocabulary split by columns
//! across ranks, loss and gradient.
//!
//! The ranks combine their statistics as softmax does (12 bytes per row each); each rank
//! then runs the library's cross-entropy on its shard with the whole rows' statistics
//! given and its first column as the column offset. The rank holding a row's target
//! writes that row's whole loss (`lse - z_t + w * lse^2`), the others 0, so one sum
//! all-reduce of the per-row losses (4 bytes per row) gives every rank every row's loss;
//! each rank's gradient is its column slice of the unsplit gradient, with nothing more
//! sent. A mean's `1 / N` (N the rows not ignored, known from the targets every rank
//! holds) is folded into the gradient scale. Label smoothing needs the whole row's mean
//! of `z`, which the statistics do not carry: the library refuses it with given
//! statistics, and the check makes sure it does.

use wgpu_softmax::internals::reference::cross_entropy_f64;
use wgpu_softmax::{block_on, CrossEntropy, Error, HostInputs, Options, Reduction, Shape};

use crate::check::{tolerance_used, worst, Agreement};
use crate::matrix::IGNORE_INDEX;
use crate::shard::Shard;

/// The loss's tolerance against the unsplit loss and the f64 reference: `abs + rel * |r|`.
pub const TOL_LOSS: (f64, f64) = (1e-5, 1e-5);
/// The gradient's.
pub const TOL_GRAD: (f64, f64) = (1e-6, 1e-4);

/// The loss checked: a mean over the rows not ignored, with a z-loss, at temperature 1.5.
fn options() -> (Options, CrossEntropy) {
    (
        Options::softmax().with_temperature(1.5),
        CrossEntropy::default()
            .with_ignore_index(IGNORE_INDEX)
            .with_z_loss(1e-4)
            .with_reduction(Reduction::Mean),
    )
}

/// This rank's per-row losses (the whole loss on the rank holding the target, else 0)
/// and its slice of the gradient, from the whole rows' statistics `combined`.
fn shard_loss(
    shard: &Shard,
    options: &Options,
    loss: &CrossEntropy,
    targets: &[i64],
    combined: &[[f32; 2]],
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let mut losses = vec![0.0f32; shard.matrix.rows];
    let mut grad = vec![0.0f32; shard.x.len()];
    block_on(shard.ctx.cross_entropy(
        &shard.x,
        targets,
        &mut losses,
        Some(&mut grad[..]),
        shard.shape(),
        options,
        loss,
        HostInputs::default().with_stats_given(combined),
    ))
    .map_err(|e| format!("rank {}: cross-entropy: {e}", shard.rank))?;
    Ok((losses, grad))
}

/// Runs the loss sharded and, on the root, checks every row's loss, the mean and the
/// gathered gradient against the unsplit run (on the root's context) and the f64
/// reference.
pub fn check(shard: &Shard) -> Result<Vec<Agreement>, String> {
    let (options, loss) = options();
    let (rows, cols) = (shard.matrix.rows, shard.matrix.cols);
    let targets = shard.matrix.targets();
    let counted = targets.iter().filter(|&&t| t != loss.ignore_index).count();
    // PyTorch's mean over no rows is NaN; its gradient is 0.
    let scale = if counted == 0 {
        0.0
    } else {
        1.0 / counted as f32
    };
    let first = u32::try_from(shard.columns.start).map_err(|e| e.to_string())?;
    let per_shard = loss
        .with_reduction(Reduction::Sum)
        .with_grad_scale(scale)
        .with_column_offset(first);

    let local = shard.local_stats(&options)?;
    let combined = shard.all_reduce_stats(&local)?;
    let (losses, grad) = shard_loss(shard, &options, &per_shard, &targets, &combined)?;
    let row_losses = shard.all_reduce_sum(&losses);
    let mean = row_losses.iter().map(|&l| f64::from(l)).sum::<f64>() / counted as f64;

    // Label smoothing with given statistics: refused, before any GPU work.
    let smoothed = block_on(shard.ctx.cross_entropy::<f32, f32>(
        &shard.x,
        &targets,
        &mut vec![0.0f32; rows],
        None,
        shard.shape(),
        &options,
        &per_shard.with_label_smoothing(0.1),
        HostInputs::default().with_stats_given(&combined),
    ));

    let Some(gathered) = shard.gather_columns(&grad)? else {
        return Ok(Vec::new());
    };
    let x = shard.matrix.slice(0..cols);
    let mut unsplit_losses = vec![0.0f32; rows];
    let mut unsplit_grad = vec![0.0f32; x.len()];
    let unsplit_mean = block_on(shard.ctx.cross_entropy(
        &x,
        &targets,
        &mut unsplit_losses,
        Some(&mut unsplit_grad[..]),
        Shape::new(rows, cols),
        &options,
        &loss,
        HostInputs::default(),
    ))
    .map_err(|e| format!("unsplit cross-entropy: {e}"))?;
    let (ref_losses, ref_grad) = cross_entropy_f64(
        &x,
        cols,
        &targets,
        &options,
        &HostInputs::default(),
        &loss,
        f64::from(scale),
    );

    let widen = |v: &[f32]| v.iter().map(|&y| f64::from(y)).collect::<Vec<f64>>();
    // The reference rounded to f32's range: past f32::MAX (the z-loss of the row near
    // it) the GPU's answer is rightly infinite.
    let in_range = |v: &[f64]| v.iter().map(|&r| f64::from(r as f32)).collect::<Vec<f64>>();
    let mut failures = Vec::new();
    let mut compare = |what: &str, got: &[f32], want: &[f64], tol, width: usize| {
        let (max, first) = worst(got, want, tol);
        if let Some((i, g, w)) = first {
            failures.push(format!(
                "{what}: row {} col {}: sharded {g}, {w}",
                i / width,
                i % width
            ));
        }
        max
    };
    let loss_err = compare(
        "loss vs unsplit",
        &row_losses,
        &widen(&unsplit_losses),
        TOL_LOSS,
        1,
    );
    let grad_err = compare(
        "gradient vs unsplit",
        &gathered,
        &widen(&unsplit_grad),
        TOL_GRAD,
        cols,
    );
    let (ref_losses, ref_grad) = (in_range(&ref_losses), in_range(&ref_grad));
    compare("loss vs f64", &row_losses, &ref_losses, TOL_LOSS, 1);
    compare("gradient vs f64", &gathered, &ref_grad, TOL_GRAD, cols);
    // Against the f64 reference, the largest error as a share of its tolerance (the
    // gradient of the row near f32::MAX is about 1e33, its absolute error no figure).
    let tol_used_vs_f64 = tolerance_used(&row_losses, &ref_losses, TOL_LOSS)
        .max(tolerance_used(&gathered, &ref_grad, TOL_GRAD));
    let mean_same = if mean.is_finite() && unsplit_mean.is_finite() {
        (mean - unsplit_mean).abs() <= TOL_LOSS.0 + TOL_LOSS.1 * unsplit_mean.abs()
    } else {
        mean.is_nan() == unsplit_mean.is_nan()
    };
    if !mean_same {
        failures.push(format!("mean: sharded {mean}, unsplit {unsplit_mean}"));
    }
    let refused = matches!(smoothed, Err(Error::Unsupported(_)));
    if !refused {
        failures.push(format!(
            "label smoothing with given statistics not refused: {smoothed:?}"
        ));
    }
    let figures = format!(
        "max_abs_err_loss={loss_err:.3e} max_abs_err_grad={grad_err:.3e} \
         tol_used_vs_f64={tol_used_vs_f64:.3} \
         mean={mean:.6} unsplit_mean={unsplit_mean:.6} rows_counted={counted}/{rows} \
         label_smoothing_refused={refused}"
    );
    Ok(vec![Agreement::new(
        "cross-entropy",
        (shard.matrix.ranks, rows, cols),
        figures,
        failures,
    )])
}
