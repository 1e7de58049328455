// Kernel softmax_split_stats: the first pass of a row split over several workgroups
// (few long rows, or rows longer than one storage binding).
//
// Dispatch: workgroup (x, y) takes part params.part_base + x of row y; part p covers
// columns [p * part_cols, min((p + 1) * part_cols, cols)). Each invocation sweeps its
// strided share of the part for a running (max, sum of exp) pair; a tree over workgroup
// memory (common/workgroup_tree.wgsl) merges them; invocation 0
// stores (max, sum, poisoned ? 1 : 0, 0) in partials[row * parts + part].
// softmax_split_write folds a row's partials and writes the row.

#import softmax_common
#import workgroup_tree

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_split_stats(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y;
    let part = params.part_base + wg.x;
    if row >= params.rows || part >= params.parts {
        return;
    }
    begin_row(row);
    let cols = part_columns(part);
    let c0 = cols.x;
    let c1 = cols.y;
    let st = tree_stats(range_stats(row, c0, c1, lid, WORKGROUP_SIZE), lid);
    if lid == 0u {
        // The flag as 0.0 / 1.0: a u32 bit pattern would be a denormal, which some GPUs
        // flush to zero.
        partials[row * params.parts + part] = vec4<f32>(st.m, st.s, f32(st.bad), 0.0);
    }
}
