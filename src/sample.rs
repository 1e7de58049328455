//! Drawing one column per row on the GPU: greedy, temperature, top-k, top-p and min-p
//! sampling, without sorting the row (see [`Sampling`]).

use crate::error::{Error, Result};

/// The id a row with nothing to draw from gets: a row whose entries are all masked out,
/// or one with a NaN or `+inf` in it.
pub const NO_TOKEN: u32 = u32::MAX;

/// How one column (token) is drawn from each row, after the softmax of the row's values
/// with the [`Options`](crate::Options)' temperature, mask, lengths and causal offset
/// applied. The filters apply in this order, each to what the previous kept:
///
/// 1. `p = softmax(z)` over the unmasked entries (a masked entry is never drawn);
/// 2. **top-k** (`k >= 1`): keep the entries whose probability is at least the k-th
///    largest (every entry tied with it is kept);
/// 3. **top-p** (`0 < p < 1`; 1 keeps all): renormalise what top-k kept and keep entry
///    `i` if the survivors strictly more probable than `i` hold less than `p` of the mass
///    (the smallest head of the distribution that reaches `p`, ties at its edge kept);
/// 4. **min-p** (`0 <= m <= 1`): keep the entries with `p_i >= m * max(p)`;
/// 5. draw one survivor in proportion to its probability, or, **greedy** (or `k = 1`),
///    take the largest, the lowest column among equal maxima.
///
/// The draw is reproducible bit for bit on one adapter: it takes the column with the
/// largest `z_i + g_i`, where `g_i = -ln(-ln(u_i))` is a Gumbel variate and `u_i` comes
/// from the counter-based generator Philox4x32-10 with the counter
/// `(column, row, step, 0)` and the key `(seed low word, seed high word)`: `u_i` is the
/// generator's first output word, plus one half, over `2^32`. The
/// column counts from the whole vocabulary's first ([`Sampling::with_column_offset`]),
/// the row from the batch's first ([`Sampling::with_row_offset`]; by default the call's
/// first row), so rows are independent, and identical rows in one call draw
/// independently. The variates are those 32 bits give, within about `[-3.1, 22.9]`: an
/// entry less probable than about `e^-26` times the most probable survivor is never
/// drawn.
///
/// ```
/// use wgpu_softmax::Sampling;
/// let s = Sampling::new(42).with_top_k(50).with_top_p(0.9).with_min_p(0.05);
/// assert!(s.validate().is_ok());
/// assert!(Sampling::new(0).with_top_p(0.0).validate().is_err());
/// assert!(Sampling::greedy().validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sampling {
    /// Take the most probable column instead of drawing.
    pub greedy: bool,
    /// Keep the `k` most probable (with ties); `None` keeps all.
    pub top_k: Option<u32>,
    /// Keep the smallest head holding this share of the mass; `None` (or 1) keeps all.
    pub top_p: Option<f32>,
    /// Keep entries at least this share of the most probable; `None` (or 0) keeps all.
    pub min_p: Option<f32>,
    /// The generator's key.
    pub seed: u64,
    /// A counter a decoder advances per token, so one seed serves a whole generation.
    pub step: u32,
    /// The whole vocabulary's column of this matrix's column 0: a shard of a vocabulary
    /// split by columns draws the same variates as the whole row would.
    pub column_offset: u32,
    /// The generator's row of this call's row 0: a block of rows of a larger batch draws
    /// what the whole batch would.
    pub row_offset: u32,
}

impl Sampling {
    /// Drawing in proportion to the probabilities, with no filter, keyed by `seed`.
    pub fn new(seed: u64) -> Self {
        Sampling {
            greedy: false,
            top_k: None,
            top_p: None,
            min_p: None,
            seed,
            step: 0,
            column_offset: 0,
            row_offset: 0,
        }
    }

    /// The most probable column of each row (no randomness).
    pub fn greedy() -> Self {
        Sampling {
            greedy: true,
            ..Sampling::new(0)
        }
    }

    /// This sampling with top-k.
    pub fn with_top_k(mut self, k: u32) -> Self {
        self.top_k = Some(k);
        self
    }

    /// This sampling with top-p.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// This sampling with min-p.
    pub fn with_min_p(mut self, m: f32) -> Self {
        self.min_p = Some(m);
        self
    }

    /// This sampling at another step of the generator.
    pub fn with_step(mut self, step: u32) -> Self {
        self.step = step;
        self
    }

    /// This sampling for a shard whose column 0 is column `offset` of the vocabulary.
    pub fn with_column_offset(mut self, offset: u32) -> Self {
        self.column_offset = offset;
        self
    }

    /// This sampling for a block of rows whose row 0 is row `offset` of the batch.
    pub fn with_row_offset(mut self, offset: u32) -> Self {
        self.row_offset = offset;
        self
    }

