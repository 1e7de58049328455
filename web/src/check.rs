//! Checks against the f64 reference with the numerics contract's tolerances: the same
//! checks as the native tests' `tests/common/mod.rs` and `tests/dtypes.rs`.

use wgpu_softmax::internals::reference::{
    first_mismatch, row_stats_f64, softmax_f64_with, Tolerance, ROW_SUM_F32,
};
use wgpu_softmax::{Element, HostInputs, Op, Options, Shape};

/// Checks every element of `got` (stored as `U`) against the f64 reference of `x` (the
/// values the input holds) with `inputs` fused in, and softmax row sums against 1.
pub fn output<U: Element>(
    got: &[U],
    x: &[f32],
    shape: Shape,
    options: &Options,
    inputs: &HostInputs<'_>,
    what: &str,
) -> Result<(), String> {
    if got.len() != x.len() {
        return Err(format!(
            "{what}: {} outputs for {} inputs",
            got.len(),
            x.len()
        ));
    }
    // A finite result beyond the storage type's range is stored as an infinity.
    let want: Vec<f64> = softmax_f64_with(x, shape.cols, options, inputs)
        .into_iter()
        .map(|r| {
            let stored = U::from_f32(r as f32).to_f32();
            if r.is_finite() && stored.is_infinite() {
                f64::from(stored)
            } else {
                r
            }
        })
        .collect();
    let got: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
    let tol = Tolerance::for_storage(options.op, U::DTYPE);
    if let Some((i, y, r)) = first_mismatch(&got, &want, tol) {
        return Err(format!(
            "{what} {shape:?} {options:?} {:?}: element {i} (row {}, col {}) is {y:e}, \
             reference {r:e} (input {:e})",
            U::DTYPE,
            i / shape.cols,
            i % shape.cols,
            x[i]
        ));
    }
    if options.op == Op::Softmax && U::DTYPE == wgpu_softmax::Dtype::F32 {
        for (r, row) in got.chunks(shape.cols.max(1)).enumerate() {
            if row.iter().any(|y| y.is_nan()) {
                continue;
            }
            let sum: f64 = row.iter().map(|&y| f64::from(y)).sum();
            let all_zero = row.iter().all(|&y| y == 0.0);
            if !(all_zero || (sum - 1.0).abs() <= ROW_SUM_F32) {
                return Err(format!("{what} {shape:?}: row {r} sums to {sum}"));
            }
        }
    }
    Ok(())
}

/// Statistics within f32 rounding of the f64 ones; NaN and -inf exactly (as
/// `tests/stats.rs`).
pub fn stats(
    got: &[[f32; 2]],
    x: &[f32],
    cols: usize,
    temperature: f32,
    what: &str,
) -> Result<(), String> {
    let want = row_stats_f64(x, cols, temperature);
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} rows of stats, want {}",
            got.len(),
            want.len()
        ));
    }
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        for k in 0..2 {
            let (g, w) = (g[k], w[k]);
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                f64::from(g) == w
            } else {
                (f64::from(g) - w).abs() <= 1e-5 + 1e-6 * w.abs()
            };
            if !ok {
                return Err(format!("{what}: row {r} stat {k} is {g}, reference {w}"));
            }
        }
    }
    Ok(())
}

/// The largest `|y - r|` of a softmax of `x` against the f64 reference (finite
/// references only), and how many elements are outside the contract's tolerance; row by
/// row, so that no f64 copy of the whole matrix is held.
pub fn max_abs_error(got: &[f32], x: &[f32], cols: usize, options: &Options) -> (f64, usize) {
    let tol = Tolerance::for_op(options.op);
    let (mut worst, mut outside) = (0.0f64, 0);
    for (g, row) in got.chunks(cols).zip(x.chunks(cols)) {
        let want = wgpu_softmax::internals::reference::softmax_f64(row, cols, options);
        for (&y, &r) in g.iter().zip(&want) {
            if r.is_finite() {
                worst = worst.max((f64::from(y) - r).abs());
            }
            if !tol.accepts(y, r) {
                outside += 1;
            }
        }
    }
    (worst, outside)
}
