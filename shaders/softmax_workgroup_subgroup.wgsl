// Kernel softmax_workgroup_subgroup: one workgroup per row, reductions by subgroup
// operations. Needs Features::SUBGROUP.
//
// Dispatch: a 2-D grid of workgroups, row = workgroup_id.y * params.grid_x + workgroup_id.x;
// workgroups past params.rows return at once (the whole workgroup, so barriers stay
// uniform).
// Each invocation sweeps its strided share of the row once, keeping a running
// (max, sum of exp) pair; subgroupMax/subgroupAdd merge the pairs of a subgroup, one
// barrier publishes one pair per subgroup, and every invocation folds those few pairs.
// A second sweep writes the normalised row.

const MAX_SUBGROUPS: u32 = 256u;

var<workgroup> partial_m: array<f32, MAX_SUBGROUPS>;
var<workgroup> partial_s: array<f32, MAX_SUBGROUPS>;
var<workgroup> partial_bad: array<u32, MAX_SUBGROUPS>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_workgroup_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    let own = row_stats(row, lid, WORKGROUP_SIZE);
    let m_sg = subgroupMax(own.m);
    let s_sg = subgroupAdd(rescale(own.s, own.m - m_sg));
    let bad_sg = subgroupOr(own.bad);
    if sg_lane == 0u {
        partial_m[sg_id] = m_sg;
        partial_s[sg_id] = s_sg;
        partial_bad[sg_id] = bad_sg;
    }
    workgroupBarrier();
    // Fold the per-subgroup pairs: the max first, then one exp per pair.
    var m = LOWEST;
    var bad = 0u;
    for (var i = 0u; i < sg_count; i++) {
        m = max(m, partial_m[i]);
        bad |= partial_bad[i];
    }
    var s = 0.0;
    for (var i = 0u; i < sg_count; i++) {
        s += rescale(partial_s[i], partial_m[i] - m);
    }
    write_row(row, lid, WORKGROUP_SIZE, Stats(m, s, bad));
}
