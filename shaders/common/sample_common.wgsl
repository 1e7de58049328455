// What the sampling kernels share: their outputs, the order keys and the threshold
// search, the draw, the generator, and the workgroup reductions of each. The row is
// drawn from by one workgroup (softmax_sample.wgsl) or, for few long rows, by several,
// one part of the row each (softmax_sample_part.wgsl), with softmax_sample_fold.wgsl
// folding the parts' results between their sweeps.
//
// Bindings 3 and 4 (the softmax kernels' outputs): ids (u32 per row) and logprobs (f32
// per row, a dummy without bit 1 of params.sample_flags), from params.ids_first and
// params.logprobs_first.

#import row_common
#import workgroup_uniform

@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> logprobs: array<f32>;

// The id of a row with nothing to draw from (all masked, or NaN / +inf in it).
const NO_ID: u32 = 0xffffffffu;
// The key of -f32::MAX, the least finite value: masked (-inf) entries key below it.
const FIRST_KEY: u32 = 0x00800000u;
// A key that orders as the value does: -inf lowest, -0 and +0 one key.
fn order_key(x: f32) -> u32 {
    var b = bitcast<u32>(x);
    b = select(b, 0u, b == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn greedy_draw() -> bool {
    return (params.sample_flags & 1u) != 0u || params.top_k == 1u;
}

fn writes_logprob() -> bool {
    return (params.sample_flags & 2u) != 0u;
}

fn top_k_active() -> bool {
    return params.top_k > 1u && params.top_k < params.cols;
}

fn top_p_active() -> bool {
    return params.top_p < 1.0;
}

// The outputs of row `row` (of this dispatch) with nothing to draw from: NO_ID, and a
// NaN log-probability (-inf for an all-masked row under MASKED_ROWS_ZERO).
fn write_no_token(row: u32, bad: u32) {
    ids[params.ids_first + row] = NO_ID;
    if writes_logprob() {
        var lp = f32_nan();
        if bad == 0u && MASKED_ROWS_ZERO {
            lp = f32_neg_inf();
        }
        logprobs[params.logprobs_first + row] = lp;
    }
}

// The outputs of row `row`: the chosen column and, if asked, the log-probability of its
// value x under the unfiltered softmax of the row's statistics (m, s).
fn write_pick(row: u32, pick: Pick, m: f32, s: f32) {
    ids[params.ids_first + row] = pick.col;
    if writes_logprob() {
        var lp = f32_nan();
        if pick.col != NO_ID {
            lp = (pick.x - m) * row_inv_t - log(s);
        }
        logprobs[params.logprobs_first + row] = lp;
    }
}

// ---- The threshold search -----------------------------------------------------------

// What a search sweep measures at each of four pivot keys: how many entries have keys
// above it, and (when the search needs it) their mass exp((x - m) / T).
struct Measure {
    count: vec4<u32>,
    mass: vec4<f32>,
}

fn measure_add(acc: ptr<function, Measure>, x: f32, pivots: vec4<u32>, m: f32, with_mass: bool) {
    let above = vec4<u32>(order_key(x)) > pivots;
    (*acc).count += select(vec4<u32>(0u), vec4<u32>(1u), above);
    // Pivots increase, so an entry above none of them (most, once the range narrows
    // near the top of the row) takes no exp. Masked entries key below every pivot.
    if with_mass && above.x {
        (*acc).mass += select(vec4<f32>(0.0), vec4<f32>(exp((x - m) * row_inv_t)), above);
    }
}

// Column `col` of the current row, at index `at` of the input, if it is before `end`.
fn measure_col(acc: ptr<function, Measure>, col: u32, end: u32, at: u32, pivots: vec4<u32>, m: f32, with_mass: bool) {
    if col < end {
        measure_add(acc, load1(col, at), pivots, m, with_mass);
    }
}

// This invocation's measures of columns [c0, c1) of row `row` above each pivot: vec4
// loads over the body where rows are vec4-aligned (c0 is then a multiple of 4), else
// four scalar columns a WORKGROUP_SIZE apart per step, written out (software adapters
// cap the iterations a loop makes over a whole invocation, and a search repeats its
// sweep).
fn measure_range(row: u32, c0: u32, c1: u32, pivots: vec4<u32>, m: f32, with_mass: bool, lid: u32) -> Measure {
    var acc = Measure(vec4<u32>(0u), vec4<f32>(0.0));
    let base = src_index(row, c0);
    var tail = c0;
    if VEC4 {
        let end4 = body_end(c0, c1);
        let n4 = (end4 - c0) / 4u;
        for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
            let v = load4(c0 + 4u * i, base / 4u + i);
            measure_add(&acc, v.x, pivots, m, with_mass);
            measure_add(&acc, v.y, pivots, m, with_mass);
            measure_add(&acc, v.z, pivots, m, with_mass);
            measure_add(&acc, v.w, pivots, m, with_mass);
        }
        tail = end4;
    }
    for (var j = tail + lid; j < c1; j += 4u * WORKGROUP_SIZE) {
        measure_col(&acc, j, c1, base + (j - c0), pivots, m, with_mass);
        let j1 = j + WORKGROUP_SIZE;
        measure_col(&acc, j1, c1, base + (j1 - c0), pivots, m, with_mass);
        let j2 = j + 2u * WORKGROUP_SIZE;
        measure_col(&acc, j2, c1, base + (j2 - c0), pivots, m, with_mass);
        let j3 = j + 3u * WORKGROUP_SIZE;
        measure_col(&acc, j3, c1, base + (j3 - c0), pivots, m, with_mass);
    }
    return acc;
}

// The counts and masses summed in one tree: one set of barriers for both. Every
// invocation gets the result, as a uniform value.
fn workgroup_sum_measure(own: Measure, lid: u32) -> Measure {
    red_u[lid] = own.count;
    red_f[lid] = own.mass;
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            red_u[lid] = red_u[lid] + red_u[lid + half];
            red_f[lid] = red_f[lid] + red_f[lid + half];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out_u = red_u[0];
        out_f = red_f[0];
    }
    // One barrier: the second load finds the value the first one's barrier published.
    return Measure(workgroupUniformLoad(&out_u), workgroupUniformLoad(&out_f));
}

