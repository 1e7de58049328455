// Reductions over workgroup memory, for the kernels that cannot count on subgroup
// operations (softmax_workgroup_shared, softmax_split_stats, softmax_backward). Each
// tree takes log2(WORKGROUP_SIZE) barriers; WORKGROUP_SIZE must be a power of two, at
// most MAX_WORKGROUP. Every invocation gets the result.

const MAX_WORKGROUP: u32 = 256u;

var<workgroup> tree_m: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_s: array<f32, MAX_WORKGROUP>;
var<workgroup> tree_bad: array<u32, MAX_WORKGROUP>;

// The workgroup's max and poison flag. Uses tree_m and tree_bad only.
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

// The workgroup's sum. Uses tree_s only, so it may follow tree_max_bad without another
// barrier.
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

// The workgroup's merged (max, sum of exp) statistics.
fn tree_stats(own: Stats, lid: u32) -> Stats {
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
    return Stats(tree_m[0], tree_s[0], tree_bad[0]);
}
