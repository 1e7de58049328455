//! The f64 CPU reference, shared by tests, benchmarks and the CLI, and the tolerances of
//! the numerics contract.
//!
//! These are checking tools, not part of the GPU API: they take their inputs as given.
//!
//! # Panics
//!
//! The functions with row inputs panic where the inputs do not fit the matrix (fewer
//! lengths or temperatures than rows, a mask of zero rows or shorter than
//! `mask_rows * cols`); the library's own calls check these first and return errors.
//! [`backward_f64`] stops at the shorter of `y` and `dy`.

use crate::dtype::Dtype;
use crate::host::HostInputs;
use crate::op::{MaskedRows, Op, Options};

/// A tolerance `|y - r| <= abs + rel * |r|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part.
    pub rel: f64,
}

/// f32 softmax: `1e-6 + 1e-5 * |r|`.
pub const SOFTMAX_F32: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};
/// f32 log-softmax: `1e-5 + 1e-5 * |r|`.
pub const LOG_SOFTMAX_F32: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-5,
};
/// A softmax row sums to 1 within this.
pub const ROW_SUM_F32: f64 = 1e-5;
/// f16 storage, f32 compute (softmax and log-softmax): `1e-4 + 2e-3 * |r|`. Rounding to
/// f16 alone is within half a unit in the last place, `2^-11 * |r|`.
pub const F16_STORAGE: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 2e-3,
};
/// bf16 storage, f32 compute: `1e-4 + 8e-3 * |r|`. bf16 keeps 8 significant bits, so
/// rounding alone is within `2^-9 * |r|` (about 2e-3): this is the f16 tolerance
/// scaled by the 3 bits bf16 lacks.
pub const BF16_STORAGE: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 8e-3,
};

impl Tolerance {
    /// The contract's tolerance for an op on f32 data.
    pub fn for_op(op: Op) -> Self {
        match op {
            Op::Softmax => SOFTMAX_F32,
            Op::LogSoftmax => LOG_SOFTMAX_F32,
        }
    }

    /// The contract's tolerance for an op whose output is stored as `dtype`.
    pub fn for_storage(op: Op, dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => Self::for_op(op),
            Dtype::F16 => F16_STORAGE,
            Dtype::Bf16 => BF16_STORAGE,
        }
    }

    /// Whether `y` matches `r`. NaN matches NaN only; where `r` is out of f32's range
    /// (or infinite) `y` must be the same infinity.
    pub fn accepts(&self, y: f32, r: f64) -> bool {
        if r.is_nan() {
            return y.is_nan();
        }
        if (r as f32).is_infinite() {
            return y == r as f32;
        }
        y.is_finite() && (f64::from(y) - r).abs() <= self.abs + self.rel * r.abs()
    }
}

/// Softmax or log-softmax of each row of a `[rows, cols]` matrix, in f64, by the rules of
/// the numerics contract: the row max is subtracted first; `-inf` entries give 0
/// (log: `-inf`); a row with NaN or `+inf` gives NaN; a row of only `-inf` gives NaN, or
/// with [`MaskedRows::Zero`] 0 (log: `-inf`). The causal mask of `options` applies.
pub fn softmax_f64(input: &[f32], cols: usize, options: &Options) -> Vec<f64> {
    softmax_f64_with(input, cols, options, &HostInputs::default())
}

/// [`softmax_f64`] with row inputs: row `r`'s values are `x / (T * T_r) + mask[r %
/// mask_rows]`, masked out (ignored, whatever `x` is) where the mask is `-inf`, at
/// columns past its length or, with a causal mask, past `r + offset`; a row with an
/// invalid `T_r` gives NaN.
pub fn softmax_f64_with(
    input: &[f32],
    cols: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(input.len());
    for (r, row) in input.chunks(cols.max(1)).enumerate() {
        let z = scaled_row(r, row, options, inputs);
        let poisoned = z.iter().any(|v| v.is_nan() || *v == f64::INFINITY);
        let m = z
            .iter()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        if poisoned || m == f64::NEG_INFINITY {
            let fill = match (poisoned, options.masked_rows, options.op) {
                (false, MaskedRows::Zero, Op::Softmax) => 0.0,
                (false, MaskedRows::Zero, Op::LogSoftmax) => f64::NEG_INFINITY,
                _ => f64::NAN,
            };
            out.extend(std::iter::repeat_n(fill, row.len()));
            continue;
        }
        let sum: f64 = z
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| (v - m).exp())
            .sum();
        let log_sum = sum.ln();
        out.extend(z.iter().map(|&v| match (options.op, v.is_finite()) {
            (Op::Softmax, true) => (v - m).exp() / sum,
            (Op::Softmax, false) => 0.0,
            (Op::LogSoftmax, true) => v - m - log_sum,
            (Op::LogSoftmax, false) => f64::NEG_INFINITY,
        }));
    }
    out
}

