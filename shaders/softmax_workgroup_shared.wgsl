// Kernel softmax_workgroup_shared: one workgroup per row, reductions in workgroup memory.
// The portable fallback for adapters without Features::SUBGROUP.
//
// Dispatch: as softmax_workgroup_subgroup (2-D grid, one row per workgroup).
// Rows that fit the register cache: load once, tree-reduce the max, then the sum of
// exponentials, write the cached values. Longer rows: one sweep for a running
// (max, sum of exp) pair per invocation, a tree merges the pairs, a second sweep writes.
// The trees are those of common/workgroup_tree.wgsl.

#import softmax_common
#import workgroup_tree

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_workgroup_shared(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    if row_fits_cache() {
        var cache: array<vec4<f32>, CACHE>;
        let mb = tree_max_bad(cache_load(row, lid, WORKGROUP_SIZE, &cache), lid);
        let s = tree_sum(cache_exp_sum(row, lid, WORKGROUP_SIZE, &cache, mb.m), lid);
        cache_write(row, lid, WORKGROUP_SIZE, &cache, mb.m, s, mb.bad);
        return;
    }
    let st = tree_stats(row_stats(row, lid, WORKGROUP_SIZE), lid);
    write_row(row, lid, WORKGROUP_SIZE, st);
}
