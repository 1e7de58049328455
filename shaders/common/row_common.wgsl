// What every kernel that reads rows shares: the bindings other than the output, the
// params, the row inputs, element loads and the running (max, sum of exp) statistics.
// softmax_common.wgsl adds the output and the writing helpers of the softmax kernels;
// softmax_sample.wgsl declares outputs of its own at bindings 3 and 4.
//
// Bindings (group 0):
//   0 params  uniform   Params below; one per dispatch chunk
//   1 src     storage   the input, and
//   2 src4    storage   the same input in fours (a 16-byte dummy when VEC4 is off): see
//                       src_f32.wgsl or src_half.wgsl (f16, bf16), one of which is
//                       compiled in, with read_src1 / read_src4
//   3, 4              the outputs, declared by the importing file: the softmax output
//                       and the same in fours (softmax_common.wgsl; it may be the input
//                       buffer itself, for in-place use), or a sampled column and its
//                       log-probability per row (softmax_sample.wgsl)
//   5 partials storage  per-(row, part) statistics of the split-row kernels, or the split
//                       sampler's scratch (sample_split.wgsl); else a dummy
//   6 stats   storage   row statistics, (max, log-sum-exp) of x / T per row, written with
//                       STATS_WRITE or read with STATS_GIVEN (else a dummy)
//   7-9                 mask, lengths and temperatures: see row_inputs.wgsl, imported
//                       with ROW_INPUTS (else row_inputs_none.wgsl, declaring no bindings)
//
// Row inputs: the value of element (r, c) is x / T + mask[r % mask_rows, c], with T the
// scalar temperature times row r's own, and -inf (masked out, whatever x is) at columns
// past row r's valid length or, with CAUSAL, past r + causal_offset. Internally it is
// kept as x + T * mask, so that with no mask (or 0/-inf mask entries) x is untouched.
//
// All storage bindings are read_write so that in-place use can bind one buffer to both
// sides. Element c of row r of the input is element src_offset + r * src_stride + c -
// col_base of `src` (col_base is 0 unless a split row is bound one column window at a
// time).
//
// Numerics: WGSL lets compilers assume values are finite, so NaN and infinities are found
// by testing bit patterns, never by comparisons. Each invocation keeps a running
// (max, sum of exp) pair: the max is of the raw inputs, the sum is of
// exp((x - max) * inv_temperature), so a large common offset cancels exactly before the
// temperature scales it.

#import half
#if SRC_HALF
#import src_half
#else
#import src_f32
#endif
#if ROW_INPUTS
#import row_inputs
#else
#import row_inputs_none
#endif

struct Params {
    rows: u32,
    cols: u32,
    src_stride: u32,
    dst_stride: u32,
    src_offset: u32,
    dst_offset: u32,
    grid_x: u32,
    inv_temperature: f32,
    // Split rows: columns per part, parts per row, the first part of this dispatch, and
    // the first column the bindings hold.
    part_cols: u32,
    parts: u32,
    part_base: u32,
    col_base: u32,
    // Index in the whole matrix of this dispatch's first row.
    row_base: u32,
    // Element indices, in their bindings, of row 0's statistics, the mask's [0, 0], row 0's
    // length and row 0's temperature.
    stats_first: u32,
    causal_offset: u32,
    mask_rows: u32,
    mask_first: u32,
    lengths_first: u32,
    temps_first: u32,
    // Sampling (softmax_sample.wgsl; zero elsewhere): the whole vocabulary's column of
    // this matrix's column 0 (the generator counts columns from it), k (0: off), p and
    // min-p (0: off), the generator's 64-bit key and step, flags (bit 0 greedy, bit 1
    // write log-probabilities), and the element indices, in their bindings, of this
    // dispatch's first row's id and log-probability.
    col_origin: u32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    sample_flags: u32,
    ids_first: u32,
    logprobs_first: u32,
    // Added to the row index the generator counts (a shard of rows, or a block of a
    // file, continues the whole's count).
    rng_row: u32,
    // The soft-cap C of SOFTCAP.
    softcap: f32,
    // Cross-entropy (softmax_cross_entropy.wgsl; zero elsewhere): the element indices, in
    // their bindings, of this dispatch's first row's target and loss; the ignored
    // target's bits (an i32); label smoothing, z-loss weight and the gradient's scale;
    // flags (bit 0: write the gradient; bit 1: gather log-probabilities instead).
    targets_first: u32,
    losses_first: u32,
    ignore_index: u32,
    smoothing: f32,
    z_loss: f32,
    grad_scale: f32,
    ce_flags: u32,
    // Indices per row of a gather (bit 1 of ce_flags).
    gather_k: u32,
    // The backward pass through a soft-cap: the row stride of the logits (binding 10),
    // whose row 0 starts at element targets_first.
    logits_stride: u32,
}

