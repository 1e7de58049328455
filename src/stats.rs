//! Per-row statistics `(max, log-sum-exp)` for rows split by columns across devices, and
//! their combination across shards: pairwise ([`combine_stats`]) or as the two standard
//! reductions of a collective library ([`stats_max_terms`]).

use crate::error::{Error, Result};

/// What a resident op does with its statistics buffer ([`crate::StatsView`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsMode {
    /// Write each row's `(max, log-sum-exp)` of `x / T` (and the softmax, as usual).
    Write,
    /// Normalise each row with the `(max, log-sum-exp)` read from the buffer.
    Given,
}

/// Combines the statistics of two column shards of the same row: the larger max, and the
/// log of the summed exponentials. `(NaN, NaN)` (a poisoned shard) poisons the result;
/// `(-inf, -inf)` (a fully masked shard) leaves the other unchanged.
pub fn combine_stats(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    if a[1].is_nan() || b[1].is_nan() || a[1] == f32::INFINITY || b[1] == f32::INFINITY {
        return [f32::NAN, f32::NAN];
    }
    if a[1] == f32::NEG_INFINITY {
        return b;
    }
    if b[1] == f32::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a[1] >= b[1] {
        (f64::from(a[1]), f64::from(b[1]))
    } else {
        (f64::from(b[1]), f64::from(a[1]))
    };
    let lse = hi + (lo - hi).exp().ln_1p();
    [a[0].max(b[0]), lse as f32]
}

/// The classes of a shard's row statistics, as [`combine_stats`] treats them.
enum ShardRow {
    /// `(-inf, -inf)`: every column of the shard masked; it adds nothing.
    Masked,
    /// A NaN or `+inf` log-sum-exp (or a max that is not finite beside a finite
    /// log-sum-exp, which the library never writes): the whole row is poisoned.
    Poisoned,
    /// Finite `(max, lse)`.
    Finite { max: f32, lse: f32 },
}

fn classify(stats: [f32; 2]) -> ShardRow {
    let [max, lse] = stats;
    if lse == f32::NEG_INFINITY {
        ShardRow::Masked
    } else if lse.is_nan() || lse == f32::INFINITY || !max.is_finite() {
        ShardRow::Poisoned
    } else {
        ShardRow::Finite { max, lse }
    }
}

fn check_rows(which: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::InputLength {
            which,
            expected,
            actual,
        })
    }
}

/// The combine step of [`combine_stats`] for any number of shards, as two reductions
/// that every collective library has built in: a max, then a sum. This is the first
/// half: per row, the value this shard contributes to an elementwise **max** reduction
/// across shards (an MPI `all_reduce` with `MPI_MAX`, an `ncclMax` all-reduce, or a fold
/// with `f32::max` over the contexts of one process).
///
/// `shard` holds the shard's statistics as the library writes them
/// ([`crate::HostInputs::with_stats_out`], [`crate::StatsView::write`]): per row,
/// `(max, log-sum-exp)` of `x / T` over the shard's columns. A row's term is its max; a
/// fully masked shard's is `-inf`, so it adds nothing; a poisoned shard's (NaN or `+inf`
/// log-sum-exp) is `+inf`, so the combined row is poisoned. No NaN is ever handed to the
/// max reduction, whose treatment of NaN differs between libraries.
///
/// Next, [`stats_sum_terms`] with the reduced maxima, then [`stats_from_reductions`].
/// The terms travel as f32 (4 bytes per row) and f64 (8 bytes per row).
///
/// ```
/// use wgpu_softmax::{combine_stats, stats_from_reductions, stats_max_terms, stats_sum_terms};
/// # fn main() -> Result<(), wgpu_softmax::Error> {
/// // Two shards of two rows; the second row is fully masked in the first shard.
/// let shards = [
///     vec![[1.0f32, 1.5], [f32::NEG_INFINITY; 2]],
///     vec![[3.0f32, 3.2], [0.5, 2.0]],
/// ];
/// // The max reduction (here a fold over the shards; an MPI or NCCL all-reduce with MAX
/// // in an app where each shard is another process).
/// let mut max = vec![f32::NEG_INFINITY; 2];
/// for shard in &shards {
///     for (m, t) in max.iter_mut().zip(stats_max_terms(shard)) {
///         *m = m.max(t);
///     }
/// }
/// // The sum reduction of each shard's rescaled exponentials (all-reduce with SUM).
/// let mut sum = vec![0.0f64; 2];
/// for shard in &shards {
///     for (s, t) in sum.iter_mut().zip(stats_sum_terms(shard, &max)?) {
///         *s += t;
///     }
/// }
/// // Every shard turns the reduced values into the same combined statistics, ready for
/// // `HostInputs::with_stats_given` or `StatsView::given`.
/// let combined = stats_from_reductions(&max, &sum)?;
/// assert_eq!(combined[1], [0.5, 2.0]);
/// let folded = combine_stats(shards[0][0], shards[1][0]);
/// assert!((combined[0][1] - folded[1]).abs() <= 4.0 * f32::EPSILON);
/// # Ok(()) }
/// ```
pub fn stats_max_terms(shard: &[[f32; 2]]) -> Vec<f32> {
    shard
        .iter()
        .map(|&stats| match classify(stats) {
            ShardRow::Masked => f32::NEG_INFINITY,
            ShardRow::Poisoned => f32::INFINITY,
            ShardRow::Finite { max, .. } => max,
        })
        .collect()
}

