// Kernel softmax_sample: draws one column per row from softmax(z), z the row's values with
// its inputs applied (temperature, mask, lengths, causal), after the top-k, top-p and
// min-p filters, and writes its index (and, with bit 1 of params.sample_flags, its
// log-probability under the unfiltered softmax). The row is never sorted.
//
// Dispatch: a 2-D grid of workgroups, one row each (row = wg.y * grid_x + wg.x). Per row,
// every invocation sweeps its strided share of the row:
//   1. once for the (max, sum of exp) statistics, as the softmax's first pass does;
//   2. top-k (1 < k < cols): the k-th largest value is found by searching the values'
//      order-preserving u32 keys: each sweep counts the entries above four pivots
//      spread over the key range still open, which cuts that range to a fifth or less,
//      and the search stops once no entry's key is left inside the range: at most 15
//      sweeps (for 2^32 keys), in practice about as many as it takes to separate the
//      k-th largest value from its neighbours;
//   3. top-p (p < 1): the same search on the mass above each pivot, from top-k's cut
//      (whose sweeps also summed the mass, so none is added for it);
//   4. once to draw: among the survivors (at or above both thresholds, and with
//      exp(z - max z) >= min_p), the column of the largest z + g, g a Gumbel variate
//      from the counter-based generator (Philox4x32-10, counter (column, row, step, 0),
//      key the 64-bit seed); greedy (bit 0 of sample_flags, or k = 1), the column of the
//      largest z. Ties go to the lowest column.
// Every reduction goes through workgroup memory and ends in workgroupUniformLoad, so the
// loops and branches that follow are uniform, as barriers require (naga checks this, and
// browsers' WGSL compilers more strictly still).
//
// Bindings 3 and 4 (the softmax kernels' outputs): ids (u32 per row) and logprobs (f32
// per row, a dummy without bit 1), from params.ids_first and params.logprobs_first.

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

// ---- Reductions; every invocation gets the result, as a uniform value ----------------

// The counts and masses summed in one tree: one set of barriers for both.
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

// The column with the largest score (the lowest column among equal scores); NO_ID when
// no invocation has one.
fn workgroup_best(score: f32, col: u32, lid: u32) -> u32 {
    red_f[lid] = vec4<f32>(score, 0.0, 0.0, 0.0);
    red_u[lid] = vec4<u32>(col, 0u, 0u, 0u);
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            let c = red_u[lid].x;
            let oc = red_u[lid + half].x;
            let s = red_f[lid].x;
            let os = red_f[lid + half].x;
            if oc != NO_ID && (c == NO_ID || os > s || (os == s && oc < c)) {
                red_f[lid] = vec4<f32>(os, 0.0, 0.0, 0.0);
                red_u[lid] = vec4<u32>(oc, 0u, 0u, 0u);
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out_u = red_u[0];
    }
    return workgroupUniformLoad(&out_u).x;
}

// ---- The sweeps -------------------------------------------------------------------

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

fn measure_col(acc: ptr<function, Measure>, col: u32, base: u32, pivots: vec4<u32>, m: f32, with_mass: bool) {
    if col < params.cols {
        measure_add(acc, load1(col, base + col), pivots, m, with_mass);
    }
}

// The measures of the row above each pivot: vec4 loads over the row body where rows are
// vec4-aligned, else four scalar columns a WORKGROUP_SIZE apart per step, written out
// (software adapters cap the iterations a loop makes over a whole invocation, and a
// search repeats its sweep).
fn measure_above(row: u32, pivots: vec4<u32>, m: f32, with_mass: bool, lid: u32) -> Measure {
    var acc = Measure(vec4<u32>(0u), vec4<f32>(0.0));
    let base = src_index(row, 0u);
    var tail = 0u;
    if VEC4 {
        let n4 = params.cols / 4u;
        for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
            let v = load4(4u * i, base / 4u + i);
            measure_add(&acc, v.x, pivots, m, with_mass);
            measure_add(&acc, v.y, pivots, m, with_mass);
            measure_add(&acc, v.z, pivots, m, with_mass);
            measure_add(&acc, v.w, pivots, m, with_mass);
        }
        tail = 4u * n4;
    }
    for (var j = tail + lid; j < params.cols; j += 4u * WORKGROUP_SIZE) {
        measure_col(&acc, j, base, pivots, m, with_mass);
        measure_col(&acc, j + WORKGROUP_SIZE, base, pivots, m, with_mass);
        measure_col(&acc, j + 2u * WORKGROUP_SIZE, base, pivots, m, with_mass);
        measure_col(&acc, j + 3u * WORKGROUP_SIZE, base, pivots, m, with_mass);
    }
    return workgroup_sum_measure(acc, lid);
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