// Four keys spread over (lo, hi], increasing (equal when the range is narrower than 5).
fn pivots(lo: u32, hi: u32) -> vec4<u32> {
    let d = hi - lo;
    let j = vec4<u32>(1u, 2u, 3u, 4u);
    let part = (d / 5u) * j + ((d % 5u) * j) / 5u;
    return vec4<u32>(lo) + max(part, vec4<u32>(1u));
}

// A threshold key u, with the count and mass of the entries above it.
struct Found {
    key: u32,
    count: u32,
    mass: f32,
}

// A search for the largest key u in [lo.key, hi) whose measure above it reaches the
// goal: at least k entries (top-k), or, by mass, at least `goal` of mass (top-p). lo's
// measure reaches it (or lo.count is an upper bound and nothing above lo does) and
// hi's does not; hi_count entries are above hi. The measure above u falls as u grows,
// so each sweep keeps the range between the last pivot that reaches the goal and the
// first that does not.
struct Search {
    lo: Found,
    hi: u32,
    hi_count: u32,
}

// The search is over when no entry lies in (lo, hi]: every u there keeps the same
// entries. A range of 2^32 keys takes at most 15 sweeps (each cuts it to a fifth or
// less; plan::SEARCH_SWEEPS).
fn search_done(s: Search) -> bool {
    return s.hi - s.lo.key < 2u || s.lo.count == s.hi_count;
}

// The pivots of the search's next sweep.
fn search_pivots(s: Search) -> vec4<u32> {
    return pivots(s.lo.key, s.hi - 1u);
}

// The search narrowed by a sweep's measures `at` at its pivots.
fn search_step(s_in: Search, at: Measure, k: u32, goal: f32, by_mass: bool) -> Search {
    var s = s_in;
    let p = search_pivots(s_in);
    for (var i = 0u; i < 4u; i++) {
        let reaches = select(at.count[i] >= k, at.mass[i] >= goal, by_mass);
        if reaches && p[i] > s.lo.key && p[i] < s.hi {
            s.lo = Found(p[i], at.count[i], at.mass[i]);
        } else if !reaches && p[i] < s.hi && p[i] > s.lo.key {
            s.hi = p[i];
            s.hi_count = at.count[i];
        }
    }
    return s;
}