/// The second half of the combine step (see [`stats_max_terms`]): per row, the value this
/// shard contributes to an elementwise **sum** reduction across shards, given `max`, the
/// max-reduced terms of all shards. It is the shard's sum of `exp(x / T - max)`, that is
/// `exp(lse - max)`, in f64: at least 1 for the shard that holds the row's max, at most
/// its column count, so it neither overflows nor loses the shards whose exponentials are
/// small beside the largest (each term keeps f64's 53 bits).
///
/// A masked shard sends 0. Where `max` is `+inf` (some shard is poisoned) every shard
/// sends 0, and a poisoned shard always sends NaN (which an IEEE sum keeps), so the row
/// stays poisoned even if `max` did not come from this shard's terms.
///
/// # Errors
///
/// [`Error::InputLength`] (`which: "max"`) when `max` does not have one value per row of
/// `shard`.
pub fn stats_sum_terms(shard: &[[f32; 2]], max: &[f32]) -> Result<Vec<f64>> {
    check_rows("max", shard.len(), max.len())?;
    Ok(shard
        .iter()
        .zip(max)
        .map(|(&stats, &row_max)| match classify(stats) {
            ShardRow::Masked => 0.0,
            ShardRow::Poisoned => f64::NAN,
            ShardRow::Finite { lse, .. } => {
                if row_max == f32::INFINITY {
                    0.0
                } else {
                    // exp(lse - max) in f64; the difference of two f32 is exact there.
                    (f64::from(lse) - f64::from(row_max)).exp()
                }
            }
        })
        .collect())
}

/// The way back from the two reductions (see [`stats_max_terms`]): per row, the combined
/// `(max, log-sum-exp)` from the max-reduced `max` and the sum-reduced `sum`, computed in
/// f64 and rounded once to f32. These are the statistics of the whole row, to give every
/// shard ([`crate::HostInputs::with_stats_given`], [`crate::StatsView::given`]); all
/// shards compute the same bits from the same reduced values.
///
/// The special rows come out as [`combine_stats`] gives them: `(-inf, -inf)` when every
/// shard was masked (max `-inf`, sum 0), `(NaN, NaN)` when any shard was poisoned (max
/// `+inf`, or a sum that is NaN or infinite).
///
/// # Errors
///
/// [`Error::InputLength`] (`which: "sum"`) when `sum` and `max` differ in length.
pub fn stats_from_reductions(max: &[f32], sum: &[f64]) -> Result<Vec<[f32; 2]>> {
    check_rows("sum", max.len(), sum.len())?;
    Ok(max
        .iter()
        .zip(sum)
        .map(|(&m, &s)| {
            if m == f32::INFINITY || m.is_nan() || !s.is_finite() {
                [f32::NAN, f32::NAN]
            } else if m == f32::NEG_INFINITY || s <= 0.0 {
                [f32::NEG_INFINITY, f32::NEG_INFINITY]
            } else {
                [m, (f64::from(m) + s.ln()) as f32]
            }
        })
        .collect())
}

