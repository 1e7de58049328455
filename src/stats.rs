//! Per-row statistics `(max, log-sum-exp)` for rows split by columns across devices.

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
