// Kernel softmax_cross_entropy: per row, the cross-entropy of softmax(z) against an
// integer target, and with bit 0 of params.ce_flags its gradient with respect to the
// logits, with no [rows, cols] temporary: the row is read twice at most.
//
// z = C * tanh(x / C) / T + mask (the soft-cap and the row inputs as everywhere), over
// the row's unmasked columns U, K = |U|, lse = ln(sum_U exp(z)), t the target, e the
// label smoothing, w the z-loss weight:
//   loss = (1 - e) * (lse - z_t) + e * (lse - sum_U z / K) + w * lse^2
//   dloss/dz_j = g * ((1 + 2 w lse) * softmax(z)_j - (1 - e) [j = t] - e / K [j in U])
// with g = params.grad_scale (the reduction's scale and the incoming gradient), times
// dz/dx = (1 - tanh(x / C)^2) / T. A row whose target is params.ignore_index gives loss
// 0 and gradient 0; a row with NaN or +inf, or with every column masked, gives NaN; a
// target outside the row gives NaN, unless the row's statistics are given (a shard of a
// split vocabulary: with STATS_GIVEN, lse comes from them, and a shard without the
// target adds 0, so the shards' losses sum to the row's).
//
// Dispatch: one workgroup per row (row = wg.y * grid_x + wg.x). One sweep gives the
// row's (max, sum of exp), the sum of its unmasked values and their count (merged by
// workgroup_uniform.wgsl); a second writes the gradient.
//
// With bit 1 of ce_flags it gathers instead: log_softmax(z) at params.gather_k indices
// per row (targets [rows, k] in, log-probabilities [rows, k] out), for scoring.
//
// Bindings 3 and 4: the gradient (dst_f32.wgsl or dst_half.wgsl; a dummy without it);
// 10: targets (i32 per row, from params.targets_first); 11: losses (f32 per row, from
// params.losses_first).

#import row_common
#import workgroup_uniform
#if DST_HALF
#import dst_half
#else
#import dst_f32
#endif

@group(0) @binding(10) var<storage, read_write> targets: array<u32>;
@group(0) @binding(11) var<storage, read_write> losses: array<f32>;

// What one invocation gathers in the first sweep: the statistics, and the count of its
// unmasked values with the sum of their distances below its running max (max - x), which
// label smoothing's mean needs; kept as distances so a large common offset cancels.
struct Gathered {
    st: Stats,
    sum: f32,
    count: u32,
}

// The distances gathered so far, moved to a new max `m` (from the old one).
fn shifted(acc: ptr<function, Gathered>, old_m: f32, m: f32) -> f32 {
    return select(0.0, f32((*acc).count) * (m - old_m), (*acc).count > 0u);
}

fn gather1(acc: ptr<function, Gathered>, x: f32) {
    let old_m = (*acc).st.m;
    (*acc).st = accumulate1((*acc).st, x);
    // -inf (masked) adds nothing; NaN and +inf poison the row through the statistics.
    if (bitcast<u32>(x) & EXP_MASK) != EXP_MASK {
        let m = (*acc).st.m;
        (*acc).sum = shifted(acc, old_m, m) + (*acc).sum + (m - x);
        (*acc).count += 1u;
    }
}

