// Kernel softmax_subgroup_row: one subgroup per row, several rows per workgroup, for
// medium rows. Needs Features::SUBGROUP. No barriers and no workgroup memory.
//
// Dispatch: a 2-D grid of workgroups of WORKGROUP_SIZE invocations; subgroup k of
// workgroup w (w = workgroup_id.y * params.grid_x + workgroup_id.x) takes row
// w * num_subgroups + k. The planner sizes the grid for the largest subgroup size the
// adapter may use; rows past params.rows return (whole subgroups).
// A row that fits the register cache (VEC4, cols / 4 <= subgroup_size * CACHE) is read
// once, with subgroupMax then subgroupAdd; a longer one is swept once for a running
// (max, sum of exp) pair per lane, merged by subgroup operations, and again to write.

#import softmax_common

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_subgroup_row(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
) {
    let row = (wg.y * params.grid_x + wg.x) * sg_count + sg_id;
    if row >= params.rows {
        return;
    }
    begin_row(row);
    if row_fits_cache() {
        var cache: array<vec4<f32>, CACHE>;
        let own = cache_load(row, lane, lanes, &cache);
        let m = subgroupMax(own.m);
        let bad = subgroupOr(own.bad);
        let s = subgroupAdd(cache_exp_sum(row, lane, lanes, &cache, m));
        cache_write(row, lane, lanes, &cache, m, s, bad);
        return;
    }
    let own = row_stats(row, lane, lanes);
    let m = subgroupMax(own.m);
    let s = subgroupAdd(rescale(own.s, own.m - m));
    let bad = subgroupOr(own.bad);
    write_row(row, lane, lanes, Stats(m, s, bad));
}
