// The softmax kernels' shared code: row_common.wgsl (bindings, params, loads, row
// statistics), the output bindings 3 and 4 (dst_f32.wgsl or dst_half.wgsl, one of which is
// compiled in, with write_dst1 / write_dst4 and read_dst1 / read_dst4), and the helpers
// that write rows, swept or held in registers. Each softmax kernel file imports this one
// (`#import softmax_common`, composed by src/compose.rs).

#import row_common
#if DST_HALF
#import dst_half
#else
#import dst_f32
#endif

fn softmax1(x: f32, m: f32, inv_s: f32, log_s: f32) -> f32 {
    let neg_inf = bitcast<u32>(x) == NEG_INF_BITS;
    if LOG_SOFTMAX {
        return select((x - m) * row_inv_t - log_s, f32_neg_inf(), neg_inf);
    }
    return select(exp((x - m) * row_inv_t) * inv_s, 0.0, neg_inf);
}

fn softmax4(v: vec4<f32>, m: f32, inv_s: f32, log_s: f32) -> vec4<f32> {
    let neg_inf = bitcast<vec4<u32>>(v) == vec4<u32>(NEG_INF_BITS);
    let d = (v - vec4<f32>(m)) * row_inv_t;
    if LOG_SOFTMAX {
        return select(d - vec4<f32>(log_s), vec4<f32>(f32_neg_inf()), neg_inf);
    }
    return select(exp(d) * inv_s, vec4<f32>(0.0), neg_inf);
}

// Rows with NaN or +inf give NaN everywhere; a row of only -inf (sum 0) gives NaN, or with
// MASKED_ROWS_ZERO the value of probability 0. Writes columns c0 + first, ... below c1 and
// returns true for such a row; returns false (writing nothing) for an ordinary row.
// `bad` and `s` are the whole row's, so the branch is uniform.
fn write_special(row: u32, c0: u32, c1: u32, first: u32, step: u32, bad: u32, s: f32) -> bool {
    if bad == 0u && s != 0.0 {
        return false;
    }
    var fill = f32_nan();
    if bad == 0u && MASKED_ROWS_ZERO {
        fill = select(0.0, f32_neg_inf(), LOG_SOFTMAX);
    }
    for (var j = c0 + first; j < c1; j += step) {
        write_dst1(dst_index(row, j), fill);
    }
    return true;
}

// Writes the scalar tail of columns [c0, c1) (all of them unless VEC4).
fn write_tail(row: u32, c0: u32, c1: u32, first: u32, step: u32, m: f32, inv_s: f32, log_s: f32) {
    // Indices of column c0, so the loop adds rather than recomputes them.
    let src_c0 = src_index(row, c0);
    let dst_c0 = dst_index(row, c0);
    for (var j = body_end(c0, c1) + first; j < c1; j += step) {
        write_dst1(dst_c0 + (j - c0), softmax1(load1(j, src_c0 + (j - c0)), m, inv_s, log_s));
    }
}

// Writes columns c0 + first, c0 + first + step, ... below c1 of output row `row`, given
// the whole row's statistics, re-reading the input.
fn range_write(row: u32, c0: u32, c1: u32, first: u32, step: u32, st: Stats) {
    if write_special(row, c0, c1, first, step, st.bad, st.s) {
        return;
    }
    let inv_s = 1.0 / st.s;
    let log_s = log(st.s);
    let n4 = (body_end(c0, c1) - c0) / 4u;
    let src4_base = src_index(row, c0) / 4u;
    let dst4_base = dst_index(row, c0) / 4u;
    for (var i = first; i < n4; i += step) {
        write_dst4(dst4_base + i, softmax4(load4(c0 + 4u * i, src4_base + i), st.m, inv_s, log_s));
    }
    write_tail(row, c0, c1, first, step, st.m, inv_s, log_s);
}

// Writes row `row` from its own statistics (see resolve_stats); invocation `first == 0`
// leads.
fn write_row(row: u32, first: u32, step: u32, st: Stats) {
    range_write(row, 0u, params.cols, first, step, resolve_stats(row, st, first == 0u));
}

// ---- Rows held in registers -------------------------------------------------------
//
// When VEC4 and the row body fits CACHE vec4s per invocation, each invocation loads its
// share once into a private array: the max is taken over it, then exp(x - max) is
// computed once per element (and kept, for softmax), summed, and written scaled by one
// reciprocal. One read, one exp and one write per element.