// Four values at once: their max first, then one rescale of the running sum and an exp
// of each (no branch per value); NaN and +inf poison the row, found from the bits.
fn gather4(acc: ptr<function, Gathered>, v: vec4<f32>) {
    let bits = bitcast<vec4<u32>>(v);
    let non_finite = (bits & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    let masked = bits == vec4<u32>(NEG_INF_BITS);
    let poison = non_finite & !masked;
    let finite = select(v, vec4<f32>(LOWEST), non_finite);
    let st = (*acc).st;
    let m = max(st.m, max(max(finite.x, finite.y), max(finite.z, finite.w)));
    let e = select(exp((v - vec4<f32>(m)) * row_inv_t), vec4<f32>(0.0), non_finite);
    let distances = select(vec4<f32>(m) - v, vec4<f32>(0.0), non_finite);
    (*acc).sum = shifted(acc, st.m, m) + (*acc).sum + dot(distances, vec4<f32>(1.0));
    (*acc).count += dot(select(vec4<u32>(1u), vec4<u32>(0u), non_finite), vec4<u32>(1u));
    (*acc).st = Stats(m, rescale(st.s, st.m - m) + ((e.x + e.y) + (e.z + e.w)), st.bad | u32(any(poison)));
}

fn gather_col(acc: ptr<function, Gathered>, col: u32, base: u32) {
    if col < params.cols {
        gather1(acc, load1(col, base + col));
    }
}

// The first sweep: vec4 loads over the row body where rows are vec4-aligned, then four
// scalar columns a WORKGROUP_SIZE apart per step, written out (software adapters cap a
// loop's iterations).
fn gather_row(row: u32, lid: u32) -> Gathered {
    var acc = Gathered(stats_empty(), 0.0, 0u);
    let base = src_index(row, 0u);
    var tail = 0u;
    if VEC4 {
        let n4 = params.cols / 4u;
        for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
            gather4(&acc, load4(4u * i, base / 4u + i));
        }
        tail = 4u * n4;
    }
    for (var j = tail + lid; j < params.cols; j += 4u * WORKGROUP_SIZE) {
        gather_col(&acc, j, base);
        gather_col(&acc, j + WORKGROUP_SIZE, base);
        gather_col(&acc, j + 2u * WORKGROUP_SIZE, base);
        gather_col(&acc, j + 3u * WORKGROUP_SIZE, base);
    }
    return acc;
}