// Write log-softmax ((x - max) * inv_t - ln(sum)) instead of softmax.
override LOG_SOFTMAX: bool = false;
// A row whose entries are all -inf gives 0 (log: -inf) instead of NaN.
override MASKED_ROWS_ZERO: bool = false;
// Rows start on 16-byte boundaries: read and write through the vec4 views, tail in scalars.
override VEC4: bool = false;
override WORKGROUP_SIZE: u32 = 256u;
// Write each row's (max, log-sum-exp) of x / T to `stats`.
override STATS_WRITE: bool = false;
// Normalise with the (max, log-sum-exp) in `stats` instead of the row's own: the rows of
// a matrix split by columns (a vocabulary sharded across devices) come out exactly as if
// unsplit, given the statistics combined over all shards.
override STATS_GIVEN: bool = false;
// Row r keeps columns c <= r + causal_offset.
override CAUSAL: bool = false;
// Each input x is soft-capped to C * tanh(x / C) (C = params.softcap) before anything
// else: the temperature, the mask and the row's other inputs apply to the capped value.
override SOFTCAP: bool = false;

@group(0) @binding(0) var<uniform> params: Params;
// The split sampler keeps u32 words there (keys and counts that no f32 holds exactly).
#if SAMPLE_SPLIT
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<u32>>;
#else
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>;
#endif
@group(0) @binding(6) var<storage, read_write> stats: array<vec2<f32>>;

// -f32::MAX: the running max before any finite entry was seen.
const LOWEST: f32 = -3.4028234663852886e38;
const EXP_MASK: u32 = 0x7f800000u;
const NEG_INF_BITS: u32 = 0xff800000u;
const NAN_BITS: u32 = 0x7fc00000u;

// -inf and NaN, made at run time: the browser's WGSL compiler (Tint) refuses a constant
// expression whose value is not a finite f32, such as `bitcast<f32>(NEG_INF_BITS)`
// ("value -inf cannot be represented as 'f32'"); a function variable's value is not a
// constant expression. naga accepts both; tests/shaders.rs checks no such constant is
// left.
fn f32_neg_inf() -> f32 {
    var bits = NEG_INF_BITS;
    return bitcast<f32>(bits);
}

fn f32_nan() -> f32 {
    var bits = NAN_BITS;
    return bitcast<f32>(bits);
}

// The row being processed (each invocation works on one row at a time): its index in the
// whole matrix, 1 / T, how many leading columns are valid, and whether its temperature
// was invalid (which makes the row NaN). Set by begin_row.
var<private> row_global: u32;
var<private> row_inv_t: f32;
var<private> row_cap: u32;
var<private> row_bad: u32;

