//! Issue 19, 2(c): one token per row drawn from a vocabulary split by columns across
//! ranks, equal to the draw from the unsplit row under the same seed.
//!
//! The library's draw is Gumbel-max: the column with the largest `z_j + g_j`, where
//! `g_j` depends only on the seed, the step, the row and the global column. So each rank
//! draws from its own shard (`Sampling::with_column_offset`), and the row's draw is the
//! shard winner with the largest score: the ranks all-gather one `(logit, global id)`
//! pair per row (8 bytes) and each recomputes the winners' `g` on the CPU.
//!
//! - greedy: the score is the logit itself, ties to the lowest global column;
//! - seeded, no filter: the score is `x / T + g(id)` in f64;
//! - seeded top-k: the ranks first all-gather their `k` largest logits per row
//!   (`4 k` bytes), so every rank knows the row's k-th largest; each masks its columns
//!   below it with an additive `-inf` mask and draws with no filter, then as above.
//!   Ties at the threshold are kept, as the unsplit top-k keeps them.
//!
//! A shard whose part of the row is poisoned (NaN or `+inf`: `NO_TOKEN` with a NaN
//! log-probability) poisons the row; a shard with nothing to draw from (all masked:
//! `NO_TOKEN` with `-inf` under `MaskedRows::Zero`) drops out.
//!
//! The shard winner's logit comes from the rank's own copy of its logits, not from its
//! log-probability plus its log-sum-exp: that sum is rounded at the size of the
//! log-sum-exp, different on each shard, and would break exact ties across shards.

use wgpu_softmax::{
    block_on, philox4x32_10, HostInputs, MaskedRows, Options, Sampling, Shape, NO_TOKEN,
};

use crate::check::Agreement;
use crate::shard::Shard;

/// The generator's key for the seeded draws.
pub const SEED: u64 = 0x0019_5eed_2026_1203;
/// Seeded draws are checked at the generator's steps `0..STEPS`, each a new draw of
/// every row.
pub const STEPS: u32 = 4;
/// Top-k's `k`.
pub const TOP_K: usize = 50;
/// The share of seeded draws that must equal the unsplit ones, in percent (they may
/// differ only where f32 rounding reorders two nearly equal scores).
pub const SEEDED_AGREEMENT_PERCENT: usize = 99;

fn options() -> Options {
    Options::softmax()
        .with_temperature(1.25)
        .with_masked_rows(MaskedRows::Zero)
}

/// One rank's winner of one row, as sent: its logit's bits (high word) and its global
/// column (low word). `(NaN, NO_TOKEN)`: the shard's part of the row is poisoned;
/// `(-inf, NO_TOKEN)`: it has nothing to draw from.
type Candidate = u64;

fn candidate(x: f32, id: u32) -> Candidate {
    u64::from(x.to_bits()) << 32 | u64::from(id)
}

fn logit_and_id(c: Candidate) -> (f32, u32) {
    (f32::from_bits((c >> 32) as u32), c as u32)
}

/// This rank's winners of every row, under `sampling` (with its column offset set
/// here) and an optional additive mask of the shard's shape.
fn shard_winners(
    shard: &Shard,
    sampling: Sampling,
    mask: Option<&[f32]>,
) -> Result<Vec<Candidate>, String> {
    let rows = shard.matrix.rows;
    let width = shard.columns.len();
    let first = u32::try_from(shard.columns.start).map_err(|e| e.to_string())?;
    let mut ids = vec![0u32; rows];
    let mut logprobs = vec![0.0f32; rows];
    let mut inputs = HostInputs::default();
    if let Some(mask) = mask {
        inputs = inputs.with_mask(mask, rows);
    }
    block_on(shard.ctx.sample(
        &shard.x,
        &mut ids,
        Some(&mut logprobs),
        shard.shape(),
        &options(),
        &sampling.with_column_offset(first),
        inputs,
    ))
    .map_err(|e| format!("rank {}: sample: {e}", shard.rank))?;
    Ok(ids
        .iter()
        .zip(&logprobs)
        .enumerate()
        .map(|(r, (&id, &lp))| {
            if id == NO_TOKEN {
                let x = if lp.is_nan() {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                };
                candidate(x, NO_TOKEN)
            } else {
                candidate(shard.x[r * width + id as usize], first + id)
            }
        })
        .collect())
}