// Slots (vec4s) of the register cache per invocation, or 0 when the pipeline's rows are
// too long to cache and are swept instead: the variant's number (the planner's, from the
// row length and the fewest invocations a row may get, so it holds for every row of a
// dispatch). Each loop over the slots is written out as one block per slot
// (`#unroll k CACHE_SLOTS`, see src/compose.rs). So a kernel compiles only the path its
// rows take, with no loop and no empty slot: software adapters run both sides of an `if`
// under a lane mask rather than branching, and index a private array held in registers
// only at constant indices.
#const CACHE_SLOTS
const CACHE: u32 = max(CACHE_SLOTS, 1u);

// Whether this pipeline's rows are held in the register cache.
fn row_fits_cache() -> bool {
    return VEC4 && CACHE_SLOTS > 0u;
}

// Loads vec4s first + k * step (k < CACHE_SLOTS) of the row body into `cache` and returns
// their max and poison flag, tail scalars included. Slots past the row stay unused.
fn cache_load(row: u32, first: u32, step: u32, cache: ptr<function, array<vec4<f32>, CACHE>>) -> MaxBad {
    let n4 = params.cols / 4u;
    let base = src_index(row, 0u);
    // Three running maxima, no per-element tests: of the values (-inf never wins over
    // LOWEST; with NaN or +inf the row is poisoned and its max unused), of the bits as
    // i32 (>= +inf's bits: +inf or a positive NaN) and as u32 (above -inf's bits: a
    // negative NaN).
    var vmax = vec4<f32>(LOWEST);
    var imax = vec4<i32>(0);
    var umax = vec4<u32>(0u);
#unroll k CACHE_SLOTS
        let i = first + k * step;
        if i < n4 {
            let v = load4(4u * i, base / 4u + i);
            (*cache)[k] = v;
            vmax = max(vmax, v);
            imax = max(imax, bitcast<vec4<i32>>(v));
            umax = max(umax, bitcast<vec4<u32>>(v));
        }
#end_unroll
    let poison = (imax >= vec4<i32>(i32(EXP_MASK))) | (umax > vec4<u32>(NEG_INF_BITS));
    var acc = MaxBad(max(max(vmax.x, vmax.y), max(vmax.z, vmax.w)), u32(any(poison)));
    for (var j = n4 * 4u + first; j < params.cols; j += step) {
        acc = max_bad1(acc, load1(j, base + j));
    }
    return acc;
}

// Sum of exp((x - m) * inv_t) over the cached share and the tail; for softmax the cache
// keeps the exponentials (0 for -inf) for cache_write.
fn cache_exp_sum(row: u32, first: u32, step: u32, cache: ptr<function, array<vec4<f32>, CACHE>>, m: f32) -> f32 {
    var s = 0.0;
    let n4 = params.cols / 4u;
#unroll k CACHE_SLOTS
        if first + k * step < n4 {
            let v = (*cache)[k];
            let non_finite = (bitcast<vec4<u32>>(v) & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
            let e = select(exp((v - vec4<f32>(m)) * row_inv_t), vec4<f32>(0.0), non_finite);
            if !LOG_SOFTMAX {
                (*cache)[k] = e;
            }
            s += dot(e, vec4<f32>(1.0));
        }
#end_unroll
    for (var j = n4 * 4u + first; j < params.cols; j += step) {
        let x = load1(j, src_index(row, j));
        let non_finite = (bitcast<u32>(x) & EXP_MASK) == EXP_MASK;
        s += select(exp((x - m) * row_inv_t), 0.0, non_finite);
    }
    return s;
}

// Writes the cached share and the tail, given the whole row's max, sum and poison flag
// (see resolve_stats; invocation `first == 0` leads).
fn cache_write(row: u32, first: u32, step: u32, cache: ptr<function, array<vec4<f32>, CACHE>>, m: f32, s: f32, bad: u32) {
    let st = resolve_stats(row, Stats(m, s, bad), first == 0u);
    if write_special(row, 0u, params.cols, first, step, st.bad, st.s) {
        return;
    }
    let inv_s = 1.0 / st.s;
    let log_s = log(st.s);
    // The cache holds exp((x - m) * inv_t); given statistics have another max.
    var scale = inv_s;
    if STATS_GIVEN {
        scale = exp((m - st.m) * row_inv_t) * inv_s;
    }
    let dst4_base = dst_index(row, 0u) / 4u;
    let n4 = params.cols / 4u;
#unroll k CACHE_SLOTS
        let i = first + k * step;
        if i < n4 {
            if LOG_SOFTMAX {
                write_dst4(dst4_base + i, softmax4((*cache)[k], st.m, inv_s, log_s));
            } else {
                write_dst4(dst4_base + i, (*cache)[k] * scale);
            }
        }
#end_unroll
    write_tail(row, 0u, params.cols, first, step, st.m, inv_s, log_s);
}
