// Kernel softmax_split_write: the second pass of a split row (see softmax_split_stats).
//
// Dispatch: as softmax_split_stats. Every invocation folds the row's partials, in part
// order (so every workgroup of a row gets the same bits), then the workgroup writes its
// part of the row.

#import softmax_common

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_split_write(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y;
    let part = params.part_base + wg.x;
    if row >= params.rows || part >= params.parts {
        return;
    }
    begin_row(row);
    var st = stats_empty();
    for (var p = 0u; p < params.parts; p++) {
        let q = partials[row * params.parts + p];
        st = merge(st, Stats(q.x, q.y, u32(q.z != 0.0)));
    }
    let cols = part_columns(part);
    let c0 = cols.x;
    let c1 = cols.y;
    // Part 0's first invocation leads (stores the row's statistics, if asked).
    range_write(row, c0, c1, lid, WORKGROUP_SIZE, resolve_stats(row, st, lid == 0u && part == 0u));
}