fn begin_row(row: u32) {
    row_global = params.row_base + row;
    // 0 for an invalid per-row temperature. A valid one so small that 1 / T overflows
    // f32 (T below about 2.9e-39, scalar and row's together) makes the row NaN too:
    // (x - max) * inf would give NaN for the max and -inf for the rest anyway.
    let scale = row_temperature_scale(row_global);
    let inv_t = params.inv_temperature * scale;
    let bad = scale == 0.0 || (bitcast<u32>(inv_t) & EXP_MASK) == EXP_MASK;
    row_bad = u32(bad);
    row_inv_t = select(inv_t, 1.0, bad);
    var cap = min(params.cols, row_length(row_global));
    if CAUSAL {
        // The planner keeps causal_offset below cols, so this cannot overflow.
        cap = min(cap, row_global + params.causal_offset + 1u);
    }
    row_cap = cap;
    begin_row_inputs();
}

// C * tanh(v / C) with SOFTCAP (else v): +-inf give +-C, as the formula does, and NaN
// stays NaN (tested on the bits). tanh is taken of v / C clamped to +-10, where it is
// already +-1 in f32, so no implementation's exp inside it overflows.
fn soft_cap4(v: vec4<f32>) -> vec4<f32> {
    if !SOFTCAP {
        return v;
    }
    let c = params.softcap;
    let bits = bitcast<vec4<u32>>(v);
    let nan = ((bits & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK))
        & ((bits & vec4<u32>(0x7fffffu)) != vec4<u32>(0u));
    let inf = (bits & vec4<u32>(0x7fffffffu)) == vec4<u32>(EXP_MASK);
    let t = clamp(select(v / c, sign(v) * 10.0, inf), vec4<f32>(-10.0), vec4<f32>(10.0));
    return select(c * tanh(t), v, nan);
}

// Element `col` of the current row, at index `at` of the input, with the row inputs
// applied.
fn load1(col: u32, at: u32) -> f32 {
    var x = apply_mask1(col, soft_cap4(vec4<f32>(read_src1(at))).x);
    if (CAUSAL || ROW_INPUTS) && col >= row_cap {
        x = f32_neg_inf();
    }
    return x;
}

// Elements col .. col + 3 (col a multiple of 4) of the current row, at vec4 index `at4`
// of the input, with the row inputs applied.
fn load4(col: u32, at4: u32) -> vec4<f32> {
    var v = apply_mask4(col, soft_cap4(read_src4(at4)));
    if CAUSAL || ROW_INPUTS {
        let c = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u);
        v = select(v, vec4<f32>(f32_neg_inf()), c >= vec4<u32>(row_cap));
    }
    return v;
}

// Running statistics of (part of) a row. `bad` is 1 once a NaN or +inf was seen.
struct Stats {
    m: f32,
    s: f32,
    bad: u32,
}

fn stats_empty() -> Stats {
    return Stats(LOWEST, 0.0, 0u);
}

// s * exp(delta * inv_t) for delta <= 0, exactly 0 when s is 0 (so an empty partial,
// whose max is LOWEST, never computes exp of an overflowed difference into the sum).
fn rescale(s: f32, delta: f32) -> f32 {
    return select(0.0, s * exp(delta * row_inv_t), s != 0.0);
}

fn merge(a: Stats, b: Stats) -> Stats {
    let m = max(a.m, b.m);
    return Stats(m, rescale(a.s, a.m - m) + rescale(b.s, b.m - m), a.bad | b.bad);
}

// The statistics a row is written with: its own (and, with STATS_WRITE, the `leader`
// invocation stores them as (max, log-sum-exp) of x / T), or with STATS_GIVEN those in
// `stats`, as the (m, s) pair that gives exp(x / T - lse).
fn resolve_stats(row: u32, own: Stats, leader: bool) -> Stats {
    let at = params.stats_first + row_global;
    var st = own;
    st.bad |= row_bad;
    if STATS_GIVEN {
        let q = stats[at];
        let lse_bits = bitcast<u32>(q.y);
        if (lse_bits & EXP_MASK) == EXP_MASK {
            // -inf: a fully masked row (sum 0); NaN or +inf: a poisoned row.
            return Stats(LOWEST, 0.0, row_bad | u32(lse_bits != NEG_INF_BITS));
        }
        return Stats(q.x / row_inv_t, exp(q.y - q.x), row_bad);
    }
    if STATS_WRITE && leader {
        var out = vec2<f32>(f32_nan());
        if st.bad == 0u && st.s == 0.0 {
            out = vec2<f32>(f32_neg_inf());
        } else if st.bad == 0u {
            let max_z = st.m * row_inv_t;
            out = vec2<f32>(max_z, max_z + log(st.s));
        }
        stats[at] = out;
    }
    return st;
}