// d(C tanh(x / C)) / dx at the raw inputs x: 1 - tanh(x / C)^2 (with SOFTCAP).
fn cap_slope4(raw: vec4<f32>) -> vec4<f32> {
    let c = params.softcap;
    let t = tanh(clamp(raw / c, vec4<f32>(-10.0), vec4<f32>(10.0)));
    return 1.0 - t * t;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_cross_entropy(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    let own = gather_row(row, lid);
    var own_st = own.st;
    own_st.bad |= row_bad;
    let totals = workgroup_totals(own_st, own.sum, own.count, lid);
    // The row's own statistics, or (STATS_GIVEN) those of the whole split row; with
    // STATS_WRITE, invocation 0 stores the row's.
    let st = resolve_stats(row, totals.st, lid == 0u);
    let nan = f32_nan();
    let base = src_index(row, 0u);
    let broken = st.bad != 0u || st.s == 0.0;
    let lse = st.m * row_inv_t + log(st.s);
    if (params.ce_flags & 2u) != 0u {
        // Gather: log_softmax(z) at each of the row's gather_k indices (NaN outside the
        // row; a broken row as log-softmax gives it).
        var fill = nan;
        if st.bad == 0u && MASKED_ROWS_ZERO {
            fill = f32_neg_inf();
        }
        let k = params.gather_k;
        for (var j = lid; j < k; j += WORKGROUP_SIZE) {
            let t = i32(targets[params.targets_first + row * k + j]) - i32(params.col_origin);
            var lp = select(nan, fill, broken);
            if !broken && t >= 0 && t < i32(params.cols) {
                // The max subtracted before the temperature scales: a large common
                // offset cancels exactly, as in the log-softmax kernels.
                lp = (load1(u32(t), base + u32(t)) - st.m) * row_inv_t - log(st.s);
            }
            losses[params.losses_first + row * k + j] = lp;
        }
        return;
    }
    let t_bits = targets[params.targets_first + row];
    let ignored = t_bits == params.ignore_index;
    let t = i32(t_bits) - i32(params.col_origin);
    let in_row = t >= 0 && t < i32(params.cols);
    let e = params.smoothing;
    let w = params.z_loss;
    if lid == 0u {
        var loss = 0.0;
        if ignored {
            loss = 0.0;
        } else if broken {
            loss = nan;
        } else if in_row {
            // lse - z_t and lse - mean(z) with the max subtracted first (a large common
            // offset cancels exactly); lse itself only in the z-loss.
            let log_s = log(st.s);
            let x_t = load1(u32(t), base + u32(t));
            // totals.sum is the sum of (max - x) over the unmasked values, so
            // (max - mean x) is its mean (the row's own max: smoothing takes no given
            // statistics).
            let below_max = totals.sum / f32(max(totals.count, 1u));
            let target_term = (st.m - x_t) * row_inv_t + log_s;
            let mean_term = below_max * row_inv_t + log_s;
            // Each term only when its weight is not 0: 0 times an infinite term (a row
            // spanning +-f32::MAX) would make the loss NaN.
            loss = select(0.0, (1.0 - e) * target_term, e < 1.0)
                + select(0.0, e * mean_term, e > 0.0)
                + select(0.0, w * lse * lse, w > 0.0);
        } else if !STATS_GIVEN {
            loss = nan;
        }
        losses[params.losses_first + row] = loss;
    }
    // Invocation 0 has read the target's logit before anyone writes a gradient over it
    // (in place, the logits are the gradient's buffer).
    workgroupBarrier();
    if (params.ce_flags & 1u) == 0u {
        return;
    }
    // The gradient: 0 for an ignored row, NaN for a broken one or a target outside an
    // unsplit row.
    let fill = select(select(0.0, nan, broken || (!in_row && !STATS_GIVEN)), 0.0, ignored);
    let special = ignored || broken || (!in_row && !STATS_GIVEN);
    let g = params.grad_scale;
    let inv_s = 1.0 / st.s;
    let spread = e / f32(max(totals.count, 1u));
    let lift = select(1.0, 1.0 + 2.0 * w * lse, w > 0.0);
    let hit = select(params.cols, u32(t), in_row);
    var tail = 0u;
    if VEC4 {
        // The body four at a time: the logits (capped and masked, and raw for the cap's
        // slope) and the gradient through the vec4 views.
        let n4 = params.cols / 4u;
        let src4_base = base / 4u;
        let dst4_base = dst_index(row, 0u) / 4u;
        for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
            var d = vec4<f32>(fill);
            if !special {
                let v = load4(4u * i, src4_base + i);
                let unmasked = bitcast<vec4<u32>>(v) != vec4<u32>(NEG_INF_BITS);
                let p = select(vec4<f32>(0.0), exp((v - vec4<f32>(st.m)) * row_inv_t) * inv_s, unmasked);
                var dz = lift * p - select(vec4<f32>(0.0), vec4<f32>(spread), unmasked);
                let c = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
                dz -= select(vec4<f32>(0.0), vec4<f32>(1.0 - e), c == vec4<u32>(hit));
                d = g * dz * row_inv_t;
                if SOFTCAP {
                    d *= cap_slope4(read_src4(src4_base + i));
                }
            }
            write_dst4(dst4_base + i, d);
        }
        tail = 4u * n4;
    }
    for (var j = tail + lid; j < params.cols; j += WORKGROUP_SIZE) {
        var d = fill;
        if !special {
            let x = load1(j, base + j);
            let unmasked = bitcast<u32>(x) != NEG_INF_BITS;
            let p = select(0.0, exp((x - st.m) * row_inv_t) * inv_s, unmasked);
            var dz = lift * p - select(0.0, spread, unmasked);
            if j == hit {
                dz -= 1.0 - e;
            }
            d = g * dz * row_inv_t;
            if SOFTCAP {
                d *= cap_slope4(vec4<f32>(read_src1(base + j))).x;
            }
        }
        write_dst1(dst_index(row, j), d);
    }
}
