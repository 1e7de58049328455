// Kernel softmax_thread_row: one invocation per row, for short rows.
//
// Dispatch: a 2-D grid of workgroups of WORKGROUP_SIZE invocations;
// row = (workgroup_id.y * params.grid_x + workgroup_id.x) * WORKGROUP_SIZE + local index.
// No barriers and no workgroup memory. A row that fits the register cache (VEC4,
// cols <= 4 * CACHE) is read once; a longer one is swept once for the (max, sum of exp)
// pair and again to write.

#import softmax_common

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_thread_row(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.y * params.grid_x + wg.x) * WORKGROUP_SIZE + lid;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    if row_fits_cache() {
        var cache: array<vec4<f32>, CACHE>;
        let mb = cache_load(row, 0u, 1u, &cache);
        let s = cache_exp_sum(row, 0u, 1u, &cache, mb.m);
        cache_write(row, 0u, 1u, &cache, mb.m, s, mb.bad);
        return;
    }
    write_row(row, 0u, 1u, row_stats(row, 0u, 1u));
}
