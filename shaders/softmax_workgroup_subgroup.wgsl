// Kernel softmax_workgroup_subgroup: one workgroup per row, reductions by subgroup
// operations. Needs Features::SUBGROUP.
//
// Dispatch: a 2-D grid of workgroups, row = workgroup_id.y * params.grid_x + workgroup_id.x;
// workgroups past params.rows return at once (the whole workgroup, so barriers stay
// uniform).
// Rows that fit the register cache (VEC4, cols / 4 <= WORKGROUP_SIZE * CACHE): each
// invocation loads its share once; the max, then the sum of exponentials, are reduced
// with subgroup operations plus one barrier each; the cached values are written.
// Longer rows: each invocation sweeps its share once for a running (max, sum of exp)
// pair, the pairs are merged the same way, and a second sweep writes.

#import softmax_common

// Entries for one value per subgroup (WORKGROUP_SIZE / subgroup size <= this).
const MAX_SUBGROUPS: u32 = 256u;

var<workgroup> partial_m: array<f32, MAX_SUBGROUPS>;
var<workgroup> partial_s: array<f32, MAX_SUBGROUPS>;
var<workgroup> partial_bad: array<u32, MAX_SUBGROUPS>;

// The workgroup's max and poison flag. Every invocation gets the result.
fn workgroup_max_bad(own: MaxBad, sg_id: u32, sg_count: u32, sg_lane: u32, sg_size: u32) -> MaxBad {
    let m = subgroupMax(own.m);
    let bad = subgroupOr(own.bad);
    if sg_lane == 0u {
        partial_m[sg_id] = m;
        partial_bad[sg_id] = bad;
    }
    workgroupBarrier();
    // Each lane folds every lanes-th entry, then the subgroup combines the lanes: a
    // subgroup reads each entry once instead of every lane reading all of them.
    var acc = MaxBad(LOWEST, 0u);
    for (var i = sg_lane; i < sg_count; i += sg_size) {
        acc = max_bad_merge(acc, MaxBad(partial_m[i], partial_bad[i]));
    }
    return MaxBad(subgroupMax(acc.m), subgroupOr(acc.bad));
}

// The workgroup's sum. Uses partial_s only, so it may follow workgroup_max_bad
// without another barrier.
fn workgroup_sum(own: f32, sg_id: u32, sg_count: u32, sg_lane: u32, sg_size: u32) -> f32 {
    let s = subgroupAdd(own);
    if sg_lane == 0u {
        partial_s[sg_id] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = sg_lane; i < sg_count; i += sg_size) {
        total += partial_s[i];
    }
    return subgroupAdd(total);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_workgroup_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    if row_fits_cache() {
        var cache: array<vec4<f32>, CACHE>;
        let mb = workgroup_max_bad(cache_load(row, lid, WORKGROUP_SIZE, &cache), sg_id, sg_count, sg_lane, sg_size);
        let s = workgroup_sum(cache_exp_sum(row, lid, WORKGROUP_SIZE, &cache, mb.m), sg_id, sg_count, sg_lane, sg_size);
        cache_write(row, lid, WORKGROUP_SIZE, &cache, mb.m, s, mb.bad);
        return;
    }
    let own = row_stats(row, lid, WORKGROUP_SIZE);
    // One exchange for the (max, sum) pair: rescale each sum to the subgroup max.
    let m_sg = subgroupMax(own.m);
    let s_sg = subgroupAdd(rescale(own.s, own.m - m_sg));
    let bad_sg = subgroupOr(own.bad);
    if sg_lane == 0u {
        partial_m[sg_id] = m_sg;
        partial_s[sg_id] = s_sg;
        partial_bad[sg_id] = bad_sg;
    }
    workgroupBarrier();
    var acc = stats_empty();
    for (var i = sg_lane; i < sg_count; i += sg_size) {
        acc = merge(acc, Stats(partial_m[i], partial_s[i], partial_bad[i]));
    }
    let m = subgroupMax(acc.m);
    let s = subgroupAdd(rescale(acc.s, acc.m - m));
    write_row(row, lid, WORKGROUP_SIZE, Stats(m, s, subgroupOr(acc.bad)));
}
