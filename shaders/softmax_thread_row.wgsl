// Kernel softmax_thread_row: one invocation per row, for short rows.
//
// Dispatch: a 2-D grid of workgroups of WORKGROUP_SIZE invocations;
// row = (workgroup_id.y * params.grid_x + workgroup_id.x) * WORKGROUP_SIZE + local index.
// Each invocation sweeps its row once for the (max, sum of exp) pair, then again to write.
// No barriers and no workgroup memory: the second sweep re-reads a row that is still in
// cache.

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_thread_row(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.y * params.grid_x + wg.x) * WORKGROUP_SIZE + lid;
    if row >= params.rows {
        return;
    }
    write_row(row, 0u, 1u, row_stats(row, 0u, 1u));
}
