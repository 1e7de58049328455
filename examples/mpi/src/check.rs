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
    /// Largest `|sharded - unsplit|` over elements finite in both.
    pub max_abs_err_vs_unsplit: f64,
    /// Largest `|sharded - reference|` over elements finite in both.
    pub max_abs_err_vs_f64: f64,
    /// Rows whose sharded result has the unsplit result's bits (NaN counted as equal).
    pub bitwise_equal_rows: usize,
    /// Largest difference of the combined statistics from the unsplit run's, over finite
    /// values (`None` for an op without statistics).
    pub stats_max_abs_err: Option<f64>,
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
        Self {
            op: op.to_string(),
            ranks,
            rows,
            cols,
            max_abs_err_vs_unsplit: max_abs_error(sharded, &unsplit_f64),
            max_abs_err_vs_f64: max_abs_error(sharded, reference),
            bitwise_equal_rows,
            stats_max_abs_err: None,
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
        self.stats_max_abs_err = Some(worst);
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// `agree OP ranks=N ...` when it agrees, `DISAGREE OP ...` and the reasons otherwise.
    pub fn print(&self) {
        let word = if self.ok() { "agree" } else { "DISAGREE" };
        let stats = self
            .stats_max_abs_err
            .map(|e| format!(" stats_max_abs_err={e:.3e}"))
            .unwrap_or_default();
        println!(
            "{word} {} ranks={} shape={}x{} max_abs_err_vs_unsplit={:.3e} max_abs_err_vs_f64={:.3e} bitwise_equal_rows={}/{}{stats}",
            self.op,
            self.ranks,
            self.rows,
            self.cols,
            self.max_abs_err_vs_unsplit,
            self.max_abs_err_vs_f64,
            self.bitwise_equal_rows,
            self.rows,
        );
        for failure in &self.failures {
            println!("  {failure}");
        }
    }
}