/// The combined statistics of shards held in one process (one context per device, say):
/// [`stats_max_terms`], [`stats_sum_terms`] and [`stats_from_reductions`] with the two
/// reductions done as loops. The same as folding [`combine_stats`] over the shards, up
/// to f32 rounding (this rounds once, the fold once per shard).
///
/// # Errors
///
/// [`Error::InputLength`] (`which: "stats"`) when the shards differ in row count.
pub fn combine_shard_stats<S: AsRef<[[f32; 2]]>>(shards: &[S]) -> Result<Vec<[f32; 2]>> {
    let rows = shards.first().map_or(0, |s| s.as_ref().len());
    let mut max = vec![f32::NEG_INFINITY; rows];
    for shard in shards {
        check_rows("stats", rows, shard.as_ref().len())?;
        for (m, t) in max.iter_mut().zip(stats_max_terms(shard.as_ref())) {
            // Terms are never NaN, so `max` is the IEEE maximum here.
            *m = m.max(t);
        }
    }
    let mut sum = vec![0.0f64; rows];
    for shard in shards {
        for (s, t) in sum.iter_mut().zip(stats_sum_terms(shard.as_ref(), &max)?) {
            *s += t;
        }
    }
    stats_from_reductions(&max, &sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASKED: [f32; 2] = [f32::NEG_INFINITY; 2];
    const POISONED: [f32; 2] = [f32::NAN; 2];

    /// A small seeded generator (xorshift64*), uniform in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `(max, log-sum-exp)` of values in f64, rounded to f32 as the library writes them.
    fn stats_of(values: &[f64]) -> [f32; 2] {
        let m = values.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let s: f64 = values.iter().map(|v| (v - m).exp()).sum();
        [m as f32, (m + s.ln()) as f32]
    }

    /// The spacing of f32 values just above `|x|`.
    fn ulp(x: f32) -> f32 {
        let a = x.abs();
        f32::from_bits(a.to_bits() + 1) - a
    }

    /// The f32 distance between `a` and `b` in units in the last place of `b`.
    fn ulps(a: f32, b: f32) -> f32 {
        (a - b).abs() / ulp(b)
    }

    /// Rows of random logits (spread up to 40, offsets up to 1e4) split into `n` uneven
    /// shards: per shard its rows' statistics, and each whole row's log-sum-exp in f64
    /// from the same f32-rounded shard statistics.
    fn random_shards(seed: u64, rows: usize, n: usize) -> (Vec<Vec<[f32; 2]>>, Vec<f64>) {
        let mut rng = Rng(seed);
        let mut shards = vec![Vec::new(); n];
        let mut exact = Vec::new();
        for _ in 0..rows {
            let spread = 40.0 * rng.next();
            let offset = 1e4 * (rng.next() - 0.5);
            let mut row_stats = Vec::new();
            for shard in shards.iter_mut() {
                let cols = 1 + (rng.next() * 50.0) as usize;
                let values: Vec<f64> = (0..cols)
                    .map(|_| f64::from((offset + spread * rng.next()) as f32))
                    .collect();
                let s = stats_of(&values);
                shard.push(s);
                row_stats.push(s);
            }
            let m = row_stats
                .iter()
                .fold(f64::NEG_INFINITY, |a, s| a.max(f64::from(s[1])));
            let sum: f64 = row_stats.iter().map(|s| (f64::from(s[1]) - m).exp()).sum();
            exact.push(m + sum.ln());
        }
        (shards, exact)
    }

    fn fold(shards: &[Vec<[f32; 2]>], row: usize) -> [f32; 2] {
        shards[1..]
            .iter()
            .fold(shards[0][row], |acc, s| combine_stats(acc, s[row]))
    }

    #[test]
    fn two_shards_combine_as_combine_stats_does() {
        let (shards, _) = random_shards(1, 2000, 2);
        let combined = combine_shard_stats(&shards).unwrap();
        let mut differing = 0;
        for (r, c) in combined.iter().enumerate() {
            let pair = combine_stats(shards[0][r], shards[1][r]);
            assert_eq!(c[0], pair[0], "row {r}: max");
            // Both round an f64 log-add once; they differ at most at a rounding tie.
            assert!(ulps(c[1], pair[1]) <= 1.0, "row {r}: {c:?} vs {pair:?}");
            differing += usize::from(c[1] != pair[1]);
        }
        assert!(
            differing <= 20,
            "{differing} of 2000 rows differ in the last bit"
        );
    }

    #[test]
    fn many_shards_combine_as_a_fold_of_combine_stats_and_closer_to_f64() {
        for n in [3, 5, 8] {
            let (shards, exact) = random_shards(n as u64, 500, n);
            let combined = combine_shard_stats(&shards).unwrap();
            for (r, c) in combined.iter().enumerate() {
                let folded = fold(&shards, r);
                assert_eq!(c[0], folded[0], "{n} shards, row {r}: max");
                // The fold rounds to f32 after each of its n - 1 steps; this rounds once.
                assert!(ulps(c[1], folded[1]) <= n as f32, "{n} shards, row {r}");
                // Within half an ulp of the f64 value (plus f64 rounding): rounded once.
                let half_ulp = f64::from(ulp(exact[r] as f32)) / 2.0;
                let err = (f64::from(c[1]) - exact[r]).abs();
                assert!(err <= half_ulp * 1.001, "{n} shards, row {r}: {err}");
            }
        }
    }

    #[test]
    fn masked_shards_add_nothing_and_all_masked_stays_masked() {
        let finite = [2.0f32, 3.5];
        let shards = [
            vec![MASKED, MASKED],
            vec![finite, MASKED],
            vec![MASKED, MASKED],
        ];
        let combined = combine_shard_stats(&shards).unwrap();
        assert_eq!(combined[0], finite);
        assert_eq!(combined[0], combine_stats(MASKED, finite));
        assert_eq!(combined[1], MASKED);
        assert_eq!(combined[1], combine_stats(MASKED, MASKED));
    }

    #[test]
    fn a_poisoned_shard_poisons_the_row_whatever_the_others_hold() {
        let poisons = [POISONED, [1.0, f32::INFINITY], [f32::NAN, 2.0]];
        for poison in poisons {
            for other in [MASKED, [1e30, 1e30], [-3.0, -1.0]] {
                for shards in [[vec![poison], vec![other]], [vec![other], vec![poison]]] {
                    let c = combine_shard_stats(&shards).unwrap()[0];
                    assert!(c[0].is_nan() && c[1].is_nan(), "{shards:?} gave {c:?}");
                }
            }
        }
        // As combine_stats documents it for the statistics the library writes.
        assert!(combine_stats(POISONED, MASKED)[1].is_nan());
        assert!(combine_stats([1.0, f32::INFINITY], [0.0, 0.0])[1].is_nan());
    }

    #[test]
    fn the_max_reduction_never_sees_nan() {
        let terms = stats_max_terms(&[POISONED, MASKED, [1.0, 2.0], [f32::NAN, 3.0]]);
        assert_eq!(
            terms,
            [f32::INFINITY, f32::NEG_INFINITY, 1.0, f32::INFINITY]
        );
    }

    #[test]
    fn a_poisoned_shard_sends_nan_into_the_sum_even_beside_a_finite_max() {
        // A caller whose max reduction lost the +inf still gets a poisoned row.
        let sum = stats_sum_terms(&[POISONED], &[1.0]).unwrap();
        assert!(sum[0].is_nan());
        assert!(stats_from_reductions(&[1.0], &sum).unwrap()[0][1].is_nan());
    }

    #[test]
    fn far_apart_shards_keep_the_larger() {
        let c = combine_shard_stats(&[vec![[1e30f32, 1e30]], vec![[0.0, 0.0]]]).unwrap();
        assert_eq!(c[0], [1e30, 1e30]);
        let c =
            combine_shard_stats(&[vec![[f32::MAX, f32::MAX]], vec![[f32::MAX, f32::MAX]]]).unwrap();
        // ln 2 is far below half an ulp of f32::MAX: no overflow to +inf.
        assert_eq!(c[0], [f32::MAX, f32::MAX]);
    }

    #[test]
    fn lengths_that_do_not_match_are_refused() {
        let e = stats_sum_terms(&[[0.0, 0.0]; 3], &[0.0; 2]).unwrap_err();
        assert_eq!(
            e,
            Error::InputLength {
                which: "max",
                expected: 3,
                actual: 2
            }
        );
        let e = stats_from_reductions(&[0.0; 2], &[1.0; 3]).unwrap_err();
        assert_eq!(
            e,
            Error::InputLength {
                which: "sum",
                expected: 2,
                actual: 3
            }
        );
        let e = combine_shard_stats(&[vec![[0.0f32, 0.0]; 2], vec![[0.0, 0.0]]]).unwrap_err();
        assert_eq!(
            e,
            Error::InputLength {
                which: "stats",
                expected: 2,
                actual: 1
            }
        );
        assert!(combine_shard_stats::<Vec<[f32; 2]>>(&[])
            .unwrap()
            .is_empty());
    }
}