/// `C * tanh(x / C)` in f64 (`x` itself without a cap): `+-inf` give `+-C`, NaN stays.
pub fn soft_cap(x: f32, softcap: Option<f32>) -> f64 {
    match softcap {
        Some(c) if !x.is_nan() => {
            let c = f64::from(c);
            c * (f64::from(x) / c).tanh()
        }
        _ => f64::from(x),
    }
}

/// Row `r`'s values `x / T + mask` in f64, `-inf` where masked out, NaN everywhere for an
/// invalid per-row temperature.
fn scaled_row(r: usize, row: &[f32], options: &Options, inputs: &HostInputs<'_>) -> Vec<f64> {
    let cols = row.len();
    let mut t = f64::from(options.temperature);
    if let Some(temps) = inputs.temperatures {
        let tr = temps[r];
        // As the kernels: 1 / T in f32, scalar's times row's, must be finite.
        let inv = (1.0 / options.temperature) * (1.0 / tr);
        if !(tr.is_finite() && tr > 0.0 && inv.is_finite()) {
            return vec![f64::NAN; cols];
        }
        t *= f64::from(tr);
    }
    let mut cap = cols;
    if let Some(lengths) = inputs.lengths {
        cap = cap.min(lengths[r] as usize);
    }
    if let Some(offset) = options.causal {
        cap = cap.min((r as u64).saturating_add(offset).saturating_add(1) as usize);
    }
    row.iter()
        .enumerate()
        .map(|(j, &x)| {
            if j >= cap {
                return f64::NEG_INFINITY;
            }
            let at = |rows: usize| (r % rows) * cols + j;
            let mask = inputs
                .mask
                .as_ref()
                .map_or(0.0, |m| f64::from(m.get(at(m.rows()))));
            // A -inf mask entry masks its column out, whatever x holds there.
            if mask == f64::NEG_INFINITY {
                return f64::NEG_INFINITY;
            }
            soft_cap(x, options.softcap) / t + mask
        })
        .collect()
}

/// Each row's `(max, log-sum-exp)` of `x / T` in f64: `(NaN, NaN)` for a row with NaN
/// or `+inf`, `(-inf, -inf)` for a row of only `-inf`.
pub fn row_stats_f64(input: &[f32], cols: usize, temperature: f32) -> Vec<[f64; 2]> {
    let options = Options::default().with_temperature(temperature);
    row_stats_f64_with(input, cols, &options, &HostInputs::default())
}

/// [`row_stats_f64`] with row inputs and the causal mask of `options` (see
/// [`softmax_f64_with`]).
pub fn row_stats_f64_with(
    input: &[f32],
    cols: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
) -> Vec<[f64; 2]> {
    input
        .chunks(cols.max(1))
        .enumerate()
        .map(|(r, row)| {
            let z = scaled_row(r, row, options, inputs);
            if z.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
                return [f64::NAN; 2];
            }
            let m = z
                .iter()
                .filter(|v| v.is_finite())
                .fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            if m == f64::NEG_INFINITY {
                return [f64::NEG_INFINITY; 2];
            }
            let sum: f64 = z
                .iter()
                .filter(|v| v.is_finite())
                .map(|&v| (v - m).exp())
                .sum();
            [m, m + sum.ln()]
        })
        .collect()
}

/// f32 backward (softmax or log-softmax gradient): `1e-5 + 1e-4 * |r|`.
pub const BACKWARD_F32: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

/// The gradient in f64 from the forward output `y` and the incoming gradient `dy`:
/// softmax `y * (dy - sum(dy * y)) / T`, log-softmax `(dy - exp(y) * sum(dy)) / T`.
pub fn backward_f64(y: &[f32], dy: &[f32], cols: usize, options: &Options) -> Vec<f64> {
    let t = f64::from(options.temperature);
    let mut out = Vec::with_capacity(y.len());
    for (yr, gr) in y.chunks(cols.max(1)).zip(dy.chunks(cols.max(1))) {
        let pairs = yr
            .iter()
            .zip(gr)
            .map(|(&a, &b)| (f64::from(a), f64::from(b)));
        match options.op {
            Op::Softmax => {
                let dot: f64 = pairs.clone().map(|(a, b)| a * b).sum();
                out.extend(pairs.map(|(a, b)| a * (b - dot) / t));
            }
            Op::LogSoftmax => {
                let sum: f64 = pairs.clone().map(|(_, b)| b).sum();
                out.extend(pairs.map(|(a, b)| (b - a.exp() * sum) / t));
            }
        }
    }
    out
}

/// The first element outside the tolerance, as `(index, got, expected)`.
pub fn first_mismatch(got: &[f32], expected: &[f64], tol: Tolerance) -> Option<(usize, f32, f64)> {
    got.iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (y, r))| !tol.accepts(**y, **r))
        .map(|(i, (y, r))| (i, *y, *r))
}

