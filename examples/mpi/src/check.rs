//! Agreement of a sharded result with the unsplit one and with the f64 reference, as the
//! lines the CI script looks for.

use wgpu_softmax::internals::reference::{first_mismatch, max_abs_error, Tolerance};

/// How one op's sharded result compares; built on the root only.
#[derive(Debug)]
pub struct Agreement {
    /// The op, as printed (`softmax`, `log-softmax`, ...).
    pub op: String,
    pub ranks: usize,
    pub rows: usize,
    pub cols: usize,
    /// The op's figures as printed after the shape, `name=value` separated by spaces
    /// (for softmax: the largest errors against the unsplit result and the f64
    /// reference, the rows with equal bits, the statistics' largest difference).
    pub figures: String,
    /// Every breach of the numerics contract found, in words; empty when it agrees.
    pub failures: Vec<String>,
}

impl Agreement {
    /// Compares a sharded result with the unsplit result of the same op on one context
    /// and with the f64 reference, by the numerics contract's tolerance for `tol`.
    pub fn compare(
        op: &str,
        (ranks, cols): (usize, usize),
        sharded: &[f32],
        unsplit: &[f32],
        reference: &[f64],
        tol: Tolerance,
    ) -> Self {
        let rows = sharded.len() / cols.max(1);
        let mut failures = Vec::new();
        if let Some((i, got, want)) = first_mismatch(sharded, reference, tol) {
            failures.push(format!(
                "row {} col {}: sharded {got}, f64 reference {want}",
                i / cols,
                i % cols
            ));
        }
        let unsplit_f64: Vec<f64> = unsplit.iter().map(|&v| f64::from(v)).collect();
        if let Some((i, got, want)) = first_mismatch(sharded, &unsplit_f64, tol) {
            failures.push(format!(
                "row {} col {}: sharded {got}, unsplit {want}",
                i / cols,
                i % cols
            ));
        }
        let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let bitwise_equal_rows = sharded
            .chunks(cols)
            .zip(unsplit.chunks(cols))
            .filter(|(a, b)| a.iter().zip(*b).all(|(x, y)| same(x, y)))
            .count();
        let figures = format!(
            "max_abs_err_vs_unsplit={:.3e} max_abs_err_vs_f64={:.3e} bitwise_equal_rows={bitwise_equal_rows}/{rows}",
            max_abs_error(sharded, &unsplit_f64),
            max_abs_error(sharded, reference),
        );
        Self::new(op, (ranks, rows, cols), figures, failures)
    }

    /// An agreement with figures of the op's own (see [`Agreement::figures`]).
    pub fn new(
        op: &str,
        (ranks, rows, cols): (usize, usize, usize),
        figures: String,
        failures: Vec<String>,
    ) -> Self {
        Self {
            op: op.to_string(),
            ranks,
            rows,
            cols,
            figures,
            failures,
        }
    }

    /// Adds the comparison of the combined statistics with the unsplit run's: NaN and
    /// `-inf` rows must be the same rows; the finite ones' difference is reported.
    pub fn with_stats(mut self, combined: &[[f32; 2]], unsplit: &[[f32; 2]]) -> Self {
        let mut worst = 0.0f64;
        for (r, (c, u)) in combined.iter().zip(unsplit).enumerate() {
            for k in 0..2 {
                let (c, u) = (c[k], u[k]);
                if c.is_finite() && u.is_finite() {
                    worst = worst.max((f64::from(c) - f64::from(u)).abs());
                } else if !(c.is_nan() && u.is_nan()) && c != u {
                    self.failures
                        .push(format!("row {r} statistic {k}: combined {c}, unsplit {u}"));
                }
            }
        }
        self.figures += &format!(" stats_max_abs_err={worst:.3e}");
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// `agree OP ranks=N ...` when it agrees, `DISAGREE OP ...` and the reasons otherwise.
    pub fn print(&self) {
        let word = if self.ok() { "agree" } else { "DISAGREE" };
        println!(
            "{word} {} ranks={} shape={}x{} {}",
            self.op, self.ranks, self.rows, self.cols, self.figures
        );
        for failure in &self.failures {
            println!("  {failure}");
        }
    }
}

/// Whether `got` is within `abs + rel * |want|` of `want`, the non-finite values alike
/// (NaN where NaN, the same infinity).
pub fn close(got: f32, want: f64, (abs, rel): (f64, f64)) -> bool {
    let got = f64::from(got);
    if got.is_finite() && want.is_finite() {
        (got - want).abs() <= abs + rel * want.abs()
    } else {
        (got.is_nan() && want.is_nan()) || got == want
    }
}

/// The largest `|got - want|` over the pairs finite in both, and the first pair (as
/// `(index, got, want)`) outside the tolerance of [`close`].
pub fn worst(got: &[f32], want: &[f64], tol: (f64, f64)) -> (f64, Option<(usize, f32, f64)>) {
    let max = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max);
    let first = got
        .iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| !close(**g, **w, tol))
        .map(|(i, (g, w))| (i, *g, *w));
    (max, first)
}

/// The largest `|got - want| / (abs + rel * |want|)` over the pairs finite in both: the
/// share of the tolerance used (at most 1 where [`close`] holds).
pub fn tolerance_used(got: &[f32], want: &[f64], (abs, rel): (f64, f64)) -> f64 {
    got.iter()
        .zip(want)
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(g, w)| (f64::from(*g) - w).abs() / (abs + rel * w.abs()))
        .fold(0.0, f64::max)
}
