// Kernel softmax_workgroup_shared: one workgroup per row, reductions in workgroup memory.
// The portable fallback for adapters without Features::SUBGROUP.
//
// Dispatch: as softmax_workgroup_subgroup (2-D grid, one row per workgroup).
// Rows that fit the register cache: load once, tree-reduce the max, then the sum of
// exponentials, write the cached values. Longer rows: one sweep for a running
// (max, sum of exp) pair per invocation, a tree merges the pairs, a second sweep writes.
// The trees run over workgroup memory; WORKGROUP_SIZE must be a power of two, at most
// MAX_WORKGROUP.

const MAX_WORKGROUP: u32 = 256u;

var<workgroup> tree_m: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_s: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_bad: array<u32, MAX_WORKGROUP>;

fn tree_max_bad(own: MaxBad, lid: u32) -> MaxBad {
    tree_m[lid] = own.m;
    tree_bad[lid] = own.bad;
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            tree_m[lid] = max(tree_m[lid], tree_m[lid + half]);
            tree_bad[lid] = tree_bad[lid] | tree_bad[lid + half];
        }
        workgroupBarrier();
    }
    return MaxBad(tree_m[0], tree_bad[0]);
}

// Uses tree_s only, so it may follow tree_max_bad without another barrier.
fn tree_sum(own: f32, lid: u32) -> f32 {
    tree_s[lid] = own;
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            tree_s[lid] = tree_s[lid] + tree_s[lid + half];
        }
        workgroupBarrier();
    }
    return tree_s[0];
}

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
    if row_fits_cache(WORKGROUP_SIZE) {
        var cache: array<vec4<f32>, CACHE>;
        let mb = tree_max_bad(cache_load(row, lid, WORKGROUP_SIZE, &cache), lid);
        let s = tree_sum(cache_exp_sum(row, lid, WORKGROUP_SIZE, &cache, mb.m), lid);
        cache_write(row, lid, WORKGROUP_SIZE, &cache, mb.m, s, mb.bad);
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
