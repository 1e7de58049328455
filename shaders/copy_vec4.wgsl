// Kernel copy_vec4: the bandwidth limit softmax is measured against. Copies `count`
// vec4<f32> from src to dst, one per invocation per step of a grid-stride loop.
//
// Dispatch: a 2-D grid; the flat invocation index is
// (workgroup_id.y * grid_x + workgroup_id.x) * WORKGROUP_SIZE + local index.

struct CopyParams {
    count: u32,
    grid_x: u32,
    total_invocations: u32,
    _pad: u32,
}

override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    for (var i = (wg.y * params.grid_x + wg.x) * WORKGROUP_SIZE + lid; i < params.count; i += params.total_invocations) {
        dst[i] = src[i];
    }
}