    /// Whether the draw is greedy (asked for, or top-k with `k = 1`).
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.top_k == Some(1)
    }

    /// The check every sampling call makes first: `k >= 1`, `0 < p <= 1`,
    /// `0 <= m <= 1`, or [`Error::InvalidSampling`].
    pub fn validate(&self) -> Result<()> {
        if self.top_k == Some(0) {
            return Err(Error::InvalidSampling("top-k needs k >= 1".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidSampling(format!(
                    "top-p needs 0 < p <= 1, not {p}"
                )));
            }
        }
        if let Some(m) = self.min_p {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::InvalidSampling(format!(
                    "min-p needs 0 <= m <= 1, not {m}"
                )));
            }
        }
        Ok(())
    }

    /// The kernel's view: (k or 0, p or 1, min-p or 0, flags without the log-prob bit).
    pub(crate) fn kernel_fields(&self) -> (u32, f32, f32, u32) {
        (
            self.top_k.unwrap_or(0),
            self.top_p.unwrap_or(1.0),
            self.min_p.unwrap_or(0.0),
            u32::from(self.is_greedy()),
        )
    }
}

/// The most sweeps one threshold search of the sampler takes: each cuts the open range
/// of keys to a fifth or less (four pivots), and 2^32 keys take 15 (a unit test checks
/// it with the kernel's pivots).
pub(crate) const MAX_SEARCH_SWEEPS: u32 = 15;

/// Bytes of the scratch buffer a split draw keeps per row: its state (3 vec4s) and two
/// vec4s per part, rounded up to 256 (`scratch_stride` in `sample_split.wgsl`).
pub(crate) fn split_scratch_bytes(parts: u32) -> u64 {
    ((3 + 2 * u64::from(parts)) * 16).next_multiple_of(256)
}

impl Sampling {
    /// The steps (a sweep of every part, then a fold) a split row's draw takes at most
    /// for rows of `cols` columns: the statistics, each active search's worst case, and
    /// the draw.
    pub(crate) fn split_steps(&self, cols: usize) -> usize {
        let (top_k, top_p, _, greedy) = self.kernel_fields();
        let searches = if greedy != 0 {
            0
        } else {
            usize::from(top_k > 1 && (top_k as usize) < cols) + usize::from(top_p < 1.0)
        };
        2 + searches * MAX_SEARCH_SWEEPS as usize
    }
}

/// Philox4x32-10: the generator the sampler keys its Gumbel variates with (see
/// [`Sampling`]), for reproducing a draw on the CPU.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = u64::from(0xD251_1F53u32) * u64::from(c[0]);
        let p1 = u64::from(0xCD9E_8D57u32) * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `pivots` (sample_common.wgsl): four keys spread over (lo, hi].
    fn pivots(lo: u32, hi: u32) -> [u32; 4] {
        let d = hi - lo;
        [1, 2, 3, 4].map(|j| lo + ((d / 5) * j + ((d % 5) * j) / 5).max(1))
    }

    /// The most sweeps a search over the open range (0, width) can take, whichever
    /// stretch between its pivots each sweep keeps.
    fn worst_sweeps(width: u32, memo: &mut std::collections::HashMap<u32, u32>) -> u32 {
        if width < 2 {
            return 0;
        }
        if let Some(&n) = memo.get(&width) {
            return n;
        }
        let mut cuts: Vec<u32> = pivots(0, width - 1).to_vec();
        cuts.retain(|&p| p > 0 && p < width);
        cuts.extend([0, width]);
        cuts.sort_unstable();
        cuts.dedup();
        let n = 1 + cuts
            .windows(2)
            .map(|w| worst_sweeps(w[1] - w[0], memo))
            .max()
            .unwrap_or(0);
        memo.insert(width, n);
        n
    }

    #[test]
    fn a_search_over_every_key_takes_at_most_max_search_sweeps() {
        let mut memo = std::collections::HashMap::new();
        // From below the least finite key to the largest key of all.
        assert_eq!(worst_sweeps(u32::MAX, &mut memo), MAX_SEARCH_SWEEPS);
        assert_eq!(
            worst_sweeps(0xff7f_ffff - 0x007f_ffff, &mut memo),
            MAX_SEARCH_SWEEPS
        );
    }

    #[test]
    fn a_split_draw_records_the_worst_case_of_each_search_it_runs() {
        let plain = Sampling::new(1);
        assert_eq!(plain.split_steps(100), 2);
        assert_eq!(Sampling::greedy().with_top_p(0.5).split_steps(100), 2);
        assert_eq!(plain.with_top_k(5).split_steps(100), 17);
        // k at least the row keeps everything: no search.
        assert_eq!(plain.with_top_k(100).split_steps(100), 2);
        assert_eq!(plain.with_top_k(5).with_top_p(0.9).split_steps(100), 32);
        assert_eq!(split_scratch_bytes(1), 256);
        assert_eq!(split_scratch_bytes(6), 256);
        assert_eq!(split_scratch_bytes(7), 512);
    }

    /// Known answers of Philox4x32-10 from the Random123 distribution's kat_vectors.
    #[test]
    fn philox_matches_random123s_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn filters_out_of_range_are_refused() {
        assert!(Sampling::new(1).with_top_k(0).validate().is_err());
        assert!(Sampling::new(1).with_top_p(1.5).validate().is_err());
        assert!(Sampling::new(1).with_top_p(f32::NAN).validate().is_err());
        assert!(Sampling::new(1).with_min_p(-0.1).validate().is_err());
        assert!(Sampling::new(1).with_min_p(f32::NAN).validate().is_err());
        assert!(Sampling::new(1)
            .with_top_k(1)
            .with_top_p(1.0)
            .with_min_p(0.0)
            .validate()
            .is_ok());
        assert!(Sampling::new(1).with_top_k(1).is_greedy());
    }
}
