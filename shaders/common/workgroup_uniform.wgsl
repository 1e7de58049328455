// Reductions over workgroup memory whose results every invocation gets as uniform
// values (through workgroupUniformLoad), for the kernels that branch and loop on them
// with barriers inside: softmax_sample and softmax_cross_entropy. (Browsers' WGSL
// compilers refuse a barrier under control flow that depends on a plain load of
// workgroup memory.) WORKGROUP_SIZE must be a power of two, at most MAX_WORKGROUP.

const MAX_WORKGROUP: u32 = 256u;

var<workgroup> red_f: array<vec4<f32>, MAX_WORKGROUP>;
var<workgroup> red_u: array<vec4<u32>, MAX_WORKGROUP>;
var<workgroup> out_f: vec4<f32>;
var<workgroup> out_u: vec4<u32>;

// A row's merged statistics, with a count of the kernel's own values and the sum of
// their distances below the max, `max - x` (so that a large common offset never enters
// the sum: the distances are shifted when the max moves).
struct RowTotals {
    st: Stats,
    sum: f32,
    count: u32,
}

fn workgroup_totals(own: Stats, sum: f32, count: u32, lid: u32) -> RowTotals {
    red_f[lid] = vec4<f32>(own.m, own.s, sum, 0.0);
    red_u[lid] = vec4<u32>(own.bad, count, 0u, 0u);
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if lid < half {
            let a = red_f[lid];
            let b = red_f[lid + half];
            let ca = red_u[lid].y;
            let cb = red_u[lid + half].y;
            let c = merge(Stats(a.x, a.y, red_u[lid].x), Stats(b.x, b.y, red_u[lid + half].x));
            // Each side's distances move down by its max's distance below the new one
            // (a side that counted nothing may have no finite max).
            let shift_a = select(0.0, f32(ca) * (c.m - a.x), ca > 0u);
            let shift_b = select(0.0, f32(cb) * (c.m - b.x), cb > 0u);
            red_f[lid] = vec4<f32>(c.m, c.s, (a.z + shift_a) + (b.z + shift_b), 0.0);
            red_u[lid] = vec4<u32>(c.bad, ca + cb, 0u, 0u);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out_f = red_f[0];
        out_u = red_u[0];
    }
    // One barrier publishes both: the second load finds what the first one's barrier
    // made visible.
    let f = workgroupUniformLoad(&out_f);
    let u = workgroupUniformLoad(&out_u);
    return RowTotals(Stats(f.x, f.y, u.x), f.z, u.y);
}