// ---- The draw --------------------------------------------------------------------

// A candidate: its score (z + g, or for greedy z), its column, and its value x.
struct Pick {
    score: f32,
    col: u32,
    x: f32,
}

fn no_pick() -> Pick {
    return Pick(0.0, NO_ID, 0.0);
}

// The better of two candidates: the larger score, the lower column among equal ones.
fn better(a: Pick, b: Pick) -> Pick {
    if b.col != NO_ID && (a.col == NO_ID || b.score > a.score || (b.score == a.score && b.col < a.col)) {
        return b;
    }
    return a;
}

// This invocation's best candidate among columns [c0, c1) of row `row`: the survivors
// have keys at or above `threshold` and (unless greedy) exp(z) >= min_p, z = (x - m) / T.
fn pick_range(row: u32, c0: u32, c1: u32, threshold: u32, m: f32, greedy: bool, lid: u32) -> Pick {
    var best = no_pick();
    let base = src_index(row, c0);
    for (var j = c0 + lid; j < c1; j += WORKGROUP_SIZE) {
        let x = load1(j, base + (j - c0));
        var keep = order_key(x) >= threshold;
        var score = x;
        // Only survivors take the generator's variate (most entries, past a top-k or
        // top-p cut, skip it).
        if !greedy && keep {
            let z = (x - m) * row_inv_t;
            keep = exp(z) >= params.min_p;
            score = z + gumbel(params.col_origin + j);
        }
        if keep && (best.col == NO_ID || score > best.score) {
            best = Pick(score, j, x);
        }
    }
    return best;
}

// The workgroup's best candidate, as a uniform value.
fn workgroup_pick(own: Pick, lid: u32) -> Pick {
    red_f[lid] = vec4<f32>(own.score, own.x, 0.0, 0.0);
    red_u[lid] = vec4<u32>(own.col, 0u, 0u, 0u);
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            let a = Pick(red_f[lid].x, red_u[lid].x, red_f[lid].y);
            let b = Pick(red_f[lid + half].x, red_u[lid + half].x, red_f[lid + half].y);
            let c = better(a, b);
            red_f[lid] = vec4<f32>(c.score, c.x, 0.0, 0.0);
            red_u[lid] = vec4<u32>(c.col, 0u, 0u, 0u);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out_f = red_f[0];
        out_u = red_u[0];
    }
    let f = workgroupUniformLoad(&out_f);
    let u = workgroupUniformLoad(&out_u);
    return Pick(f.x, u.x, f.y);
}

// ---- The generator ----------------------------------------------------------------

// The high word of the 64-bit product a * b.
fn mul_hi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

// Philox4x32 with 10 rounds (Salmon, Moraes, Dror and Shaw, SC 2011).
fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        let hi0 = mul_hi(0xD2511F53u, c.x);
        let lo0 = 0xD2511F53u * c.x;
        let hi1 = mul_hi(0xCD9E8D57u, c.z);
        let lo1 = 0xCD9E8D57u * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// The Gumbel variate of column `col` (of the whole vocabulary) of the current row:
// -ln(-ln(u)), u = (w + 1/2) / 2^32 from the generator's first word w. Both u and
// v = 1 - u are formed from w with f32's full relative precision, and -ln(u) is taken
// from v's series where u is near 1 (where ln(u) in f32 would lose it), so the
// variate's range is what 32 bits give, about [-3.1, 22.9].
fn gumbel(col: u32) -> f32 {
    let r = philox(
        vec4<u32>(col, row_global + params.rng_row, params.step, 0u),
        vec2<u32>(params.seed_lo, params.seed_hi),
    );
    let u = (f32(r.x) + 0.5) * 2.3283064e-10;
    let v = (f32(~r.x) + 0.5) * 2.3283064e-10;
    let series = v * (1.0 + v * (0.5 + v * (1.0 / 3.0)));
    let e = select(-log(u), series, v < 0.0078125);
    return -log(e);
}