/// The row's draw from every rank's winners (`all`, rank-major, `rows` each): the
/// largest `score(row, logit, id)`, the lowest id among equal scores; `NO_TOKEN` when a
/// shard is poisoned or none has a winner.
fn combine(all: &[Candidate], rows: usize, score: impl Fn(usize, f32, u32) -> f64) -> Vec<u32> {
    (0..rows)
        .map(|r| {
            let mut best: Option<(f64, u32)> = None;
            for c in all.iter().skip(r).step_by(rows) {
                let (x, id) = logit_and_id(*c);
                if x.is_nan() {
                    return NO_TOKEN;
                }
                if id == NO_TOKEN {
                    continue;
                }
                let s = score(r, x, id);
                if best.is_none_or(|(bs, bid)| s > bs || (s == bs && id < bid)) {
                    best = Some((s, id));
                }
            }
            best.map_or(NO_TOKEN, |(_, id)| id)
        })
        .collect()
}

/// The Gumbel variate the library adds to column `col` of row `row`, in f64.
fn gumbel(sampling: &Sampling, row: usize, col: u32) -> f64 {
    let key = [sampling.seed as u32, (sampling.seed >> 32) as u32];
    let w = philox4x32_10(
        [col, sampling.row_offset + row as u32, sampling.step, 0],
        key,
    )[0];
    let u = (f64::from(w) + 0.5) / 4_294_967_296.0;
    -(-u.ln()).ln()
}

/// The seeded draw of every row, sharded: each rank draws from its shard (with the
/// mask, if any), then the winners are combined by `x / T + g`.
fn seeded(shard: &Shard, sampling: Sampling, mask: Option<&[f32]>) -> Result<Vec<u32>, String> {
    let mine = shard_winners(shard, sampling, mask)?;
    let all = shard.all_gather(&mine);
    let inv_t = 1.0 / f64::from(options().temperature);
    Ok(combine(&all, shard.matrix.rows, |r, x, id| {
        f64::from(x) * inv_t + gumbel(&sampling, r, id)
    }))
}

/// The additive mask that keeps, of this rank's columns, those at or above the row's
/// k-th largest logit over all shards, found from every rank's `k` largest.
fn top_k_mask(shard: &Shard, k: usize) -> Vec<f32> {
    let (rows, width) = (shard.matrix.rows, shard.columns.len());
    // Largest first; NaN as -inf (a NaN poisons the row whatever the threshold).
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let descending = |a: &f32, b: &f32| key(*b).total_cmp(&key(*a));
    let mut mine = vec![f32::NEG_INFINITY; rows * k];
    for (r, row) in shard.x.chunks(width).enumerate() {
        let mut values = row.to_vec();
        if values.len() > k {
            values.select_nth_unstable_by(k - 1, descending);
            values.truncate(k);
        }
        mine[r * k..r * k + values.len()].copy_from_slice(&values);
    }
    let all = shard.all_gather(&mine);
    let mut mask = vec![0.0f32; rows * width];
    for r in 0..rows {
        let mut candidates: Vec<f32> = all
            .chunks(rows * k)
            .flat_map(|of_rank| of_rank[r * k..(r + 1) * k].iter().copied())
            .collect();
        candidates.select_nth_unstable_by(k - 1, descending);
        let threshold = key(candidates[k - 1]);
        for (m, &x) in mask[r * width..(r + 1) * width]
            .iter_mut()
            .zip(&shard.x[r * width..(r + 1) * width])
        {
            if x < threshold {
                *m = f32::NEG_INFINITY;
            }
        }
    }
    mask
}

