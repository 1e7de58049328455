// Kernel softmax_workgroup_shared: one workgroup per row, reductions in workgroup memory.
// The portable fallback for adapters without Features::SUBGROUP.
//
// Dispatch: as softmax_workgroup_subgroup (2-D grid, one row per workgroup).
// Each invocation sweeps its strided share of the row once, keeping a running
// (max, sum of exp) pair; a tree over workgroup memory (WORKGROUP_SIZE must be a power of
// two, at most MAX_WORKGROUP) merges the pairs; a second sweep writes the normalised row.

const MAX_WORKGROUP: u32 = 256u;

var<workgroup> tree_m: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_s: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_bad: array<u32, MAX_WORKGROUP>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_workgroup_shared(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    let own = row_stats(row, lid, WORKGROUP_SIZE);
    tree_m[lid] = own.m;
    tree_s[lid] = own.s;
    tree_bad[lid] = own.bad;
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            let merged = merge(
                Stats(tree_m[lid], tree_s[lid], tree_bad[lid]),
                Stats(tree_m[lid + half], tree_s[lid + half], tree_bad[lid + half]),
            );
            tree_m[lid] = merged.m;
            tree_s[lid] = merged.s;
            tree_bad[lid] = merged.bad;
        }
        workgroupBarrier();
    }
    write_row(row, lid, WORKGROUP_SIZE, Stats(tree_m[0], tree_s[0], tree_bad[0]));
}
