// Kernel softmax_split_stats: the first pass of a row split over several workgroups
// (few long rows, or rows longer than one storage binding).
//
// Dispatch: workgroup (x, y) takes part params.part_base + x of row y; part p covers
// columns [p * part_cols, min((p + 1) * part_cols, cols)). Each invocation sweeps its
// strided share of the part for a running (max, sum of exp) pair; a tree over workgroup
// memory merges them (WORKGROUP_SIZE a power of two, at most MAX_WORKGROUP); invocation 0
// stores (max, sum, poisoned ? 1 : 0, 0) in partials[row * parts + part].
// softmax_split_write folds a row's partials and writes the row.

const MAX_WORKGROUP: u32 = 256u;

var<workgroup> tree_m: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_s: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_bad: array<u32, MAX_WORKGROUP>;

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
    let c0 = part * params.part_cols;
    let c1 = min(c0 + params.part_cols, params.cols);
    let own = range_stats(row, c0, c1, lid, WORKGROUP_SIZE);
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
    if lid == 0u {
        // The flag as 0.0 / 1.0: a u32 bit pattern would be a denormal, which some GPUs
        // flush to zero.
        partials[row * params.parts + part] = vec4<f32>(tree_m[0], tree_s[0], f32(tree_bad[0]), 0.0);
    }
}