/// The largest `|y - r|` over elements where both are finite.
pub fn max_abs_error(got: &[f32], expected: &[f64]) -> f64 {
    got.iter()
        .zip(expected)
        .filter(|(y, r)| y.is_finite() && r.is_finite())
        .map(|(y, r)| (f64::from(*y) - r).abs())
        .fold(0.0, f64::max)
}

/// What the sampler keeps of each row, in f64 (see [`crate::Sampling`] for the filters
/// and their order): per row, the probabilities of the survivors renormalised over them
/// (0 for every filtered or masked entry), or `None` for a row with nothing to draw
/// from (all masked, or NaN / `+inf` in it). Greedy keeps the lowest column among the
/// largest values, with probability 1.
pub fn sample_filter_f64(
    input: &[f32],
    cols: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
    sampling: &crate::Sampling,
) -> Vec<Option<Vec<f64>>> {
    let softmax = Options {
        op: Op::Softmax,
        ..*options
    };
    let probs = softmax_f64_with(input, cols, &softmax, inputs);
    input
        .chunks(cols.max(1))
        .enumerate()
        .map(|(r, row)| {
            let p = &probs[r * cols..r * cols + row.len()];
            if p.iter().any(|v| v.is_nan()) || p.iter().all(|&v| v == 0.0) {
                return None;
            }
            let z = scaled_row(r, row, options, inputs);
            let unmasked: Vec<usize> = (0..cols).filter(|&j| z[j].is_finite()).collect();
            let mut keep = vec![false; cols];
            if sampling.is_greedy() {
                let best = unmasked
                    .iter()
                    .copied()
                    .fold(None::<usize>, |b, j| match b {
                        Some(b) if z[b] >= z[j] => Some(b),
                        _ => Some(j),
                    })?;
                keep[best] = true;
            } else {
                for &j in &unmasked {
                    keep[j] = true;
                }
                if let Some(k) = sampling.top_k {
                    let mut sorted: Vec<f64> = unmasked.iter().map(|&j| z[j]).collect();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    if (k as usize) < sorted.len() {
                        let kth = sorted[k as usize - 1];
                        for &j in &unmasked {
                            keep[j] = keep[j] && z[j] >= kth;
                        }
                    }
                }
                if let Some(top_p) = sampling.top_p {
                    let kept: f64 = (0..cols).filter(|&j| keep[j]).map(|j| p[j]).sum();
                    // The survivors from the largest z down, in runs of equal z: each run's
                    // "above" is the mass of the runs before it.
                    let mut order: Vec<usize> = (0..cols).filter(|&j| keep[j]).collect();
                    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
                    let mut above = 0.0;
                    for run in order.chunk_by(|&a, &b| z[a] == z[b]) {
                        for &j in run {
                            keep[j] = above / kept < f64::from(top_p);
                        }
                        above += run.iter().map(|&j| p[j]).sum::<f64>();
                    }
                }
                if let Some(min_p) = sampling.min_p {
                    let max = p.iter().copied().fold(0.0, f64::max);
                    for j in 0..cols {
                        keep[j] = keep[j] && p[j] >= f64::from(min_p) * max;
                    }
                }
            }
            let total: f64 = (0..cols).filter(|&j| keep[j]).map(|j| p[j]).sum();
            Some(
                (0..cols)
                    .map(|j| if keep[j] { p[j] / total } else { 0.0 })
                    .collect(),
            )
        })
        .collect()
}

/// The uniform variate in (0, 1) of column `col` of row `row` that the sampler's Gumbel
/// variate is made from (see [`crate::Sampling`]).
pub fn sample_uniform(seed: u64, step: u32, row: u32, col: u32) -> f64 {
    let r = crate::philox4x32_10([col, row, step, 0], [seed as u32, (seed >> 32) as u32]);
    (f64::from(r[0]) + 0.5) / 4_294_967_296.0
}

/// The sampler's draw replayed in f64: the column of the largest `z + g` among the
/// survivors `kept` (a row of [`sample_filter_f64`]), `z` the row's scaled values.
pub fn sample_replay_f64(
    row_values: &[f32],
    r: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
    sampling: &crate::Sampling,
    kept: &[f64],
) -> Option<usize> {
    let z = scaled_row(r, row_values, options, inputs);
    let mut best: Option<(f64, usize)> = None;
    for (j, &zj) in z.iter().enumerate() {
        if kept[j] == 0.0 {
            continue;
        }
        let u = sample_uniform(
            sampling.seed,
            sampling.step,
            sampling.row_offset + r as u32,
            sampling.column_offset + j as u32,
        );
        let score = zj - (-u.ln()).ln();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, j));
        }
    }
    best.map(|(_, j)| j)
}