fn accumulate1(st: Stats, x: f32) -> Stats {
    let bits = bitcast<u32>(x);
    let non_finite = (bits & EXP_MASK) == EXP_MASK;
    if non_finite {
        // -inf contributes nothing; NaN and +inf poison the row.
        return Stats(st.m, st.s, st.bad | u32(bits != NEG_INF_BITS));
    }
    if x > st.m {
        return Stats(x, rescale(st.s, st.m - x) + 1.0, st.bad);
    }
    return Stats(st.m, st.s + exp((x - st.m) * row_inv_t), st.bad);
}

// Loads taken together: their max is found first, then one rescale of the running sum
// and an exp of each, so the online (max, sum) pair costs one exp per element plus one
// per group rather than one per comparison (on software adapters an `if` on the max
// would run its exp for every lane anyway).
const GROUP: u32 = 8u;
// Groups summed into one block before it is merged into the running total: a long
// sweep sums groups, then block sums, so f32 rounding grows with the groups per block
// plus the number of blocks rather than with the sweep length.
const BLOCK: u32 = 4u;

// Index in `src` of element `col` of row `row` (and likewise in `dst`).
fn src_index(row: u32, col: u32) -> u32 {
    return params.src_offset + row * params.src_stride + (col - params.col_base);
}

fn dst_index(row: u32, col: u32) -> u32 {
    return params.dst_offset + row * params.dst_stride + (col - params.col_base);
}

// Columns [c0, c1) of split part `part`. The end is found without c0 + part_cols,
// which could pass u32::MAX in the last part of a row near plan::MAX_COLS; an empty
// part (c0 >= cols) gives c1 = c0.
fn part_columns(part: u32) -> vec2<u32> {
    let c0 = part * params.part_cols;
    return vec2<u32>(c0, c0 + min(params.part_cols, params.cols - min(c0, params.cols)));
}

// End of the vec4 body of columns [c0, c1): c1 rounded down to a multiple of 4 when VEC4
// (c0 is then a multiple of 4), else c0 (no body, all scalars).
fn body_end(c0: u32, c1: u32) -> u32 {
    return select(c0, max(c0, c1 & ~3u), VEC4);
}

// The statistics `st` with GROUP vec4s added: vec4s i, i + step, ... (vec4 indices of
// the row from column c0, at vec4 index base4 of the input) below n4.
fn accumulate_group4(st: Stats, c0: u32, base4: u32, i: u32, step: u32, n4: u32) -> Stats {
    var vals: array<vec4<f32>, GROUP>;
    var vmax = vec4<f32>(LOWEST);
    for (var k = 0u; k < GROUP; k++) {
        let at = i + k * step;
        var v = vec4<f32>(f32_neg_inf());
        if at < n4 {
            v = load4(c0 + 4u * at, base4 + at);
        }
        vals[k] = v;
        vmax = max(vmax, v);
    }
    return add_group(st, &vals, vmax);
}

// The same for scalars, four to a slot: elements j, j + step, ... (columns from c0, at
// index base of the input) below n.
fn accumulate_group1(st: Stats, c0: u32, base: u32, j: u32, step: u32, n: u32) -> Stats {
    var vals: array<vec4<f32>, GROUP>;
    var vmax = vec4<f32>(LOWEST);
    for (var k = 0u; k < GROUP; k++) {
        var v = vec4<f32>(f32_neg_inf());
        for (var c = 0u; c < 4u; c++) {
            let at = j + (4u * k + c) * step;
            if at < n {
                v[c] = load1(c0 + at, base + at);
            }
        }
        vals[k] = v;
        vmax = max(vmax, v);
    }
    return add_group(st, &vals, vmax);
}

