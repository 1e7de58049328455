// The output matrix stored as f32 (see softmax_common.wgsl for the bindings).
//   3 dst   storage  array<f32>
//   4 dst4  storage  the same as array<vec4<f32>> (a 16-byte dummy when VEC4 is off)

@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;

fn write_dst1(at: u32, v: f32) {
    dst[at] = v;
}

fn write_dst4(at4: u32, v: vec4<f32>) {
    dst4[at4] = v;
}

// Reads of the output buffer (the backward kernel's incoming gradient).
fn read_dst1(at: u32) -> f32 {
    return dst[at];
}

fn read_dst4(at4: u32) -> vec4<f32> {
    return dst4[at4];
}