/// Cross-entropy in f64 (see [`crate::CrossEntropy`] for the formulas): each row's loss
/// and the gradient with respect to the logits, scaled by `grad_scale` (the caller
/// folds in the reduction). Rows whose target is the ignore index give 0 and a zero
/// gradient; rows with NaN or `+inf`, or every column masked, give NaN.
pub fn cross_entropy_f64(
    input: &[f32],
    cols: usize,
    targets: &[i64],
    options: &Options,
    inputs: &HostInputs<'_>,
    ce: &crate::CrossEntropy,
    grad_scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut losses, mut grad) = (Vec::new(), Vec::new());
    for (r, row) in input.chunks(cols.max(1)).enumerate() {
        let t = targets[r];
        if t == ce.ignore_index {
            losses.push(0.0);
            grad.extend(std::iter::repeat_n(0.0, cols));
            continue;
        }
        let z = scaled_row(r, row, options, inputs);
        let poisoned = z.iter().any(|v| v.is_nan() || *v == f64::INFINITY);
        let m = z
            .iter()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        if poisoned || m == f64::NEG_INFINITY {
            losses.push(f64::NAN);
            grad.extend(std::iter::repeat_n(f64::NAN, cols));
            continue;
        }
        let unmasked: Vec<usize> = (0..cols).filter(|&j| z[j].is_finite()).collect();
        let k = unmasked.len() as f64;
        let lse = m + unmasked.iter().map(|&j| (z[j] - m).exp()).sum::<f64>().ln();
        let mean_z = unmasked.iter().map(|&j| z[j]).sum::<f64>() / k;
        let (e, w) = (f64::from(ce.label_smoothing), f64::from(ce.z_loss));
        let tt = t as usize;
        losses.push((1.0 - e) * (lse - z[tt]) + e * (lse - mean_z) + w * lse * lse);
        // dz/dx: 1 / (T * T_r), times the cap's slope.
        let mut inv_t = 1.0 / f64::from(options.temperature);
        if let Some(temps) = inputs.temperatures {
            inv_t /= f64::from(temps[r]);
        }
        for j in 0..cols {
            let in_u = z[j].is_finite();
            let p = if in_u { (z[j] - lse).exp() } else { 0.0 };
            let mut dz = (1.0 + 2.0 * w * lse) * p - if in_u { e / k } else { 0.0 };
            if j == tt {
                dz -= 1.0 - e;
            }
            let slope = match options.softcap {
                Some(c) => {
                    let th = (f64::from(row[j]) / f64::from(c)).tanh();
                    1.0 - th * th
                }
                None => 1.0,
            };
            grad.push(grad_scale * dz * inv_t * slope);
        }
    }
    (losses, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_row() {
        let y = softmax_f64(&[7.0, 4.0, 0.0], 3, &Options::default());
        let want = [0.95174, 0.04739, 0.00087];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{y:?}");
        }
    }

    #[test]
    fn non_finite_rules() {
        let inf = f32::INFINITY;
        let y = softmax_f64(
            &[
                0.0,
                -inf,
                0.0,
                -inf,
                -inf,
                -inf,
                1.0,
                inf,
                0.0,
                1.0,
                f32::NAN,
                2.0,
            ],
            3,
            &Options::default(),
        );
        assert_eq!(&y[0..3], &[0.5, 0.0, 0.5]);
        assert!(y[3..12].iter().all(|v| v.is_nan()));
        let zero = Options::default().with_masked_rows(MaskedRows::Zero);
        assert_eq!(softmax_f64(&[-inf, -inf], 2, &zero), vec![0.0, 0.0]);
        let log_zero = Options::log_softmax().with_masked_rows(MaskedRows::Zero);
        assert_eq!(softmax_f64(&[-inf], 1, &log_zero), vec![f64::NEG_INFINITY]);
    }

    #[test]
    fn tolerance_treats_nan_and_infinities_exactly() {
        let t = SOFTMAX_F32;
        assert!(t.accepts(f32::NAN, f64::NAN));
        assert!(!t.accepts(0.5, f64::NAN));
        assert!(!t.accepts(f32::NAN, 0.5));
        assert!(t.accepts(f32::NEG_INFINITY, -1e300));
        assert!(!t.accepts(-3e38, -1e300));
        assert!(t.accepts(0.5 + 5e-6, 0.5));
        assert!(!t.accepts(0.5 + 1e-5, 0.5));
    }

    #[test]
    fn log_softmax_is_shift_minus_log_sum() {
        let y = softmax_f64(&[1.0, 2.0], 2, &Options::log_softmax());
        let lse = (1f64.exp() + 2f64.exp()).ln();
        assert!((y[0] - (1.0 - lse)).abs() < 1e-15);
        assert!((y[1] - (2.0 - lse)).abs() < 1e-15);
    }
}