// Adds a group of loads (padded with -inf), whose running max is vmax, to `st`. -inf
// values add nothing; NaN or +inf poison the row (its max and sum are then unused).
fn add_group(st: Stats, vals: ptr<function, array<vec4<f32>, GROUP>>, vmax: vec4<f32>) -> Stats {
    let m = max(st.m, max(max(vmax.x, vmax.y), max(vmax.z, vmax.w)));
    var sv = vec4<f32>(0.0);
    // Poison found by two running maxima of the bits, as in cache_load.
    var imax = vec4<i32>(0);
    var umax = vec4<u32>(0u);
    for (var k = 0u; k < GROUP; k++) {
        let v = (*vals)[k];
        let bits = bitcast<vec4<u32>>(v);
        imax = max(imax, bitcast<vec4<i32>>(v));
        umax = max(umax, bits);
        let non_finite = (bits & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
        sv += select(exp((v - vec4<f32>(m)) * row_inv_t), vec4<f32>(0.0), non_finite);
    }
    let poison = (imax >= vec4<i32>(i32(EXP_MASK))) | (umax > vec4<u32>(NEG_INF_BITS));
    let s = rescale(st.s, st.m - m) + ((sv.x + sv.y) + (sv.z + sv.w));
    return Stats(m, s, st.bad | u32(any(poison)));
}

// Statistics of columns c0 + first, c0 + first + step, ... below c1 of row `row`: the
// vec4 body four columns per step in groups, then the scalar tail (without VEC4, all
// scalars, in groups too).
fn range_stats(row: u32, c0: u32, c1: u32, first: u32, step: u32) -> Stats {
    var total = stats_empty();
    let base = src_index(row, c0);
    if VEC4 {
        let end4 = body_end(c0, c1);
        let n4 = (end4 - c0) / 4u;
        let group = step * GROUP;
        for (var b = first; b < n4; b += group * BLOCK) {
            var block = stats_empty();
            let b_end = min(n4, b + group * BLOCK);
            for (var i = b; i < b_end; i += group) {
                block = accumulate_group4(block, c0, base / 4u, i, step, n4);
            }
            total = merge(total, block);
        }
        var tail = stats_empty();
        for (var j = end4 + first; j < c1; j += step) {
            tail = accumulate1(tail, load1(j, base + (j - c0)));
        }
        return merge(total, tail);
    }
    let n = c1 - c0;
    let group = step * 4u * GROUP;
    for (var b = first; b < n; b += group * BLOCK) {
        var block = stats_empty();
        let b_end = min(n, b + group * BLOCK);
        for (var j = b; j < b_end; j += group) {
            block = accumulate_group1(block, c0, base, j, step, n);
        }
        total = merge(total, block);
    }
    return total;
}

// Statistics of the elements first, first + step, ... of row `row`.
fn row_stats(row: u32, first: u32, step: u32) -> Stats {
    return range_stats(row, 0u, params.cols, first, step);
}

struct MaxBad {
    m: f32,
    bad: u32,
}

fn max_bad_merge(a: MaxBad, b: MaxBad) -> MaxBad {
    return MaxBad(max(a.m, b.m), a.bad | b.bad);
}

fn max_bad1(acc: MaxBad, x: f32) -> MaxBad {
    let bits = bitcast<u32>(x);
    let non_finite = (bits & EXP_MASK) == EXP_MASK;
    let poison = u32(non_finite && bits != NEG_INF_BITS);
    return MaxBad(select(max(acc.m, x), acc.m, non_finite), acc.bad | poison);
}
