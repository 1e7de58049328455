//! The seeded logit matrix every rank agrees on without sending it: each element is a
//! function of its row and column, so a rank makes only its own columns (and rank 0 the
//! whole matrix, for the checks).

use std::ops::Range;

/// Rows whose values test the special cases of the combine step.
pub const ROW_ALL_MASKED: usize = 1;
/// Every column of rank 0's shard is `-inf`: that shard's statistics are `(-inf, -inf)`.
pub const ROW_SHARD_MASKED: usize = 2;
/// A NaN in the last rank's shard: the whole row is poisoned.
pub const ROW_NAN: usize = 3;
/// A `+inf` in rank 0's shard: the whole row is poisoned.
pub const ROW_POS_INF: usize = 4;
/// The row's maximum, far above the rest, in the last shard.
pub const ROW_MAX_IN_LAST: usize = 5;
/// `f32::MAX` and `-f32::MAX` in different shards.
pub const ROW_NEAR_F32_MAX: usize = 6;
/// Values offset by 100 (the statistics' log-sum-exp carries f32 rounding of its size).
pub const ROW_OFFSET: usize = 7;
/// The row's maximum twice, in rank 0's shard and in the last: greedy sampling must take
/// the lower column, in the first shard.
pub const ROW_TIE_ACROSS_SHARDS: usize = 8;
/// Values rounded to quarters: many ties, at the row's maximum and at the k-th largest
/// value, within and across shards.
pub const ROW_QUANTISED: usize = 9;
/// Cross-entropy leaves this row out (its target is the ignore index).
pub const ROW_IGNORED: usize = 10;

/// The ignore index of cross-entropy's targets (PyTorch's default).
pub const IGNORE_INDEX: i64 = -100;

/// A `[rows, cols]` logit matrix split by columns over `ranks` processes.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub ranks: usize,
}

impl Matrix {
    /// The columns of `rank`: `cols / ranks` each, the remainder spread over the last
    /// ranks, so the shards differ in width whenever `ranks` does not divide `cols`.
    pub fn columns(&self, rank: usize) -> Range<usize> {
        (rank * self.cols / self.ranks)..((rank + 1) * self.cols / self.ranks)
    }

    /// The element at `(row, col)`: uniform noise whose spread grows with the row, with
    /// the special rows above.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        let first = self.columns(0);
        let last = self.columns(self.ranks - 1);
        match row {
            ROW_ALL_MASKED => return f32::NEG_INFINITY,
            ROW_SHARD_MASKED if first.contains(&col) => return f32::NEG_INFINITY,
            ROW_NAN if col == last.start + 3 => return f32::NAN,
            ROW_POS_INF if col == first.end - 1 => return f32::INFINITY,
            ROW_MAX_IN_LAST if col == last.end - 10 => return 30.0,
            ROW_NEAR_F32_MAX if col == first.start + 1 => return f32::MAX,
            ROW_NEAR_F32_MAX if col == last.end - 1 => return -f32::MAX,
            ROW_TIE_ACROSS_SHARDS if col == first.end - 2 || col == last.start + 2 => return 40.0,
            _ => {}
        }
        // SplitMix64 of the element's index: seeded noise in [-1, 1).
        let mut z = (row * self.cols + col) as u64 ^ 0x9e37_79b9_7f4a_7c15;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        let offset = if row == ROW_OFFSET { 100.0 } else { 0.0 };
        let value = offset + unit * (1.0 + row as f32 % 6.0);
        if row == ROW_QUANTISED {
            (value * 4.0).round() / 4.0
        } else {
            value
        }
    }

    /// Row `row`'s cross-entropy target, a column of the whole vocabulary: spread over
    /// the shards by a hash, except in the special rows (a finite column of the last
    /// shard where rank 0's is masked, the far maximum, the ignore index).
    pub fn target(&self, row: usize) -> i64 {
        let last = self.columns(self.ranks - 1);
        let col = match row {
            ROW_IGNORED => return IGNORE_INDEX,
            ROW_SHARD_MASKED => last.start + 1,
            ROW_MAX_IN_LAST => last.end - 10,
            ROW_TIE_ACROSS_SHARDS => last.start + 2,
            _ => (row.wrapping_mul(2_654_435_761) + 17) % self.cols,
        };
        col as i64
    }

    /// Every row's target.
    pub fn targets(&self) -> Vec<i64> {
        (0..self.rows).map(|r| self.target(r)).collect()
    }

    /// Row-major `[rows, range.len()]`: the given columns of every row.
    pub fn slice(&self, range: Range<usize>) -> Vec<f32> {
        (0..self.rows)
            .flat_map(|r| range.clone().map(move |c| (r, c)))
            .map(|(r, c)| self.value(r, c))
            .collect()
    }
}