// The largest key u in [lo.key, hi) whose measure above it reaches the goal: at least
// `k` entries (top-k), or with `by_mass`, at least `goal` of mass (top-p). `lo`'s
// measure reaches it (or lo.count is an upper bound and nothing above lo does) and
// hi's does not; `hi_count` entries are above hi. The measure above u falls as u grows,
// so each sweep keeps the range between the last pivot that reaches the goal and the
// first that does not. The search stops when no entry lies in (lo, hi]: every u there
// keeps the same entries.
fn search(row: u32, lo_in: Found, hi_in: u32, k: u32, goal: f32, by_mass: bool, with_mass: bool, m: f32, lid: u32) -> Found {
    var lo = lo_in;
    var hi = hi_in;
    var hi_count = 0u;
    loop {
        if hi - lo.key < 2u || lo.count == hi_count {
            break;
        }
        let p = pivots(lo.key, hi - 1u);
        let at = measure_above(row, p, m, with_mass, lid);
        for (var i = 0u; i < 4u; i++) {
            let reaches = select(at.count[i] >= k, at.mass[i] >= goal, by_mass);
            if reaches && p[i] > lo.key && p[i] < hi {
                lo = Found(p[i], at.count[i], at.mass[i]);
            } else if !reaches && p[i] < hi && p[i] > lo.key {
                hi = p[i];
                hi_count = at.count[i];
            }
        }
    }
    return lo;
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

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_sample(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    let write_logprob = (params.sample_flags & 2u) != 0u;
    let id_at = params.ids_first + row;
    let lp_at = params.logprobs_first + row;
    var own = row_stats(row, lid, WORKGROUP_SIZE);
    own.bad |= row_bad;
    let st = workgroup_totals(own, 0.0, 0u, lid).st;
    if st.bad != 0u || st.s == 0.0 {
        if lid == 0u {
            ids[id_at] = NO_ID;
            if write_logprob {
                var lp = f32_nan();
                if st.bad == 0u && MASKED_ROWS_ZERO {
                    lp = f32_neg_inf();
                }
                logprobs[lp_at] = lp;
            }
        }
        return;
    }
    let m = st.m;
    let greedy = (params.sample_flags & 1u) != 0u || params.top_k == 1u;
    let max_key = order_key(m);
    // Survivors have keys above `cut.key`: at first every unmasked entry (the key below
    // FIRST_KEY; the count an upper bound, the mass the row's sum).
    let with_mass = params.top_p < 1.0;
    var cut = Found(FIRST_KEY - 1u, params.cols, st.s);
    if !greedy && params.top_k > 1u && params.top_k < params.cols {
        cut = search(row, cut, max_key, params.top_k, 0.0, false, with_mass, m, lid);
    }
    if !greedy && with_mass {
        // What top-k kept, cut to the smallest head holding p of its mass.
        cut = search(row, cut, max_key, 0u, params.top_p * cut.mass, true, true, m, lid);
    }
    let threshold = cut.key + 1u;
    var best = NO_ID;
    var best_score = 0.0;
    let base = src_index(row, 0u);
    for (var j = lid; j < params.cols; j += WORKGROUP_SIZE) {
        let x = load1(j, base + j);
        let key = order_key(x);
        var keep = key >= threshold;
        var score = x;
        // Only survivors take the generator's variate (most entries, past a top-k or
        // top-p cut, skip it).
        if !greedy && keep {
            let z = (x - m) * row_inv_t;
            keep = exp(z) >= params.min_p;
            score = z + gumbel(params.col_origin + j);
        }
        if keep && (best == NO_ID || score > best_score) {
            best = j;
            best_score = score;
        }
    }
    let chosen = workgroup_best(best_score, best, lid);
    if lid == 0u {
        ids[id_at] = chosen;
        if write_logprob {
            var lp = f32_nan();
            if chosen != NO_ID {
                lp = (load1(chosen, base + chosen) - m) * row_inv_t - log(st.s);
            }
            logprobs[lp_at] = lp;
        }
    }
}