/// The unsplit draw of the whole matrix on the root's context.
fn unsplit(shard: &Shard, x: &[f32], sampling: &Sampling) -> Result<Vec<u32>, String> {
    let (rows, cols) = (shard.matrix.rows, shard.matrix.cols);
    let mut ids = vec![0u32; rows];
    block_on(shard.ctx.sample(
        x,
        &mut ids,
        None,
        Shape::new(rows, cols),
        &options(),
        sampling,
        HostInputs::default(),
    ))
    .map_err(|e| format!("unsplit sample: {e}"))?;
    Ok(ids)
}

/// Tallies the sharded draws against the unsplit ones: equal draws, and the first
/// difference.
#[derive(Default)]
struct Tally {
    equal: usize,
    total: usize,
    no_token: usize,
    first_difference: Option<String>,
}

impl Tally {
    fn add(&mut self, step: u32, sharded: &[u32], unsplit: &[u32]) {
        for (r, (s, u)) in sharded.iter().zip(unsplit).enumerate() {
            self.total += 1;
            self.no_token += usize::from(*u == NO_TOKEN);
            if s == u {
                self.equal += 1;
            } else if self.first_difference.is_none() {
                self.first_difference =
                    Some(format!("step {step} row {r}: sharded {s}, unsplit {u}"));
            }
        }
    }

    /// The agreement, needing `percent` of the draws equal.
    fn agreement(self, shard: &Shard, op: &str, extra: &str, percent: usize) -> Agreement {
        let mut failures = Vec::new();
        if self.equal * 100 < percent * self.total {
            failures.push(format!(
                "{} of {} draws equal, under {percent}%",
                self.equal, self.total
            ));
        }
        let mut figures = format!(
            "{extra}equal_draws={}/{} no_token_rows={}",
            self.equal, self.total, self.no_token
        );
        // Reported either way; a failure only when too many differ.
        if let Some(d) = self.first_difference {
            figures += &format!(" first_difference=({d})");
        }
        let m = &shard.matrix;
        Agreement::new(op, (m.ranks, m.rows, m.cols), figures, failures)
    }
}

/// Runs greedy, seeded and seeded top-k sampling sharded and, on the root, checks each
/// draw against the unsplit draw with the same seed and step.
pub fn check(shard: &Shard) -> Result<Vec<Agreement>, String> {
    let rows = shard.matrix.rows;
    let x = if shard.is_root() {
        shard.matrix.slice(0..shard.matrix.cols)
    } else {
        Vec::new()
    };

    let mine = shard_winners(shard, Sampling::greedy(), None)?;
    let all = shard.all_gather(&mine);
    let greedy = combine(&all, rows, |_, x, _| f64::from(x));
    let mut greedy_tally = Tally::default();
    if shard.is_root() {
        greedy_tally.add(0, &greedy, &unsplit(shard, &x, &Sampling::greedy())?);
    }

    let mask = top_k_mask(shard, TOP_K);
    let (mut seeded_tally, mut top_k_tally) = (Tally::default(), Tally::default());
    for step in 0..STEPS {
        let sampling = Sampling::new(SEED).with_step(step);
        let plain = seeded(shard, sampling, None)?;
        let top_k = seeded(shard, sampling, Some(&mask))?;
        if shard.is_root() {
            seeded_tally.add(step, &plain, &unsplit(shard, &x, &sampling)?);
            let filtered = sampling.with_top_k(TOP_K as u32);
            top_k_tally.add(step, &top_k, &unsplit(shard, &x, &filtered)?);
        }
    }
    if !shard.is_root() {
        return Ok(Vec::new());
    }
    let percent = SEEDED_AGREEMENT_PERCENT;
    Ok(vec![
        greedy_tally.agreement(shard, "sampling-greedy", "", 100),
        seeded_tally.agreement(
            shard,
            "sampling-seeded",
            &format!("steps={STEPS} "),
            percent,
        ),
        top_k_tally.agreement(
            shard,
            "sampling-top-k",
            &format!("k={TOP_K} steps={STEPS} "),
            percent,
        ),
    ])
}
